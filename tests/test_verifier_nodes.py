"""Verifier loader nodes and VerifierScore, run in-process the way ComfyUI executes them, and
one prompt on a live server. Tiny random models sit in a temporary `verifiers` folder
registered with folder_paths, in the official layout."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import socket
import urllib.parse
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from tests import preference_fixtures as pf
from tests import verifier_fixtures as vf
from tests.harness.host import node_class, pack_module, run_node

CLIP_FILE = f"clip/{vf.TINY_CLIP}.safetensors"


@pytest.fixture(scope="module")
def verifier_root(comfy, tmp_path_factory):
    import folder_paths

    root = vf.write_all(tmp_path_factory.mktemp("verifier_models"))
    paths = folder_paths.folder_names_and_paths["verifiers"][0]
    paths.insert(0, str(root))  # what is_default=True in extra_model_paths.yaml does
    pf.write_files(root, {**pf.pickscore_files(), **pf.hps_files()})
    hub = pack_module("verifiers.hub")
    with pytest.MonkeyPatch.context() as mp:
        # Tiny files sit under official names whose real SHA-256 is pinned: pin the tiny files'
        # hashes instead, so the pinned check runs (and passes) as it does for users.
        for rel, entry in list(hub.OFFICIAL_FILES.items()):
            if entry.sha256 is not None and (root / rel).is_file():
                tiny = (root / rel).read_bytes()
                mp.setitem(hub.OFFICIAL_FILES, rel, dataclasses.replace(
                    entry, sha256=hashlib.sha256(tiny).hexdigest(), size=len(tiny)))
        yield root
    paths.remove(str(root))




@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def load(node_id: str, **inputs):
    defaults = {"architecture": "auto", "precision": "auto", "allow_download": False}
    schema_inputs = {i.id for i in pack_node(node_id).define_schema().inputs}
    args = {k: v for k, v in defaults.items() if k in schema_inputs}
    args.update(inputs)
    (verifier,) = run_node(node_id, **args)
    return verifier


def pack_node(node_id: str):
    return node_class(node_id)


def assert_batched_equals_single(verifier, images, condition="", early=None):
    batched = verifier.score(images, condition, early)
    single = torch.cat([verifier.score(images[i:i + 1], condition, None if early is None else early[i:i + 1])
                        for i in range(images.shape[0])])
    assert torch.isfinite(batched).all()
    # Batched and single matmuls round differently: a few float32 ulps of the score's size
    # (PickScore's scores are 30-60).
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(verifier.score(images, condition, early), batched, atol=0, rtol=0)
    return batched


# -- registration and pickers ------------------------------------------------------------------

def test_nodes_registered_with_tooltips(comfy):
    ids = ["CLIPScoreVerifierLoader", "ImageRewardVerifierLoader", "PickScoreVerifierLoader", "HPSv2VerifierLoader",
           "AestheticVerifierLoader",
           "CLIPZeroShotVerifierLoader", "DINOv2VerifierLoader", "ClassifierVerifierLoader",
           "VerifierEnsemble", "VerifierScore"]
    for node_id in ids:
        schema = pack_node(node_id).define_schema()
        assert schema.category == "sampling/noise_search/verifiers"
        assert all(i.tooltip for i in schema.inputs), node_id
        assert all(o.tooltip for o in schema.outputs), node_id
    import folder_paths

    assert os.path.join(folder_paths.models_dir, "verifiers") in folder_paths.get_folder_paths("verifiers")


def test_pickers_list_files_and_official_defaults(verifier_root):
    info = pack_node("CLIPScoreVerifierLoader").INPUT_TYPES()["required"]
    options = info["clip_file"][1]["options"]
    assert options[0] == "clip/ViT-L-14-openai.safetensors" and CLIP_FILE in options
    assert info["clip_file"][1]["default"] == "clip/ViT-L-14-openai.safetensors"
    classifiers = pack_node("ClassifierVerifierLoader").INPUT_TYPES()["required"]["classifier_file"][1]["options"]
    assert {"classifiers/brightness.safetensors", "classifiers/digits.safetensors"} <= set(classifiers)
    assert "dinov2-small" in pack_node("DINOv2VerifierLoader").INPUT_TYPES()["required"]["dinov2_folder"][1]["options"]
    ir = pack_node("ImageRewardVerifierLoader").INPUT_TYPES()["required"]
    assert ir["tokenizer_dir"][1]["options"][0] == "ImageReward/bert-base-uncased"


# -- loaders through the nodes -----------------------------------------------------------------

def test_clip_verifiers_share_one_cached_model_under_the_memory_manager(verifier_root):
    import comfy.model_management
    import comfy.model_patcher

    clip_score = load("CLIPScoreVerifierLoader", clip_file=CLIP_FILE)
    aesthetic = load("AestheticVerifierLoader", aesthetic_file=vf.AESTHETIC_NAME, clip_file=CLIP_FILE)
    zero_shot = load("CLIPZeroShotVerifierLoader", clip_file=CLIP_FILE, class_names="cat\ndog\n\n",
                     templates="a photo of a {}.\nart of a {}.")
    assert aesthetic.clip is clip_score.clip is zero_shot.clip
    assert load("CLIPScoreVerifierLoader", clip_file=CLIP_FILE).clip is clip_score.clip  # cached across prompts
    assert all(isinstance(p, comfy.model_patcher.ModelPatcher) for p in aesthetic.patchers)
    assert aesthetic.patchers[0] is clip_score.patchers[0]  # one patcher per shared module
    imgs = vf.images(3)
    s = assert_batched_equals_single(clip_score, imgs, "a red cat")
    assert (s.abs() <= 1).all()
    assert_batched_equals_single(aesthetic, imgs)
    assert_batched_equals_single(zero_shot, imgs, "dog")
    assert zero_shot.class_names == ["cat", "dog"]
    loaded = [getattr(m.model.model, "inner", None) for m in comfy.model_management.current_loaded_models
              if m.model is not None]
    assert clip_score.clip.model in loaded and aesthetic.mlp in loaded


def test_cache_reloads_a_replaced_file(verifier_root):
    first = load("CLIPScoreVerifierLoader", clip_file=CLIP_FILE)
    path = verifier_root / "clip" / f"{vf.TINY_CLIP}_copy.safetensors"
    shutil.copyfile(verifier_root / "clip" / f"{vf.TINY_CLIP}.safetensors", path)
    a = load("CLIPScoreVerifierLoader", clip_file=path.relative_to(verifier_root).as_posix(),
             architecture=vf.TINY_CLIP)
    assert a.clip is not first.clip
    before = a.score(vf.images(2), "a cat")
    vf.write_tiny_clip(verifier_root, seed=5, name=path.name)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    b = load("CLIPScoreVerifierLoader", clip_file=path.relative_to(verifier_root).as_posix(),
             architecture=vf.TINY_CLIP)
    assert b.clip is not a.clip
    assert not torch.allclose(before, b.score(vf.images(2), "a cat"))


def test_dinov2_loader_and_verifier_score_need_early_images(verifier_root):
    v = load("DINOv2VerifierLoader", dinov2_folder="dinov2-small", early_level=0.3)
    assert v.early_level == 0.3
    imgs, early = vf.images(3, seed=4), vf.images(3, seed=5)
    assert_batched_equals_single(v, imgs, early=early)
    out = run_node("VerifierScore", images=imgs, verifier=v, condition="", early_images=imgs)
    assert out[2] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(Exception, match="early x0-prediction"):
        run_node("VerifierScore", images=imgs, verifier=v, condition="")


def test_imagereward_loader(verifier_root):
    v = load("ImageRewardVerifierLoader", model_file="ImageReward/ImageReward.pt",
             med_config_file="ImageReward/med_config.json", tokenizer_dir="ImageReward/bert-base-uncased")
    assert v.patchers
    s = assert_batched_equals_single(v, vf.images(3, h=32, w=32), "a red cat sitting on a blue mat")
    assert s.shape == (3,)


def test_classifier_loader_and_verifier_score_pick_the_known_best(verifier_root):
    v = load("ClassifierVerifierLoader", classifier_file="classifiers/brightness.safetensors")
    imgs = vf.flat_images([0.2, 0.9, 0.5, 0.7])
    best, index, score, scores, order, ranked = run_node("VerifierScore", images=imgs, verifier=v,
                                                        condition="bright")
    assert index == 1 and score == pytest.approx(0.9)
    assert torch.equal(best, imgs[1:2])
    assert [round(x, 4) for x in json.loads(scores)] == [0.2, 0.9, 0.5, 0.7]
    assert json.loads(order) == [1, 3, 2, 0]
    assert torch.equal(ranked, imgs[[1, 3, 2, 0]])
    assert run_node("VerifierScore", images=imgs, verifier=v, condition="0")[1] == 0
    with pytest.raises(Exception, match="Valid classes: 0: dark, 1: bright"):
        run_node("VerifierScore", images=imgs, verifier=v, condition="purple")
    digits = load("ClassifierVerifierLoader", classifier_file="classifiers/digits.safetensors")
    assert_batched_equals_single(digits, vf.images(70, h=16, w=16), "7")  # above max_batch: chunked


def test_verifier_ensemble_node(verifier_root):
    bright = load("ClassifierVerifierLoader", classifier_file="classifiers/brightness.safetensors")
    clip_score = load("CLIPScoreVerifierLoader", clip_file=CLIP_FILE)
    (ens,) = run_node("VerifierEnsemble", verifier_1=bright, verifier_2=clip_score, weight_1=1.0, weight_2=1.0)
    imgs = vf.flat_images([0.2, 0.9, 0.5])
    comps = torch.stack([bright.score(imgs, "bright"), clip_score.score(imgs, "bright")])
    mean_rank = pack_module("verifiers.ensemble").mean_rank
    torch.testing.assert_close(ens.score(imgs, "bright"), mean_rank(comps).float())
    (heavy,) = run_node("VerifierEnsemble", verifier_1=bright, verifier_2=clip_score, weight_1=1.0, weight_2=0.0)
    assert run_node("VerifierScore", images=imgs, verifier=heavy, condition="bright")[1] == 1


def test_pickscore_and_hps_loaders_batched_on_the_memory_manager_and_in_the_ensemble(verifier_root):
    import comfy.model_patcher

    ps = load("PickScoreVerifierLoader", model_folder=pf.PICKSCORE_DIR, processor_folder=pf.PICKSCORE_PROCESSOR_DIR)
    hps = load("HPSv2VerifierLoader", model_file=pf.HPS_FILE, architecture=pf.hps_arch())
    for v in (ps, hps):
        assert v.prepare is not None and all(isinstance(p, comfy.model_patcher.ModelPatcher) for p in v.patchers)
        assert_batched_equals_single(v, vf.images(5, h=40, w=56), "a red cat on a mat")
    # Cached: a second load returns the same model object.
    assert load("PickScoreVerifierLoader", model_folder=pf.PICKSCORE_DIR,
                processor_folder=pf.PICKSCORE_PROCESSOR_DIR).model is ps.model
    options = pack_node("PickScoreVerifierLoader").INPUT_TYPES()["required"]
    assert options["model_folder"][1]["options"][0] == pf.PICKSCORE_DIR
    assert options["processor_folder"][1]["options"][0] == pf.PICKSCORE_PROCESSOR_DIR
    assert pack_node("HPSv2VerifierLoader").INPUT_TYPES()["required"]["model_file"][1]["options"][0] == pf.HPS_FILE
    (ens,) = run_node("VerifierEnsemble", verifier_1=ps, verifier_2=hps, weight_1=1.0, weight_2=1.0)
    imgs = vf.images(4, h=32, w=32)
    comps = torch.stack([ps.score(imgs, "a cat"), hps.score(imgs, "a cat")])
    torch.testing.assert_close(ens.score(imgs, "a cat"), pack_module("verifiers.ensemble").mean_rank(comps).float())
    best = run_node("VerifierScore", images=imgs, verifier=ens, condition="a cat")
    assert best[1] == int(torch.argmax(pack_module("verifiers.ensemble").mean_rank(comps)))


# -- files: downloads off, corrupt, unsafe -------------------------------------------------------

def test_missing_file_with_downloads_off_names_file_folder_and_source(only_folder, monkeypatch, no_network):
    hub = pack_module("verifiers.hub")
    rel = "aesthetic/sac+logos+ava1-l14-linearMSE.pth"
    url = hub.OFFICIAL_FILES[rel].url
    monkeypatch.setenv("NOISE_SEARCH_ALLOW_DOWNLOADS", "0")
    with pytest.raises(Exception) as e:
        load("AestheticVerifierLoader", aesthetic_file=rel, clip_file=CLIP_FILE, allow_download=True)
    assert rel in str(e.value) and str(only_folder) in str(e.value) and url in str(e.value)
    monkeypatch.delenv("NOISE_SEARCH_ALLOW_DOWNLOADS")
    with pytest.raises(Exception, match="switched off") as e:
        load("CLIPScoreVerifierLoader", clip_file="clip/ViT-L-14-openai.safetensors", allow_download=False)
    assert "open_clip_model.safetensors" in str(e.value) and str(only_folder) in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="HF_HUB_OFFLINE") as e:
        load("DINOv2VerifierLoader", dinov2_folder="dinov2-small", early_level=0.4, allow_download=True)
    assert "facebook/dinov2-small" in str(e.value)
    assert no_network == []


def test_loaders_refuse_corrupt_and_pickled_code_files(verifier_root, tmp_path):
    broken = vf.truncated_copy(verifier_root / "clip" / f"{vf.TINY_CLIP}.safetensors",
                               verifier_root / "clip" / "broken.safetensors")
    with pytest.raises(Exception, match="corrupt or truncated"):
        load("CLIPScoreVerifierLoader", clip_file="clip/broken.safetensors", architecture=vf.TINY_CLIP)
    broken.unlink()
    marker = tmp_path / "code_ran"
    vf.write_pickle_with_code(verifier_root / "aesthetic" / "evil.pth", marker)
    with pytest.raises(Exception, match="refused"):
        load("AestheticVerifierLoader", aesthetic_file="aesthetic/evil.pth", clip_file=CLIP_FILE)
    evil_dino = verifier_root / "dinov2-evil"
    evil_dino.mkdir()
    shutil.copyfile(verifier_root / "dinov2-small" / "config.json", evil_dino / "config.json")
    vf.write_pickle_with_code(evil_dino / "pytorch_model.bin", marker)
    with pytest.raises(Exception, match="refused"):
        load("DINOv2VerifierLoader", dinov2_folder="dinov2-evil", early_level=0.4)
    assert not marker.exists()
    with pytest.raises(Exception, match="place it at"):
        load("ClassifierVerifierLoader", classifier_file="classifiers/classifier.safetensors")


# -- live server ---------------------------------------------------------------------------------

def test_verifier_score_prompt_on_live_server(live, tmp_path):
    src = vf.write_brightness_classifier(tmp_path)
    dest = live.dirs["models"] / "verifiers" / "classifiers"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest / "live_brightness.safetensors")
    shutil.copyfile(src.with_suffix(".json"), dest / "live_brightness.json")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0x202020}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0xE0E0E0}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "ClassifierVerifierLoader",
              "inputs": {"classifier_file": "classifiers/live_brightness.safetensors"}},
        "5": {"class_type": "VerifierScore", "inputs": {"images": ["3", 0], "verifier": ["4", 0],
                                                         "condition": "bright"}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    result = live.run(prompt, timeout=120)
    assert result["status"] == "success", result
    saved = result["history"]["outputs"]["6"]["images"][0]
    query = urllib.parse.urlencode({"filename": saved["filename"], "subfolder": saved.get("subfolder", ""),
                                    "type": saved.get("type", "temp")})
    status, body = live.request("GET", f"/view?{query}")
    assert status == 200, body
    pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert abs(int(pixels.mean()) - 0xE0) <= 1  # the bright image won
