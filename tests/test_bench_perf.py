"""bench/perf.py --quick end to end, as `make bench` runs it (a subprocess).

Checks the shape and sanity of what the benchmark reports, never its timings: test machines
are shared and noisy, so speed targets are read from the benchmark's output, not asserted.
What is asserted is deterministic: the keys of the last JSON line, finite positive figures,
the device, that b (RandomSearch) and c (the limit) scored the very same candidates, and
that a second run of the workflow loaded no weights.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "perf.py"

BATCH_KEYS = ("batch_speedup_random", "batch_speedup_zero_order", "batch_speedup_paths", "batch_overhead_random",
              "batch_mem_ratio")
REQUIRED = ("overhead_max", "speedup_64px_n16", "mem_ratio_n64_n16", "device", *BATCH_KEYS)
POSITIVE = ("overhead_max", "speedup_64px_n16", "mem_ratio_n64_n16", "zero_order_nfe_rel", "paths_nfe_rel",
            "total_s", *BATCH_KEYS)
ROW_POSITIVE = ("a_s", "b_s", "c_s", "a_over_b", "b_over_c")


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def summary_problems(lines: list[str], device: str) -> list[str]:
    """Everything wrong with the benchmark's output (an empty list when it is sane)."""
    if not lines:
        return ["no output"]
    try:
        summary = json.loads(lines[-1])
    except json.JSONDecodeError as err:
        return [f"last line is not JSON ({err}): {lines[-1][:200]!r}"]
    if not isinstance(summary, dict):
        return [f"last line is not a JSON object: {lines[-1][:200]!r}"]
    problems = [f"missing key {k}" for k in REQUIRED if k not in summary]
    problems += [f"{k} is not a finite positive number: {summary.get(k)!r}"
                 for k in POSITIVE if not _positive_finite(summary.get(k))]
    if summary.get("device") != device:
        problems.append(f"device is {summary.get('device')!r}, expected {device!r}")
    if summary.get("no_loads_on_second_run") is not True:
        problems.append("the second run of the workflow loaded weights")
    if summary.get("batch_same_winners") is not True:
        problems.append("a batched search found other winners than the same problems searched one by one")
    ladder = summary.get("ladder")
    if not isinstance(ladder, list) or not ladder:
        return problems + ["no ladder rows"]
    for row in ladder:
        where = f"ladder {row.get('px')} px, N={row.get('n')}"
        problems += [f"{where}: {k} is not a finite positive number: {row.get(k)!r}"
                     for k in ROW_POSITIVE if not _positive_finite(row.get(k))]
        diff = row.get("scores_max_abs_diff_b_c")
        if not isinstance(diff, (int, float)) or not diff < 1e-3:
            problems.append(f"{where}: RandomSearch and the limit scored different candidates (max diff {diff!r})")
    if summary.get("overhead_max") != max((r.get("b_over_c") or 0) for r in ladder):
        problems.append("overhead_max is not the largest b/c of the ladder")
    return problems


def test_summary_problems_rejects_bad_output():
    good = {"device": "cpu", "overhead_max": 1.05, "speedup_64px_n16": 1.8, "mem_ratio_n64_n16": 1.01,
            "zero_order_nfe_rel": 0.5, "paths_nfe_rel": 0.9, "total_s": 30.0, "no_loads_on_second_run": True,
            "batch_speedup_random": 2.1, "batch_speedup_zero_order": 3.2, "batch_speedup_paths": 3.1,
            "batch_overhead_random": 1.05, "batch_mem_ratio": 1.1, "batch_same_winners": True,
            "ladder": [{"px": 32, "n": 2, "a_s": 1.0, "b_s": 0.6, "c_s": 0.57, "a_over_b": 1.7,
                        "b_over_c": 1.05, "scores_max_abs_diff_b_c": 0.0}]}
    assert summary_problems(["table", json.dumps(good)], "cpu") == []
    for key, value in (("mem_ratio_n64_n16", None), ("overhead_max", float("nan")), ("speedup_64px_n16", -1),
                       ("device", "cuda"), ("no_loads_on_second_run", False), ("batch_speedup_paths", None),
                       ("batch_mem_ratio", float("nan")), ("batch_same_winners", False)):
        bad = {**good, key: value}
        assert summary_problems([json.dumps(bad)], "cpu"), key
    for key in ("overhead_max", "batch_speedup_zero_order"):
        missing = {k: v for k, v in good.items() if k != key}
        assert summary_problems([json.dumps(missing)], "cpu"), key
    wrong_scores = {**good, "ladder": [{**good["ladder"][0], "scores_max_abs_diff_b_c": 0.5}]}
    assert summary_problems([json.dumps(wrong_scores)], "cpu")
    assert summary_problems(["not json"], "cpu")
    assert summary_problems([], "cpu")


