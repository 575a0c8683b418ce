"""Malformed and hostile prompts against the pack's nodes on a live ComfyUI server.

Every case must end in one of two ways a user can act on:
- HTTP 400 at validation, with `node_errors` naming the input and what would be valid;
- an `execution_error` whose message says what is wrong and what to do.
Never a crash, a hang, a huge allocation, or code run from a file. After all of them the
same server still runs a valid search.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import tests.reliability_prompts as rp
import tests.verifier_fixtures as vf

MARKER_NAME = "noise_search_pickle_code_ran"
LONG_TEXT = ("a red cube on a wooden table, " * 400)[:10_000]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], dict]
    expect: str  # "rejected" (HTTP 400), "error" (execution_error) or "success"
    inputs: tuple[str, ...] = ()  # input names the node_errors must name
    words: tuple[str, ...] = ()  # words the error text must contain (lower case)
    node_type: str | None = None  # node an execution_error must come from
    timeout: float = 180.0
    extra: dict = field(default_factory=dict)


def search(node="RandomSearch", **kw):
    return lambda: rp.search_prompt(node, **kw)


def linked(node, input_name, value, kind="PrimitiveInt"):
    """``input_name`` fed by a primitive node: ComfyUI does not range-check linked values."""
    def build():
        p = rp.search_prompt(node, **{input_name: ["30", 0]})
        p["30"] = {"class_type": kind, "inputs": {"value": value}}
        return p
    return build


def latent_through(*nodes_):
    """The search's latent_image comes out of a chain of stock latent nodes."""
    def build():
        p = rp.search_prompt("RandomSearch", latent_image=[str(29 + len(nodes_)), 0])
        prev = [rp.LATENT_ID, 0]
        for i, (class_type, inputs) in enumerate(nodes_):
            nid = str(30 + i)
            p[nid] = {"class_type": class_type, "inputs": {**inputs, "samples": prev}}
            prev = [nid, 0]
        return p
    return build


def inf_latent():
    # A white image encoded by the (random) TAESD encoder, then x10 forty times: the
    # float32 range ends at 3.4e38, so the latent overflows to +-inf with stock nodes only.
    p = rp.search_prompt("RandomSearch", latent_image=["79", 0])
    p["29"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                     "color": 0xFFFFFF}}
    p["30"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["29", 0], "vae": [rp.CKPT_ID, 2]}}
    prev = ["30", 0]
    for i in range(31, 80):
        p[str(i)] = {"class_type": "LatentMultiply", "inputs": {"samples": prev, "multiplier": 10.0}}
        prev = [str(i), 0]
    return p


def verifier_score_prompt(image_nodes: dict, image_ref, verifier=None, condition="bright"):
    p = {rp.CKPT_ID: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": rp.CKPT}},
         rp.VERIFIER_ID: verifier or rp.classifier_verifier(), **image_nodes}
    p["50"] = {"class_type": "VerifierScore", "inputs": {"images": image_ref, "verifier": [rp.VERIFIER_ID, 0],
                                                         "condition": condition}}
    p["51"] = {"class_type": "PreviewAny", "inputs": {"source": ["50", 3]}}
    return p


def nan_image_into_verifier_score():
    nodes_ = {rp.LATENT_ID: {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32,
                                                                         "batch_size": 2}},
              "30": {"class_type": "LatentMultiply", "inputs": {"samples": [rp.LATENT_ID, 0],
                                                                "multiplier": math.nan}},
              "31": {"class_type": "VAEDecode", "inputs": {"samples": ["30", 0], "vae": [rp.CKPT_ID, 2]}}}
    return verifier_score_prompt(nodes_, ["31", 0])


def loader_prompt(loader: dict):
    """A search whose verifier comes from ``loader`` (file cases)."""
    return lambda: rp.search_prompt("RandomSearch", verifier_node=loader)


def aesthetic_loader(aesthetic_file: str):
    return {"class_type": "AestheticVerifierLoader",
            "inputs": {"aesthetic_file": aesthetic_file, "clip_file": "clip/ViT-L-14-openai.safetensors",
                       "architecture": "auto", "precision": "fp32", "allow_download": True}}


