"""ImageReward: parity with the real `image-reward` package, batching, and safe strict loading.

The golden fixture (tests/fixtures/imagereward/) was made by
scripts/imagereward_golden/make_golden.py with the REAL package on a tiny random checkpoint
in the official file layout (see that folder's README for the environment).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verifiers.base import Condition, Verifier, VerifierError
from verifiers.imagereward import (
    POSITION_IDS_KEY,
    UNUSED_KEYS,
    HeadDims,
    ImageRewardLoadError,
    ImageRewardModel,
    ImageRewardVerifier,
    TextDims,
    VisionDims,
    build_model,
    infer_vision_dims,
    resize_and_crop,
)

FIXTURE = Path(__file__).parent / "fixtures" / "imagereward"
PARITY_TOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "images.safetensors"))


@pytest.fixture(scope="module")
def verifier() -> ImageRewardVerifier:
    return ImageRewardVerifier.from_files(FIXTURE / "ImageReward.pt", FIXTURE / "med_config.json", FIXTURE)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "ImageReward.pt", map_location="cpu", weights_only=True)


def as_comfy(uint8_hwc: torch.Tensor) -> torch.Tensor:
    """uint8 [(B,) H, W, 3] -> ComfyUI IMAGE float [B, H, W, 3] in [0, 1]."""
    x = uint8_hwc.float() / 255.0
    return x if x.ndim == 4 else x[None]


def fixture_copy(tmp_path: Path, sd: dict[str, torch.Tensor] | None = None) -> Path:
    """A copy of the fixture folder in tmp_path, optionally with another state dict."""
    for name in ("med_config.json", "vocab.txt"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    if sd is None:
        shutil.copy(FIXTURE / "ImageReward.pt", tmp_path / "ImageReward.pt")
    else:
        torch.save(sd, tmp_path / "ImageReward.pt")
    return tmp_path


def load_from(folder: Path, **kwargs) -> ImageRewardVerifier:
    return ImageRewardVerifier.from_files(folder / "ImageReward.pt", folder / "med_config.json", folder, **kwargs)


def build_tiny_checkpoint(folder: Path, width: int = 48, heads_note: int = 3, seed: int = 0) -> Path:
    """A random tiny checkpoint in the official key layout, made with the pack's own classes.

    Reuses the fixture's med_config.json and vocab.txt (text hidden 32, 2 layers).
    """
    cfg = json.loads((FIXTURE / "med_config.json").read_text(encoding="utf-8"))
    vision = VisionDims(width=width, depth=1, heads=heads_note, patch_size=8, image_size=16, mlp_hidden=2 * width)
    text = TextDims(hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                    intermediate=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
                    max_positions=cfg["max_position_embeddings"], layer_norm_eps=cfg["layer_norm_eps"],
                    hidden_act=cfg["hidden_act"], encoder_width=width)
    head = HeadDims(mlp_sizes=(cfg["hidden_size"], 16, 8, 8, 4, 1))
    model = ImageRewardModel(vision, text, head)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for name in ("med_config.json", "vocab.txt"):
        shutil.copy(FIXTURE / name, folder / name)
    torch.save(model.state_dict(), folder / "ImageReward.pt")
    return folder


# ------------------------------------------------------------------------------------------
# Parity with the package
# ------------------------------------------------------------------------------------------

def test_fixture_is_small():
    total = sum(f.stat().st_size for f in FIXTURE.iterdir() if f.is_file())
    assert total < 2_000_000, total


def test_is_a_verifier(verifier):
    assert isinstance(verifier, Verifier)
    assert verifier.name == "ImageReward"
    assert verifier.early_level is None
    assert verifier.image_size == 32


def test_key_layout_matches_package(verifier, golden):
    """The pack expects exactly the package's state-dict keys and shapes (position_ids optional)."""
    ours = {k: list(v.shape) for k, v in verifier.model.state_dict().items()}
    theirs = dict(golden["state_dict_shapes"])
    assert theirs.pop(POSITION_IDS_KEY) == [1, 64]
    # BLIP's contrastive projections are in the package's state dict; the reward never reads them.
    assert theirs.pop("blip.vision_proj.weight") == [256, 128] and theirs.pop("blip.vision_proj.bias") == [256]
    assert theirs.pop("blip.text_proj.weight") == [256, 32] and theirs.pop("blip.text_proj.bias") == [256]
    assert set(theirs) - set(ours) == set() and set(ours) - set(theirs) == set()
    assert ours == theirs
    assert set(golden["state_dict_keys"]) == set(ours) | set(UNUSED_KEYS)


