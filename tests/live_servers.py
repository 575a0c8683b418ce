"""Live ComfyUI servers for the sweep's tests (tests/test_sweep.py, tests/test_distributed_search.py):
each with the tiny SD1.5 checkpoint, the examples' test verifiers and the brightness classifier,
started side by side (a ComfyUI start takes most of a test's setup)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

from tests import verifier_fixtures as vf
from tests.harness import workflow_convert as wc
from tests.harness.server import ComfyServer

# The verifiers these servers have, as a sweep config's tables.
VERIFIER_TABLES = f"""
[verifiers.bright]
class_type = "ClassifierVerifierLoader"
inputs = {{ classifier_file = "classifiers/brightness.safetensors" }}
condition = "bright"

[verifiers.clipscore]
class_type = "CLIPScoreVerifierLoader"
inputs = {{ clip_file = "{wc.TEST_CLIP}" }}
"""


def run_tables(urls) -> str:
    """A sweep config's [servers], [ray] and [run] tables for these servers: a small local Ray
    (2 CPUs on the CI machine), a lost server waited for 3 s."""
    return f"""
[servers]
urls = {json.dumps(list(urls))}

[ray]
num_cpus = 2
object_store_mb = 100
log_to_driver = false

[run]
recover_wait = 3
task_timeout = 300
"""


@contextmanager
def brightness_servers(tmp_path_factory, tiny_checkpoint_path: Path, prefix: str, names=("a", "b")):
    """Servers named ``names`` (folders ``{prefix}_{name}``), started in parallel, stopped on exit."""
    servers = []
    for name in names:
        srv = ComfyServer(tmp_path_factory.mktemp(f"{prefix}_{name}"))
        srv.add_model("checkpoints", tiny_checkpoint_path, "tiny_sd15.safetensors")
        root = wc.place_test_verifiers(srv.dirs["models"])
        vf.write_brightness_classifier(root)
        servers.append(srv)
    errors = []

    def start(srv):
        try:
            srv.start()
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        yield servers
    finally:
        for srv in servers:
            srv.stop()