def with_mask():
    p = rp.search_prompt("PathSearch", latent_image=["31", 0])
    p["30"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}
    p["31"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": [rp.LATENT_ID, 0], "mask": ["30", 0]}}
    return p


def empty_sigmas():
    # SplitSigmas past the last step leaves an empty low half.
    p = rp.search_prompt("RandomSearchAdvanced", sigmas=["31", 1])
    p["31"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["23", 0], "step": 100}}
    return p


def string_into_latent():
    p = rp.search_prompt("RandomSearch", latent_image=["30", 0])
    p["30"] = {"class_type": "PrimitiveString", "inputs": {"value": "not a latent"}}
    return p


def long_prompt():
    # 10,000 characters in the text encoder and in the verifier's condition (ImageReward
    # truncates to 35 tokens; ComfyUI's CLIP encodes 77-token windows).
    return rp.search_prompt("RandomSearch", text=LONG_TEXT, verifier_node=rp.imagereward_verifier(),
                            condition=LONG_TEXT)


NAN = math.nan
R, E = "rejected", "error"

CASES = [
    # -- candidate counts ---------------------------------------------------------------------
    Case("candidates_zero", search(candidates=0), R, ("candidates",), ("min", "1")),
    Case("candidates_negative", search(candidates=-3), R, ("candidates",), ("min", "1")),
    Case("candidates_huge", search(candidates=10**9), R, ("candidates",), ("max", "4096")),
    Case("noise_candidates_count_zero", search("RandomSearchAdvanced", candidates=2), R, ("count",), ("min", "1"),
         extra={"patch": {"20": {"count": 0}}}),
    Case("neighbours_huge", search("ZeroOrderSearch", neighbours=10**9), R, ("neighbours",), ("max", "1024")),
    Case("paths_times_branches_huge", search("PathSearch", paths=1024, branches=1024), E, (),
         ("paths x branches", "4096"), "PathSearch"),
    # 4096 candidates of a 16384 px latent: 256 GiB of noises, refused before allocating.
    Case("candidates_times_latent_too_big", search(candidates=4096, size=16384), E, (),
         ("gib", "fewer candidates or a smaller image"), "RandomSearch"),
    Case("linked_candidates_huge", linked("RandomSearch", "candidates", 10**9), E, (),
         ("candidates must be between 1 and 4096",), "RandomSearch"),
    Case("linked_steps_huge", linked("RandomSearch", "steps", 10**9), E, (),
         ("steps must be between 1 and 10000",), "RandomSearch"),
    # Valid linked values: validation runs without them (they are absent there) and succeeds.
    Case("linked_budget_valid", linked("RandomSearch", "budget", 8), "success"),
    Case("linked_start_valid", linked("PathSearch", "start", 0.4, "PrimitiveFloat"), "success"),
    Case("linked_paths_huge", linked("PathSearchAdvanced", "paths", 10**7), E, (),
         ("paths must be between 1 and 1024",), "PathSearchAdvanced"),
    # -- steps, angles, levels ----------------------------------------------------------------------
    # Ranges are the schema's: ComfyUI checks them itself and names the input once.
    Case("steps_zero", search(steps=0), R, ("steps",), ("smaller than min of 1",)),
    Case("steps_huge", search(steps=10**7), R, ("steps",), ("bigger than max of 10000",)),
    Case("search_steps_negative", search(search_steps=-1), R, ("search_steps",), ("smaller than min of 0",)),
    Case("denoise_zero", search(denoise=0.0), R, ("denoise",), ("smaller than min of 0.01",)),
    # NaN passes every comparison of the host's range check: the node refuses it when it runs.
    Case("cfg_nan", search(cfg=NAN), E, (), ("cfg must be between 0.0 and 100.0", "nan"), "RandomSearch"),
    Case("angle_zero", search("ZeroOrderSearch", angle=0.0), R, ("angle",), ("smaller than min of 0.01",)),
    Case("angle_180", search("ZeroOrderSearch", angle=180.0), R, ("angle",), ("179.99",)),
    Case("angle_nan_advanced", search("ZeroOrderSearchAdvanced", angle=NAN), E, (), ("angle", "nan"),
         "ZeroOrderSearchAdvanced"),
    # Rules relating several inputs are checked when the node runs, before any denoising.
    Case("backward_equals_forward", search("PathSearch", forward=0.3, backward=0.3), E, (),
         ("backward (0.3) must be greater than forward (0.3)",), "PathSearch"),
    Case("backward_below_forward_advanced", search("PathSearchAdvanced", forward=0.5, backward=0.2), E, (),
         ("must be greater than forward",), "PathSearchAdvanced"),
    Case("start_above_one", search("PathSearch", start=1.5), R, ("start",), ("bigger than max of 0.99",)),
    Case("start_zero", search("PathSearch", start=0.0), R, ("start",), ("smaller than min of 0.01",)),
    Case("start_infinite", search("PathSearchAdvanced", start=math.inf), R, ("start",), ("start", "inf")),
    Case("start_plus_forward_above_one", search("PathSearch", start=0.9, forward=0.2, backward=0.5), E, (),
         ("exceeds 1", "lower start or forward"), "PathSearch"),
    Case("start_above_denoised_range", search("PathSearch", denoise=0.3, start=0.5, forward=0.2, backward=0.7), E,
         (), ("re-noises above where this run starts", "lower start or forward"), "PathSearch"),
    Case("interval_steps_zero", search("PathSearch", interval_steps=0), R, ("interval_steps",), ("min", "1")),
    # -- budgets and sizes ---------------------------------------------------------------------
    # A candidate's cost is measured on the sampler, so the budget is checked when the node runs.
    Case("budget_below_one_candidate", search(budget=1), E, (), ("budget", "cannot pay for one candidate",
                                                                 "at least 2"), "RandomSearch"),
    Case("budget_negative", search(budget=-5), R, ("budget",), ("smaller than min of 0",)),
    Case("top_k_zero", search(top_k=0), R, ("top_k",), ("min", "1")),
    Case("batch_size_negative", search(batch_size=-1), R, ("batch_size",), ("min", "0")),
    Case("seed_negative", search(seed=-1), R, ("seed",), ("min", "0")),
    Case("seed_not_a_number", search(seed="abc"), R, ("seed",), ("int",)),
    # ComfyUI v0.3.75 does not check V3 combo values: the node refuses them when it runs.
    Case("sampler_unknown", search(sampler_name="not_a_sampler"), E, (), ("sampler_name", "not_a_sampler",
                                                                         "euler"), "RandomSearch"),
    Case("scheduler_unknown", search(scheduler="sometimes"), E, (), ("scheduler", "sometimes", "normal"),
         "RandomSearch"),
    Case("scheduler_from_a_string_node", linked("RandomSearch", "scheduler", "sometimes", "PrimitiveString"), R,
         ("scheduler",), ("string", "combo")),
    # -- wrong types and missing inputs ----------------------------------------------------------
    Case("string_into_latent", string_into_latent, R, ("latent_image",), ("string", "latent")),
    Case("model_into_verifier", search(verifier=[rp.CKPT_ID, 0]), R, ("verifier",), ("model", "verifier")),
    Case("verifier_missing", search(verifier=None), R, ("verifier",), ("required input is missing",)),
    # -- latents and images the nodes do not support ------------------------------------------
    # A latent batch is searched as independent problems (up to 1024 latents).
    Case("latent_batch_2", search(batch=2), "success"),
    Case("latent_batch_above_limit", search(batch=1025, size=16), E, (),
         ("latent_image", "batch of 1025", "supported: a latent batch of 1 to 1024"), "RandomSearch"),
    Case("latent_batch_above_limit_paths_advanced", search("PathSearchAdvanced", batch=1025, size=16), E, (),
         ("latent_image", "supported: a latent batch of 1 to 1024"), "PathSearchAdvanced"),
    Case("latent_nan", latent_through(("LatentMultiply", {"multiplier": NAN})), E, (),
         ("latent_image", "nan or infinite"), "RandomSearch"),
    Case("latent_inf", inf_latent, E, (), ("latent_image", "nan or infinite"), "RandomSearch"),
    Case("mask_into_path_search", with_mask, E, (), ("noise mask", "random search or zero-order search"),
         "PathSearch"),
    Case("empty_sigmas", empty_sigmas, E, (), ("sigmas", "at least one step"), "RandomSearchAdvanced"),
    Case("nan_images_into_verifier_score", nan_image_into_verifier_score, E, (),
         ("nan or infinite", "diverged"), "VerifierScore"),
    # -- conditions --------------------------------------------------------------------------------
    Case("unknown_class_condition", search(condition="purple"), E, (), ("unknown class", "dark", "bright"),
         "RandomSearch"),
    Case("long_prompt_and_condition", long_prompt, "success", timeout=300),
    # NoiseCandidates (several noises) as the pivot source of zero-order search: its first noise.
    Case("zero_order_advanced_with_noise_candidates", search("ZeroOrderSearchAdvanced"), "success"),
    # -- the current nodes: judging as one JUDGE, the search's settings in its SEARCH --------------
    Case("current_nodes_run", search("RandomSearchSampler"), "success"),
    Case("noise_search_runs", search("NoiseSearch"), "success"),
    Case("path_search_sampler_runs", search("PathSearchSampler"), "success"),
    Case("verifier_into_judge", search("NoiseSearch", judge=[rp.VERIFIER_ID, 0]), R, ("judge",),
         ("verifier", "judge")),
    Case("model_into_judges_verifier", search("RandomSearchSampler", verifier=[rp.CKPT_ID, 0]), R, ("verifier",),
         ("model", "verifier")),
    Case("judge_missing", search("RandomSearchSampler", judge=None), R, ("judge",), ("required input is missing",)),
    Case("search_settings_negative", search("NoiseSearch", budget=-5, top_k=0), R, ("budget", "top_k"),
         ("smaller than min",)),
    Case("linked_candidates_huge_sampler", linked("RandomSearchSampler", "candidates", 10**9), E, (),
         ("candidates must be between 1 and 4096",), "RandomSearchSampler"),
    Case("linked_candidates_huge_search_options", linked("NoiseSearch", "candidates", 10**9), E, (),
         ("candidates must be between 1 and 4096",), "SearchRandom"),
    Case("backward_below_forward_sampler", search("PathSearchSampler", forward=0.5, backward=0.2), E, (),
         ("must be greater than forward",), "PathSearchSampler"),
    Case("unknown_class_condition_judge", search("NoiseSearch", condition="purple"), E, (),
         ("unknown class", "dark", "bright"), "NoiseSearch"),
    # -- verifier files ------------------------------------------------------------------------------
    # ComfyUI v0.3.75 does not check V3 combo values: the loader reports the missing file.
    Case("missing_verifier_file", loader_prompt(rp.classifier_verifier("classifiers/nope.safetensors")), E,
         (), ("classifiers/nope.safetensors", "not found", "place it at"), "ClassifierVerifierLoader"),
    # Something at the file's place that is not a file: said what it is, never opened (a FIFO would block).
    Case("verifier_path_is_a_directory", loader_prompt(rp.classifier_verifier("classifiers/dir.safetensors")), E,
         (), ("classifiers/dir.safetensors", "is a directory", "not a file"), "ClassifierVerifierLoader"),
    Case("verifier_path_is_a_fifo", loader_prompt(rp.classifier_verifier("classifiers/fifo.safetensors")), E,
         (), ("named pipe", "not a file"), "ClassifierVerifierLoader", timeout=60),
    Case("verifier_path_is_a_symlink_loop", loader_prompt(rp.classifier_verifier("classifiers/loop.safetensors")),
         E, (), ("symbolic link loop", "not a file"), "ClassifierVerifierLoader"),
    Case("missing_verifier_file_download_off", loader_prompt(aesthetic_loader(
        "aesthetic/sac+logos+ava1-l14-linearMSE.pth")), E, (),
        ("not found", "downloads are switched off", "place it at"), "AestheticVerifierLoader"),
    Case("truncated_safetensors", loader_prompt(rp.classifier_verifier("classifiers/truncated.safetensors")), E,
         (), ("corrupt or truncated", "download or copy it again"), "ClassifierVerifierLoader"),
    Case("garbage_safetensors", loader_prompt(rp.classifier_verifier("classifiers/garbage.safetensors")), E,
         (), ("corrupt or truncated",), "ClassifierVerifierLoader"),
    Case("pickle_with_code_aesthetic", loader_prompt(aesthetic_loader("aesthetic/evil.pth")), E, (),
         ("refused", "never unpickles"), "AestheticVerifierLoader"),
    Case("pickle_with_code_imagereward", loader_prompt(rp.imagereward_verifier("ImageReward/evil.pt")), E, (),
         ("refused",), "ImageRewardVerifierLoader"),
]


