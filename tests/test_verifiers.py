"""Verifier classes, rank ensemble and weight-file handling, without ComfyUI."""

from __future__ import annotations

import json

import pytest
import torch

from search.scoring import ranking, score_images
from tests import verifier_fixtures as vf
from verifiers.aesthetic import AestheticVerifier, load_aesthetic_mlp
from verifiers.base import Verifier, VerifierError
from verifiers.classifier import (
    ClassifierVerifier,
    ConvNetClassifier,
    build_classifier,
    load_classifier,
    save_classifier,
)
from verifiers.clip import CLIPScoreVerifier, CLIPZeroShotVerifier, build_open_clip, infer_arch
from verifiers.dinov2 import DINOv2SelfSupervisedVerifier, load_dinov2
from verifiers.ensemble import EnsembleVerifier, fractional_ranks, mean_rank
from verifiers.weights import WeightsFileError, load_state_dict_file


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("verifiers")
    vf.write_tiny_clip(path)
    vf.write_aesthetic(path)
    vf.write_tiny_dinov2(path)
    vf.write_brightness_classifier(path)
    vf.write_digits_classifier(path)
    return path


@pytest.fixture(scope="module")
def clip(root):
    return build_open_clip(vf.TINY_CLIP, root / "clip" / f"{vf.TINY_CLIP}.safetensors")


def check_batched_matches_single(verifier, images, condition="", early=None, atol=1e-5):
    batched = verifier.score(images, condition, early)
    single = torch.cat([verifier.score(images[i:i + 1], condition, None if early is None else early[i:i + 1])
                        for i in range(images.shape[0])])
    assert batched.shape == (images.shape[0],)
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(batched, single, atol=atol, rtol=0)
    torch.testing.assert_close(verifier.score(images, condition, early), batched, atol=0, rtol=0)
    return batched


# -- rank ensemble ---------------------------------------------------------------------------

def test_fractional_ranks_ascending_with_ties_averaged():
    assert fractional_ranks([0.1, 0.5, 0.3]).tolist() == [1.0, 3.0, 2.0]
    assert fractional_ranks([1.0, 1.0, 2.0]).tolist() == [1.5, 1.5, 3.0]
    assert fractional_ranks([7.0, 7.0, 7.0]).tolist() == [2.0, 2.0, 2.0]
    assert fractional_ranks([3.0, 1.0, 3.0, 2.0, 1.0]).tolist() == [4.5, 1.5, 4.5, 3.0, 1.5]


def test_mean_rank_unweighted_weighted_and_ties():
    assert mean_rank([[1, 2, 3], [3, 2, 1]]).tolist() == [2.0, 2.0, 2.0]
    # Paper's rule: mean of ranks. Candidate 2 is best under both verifiers.
    assert mean_rank([[0.1, 0.2, 0.9], [5.0, 1.0, 6.0]]).tolist() == [1.5, 1.5, 3.0]
    assert mean_rank([[1, 2, 3], [3, 2, 1]], weights=[3, 1]).tolist() == [1.5, 2.0, 2.5]
    # A zero weight removes a verifier.
    assert mean_rank([[1, 2, 3], [3, 2, 1]], weights=[0, 1]).tolist() == [3.0, 2.0, 1.0]
    # Ties inside one verifier average their ranks before the mean.
    assert mean_rank([[1, 1, 0], [0, 1, 2]]).tolist() == [1.75, 2.25, 2.0]


def test_mean_rank_rejects_bad_input():
    with pytest.raises(VerifierError, match="same candidates"):
        mean_rank([[1, 2], [1, 2, 3]])
    with pytest.raises(VerifierError, match="weights"):
        mean_rank([[1, 2], [2, 1]], weights=[1, -1])
    with pytest.raises(VerifierError, match="2 verifiers"):
        mean_rank([[1, 2], [2, 1]], weights=[1])
    with pytest.raises(VerifierError, match="non-finite"):
        mean_rank([[1, float("nan")]])


class FixedVerifier(Verifier):
    """Scores = a fixed vector indexed by the image's mean brightness bucket (test helper)."""

    def __init__(self, table, name="fixed", early_level=None, max_batch=64):
        self.table = torch.tensor(table, dtype=torch.float32)
        self.name = name
        self.early_level = early_level
        self.max_batch = max_batch

    def _score(self, images, condition, early):
        index = (images.mean(dim=(1, 2, 3)) * 10).round().long()
        return self.table[index]