def test_tokenization_matches_package(verifier, golden):
    for prompt, ids, mask in zip(golden["prompts"], golden["input_ids"], golden["attention_mask"]):
        got_ids, got_mask = verifier.tokenize(prompt)
        assert got_ids[0].tolist() == ids, prompt
        assert got_mask[0].tolist() == mask, prompt
        assert len(ids) == 35
        # The package's score path keeps [CLS] at position 0 (no [ENC] substitution).
        assert ids[0] == verifier.tokenizer.cls_token_id != golden["enc_token_id"]


def test_scores_match_package(verifier, golden, images):
    batch = as_comfy(images["parity"])
    assert batch.shape == (4, 32, 32, 3)
    worst = 0.0
    for prompt, expected in zip(golden["prompts"], golden["parity_scores"]):
        got = verifier.score(batch, prompt)
        assert got.shape == (4,) and got.dtype == torch.float32
        worst = max(worst, (got - torch.tensor(expected)).abs().max().item())
    assert worst < PARITY_TOL, worst
    # The fixture is discriminative: images and prompts move the score.
    table = torch.tensor(golden["parity_scores"])
    assert table.std(dim=1).min() > 0.05 and (table[0] - table[1]).abs().max() > 0.1


def test_long_prompt_is_truncated_at_35_tokens(verifier, golden, images, caplog):
    long_a, long_b = golden["prompts"][3], golden["prompts"][4]
    assert min(golden["untruncated_token_counts"][3:]) > 35
    assert golden["parity_scores"][3] == golden["parity_scores"][4]  # the package ignores the tail too
    verifier._warned.clear()
    verifier._token_cache.clear()
    batch = as_comfy(images["parity"])
    with caplog.at_level(logging.WARNING, logger="verifiers.imagereward"):
        a = verifier.score(batch, long_a)
        b = verifier.score(batch, long_b)
    assert torch.equal(a, b)
    assert "first 35 tokens" in caplog.text


def test_batched_equals_one_by_one_and_deterministic(verifier, golden, images):
    batch = as_comfy(images["parity"])
    prompt = golden["prompts"][1]
    batched = verifier.score(batch, prompt)
    single = torch.cat([verifier.score(batch[i:i + 1], prompt) for i in range(batch.shape[0])])
    assert (batched - single).abs().max().item() < 1e-5
    assert torch.equal(batched, verifier.score(batch, Condition(prompt)))
    reversed_scores = verifier.score(batch.flip(0), prompt)
    assert (reversed_scores.flip(0) - batched).abs().max().item() < 1e-5


def test_empty_prompt_is_an_error(verifier, images):
    batch = as_comfy(images["parity"])
    for prompt in ("", "   ", None):
        with pytest.raises(VerifierError, match="ImageReward needs the prompt text"):
            verifier.score(batch, prompt)


def test_channels_and_alpha_are_accepted(verifier, golden, images):
    batch = as_comfy(images["parity"])
    rgba = torch.cat([batch, torch.ones_like(batch[..., :1])], dim=-1)
    prompt = golden["prompts"][0]
    assert torch.equal(verifier.score(rgba, prompt), verifier.score(batch, prompt))


# ------------------------------------------------------------------------------------------
# Resize path (PIL in the package, torch here)
# ------------------------------------------------------------------------------------------

