"""The paper's self-supervised verifier with DINOv2 features.

Score = cosine similarity between the DINOv2 CLS features of the decoded x0-prediction at
an early point of the trajectory (``early_level``, a fraction of the noise schedule:
1 = pure noise, 0 = clean; the paper uses about 0.4) and of the final image. A sample
whose early prediction already shows what the final image shows scores high. No
condition is needed.

Weights are a transformers DINOv2 folder (``config.json`` + ``model.safetensors``, as
published under facebook/dinov2-*), read offline with safetensors (or a weights-only
torch pickle); nothing is fetched and no remote code runs.
Preprocessing follows the reference image processor: shorter side to 256 (bicubic),
center crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import Condition, VerifierError
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchVerifier,
    module_device,
    module_dtype,
    normalize,
    resize_shortest_center_crop,
    to_nchw,
)
from .weights import WeightsFileError

DEFAULT_EARLY_LEVEL = 0.4
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_dinov2(folder, dtype: torch.dtype = torch.float32):
    """Build a transformers Dinov2Model from a local folder (``config.json`` + weights).

    transformers reads the weights with safetensors, or ``torch.load(weights_only=True)``
    for a ``pytorch_model.bin``; ``local_files_only`` keeps it off the network and no
    remote code is trusted. It also maps older and newer checkpoint key names.
    """
    from transformers import Dinov2Config, Dinov2Model

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsFileError(f"{folder} has no config.json (a DINOv2 folder holds config.json and model.safetensors)")
    try:
        config = Dinov2Config.from_json_file(str(config_path))
    except (ValueError, OSError) as e:
        raise WeightsFileError(f"could not read {config_path}: {e}") from None
    if getattr(config, "model_type", "dinov2") != "dinov2":
        raise WeightsFileError(f"{config_path} describes a {config.model_type!r} model, not DINOv2")
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise WeightsFileError(f"{folder} has no {' or '.join(WEIGHT_FILES)}")
    try:
        model, info = Dinov2Model.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False,
            use_safetensors=weights.suffix == ".safetensors", weights_only=True, output_loading_info=True)
    except Exception as e:  # transformers wraps safetensors/pickle errors in several types
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise WeightsFileError(f"refused to load {weights}: it is a pickle that holds more than tensors "
                                   f"(objects or code), which noise-search never unpickles. Detail: {text}") from None
        raise WeightsFileError(f"could not read {weights}: the file is corrupt, truncated or not a DINOv2 "
                               f"checkpoint ({type(e).__name__}: {text}). Delete it and copy it again.") from None
    # mask_token only serves masked pretraining; everything else must come from the file.
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith("mask_token"))
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        raise WeightsFileError(f"{weights} does not fit {config_path}: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}, mismatched {mismatched[:3]}")
    return model.to(dtype).eval().requires_grad_(False)


class DINOv2SelfSupervisedVerifier(TorchVerifier):
    name = "DINOv2 self-supervised"
    max_batch = 32

    def __init__(self, model, early_level: float = DEFAULT_EARLY_LEVEL, crop_size: int = 224,
                 resize_size: int = 256):
        super().__init__()
        if not 0.0 < early_level < 1.0:
            raise VerifierError(f"early_level must lie strictly between 0 (clean) and 1 (pure noise), "
                                f"got {early_level}")
        self.model = model
        self.early_level = float(early_level)
        self.crop_size = crop_size
        self.resize_size = resize_size

    def torch_modules(self):
        return [self.model]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """CLS features after the final layer norm, float32, [B, D]."""
        x = to_nchw(images, module_device(self.model))
        x = resize_shortest_center_crop(x, self.crop_size, resize_to=self.resize_size, mode="bicubic")
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD).to(module_dtype(self.model))
        return self.model(pixel_values=x).pooler_output.float()

    def _score(self, images, condition: Condition, early):
        # One forward for both sets keeps them in the same numerical regime.
        both = self.features(torch.cat([early, images], dim=0))
        first, final = both.chunk(2, dim=0)
        return F.cosine_similarity(first, final, dim=-1)
