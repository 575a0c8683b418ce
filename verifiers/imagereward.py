"""ImageReward (Xu et al., 2023; THUDM) as a batched verifier, without the `image-reward` package.

The pip package ``image-reward`` cannot be a dependency (it pins timm==0.6.13 against
open_clip's timm>=1.0.17 and does not import under transformers 5), so the model is
re-implemented here in plain torch and loads the OFFICIAL files unchanged:

- ``ImageReward.pt``: a torch-pickled state dict, read only with
  ``torch.load(weights_only=True)`` (``verifiers.weights.load_state_dict_file``); a pickle that
  carries code is refused and never run. A ``.safetensors`` conversion is accepted too;
- ``med_config.json``: the BERT ("MED") configuration of the text encoder;
- a BERT ``vocab.txt`` (bert-base-uncased's) for the tokenizer.

Architecture (as in the package's ``ImageReward`` class)
--------------------------------------------------------
- image encoder: BLIP's ViT (pre-norm blocks, LayerNorm eps 1e-6, exact GELU, qkv bias,
  class token + learned positions). Width, depth, patch size, MLP width and image size are
  read from the checkpoint's tensor shapes (the official file is ViT-L/16 at 224 px); the
  head count is not visible in shapes and is width // 64 (BLIP's 64-dim heads; ViT-L: 16),
  unless ``vision_heads`` is given;
- text encoder: BERT with a cross-attention block (to all image tokens) after the
  self-attention of every layer, post-norm; sizes from ``med_config.json``. As in the package
  (``BLIP_Pretrain``), the cross-attention input width is the ViT width, whatever
  ``encoder_width`` says in the JSON. No token-type embeddings, no pooler;
- head: the text output at position 0 goes through an MLP of five linear layers without
  activations (768-1024-128-64-16-1 in the official file; sizes read from the shapes);
  reward = (mlp - 0.16717362830052426) / 1.0333394966054072.

Checkpoint keys are checked STRICTLY against the package's module layout (``blip.visual_encoder``,
``blip.text_encoder``, ``mlp.layers``, plus ``blip.vision_proj`` / ``blip.text_proj``): a key the
reward needs that is missing, or a key outside that layout, is an error naming the file and
the first offending keys, and every shape must fit. Three groups of keys are part of the
layout but never read by the reward, so they are accepted when present (shapes checked) and
not required: ``blip.vision_proj.*`` / ``blip.text_proj.*`` (BLIP's contrastive projections,
in the package's state dict) and ``blip.text_encoder.embeddings.position_ids`` (the constant
0..n-1 buffer that older transformers saved and newer ones do not; its values are checked).

Preprocessing (on the model's device, whole batch at once)
----------------------------------------------------------
The package does ``Resize(224, BICUBIC)`` (shorter side to 224, longer side
``int(224 * long / short)``), ``CenterCrop(224)`` (offsets ``round((size - 224) / 2)``),
``ToTensor`` and ``Normalize`` with OpenAI-CLIP mean/std, on a PIL image. Here the same geometry
is applied to the float IMAGE tensor with ``F.interpolate(mode="bicubic", antialias=True)``
(PyTorch's antialiased bicubic uses PIL's a = -0.5 kernel) and clamped to [0, 1] as PIL's
8-bit output is. Differences from the package: PIL resamples 8-bit data and rounds to 8 bits
after each of its two passes, while this path stays in float, so resized pixels differ by
up to a few 1/255 (see scripts/imagereward_golden/README.md for measured numbers). When the
image already has the model's size, no resampling happens in either path and scores match
the package to float precision. Float input is also never rounded to 8 bits here.
``emulate_pil=True`` rounds to 8 bits and resamples in two rounded passes like PIL, which
brings resized pixels to within 1/255 of the package's.

Text
----
Tokenized exactly like the package: bert-base-uncased WordPiece with the added tokens
``[DEC]`` (bos) and ``[ENC]``, ``padding="max_length", truncation=True, max_length=35``.
Prompts longer than 35 tokens ([CLS] and [SEP] included) are TRUNCATED, as in the package: the
end of a long prompt does not influence the score (a warning is logged once per prompt). The
package's ``score``/``inference_rank`` keep ``[CLS]`` at position 0 (they do not substitute
the ``[ENC]`` token the way BLIP's ITM head does), and so does this module. An empty prompt
is an error. The prompt is tokenized and embedded once per call and shared by the batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Condition, VerifierError
from .common import TorchVerifier
from .weights import load_state_dict_file

log = logging.getLogger(__name__)

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TEXT_TOKENS = 35
VIT_HEAD_DIM = 64
VIT_LN_EPS = 1e-6
# The package's Sequential: Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear.
MLP_LINEAR_INDICES = (0, 2, 4, 6, 7)
POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"
# In the official layout but never read by the reward: accepted (and checked) when present.
UNUSED_KEYS = (POSITION_IDS_KEY, "blip.vision_proj.weight", "blip.vision_proj.bias",
               "blip.text_proj.weight", "blip.text_proj.bias")
ADDED_TOKENS = ("[DEC]", "[ENC]")  # bos_token, then additional_special_tokens, as the package adds them
# Shown in errors; where the official files live.
OFFICIAL_HINT = ("official files: https://huggingface.co/THUDM/ImageReward (ImageReward.pt, med_config.json) "
                 "and bert-base-uncased's vocab.txt (https://huggingface.co/google-bert/bert-base-uncased)")


class ImageRewardLoadError(VerifierError):
    """The ImageReward files are missing, unreadable, unsafe or do not fit together."""


# --------------------------------------------------------------------------------------------
# Dimensions
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VisionDims:
    width: int
    depth: int
    heads: int
    patch_size: int
    image_size: int
    mlp_hidden: int


@dataclass(frozen=True)
class TextDims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    layer_norm_eps: float
    hidden_act: str
    encoder_width: int


@dataclass(frozen=True)
class HeadDims:
    mlp_sizes: tuple[int, ...]  # input, then the output of each linear layer


_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def read_med_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ImageRewardLoadError(f"med_config.json not found at {path}; {OFFICIAL_HINT}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImageRewardLoadError(f"could not read {path} as JSON ({type(e).__name__}: {e}); "
                                   f"{OFFICIAL_HINT}") from None
    if not isinstance(cfg, dict):
        raise ImageRewardLoadError(f"{path} does not hold a JSON object")
    return cfg


def text_dims_from_config(cfg: dict, encoder_width: int, where: str = "med_config.json") -> TextDims:
    def need_int(key: str) -> int:
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ImageRewardLoadError(f"{where}: '{key}' must be a positive integer, got {value!r}")
        return value

    hidden, heads = need_int("hidden_size"), need_int("num_attention_heads")
    if hidden % heads:
        raise ImageRewardLoadError(f"{where}: hidden_size {hidden} is not a multiple of "
                                   f"num_attention_heads {heads}")
    act = cfg.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ImageRewardLoadError(f"{where}: hidden_act {act!r} is not supported "
                                   f"(supported: {', '.join(sorted(_ACTIVATIONS))})")
    pos_type = cfg.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
        raise ImageRewardLoadError(f"{where}: position_embedding_type {pos_type!r} is not supported "
                                   "(ImageReward uses 'absolute')")
    if cfg.get("add_cross_attention", True) is not True:
        raise ImageRewardLoadError(f"{where}: add_cross_attention must be true: ImageReward's text "
                                   "encoder attends to the image tokens")
    max_positions = need_int("max_position_embeddings") if "max_position_embeddings" in cfg else 512
    if max_positions < MAX_TEXT_TOKENS:
        raise ImageRewardLoadError(f"{where}: max_position_embeddings {max_positions} is below the "
                                   f"{MAX_TEXT_TOKENS} text tokens ImageReward uses")
    return TextDims(hidden=hidden, layers=need_int("num_hidden_layers"), heads=heads,
                    intermediate=need_int("intermediate_size"), vocab_size=need_int("vocab_size"),
                    max_positions=max_positions, layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
                    hidden_act=act, encoder_width=encoder_width)


# --------------------------------------------------------------------------------------------
# Modules. Attribute names follow the package's so state-dict keys map one to one.
# --------------------------------------------------------------------------------------------

def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head softmax attention; q [B, Lq, D], k/v [B, Lk, D], additive mask broadcastable."""
    b, lq, d = q.shape
    hd = d // heads
    q = q.view(b, lq, heads, hd).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, hd).transpose(1, 2)
    v = v.view(b, v.shape[1], heads, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, lq, d)


