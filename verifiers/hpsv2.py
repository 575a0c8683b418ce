"""HPS v2.1 (Wu et al., 2023: "Human Preference Score v2") as a batched verifier.

HPS v2.1 is an open_clip ViT-H-14 fine-tuned on human preference data (HPD v2). The
checkpoint ``HPS_v2.1_compressed.pt`` (xswu/HPSv2 on the Hugging Face Hub) is a torch pickle of
``{"state_dict": <open_clip CLIP state dict>}``; it is read with ``torch.load(weights_only=True)``
(a pickle carrying code is refused, never run) into open_clip's own ``ViT-H-14`` (the
architecture the ``hpsv2`` package builds with its bundled copy of open_clip; the keys are
checked strictly). The LAION ViT-H-14 weights the package downloads first are not needed: the
HPS checkpoint replaces every one of them.

Score, as the package's ``hpsv2.score`` computes it: the cosine similarity of the
L2-normalised image and prompt embeddings (``diag(image_features @ text_features.T)``), with no
logit scale (about 0.2-0.35 for real images; higher is better).

Text: open_clip's CLIP tokenizer, 77 tokens; longer prompts are TRUNCATED with the end token
kept (as in the package; a warning is logged once per prompt). An empty prompt is an error.

Preprocessing (the package's ``preprocess_val`` with ``light_augmentation=True``), in torch
on the model's device for the whole batch: the longer side is scaled to the input size
(224), the shorter to ``round(side * scale)``, with torchvision's tensor bicubic resize
(antialiased, not clamped: the package resizes the float tensor, so this is the same
operation), then zero padding (black, before normalisation) to a square, centred with the
odd pixel at the right/bottom, then OpenAI mean/std. One difference: the package skips the
padding too when the longer side already equals the input size, so it fails on such
non-square images; here they are padded like all others.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from .base import Condition, VerifierError
from .common import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PromptEmbeddings,
    TorchVerifier,
    module_device,
    module_dtype,
    normalize,
    to_nchw,
)
from .weights import WeightsFileError, load_state_dict_file

log = logging.getLogger(__name__)

DEFAULT_ARCH = "ViT-H-14"


def load_hps_model(path: str | os.PathLike, arch: str = DEFAULT_ARCH, dtype: torch.dtype = torch.float32):
    """open_clip ``arch`` with the HPS checkpoint's weights (strict), plus its tokenizer."""
    import open_clip

    if arch not in open_clip.list_models():
        raise VerifierError(f"unknown open_clip architecture {arch!r}")
    state = load_state_dict_file(path)  # torch.load(weights_only=True); unwraps {"state_dict": ...}
    model = open_clip.create_model(arch, pretrained=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsFileError(f"{path} does not fit the open_clip architecture {arch!r} (HPS v2.1 is ViT-H-14): "
                               f"{str(e).splitlines()[0]}") from None
    return model.to(dtype).eval().requires_grad_(False), open_clip.get_tokenizer(arch)


def resize_longest_and_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size]: longer side to ``size`` (bicubic, antialiased, float),
    zero padding split as ``pad // 2`` before and the rest after (the package's ResizeMaxSize)."""
    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    new_h, new_w = round(h * scale), round(w * scale)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    pad_h, pad_w = size - new_h, size - new_w
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    return x


class HPSv2Verifier(TorchVerifier):
    """HPS v2.1: cosine(prompt, image) of the fine-tuned open_clip ViT-H-14 (see the module docstring)."""

    name = "HPSv2.1"
    max_batch = 16

    def __init__(self, model, tokenizer, text_cache_size: int = 64):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.context_length = int(getattr(tokenizer, "context_length", None) or 77)
        self._prompts = PromptEmbeddings("HPSv2", text_cache_size)
        self._warned: set[str] = set()

    @classmethod
    def from_file(cls, path: str | os.PathLike, arch: str = DEFAULT_ARCH, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> HPSv2Verifier:
        model, tokenizer = load_hps_model(path, arch, dtype)
        return cls(model.to(device), tokenizer)

    def torch_modules(self):
        return [self.model]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = to_nchw(images, module_device(self.model))
        x = resize_longest_and_pad(x, self.image_size)
        return normalize(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD).to(module_dtype(self.model))

    def _warn_if_truncated(self, prompt: str) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None or prompt in self._warned:
            return
        n = len(encode(prompt)) + 2
        if n > self.context_length:
            self._warned.add(prompt)
            log.warning("noise-search: HPSv2 reads only the first %d tokens of the prompt (it has %d); the rest "
                        "does not affect the score: %.80s...", self.context_length, n, prompt)

    def prompt_embedding(self, prompt: str) -> torch.Tensor:
        return self._prompts.get(prompt, module_device(self.model), self._embed_prompt)

    def _embed_prompt(self, prompt: str) -> torch.Tensor:
        self._warn_if_truncated(prompt)
        tokens = self.tokenizer([prompt]).to(module_device(self.model))
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)[0]

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    def _score(self, images, condition: Condition, early):
        return self.image_embeddings(images) @ self.prompt_embedding(condition.text)
