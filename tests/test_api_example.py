"""examples/api_queue.py against the live server, as a user runs it (a subprocess): queue an
example workflow, follow the search over /ws, download the best image and the report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.harness import workflow_convert as wc
from tests.harness.host import REPO

SCRIPT = REPO / "examples" / "api_queue.py"


@pytest.fixture(scope="module")
def server_with_verifiers(server):
    wc.place_test_verifiers(server.dirs["models"])
    return server


def run_script(server, *args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--server", server.url],
                          capture_output=True, text=True, timeout=timeout, cwd=str(REPO))


def test_ui_workflow_with_overrides_downloads_best_image_and_report(server_with_verifiers, live, tmp_path):
    example = wc.EXAMPLES_DIR / "sd15_random_search_imagereward.json"
    # Node 1 is the checkpoint loader, node 5 the latent; RandomSearchSampler is the only one of its class.
    sets = ["RandomSearchSampler.candidates=4", "RandomSearchSampler.batch_size=2", "RandomSearchSampler.steps=2",
            "RandomSearchSampler.top_k=2", "5.width=32", "5.height=32"]
    proc = run_script(live, example, "--replace", "v1-5-pruned-emaonly.safetensors=tiny_sd15.safetensors",
                      *[a for s in sets for a in ("--set", s)], "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Progress lines from the live search messages (two rounds of two candidates, then the end).
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[node ")]
    assert len(progress) >= 2, proc.stdout
    assert "4 scored" in progress[-1] and "finished" in progress[-1], proc.stdout

    best = Image.open(tmp_path / "best.png")
    best.load()
    assert best.size == (32, 32)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["algorithm"] == "random" and report["settings"]["candidates"] == 4
    assert len(report["candidates"]) == 4
    assert report["best"]["score"] == max(c["score"] for c in report["candidates"])
    (state_file,) = tmp_path.glob("search_state_*.json")
    state = json.loads(state_file.read_text())
    assert state["finished"] and state["best_score"] == pytest.approx(report["best"]["score"])
    # The embedded workflow makes the PNG open in the editor like one saved there.
    assert json.loads(best.info["workflow"])["nodes"]


def test_api_format_file(server_with_verifiers, live, tmp_path):
    info = live.object_info()
    prompt = wc.tiny_prompt(wc.load_example("verifier_score_best_of_batch"), info)
    path = tmp_path / "prompt_api.json"
    path.write_text(json.dumps(prompt))
    out = tmp_path / "out"
    proc = run_script(live, path, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best = Image.open(out / "best.png")  # from VerifierScore's best_image
    best.load()
    assert best.size == (32, 32)
    assert not (out / "report.json").exists()  # no search node, no report


def test_bad_override_is_a_clear_error(server_with_verifiers, live, tmp_path):
    proc = run_script(live, wc.EXAMPLES_DIR / "sd15_random_search_imagereward.json",
                      "--set", "NoSuchNode.seed=1", "--out", tmp_path)
    assert proc.returncode != 0
    assert "no node 'NoSuchNode'" in proc.stderr and "Traceback" not in proc.stderr
