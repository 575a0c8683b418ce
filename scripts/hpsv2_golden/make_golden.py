"""Build the HPS v2.1 golden fixture with the REFERENCE implementation (throwaway env only).

Run from the repository root inside the throwaway environment described in README.md:

    /tmp/refenv/bin/python scripts/hpsv2_golden/make_golden.py --out tests/fixtures/hpsv2

The reference is the ``hpsv2`` package (tgxs002/HPSv2) and its own scoring function
``hpsv2.img_score.score(images, prompt, cp=...)``: its bundled open_clip fork, its
``create_model_and_transforms(..., light_augmentation=True, output_dict=True, ...)`` (whose
``preprocess_val`` resizes the longer side and zero-pads), ``get_tokenizer('ViT-H-14')``,
``torch.load(cp)['state_dict']``, and ``diag(image_features @ text_features.T)``, one PIL
image at a time.

The package hard-codes ViT-H-14 with LAION weights (a 3.9 GB download) in
``initialize_model``; instead the model the function uses (``img_score.model_dict``) is made
by the package's own ``create_model_and_transforms`` with the same arguments, for a TINY
architecture registered through the fork's ``add_model_config`` (ViT-H-14's config with
shrunk widths and depths; the text tower keeps the full 49408-token vocabulary and 77-token
context, because the tokenizer's start/end ids are 49406/49407). Every weight is then
replaced by seeded unit-gain random values and saved as ``torch.save({"state_dict": ...})``,
the layout ``score`` reads, under the official name ``HPS_v2.1_compressed.pt``.

Writes ``HPS_v2.1_compressed.pt``, ``model_config.json`` (the tiny open_clip config),
``images.safetensors`` (seeded uint8 images: at the model's size, and other sizes for the
resize-and-pad path; plus the package's preprocessed pixels for those) and ``golden.json``
(prompts, token ids, scores, state-dict keys, versions).

This file must not be imported by the pack or its tests; it needs the ``hpsv2`` package.
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

SEED = 20250606
TINY = "NSTinyHPS-ViT-H-14"
IMAGE_SIZE = 64
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 2},
}
PARITY_IMAGES = 4
RESIZE_SHAPES = ((96, 80), (40, 72), (50, 60))  # (H, W): downscale tall, upscale wide, upscale tall
LONG = "a highly detailed oil painting of a red fox sitting in a snowy forest at dawn, soft light, " * 4
PROMPTS = [
    "a red cat sitting on a blue mat",
    "A Photograph of an astronaut riding a horse, highly detailed.",
    "zebra-striped teapot in the garden",
    # Past 77 tokens: truncated (end token kept) by the tokenizer, so these two score the same.
    LONG + "and a dog",
    LONG + "with mountains far away",
]


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(float(np.log(100.0)))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))
            elif ".ln_" in f".{name}" and name.endswith("weight"):  # LayerNorms: ln_1, ln_2, ln_pre, ln_post, ln_final
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    import hpsv2
    from hpsv2 import img_score
    from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer
    from hpsv2.src.open_clip.factory import add_model_config

    (out / "model_config.json").write_text(json.dumps(TINY_CONFIG, indent=2) + "\n", encoding="utf-8")
    cfg_dir = out / "_cfg"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / f"{TINY}.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    add_model_config(cfg_dir / f"{TINY}.json")

    # The same arguments img_score.initialize_model passes, for the tiny architecture.
    model, _, preprocess_val = create_model_and_transforms(
        TINY, None, precision="amp", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False,
        with_region_predictor=False)
    randomize(model, torch.Generator().manual_seed(SEED))
    ckpt = out / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    for f in cfg_dir.iterdir():
        f.unlink()
    cfg_dir.rmdir()

    img_score.model_dict["model"] = model
    img_score.model_dict["preprocess_val"] = preprocess_val
    tokenizer = get_tokenizer("ViT-H-14")  # what score() uses

    rng = np.random.default_rng(SEED)
    parity = rng.integers(0, 256, size=(PARITY_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    resize = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in RESIZE_SHAPES]
    parity_pil = [Image.fromarray(a) for a in parity]
    resize_pil = [Image.fromarray(a) for a in resize]

    golden: dict = {"prompts": PROMPTS, "input_ids": [], "parity_scores": [], "resize_scores": []}
    for prompt in PROMPTS:
        golden["input_ids"].append(tokenizer([prompt])[0].tolist())
        golden["parity_scores"].append([float(s) for s in img_score.score(parity_pil, prompt, cp=str(ckpt))])
        golden["resize_scores"].append([float(s) for s in img_score.score(resize_pil, prompt, cp=str(ckpt))])

    tensors = {"parity": torch.from_numpy(parity.copy())}
    for j, a in enumerate(resize):
        tensors[f"resize_{j}"] = torch.from_numpy(a.copy())
        tensors[f"reference_pixels_resize_{j}"] = preprocess_val(resize_pil[j]).float().contiguous()
    save_file(tensors, str(out / "images.safetensors"))
    import hpsv2.src.open_clip as fork

    golden.update({
        "architecture": TINY,
        "image_size": IMAGE_SIZE,
        "resize_shapes": [list(s) for s in RESIZE_SHAPES],
        "state_dict_keys": sorted(model.state_dict().keys()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "Pillow": Image.__version__, "hpsv2": getattr(hpsv2, "__version__", "1.2.0"),
                     "open_clip fork": getattr(fork, "__version__", "?")},
    })
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