@pytest.fixture(scope="module")
def hostile_files(server, tmp_path_factory):
    """The verifier files the cases need, in the live server's `verifiers` folder."""
    tmp = tmp_path_factory.mktemp("reliability_inputs")
    rp.install_verifiers(server, tmp)
    root = server.dirs["models"] / "verifiers"
    good = root / rp.CLASSIFIER
    for name in ("truncated", "garbage"):
        (root / "classifiers" / f"{name}.json").write_bytes(good.with_suffix(".json").read_bytes())
    vf.truncated_copy(good, root / "classifiers" / "truncated.safetensors", keep=0.6)
    (root / "classifiers" / "garbage.safetensors").write_bytes(os.urandom(4096))
    for name in ("dir", "fifo", "loop"):
        (root / "classifiers" / f"{name}.json").write_bytes(good.with_suffix(".json").read_bytes())
    (root / "classifiers" / "dir.safetensors").mkdir(exist_ok=True)
    if not (root / "classifiers" / "fifo.safetensors").exists():
        os.mkfifo(root / "classifiers" / "fifo.safetensors")
    loop = root / "classifiers" / "loop.safetensors"
    if not loop.is_symlink():
        loop.symlink_to(loop.name)
    # Unpickling these would create the marker file (in the test's temp dir and in the
    # server's working directory, in case a relative path were resolved there).
    marker = tmp / MARKER_NAME
    vf.write_pickle_with_code(root / "aesthetic" / "evil.pth", marker)
    vf.write_pickle_with_code(root / "ImageReward" / "evil.pt", marker)
    yield {"marker": marker}
    assert not marker.exists(), "unpickling a verifier file ran code"


