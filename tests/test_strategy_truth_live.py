"""Issue 24's acceptance through a live ComfyUI server (queued API prompts, as a user's graph runs):
early rejection with euler_ancestral keeps its winner when top_k grows, and reports the returned
image's own score; problem 1 of a latent batch of 2 is LatentFromBatch(1) searched alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests import reliability_prompts as rp

CKPT, POS, NEG, LATENT, VERIFIER, JUDGE, SEARCH, REPORT, DECODE, SAVE, PICK = (
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11")


def graph(node: str, options: dict, *, seed: int, top_k: int, batch: int = 1, pick: int | None = None,
          sampler: str = "euler_ancestral", prefix: str = "truth") -> dict:
    latent = [LATENT, 0] if pick is None else [PICK, 0]
    prompt = {
        CKPT: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": rp.CKPT}},
        POS: {"class_type": "CLIPTextEncode", "inputs": {"clip": [CKPT, 1], "text": "a red cube"}},
        NEG: {"class_type": "CLIPTextEncode", "inputs": {"clip": [CKPT, 1], "text": ""}},
        LATENT: {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": batch}},
        VERIFIER: rp.classifier_verifier(),
        JUDGE: {"class_type": "SearchJudge", "inputs": {"vae": [CKPT, 2], "verifier": [VERIFIER, 0],
                                                        "condition": "bright"}},
        SEARCH: {"class_type": node, "inputs": {
            "model": [CKPT, 0], "seed": seed, "steps": 5, "cfg": 2.0, "sampler_name": sampler,
            "scheduler": "normal", "positive": [POS, 0], "negative": [NEG, 0], "latent_image": latent,
            "denoise": 1.0, "judge": [JUDGE, 0], "budget": 0, "top_k": top_k, "batch_size": 0, **options}},
        REPORT: {"class_type": "PreviewAny", "inputs": {"source": [SEARCH, 6]}},
        DECODE: {"class_type": "VAEDecode", "inputs": {"samples": [SEARCH, 0], "vae": [CKPT, 2]}},
        SAVE: {"class_type": "SaveImage", "inputs": {"images": [DECODE, 0], "filename_prefix": prefix}},
    }
    if pick is not None:
        prompt[PICK] = {"class_type": "LatentFromBatch", "inputs": {"samples": [LATENT, 0], "batch_index": pick,
                                                                     "length": 1}}
    return prompt


def run(live, prompt: dict) -> tuple[dict, list[np.ndarray]]:
    res = live.run(prompt)
    assert res["status"] == "success", res.get("data")
    outputs = res["history"]["outputs"]
    report = json.loads(outputs[REPORT]["text"][0])
    images = [np.asarray(Image.open(live.dirs["output"] / (i.get("subfolder") or "") / i["filename"]), dtype=float)
              for i in outputs[SAVE]["images"]]
    return report, images


@pytest.fixture
def verifiers(live, tmp_path):
    return rp.install_verifiers(live, tmp_path)


def test_early_rejection_winner_is_the_same_for_top_k_1_and_2_through_a_live_server(live, verifiers):
    options = {"candidates": 8, "keep": 0.5, "levels": "0.8, 0.4"}
    for seed in (3, 4, 5):
        one, _ = run(live, graph("EarlyRejectionSampler", options, seed=seed, top_k=1))
        two, _ = run(live, graph("EarlyRejectionSampler", options, seed=seed, top_k=2))
        assert one["best"] == two["best"], seed
        assert two["top"][0]["id"] == one["best"]["id"]
        # The reported score is the returned (regenerated) image's: its final entry says so.
        final = {c["id"]: c["score"] for c in one["candidates"] if c["sample"] == "final"}
        assert final[one["best"]["id"]] == pytest.approx(one["best"]["score"])
        assert one["rounds"][-1]["best_id"] == one["best"]["id"]


def test_problem_1_of_a_batch_is_latent_from_batch_1_searched_alone_through_a_live_server(live, verifiers):
    options = {"candidates": 3, "search_steps": 0}
    batch, batch_images = run(live, graph("RandomSearchSampler", options, seed=9, top_k=1, batch=2,
                                          prefix="truth_batch"))
    alone, alone_images = run(live, graph("RandomSearchSampler", options, seed=9, top_k=1, batch=2, pick=1,
                                          prefix="truth_alone"))
    problem = batch["problems"][1]
    assert problem["best"]["id"] == alone["best"]["id"]
    assert problem["best"]["score"] == pytest.approx(alone["best"]["score"], abs=1e-4)
    assert len(batch_images) == 2 and len(alone_images) == 1
    # 8-bit PNGs of the same latent: equal up to rounding.
    assert np.abs(batch_images[1] - alone_images[0]).max() <= 1.0
