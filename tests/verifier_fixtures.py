"""Tiny verifier models with random weights, written in the official file layouts.

No weights can be downloaded here, so the tests build each model at a toy size and save it
the way the real file is published (open_clip safetensors, the aesthetic head's torch.save
state dict with the official keys, a transformers DINOv2 folder, classifier safetensors +
JSON), then load it through the same loaders users run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from verifiers.aesthetic import AestheticMLP
from verifiers.classifier import build_classifier, save_classifier

REPO = Path(__file__).resolve().parents[1]
IMAGEREWARD_FIXTURE = REPO / "tests" / "fixtures" / "imagereward"

TINY_CLIP = "NSTinyCLIP-B-8"
TINY_CLIP_EMBED = 32
TINY_CLIP_CONFIG = {
    "embed_dim": TINY_CLIP_EMBED,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    # The real tokenizer (open_clip's bundled BPE vocabulary) needs the full vocab size.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
AESTHETIC_NAME = "aesthetic/sac+logos+ava1-l14-linearMSE.pth"

# A classifier whose answer is known: logit("bright") = mean brightness, logit("dark") = minus it.
BRIGHTNESS_CONFIG = {
    "architecture": "convnet", "in_channels": 1, "image_size": 8, "channels": [1], "kernel_size": 1,
    "hidden": 0, "num_classes": 2, "class_names": ["dark", "bright"], "mean": [0.0], "std": [1.0],
}
DIGITS_LIKE_CONFIG = {
    "architecture": "convnet", "in_channels": 1, "image_size": 16, "channels": [8, 16], "kernel_size": 3,
    "hidden": 32, "num_classes": 10, "mean": [0.5], "std": [0.5],
}


def register_tiny_clip(config_dir: Path) -> str:
    """Make open_clip know the tiny architecture (its documented add_model_config)."""
    import open_clip

    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(path)
    return TINY_CLIP


def write_tiny_clip(root: Path, seed: int = 0, name: str | None = None) -> Path:
    """``root/clip/<TINY_CLIP>.safetensors``: a random tiny open_clip model's state dict."""
    import open_clip
    from safetensors.torch import save_file

    register_tiny_clip(root / "_open_clip_configs")
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
        # Random init leaves the projections tiny; scale them up so scores differ visibly.
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(3.0)
    path = root / "clip" / (name or f"{TINY_CLIP}.safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_aesthetic(root: Path, in_dim: int = TINY_CLIP_EMBED, seed: int = 1) -> Path:
    """The official head file (torch.save'd state dict, keys layers.{0,2,4,6,7}.*) at a toy width."""
    torch.manual_seed(seed)
    mlp = AestheticMLP(in_dim)
    state = mlp.state_dict()
    assert sorted({k.rsplit(".", 1)[0] for k in state}) == [f"layers.{i}" for i in (0, 2, 4, 6, 7)]
    path = root / AESTHETIC_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_tiny_dinov2(root: Path, folder: str = "dinov2-small", seed: int = 2) -> Path:
    """A transformers DINOv2 folder (config.json + model.safetensors) at a toy size."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=56, patch_size=14)
    model = Dinov2Model(config).eval()
    path = root / folder
    model.save_pretrained(str(path))
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    return path


def brightness_classifier() -> torch.nn.Module:
    module = build_classifier(BRIGHTNESS_CONFIG)
    with torch.no_grad():
        conv = module.blocks[0]
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        n = module.head.in_features
        module.head.weight.copy_(torch.stack([torch.full((n,), -1.0 / n), torch.full((n,), 1.0 / n)]))
        module.head.bias.zero_()
    return module


def write_brightness_classifier(root: Path, name: str = "brightness") -> Path:
    return save_classifier(brightness_classifier(), BRIGHTNESS_CONFIG, root / "classifiers" / f"{name}.safetensors")


def write_digits_classifier(root: Path, name: str = "digits", seed: int = 3) -> Path:
    torch.manual_seed(seed)
    return save_classifier(build_classifier(DIGITS_LIKE_CONFIG), DIGITS_LIKE_CONFIG,
                           root / "classifiers" / f"{name}.safetensors")


def write_imagereward(root: Path) -> Path:
    """The ImageReward engineer's tiny official-format files, in the pack's layout."""
    target = root / "ImageReward"
    (target / "bert-base-uncased").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(IMAGEREWARD_FIXTURE / "ImageReward.pt", target / "ImageReward.pt")
    shutil.copyfile(IMAGEREWARD_FIXTURE / "med_config.json", target / "med_config.json")
    shutil.copyfile(IMAGEREWARD_FIXTURE / "vocab.txt", target / "bert-base-uncased" / "vocab.txt")
    return target


def write_all(root: Path) -> Path:
    write_tiny_clip(root)
    write_aesthetic(root)
    write_tiny_dinov2(root)
    write_brightness_classifier(root)
    write_digits_classifier(root)
    if IMAGEREWARD_FIXTURE.is_dir():
        write_imagereward(root)
    return root


def truncated_copy(src: Path, dest: Path, keep: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


class _Payload:
    """Unpickling this would create ``marker`` (proof that code ran)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_pickle_with_code(path: Path, marker: Path) -> Path:
    """A torch.save file that carries a code-running object next to real tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"layers.0.weight": torch.zeros(2, 2), "payload": _Payload(str(marker))}, path)
    return path


def images(n: int = 4, h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    """A random IMAGE batch [n, h, w, 3] in [0, 1]."""
    return torch.rand((n, h, w, 3), generator=torch.Generator().manual_seed(seed))


def flat_images(levels, h: int = 16, w: int = 16) -> torch.Tensor:
    """One uniform grey image per brightness level."""
    return torch.stack([torch.full((h, w, 3), float(v)) for v in levels])
