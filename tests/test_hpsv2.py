"""HPS v2.1 against the hpsv2 package's own ``score`` (golden fixture from
scripts/hpsv2_golden/make_golden.py: tiny random open_clip checkpoint in the official
``{"state_dict": ...}`` torch pickle, scored by the package one PIL image at a time)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests import verifier_fixtures as vf
from tests.preference_fixtures import HPS_FIXTURE as FIXTURE
from tests.preference_fixtures import hps_arch
from verifiers.base import Verifier, VerifierError
from verifiers.ensemble import EnsembleVerifier
from verifiers.hpsv2 import HPSv2Verifier, resize_longest_and_pad
from verifiers.weights import WeightsFileError

CKPT = FIXTURE / "HPS_v2.1_compressed.pt"


@pytest.fixture(scope="module")
def golden():
    return json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def images():
    return load_file(str(FIXTURE / "images.safetensors"))


@pytest.fixture(scope="module")
def verifier():
    return HPSv2Verifier.from_file(CKPT, hps_arch())


def test_fixture_is_small_and_in_the_official_format():
    assert sum(f.stat().st_size for f in FIXTURE.iterdir() if f.is_file()) < 2_500_000
    data = torch.load(CKPT, map_location="cpu", weights_only=True)
    assert list(data) == ["state_dict"] and all(isinstance(v, torch.Tensor) for v in data["state_dict"].values())


def test_is_a_verifier_and_keys_match_the_package(verifier, golden):
    assert isinstance(verifier, Verifier) and verifier.name == "HPSv2.1"
    assert sorted(verifier.model.state_dict()) == golden["state_dict_keys"]


def test_tokenization_matches_package(verifier, golden):
    for prompt, ids in zip(golden["prompts"], golden["input_ids"]):
        assert verifier.tokenizer([prompt])[0].tolist() == ids, prompt
    assert golden["input_ids"][3][-1] == 49407  # truncated prompts keep the end token


def test_scores_match_package(verifier, golden, images):
    batch = images["parity"].float() / 255.0
    for prompt, expected in zip(golden["prompts"], golden["parity_scores"]):
        torch.testing.assert_close(verifier.score(batch, prompt), torch.tensor(expected), atol=2e-6, rtol=0)
    exp = torch.tensor(golden["parity_scores"])
    assert exp.std(dim=1).min() > 0.01 and exp[:3].std(dim=0).min() > 0.01  # not a vacuous comparison


def test_resize_and_pad_path_matches_package(verifier, golden, images):
    """The package resizes the float tensor with torchvision (same op as here): exact match."""
    for j, shape in enumerate(golden["resize_shapes"]):
        img = images[f"resize_{j}"].float()[None] / 255.0
        assert tuple(img.shape[1:3]) == tuple(shape)
        torch.testing.assert_close(verifier.preprocess(img)[0], images[f"reference_pixels_resize_{j}"],
                                   atol=1e-5, rtol=0)
        for prompt, expected in zip(golden["prompts"], golden["resize_scores"]):
            assert verifier.score(img, prompt).item() == pytest.approx(expected[j], abs=2e-6)


def test_padding_geometry():
    x = torch.ones(1, 3, 10, 20)
    y = resize_longest_and_pad(x, 8)
    assert y.shape == (1, 3, 8, 8)
    # 10x20 -> 4x8, padded by 2 rows above and 2 below with zeros (black before normalisation).
    assert y[0, 0, :2].abs().max() == 0 and y[0, 0, 6:].abs().max() == 0
    torch.testing.assert_close(y[0, :, 2:6], torch.ones(3, 4, 8), atol=1e-5, rtol=0)
    odd = resize_longest_and_pad(torch.ones(1, 3, 8, 5), 8)  # pad 3 columns: 1 left, 2 right
    assert odd[0, 0, :, 0].max() == 0 and odd[0, 0, :, 1].min() > 0.99 and odd[0, 0, :, 6:].max() == 0
    # Non-square at exactly the input size: padded too (the package would fail on it).
    assert resize_longest_and_pad(torch.ones(1, 3, 8, 6), 8).shape == (1, 3, 8, 8)


def test_long_prompts_truncated_like_the_package(verifier, golden, images, caplog):
    batch = images["parity"].float() / 255.0
    a, b = golden["prompts"][3], golden["prompts"][4]
    assert golden["parity_scores"][3] == golden["parity_scores"][4]
    fresh = HPSv2Verifier(verifier.model, verifier.tokenizer)
    with caplog.at_level("WARNING"):
        sa = fresh.score(batch, a)
    assert "first 77 tokens" in caplog.text
    torch.testing.assert_close(sa, fresh.score(batch, b), atol=0, rtol=0)


def test_batched_equals_one_by_one(verifier, golden):
    imgs = vf.images(5, h=48, w=80)
    prompt = golden["prompts"][0]
    whole = verifier.score(imgs, prompt)
    single = torch.cat([verifier.score(imgs[i:i + 1], prompt) for i in range(5)])
    torch.testing.assert_close(whole, single, atol=1e-6, rtol=0)
    with pytest.raises(VerifierError, match="prompt"):
        verifier.score(imgs, "")


def test_usable_in_the_ensemble(verifier):
    imgs = vf.images(4)
    ens = EnsembleVerifier([verifier, verifier])
    expected = torch.argsort(torch.argsort(verifier.score(imgs, "a cat"))).float() + 1
    torch.testing.assert_close(ens.score(imgs, "a cat"), expected)


def test_wrong_architecture_and_code_pickles_are_refused(tmp_path):
    with pytest.raises(WeightsFileError, match="does not fit"):
        HPSv2Verifier.from_file(CKPT, "ViT-B-32")
    marker = tmp_path / "ran"
    evil = vf.write_pickle_with_code(tmp_path / "HPS_v2.1_compressed.pt", marker)
    with pytest.raises(WeightsFileError, match="refused"):
        HPSv2Verifier.from_file(evil, hps_arch())
    assert not marker.exists()
