"""Build the PickScore golden fixture with the REFERENCE implementation (throwaway env only).

Run from the repository root inside the throwaway environment described in README.md:

    /tmp/refenv/bin/python scripts/pickscore_golden/make_golden.py --out tests/fixtures/pickscore

The reference is PickScore's published inference recipe (the README of yuvalkirstain/PickScore
and the model card of yuvalkirstain/PickScore_v1), run with the transformers release the
PickScore repository pins (4.27.3): ``AutoProcessor.from_pretrained(<processor folder>)``,
``AutoModel.from_pretrained(<model folder>)``, the processor called on the list of PIL images
and on the prompt with ``padding=True, truncation=True, max_length=77``, L2-normalised
``get_image_features`` / ``get_text_features``, and
``scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]``.

What it writes (tiny, random, in the official file formats):
- ``model/``: a transformers ``CLIPModel`` saved with ``save_pretrained(safe_serialization=True)``
  (``config.json`` + ``model.safetensors``), as yuvalkirstain/PickScore_v1 publishes it, at
  tiny widths and depths;
- ``processor/``: the files laion/CLIP-ViT-H-14-laion2B-s32B-b79K publishes for its processor
  (``preprocessor_config.json`` in the legacy CLIPFeatureExtractor form with int sizes,
  ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``, ``vocab.json``,
  ``merges.txt``, plus the repository's ``config.json`` that ``AutoProcessor`` reads to choose
  ``CLIPProcessor``), with a tiny byte-level BPE vocabulary built like CLIP's (256 byte symbols,
  their ``</w>`` forms, merges, then ``<|startoftext|>`` and ``<|endoftext|>`` last);
- ``images.safetensors``: seeded uint8 images (at the model's size, and other sizes for the
  resize path) and the reference processor's pixel values for the resized ones;
- ``golden.json``: prompts, the reference token ids, scores and probabilities per prompt
  (one batched reference call over the images), versions.

This file must not be imported by the pack or its tests; it needs transformers 4.27.3.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

SEED = 20250605
IMAGE_SIZE = 32
PARITY_IMAGES = 4
RESIZE_SHAPES = ((48, 40), (40, 72), (20, 26))  # (H, W): downscale tall, downscale wide, upscale
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
WORDS = """a an the of on in with and photo painting cat dog red blue green sky sunset over sea astronaut
riding horse portrait woman man city night detailed lighting art""".split()
LONG = "a detailed painting of a city at night with red and blue lighting over the sea at sunset " * 6
PROMPTS = [
    "a red cat on a blue mat",
    "A Photo of an astronaut riding a horse, highly detailed!",
    "zebra-striped teapot",
    # Past 77 tokens: truncated by the processor, so these two score the same.
    LONG + "and a dog",
    LONG + "with a green horse",
    "",  # not scored: the pack refuses empty prompts; kept to record the reference tokens
]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (GPT-2 style)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-layout vocabulary: bytes, bytes + '</w>', merges building ``words`` left to right."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for nxt in parts[1:]:
            pair = (current, nxt)
            if pair not in merges:
                merges.append(pair)
                vocab.append(current + nxt)
            current = current + nxt
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Seeded unit-gain weights so attention, masks, pooling and projections all matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(float(np.log(100.0)))
            elif p.ndim >= 2:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
            elif "layer_norm" in name or "layernorm" in name or "pre_layrnorm" in name:
                p.copy_((1.0 + 0.2 * torch.randn(p.shape, generator=gen)) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import transformers
    from transformers import (
        AutoModel,
        AutoProcessor,
        CLIPConfig,
        CLIPModel,
        CLIPTokenizerFast,
    )

    out: Path = args.out
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "processor").mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)

    # -- processor files -------------------------------------------------------------------
    vocab, merges = tiny_bpe(WORDS)
    tmp = out / "processor"
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                    encoding="utf-8")
    tokenizer = CLIPTokenizerFast(vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt"),
                                  model_max_length=77)
    tokenizer.save_pretrained(str(tmp))
    # The legacy CLIPFeatureExtractor form (int sizes), as CLIP processor folders of that era ship it.
    (tmp / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": IMAGE_SIZE, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD,
        "resample": 3, "size": IMAGE_SIZE}, indent=2) + "\n", encoding="utf-8")

    # -- model files -----------------------------------------------------------------------
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "gelu"},
        vision_config={"image_size": IMAGE_SIZE, "patch_size": 8, "hidden_size": 48, "intermediate_size": 96,
                       "num_hidden_layers": 2, "num_attention_heads": 3, "hidden_act": "gelu"},
        projection_dim=24)
    model = CLIPModel(config).eval()
    randomize(model, gen)
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    # The laion repository also holds its model's config.json, which AutoProcessor reads to pick
    # CLIPProcessor; the pack never reads it (and does not download it).
    (out / "processor" / "config.json").write_text((out / "model" / "config.json").read_text(encoding="utf-8"),
                                                  encoding="utf-8")

    # -- the reference, exactly as published -----------------------------------------------
    processor = AutoProcessor.from_pretrained(str(out / "processor"))
    ref = AutoModel.from_pretrained(str(out / "model")).eval()

    rng = np.random.default_rng(SEED)
    parity = rng.integers(0, 256, size=(PARITY_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    resize = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in RESIZE_SHAPES]

    def calc_scores(prompt: str, images: list[Image.Image]) -> tuple[list[float], list[float], list[int]]:
        image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = ref.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = ref.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores = ref.logit_scale.exp() * (text_embs @ image_embs.T)[0]
            probs = torch.softmax(scores, dim=-1)
        return scores.tolist(), probs.tolist(), text_inputs["input_ids"][0].tolist()

    parity_pil = [Image.fromarray(a) for a in parity]
    resize_pil = [Image.fromarray(a) for a in resize]
    golden: dict = {"prompts": [], "input_ids": [], "parity_scores": [], "parity_probs": [], "resize_scores": []}
    for prompt in PROMPTS:
        golden["prompts"].append(prompt)
        if not prompt:
            golden["input_ids"].append(processor(text=prompt, return_tensors="pt")["input_ids"][0].tolist())
            golden["parity_scores"].append(None)
            golden["parity_probs"].append(None)
            golden["resize_scores"].append(None)
            continue
        s, p, ids = calc_scores(prompt, parity_pil)
        golden["input_ids"].append(ids)
        golden["parity_scores"].append(s)
        golden["parity_probs"].append(p)
        golden["resize_scores"].append([calc_scores(prompt, [im])[0][0] for im in resize_pil])

    tensors = {"parity": torch.from_numpy(parity.copy())}
    for j, a in enumerate(resize):
        tensors[f"resize_{j}"] = torch.from_numpy(a.copy())
        tensors[f"reference_pixels_resize_{j}"] = processor(images=[resize_pil[j]], return_tensors="pt")[
            "pixel_values"][0].float().contiguous()
    save_file(tensors, str(out / "images.safetensors"))
    golden.update({
        "image_size": IMAGE_SIZE,
        "resize_shapes": [list(s) for s in RESIZE_SHAPES],
        "logit_scale_exp": float(ref.logit_scale.detach().exp()),
        "vocab_size": len(vocab),
        "state_dict_keys": sorted(ref.state_dict().keys()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__,
                     "Pillow": Image.__version__},
    })
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
