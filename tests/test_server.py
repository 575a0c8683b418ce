"""The pack inside a real ComfyUI server: registration, a queued workflow, a clean import."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.host import PACK_NAME, comfyui_path

PACK_NODES = {"NoiseCandidates", "RandomSearch", "RandomSearchAdvanced", "ZeroOrderSearch",
              "ZeroOrderSearchAdvanced", "PathSearch", "PathSearchAdvanced", "VerifierScore"}


def test_every_pack_node_is_registered(live):
    info = live.object_info()
    missing = PACK_NODES - set(info)
    assert not missing, f"not in /object_info: {missing}"
    for name in PACK_NODES:
        node = info[name]
        assert node["python_module"].endswith(PACK_NAME), node["python_module"]
        inputs = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        for key, spec in inputs.items():
            assert spec[1].get("tooltip") if len(spec) > 1 else False, f"{name}.{key} has no tooltip"


def candidates_workflow(seed=3, count=3):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red cube"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "4": {"class_type": "NoiseCandidates", "inputs": {"seed": seed, "count": count}},
        "5": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["2", 0]}},
        "6": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "7": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 2,
                                                         "denoise": 1.0}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["4", 0], "guider": ["5", 0],
                                                                "sampler": ["6", 0], "sigmas": ["7", 0],
                                                                "latent_image": ["3", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "cands"}},
    }


def test_queued_workflow_with_a_pack_node_succeeds(live):
    res = live.run(candidates_workflow())
    assert res["status"] == "success", res
    images = res["history"]["outputs"]["10"]["images"]
    assert len(images) == 3  # NoiseCandidates made 3 candidates from a batch-1 latent


def test_quick_test_for_ci_imports_the_pack_cleanly(tmp_path):
    host = comfyui_path()
    proc = subprocess.run(
        [sys.executable, str(host / "main.py"), "--cpu", "--quick-test-for-ci", "--disable-all-custom-nodes",
         "--whitelist-custom-nodes", PACK_NAME, "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
         "--output-directory", str(tmp_path)],
        cwd=str(host), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    times = log.split("Import times for custom nodes:", 1)
    assert len(times) == 2, log[-3000:]
    pack_lines = [line for line in times[1].splitlines()[:20] if line.rstrip().endswith(PACK_NAME)
                  or PACK_NAME + " " in line]
    assert pack_lines, f"the pack is not among the imported custom nodes:\n{times[1][:2000]}"
    assert not any("IMPORT FAILED" in line for line in pack_lines), pack_lines
    assert f"Cannot import {comfyui_path() / 'custom_nodes' / PACK_NAME}" not in log, log[-3000:]
