"""Evaluation of generated digits with the evaluator classifier (never the search's verifier)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg


def inception_score(probs: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from the evaluator's class probabilities [N, C]."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, F]."""
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def class_diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise distance between samples of the same class, averaged over classes."""
    per_class = []
    for c in labels.unique():
        f = features[labels == c].double()
        if f.shape[0] > 1:
            d = torch.cdist(f, f)
            n = f.shape[0]
            per_class.append(float(d.sum() / (n * (n - 1))))
    return float(np.mean(per_class)) if per_class else 0.0
