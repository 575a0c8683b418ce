"""The video example workflows (example_workflows/video_*.json) run in-process, node by node,
with tiny models of their families (tests/harness/video_models.py) under the file names the
examples use, and tiny sizes; what each example promises is checked against stock nodes.

What is substituted, and why: the video text encoders (umT5-XXL, T5-XXL) cannot be made small
for their loaders, so CLIPLoader is not run and each CLIPTextEncode yields conditioning of the
family's embedding width made in-process (the node titled "Positive" the positive one). Save
nodes and report previews (SaveVideo, PreviewAny, Note) are leaves that are not run; every other
node of the example runs for real. The editor-side checks of these files (widget values,
builder, template browser) are tests/test_example_workflows.py's.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.harness import video_models as vm
from tests.harness import workflow_convert as wc
from tests.harness.host import load_host, node_class, run_node

VIDEO_EXAMPLES = sorted(p.stem for p in wc.example_paths() if p.stem.startswith("video_"))
LEAVES = {"SaveVideo", "PreviewAny", "Note"}
TINY_VIDEO = {"EmptyHunyuanLatentVideo": {"width": 16, "height": 16, "length": 5},
              "EmptyLTXVLatentVideo": {"width": 64, "height": 64, "length": 9}}
TINY_STEPS = {"RandomSearchSampler": {"steps": 2, "candidates": 3},
              "BasicScheduler": {"steps": 4}, "SplitSigmas": {"step": 2},
              "KSamplerAdvanced": {"steps": 4}, "LTXVScheduler": {"steps": 4},
              "SearchRandom": {"candidates": 3}, "SearchEarlyRejection": {"candidates": 4},
              "NoiseCandidates": {"count": 4}}


def object_info(types) -> dict:
    """/object_info's entries of ``types``, made in-process."""
    info = {}
    for t in types:
        cls = node_class(t)
        if hasattr(cls, "GET_NODE_INFO_V1"):
            info[t] = cls.GET_NODE_INFO_V1()
        else:
            inputs = cls.INPUT_TYPES()
            info[t] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                       "output": list(cls.RETURN_TYPES), "output_name": list(getattr(cls, "RETURN_NAMES", None)
                                                                             or cls.RETURN_TYPES)}
    return info


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """The examples' model names -> tiny files of their families, in the host's model folders."""
    load_host()
    import folder_paths

    high, low = vm.wan22_experts()
    names = {"wan2.1_t2v_1.3B_fp16.safetensors": vm.wan21_unet(), "wan_2.1_vae.safetensors": vm.wan21_vae(),
             "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": high,
             "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": low,
             "ltx-video-2b-v0.9.safetensors": vm.ltxv_checkpoint()}
    for folder in ("diffusion_models", "vae", "checkpoints"):
        folder_paths.add_model_folder_path(folder, str(vm.CACHE))
    models = tmp_path_factory.mktemp("video_workflow_models")
    folder_paths.add_model_folder_path("verifiers", str(wc.place_test_verifiers(models)))
    return {**{k: v.name for k, v in names.items()}, **wc.MODEL_SUBSTITUTES}


def tiny_api(name: str, files: dict) -> dict:
    workflow = wc.load_example(name)
    prompt = wc.ui_to_api(workflow, object_info({n["type"] for n in workflow["nodes"] if n["type"] != "Note"}))
    wc.substitute_values(prompt, files)
    for node in prompt.values():
        node["inputs"].update({k: v for k, v in {**TINY_VIDEO.get(node["class_type"], {}),
                                                 **TINY_STEPS.get(node["class_type"], {})}.items()
                               if not isinstance(node["inputs"].get(k), list)})
        if node["class_type"] == "KSamplerAdvanced":  # the hand-over moves with the tiny step count
            for key in ("start_at_step", "end_at_step"):
                if node["inputs"][key] == 10:
                    node["inputs"][key] = 2
    return prompt


