"""Compare the pack's PickScore with a golden folder written by make_golden.py.

Runs in the PACK's environment (transformers 5.x; no reference code needed):

    .venv/bin/python scripts/pickscore_golden/check_golden.py tests/fixtures/pickscore

Prints the largest score differences (images at the model's size, then the resize path with
the default float resampling and with ``emulate_pil``) and the largest pixel differences of
the resize path in 8-bit levels. Exits non-zero when the at-size parity exceeds 1e-4 relative.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import load_file  # noqa: E402

from verifiers.pickscore import PickScoreVerifier  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    d: Path = args.folder
    golden = json.loads((d / "golden.json").read_text(encoding="utf-8"))
    images = load_file(str(d / "images.safetensors"))
    batch = images["parity"].float() / 255.0
    worst_rel = 0.0
    for emulate in (False, True):
        v = PickScoreVerifier.from_folders(d / "model", d / "processor", emulate_pil=emulate)
        std = torch.tensor(v.processor["std"]).view(3, 1, 1)
        parity = resize = pixels = 0.0
        for prompt, expected, expected_resize in zip(golden["prompts"], golden["parity_scores"],
                                                     golden["resize_scores"]):
            if expected is None:
                continue
            got = v.score(batch, prompt)
            parity = max(parity, (got - torch.tensor(expected)).abs().max().item())
            worst_rel = max(worst_rel, ((got - torch.tensor(expected)).abs() / torch.tensor(expected).abs()).max().item())
            for j, want in enumerate(expected_resize):
                resize = max(resize, abs(v.score(images[f"resize_{j}"].float()[None] / 255.0, prompt).item() - want))
        for j in range(len(golden["resize_shapes"])):
            px = v.preprocess(images[f"resize_{j}"].float()[None] / 255.0)[0].float()
            pixels = max(pixels, ((px - images[f"reference_pixels_resize_{j}"]) * std * 255.0).abs().max().item())
        print(f"emulate_pil={emulate}: at-size max |pack - reference| = {parity:.3g} (scores ~{batch.shape[0]} "
              f"images x {sum(e is not None for e in golden['parity_scores'])} prompts); resize path scores "
              f"{resize:.3g}, pixels {pixels:.2f} 8-bit levels")
    return 0 if worst_rel < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