def test_ensemble_verifier_ranks_the_whole_batch():
    imgs = vf.flat_images([0.0, 0.1, 0.2, 0.3])
    a = FixedVerifier([4.0, 3.0, 2.0, 1.0], max_batch=1)  # members are chunked by their own max_batch
    b = FixedVerifier([0.0, 5.0, 9.0, 9.0], max_batch=3)
    ens = EnsembleVerifier([a, b])
    assert ens.relative_scores
    # ranks: a -> [4, 3, 2, 1]; b -> [1, 2, 3.5, 3.5] (the tie shares ranks 3 and 4)
    assert ens.score(imgs).tolist() == [2.5, 2.5, 2.75, 2.25]
    weighted = EnsembleVerifier([a, b], weights=[1.0, 3.0])
    assert weighted.score(imgs).tolist() == pytest.approx([1.75, 2.25, 3.125, 2.875])
    assert torch.equal(ens.component_scores(imgs), torch.stack([a.score(imgs), b.score(imgs)]))
    # Through the one scoring path: members chunked by their own max_batch, ranked over the batch.
    assert score_images(ens, imgs).tolist() == [2.5, 2.5, 2.75, 2.25]
    assert ranking(torch.tensor([2.5, 2.5, 2.75, 2.25])) == [2, 0, 1, 3]


def test_ensemble_rules():
    a = FixedVerifier([0.0] * 11)
    with pytest.raises(VerifierError, match="at least two"):
        EnsembleVerifier([a])
    with pytest.raises(VerifierError, match="different levels"):
        EnsembleVerifier([FixedVerifier([0.0], early_level=0.4), FixedVerifier([0.0], early_level=0.6)])
    ens = EnsembleVerifier([a, FixedVerifier([0.0] * 11, early_level=0.4)])
    assert ens.early_level == 0.4
    with pytest.raises(VerifierError, match="early x0-prediction"):
        ens.score(vf.flat_images([0.1, 0.2]))
    with pytest.raises(VerifierError, match="another ensemble"):
        EnsembleVerifier([a, EnsembleVerifier([a, a])])


# -- CLIP ------------------------------------------------------------------------------------

def test_infer_arch_from_file_names(root):
    vf.register_tiny_clip(root / "_open_clip_configs")
    assert infer_arch("clip/ViT-L-14-openai.safetensors") == "ViT-L-14-quickgelu"
    assert infer_arch("clip/ViT-B-32-laion2b_s34b_b79k.safetensors") == "ViT-B-32"
    assert infer_arch(f"clip/{vf.TINY_CLIP}.safetensors") == vf.TINY_CLIP
    with pytest.raises(VerifierError, match="architecture"):
        infer_arch("clip/mystery.safetensors")


def test_clipscore_is_clip_s_batched_and_deterministic(clip):
    v = CLIPScoreVerifier(clip)
    imgs = vf.images(5)
    scores = check_batched_matches_single(v, imgs, "a red cat on a mat")
    assert ((scores >= 0.0) & (scores <= 2.5)).all()
    img = clip.image_embeddings(imgs)
    txt = clip.text_embeddings(["a red cat on a mat"])[0]
    torch.testing.assert_close(v.cosine(imgs, "a red cat on a mat"), img @ txt, atol=1e-6, rtol=0)
    torch.testing.assert_close(scores, 2.5 * (img @ txt).clamp(min=0), atol=1e-6, rtol=0)
    assert not torch.allclose(scores, v.score(imgs, "a blue dog"))


class _FixedEmbeddingCLIP:
    """Stands in for OpenCLIPModel: image i embeds to a unit vector at a chosen cosine with the prompt."""

    def __init__(self, cosines):
        self.cos = torch.tensor(cosines, dtype=torch.float32)
        self.model = torch.nn.Linear(1, 1)

    def image_embeddings(self, images):
        c = self.cos[: images.shape[0]]
        return torch.stack([c, (1 - c * c).clamp(min=0).sqrt()], dim=1)

    def text_embeddings(self, texts):
        return torch.tensor([[1.0, 0.0]] * len(texts))


def test_clipscore_follows_hessel_clip_s_convention():
    """CLIP-S = 2.5 * max(cos, 0): the paper's 0.71-0.82 scale, not the raw cosine (0.25-0.35)."""
    cosines = [0.30, -0.20, 0.0, 1.0, 0.284]
    v = CLIPScoreVerifier(_FixedEmbeddingCLIP(cosines))
    scores = v.score(vf.images(len(cosines)), "a photo of a cat")
    torch.testing.assert_close(scores, torch.tensor([0.75, 0.0, 0.0, 2.5, 0.71]), atol=1e-6, rtol=0)
    torch.testing.assert_close(v.cosine(vf.images(len(cosines)), "a photo of a cat"), torch.tensor(cosines),
                               atol=1e-6, rtol=0)


