"""CLIP-based verifiers (open_clip): CLIPScore and the zero-shot classifier.

Score conventions
-----------------
- ``CLIPScoreVerifier``: Hessel et al.'s CLIP-S, ``2.5 * max(cos, 0)``, where ``cos`` is the
  cosine similarity of the L2-normalised image and prompt embeddings. This is the scale of
  the paper's tables (0.71-0.82 for FLUX.1-dev on DrawBench): a raw cosine for a matching
  pair is only about 0.25-0.35 with CLIP ViT-L/14, and 2.5 stretches it to about 0.6-0.9.
  Scores lie in [0, 2.5]; images whose embedding points away from the prompt's all score 0
  (ties, which the search resolves by batch order). ``CLIPScoreVerifier.cosine`` gives
  the raw cosine.
- ``CLIPZeroShotVerifier``: ``100 * cos(image, class embedding)``, the logit of the
  requested class, where a class embedding is the normalised mean of its normalised
  template embeddings (the CLIP zero-shot recipe).

Prompts longer than the text context (77 tokens for CLIP) are truncated by open_clip's
tokenizer, which keeps the end-of-text token so the embedding stays well defined; a
warning is logged once per prompt. An empty prompt is an error, never a silent score.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import Condition, VerifierError, quoted
from .common import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    TorchVerifier,
    module_device,
    module_dtype,
    normalize,
    resize_shortest_center_crop,
    to_nchw,
)
from .weights import WeightsFileError, load_state_dict_file

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class OpenCLIPModel:
    """An open_clip CLIP model with its tokenizer and preprocessing settings.

    One instance can back several verifiers (CLIPScore, aesthetic, zero-shot) so the
    weights are loaded once.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, arch: str):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.arch = arch
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(cfg.get("mean", OPENAI_CLIP_MEAN))
        self.std = tuple(cfg.get("std", OPENAI_CLIP_STD))
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.context_length = int(getattr(tokenizer, "context_length", None) or 77)
        self._warned: set[str] = set()

    def torch_modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = to_nchw(images, module_device(self.model))
        x = resize_shortest_center_crop(x, self.image_size, mode=self.interpolation)
        return normalize(x, self.mean, self.std).to(module_dtype(self.model))

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings, float32, [B, D]."""
        feats = self.model.encode_image(self.preprocess(images))
        return F.normalize(feats.float(), dim=-1)

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, float32, [N, D]; long texts are truncated."""
        for text in texts:
            self._warn_if_truncated(text)
        tokens = self.tokenizer(list(texts)).to(module_device(self.model))
        feats = self.model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1)

    def _warn_if_truncated(self, text: str) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None or text in self._warned:
            return
        n = len(encode(text)) + 2  # start and end tokens
        if n > self.context_length:
            self._warned.add(text)
            log.warning("noise-search: prompt has %d tokens, CLIP reads only %d; the rest is truncated: %.80s...",
                        n, self.context_length, text)