class _PatchEmbed(nn.Module):
    def __init__(self, dims: VisionDims):
        super().__init__()
        self.proj = nn.Conv2d(3, dims.width, kernel_size=dims.patch_size, stride=dims.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _VitAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(_attend(q, k, v, self.heads))


class _VitMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, dims: VisionDims):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims.width, eps=VIT_LN_EPS)
        self.attn = _VitAttention(dims.width, dims.heads)
        self.norm2 = nn.LayerNorm(dims.width, eps=VIT_LN_EPS)
        self.mlp = _VitMlp(dims.width, dims.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    """BLIP's ViT; returns all tokens after the final LayerNorm, [B, 1 + patches, width]."""

    def __init__(self, dims: VisionDims):
        super().__init__()
        self.dims = dims
        grid = dims.image_size // dims.patch_size
        self.patch_embed = _PatchEmbed(dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dims.width))
        self.blocks = nn.ModuleList(_VitBlock(dims) for _ in range(dims.depth))
        self.norm = nn.LayerNorm(dims.width, eps=VIT_LN_EPS)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class _Embedding(nn.Module):
    """A lookup table (nn.Embedding without its random init, which is slow on the meta device)."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class _BertEmbeddings(nn.Module):
    def __init__(self, dims: TextDims):
        super().__init__()
        self.word_embeddings = _Embedding(dims.vocab_size, dims.hidden)
        self.position_embeddings = _Embedding(dims.max_positions, dims.hidden)
        self.LayerNorm = nn.LayerNorm(dims.hidden, eps=dims.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class _BertSelfAttention(nn.Module):
    def __init__(self, dims: TextDims, kv_width: int):
        super().__init__()
        self.heads = dims.heads
        self.query = nn.Linear(dims.hidden, dims.hidden)
        self.key = nn.Linear(kv_width, dims.hidden)
        self.value = nn.Linear(kv_width, dims.hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return _attend(self.query(x), self.key(context), self.value(context), self.heads, mask)


class _BertResidualOutput(nn.Module):
    """dense -> add the residual -> LayerNorm (BertSelfOutput and BertOutput)."""

    def __init__(self, in_width: int, dims: TextDims):
        super().__init__()
        self.dense = nn.Linear(in_width, dims.hidden)
        self.LayerNorm = nn.LayerNorm(dims.hidden, eps=dims.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _BertAttention(nn.Module):
    def __init__(self, dims: TextDims, kv_width: int):
        super().__init__()
        # "self" is the package's attribute name (the key path is attention.self.query...).
        setattr(self, "self", _BertSelfAttention(dims, kv_width))  # noqa: B010
        self.output = _BertResidualOutput(dims.hidden, dims)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(getattr(self, "self")(x, context, mask), x)  # noqa: B009


class _BertIntermediate(nn.Module):
    def __init__(self, dims: TextDims):
        super().__init__()
        self.dense = nn.Linear(dims.hidden, dims.intermediate)


class _BertLayer(nn.Module):
    def __init__(self, dims: TextDims):
        super().__init__()
        self.act = _ACTIVATIONS[dims.hidden_act]
        self.attention = _BertAttention(dims, dims.hidden)
        self.crossattention = _BertAttention(dims, dims.encoder_width)
        self.intermediate = _BertIntermediate(dims)
        self.output = _BertResidualOutput(dims.intermediate, dims)

    def forward(self, x: torch.Tensor, self_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, self_mask)
        x = self.crossattention(x, image, None)  # every image token is attended (mask of ones)
        return self.output(self.act(self.intermediate.dense(x)), x)


class _BertEncoder(nn.Module):
    def __init__(self, dims: TextDims):
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(dims) for _ in range(dims.layers))


class TextEncoder(nn.Module):
    """BLIP's MED text encoder in its 'multimodal' mode (self-attention, then cross-attention)."""

    def __init__(self, dims: TextDims):
        super().__init__()
        self.dims = dims
        self.embeddings = _BertEmbeddings(dims)
        self.encoder = _BertEncoder(dims)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_embeds: torch.Tensor) -> torch.Tensor:
        """input_ids / attention_mask [1 or B, L]; image_embeds [B, N, W] -> hidden states [B, L, H]."""
        batch = image_embeds.shape[0]
        x = self.embeddings(input_ids).to(image_embeds.dtype)
        x = x.expand(batch, -1, -1) if x.shape[0] == 1 else x
        # BERT's additive padding mask, (1 - mask) * -10000 as in the package.
        self_mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, self_mask, image_embeds)
        return x