def test_resize_path_close_to_package(verifier, golden, images):
    """Float antialiased bicubic vs PIL's 8-bit bicubic: pixels within a few 1/255, scores close."""
    worst_px, worst_score = 0.0, 0.0
    for j, shape in enumerate(golden["resize_shapes"]):
        img = as_comfy(images[f"resize_{j}"])
        assert list(img.shape[1:3]) == shape
        expected_px = images[f"package_pixels_resize_{j}"]
        got_px = verifier.preprocess(img)[0]
        assert got_px.shape == expected_px.shape == (3, 32, 32)
        worst_px = max(worst_px, (got_px - expected_px).abs().max().item())
        for i, prompt in enumerate(golden["prompts"]):
            got = verifier.score(img, prompt).item()
            worst_score = max(worst_score, abs(got - golden["resize_scores"][i][j]))
    # Normalised units (/ CLIP std ~0.27): 0.08 is ~5.5/255; measured 0.074 (the upscale case).
    assert worst_px < 0.08, worst_px
    assert worst_score < 5e-3, worst_score


def test_resize_path_emulating_pil_matches_package(golden, images):
    v = ImageRewardVerifier.from_files(FIXTURE / "ImageReward.pt", FIXTURE / "med_config.json", FIXTURE,
                                       emulate_pil=True)
    one_level = 1.0 / 255.0 / 0.26130258  # one 8-bit step in normalised units (smallest std)
    worst_score = 0.0
    for j in range(len(golden["resize_shapes"])):
        img = as_comfy(images[f"resize_{j}"])
        diff = (v.preprocess(img)[0] - images[f"package_pixels_resize_{j}"]).abs()
        assert diff.max().item() < one_level + 1e-5
        assert (diff > 1e-5).float().mean().item() < 0.01  # off by one level on a few pixels at most
        for i, prompt in enumerate(golden["prompts"]):
            worst_score = max(worst_score, abs(v.score(img, prompt).item() - golden["resize_scores"][i][j]))
    assert worst_score < 2e-3, worst_score  # measured 4e-4 (one-level ties on a few pixels)
    # At the model's size both paths are the identity and match the package exactly.
    batch = as_comfy(images["parity"])
    got = v.score(batch, golden["prompts"][0])
    assert (got - torch.tensor(golden["parity_scores"][0])).abs().max().item() < PARITY_TOL


