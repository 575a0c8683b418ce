"""Draw the pack's registry icon, docs/icon.png (256x256 PNG, a few KB).

A grid of candidate noises, grey static, with one cell (the search's pick) resolved into a
clean blob and outlined. Deterministic: the same file on every run.

    .venv/bin/python scripts/make_icon.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
GRID = 4
MARGIN = 20
GAP = 8
BEST = (1, 2)  # (row, column) of the outlined winner
OUT = Path(__file__).resolve().parents[1] / "docs" / "icon.png"


def main() -> Path:
    rng = np.random.default_rng(2501)
    img = Image.new("RGB", (SIZE, SIZE), (24, 26, 33))
    draw = ImageDraw.Draw(img)
    cell = (SIZE - 2 * MARGIN - (GRID - 1) * GAP) // GRID
    yy, xx = np.mgrid[0:cell, 0:cell] / (cell - 1) - 0.5
    blob = np.exp(-(xx**2 + yy**2) / 0.05)  # the denoised candidate
    for r in range(GRID):
        for c in range(GRID):
            x0 = MARGIN + c * (cell + GAP)
            y0 = MARGIN + r * (cell + GAP)
            noise = rng.standard_normal((cell // 4, cell // 4))
            noise = np.kron(noise, np.ones((4, 4)))  # chunky pixels stay legible when small
            if (r, c) == BEST:
                gray = 0.15 * noise + blob
                rgb = np.stack([0.35 + 0.6 * gray, 0.55 + 0.45 * gray, 0.95 * np.ones_like(gray)], -1)
            else:
                gray = 0.5 + 0.18 * noise
                rgb = np.stack([gray, gray, gray * 1.05], -1)
            tile = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
            img.paste(Image.fromarray(tile, "RGB"), (x0, y0))
            if (r, c) == BEST:
                draw.rectangle([x0 - 4, y0 - 4, x0 + cell + 3, y0 + cell + 3], outline=(255, 196, 61), width=4)
    img = img.quantize(colors=64, dither=Image.Dither.NONE)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    img.save(OUT, optimize=True)
    return OUT


if __name__ == "__main__":
    path = main()
    print(f"{path} ({path.stat().st_size} bytes)")
