"""`make study`: the long-chain study, where intermediate steering has room.

The demo's candidates are 4-step chains: particle steering and tree search have almost nothing to
steer there (the papers steer 50-100-step chains: FK steering arXiv 2501.06848, DTS arXiv
2506.20701). Here every candidate is a 16-step Euler chain, and particle steering and tree search
are compared with random search at equal NFEs and at half of them, on the same testbed, noises,
classes, verifier and held-out evaluator as the demo, with the same bootstrap intervals.

The settings were fixed before the run that reports them (bench/testbed/README.md, "The long-chain
study"): the demo's settings for every strategy, except that particle steering resamples every
2 steps (8 resampling points along 16 steps, rather than 16 resamplings of 2-particle clouds).

Target (a finding, not a test): particle steering reaches random search's verifier score with at
most half its NFEs, at random search's two largest budgets. Whatever it shows is reported.

Outputs: study_output/ (results.json, table.txt, scaling.png, pareto.png) and
bench/testbed/study_results.json (the summary the demo's target line (f) reads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.testbed import demo  # noqa: E402

STEPS = 16
BUDGETS = (16, 32, 64, 128)
PER_CLASS = 10
METHODS = ("steps", "random", "particles", "tree")
PARTICLES = {"interval": 2}


def long_chain_target(results: dict) -> dict:
    """Particle steering at <= half of random search's NFEs against random search, at random
    search's two largest budgets (point estimates, paired intervals beside them)."""
    half = results["targets"]["a"]["verifier_at_half_nfe"]
    parts = []
    for h in half:
        if h["particles_budget"] is None:
            parts.append(f"no particle row at <= half of random search's {h['random_budget']} NFEs")
            continue
        parts.append(f"particles@{h['particles_nfe']:.0f} {h['particles']:.2f} vs random@{h['random_nfe']:.0f} "
                     f"{h['random']:.2f} (diff {demo._ci(h)})")
    met = bool(len(half) == 2 and all(h["reaches"] for h in half))
    return {"met": met, "line": "particle steering vs random search at half the NFEs: " + "; ".join(parts),
            "comparisons": half, "per_class": results["settings"]["per_class"], "steps": STEPS}


def equal_nfe_lines(results: dict) -> list[str]:
    """Particle steering and tree search against random search at equal NFEs (paired)."""
    rows, lines = results["rows"], []
    for method in ("particles", "tree"):
        for b in results["settings"]["budgets"][1:]:
            mine, rnd = demo._row(rows, method, b), demo._row(rows, "random", b)
            if not (mine and rnd):
                continue
            diffs = ", ".join(f"{demo.METRIC_NAMES[k]} {mine[k] - rnd[k]:+.{demo.DIGITS[k]}f}"
                              for k in ("verifier_score", "accuracy", "frechet_distance", "diversity"))
            lines.append(f"{demo.LABELS[method]} @{b} vs random search @{b}: {diffs}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=PER_CLASS)
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--resamples", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "study_output"))
    ap.add_argument("--summary", default=str(demo.STUDY_RESULTS), help="where the demo's line (f) reads the target")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    demo.reuse_freed_memory()
    t0 = time.perf_counter()
    out = Path(args.out)
    budgets = [int(b) for b in args.budgets.split(",")]
    results = demo.run(budgets, args.per_class, out, search_steps=budgets[0], methods=METHODS,
                       particles=PARTICLES, resamples=args.resamples, progress=not args.no_progress)
    demo.plot(results, out)
    demo.pareto_plot(results, out)
    target = long_chain_target(results)
    seconds = round(time.perf_counter() - t0, 1)
    text = "\n".join([demo.table(results), "", "at equal NFEs:"] + [f"  {x}" for x in equal_nfe_lines(results)]
                     + ["", f"target: {'met' if target['met'] else 'NOT met'}: {target['line']}",
                        "", "the trade-off (Pareto frontier, 95% intervals):"]
                     + [f"  {x}" for x in demo.pareto_lines(results)])
    (out / "table.txt").write_text(text + "\n")
    Path(args.summary).write_text(json.dumps({"target": target, "seconds": seconds,
                                              "settings": results["settings"]}, indent=1) + "\n")
    print(text)
    print(f"[study] {len(results['rows'])} rows in {seconds:.0f} s; wrote {out}/ and {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