def test_resize_geometry_follows_torchvision():
    # Shorter side to the size, longer side truncated, crop offset round((new - size) / 2).
    x = torch.arange(3 * 50 * 75, dtype=torch.float32).reshape(1, 3, 50, 75) / (3 * 50 * 75)
    assert resize_and_crop(x, 32).shape == (1, 3, 32, 32)
    same = torch.rand(2, 3, 32, 32)
    assert torch.equal(resize_and_crop(same, 32), same)
    # A wide image at the target height is only cropped: 32x41 -> offset round(4.5) = 4.
    wide = torch.rand(1, 3, 32, 41)
    assert torch.equal(resize_and_crop(wide, 32), wide[..., :, 4:36])
    wide = torch.rand(1, 3, 32, 43)  # round(5.5) = 6
    assert torch.equal(resize_and_crop(wide, 32), wide[..., :, 6:38])
    big = torch.rand(1, 3, 300, 200)
    out = resize_and_crop(big, 32)
    assert out.shape == (1, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


# ------------------------------------------------------------------------------------------
# Strict, safe loading
# ------------------------------------------------------------------------------------------

def test_missing_key_is_refused(tmp_path, state_dict):
    sd = dict(state_dict)
    gone = "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"
    del sd[gone]
    folder = fixture_copy(tmp_path, sd)
    with pytest.raises(ImageRewardLoadError) as err:
        load_from(folder)
    msg = str(err.value)
    assert "1 missing key(s)" in msg and gone in msg and str(folder / "ImageReward.pt") in msg


def test_unexpected_key_is_refused(tmp_path, state_dict):
    sd = dict(state_dict)
    sd["blip.text_decoder.cls.predictions.bias"] = torch.zeros(3)
    folder = fixture_copy(tmp_path, sd)
    with pytest.raises(ImageRewardLoadError, match=r"1 unexpected key\(s\): blip\.text_decoder\.cls\.predictions"
                                                   r"\.bias") as err:
        load_from(folder)
    assert "ImageReward.pt" in str(err.value)


def test_missing_vit_key_used_for_shapes_is_refused(tmp_path, state_dict):
    sd = dict(state_dict)
    del sd["blip.visual_encoder.pos_embed"]
    with pytest.raises(ImageRewardLoadError, match=r"missing key\(s\): blip\.visual_encoder\.pos_embed"):
        load_from(fixture_copy(tmp_path, sd))


def test_wrong_shape_is_refused(tmp_path, state_dict):
    sd = dict(state_dict)
    key = "blip.text_encoder.encoder.layer.0.intermediate.dense.weight"
    sd[key] = torch.zeros(65, 32)
    with pytest.raises(ImageRewardLoadError, match=r"layer\.0\.intermediate\.dense\.weight \(65, 32\) "
                                                   r"\(expected \(64, 32\)\)"):
        load_from(fixture_copy(tmp_path, sd))


def test_keys_the_reward_never_reads_are_optional_but_checked(tmp_path, state_dict, golden, images):
    sd = {k: v for k, v in state_dict.items() if k not in UNUSED_KEYS}
    v = load_from(fixture_copy(tmp_path, sd))
    got = v.score(as_comfy(images["parity"]), golden["prompts"][0])
    assert (got - torch.tensor(golden["parity_scores"][0])).abs().max().item() < PARITY_TOL
    bad = dict(state_dict)
    bad[POSITION_IDS_KEY] = bad[POSITION_IDS_KEY].flip(-1)
    with pytest.raises(ImageRewardLoadError, match="position_ids"):
        load_from(fixture_copy(tmp_path, bad))
    bad = dict(state_dict)
    bad["blip.text_proj.weight"] = torch.zeros(256, 33)
    with pytest.raises(ImageRewardLoadError, match=r"blip\.text_proj\.weight has shape \(256, 33\)"):
        load_from(fixture_copy(tmp_path, bad))


class _RunsCode:
    """Pickles to a call of os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle-2", "pickle-4"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, state_dict, writer):
    marker = tmp_path / "code_ran"
    folder = fixture_copy(tmp_path)
    payload = dict(state_dict)
    payload["blip.visual_encoder.cls_token"] = _RunsCode(marker)  # type: ignore[assignment]
    with open(folder / "ImageReward.pt", "wb") as f:
        if writer == "torch.save":
            torch.save(payload, f)
        else:
            pickle.dump(payload, f, protocol=int(writer[-1]))
    with pytest.raises(VerifierError) as err:
        load_from(folder)
    msg = str(err.value)
    assert str(folder / "ImageReward.pt") in msg
    if writer != "pickle-4":
        assert "refused" in msg
    # (A protocol-4 pickle stops the weights-only unpickler at an opcode it does not know,
    # before any global is looked up; it is refused as unreadable.)
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path):
    folder = fixture_copy(tmp_path)
    data = (FIXTURE / "ImageReward.pt").read_bytes()
    (folder / "ImageReward.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(VerifierError, match="corrupt or truncated") as err:
        load_from(folder)
    assert str(folder / "ImageReward.pt") in str(err.value)


def test_not_a_state_dict_is_refused(tmp_path):
    folder = fixture_copy(tmp_path)
    torch.save(torch.zeros(3), folder / "ImageReward.pt")
    with pytest.raises(VerifierError, match="state dict"):
        load_from(folder)


def test_missing_files_are_clear_errors(tmp_path):
    folder = fixture_copy(tmp_path)
    with pytest.raises(ImageRewardLoadError, match="checkpoint not found"):
        ImageRewardVerifier.from_files(folder / "nope.pt", folder / "med_config.json", folder)
    with pytest.raises(ImageRewardLoadError, match="med_config.json not found"):
        ImageRewardVerifier.from_files(folder / "ImageReward.pt", folder / "nope.json", folder)
    (folder / "vocab.txt").unlink()
    with pytest.raises(ImageRewardLoadError, match="bert-base-uncased"):
        load_from(folder)


def test_vocab_size_mismatch_is_refused(tmp_path):
    folder = fixture_copy(tmp_path)
    with open(folder / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("extraword\n")
    with pytest.raises(ImageRewardLoadError, match="vocab_size"):
        load_from(folder)


def test_bad_med_config_is_refused(tmp_path):
    folder = fixture_copy(tmp_path)
    cfg = json.loads((folder / "med_config.json").read_text(encoding="utf-8"))
    cfg["num_hidden_layers"] = 3
    (folder / "med_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(ImageRewardLoadError, match=r"missing key\(s\): blip\.text_encoder\.encoder\.layer\.2\."):
        load_from(folder)
    (folder / "med_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ImageRewardLoadError, match="JSON"):
        load_from(folder)


# ------------------------------------------------------------------------------------------
# Shapes inferred from the checkpoint
# ------------------------------------------------------------------------------------------

def test_vit_head_count_override(tmp_path, golden):
    folder = build_tiny_checkpoint(tmp_path, width=48, heads_note=3)
    with pytest.raises(ImageRewardLoadError, match="vision_heads"):
        load_from(folder)
    v = load_from(folder, vision_heads=3)
    assert v.image_size == 16 and v.model.vision_dims.heads == 3
    imgs = torch.rand(3, 20, 24, 3, generator=torch.Generator().manual_seed(0))
    batched = v.score(imgs, golden["prompts"][0])
    single = torch.cat([v.score(imgs[i:i + 1], golden["prompts"][0]) for i in range(3)])
    assert (batched - single).abs().max().item() < 1e-5


def test_official_sizes_are_inferred():
    """The official ViT-L/16 at 224 px with the official med_config (on the meta device, no weights)."""
    official_cfg = {
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
        "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2,
        "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True,
    }
    vision = VisionDims(width=1024, depth=24, heads=16, patch_size=16, image_size=224, mlp_hidden=4096)
    text = TextDims(hidden=768, layers=12, heads=12, intermediate=3072, vocab_size=30524, max_positions=512,
                    layer_norm_eps=1e-12, hidden_act="gelu", encoder_width=1024)
    with torch.device("meta"):
        reference = ImageRewardModel(vision, text, HeadDims((768, 1024, 128, 64, 16, 1)))
        sd = dict(reference.state_dict())
        sd.update({"blip.vision_proj.weight": torch.empty(256, 1024), "blip.vision_proj.bias": torch.empty(256),
                   "blip.text_proj.weight": torch.empty(256, 768), "blip.text_proj.bias": torch.empty(256)})
    sd[POSITION_IDS_KEY] = torch.arange(512).view(1, -1)
    assert sd["blip.visual_encoder.pos_embed"].shape == (1, 197, 1024)
    assert sd["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape == (768, 1024)
    assert infer_vision_dims(sd) == vision
    model = build_model(sd, official_cfg)
    assert model.vision_dims == vision and model.text_dims == text
    n_params = sum(p.numel() for p in model.parameters())
    assert 440e6 < n_params < 450e6, n_params


def test_bfloat16_runs_close(golden, images):
    v = ImageRewardVerifier.from_files(FIXTURE / "ImageReward.pt", FIXTURE / "med_config.json", FIXTURE,
                                       dtype=torch.bfloat16)
    assert v.dtype == torch.bfloat16 and v.model.mlp.layers[0].weight.dtype == torch.float32
    got = v.score(as_comfy(images["parity"]), golden["prompts"][0])
    assert got.dtype == torch.float32
    assert (got - torch.tensor(golden["parity_scores"][0])).abs().max().item() < 0.1