@pytest.fixture(scope="module")
def quick_run():
    import torch

    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=str(REPO), capture_output=True,
                          text=True, timeout=600, check=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return proc, device


def test_quick_benchmark_reports_sane_summary(quick_run):
    proc, device = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    problems = summary_problems(lines, device)
    assert not problems, "\n".join(problems) + "\n" + proc.stdout[-3000:]


def test_quick_benchmark_prints_its_tables(quick_run):
    proc, _ = quick_run
    out = proc.stdout
    for heading in ("Wall time, median over repeats", "NFE throughput", "Peak memory growth",
                    "targets (reported, not asserted)", "no weights loaded on the second run",
                    "Latent batches at", "batch_speedup_zero_order >= 3"):
        assert heading in out, f"{heading!r} missing from the benchmark output:\n{out[-3000:]}"


FULL_SIZE_STRATEGIES = ("random", "zero_order", "paths")


def full_size_problems(summary: dict, quick: bool = False) -> list[str]:
    """Everything wrong with the full-size section of the benchmark's JSON line."""
    full = summary.get("full_size")
    if not isinstance(full, dict) or set(full) != {"sd15", "sdxl"}:
        return [f"full_size holds {sorted(full) if isinstance(full, dict) else full!r}, expected sd15 and sdxl"]
    problems = []
    for name, row in full.items():
        problems += [f"{name}: {k} is not a finite positive number: {row.get(k)!r}"
                     for k in ("a_over_b", "b_over_c", "a_s", "b_s", "c_s", "unet_params")
                     if not _positive_finite(row.get(k))]
        for key in ("batch_speedup", "peak_mib"):
            values = row.get(key) or {}
            # --quick measures latent batches of random search only.
            want = {"random"} if (quick and key == "batch_speedup") else set(FULL_SIZE_STRATEGIES)
            if set(values) != want:
                problems.append(f"{name}: {key} has {sorted(values)}, expected {FULL_SIZE_STRATEGIES}")
            check = _positive_finite if key == "batch_speedup" else (
                lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)
            problems += [f"{name}: {key}[{k}] = {v!r}" for k, v in values.items() if not check(v)]
        if not (isinstance(row.get("scores_max_abs_diff_b_c"), (int, float)) and row["scores_max_abs_diff_b_c"] < 1e-3):
            problems.append(f"{name}: RandomSearch and the limit scored different candidates")
        if row.get("batch_same_winners") is not True:
            problems.append(f"{name}: a batched search found other winners than one by one")
    return problems


def test_full_size_problems_rejects_bad_output():
    row = {"a_over_b": 1.2, "b_over_c": 1.0, "a_s": 2.0, "b_s": 1.7, "c_s": 1.7, "unet_params": 26_000_000,
           "batch_speedup": {k: 1.5 for k in FULL_SIZE_STRATEGIES}, "peak_mib": {k: 60.0 for k in FULL_SIZE_STRATEGIES},
           "scores_max_abs_diff_b_c": 0.0, "batch_same_winners": True}
    good = {"full_size": {"sd15": row, "sdxl": row}}
    assert full_size_problems(good) == []
    assert full_size_problems({"full_size": {"sd15": row}})
    assert full_size_problems({"full_size": None})
    quick_row = {**row, "batch_speedup": {"random": 1.2}}
    quick = {"full_size": {"sd15": quick_row, "sdxl": quick_row}}
    assert full_size_problems(quick, quick=True) == [] and full_size_problems(quick)
    for key, value in (("a_over_b", None), ("b_over_c", float("nan")), ("batch_same_winners", False),
                       ("scores_max_abs_diff_b_c", 0.5), ("peak_mib", {"random": 1.0}),
                       ("batch_speedup", {**row["batch_speedup"], "paths": 0})):
        assert full_size_problems({"full_size": {"sd15": row, "sdxl": {**row, key: value}}}), key


def test_full_size_path_builds_and_runs_on_the_cpu():
    """`--device cpu --full-size --quick`: the full-size code path (the host's SD1.5 and SDXL model
    classes, the SD VAE through comfy.sd.VAE, CLIPScore on a ViT-L/14-shaped open_clip) with fewer
    blocks at 32 px. Checks that it builds and runs and what it reports; no timing is asserted."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--full-size", "--quick"], cwd=str(REPO),
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = json.loads(lines[-1])
    assert summary["device"] == "cpu" and summary["quick"] is True
    problems = full_size_problems(summary, quick=True)
    assert not problems, "\n".join(problems) + "\n" + proc.stdout[-3000:]
    for text in ("full-size sd15: 32 px", "full-size sdxl: 32 px", "peak memory per strategy", "ViT-L-14"):
        assert text in proc.stdout, text
