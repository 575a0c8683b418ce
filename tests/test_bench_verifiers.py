"""bench/verifiers.py runs end to end and reports every verifier (no timing is asserted:
speed targets live in bench/ as printed ratios)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness.host import REPO


def test_verifier_bench_quick_reports_sizes_and_ratios():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "verifiers.py"), "--quick"], capture_output=True,
                          text=True, timeout=600, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    names = ["CLIPScore", "Aesthetic", "ImageReward", "PickScore", "HPSv2.1", "DINOv2-small"]
    assert [r["verifier"] for r in summary["throughput"]] == names
    assert all(r["images_per_s"] > 0 for r in summary["throughput"])
    assert summary["throughput"][0]["time_vs_clipscore"] == 1.0
    params = {r["verifier"]: r["params"] for r in summary["official"]}
    # The official architectures' sizes (meta device): CLIP ViT-L/14, BLIP+BERT, ViT-H/14 twice.
    assert 427e6 < params["CLIPScore"] < 428e6
    assert 445e6 < params["ImageReward"] < 447e6
    assert params["PickScore"] == params["HPSv2.1"] and 985e6 < params["HPSv2.1"] < 987e6
    for r in summary["official"]:
        assert abs(r["fp16_weights_gb"] - 2 * r["params"] / 1e9) < 1e-9
    assert "time / CLIPScore" in proc.stdout