def execute(prompt: dict) -> dict:
    """Every node but the leaves, in dependency order, as the executor would; the outputs by id."""
    family = {nid: n["inputs"]["type"] for nid, n in prompt.items() if n["class_type"] == "CLIPLoader"}
    outputs: dict[str, tuple] = {}

    def run(nid: str) -> tuple:
        if nid in outputs:
            return outputs[nid]
        node = prompt[nid]
        inputs = {k: (run(v[0])[v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        kind = node["class_type"]
        if kind == "CLIPLoader":
            out = (None,)
        elif kind == "CLIPTextEncode":
            clip_id = node["inputs"]["clip"][0]
            pos, neg = vm.conditioning("ltxv" if family[clip_id] == "ltxv" else "wan")
            out = (pos if node.get("_meta", {}).get("title") == "Positive" else neg,)
        else:
            out = tuple(run_node(kind, **inputs))
        outputs[nid] = out
        return out

    for nid, node in prompt.items():
        if node["class_type"] not in LEAVES:
            run(nid)
    return outputs


def of_type(prompt: dict, kind: str, title: str | None = None) -> list[str]:
    return [nid for nid, n in prompt.items() if n["class_type"] == kind
            and (title is None or n.get("_meta", {}).get("title") == title)]


def report_of(outputs: dict, nid: str, kind: str) -> dict:
    names = [o.id for o in node_class(kind).define_schema().outputs]
    return json.loads(outputs[nid][names.index("report")])


def output_of(outputs: dict, nid: str, kind: str, name: str):
    return outputs[nid][[o.id for o in node_class(kind).define_schema().outputs].index(name)]


def test_the_video_examples_exist():
    assert VIDEO_EXAMPLES == ["video_ltxv_early_rejection", "video_wan21_random_search",
                              "video_wan22_14b_high_noise_search"]


@pytest.mark.parametrize("name", VIDEO_EXAMPLES)
def test_video_example_runs_and_its_winner_replays_with_stock_nodes(tiny_files, name):
    prompt = tiny_api(name, tiny_files)
    outputs = execute(prompt)
    assert {n["class_type"] for nid, n in prompt.items() if nid not in outputs} <= LEAVES
    videos = [outputs[nid][0] for nid in of_type(prompt, "CreateVideo")]
    assert videos and all(v.get_dimensions() for v in videos)
    kind = "RandomSearchSampler" if of_type(prompt, "RandomSearchSampler") else "NoiseSearch"
    (search,) = of_type(prompt, kind)
    report = report_of(outputs, search, kind)
    assert report["nfe"]["planned"] == report["nfe"]["measured"] > 0
    best = output_of(outputs, search, kind, "best")["samples"]
    seed = output_of(outputs, search, kind, "replay_seed")
    inputs = prompt[search]["inputs"]

    def linked(key):
        ref = inputs[key]
        return outputs[ref[0]][ref[1]]

    if name == "video_wan21_random_search":
        stock = run_node("KSampler", model=linked("model"), seed=seed, steps=inputs["steps"], cfg=inputs["cfg"],
                         sampler_name=inputs["sampler_name"], scheduler=inputs["scheduler"],
                         positive=linked("positive"), negative=linked("negative"), latent_image=linked("latent_image"),
                         denoise=1.0)[0]["samples"]
        assert torch.allclose(best, stock, atol=1e-4)
        assert report["verifier"].startswith("ensemble(") and "motion" in report["verifier"]
    elif name == "video_wan22_14b_high_noise_search":
        # The replay branch (the template's two stock samplers at the seed output) gives the video
        # the searched branch gives.
        (searched,) = of_type(prompt, "KSamplerAdvanced", "Low-noise expert (stock)")
        (replayed,) = of_type(prompt, "KSamplerAdvanced", "Replay: low-noise expert (stock)")
        (first,) = of_type(prompt, "KSamplerAdvanced", "Replay: high-noise expert (stock)")
        assert torch.allclose(outputs[first][0]["samples"], best, atol=1e-4)
        assert torch.allclose(outputs[searched][0]["samples"], outputs[replayed][0]["samples"], atol=1e-4)
        assert report["nfe"]["measured"] == 3 * (2 + 1)  # 3 candidates: 2 steps + the x0 at the hand-over
    else:
        guider = linked("guider")
        stock = run_node("SamplerCustom", model=guider.model_patcher, add_noise=True, noise_seed=seed,
                         cfg=guider.cfg, positive=_conds(prompt, outputs, 0),
                         negative=_conds(prompt, outputs, 1), sampler=linked("sampler"), sigmas=linked("sigmas"),
                         latent_image=linked("latent_image"))[0]["samples"]
        assert torch.allclose(best, stock, atol=1e-4)
        assert report["algorithm"] == "rejection" and report["nfe"]["measured"] < 4 * 4


def _conds(prompt: dict, outputs: dict, slot: int):
    (cond,) = of_type(prompt, "LTXVConditioning")
    return outputs[cond][slot]
