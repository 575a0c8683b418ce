"""What users trip over, through the live server: one error per bad input, bounded error
texts, parts that do not fit, noise that cannot be searched, the report in saved images,
multi-pass workflows replayed end to end, and a base + refiner graph searched at its base
stage."""

from __future__ import annotations

import io
import json
import urllib.parse

import numpy as np
import pytest
from PIL import Image

import tests.reliability_prompts as rp
from tests.harness import tiny_models

MAX_ERROR_CHARS = 2000


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    rp.install_verifiers(server, tmp_path_factory.mktemp("user_paths"))
    server.add_model("vae", tiny_models.tiny_taesd16(), "tiny_taesd16.safetensors")
    return server


def node_errors(result: dict, node_id: str = rp.SEARCH_ID) -> list[dict]:
    return result["body"]["node_errors"][node_id]["errors"]


def saved_png(live, result: dict, node_id: str) -> Image.Image:
    image = result["history"]["outputs"][node_id]["images"][0]
    query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                    "type": image.get("type", "output")})
    status, body = live.request("GET", f"/view?{query}")
    assert status == 200
    png = Image.open(io.BytesIO(body))
    png.load()
    return png


def pixels(live, result, node_id) -> np.ndarray:
    return np.asarray(saved_png(live, result, node_id).convert("RGB"), dtype=np.int16)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("node", ["RandomSearch", "ZeroOrderSearch", "PathSearch"])
def test_an_out_of_range_value_is_reported_once_under_its_input(served, node):
    result = served.run(rp.search_prompt(node, cfg=101.0), timeout=120)
    assert result["status"] == "rejected", rp.error_text(result)
    errors = node_errors(result)
    assert [e["extra_info"]["input_name"] for e in errors] == ["cfg"], errors
    assert "bigger than max of 100" in errors[0]["message"].lower()


def test_a_malformed_widget_value_names_its_own_input(served):
    result = served.run(rp.search_prompt("RandomSearch", steps=[1, 2, 3]), timeout=120)
    assert result["status"] == "rejected", rp.error_text(result)
    errors = node_errors(result)
    assert {e["extra_info"]["input_name"] for e in errors} == {"steps"}, errors
    assert len(errors) == 1


# -- message size --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["long_condition", "unknown_sampler", "unknown_scheduler"])
def test_error_texts_are_bounded(served, case):
    inputs = {"long_condition": {"condition": "x" * 100_000},
              "unknown_sampler": {"sampler_name": "not_a_sampler"},
              "unknown_scheduler": {"scheduler": "sometimes"}}[case]
    result = served.run(rp.search_prompt("RandomSearch", **inputs), timeout=180)
    assert result["status"] in ("error", "rejected")
    text = rp.error_text(result)
    assert len(text) < MAX_ERROR_CHARS, f"{len(text)} characters: {text[:300]}..."
    assert {"long_condition": "condition", "unknown_sampler": "sampler_name",
            "unknown_scheduler": "scheduler"}[case] in text


# -- parts that do not fit ---------------------------------------------------------------------
def sixteen_channel_latent(prompt: dict) -> dict:
    """A non-empty 16-channel latent: an image encoded by a 16-channel (SD3-shaped) VAE."""
    prompt["30"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taesd16.safetensors"}}
    prompt["31"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                          "color": 0x808080}}
    prompt["32"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["31", 0], "vae": ["30", 0]}}
    return prompt


@pytest.mark.parametrize("wrong,words", [
    ({"latent_image": ["32", 0]}, ("latent_image", "16 channels", "4-channel")),
    ({"vae": ["30", 0]}, ("vae", "16-channel", "belongs to the model")),
], ids=["latent_image", "vae"])
def test_parts_that_do_not_fit_the_model_are_named(served, wrong, words):
    """A 16-channel latent, or a 16-channel VAE, with a 4-channel model."""
    result = served.run(sixteen_channel_latent(rp.search_prompt("RandomSearch", **wrong)), timeout=180)
    assert result["status"] == "error", rp.error_text(result)
    text = rp.error_text(result)
    assert all(w in text for w in words), text


# -- noise that cannot be searched ---------------------------------------------------------------
@pytest.mark.parametrize("node", ["RandomSearchAdvanced", "ZeroOrderSearchAdvanced"])
def test_a_disabled_noise_is_refused_naming_noise(served, node):
    prompt = rp.search_prompt(node)
    prompt["20"] = {"class_type": "DisableNoise", "inputs": {}}
    result = served.run(prompt, timeout=180)
    assert result["status"] == "error", rp.error_text(result)
    text = rp.error_text(result)
    assert "noise" in text and "zero" in text and "disabled" in text, text


def test_noise_candidates_with_fewer_noises_than_the_search_needs_is_refused(served):
    prompt = rp.search_prompt("RandomSearchAdvanced", candidates=4)  # NoiseCandidates count 2
    result = served.run(prompt, timeout=180)
    assert result["status"] == "error", rp.error_text(result)
    text = rp.error_text(result)
    assert "noise" in text and "gives 2 noises" in text and "4" in text, text


