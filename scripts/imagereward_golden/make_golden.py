"""Build the ImageReward golden fixture with the REAL `image-reward` package (throwaway env only).

Run it from the repository root inside the throwaway environment described in README.md:

    /tmp/irenv/bin/python scripts/imagereward_golden/make_golden.py --out tests/fixtures/imagereward

What it does:
1. builds a TINY ImageReward with the package's own classes: ``ImageReward.ImageReward`` is
   constructed as usual, with three monkeypatches because the package hard-codes ViT-L and
   bert-base-uncased: ``create_vit`` returns the package's ``VisionTransformer`` at tiny sizes,
   ``BertTokenizer.from_pretrained('bert-base-uncased')`` (network) reads a tiny offline vocab
   instead (the package's ``init_tokenizer`` still adds [DEC] / [ENC] itself), and ``MLP(768)``
   is the package's MLP with its five Linear layers replaced by tiny ones. The tiny
   med_config.json is read by the package's ``BertConfig.from_json_file`` as usual;
2. fills every weight with seeded random values (unit-gain, so attention, masking and the
   head all matter), and saves ``ImageReward.pt`` (``torch.save(model.state_dict())``, the
   official format), ``med_config.json`` and ``vocab.txt``;
3. makes seeded uint8 test images: 4 at the model's input size (the package's Resize and
   CenterCrop are then the identity, so scores can match to float precision) and a few of
   other sizes for the resize path;
4. scores every (prompt, image) pair with the package's own path, one PIL image at a time
   (``ImageReward.score``), cross-checks with ``inference_rank``, records the package's
   preprocessed pixels for the resize images, the token ids, and writes ``golden.json``.

``--full-size DIR`` instead builds the package's UNPATCHED architecture (ViT-L/16 at 224 px,
BERT-base with cross-attention, MLP 768-1024-128-64-16-1; ~1.8 GB of random weights) with a
synthetic 30522-entry vocab, for a one-off check at the real sizes with
``scripts/imagereward_golden/check_golden.py DIR`` (too big to keep as a fixture).

This file must not be imported by the pack or its tests; it needs the `image-reward` package.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

SEED = 20250117
# Tiny sizes. ViT: width 128 so that heads = width // 64 = 2 (BLIP's 64-dim heads).
VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 128, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
MLP_SIZES = (32, 48, 24, 12, 8, 1)  # the package's 768-1024-128-64-16-1, shrunk
PARITY_IMAGES = 4
RESIZE_SHAPES = ((48, 40), (40, 72), (20, 26))  # (H, W): downscale tall, downscale wide, upscale
FULL_RESIZE_SHAPES = ((512, 512), (768, 512), (180, 240))

WORDS = """
a an the of on in at with and under over near far away very small big large tall
red blue green yellow white black orange purple bright dark golden
cat dog horse bird birds fish tree trees house roof river water sky sun sunset
mountain mountains forest city street car road boat sea beach flower flowers garden
astronaut riding photo portrait painting drawing picture style detailed highly realistic
sitting standing flying running man woman child girl boy old young
mat table chair window door light night day morning evening background foreground
in front behind top bottom left right corner center two three many
oil watercolor digital art by artist cinematic lighting sharp focus
""".split()
PIECES = ["##s", "##es", "##ed", "##ing", "##ly", "##er", "##graph", "##ful", "##y", "##n"]
PUNCT = list(".,!?;:-'\"()")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

LONG_PREFIX = ("a very small house near the river with green trees and a red roof under a bright blue sky "
               "at sunset with birds flying over the water and mountains far away in the background")
PROMPTS = [
    "a red cat sitting on a blue mat",
    "A Photograph of an astronaut riding a horse, highly detailed.",
    "zebra-striped teapot in the garden",
    # 45+ tokens: the package truncates at 35 (with [CLS] and [SEP]).
    LONG_PREFIX + ", sharp focus, cinematic lighting",
    # Same first 35 tokens as the previous prompt, different tail: same score in the package.
    LONG_PREFIX + " and a dog running on the beach at night",
]


def build_vocab() -> list[str]:
    seen: list[str] = []
    for tok in SPECIALS + WORDS + PIECES + PUNCT:
        if tok not in seen:
            seen.append(tok)
    return seen


def full_size_vocab() -> list[str]:
    """bert-base-uncased has 30522 entries; the test words plus fillers make the same size."""
    words = build_vocab()
    return words + [f"filler{i:05d}" for i in range(30522 - len(words))]


def official_med_config() -> dict:
    # The official med_config.json (BLIP's): BERT-base, cross-attention, vocab 30522 + 2.
    cfg = med_config(30524)
    cfg.update(hidden_size=768, intermediate_size=3072, max_position_embeddings=512, num_attention_heads=12,
               num_hidden_layers=12)
    return cfg


def med_config(vocab_size: int) -> dict:
    # The official file's keys, tiny values. encoder_width stays 768 as in the official file:
    # the package overrides it with the ViT width (BLIP_Pretrain), which the pack must do too.
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": MLP_SIZES[0],
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 64,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        "encoder_width": 768,
        "add_cross_attention": True,
    }


def patch_package(vocab_file: Path, tiny: bool = True):
    """Make the package build the model offline (tiny: with tiny ViT and MLP). Returns its module."""
    import importlib

    # The package's __init__ re-exports the class `ImageReward` over its submodule's name,
    # so the modules are taken from importlib rather than attribute access.
    ir_mod = importlib.import_module("ImageReward.ImageReward")
    blip_mod = importlib.import_module("ImageReward.models.BLIP.blip")
    pre_mod = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
    from ImageReward.models.BLIP.vit import VisionTransformer
    from transformers import BertTokenizer

    def tiny_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        enc = VisionTransformer(img_size=VIT["img_size"], patch_size=VIT["patch_size"],
                                embed_dim=VIT["embed_dim"], depth=VIT["depth"], num_heads=VIT["num_heads"],
                                mlp_ratio=VIT["mlp_ratio"], use_grad_checkpointing=False, ckpt_layer=0,
                                drop_path_rate=0.1)  # as the package's 'large' (inactive in eval)
        return enc, VIT["embed_dim"]

    class OfflineBertTokenizer(BertTokenizer):
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            assert name == "bert-base-uncased", name
            # bert-base-uncased's tokenizer_config.json: do_lower_case true, the defaults otherwise.
            return BertTokenizer(str(vocab_file), do_lower_case=True)

    package_mlp = ir_mod.MLP

    def tiny_mlp(input_size):
        mlp = package_mlp(MLP_SIZES[0])
        for i, idx in enumerate((0, 2, 4, 6, 7)):
            mlp.layers[idx] = torch.nn.Linear(MLP_SIZES[i], MLP_SIZES[i + 1])
        return mlp

    blip_mod.BertTokenizer = OfflineBertTokenizer
    if tiny:
        pre_mod.create_vit = tiny_vit
        ir_mod.MLP = tiny_mlp
    return ir_mod


def randomize(model: torch.nn.Module, gen: torch.Generator, tiny: bool = True) -> None:
    # Unit-gain linears at tiny sizes; the 24+12 layers at full size get a smaller gain so the
    # residual streams stay in a sane range.
    gain = 1.0 if tiny else 0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name.lower()) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embeddings" in name or name.endswith(("pos_embed", "cls_token")):
                p.copy_(0.7 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = math.prod(p.shape[1:])
                p.copy_(gain * torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def make_images(gen: torch.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field plus fine noise, uint8 [H, W, 3]."""
    coarse = torch.rand((1, 3, 4, 4), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    noisy = smooth[0].permute(1, 2, 0) + 0.25 * (torch.rand((h, w, 3), generator=gen) - 0.5)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/imagereward"))
    ap.add_argument("--full-size", type=Path, default=None, metavar="DIR",
                    help="write a full-size (ViT-L, ~1.8 GB) random checkpoint and its golden scores to DIR "
                         "instead of the tiny fixture")
    args = ap.parse_args()
    tiny = args.full_size is None
    out: Path = args.out if tiny else args.full_size
    out.mkdir(parents=True, exist_ok=True)

    vocab = build_vocab() if tiny else full_size_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cfg = med_config(len(vocab) + 2) if tiny else official_med_config()  # + [DEC] and [ENC]
    (out / "med_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    size = VIT["img_size"] if tiny else 224

    ir_mod = patch_package(out / "vocab.txt", tiny)
    torch.manual_seed(SEED)
    model = ir_mod.ImageReward(med_config=str(out / "med_config.json"), device="cpu")
    model.preprocess = ir_mod._transform(size)  # the package's transform (224 unless tiny)
    gen = torch.Generator().manual_seed(SEED)
    randomize(model, gen, tiny)
    model.eval()
    assert len(model.blip.tokenizer) == cfg["vocab_size"], (len(model.blip.tokenizer), cfg["vocab_size"])

    state = model.state_dict()
    torch.save(state, out / "ImageReward.pt")
    # Reload the saved file exactly as the package's load() does and use that model from here on.
    reloaded = ir_mod.ImageReward(med_config=str(out / "med_config.json"), device="cpu")
    reloaded.preprocess = ir_mod._transform(size)
    msg = reloaded.load_state_dict(torch.load(out / "ImageReward.pt", map_location="cpu", weights_only=True),
                                   strict=False)
    assert not msg.missing_keys and not msg.unexpected_keys, msg
    model = reloaded.eval()

    img_gen = torch.Generator().manual_seed(SEED + 1)
    parity = np.stack([make_images(img_gen, size, size) for _ in range(PARITY_IMAGES)])
    resize_shapes = RESIZE_SHAPES if tiny else FULL_RESIZE_SHAPES
    resize = [make_images(img_gen, h, w) for h, w in resize_shapes]

    tok = model.blip.tokenizer
    input_ids, attention_masks = [], []
    for p in PROMPTS:
        enc = tok(p, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        input_ids.append(enc.input_ids[0].tolist())
        attention_masks.append(enc.attention_mask[0].tolist())
    full_lengths = [len(tok(p)["input_ids"]) for p in PROMPTS]

    def score_all(images: list[np.ndarray]) -> list[list[float]]:
        table = []
        for p in PROMPTS:
            row = [float(model.score(p, Image.fromarray(a))) for a in images]
            _, ranked = model.inference_rank(p, [Image.fromarray(a) for a in images])
            assert np.allclose(row, ranked, atol=1e-6), (row, ranked)
            table.append(row)
        return table

    parity_scores = score_all(list(parity))
    resize_scores = score_all(resize)
    pixels = {f"package_pixels_resize_{i}": model.preprocess(Image.fromarray(a)).contiguous()
              for i, a in enumerate(resize)}

    tensors = {"parity": torch.from_numpy(parity).contiguous()}
    for i, a in enumerate(resize):
        tensors[f"resize_{i}"] = torch.from_numpy(a).contiguous()
    tensors.update(pixels)
    save_file(tensors, str(out / "images.safetensors"))
    (out / "images.safetensors").chmod(0o644)

    from importlib.metadata import version

    golden = {
        "about": "Scores of the REAL image-reward package on a tiny random checkpoint; "
                 "made by scripts/imagereward_golden/make_golden.py. Rows: prompts, columns: images.",
        "environment": {"python": platform.python_version(),
                        **{name: version(name) for name in ("image-reward", "torch", "torchvision",
                                                            "transformers", "timm", "pillow", "numpy")}},
        "seed": SEED,
        "vit": VIT if tiny else "the package's ViT-L/16 (create_vit('large', 224))",
        "mlp_sizes": list(MLP_SIZES) if tiny else [768, 1024, 128, 64, 16, 1],
        "image_size": size,
        "prompts": PROMPTS,
        "input_ids": input_ids,
        "attention_mask": attention_masks,
        "untruncated_token_counts": full_lengths,
        "enc_token_id": tok.enc_token_id,
        "bos_token_id": tok.convert_tokens_to_ids("[DEC]"),
        "parity_images": "images.safetensors:parity (uint8 [N, H, W, 3], already at the model's size)",
        "parity_scores": parity_scores,
        "resize_images": [f"images.safetensors:resize_{i} (uint8 {h}x{w})"
                          for i, (h, w) in enumerate(resize_shapes)],
        "resize_shapes": [list(s) for s in resize_shapes],
        "resize_scores": resize_scores,
        "state_dict_keys": list(state.keys()),
        "state_dict_shapes": {k: list(v.shape) for k, v in state.items()},
    }
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB), python {sys.version.split()[0]}")
    print("token counts:", full_lengths)
    for p, row in zip(PROMPTS, parity_scores):
        print(f"{p[:40]!r:44}", " ".join(f"{s:+.4f}" for s in row))


if __name__ == "__main__":
    main()