def test_clipscore_prompt_rules(clip, caplog):
    v = CLIPScoreVerifier(clip)
    imgs = vf.images(2)
    with pytest.raises(VerifierError, match="empty"):
        v.score(imgs, "   ")
    long = " ".join(["astronaut riding a horse"] * 40)
    with caplog.at_level("WARNING"):
        s = v.score(imgs, long)
    assert torch.isfinite(s).all()
    assert "truncated" in caplog.text
    # Truncation keeps the first 75 tokens: anything after them does not change the score.
    torch.testing.assert_close(s, v.score(imgs, long + " and a green elephant"), atol=1e-6, rtol=0)


def test_zero_shot_logits_and_class_lookup(clip):
    z = CLIPZeroShotVerifier(clip, ["cat", "dog", "sports car"], ["a photo of a {}.", "a sketch of a {}."])
    imgs = vf.images(4)
    s = check_batched_matches_single(z, imgs, "Dog")
    torch.testing.assert_close(s, z.score(imgs, "1"), atol=0, rtol=0)
    # logit = 100 * cos(image, normalised mean of the normalised template embeddings)
    t = clip.text_embeddings(["a photo of a dog.", "a sketch of a dog."])
    w = torch.nn.functional.normalize(t.mean(0), dim=-1)
    torch.testing.assert_close(s, 100 * clip.image_embeddings(imgs) @ w, atol=1e-4, rtol=0)
    with pytest.raises(VerifierError, match="sports car") as e:
        z.score(imgs, "horse")
    assert "0: cat" in str(e.value)
    with pytest.raises(VerifierError, match="Valid classes"):
        z.score(imgs, "7")
    with pytest.raises(VerifierError, match="no '\\{\\}'"):
        CLIPZeroShotVerifier(clip, ["cat"], ["a photo"])