def build(case: Case) -> dict:
    prompt = case.build()
    for nid, inputs in case.extra.get("patch", {}).items():
        prompt[nid]["inputs"].update(inputs)
    return prompt


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_clearly(live, hostile_files, case):
    result = live.run(build(case), timeout=case.timeout)
    text = rp.error_text(result)
    print(f"\n[{case.name}] {result['status']}: {text[:600]!r}")
    if case.expect == "success":
        assert result["status"] == "success", text
        return
    if case.expect == "rejected":
        assert result["status"] == "rejected", f"expected HTTP 400, got {result['status']}: {text[:2000]}"
        assert result["http"] == 400
        assert result["body"]["error"]["type"] == "prompt_outputs_failed_validation", result["body"]
        named = rp.rejected_inputs(result)
        missing = set(case.inputs) - named
        assert not missing, f"node_errors do not name {missing}: {result['body']['node_errors']}"
    else:
        assert result["status"] == "error", f"expected an execution_error, got {result['status']}: {text[:2000]}"
        if case.node_type:
            assert result["data"]["node_type"] == case.node_type, result["data"]
        # A user-facing error, not a crash deep inside torch.
        assert result["data"]["exception_type"] not in ("IndexError", "KeyError", "AttributeError",
                                                        "TypeError", "ZeroDivisionError"), text
    for word in case.words:
        assert word.lower() in text, f"{word!r} not in the error:\n{text[:3000]}"
    assert not hostile_files["marker"].exists(), "unpickling a verifier file ran code"
    assert live.proc.poll() is None, "the server died"


def test_empty_image_batch_into_verifier_score(comfy, tmp_path):
    """No stock node makes an empty IMAGE batch (every batch and crop node clamps to at least
    one image), so this case runs in-process: VerifierScore must say the batch is empty."""
    from tests.harness.host import run_node
    from verifiers.classifier import ClassifierVerifier, load_classifier

    module, config = load_classifier(vf.write_brightness_classifier(tmp_path))
    with pytest.raises(ValueError, match="empty batch"):
        run_node("VerifierScore", images=torch.zeros(0, 16, 16, 3), verifier=ClassifierVerifier(module, config),
                 condition="bright")


def test_server_still_runs_a_valid_search_after_the_bad_inputs(live, hostile_files):
    # Different seed: the result must be computed, not served from ComfyUI's cache.
    prompt = rp.search_prompt("RandomSearch", seed=12345)
    result = live.run(prompt, timeout=240)
    assert result["status"] == "success", rp.error_text(result)
    images = result["history"]["outputs"][rp.SAVE_ID]["images"]
    assert len(images) == 1
    assert live.proc.poll() is None
    assert Path(live.dirs["output"], images[0].get("subfolder", ""), images[0]["filename"]).is_file()
