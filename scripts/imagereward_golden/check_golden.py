"""Compare the pack's ImageReward with a golden folder written by make_golden.py.

Runs in the PACK's environment (no `image-reward` package needed):

    .venv/bin/python scripts/imagereward_golden/check_golden.py tests/fixtures/imagereward
    .venv/bin/python scripts/imagereward_golden/check_golden.py /tmp/ir_full --device cuda

Prints the largest score differences (images at the model's size, then the resize path with
the default float resampling and with ``emulate_pil``), the pixel differences of the resize
path, and batched vs one-by-one timings. Exits non-zero when the at-size parity exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import load_file  # noqa: E402

from verifiers.imagereward import CLIP_STD, ImageRewardVerifier  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args()
    d: Path = args.folder
    dtype = getattr(torch, args.dtype)
    golden = json.loads((d / "golden.json").read_text(encoding="utf-8"))
    images = load_file(str(d / "images.safetensors"))

    t0 = time.perf_counter()
    verifier = ImageRewardVerifier.from_files(d / "ImageReward.pt", d / "med_config.json", d,
                                              device=args.device, dtype=dtype)
    pil = ImageRewardVerifier.from_files(d / "ImageReward.pt", d / "med_config.json", d,
                                         device=args.device, dtype=dtype, emulate_pil=True)
    print(f"loaded twice in {time.perf_counter() - t0:.1f} s; image size {verifier.image_size}, "
          f"ViT {verifier.model.vision_dims}, text {verifier.model.text_dims}")

    batch = images["parity"].float() / 255.0
    parity = 0.0
    for prompt, expected in zip(golden["prompts"], golden["parity_scores"]):
        got = verifier.score(batch, prompt)
        parity = max(parity, (got - torch.tensor(expected)).abs().max().item())
    print(f"at-size parity (batch of {batch.shape[0]}): max |pack - package| = {parity:.3g}")

    for name, v in (("float resampling", verifier), ("emulate_pil", pil)):
        worst_score, worst_px, mean_px = 0.0, 0.0, 0.0
        for j in range(len(golden["resize_shapes"])):
            img = images[f"resize_{j}"].float()[None] / 255.0
            diff = (v.preprocess(img)[0].float().cpu() - images[f"package_pixels_resize_{j}"]).abs()
            diff = diff * torch.tensor(CLIP_STD).view(3, 1, 1) * 255.0  # in 8-bit levels
            worst_px, mean_px = max(worst_px, diff.max().item()), max(mean_px, diff.mean().item())
            for i, prompt in enumerate(golden["prompts"]):
                worst_score = max(worst_score, abs(v.score(img, prompt).item() - golden["resize_scores"][i][j]))
        print(f"resize path, {name}: pixels max {worst_px:.2f} / mean {mean_px:.3f} 8-bit levels; "
              f"scores max |diff| {worst_score:.3g} (shapes {golden['resize_shapes']})")

    prompt = golden["prompts"][0]
    for _rep in range(2):  # the second round is timed warm
        t0 = time.perf_counter()
        batched = verifier.score(batch, prompt)
        t1 = time.perf_counter()
        single = torch.cat([verifier.score(batch[i:i + 1], prompt) for i in range(batch.shape[0])])
        t2 = time.perf_counter()
    print(f"batched {t1 - t0:.3f} s vs one-by-one {t2 - t1:.3f} s for {batch.shape[0]} images; "
          f"max |batched - single| = {(batched - single).abs().max().item():.3g}")
    return 0 if parity < 1e-4 or dtype != torch.float32 else 1


if __name__ == "__main__":
    sys.exit(main())
