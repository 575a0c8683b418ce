"""What `make demo` prints is the demo's own: the in-process host (devhost/) imports ComfyUI's
own `utils` package (no module-path clash), and the host's import failures of optional
modules the demo does not use (its audio nodes: torchaudio has no build for the pinned torch)
stay out of the console, kept where a missing node can name them."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import devhost
from tests.harness.host import REPO, comfyui_path

# The smallest run that goes through every stage: the host and the pack loaded, one stock row
# and one search row, the bootstrap, the tables, the plots and the files.
SMALL = ["--budgets", "4,8", "--per-class", "1", "--methods", "steps,random", "--resamples", "10"]
# What the host prints when its optional modules fail to import (and its advice about them).
HOST_NOISE = re.compile(r"warning|import failed|cannot import|pip install|torchaudio", re.IGNORECASE)


def test_make_demo_runs_the_demo_module():
    """The subprocess below runs what `make demo` runs."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert recipe and recipe.group(1).split() == ["$(PY)", "-m", "bench.testbed.demo", "$(DEMO_ARGS)"]


def test_the_demo_prints_no_traceback_and_no_host_warnings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != devhost.SHOW_LOG_ENV}
    env.setdefault("COMFYUI_PATH", str(comfyui_path()))  # as the Makefile exports it
    proc = subprocess.run([sys.executable, "-m", "bench.testbed.demo", *SMALL, "--out", str(tmp_path)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    noise = [line for line in out.splitlines() if HOST_NOISE.search(line)]
    assert not noise, "\n".join(noise)
    assert f"[demo] wrote {tmp_path}/results.json" in out, out
    for name in ("table.txt", "scaling.png", "grid.png"):
        assert (Path(tmp_path) / name).is_file(), name


def test_the_host_imports_its_own_utils_package(comfy):
    """ComfyUI's nodes.py puts comfy/ first on sys.path, where comfy/utils.py would be found
    as `utils`; the host's server module (imported by its image nodes) needs the package."""
    assert Path(sys.modules["utils"].__file__).resolve() == (comfyui_path() / "utils" / "__init__.py").resolve()
    assert {"ImageStitch", "SaveAnimatedWEBP"} <= set(comfy.NODE_CLASS_MAPPINGS)
    assert "nodes_images.py" not in devhost.failed_imports()


def test_a_missing_node_names_the_host_modules_that_failed_to_import(comfy):
    failed = devhost.failed_imports()
    with pytest.raises(KeyError, match="no node 'NoSuchNode' in the host") as info:
        devhost.node_class("NoSuchNode")
    for name in failed:
        assert name in str(info.value)
    if importlib.util.find_spec("torchaudio") is None:  # recorded, though not printed
        assert "nodes_audio.py" in failed
