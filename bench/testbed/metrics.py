"""Evaluation of generated digits with the evaluator classifier (never the search's verifier)."""

from __future__ import annotations

import numpy as np
import torch


def inception_score(probs: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from the evaluator's class probabilities [N, C]."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, F].

    tr sqrt(C_a C_b) is computed as the sum of sqrt(eig(R C_b R)) with R = sqrt(C_a): every
    matrix involved is symmetric positive semi-definite, so this stays stable when a
    covariance is singular (fewer samples than features), where scipy's sqrtm warns.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(cov_a)
    root_a = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    tr_cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_cross)


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