# -- the report in saved images -----------------------------------------------------------------------
def test_report_reaches_the_png_when_the_client_sends_extra_pnginfo(served):
    prompt = rp.search_prompt("RandomSearch", seed=31)
    plain = served.run(prompt, timeout=180)
    assert plain["status"] == "success", rp.error_text(plain)
    assert "noise_search_report" not in saved_png(served, plain, rp.SAVE_ID).info
    prompt = rp.search_prompt("RandomSearch", seed=32)
    with_info = served.run(prompt, timeout=180, extra_data={"extra_pnginfo": {}})
    assert with_info["status"] == "success", rp.error_text(with_info)
    report = json.loads(saved_png(served, with_info, rp.SAVE_ID).info["noise_search_report"])
    assert report["algorithm"] == "random" and report["settings"]["seed"] == 32


# -- multi-pass workflows ---------------------------------------------------------------------------
def second_pass(prompt: dict, first: list, prefix: str, base: int) -> dict:
    """Upscale the first pass's latent and sample it again at denoise 0.5 (a hires fix)."""
    ids = [str(base + i) for i in range(4)]
    prompt[ids[0]] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": first, "upscale_method": "bilinear",
                                                                 "scale_by": 1.5}}
    prompt[ids[1]] = {"class_type": "KSampler", "inputs": {**rp.ksampler_common(seed=3, latent_image=[ids[0], 0]),
                                                          "denoise": 0.5}}
    prompt[ids[1]]["inputs"].pop("search_steps")
    prompt[ids[2]] = {"class_type": "VAEDecode", "inputs": {"samples": [ids[1], 0], "vae": [rp.CKPT_ID, 2]}}
    prompt[ids[3]] = {"class_type": "SaveImage", "inputs": {"images": [ids[2], 0], "filename_prefix": prefix}}
    return prompt


def test_a_two_pass_workflow_replays_end_to_end(served):
    """Search the first pass of a hires-fix graph; replay it with a stock KSampler at the seed
    output on the same batch-1 latent; the second pass is unchanged. Same final picture."""
    prompt = rp.search_prompt("RandomSearch", save=False, candidates=3, sampler_name="euler_ancestral")
    second_pass(prompt, [rp.SEARCH_ID, 0], "two_pass_search", 40)
    stock = {k: v for k, v in rp.ksampler_common(seed=[rp.SEARCH_ID, 5], sampler_name="euler_ancestral").items()
             if k != "search_steps"}
    prompt["50"] = {"class_type": "KSampler", "inputs": stock}
    second_pass(prompt, ["50", 0], "two_pass_replay", 60)
    result = served.run(prompt, timeout=300)
    assert result["status"] == "success", rp.error_text(result)
    diff = np.abs(pixels(served, result, "43") - pixels(served, result, "63"))
    assert diff.max() <= 3, f"the replayed two-pass image differs by up to {diff.max()} levels"


def test_base_and_refiner_searched_at_the_base_stage(served):
    """A KSamplerAdvanced base (steps 4, end at 2, leftover noise) swapped for RandomSearch with
    end_at_step 2; the refiner KSamplerAdvanced (no added noise, from step 2) runs unchanged.
    The search's base latent equals the stock base stage at the winner's seed."""
    prompt = rp.search_prompt("RandomSearch", save=False, candidates=3, steps=4, end_at_step=2)

    def refiner(latent, prefix, base):
        prompt[str(base)] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": [rp.CKPT_ID, 0], "add_noise": "disable", "noise_seed": 0, "steps": 4, "cfg": 2.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": [rp.POS_ID, 0], "negative": [rp.NEG_ID, 0],
            "latent_image": latent, "start_at_step": 2, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
        prompt[str(base + 1)] = {"class_type": "VAEDecode", "inputs": {"samples": [str(base), 0],
                                                                      "vae": [rp.CKPT_ID, 2]}}
        prompt[str(base + 2)] = {"class_type": "SaveImage", "inputs": {"images": [str(base + 1), 0],
                                                                      "filename_prefix": prefix}}

    refiner([rp.SEARCH_ID, 0], "refined_search", 40)
    prompt["50"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": [rp.CKPT_ID, 0], "add_noise": "enable", "noise_seed": [rp.SEARCH_ID, 5], "steps": 4, "cfg": 2.0,
        "sampler_name": "euler", "scheduler": "normal", "positive": [rp.POS_ID, 0], "negative": [rp.NEG_ID, 0],
        "latent_image": [rp.LATENT_ID, 0], "start_at_step": 0, "end_at_step": 2,
        "return_with_leftover_noise": "enable"}}
    refiner(["50", 0], "refined_stock", 60)
    result = served.run(prompt, timeout=300)
    assert result["status"] == "success", rp.error_text(result)
    report = json.loads(result["history"]["outputs"][rp.SAVE_ID]["text"][0])
    # 2 steps to the end of the segment + 1 x0-prediction there, per candidate.
    assert report["nfe"]["search_total"] == 3 * 3 == report["nfe"]["measured"]
    assert report["settings"]["end_at_step"] == 2
    diff = np.abs(pixels(served, result, "42") - pixels(served, result, "62"))
    assert diff.max() <= 3, f"the refined search result differs from the stock base stage by {diff.max()} levels"
