"""PickScore (Kirstain et al., 2023: "Pick-a-Pic") as a batched verifier.

PickScore v1 is a CLIP ViT-H/14 fine-tuned on human preferences between images for the same
prompt. Its published inference recipe (yuvalkirstain/PickScore, model card of
yuvalkirstain/PickScore_v1) is followed exactly:

- the model is ``yuvalkirstain/PickScore_v1``: a transformers ``CLIPModel`` folder
  (``config.json`` + ``model.safetensors``), read here with transformers' own CLIP classes from
  local files only (safetensors; no remote code);
- the processor is the one of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``: its tokenizer files
  (``tokenizer.json`` etc.) and ``preprocessor_config.json``;
- text: ``padding=True, truncation=True, max_length=77`` (prompts longer than 77 tokens, start
  and end tokens included, are TRUNCATED; a warning is logged once per prompt);
- score = ``logit_scale.exp() * cos(text embedding, image embedding)`` of the L2-normalised
  projected embeddings, with the checkpoint's own learned logit scale (higher is better).
  The reference's softmax over a batch (``probs``) is not the verifier's output: it would make
  a score depend on the other images of the batch.

Preprocessing runs in torch on the model's device, on the whole batch: shorter side to the
configured size (longer side ``int(size * long / short)``), antialiased bicubic, center crop
at ``(new - crop) // 2`` (transformers' offsets), OpenAI mean/std from the processor file.
The reference resamples 8-bit PIL images, rounding after each pass; on images already at the
model's input size no resampling happens in either and scores match to float precision,
otherwise resized pixels differ by a few 1/255 (``emulate_pil=True`` reproduces PIL's 8-bit
passes; see scripts/pickscore_golden/README.md for the measured differences).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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
    resample,
    to_nchw,
)
from .weights import WeightsFileError

log = logging.getLogger(__name__)

MAX_TOKENS = 77
MODEL_FILES = ("config.json", "model.safetensors")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt")
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes as preprocessor_config.json stores them


def read_preprocessor_config(path: str | os.PathLike) -> dict:
    """Size, crop, mean/std and resampling from a CLIP ``preprocessor_config.json``.

    Accepts the legacy CLIPFeatureExtractor form (``"size": 224``, ``"crop_size": 224``) and the
    newer CLIPImageProcessor form (``{"shortest_edge": 224}``, ``{"height": .., "width": ..}``).
    """
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsFileError(f"could not read {path}: {e}") from None
    size = cfg.get("size", 224)
    if isinstance(size, dict):
        size = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0)) or None
    crop = cfg.get("crop_size", size)
    if isinstance(crop, dict):
        crop = (int(crop["height"]), int(crop["width"]))
    elif crop is not None:
        crop = (int(crop), int(crop))
    mode = _RESAMPLE.get(int(cfg.get("resample", 3)))
    if not isinstance(size, int) or crop is None or mode is None:
        raise WeightsFileError(f"{path} is not a CLIP image processor configuration this pack understands "
                               f"(size {cfg.get('size')!r}, crop_size {cfg.get('crop_size')!r}, "
                               f"resample {cfg.get('resample')!r})")
    return {
        "size": int(size), "crop": crop, "mode": mode,
        "do_resize": bool(cfg.get("do_resize", True)), "do_center_crop": bool(cfg.get("do_center_crop", True)),
        "do_normalize": bool(cfg.get("do_normalize", True)),
        "mean": tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)), "std": tuple(cfg.get("image_std", OPENAI_CLIP_STD)),
        "rescale": float(cfg.get("rescale_factor", 1 / 255)) * 255.0 if cfg.get("do_rescale", True) else 255.0,
    }


def load_clip_model(folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """A transformers CLIPModel from a local folder (config.json + model.safetensors), strictly."""
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise WeightsFileError(f"{folder} has no {name} (a PickScore folder holds {' and '.join(MODEL_FILES)})")
    try:
        config = CLIPConfig.from_json_file(str(folder / "config.json"))
    except (ValueError, OSError) as e:
        raise WeightsFileError(f"could not read {folder / 'config.json'}: {e}") from None
    if getattr(config, "model_type", "clip") != "clip":
        raise WeightsFileError(f"{folder / 'config.json'} describes a {config.model_type!r} model, not CLIP")
    try:
        model, info = CLIPModel.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            output_loading_info=True)
    except Exception as e:  # transformers wraps safetensors errors in several types
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise WeightsFileError(f"could not read {folder / 'model.safetensors'}: the file is corrupt, truncated or "
                               f"not a CLIP checkpoint ({type(e).__name__}: {text})") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith("position_ids"))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.endswith("position_ids"))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        raise WeightsFileError(f"{folder / 'model.safetensors'} does not fit {folder / 'config.json'}: missing "
                               f"{missing[:5]}, unexpected {unexpected[:5]}, mismatched {mismatched[:3]}")
    return model.to(dtype).eval().requires_grad_(False)


def load_tokenizer(folder: str | os.PathLike):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise WeightsFileError(f"could not read the CLIP tokenizer files in {folder}: {str(e).splitlines()[0]}") from None


class PickScoreVerifier(TorchVerifier):
    """PickScore: ``logit_scale.exp() * cos(prompt, image)`` (see the module docstring)."""

    name = "PickScore"
    max_batch = 16

    def __init__(self, model, tokenizer, processor: dict, emulate_pil: bool = False, text_cache_size: int = 64):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.emulate_pil = emulate_pil
        self._prompts = PromptEmbeddings("PickScore", text_cache_size)
        self._warned: set[str] = set()

    @classmethod
    def from_folders(cls, model_dir: str | os.PathLike, processor_dir: str | os.PathLike,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     emulate_pil: bool = False) -> PickScoreVerifier:
        processor = read_preprocessor_config(Path(processor_dir) / "preprocessor_config.json")
        tokenizer = load_tokenizer(processor_dir)
        model = load_clip_model(model_dir, dtype).to(device)
        vision_size = int(model.config.vision_config.image_size)
        if processor["crop"] != (vision_size, vision_size):
            raise WeightsFileError(f"{processor_dir} crops images to {processor['crop']} but the model in "
                                   f"{model_dir} takes {vision_size} px images; use the processor made for it")
        vocab = int(model.config.text_config.vocab_size)
        if len(tokenizer) > vocab:
            raise WeightsFileError(f"the tokenizer in {processor_dir} has {len(tokenizer)} tokens but the model in "
                                   f"{model_dir} embeds only {vocab}; use the processor made for it")
        return cls(model, tokenizer, processor, emulate_pil=emulate_pil)

    def torch_modules(self):
        return [self.model]

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().float().exp()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, 3] in [0, 1] -> pixel values [B, 3, crop, crop] on the model's device/dtype."""
        p = self.processor
        x = to_nchw(images, module_device(self.model))
        if p["do_resize"]:
            h, w = x.shape[-2:]
            s = p["size"]
            new = (int(s * h / w), s) if w <= h else (s, int(s * w / h))
            x = resample(x, new, p["mode"], self.emulate_pil)
        if p["do_center_crop"]:
            ch, cw = p["crop"]
            h, w = x.shape[-2:]
            if h < ch or w < cw:
                raise VerifierError(f"PickScore: image of {h}x{w} after resizing is smaller than the crop {ch}x{cw}")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        x = x * p["rescale"]  # ComfyUI floats are 8-bit values / 255
        if p["do_normalize"]:
            x = normalize(x, p["mean"], p["std"])
        return x.to(module_dtype(self.model))

    def tokenize(self, prompt: str) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(prompt, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        if prompt not in self._warned:
            full = len(self.tokenizer(prompt, truncation=False)["input_ids"])
            if full > MAX_TOKENS:
                self._warned.add(prompt)
                log.warning("noise-search: PickScore reads only the first %d tokens of the prompt (it has %d); "
                            "the rest does not affect the score: %.80s...", MAX_TOKENS, full, prompt)
        return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}

    def prompt_embedding(self, prompt: str) -> torch.Tensor:
        return self._prompts.get(prompt, module_device(self.model), self._embed_prompt)

    def _embed_prompt(self, prompt: str) -> torch.Tensor:
        device = module_device(self.model)
        enc = {k: v.to(device) for k, v in self.tokenize(prompt).items()}
        pooled = self.model.text_model(**enc).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)[0]

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=self.preprocess(images)).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def _score(self, images, condition: Condition, early):
        text = self.prompt_embedding(condition.text)
        return self.logit_scale * (self.image_embeddings(images) @ text)
