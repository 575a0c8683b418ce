"""The sweep's tables and plots, from the rows on disk.

- ``table.md`` / ``table.csv``: the layout of the paper's Table 2, one table per budget: a row
  per search verifier x strategy (and "no search" when the baseline is on), a column per
  evaluation verifier; each cell the mean over the setting's tasks (prompts x seeds) with a
  bootstrap percentile interval (resampling tasks), plus the mean search NFEs spent.
- ``scaling.png``: metric against search NFEs (the report's ``nfe.search_total``, averaged
  over a setting's tasks), one curve per strategy, a panel per (search verifier, evaluation
  verifier); the baseline is a dashed line. ``scaling.json`` holds every plotted point.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .config import BASELINE, Config
from .results import read_rows
from .tasks import Task, all_tasks

MISSING = "—"


def bootstrap(values, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """(mean, low, high): the mean and a percentile bootstrap interval of it."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None, None
    mean = float(x.mean())
    if x.size == 1 or n_resamples < 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def _fmt(v, digits=3) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def collect(cfg: Config, tasks: list[Task] | None = None) -> dict:
    """Cells: (budget, verifier, strategy) -> {eval name: stats, "nfe": mean, "n": tasks done}."""
    tasks = all_tasks(cfg) if tasks is None else tasks
    rows, _ = read_rows(cfg.output)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    expected: dict[tuple, int] = defaultdict(int)
    for t in tasks:
        key = (t.setting.budget if not t.setting.baseline else None, *t.setting.row_label)
        expected[key] += 1
        if t.id in rows:
            groups[key].append(rows[t.id])
    cells = {}
    for key, n_expected in expected.items():
        done = groups.get(key, [])
        cell = {"n": len(done), "expected": n_expected, "eval": {}}
        nfes = [r.get("nfe", {}).get("search_total") for r in done]
        nfes = [v for v in nfes if v is not None]
        cell["nfe"] = float(np.mean(nfes)) if nfes else None
        for name in cfg.eval_verifiers:
            values = [r["scores"]["eval"][name] for r in done if name in r.get("scores", {}).get("eval", {})]
            mean, low, high = bootstrap(values, cfg.bootstrap, cfg.confidence)
            cell["eval"][name] = {"mean": mean, "low": low, "high": high, "n": len(values)}
        cells[key] = cell
    return cells


def _row_order(cfg: Config) -> list[tuple[str, str]]:
    return [(v, s.name) for v in cfg.search_verifiers for s in cfg.strategies]


def write_tables(cfg: Config, cells: dict, out: Path) -> tuple[Path, Path]:
    pct = round(cfg.confidence * 100)
    md = [f"# Sweep: {cfg.path.name}", "",
          f"Mean over prompts x seeds [{pct}% bootstrap interval, {cfg.bootstrap} resamples]; "
          "search NFEs: the search report's nfe.search_total, averaged. "
          f"Columns are the evaluation verifiers; {MISSING} = no finished task yet.", ""]
    header = ["search verifier", "strategy", *cfg.eval_verifiers, "search NFEs", "tasks"]
    csv_rows = []
    baseline = cells.get((None, "-", BASELINE))
    for budget in cfg.budgets:
        md += [f"## Budget {budget} NFEs" if budget else "## Budget: no limit", "",
               "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        keys = ([(None, "-", BASELINE)] if baseline is not None else []) + \
            [(budget, v, s) for v, s in _row_order(cfg)]
        for key in keys:
            cell = cells.get(key)
            if cell is None:
                continue
            verifier, strategy = key[1], key[2]
            values = []
            for name in cfg.eval_verifiers:
                e = cell["eval"][name]
                values.append(MISSING if e["mean"] is None else
                              f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]")
                csv_rows.append({"budget": budget if key[0] is not None else "", "search_verifier": verifier,
                                 "strategy": strategy, "eval_verifier": name, "mean": e["mean"],
                                 "low": e["low"], "high": e["high"], "n": e["n"], "search_nfe": cell["nfe"],
                                 "expected": cell["expected"]})
            md.append("| " + " | ".join([verifier, strategy, *values, _fmt(cell["nfe"], 1),
                                         f"{cell['n']}/{cell['expected']}"]) + " |")
        md.append("")
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / "table.md", out / "table.csv"
    md_path.write_text("\n".join(md))
    fields = ["budget", "search_verifier", "strategy", "eval_verifier", "mean", "low", "high", "n",
              "search_nfe", "expected"]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in csv_rows:
            writer.writerow(row)
    return md_path, csv_path


def series(cfg: Config, cells: dict) -> list[dict]:
    """Every curve of the scaling plot: per (search verifier, eval verifier, strategy) the
    points (mean search NFEs, mean, low, high, budget), in budget order."""
    out = []
    for verifier in cfg.search_verifiers:
        for name in cfg.eval_verifiers:
            for strategy in cfg.strategies:
                points = []
                for budget in sorted(cfg.budgets):
                    cell = cells.get((budget, verifier, strategy.name))
                    if cell is None or cell["eval"][name]["mean"] is None:
                        continue
                    e = cell["eval"][name]
                    points.append({"budget": budget, "nfe": cell["nfe"], "mean": e["mean"], "low": e["low"],
                                   "high": e["high"], "n": e["n"]})
                out.append({"search_verifier": verifier, "eval_verifier": name, "strategy": strategy.name,
                            "points": points})
    return out


def plot(cfg: Config, cells: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = series(cfg, cells)
    baseline = cells.get((None, "-", BASELINE))
    rows, cols = len(cfg.search_verifiers), len(cfg.eval_verifiers)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for i, verifier in enumerate(cfg.search_verifiers):
        for j, name in enumerate(cfg.eval_verifiers):
            ax = axes[i][j]
            for curve in curves:
                if curve["search_verifier"] != verifier or curve["eval_verifier"] != name or not curve["points"]:
                    continue
                p = curve["points"]
                x = [q["nfe"] if q["nfe"] is not None else q["budget"] for q in p]
                y = [q["mean"] for q in p]
                err = [[q["mean"] - q["low"] for q in p], [q["high"] - q["mean"] for q in p]]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=curve["strategy"])
            if baseline is not None and baseline["eval"][name]["mean"] is not None:
                ax.axhline(baseline["eval"][name]["mean"], color="grey", linestyle="--", label=BASELINE)
            ax.set_title(f"search: {verifier} | eval: {name}", fontsize=9)
            ax.set_xlabel("NFEs spent (report: nfe.search_total)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scaling.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    (out / "scaling.json").write_text(json.dumps({"curves": curves, "baseline": baseline}, indent=1))
    return path


def write_all(cfg: Config, log=print) -> dict:
    cells = collect(cfg)
    md, csv_path = write_tables(cfg, cells, cfg.output)
    png = plot(cfg, cells, cfg.output)
    done = sum(c["n"] for c in cells.values())
    expected = sum(c["expected"] for c in cells.values())
    log(f"report: {md}, {csv_path}, {png} ({done}/{expected} tasks)")
    return {"table_md": md, "table_csv": csv_path, "plot": png, "cells": cells}