def build_open_clip(arch: str, weights_path, quick_gelu: bool | None = None,
                    dtype: torch.dtype = torch.float32) -> OpenCLIPModel:
    """Create ``arch`` with open_clip and load its weights from a local file (strictly)."""
    import open_clip

    if arch not in open_clip.list_models():
        raise VerifierError(f"unknown open_clip architecture {arch!r}")
    # OpenAI's CLIP weights were trained with QuickGELU; open_clip's "-quickgelu" configs
    # say so, plain configs do not. The caller may force it for files known to be OpenAI's.
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=bool(quick_gelu))
    state = load_state_dict_file(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsFileError(f"{weights_path} does not fit the open_clip architecture {arch!r}: "
                               f"{str(e).splitlines()[0]} (choose the architecture that matches the file)") from None
    model = model.to(dtype)
    return OpenCLIPModel(model, open_clip.get_tokenizer(arch), arch)


def infer_arch(file_name: str, known: dict[str, str] | None = None) -> str:
    """Guess the open_clip architecture from a weights file name (``clip/ViT-L-14-openai...``).

    The longest open_clip model name that starts the file's stem wins; files named after
    OpenAI's weights get the QuickGELU variant those weights need.
    """
    import open_clip

    if known and file_name in known:
        return known[file_name]
    stem = re.sub(r"\.(safetensors|sft|bin|pt|pth|ckpt)$", "", file_name.rsplit("/", 1)[-1], flags=re.I)
    names = sorted(open_clip.list_models(), key=len, reverse=True)
    for name in names:
        if stem.lower().startswith(name.lower()):
            if "openai" in stem.lower() and not name.endswith("-quickgelu") and f"{name}-quickgelu" in names:
                return f"{name}-quickgelu"
            return name
    raise VerifierError(f"cannot tell the open_clip architecture of {file_name!r} from its name; "
                        f"choose it in the loader's architecture input")


class CLIPScoreVerifier(TorchVerifier):
    """CLIP-S = 2.5 * max(cos(image, prompt), 0), Hessel et al.'s scale (see the module docstring)."""

    name = "CLIPScore"
    max_batch = 32
    # Hessel et al. (2021), CLIPScore: CLIP-S(c, v) = w * max(cos(c, v), 0) with w = 2.5.
    weight = 2.5

    def __init__(self, clip: OpenCLIPModel, text_cache_size: int = 64):
        super().__init__()
        self.clip = clip
        # Search scores many batches against one prompt: keep recent prompt embeddings.
        self._text_cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size

    def torch_modules(self):
        return [self.clip.model]

    def prompt_embedding(self, prompt: str) -> torch.Tensor:
        if not prompt.strip():
            raise VerifierError("CLIPScore needs a prompt: the condition text is empty")
        key = (prompt, str(module_device(self.clip.model)))
        emb = self._text_cache.get(key)
        if emb is None:
            emb = self.clip.text_embeddings([prompt])[0]
            self._text_cache[key] = emb
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        else:
            self._text_cache.move_to_end(key)
        return emb

    def cosine(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        """The raw cosine similarity [B] of each image with the prompt, in [-1, 1]."""
        return self.clip.image_embeddings(images) @ self.prompt_embedding(prompt)

    def _score(self, images, condition: Condition, early):
        return self.weight * self.cosine(images, condition.text).clamp(min=0.0)


class CLIPZeroShotVerifier(TorchVerifier):
    """CLIP zero-shot classifier: the logit (100 * cos) of the class named by the condition."""

    name = "CLIP zero-shot"
    max_batch = 32
    logit_scale = 100.0

    def __init__(self, clip: OpenCLIPModel, class_names: Sequence[str],
                 templates: Sequence[str] = DEFAULT_TEMPLATES):
        super().__init__()
        self.clip = clip
        self.class_names = [c.strip() for c in class_names if c.strip()]
        if not self.class_names:
            raise VerifierError("the zero-shot verifier needs at least one class name")
        self.templates = [t for t in templates if t.strip()] or list(DEFAULT_TEMPLATES)
        for t in self.templates:
            if "{}" not in t:
                raise VerifierError(f"prompt template {t!r} has no '{{}}' where the class name goes")
        self._weights: torch.Tensor | None = None
        self._lookup = {c.lower(): i for i, c in enumerate(self.class_names)}

    def torch_modules(self):
        return [self.clip.model]

    def class_index(self, label: str) -> int:
        return resolve_class(label, self.class_names, self._lookup)

    def class_embeddings(self) -> torch.Tensor:
        """[num_classes, D]: per class, the normalised mean of its template embeddings."""
        device = module_device(self.clip.model)
        if self._weights is None or self._weights.device != device:
            rows = []
            for name in self.class_names:
                emb = self.clip.text_embeddings([t.format(name) for t in self.templates])
                rows.append(F.normalize(emb.mean(dim=0), dim=-1))
            self._weights = torch.stack(rows)
        return self._weights

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.clip.image_embeddings(images) @ self.class_embeddings().T

    def _score(self, images, condition: Condition, early):
        index = self.class_index(condition.label)
        return self.logits(images)[:, index]


def resolve_class(label: str, class_names: Sequence[str], lookup: dict[str, int] | None = None) -> int:
    """A class given by name (case-insensitive) or by index; unknown -> VerifierError listing all."""
    lookup = lookup if lookup is not None else {c.lower(): i for i, c in enumerate(class_names)}
    label = label.strip()
    if label.lower() in lookup:
        return lookup[label.lower()]
    if re.fullmatch(r"[+-]?\d+", label):
        index = int(label)
        if 0 <= index < len(class_names):
            return index
    shown = ", ".join(f"{i}: {c[:40]}" for i, c in enumerate(class_names[:20]))
    more = f", ... ({len(class_names)} classes)" if len(class_names) > 20 else ""
    what = f"unknown class {quoted(label)}" if label else "no class given (the condition text is empty)"
    raise VerifierError(f"condition: {what}; give a class name or index. Valid classes: {shown}{more}")
