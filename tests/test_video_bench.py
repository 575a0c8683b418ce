"""bench/video.py --quick end to end, as `make bench` runs it (a subprocess): the video rows are
printed and the last line's figures are finite and positive (timings are read, never asserted:
test machines are shared)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_bench_runs_the_video_rows():
    assert re.search(r"^bench:.*\n(\t.*\n)*\t\$\(PY\) bench/video\.py", (REPO / "Makefile").read_text(), re.M)
    done = subprocess.run([sys.executable, str(REPO / "bench" / "video.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = json.loads(lines[-1])
    for key in ("video_overhead", "video_peak_mib", "video_peak_mib_chunk2"):
        assert sorted(summary[key]) == ["1", "2"], key
        assert all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in summary[key].values()), key
    text = done.stdout
    assert "Video search over its limit" in text and "Peak memory of one video search" in text
    rows = [line for line in lines if re.match(r"^\s+[12] \|\s+[\d.]+\s+[\d.]+ \|\s+[\d.]+x$", line)]
    assert len(rows) == 2, text
