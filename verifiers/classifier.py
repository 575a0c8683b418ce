"""Image classifiers as verifiers: score = logit of the class named by the condition.

A classifier is a safetensors weights file plus a JSON config (``<name>.json`` beside
``<name>.safetensors``; ``save_classifier`` also embeds the config in the safetensors
metadata, which is used when the JSON is absent). Config fields:

- ``architecture``: ``"convnet"`` (below) or ``"torchvision:<name>"`` (any torchvision
  classification model, e.g. ``"torchvision:resnet18"``, built without pretrained weights);
- ``num_classes`` (int) and optional ``class_names`` (list of str, one per class);
- ``in_channels`` (1 or 3; 1 = luma of the RGB image), ``image_size`` (int or [h, w]);
- ``mean`` / ``std`` (per input channel, applied to [0, 1] pixels; default 0 / 1 for the
  convnet, ImageNet statistics for torchvision models);
- ``resize``: ``"squash"`` (resize to image_size, the convnet default) or ``"center_crop"``
  (shorter side to image_size then center crop, the torchvision default);
  ``interpolation``: ``"area"`` (convnet default, good for big downscales), ``"bilinear"``
  or ``"bicubic"``.

``convnet`` fields: ``channels`` (one int per conv block: conv k x k, padding k // 2, then
optional batch norm, ReLU and 2 x 2 max pooling), ``kernel_size`` (default 3),
``batchnorm`` (default false), ``pool`` (default true; false keeps the resolution),
``hidden`` (width of the penultimate fully connected layer; 0 = none), ``dropout``
(default 0). ``ConvNetClassifier.features(x)`` returns the penultimate activations,
``forward(x)`` the logits.

The scaling testbed trains with ``build_classifier(config)`` and ships the result with
``save_classifier(module, config, path)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .base import Condition, VerifierError
from .clip import resolve_class
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchVerifier,
    module_device,
    module_dtype,
    normalize,
    resize_shortest_center_crop,
    resize_squash,
    to_nchw,
)
from .weights import WeightsFileError, load_safetensors

CONFIG_METADATA_KEY = "noise_search_classifier"


class ConvNetClassifier(nn.Module):
    """A small CNN fully described by its config (see the module docstring)."""

    def __init__(self, in_channels: int, image_size: Sequence[int], channels: Sequence[int],
                 num_classes: int, kernel_size: int = 3, hidden: int = 0, batchnorm: bool = False,
                 pool: bool = True, dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in, (h, w) = in_channels, image_size
        for c_out in channels:
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2))
            if batchnorm:
                blocks.append(nn.BatchNorm2d(c_out))
            blocks.append(nn.ReLU())
            if pool:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c_in = c_out
        if h < 1 or w < 1:
            raise VerifierError(f"image_size {tuple(image_size)} is too small for {len(channels)} pooling blocks")
        self.blocks = nn.Sequential(*blocks)
        flat = c_in * h * w
        self.fc = nn.Linear(flat, hidden) if hidden else None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(hidden or flat, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, hidden] (the flattened conv output when hidden = 0)."""
        x = self.blocks(x).flatten(1)
        if self.fc is not None:
            x = torch.relu(self.fc(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def _size_pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return (int(size[0]), int(size[1]))
    raise VerifierError(f"image_size must be an int or [height, width], got {size!r}")


def normalize_config(config: dict) -> dict:
    """Validate a classifier config and fill in its defaults (returns a new dict)."""
    if not isinstance(config, dict):
        raise VerifierError("a classifier config must be a JSON object")
    cfg = dict(config)
    arch = cfg.get("architecture")
    if not isinstance(arch, str) or not (arch == "convnet" or arch.startswith("torchvision:")):
        raise VerifierError(f"classifier architecture must be 'convnet' or 'torchvision:<model name>', got {arch!r}")
    n = cfg.get("num_classes")
    names = cfg.get("class_names")
    if n is None and isinstance(names, list):
        n = len(names)
    if not isinstance(n, int) or n < 1:
        raise VerifierError("classifier config needs num_classes (a positive int)")
    cfg["num_classes"] = n
    if names is None:
        names = [str(i) for i in range(n)]
    if not isinstance(names, list) or len(names) != n or not all(isinstance(s, str) for s in names):
        raise VerifierError(f"class_names must be a list of {n} strings")
    cfg["class_names"] = names
    torchvision = arch.startswith("torchvision:")
    cfg.setdefault("in_channels", 3)
    if cfg["in_channels"] not in (1, 3):
        raise VerifierError("in_channels must be 1 or 3")
    cfg["image_size"] = list(_size_pair(cfg.get("image_size", 224 if torchvision else 32)))
    c = cfg["in_channels"]
    cfg.setdefault("mean", list(IMAGENET_MEAN) if torchvision and c == 3 else [0.0] * c)
    cfg.setdefault("std", list(IMAGENET_STD) if torchvision and c == 3 else [1.0] * c)
    for key in ("mean", "std"):
        if not isinstance(cfg[key], list) or len(cfg[key]) != c:
            raise VerifierError(f"{key} must list one value per input channel ({c})")
    if any(s == 0 for s in cfg["std"]):
        raise VerifierError("std values must be non-zero")
    cfg.setdefault("resize", "center_crop" if torchvision else "squash")
    if cfg["resize"] not in ("squash", "center_crop"):
        raise VerifierError("resize must be 'squash' or 'center_crop'")
    cfg.setdefault("interpolation", "bilinear" if torchvision else "area")
    if cfg["interpolation"] not in ("area", "bilinear", "bicubic"):
        raise VerifierError("interpolation must be 'area', 'bilinear' or 'bicubic'")
    if arch == "convnet":
        ch = cfg.get("channels")
        if not isinstance(ch, list) or not all(isinstance(x, int) and x > 0 for x in ch):
            raise VerifierError("convnet config needs channels: a list of positive ints (one per conv block)")
        cfg.setdefault("kernel_size", 3)
        cfg.setdefault("hidden", 0)
        cfg.setdefault("batchnorm", False)
        cfg.setdefault("pool", True)
        cfg.setdefault("dropout", 0.0)
    return cfg


def build_classifier(config: dict) -> nn.Module:
    """An untrained classifier module for ``config`` (same structure the loader builds)."""
    cfg = normalize_config(config)
    arch = cfg["architecture"]
    if arch == "convnet":
        return ConvNetClassifier(
            in_channels=cfg["in_channels"], image_size=cfg["image_size"], channels=cfg["channels"],
            num_classes=cfg["num_classes"], kernel_size=cfg["kernel_size"], hidden=cfg["hidden"],
            batchnorm=cfg["batchnorm"], pool=cfg["pool"], dropout=cfg["dropout"])
    import torchvision

    name = arch.split(":", 1)[1]
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise VerifierError(f"unknown torchvision classification model {name!r}")
    model = torchvision.models.get_model(name, weights=None, num_classes=cfg["num_classes"])
    if cfg["in_channels"] != 3:
        raise VerifierError("torchvision models take 3 input channels")
    return model


def save_classifier(module: nn.Module, config: dict, path) -> Path:
    """Write ``path`` (.safetensors, config embedded in its metadata) and ``path``'s .json."""
    from safetensors.torch import save_file

    cfg = normalize_config(config)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise VerifierError("classifier weights are saved as .safetensors")
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={CONFIG_METADATA_KEY: json.dumps(cfg)})
    path.with_suffix(".json").write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def load_classifier(path) -> tuple[nn.Module, dict]:
    """Read a classifier written by ``save_classifier`` (or by hand in the same format)."""
    path = Path(path)
    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise WeightsFileError(f"classifier weights must be a .safetensors file, got {path.name}")
    state, metadata = load_safetensors(path, with_metadata=True)
    json_path = path.with_suffix(".json")
    if json_path.is_file():
        try:
            config = json.loads(json_path.read_text())
        except ValueError as e:
            raise WeightsFileError(f"could not parse {json_path}: {e}") from None
    elif CONFIG_METADATA_KEY in metadata:
        config = json.loads(metadata[CONFIG_METADATA_KEY])
    else:
        raise WeightsFileError(f"no classifier config for {path.name}: put {json_path.name} beside it")
    cfg = normalize_config(config)
    module = build_classifier(cfg)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsFileError(f"{path} does not fit its config: {str(e).splitlines()[0]}") from None
    return module.float().eval().requires_grad_(False), cfg


class ClassifierVerifier(TorchVerifier):
    """Logit of the class the condition names (a class name or an index)."""

    name = "classifier"
    max_batch = 64

    def __init__(self, module: nn.Module, config: dict):
        super().__init__()
        self.module = module
        self.config = normalize_config(config)
        self.class_names: list[str] = self.config["class_names"]
        self._lookup = {c.lower(): i for i, c in enumerate(self.class_names)}

    def torch_modules(self):
        return [self.module]

    def class_index(self, label: str) -> int:
        return resolve_class(label, self.class_names, self._lookup)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = to_nchw(images, module_device(self.module), channels=cfg["in_channels"])
        size = tuple(cfg["image_size"])
        if cfg["resize"] == "center_crop":
            x = resize_shortest_center_crop(x, size, mode=cfg["interpolation"])
        elif cfg["interpolation"] == "area" and (x.shape[-2] < size[0] or x.shape[-1] < size[1]):
            # Area interpolation cannot upscale smoothly; bilinear does.
            x = resize_squash(x, size, mode="bilinear")
        else:
            x = resize_squash(x, size, mode=cfg["interpolation"])
        return normalize(x, cfg["mean"], cfg["std"]).to(module_dtype(self.module))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(self.preprocess(images)).float()

    def _score(self, images, condition: Condition, early):
        index = self.class_index(condition.label)
        return self.logits(images)[:, index]

