"""PickScore against the reference recipe's scores (golden fixture from
scripts/pickscore_golden/make_golden.py: PickScore's published code on transformers 4.27.3,
tiny random CLIPModel and processor files in the official formats)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests import verifier_fixtures as vf
from tests.preference_fixtures import PICKSCORE_FIXTURE as FIXTURE
from verifiers.base import Verifier, VerifierError
from verifiers.ensemble import EnsembleVerifier
from verifiers.pickscore import PickScoreVerifier, read_preprocessor_config
from verifiers.weights import WeightsFileError


@pytest.fixture(scope="module")
def golden():
    return json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def images():
    return load_file(str(FIXTURE / "images.safetensors"))


@pytest.fixture(scope="module")
def verifier():
    return PickScoreVerifier.from_folders(FIXTURE / "model", FIXTURE / "processor")


def scored(golden):
    return [(p, s, r) for p, s, r in zip(golden["prompts"], golden["parity_scores"], golden["resize_scores"])
            if s is not None]


def test_fixture_is_small_and_official_layout():
    size = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert size < 1_000_000, size
    assert sorted(p.name for p in (FIXTURE / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert {"preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "vocab.json", "merges.txt"} <= {p.name for p in (FIXTURE / "processor").iterdir()}


def test_is_a_batched_verifier(verifier):
    assert isinstance(verifier, Verifier) and verifier.name == "PickScore" and verifier.early_level is None


def test_tokenization_matches_reference(verifier, golden):
    for prompt, ids in zip(golden["prompts"], golden["input_ids"]):
        assert verifier.tokenize(prompt)["input_ids"][0].tolist() == ids, prompt
    assert len(golden["input_ids"][3]) == 77  # the long prompts are truncated at 77 tokens


def test_scores_match_reference(verifier, golden, images):
    batch = images["parity"].float() / 255.0  # already at the model's size: no resampling anywhere
    for prompt, expected, _ in scored(golden):
        got = verifier.score(batch, prompt)
        torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=1e-5)
    # The checkpoint's logit scale multiplies the cosine, as in the reference.
    assert verifier.logit_scale.item() == pytest.approx(golden["logit_scale_exp"], rel=1e-6)
    # Scores differ between images and prompts: the comparison above is not vacuous.
    exp = torch.tensor([s for _, s, _ in scored(golden)])
    assert exp.std(dim=1).min() > 1.0 and exp.std(dim=0).min() > 1.0


def test_long_prompts_are_truncated_like_the_reference(verifier, golden, images, caplog):
    batch = images["parity"].float() / 255.0
    a, b = golden["prompts"][3], golden["prompts"][4]
    assert a != b and golden["parity_scores"][3] == golden["parity_scores"][4]
    fresh = PickScoreVerifier(verifier.model, verifier.tokenizer, verifier.processor)  # warns once per prompt
    with caplog.at_level("WARNING"):
        sa = fresh.score(batch, a)
    assert "first 77 tokens" in caplog.text
    torch.testing.assert_close(sa, verifier.score(batch, b), atol=0, rtol=0)


def test_batched_equals_one_by_one_and_deterministic(verifier, golden, images):
    batch = images["parity"].float() / 255.0
    prompt = golden["prompts"][1]
    whole = verifier.score(batch, prompt)
    single = torch.cat([verifier.score(batch[i:i + 1], prompt) for i in range(batch.shape[0])])
    torch.testing.assert_close(whole, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(verifier.score(batch, prompt), whole, atol=0, rtol=0)


def test_resize_path_close_to_reference(verifier, golden, images):
    std = torch.tensor(verifier.processor["std"]).view(3, 1, 1)
    for j in range(len(golden["resize_shapes"])):
        img = images[f"resize_{j}"].float()[None] / 255.0
        levels = ((verifier.preprocess(img)[0] - images[f"reference_pixels_resize_{j}"]) * std * 255).abs()
        assert levels.mean() < 0.5 and levels.max() < 16, (j, levels.mean(), levels.max())
        for prompt, _, resized in scored(golden):
            assert abs(verifier.score(img, prompt).item() - resized[j]) < 0.3


def test_resize_path_emulating_pil_matches_reference(golden, images):
    v = PickScoreVerifier.from_folders(FIXTURE / "model", FIXTURE / "processor", emulate_pil=True)
    std = torch.tensor(v.processor["std"]).view(3, 1, 1)
    for j in range(len(golden["resize_shapes"])):
        img = images[f"resize_{j}"].float()[None] / 255.0
        levels = ((v.preprocess(img)[0] - images[f"reference_pixels_resize_{j}"]) * std * 255).abs()
        assert levels.max() <= 1.01, (j, levels.max())
        for prompt, _, resized in scored(golden):
            assert abs(v.score(img, prompt).item() - resized[j]) < 0.01


def test_empty_prompt_and_channels(verifier, images):
    batch = images["parity"].float() / 255.0
    with pytest.raises(VerifierError, match="prompt"):
        verifier.score(batch, "  ")
    rgba = torch.cat([batch, torch.ones_like(batch[..., :1])], dim=-1)
    torch.testing.assert_close(verifier.score(rgba, "a red cat"), verifier.score(batch, "a red cat"), atol=0, rtol=0)


def test_usable_in_the_ensemble(verifier, images):
    batch = vf.images(5, h=40, w=48)
    ens = EnsembleVerifier([verifier, verifier], weights=[1.0, 2.0])
    ranks = ens.score(batch, "a red cat")
    torch.testing.assert_close(ranks, torch.argsort(torch.argsort(verifier.score(batch, "a red cat"))).float() + 1)


def test_preprocessor_config_forms(tmp_path):
    legacy = read_preprocessor_config(FIXTURE / "processor" / "preprocessor_config.json")
    assert legacy["size"] == 32 and legacy["crop"] == (32, 32) and legacy["mode"] == "bicubic"
    (tmp_path / "p.json").write_text(json.dumps({
        "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    new = read_preprocessor_config(tmp_path / "p.json")
    assert new["size"] == 224 and new["crop"] == (224, 224) and new["mean"] == (0.5,) * 3
    assert new["rescale"] == pytest.approx(1.0)
    (tmp_path / "bad.json").write_text(json.dumps({"size": 224, "resample": 0}))
    with pytest.raises(WeightsFileError, match="processor"):
        read_preprocessor_config(tmp_path / "bad.json")


def test_mismatched_or_broken_files_are_refused(tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(FIXTURE / "model", model)
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(WeightsFileError, match="corrupt"):
        PickScoreVerifier.from_folders(model, FIXTURE / "processor")
    (model / "model.safetensors").unlink()
    with pytest.raises(WeightsFileError, match="model.safetensors"):
        PickScoreVerifier.from_folders(model, FIXTURE / "processor")
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURE / "processor", proc)
    cfg = json.loads((proc / "preprocessor_config.json").read_text())
    cfg.update(size=64, crop_size=64)
    (proc / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsFileError, match="crops images"):
        PickScoreVerifier.from_folders(FIXTURE / "model", proc)
