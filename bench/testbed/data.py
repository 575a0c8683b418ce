"""sklearn's bundled 8x8 digits, upsampled to 16x16, and a fixed three-way split.

Three disjoint subsets keep the parts of the testbed honest: the denoiser, the verifier
classifier (what search optimises) and the evaluator classifier (what we report) never see
the same images, so search cannot win by memorising the evaluator's training data.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

SPLIT_SEED = 1234
# Fractions of the shuffled data set, in order; the evaluator takes the remainder.
SPLIT_FRACTIONS = {"denoiser": 0.6, "verifier_clf": 0.2}


@lru_cache(maxsize=1)
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # bundled with sklearn: no download

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8] in [0,1]
    # Bilinear upsampling gives smooth strokes; align_corners=False keeps the pixel grid centred.
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return x.squeeze(1).clamp(0.0, 1.0).contiguous(), torch.tensor(d.target, dtype=torch.int64)


def load_digits_16() -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images float32 [N,16,16] in [0,1], labels int64 [N]), N = 1797."""
    x, y = _load()
    return x.clone(), y.clone()


def splits() -> dict[str, torch.Tensor]:
    """Disjoint index sets {'denoiser' ~60%, 'verifier_clf' ~20%, 'evaluator_clf' ~20%}.

    Deterministic: a private generator with a fixed seed, independent of the global RNG.
    """
    n = len(_load()[1])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    a = round(n * SPLIT_FRACTIONS["denoiser"])
    b = a + round(n * SPLIT_FRACTIONS["verifier_clf"])
    return {
        "denoiser": perm[:a].sort().values,
        "verifier_clf": perm[a:b].sort().values,
        "evaluator_clf": perm[b:].sort().values,
    }