def test_aesthetic_head_official_keys_and_scores(root, clip):
    mlp = load_aesthetic_mlp(root / vf.AESTHETIC_NAME)
    assert sorted(mlp.state_dict()) == sorted(
        f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
    a = AestheticVerifier(clip, mlp)
    imgs = vf.images(4)
    s = check_batched_matches_single(a, imgs)
    torch.testing.assert_close(s, mlp(clip.image_embeddings(imgs))[:, 0], atol=1e-6, rtol=0)
    big = vf.write_aesthetic(root / "other", in_dim=768)
    with pytest.raises(WeightsFileError, match="768"):
        AestheticVerifier(clip, load_aesthetic_mlp(big))


# -- DINOv2 ----------------------------------------------------------------------------------

def test_dinov2_self_supervised_verifier(root):
    model = load_dinov2(root / "dinov2-small")
    v = DINOv2SelfSupervisedVerifier(model, early_level=0.4)
    assert v.early_level == 0.4
    imgs, early = vf.images(3, seed=1), vf.images(3, seed=2)
    s = check_batched_matches_single(v, imgs, early=early)
    assert (s <= 1.0 + 1e-6).all()
    torch.testing.assert_close(v.score(imgs, early=imgs), torch.ones(3), atol=1e-5, rtol=0)
    feats = v.features(torch.cat([early, imgs]))
    torch.testing.assert_close(s, torch.cosine_similarity(feats[:3], feats[3:]), atol=1e-5, rtol=0)
    with pytest.raises(VerifierError, match="early x0-prediction"):
        v.score(imgs)
    with pytest.raises(VerifierError, match="early_level"):
        DINOv2SelfSupervisedVerifier(model, early_level=1.0)


# -- classifiers -----------------------------------------------------------------------------

def test_convnet_spec_round_trip(tmp_path):
    module = build_classifier(vf.DIGITS_LIKE_CONFIG)
    assert isinstance(module, ConvNetClassifier)
    x = torch.randn(2, 1, 16, 16)
    assert module.features(x).shape == (2, 32)
    assert module(x).shape == (2, 10)
    path = save_classifier(module, vf.DIGITS_LIKE_CONFIG, tmp_path / "d.safetensors")
    assert json.loads(path.with_suffix(".json").read_text())["class_names"] == [str(i) for i in range(10)]
    loaded, cfg = load_classifier(path)
    torch.testing.assert_close(loaded(x), module.eval()(x))
    # Without the JSON the config embedded in the safetensors metadata is used.
    path.with_suffix(".json").unlink()
    loaded2, _ = load_classifier(path)
    torch.testing.assert_close(loaded2(x), module(x))


def test_classifier_known_answer_and_class_lookup(root):
    module, cfg = load_classifier(root / "classifiers" / "brightness.safetensors")
    v = ClassifierVerifier(module, cfg)
    imgs = vf.flat_images([0.2, 0.9, 0.5])
    torch.testing.assert_close(v.score(imgs, "bright"), torch.tensor([0.2, 0.9, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(v.score(imgs, "0"), torch.tensor([-0.2, -0.9, -0.5]), atol=1e-6, rtol=0)
    with pytest.raises(VerifierError, match="0: dark, 1: bright"):
        v.score(imgs, "medium")


def test_classifier_resizes_and_batches(root):
    module, cfg = load_classifier(root / "classifiers" / "digits.safetensors")
    v = ClassifierVerifier(module, cfg)
    check_batched_matches_single(v, vf.images(4, h=64, w=64), "3")  # area downscale
    check_batched_matches_single(v, vf.images(3, h=8, w=10), "9")  # bilinear upscale
    # 16 x 16 input is used as is: the score is the plain logit of the luma image.
    imgs = vf.images(2, h=16, w=16)
    luma = (imgs * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True).movedim(-1, 1)
    torch.testing.assert_close(v.score(imgs, "3"), module((luma - 0.5) / 0.5)[:, 3], atol=1e-5, rtol=0)


def test_torchvision_classifier(tmp_path):
    cfg = {"architecture": "torchvision:resnet18", "num_classes": 3, "image_size": 32,
           "class_names": ["a", "b", "c"]}
    torch.manual_seed(0)
    path = save_classifier(build_classifier(cfg), cfg, tmp_path / "r18.safetensors")
    module, loaded_cfg = load_classifier(path)
    assert loaded_cfg["resize"] == "center_crop" and loaded_cfg["mean"][0] == pytest.approx(0.485)
    check_batched_matches_single(ClassifierVerifier(module, loaded_cfg), vf.images(3, h=40, w=56), "c",
                                 atol=1e-4)
    with pytest.raises(VerifierError, match="unknown torchvision"):
        build_classifier({"architecture": "torchvision:nope", "num_classes": 2})


def test_classifier_config_errors():
    with pytest.raises(VerifierError, match="architecture"):
        build_classifier({"architecture": "mlp", "num_classes": 2})
    with pytest.raises(VerifierError, match="channels"):
        build_classifier({"architecture": "convnet", "num_classes": 2})
    with pytest.raises(VerifierError, match="class_names"):
        build_classifier({**vf.DIGITS_LIKE_CONFIG, "class_names": ["a"]})
    with pytest.raises(VerifierError, match="too small"):
        build_classifier({**vf.DIGITS_LIKE_CONFIG, "image_size": 2})


# -- weight files ------------------------------------------------------------------------------

def test_state_dict_loading_accepts_plain_files(root):
    sd = load_state_dict_file(root / vf.AESTHETIC_NAME)
    assert "layers.7.bias" in sd
    sd = load_state_dict_file(root / "clip" / f"{vf.TINY_CLIP}.safetensors")
    assert "logit_scale" in sd


def test_corrupt_files_are_refused(root, tmp_path):
    bad_st = vf.truncated_copy(root / "clip" / f"{vf.TINY_CLIP}.safetensors", tmp_path / "bad.safetensors")
    with pytest.raises(WeightsFileError, match="corrupt or truncated"):
        load_state_dict_file(bad_st)
    bad_pt = vf.truncated_copy(root / vf.AESTHETIC_NAME, tmp_path / "bad.pth")
    with pytest.raises(WeightsFileError, match="corrupt or truncated"):
        load_state_dict_file(bad_pt)
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(WeightsFileError, match="corrupt or truncated"):
        load_state_dict_file(tmp_path / "garbage.pth")
    with pytest.raises(WeightsFileError):
        load_classifier(vf.truncated_copy(root / "classifiers" / "digits.safetensors",
                                          tmp_path / "classifiers" / "digits.safetensors"))


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = vf.write_pickle_with_code(tmp_path / "evil.pth", marker)
    with pytest.raises(WeightsFileError, match="refused"):
        load_state_dict_file(path)
    with pytest.raises(WeightsFileError, match="refused"):
        load_aesthetic_mlp(path)
    assert not marker.exists()
