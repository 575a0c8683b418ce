#!/usr/bin/env python
"""Verifier cost, side by side: weights at the official sizes, and CPU throughput with tiny weights.

Run from the repository root: ``python bench/verifiers.py`` (``--quick`` for the tests).
No weights are downloaded. Two tables, printed in one run:

1. The official architectures, built on the meta device (no memory, no files): parameter
   count and the memory their weights take at fp16 (2 bytes a parameter; activations come on
   top and grow with the batch). CLIPScore and Aesthetic share one CLIP ViT-L/14.
2. Throughput on the CPU at 224 px: every verifier built with TINY random weights in its real
   architecture code (2 layers, narrow widths, 224 px input with 32 px patches where the
   model takes the image size from its weights; DINOv2 keeps its 14 px patches and scores the
   early and the final image), scoring a batch of ``--batch`` random 224x224 images against
   one prompt through the pack's ``score`` (preprocessing included, prompt embedding cached
   as in a search). ``--repeats`` rounds after one warm-up, every verifier once per round:
   median seconds, images per second, and the median over rounds of its time / CLIPScore's. With tiny weights this measures the
   per-image overhead of each verifier's pipeline (resizing, tokenising, two towers, heads),
   not the cost of the real models: that scales with the first table.

3. The chat-VLM verifiers (VQAScore, LLM grader) per image, against CLIPScore, at 224 px and at
   ``--native`` px: forward passes, vision-tower patches, image tokens and whole-sequence
   tokens, on a tiny random Qwen2.5-VL with the official processor's limits (token counts of
   the image are the real model's; prompt and template tokens are the tiny test tokenizer's,
   more than Qwen's own), and the time of one image with tiny weights over CLIPScore's.

The last line is one JSON object with all three tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

IMAGEREWARD_VOCAB = REPO / "tests" / "fixtures" / "imagereward" / "vocab.txt"
PICKSCORE_PROCESSOR = REPO / "tests" / "fixtures" / "pickscore" / "processor"
TINY_CLIP_224 = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


# -- official sizes (meta device) --------------------------------------------------------------

def official_sizes() -> list[dict]:
    import open_clip
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

    from verifiers.aesthetic import AestheticMLP
    from verifiers.imagereward import HeadDims, ImageRewardModel, TextDims, VisionDims

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    rows = []
    with torch.device("meta"):
        clip_l = count(open_clip.create_model("ViT-L-14-quickgelu", pretrained=None, device="meta"))
        clip_h = count(open_clip.create_model("ViT-H-14", pretrained=None, device="meta"))
        head = count(AestheticMLP(768))
        ir = count(ImageRewardModel(
            VisionDims(width=1024, depth=24, heads=16, patch_size=16, image_size=224, mlp_hidden=4096),
            TextDims(hidden=768, layers=12, heads=12, intermediate=3072, vocab_size=30524, max_positions=512,
                     layer_norm_eps=1e-12, hidden_act="gelu", encoder_width=1024),
            HeadDims((768, 1024, 128, 64, 16, 1))))
        dino_s = count(Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6)))
        dino_b = count(Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)))
        pick = count(CLIPModel(CLIPConfig(
            text_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                         "num_attention_heads": 16, "vocab_size": 49408, "max_position_embeddings": 77},
            vision_config={"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                           "num_attention_heads": 16, "patch_size": 14, "image_size": 224},
            projection_dim=1024)))
    for name, params, note in (
            ("CLIPScore", clip_l, "OpenAI CLIP ViT-L/14"),
            ("Aesthetic", clip_l + head, "CLIP ViT-L/14 + MLP head (shares the CLIP with CLIPScore)"),
            ("ImageReward", ir, "BLIP ViT-L/16 + BERT-base with cross-attention + MLP"),
            ("PickScore", pick, "CLIP ViT-H/14 (transformers)"),
            ("HPSv2.1", clip_h, "open_clip ViT-H-14"),
            ("DINOv2-small", dino_s, "ViT-S/14"),
            ("DINOv2-base", dino_b, "ViT-B/14")):
        rows.append({"verifier": name, "params": params, "fp16_weights_gb": params * 2 / 1e9, "model": note})
    return rows


# -- tiny verifiers at 224 px ------------------------------------------------------------------

def tiny_verifiers(workdir: Path) -> dict:
    import open_clip
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

    from verifiers.aesthetic import AestheticMLP, AestheticVerifier
    from verifiers.clip import CLIPScoreVerifier, OpenCLIPModel
    from verifiers.dinov2 import DINOv2SelfSupervisedVerifier
    from verifiers.hpsv2 import HPSv2Verifier
    from verifiers.imagereward import (
        HeadDims,
        ImageRewardModel,
        ImageRewardVerifier,
        TextDims,
        VisionDims,
        load_tokenizer,
    )
    from verifiers.pickscore import PickScoreVerifier, read_preprocessor_config

    torch.manual_seed(0)
    cfg = workdir / "NSBenchCLIP-224.json"
    cfg.write_text(json.dumps(TINY_CLIP_224))
    if "NSBenchCLIP-224" not in open_clip.list_models():
        open_clip.add_model_config(cfg)
    clip = OpenCLIPModel(open_clip.create_model("NSBenchCLIP-224", pretrained=None),
                         open_clip.get_tokenizer("NSBenchCLIP-224"), "NSBenchCLIP-224")
    hps_model = open_clip.create_model("NSBenchCLIP-224", pretrained=None).eval()
    ir_model = ImageRewardModel(
        VisionDims(width=64, depth=2, heads=1, patch_size=32, image_size=224, mlp_hidden=128),
        TextDims(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=141, max_positions=64,
                 layer_norm_eps=1e-12, hidden_act="gelu", encoder_width=64),
        HeadDims((32, 48, 24, 12, 8, 1)))
    with torch.no_grad():  # the re-implementation leaves initialisation to the checkpoint
        for name, p in ir_model.named_parameters():
            p.copy_(torch.randn(p.shape) / p.shape[-1] ** 0.5 if p.ndim >= 2 else
                    torch.ones(p.shape) if name.endswith("weight") else torch.zeros(p.shape))
    dino = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=224, patch_size=14)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(PICKSCORE_PROCESSOR), local_files_only=True)
    pick = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"image_size": 224, "patch_size": 32, "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=32)).eval()
    processor = read_preprocessor_config(PICKSCORE_PROCESSOR / "preprocessor_config.json")
    processor.update(size=224, crop=(224, 224))
    return {
        "CLIPScore": CLIPScoreVerifier(clip),
        "Aesthetic": AestheticVerifier(clip, AestheticMLP(32).eval()),
        "ImageReward": ImageRewardVerifier(ir_model.eval(), load_tokenizer(IMAGEREWARD_VOCAB)),
        "PickScore": PickScoreVerifier(pick, tokenizer, processor),
        "HPSv2.1": HPSv2Verifier(hps_model, open_clip.get_tokenizer("NSBenchCLIP-224")),
        "DINOv2-small": DINOv2SelfSupervisedVerifier(dino),
    }


def throughput(verifiers: dict, batch: int, repeats: int) -> list[dict]:
    """Repeats are interleaved (every verifier once per round) so load from other processes hits all
    alike; the ratio to CLIPScore is the median of the per-round ratios."""
    images = torch.rand(batch, 224, 224, 3, generator=torch.Generator().manual_seed(1))
    early = torch.rand(batch, 224, 224, 3, generator=torch.Generator().manual_seed(2))
    prompt = "a photograph of an astronaut riding a horse on the moon"

    def run(v):
        kwargs = {"early": early} if v.early_level is not None else {}
        return v.score(images, prompt, **kwargs)

    for name, v in verifiers.items():  # warm-up (and the prompt embedding, cached as in a search)
        scores = run(v)
        assert scores.shape == (batch,) and torch.isfinite(scores).all(), name
    times: dict[str, list[float]] = {name: [] for name in verifiers}
    for _ in range(repeats):
        for name, v in verifiers.items():
            t0 = time.perf_counter()
            run(v)
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = statistics.median(t / c for t, c in zip(ts, times["CLIPScore"]))
        rows.append({"verifier": name, "seconds": med, "images_per_s": batch / med, "time_vs_clipscore": ratio})
    return rows


# -- chat VLM verifiers: forward passes and tokens per image -----------------------------------

# Qwen2.5-VL's published processor limits (preprocessor_config.json of Qwen/Qwen2.5-VL-*-Instruct):
# 14 px patches merged 2 x 2 into one token, between 3136 and 12845056 pixels per image.
QWEN25_PIXELS = (3136, 12845056)
CLIP_L14_TOKENS = (224 // 14) ** 2 + 1  # CLIP ViT-L/14 sees every image at 224 px: 256 patches + CLS


def vlm_costs(workdir: Path, native: int, clip_verifier, repeats: int = 1) -> list[dict]:
    """Per image: forward passes, image tokens and whole-sequence tokens of VQAScore and the LLM
    grader on a tiny random Qwen2.5-VL with the official processor limits, at 224 px and at
    ``native`` px (square), against CLIPScore (one image-tower pass of 257 tokens, text cached);
    seconds with tiny weights, as a ratio to the tiny CLIPScore on the same image (median of
    ``repeats`` interleaved rounds)."""
    from tests.vlm_fixtures import write_checkpoint
    from verifiers.vlm import LLMGraderVerifier, VQAScoreVerifier, load_vlm

    folder = write_checkpoint(workdir / "qwen2_5_vl", "qwen2_5_vl")
    model, processor = load_vlm(folder, torch.float32)
    low, high = QWEN25_PIXELS
    processor.image_processor.size = {"shortest_edge": low, "longest_edge": high}
    prompt = "a photograph of an astronaut riding a horse on the moon"
    verifiers = {"VQAScore": VQAScoreVerifier(model, processor), "LLM grader": LLMGraderVerifier(model, processor)}
    rows = []
    for size in (224, native):
        image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(3))
        for v in (clip_verifier, *verifiers.values()):
            v.score(image, prompt)  # warm-up (CLIPScore's prompt embedding is cached, as in a search)
        passes = {name: v.forward_passes for name, v in verifiers.items()}
        ratios: dict[str, list[float]] = {name: [] for name in verifiers}
        for _ in range(max(1, repeats)):  # interleaved rounds, median of the per-round ratios
            t0 = time.perf_counter()
            clip_verifier.score(image, prompt)
            clip_s = time.perf_counter() - t0
            for name, v in verifiers.items():
                t0 = time.perf_counter()
                v.score(image, prompt)
                ratios[name].append((time.perf_counter() - t0) / clip_s)
        rows.append({"verifier": "CLIPScore", "image_px": size, "forward_passes": 1, "vision_patches": CLIP_L14_TOKENS,
                     "image_tokens": CLIP_L14_TOKENS, "tokens": CLIP_L14_TOKENS, "time_vs_clipscore": 1.0})
        for name, v in verifiers.items():
            per_image = (v.forward_passes - passes[name]) // max(1, repeats)
            rows.append({"verifier": name, "image_px": size, "forward_passes": per_image,
                         # The vision tower's patches; merged 2 x 2 into the language model's image tokens.
                         "vision_patches": per_image * v.last_image_tokens * processor.image_processor.merge_size ** 2,
                         "image_tokens": per_image * v.last_image_tokens, "tokens": per_image * v.last_tokens,
                         "time_vs_clipscore": statistics.median(ratios[name])})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--native", type=int, default=1024, help="native image size (px) for the VLM cost table")
    ap.add_argument("--quick", action="store_true", help="batch 2, 1 repeat, 448 px native (for the tests)")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.repeats, args.native = 2, 1, 448
    sizes = official_sizes()
    print("Official architectures (meta device): parameters and fp16 weight memory")
    print(f"{'verifier':<14}{'params':>14}{'fp16 GB':>10}  model")
    for r in sizes:
        print(f"{r['verifier']:<14}{r['params']:>14,}{r['fp16_weights_gb']:>10.2f}  {r['model']}")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        tiny = tiny_verifiers(Path(tmp))
        rows = throughput(tiny, args.batch, args.repeats)
        vlm_rows = vlm_costs(Path(tmp), args.native, tiny["CLIPScore"], min(args.repeats, 5))
    print(f"\nCPU throughput, tiny weights, 224 px, batch {args.batch}, {args.repeats} interleaved rounds "
          f"({torch.get_num_threads()} torch threads)")
    print(f"{'verifier':<14}{'s/batch':>10}{'img/s':>10}{'time / CLIPScore':>18}")
    for r in rows:
        print(f"{r['verifier']:<14}{r['seconds']:>10.4f}{r['images_per_s']:>10.1f}{r['time_vs_clipscore']:>18.2f}")
    print("\nVLM verifiers per image (Qwen2.5-VL processor limits; tokens: image + prompt + chat template of the "
          "tiny test tokenizer, summed over forward passes; time with tiny weights, one image, "
          f"median of {min(args.repeats, 5)} rounds)")
    print(f"{'verifier':<14}{'px':>6}{'passes':>8}{'patches':>9}{'image tok':>11}{'tokens':>9}{'time / CLIPScore':>18}")
    for r in vlm_rows:
        print(f"{r['verifier']:<14}{r['image_px']:>6}{r['forward_passes']:>8}{r['vision_patches']:>9}"
              f"{r['image_tokens']:>11}{r['tokens']:>9}{r['time_vs_clipscore']:>18.2f}")
    print(json.dumps({"official": sizes, "throughput": rows, "vlm": vlm_rows, "batch": args.batch,
                      "repeats": args.repeats, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