class _Blip(nn.Module):
    def __init__(self, vision: VisionDims, text: TextDims):
        super().__init__()
        self.visual_encoder = VisionEncoder(vision)
        self.text_encoder = TextEncoder(text)


class _RewardHead(nn.Module):
    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, idx in enumerate(MLP_LINEAR_INDICES):
            while len(layers) < idx:
                layers.append(nn.Identity())  # the package's (inactive) Dropout slots
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ImageRewardModel(nn.Module):
    """The package's ``ImageReward`` module: ``blip`` (ViT + MED text encoder) and ``mlp``."""

    def __init__(self, vision: VisionDims, text: TextDims, head: HeadDims):
        super().__init__()
        self.vision_dims, self.text_dims, self.head_dims = vision, text, head
        self.blip = _Blip(vision, text)
        self.mlp = _RewardHead(head.mlp_sizes)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, S, S] and one tokenized prompt [1, L] (or [B, L]) -> rewards [B]."""
        image_embeds = self.blip.visual_encoder(pixels)
        hidden = self.blip.text_encoder(input_ids, attention_mask, image_embeds)
        features = hidden[:, 0, :].float()
        head_dtype = self.mlp.layers[0].weight.dtype
        raw = self.mlp(features.to(head_dtype)).float()
        return ((raw - REWARD_MEAN) / REWARD_STD).reshape(-1)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _first(keys, n: int = 5) -> str:
    keys = sorted(keys, key=_natural_key)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _natural_key(key: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def _key_error(where: str, missing=(), unexpected=()) -> ImageRewardLoadError:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    return ImageRewardLoadError(
        f"{where} is not an ImageReward checkpoint in the official layout: " + "; ".join(parts)
        + f". {OFFICIAL_HINT}")


def _need(sd: dict[str, torch.Tensor], key: str, ndim: int, where: str) -> torch.Tensor:
    if key not in sd:
        raise _key_error(where, missing=[key])
    t = sd[key]
    if t.ndim != ndim:
        raise ImageRewardLoadError(f"{where}: {key} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    return t


def infer_vision_dims(sd: dict[str, torch.Tensor], where: str = "checkpoint",
                      heads: int | None = None) -> VisionDims:
    """ViT sizes from the tensor shapes under ``blip.visual_encoder.``."""
    p = "blip.visual_encoder."
    width = _need(sd, p + "cls_token", 3, where).shape[-1]
    proj = _need(sd, p + "patch_embed.proj.weight", 4, where)
    patch = proj.shape[-1]
    if proj.shape[-2] != patch or proj.shape[1] != 3:
        raise ImageRewardLoadError(f"{where}: {p}patch_embed.proj.weight has shape {tuple(proj.shape)}; "
                                   "expected square patches over 3 channels")
    tokens = _need(sd, p + "pos_embed", 3, where).shape[1]
    grid = math.isqrt(max(tokens - 1, 0))
    if grid * grid != tokens - 1 or grid == 0:
        raise ImageRewardLoadError(f"{where}: {p}pos_embed holds {tokens} positions, not 1 + a square "
                                   "number of patches")
    block_ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(p) + r"blocks\.(\d+)\.", k))}
    if not block_ids:
        raise _key_error(where, missing=[p + "blocks.0.attn.qkv.weight"])
    depth = max(block_ids) + 1
    mlp_hidden = _need(sd, p + "blocks.0.mlp.fc1.weight", 2, where).shape[0]
    if heads is None:
        if width % VIT_HEAD_DIM:
            raise ImageRewardLoadError(
                f"{where}: ViT width {width} is not a multiple of {VIT_HEAD_DIM}; the head count cannot be "
                "inferred (pass vision_heads)")
        heads = width // VIT_HEAD_DIM
    elif heads <= 0 or width % heads:
        raise ImageRewardLoadError(f"vision_heads={heads} does not divide the ViT width {width}")
    return VisionDims(width=width, depth=depth, heads=heads, patch_size=patch, image_size=grid * patch,
                      mlp_hidden=mlp_hidden)


def infer_head_dims(sd: dict[str, torch.Tensor], where: str = "checkpoint") -> HeadDims:
    sizes = []
    for i, idx in enumerate(MLP_LINEAR_INDICES):
        w = _need(sd, f"mlp.layers.{idx}.weight", 2, where)
        if i == 0:
            sizes.append(w.shape[1])
        elif w.shape[1] != sizes[-1]:
            raise ImageRewardLoadError(f"{where}: mlp.layers.{idx}.weight has shape {tuple(w.shape)}; its "
                                       f"input should be {sizes[-1]} (the previous layer's output)")
        sizes.append(w.shape[0])
    if sizes[-1] != 1:
        raise ImageRewardLoadError(f"{where}: the reward MLP ends in {sizes[-1]} outputs, expected 1")
    return HeadDims(mlp_sizes=tuple(sizes))


def _check_unused(unused: dict[str, torch.Tensor], vision: VisionDims, text: TextDims, where: str) -> None:
    position_ids = unused.get(POSITION_IDS_KEY)
    if position_ids is not None:
        n = position_ids.numel()
        if n != text.max_positions or not torch.equal(position_ids.reshape(-1).long(), torch.arange(n)):
            raise ImageRewardLoadError(f"{where}: {POSITION_IDS_KEY} is not 0..{text.max_positions - 1}")
    for name, in_width in (("vision_proj", vision.width), ("text_proj", text.hidden)):
        w, b = unused.get(f"blip.{name}.weight"), unused.get(f"blip.{name}.bias")
        if w is not None and (w.ndim != 2 or w.shape[1] != in_width):
            raise ImageRewardLoadError(f"{where}: blip.{name}.weight has shape {tuple(w.shape)}, expected "
                                       f"(*, {in_width})")
        out = w.shape[0] if w is not None else None
        if b is not None and (b.ndim != 1 or (out is not None and b.shape[0] != out)):
            raise ImageRewardLoadError(f"{where}: blip.{name}.bias has shape {tuple(b.shape)}, expected "
                                       f"({out if out is not None else '*'},)")


def build_model(state_dict: dict[str, torch.Tensor], med_config: dict, where: str = "checkpoint",
                config_where: str = "med_config.json", vision_heads: int | None = None) -> ImageRewardModel:
    """An ImageRewardModel holding ``state_dict`` (strict keys and shapes), on the CPU."""
    sd = dict(state_dict)
    unused = {k: sd.pop(k) for k in UNUSED_KEYS if k in sd}
    vision = infer_vision_dims(sd, where, vision_heads)
    text = text_dims_from_config(med_config, encoder_width=vision.width, where=config_where)
    head = infer_head_dims(sd, where)
    if head.mlp_sizes[0] != text.hidden:
        raise ImageRewardLoadError(f"{where}: the reward MLP takes {head.mlp_sizes[0]} features but "
                                   f"{config_where} has hidden_size {text.hidden}")
    with torch.device("meta"):
        model = ImageRewardModel(vision, text, head)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise _key_error(where, missing, unexpected)
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(s)})" for k, s in expected.items()
             if tuple(sd[k].shape) != tuple(s)]
    if wrong:
        raise ImageRewardLoadError(
            f"{where}: {len(wrong)} tensor(s) do not fit {config_where} and the ViT sizes read from the "
            f"checkpoint ({vision}): {'; '.join(sorted(wrong, key=_natural_key)[:5])}")
    _check_unused(unused, vision, text, where)
    not_float = [k for k, v in sd.items() if not v.is_floating_point()]
    if not_float:
        raise ImageRewardLoadError(f"{where}: weights must be floating point; {_first(not_float)} are not")
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_tokenizer(tokenizer_dir: str | os.PathLike):
    """bert-base-uncased's WordPiece tokenizer from a folder holding ``vocab.txt`` (or that file)."""
    path = Path(tokenizer_dir)
    vocab = path if path.is_file() else path / "vocab.txt"
    if not vocab.is_file():
        raise ImageRewardLoadError(
            f"no BERT vocab.txt at {vocab}: ImageReward's tokenizer is bert-base-uncased; put its vocab.txt "
            "there (https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt)")
    from transformers import BertTokenizer

    try:
        tok = BertTokenizer(str(vocab), do_lower_case=True)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ImageRewardLoadError(f"could not build a BERT tokenizer from {vocab}: {e}") from None
    tok.add_special_tokens({"bos_token": ADDED_TOKENS[0]})
    tok.add_special_tokens({"additional_special_tokens": [ADDED_TOKENS[1]]})
    return tok


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def resize_and_crop(x: torch.Tensor, size: int, emulate_pil: bool = False) -> torch.Tensor:
    """torchvision's ``Resize(size)`` + ``CenterCrop(size)`` geometry on [B, C, H, W] floats in [0, 1].

    Shorter side -> ``size``, longer side -> ``int(size * long / short)`` (truncated, as
    torchvision does), antialiased bicubic (PIL's a = -0.5 kernel; it matches PIL's float
    resampling to ~1e-6), clamped to [0, 1]; then the crop at ``round((new - size) / 2)``
    (Python rounding, as torchvision's CenterCrop).

    ``emulate_pil`` reproduces what PIL does to an 8-bit RGB image instead: the input is
    rounded to 8 bits, the width is resampled first, then the height, each pass rounded and
    clipped to 0..255. That matches the package's pixels to 1/255 (on ~0.1% of pixels, from
    PIL's fixed-point ties) where the float path differs by up to ~5/255.
    """
    h, w = x.shape[-2:]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    if emulate_pil:
        x = (x * 255.0).round()
        for target in ((h, new_w), (new_h, new_w)):
            if tuple(x.shape[-2:]) != target:
                x = F.interpolate(x, size=target, mode="bicubic", align_corners=False, antialias=True)
                x = x.round().clamp(0.0, 255.0)
        x = x / 255.0
    elif (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


# --------------------------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------------------------

class ImageRewardVerifier(TorchVerifier):
    """ImageReward's human-preference reward of an image for a prompt (higher is better).

    Scores are on the package's scale (standardised: about 0 on average, roughly -2..2).
    Needs the prompt text; an empty prompt is an error.
    """

    name = "ImageReward"
    max_batch = 32

    def __init__(self, model: ImageRewardModel, tokenizer, emulate_pil: bool = False):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        # True: round to 8 bits and resample like PIL does on uint8 images (see resize_and_crop).
        self.emulate_pil = emulate_pil
        self.image_size = model.vision_dims.image_size
        self._token_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._warned: set[str] = set()

    @classmethod
    def from_files(cls, model_path: str | os.PathLike, med_config_path: str | os.PathLike,
                   tokenizer_dir: str | os.PathLike, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, vision_heads: int | None = None,
                   emulate_pil: bool = False) -> ImageRewardVerifier:
        """Load the official ``ImageReward.pt`` + ``med_config.json`` and a bert-base-uncased vocab.

        ``tokenizer_dir``: a folder holding bert-base-uncased's ``vocab.txt`` (or that file).
        ``vision_heads``: ViT head count when it is not width // 64 (never for the official file).
        ``emulate_pil``: reproduce PIL's 8-bit resampling (see ``resize_and_crop``).
        The reward MLP stays in float32 whatever ``dtype`` is (it is tiny; the package runs it
        on float32 features).
        """
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ImageRewardLoadError(f"ImageReward checkpoint not found at {model_path}; {OFFICIAL_HINT}")
        med_config = read_med_config(med_config_path)
        tokenizer = load_tokenizer(tokenizer_dir)
        state_dict = load_state_dict_file(model_path)  # weights_only=True; code is refused, never run
        model = build_model(state_dict, med_config, where=str(model_path),
                            config_where=str(med_config_path), vision_heads=vision_heads)
        del state_dict
        vocab_size = model.text_dims.vocab_size
        if len(tokenizer) != vocab_size:
            raise ImageRewardLoadError(
                f"the tokenizer from {tokenizer_dir} has {len(tokenizer)} tokens (with [DEC] and [ENC]) but "
                f"{med_config_path} says vocab_size {vocab_size}; use bert-base-uncased's vocab.txt "
                "(30522 entries + 2 = 30524)")
        model = model.to(device=device, dtype=dtype)
        model.mlp.float()
        return cls(model, tokenizer, emulate_pil=emulate_pil)

    def torch_modules(self) -> list[torch.nn.Module]:
        return [self.model]

    @property
    def device(self) -> torch.device:
        return self.model.blip.visual_encoder.cls_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.blip.visual_encoder.cls_token.dtype

    def tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each [1, 35] long on the CPU, as the package tokenizes."""
        cached = self._token_cache.get(prompt)
        if cached is None:
            enc = self.tokenizer(prompt, padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS,
                                 return_tensors="pt")
            cached = (enc["input_ids"].long(), enc["attention_mask"].long())
            self._token_cache[prompt] = cached
            while len(self._token_cache) > 64:
                self._token_cache.popitem(last=False)
            if prompt not in self._warned:
                full = len(self.tokenizer(prompt, truncation=False)["input_ids"])
                if full > MAX_TEXT_TOKENS:
                    self._warned.add(prompt)
                    log.warning("ImageReward reads only the first %d tokens of the prompt (it has %d); the "
                                "rest does not affect the score: %.80r", MAX_TEXT_TOKENS, full, prompt)
        return cached

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, 3] in [0, 1] -> normalised pixels [B, 3, S, S] on the model's device/dtype."""
        x = images.to(device=self.device, dtype=torch.float32).movedim(-1, 1)
        x = resize_and_crop(x, self.image_size, self.emulate_pil)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    def _score(self, images: torch.Tensor, condition: Condition,
               early: torch.Tensor | None) -> torch.Tensor:
        prompt = condition.text
        if not prompt.strip():
            raise VerifierError("ImageReward needs the prompt text: it scores how well an image fits its prompt "
                                "(connect the prompt / give a non-empty text)")
        input_ids, attention_mask = self.tokenize(prompt)
        device = self.device
        with torch.inference_mode():
            return self.model(self.preprocess(images), input_ids.to(device), attention_mask.to(device))
