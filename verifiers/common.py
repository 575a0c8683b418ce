"""Shared pieces of the torch verifiers: image preprocessing on the device and model placement.

Preprocessing runs in torch on whatever device the model sits on (no PIL round trip), on
the whole batch at once. ComfyUI IMAGE batches are [B, H, W, C] floats in [0, 1];
``verifiers.base.check_images`` has already reduced them to 3 channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .base import Verifier, VerifierError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma, for classifiers that take one channel.
LUMA = (0.299, 0.587, 0.114)


def to_nchw(images: torch.Tensor, device: torch.device | str, channels: int = 3) -> torch.Tensor:
    """BHWC [0, 1] -> BCHW float32 on ``device``; 1 channel = luma of the RGB image."""
    x = images.to(device=device, dtype=torch.float32).movedim(-1, 1)
    if channels == 1:
        weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x[:, :3] * weights).sum(dim=1, keepdim=True)
    elif channels != 3:
        raise ValueError(f"unsupported channel count {channels}")
    return x


def resize_shortest_center_crop(x: torch.Tensor, size: int | Sequence[int], resize_to: int | None = None,
                                mode: str = "bicubic") -> torch.Tensor:
    """Resize so the shorter side is ``resize_to`` (default: the crop size), then center-crop.

    This is what CLIP's and DINOv2's reference preprocessing do with PIL; antialiasing
    keeps downscaling close to PIL's filters.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    short = resize_to if resize_to is not None else max(out_h, out_w)
    h, w = x.shape[-2:]
    scale = short / min(h, w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = interpolate(x, (new_h, new_w), mode)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    return x[..., top:top + out_h, left:left + out_w]


def resize_squash(x: torch.Tensor, size: int | Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == (out_h, out_w):
        return x
    return interpolate(x, (out_h, out_w), mode)


def interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "area" or mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    out = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    # Bicubic overshoots; keep the input range so normalisation sees what PIL would give.
    return out.clamp(0.0, 1.0) if mode == "bicubic" else out


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def module_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class TorchVerifier(Verifier):
    """A verifier backed by torch modules that a host may move between devices.

    ``prepare`` is called before every scoring call; ComfyUI's runtime sets it to load the
    modules through the memory manager (``verifiers.comfy_runtime``). Outside ComfyUI it
    does nothing and the modules stay where they were built. Inference always runs under
    ``torch.inference_mode`` and on the device the modules currently live on.
    """

    def __init__(self) -> None:
        self.prepare: Callable[[], None] | None = None

    def torch_modules(self) -> list[torch.nn.Module]:
        """Every module this verifier runs (shared ones included)."""
        raise NotImplementedError

    def score(self, images, condition=None, early=None):
        if self.prepare is not None:
            self.prepare()
        with torch.inference_mode():
            return super().score(images, condition, early)


def resample(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic", emulate_pil: bool = False,
             clamp: bool = True) -> torch.Tensor:
    """Resize [B, C, H, W] floats in [0, 1] to ``size`` (H, W) the way PIL does.

    Antialiased bicubic/bilinear (PyTorch's antialiased kernels are PIL's: bicubic a = -0.5),
    clamped to [0, 1] when ``clamp`` (PIL's 8-bit output is). ``emulate_pil``: what PIL does to
    an 8-bit RGB image instead: round the input to 8 bits, resample the width and then the
    height, rounding and clipping to 0..255 after each pass.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if emulate_pil:
        x = (x * 255.0).round()
        for target in ((h, size[1]), tuple(size)):
            if tuple(x.shape[-2:]) != target:
                x = F.interpolate(x, size=target, mode=mode, align_corners=False, antialias=True)
                x = x.round().clamp(0.0, 255.0)
        return x / 255.0
    x = F.interpolate(x, size=tuple(size), mode=mode, align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0) if clamp else x


class PromptEmbeddings:
    """The embeddings of recent prompts, per device: a search scores many batches against one prompt.

    ``get(prompt, device, embed)`` returns the cached embedding or computes ``embed(prompt)``;
    an empty prompt is an error naming the verifier (``what``).
    """

    def __init__(self, what: str, size: int = 64):
        self.what = what
        self.size = size
        self._cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()

    def get(self, prompt: str, device, embed: Callable[[str], torch.Tensor]) -> torch.Tensor:
        if not prompt.strip():
            raise VerifierError(f"{self.what} needs the prompt text: it scores how well an image fits its prompt "
                                "(the condition text is empty)")
        key = (prompt, str(device))
        emb = self._cache.get(key)
        if emb is None:
            emb = embed(prompt)
            self._cache[key] = emb
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return emb
