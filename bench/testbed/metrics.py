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


# ---------------------------------------------------------------- bootstrap confidence intervals
#
# Percentile bootstrap over samples. The demo's samples are stratified (the same number per
# class), so every resample draws, within each class, as many samples with replacement as the
# class has: set-level metrics (IS, Frechet distance, per-class diversity) then see resamples of
# the design they were computed on. Every metric of every row is computed on the SAME index
# resamples (one fixed seed), so the differences between two rows of the same samples (sample b
# is the same noise and class in every row) are paired: a difference's interval comes from the
# differences resample by resample.

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def stratified_resamples(labels: torch.Tensor, n: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> torch.Tensor:
    """[n, N] indices into the samples: per resample and class, that class's samples drawn with
    replacement (as many as it has), so every resample keeps the per-class counts."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, len(labels), dtype=torch.int64)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        out[:, idx] = idx[torch.randint(0, len(idx), (n, len(idx)), generator=gen)]
    return out


def inception_scores(probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """IS of every resample: probs [N, C], idx [n, N] -> [n]."""
    p = probs.double().clamp_min(1e-12)[idx]  # [n, N, C]
    marginal = p.mean(1, keepdim=True)
    return torch.exp((p * (p.log() - marginal.log())).sum(-1).mean(-1))


def frechet_distances(features: torch.Tensor, reference: torch.Tensor, idx: torch.Tensor,
                      chunk: int = 250) -> torch.Tensor:
    """Frechet distance to the (fixed) reference set of every resample: features [N, F],
    idx [n, N] -> [n]. tr sqrt(C_a C_r) = sum sqrt(eig(R C_a R)) with R = sqrt(C_r), computed once."""
    r = reference.double()
    mu_r, cov_r = r.mean(0), torch.cov(r.T)
    w, v = torch.linalg.eigh(cov_r)
    root_r = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    f = features.double()
    out = []
    for part in idx.split(chunk):
        a = f[part]  # [m, N, F]
        mu = a.mean(1)
        centred = a - mu[:, None]
        cov = centred.transpose(1, 2) @ centred / (a.shape[1] - 1)
        tr_cross = torch.linalg.eigvalsh(root_r @ cov @ root_r).clamp_min(0).sqrt().sum(-1)
        out.append((mu - mu_r).pow(2).sum(-1) + cov.diagonal(dim1=1, dim2=2).sum(-1) + cov_r.trace() - 2 * tr_cross)
    return torch.cat(out)


def class_diversities(features: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-class diversity of every resample: features [N, F], labels [N], idx [n, N] -> [n].

    Within a class, the mean distance over pairs of DIFFERENT samples of the resample, each pair
    counted with the product of the two samples' multiplicities; a sample drawn twice is not a
    pair with itself (its distance 0 would bias the resampled diversity downwards). Equal to
    `class_diversity` on the identity resample."""
    per_class = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < 2:
            continue
        f = features[members].double()
        dist = torch.cdist(f, f)  # [m, m], zero diagonal
        position = torch.full((len(labels),), -1, dtype=torch.int64)
        position[members] = torch.arange(len(members))
        counts = torch.zeros(idx.shape[0], len(members), dtype=torch.float64)
        counts.scatter_add_(1, position[idx[:, members]], torch.ones(idx.shape[0], len(members), dtype=torch.float64))
        pairs = counts.sum(1) ** 2 - (counts**2).sum(1)
        per_class.append(((counts @ dist) * counts).sum(1) / pairs.clamp_min(1))
    return torch.stack(per_class).mean(0) if per_class else torch.zeros(idx.shape[0], dtype=torch.float64)


def resampled_metrics(sample: dict, labels: torch.Tensor, reference: torch.Tensor, idx: torch.Tensor) -> dict:
    """Every table metric on every resample ``idx`` [n, N] (the identity resample gives the point
    estimates). ``sample`` holds per-sample arrays: "verifier" [N] (the verifier's score of the
    intended class), "probs" [N, C] (evaluator probabilities), "features" [N, F] (evaluator
    features)."""
    verifier = torch.as_tensor(sample["verifier"]).double()
    probs = torch.as_tensor(sample["probs"]).double()
    correct = (probs.argmax(-1) == labels).double()
    feats = torch.as_tensor(sample["features"]).double()
    return {"verifier_score": verifier[idx].mean(-1),
            "inception_score": inception_scores(probs, idx),
            "accuracy": correct[idx].mean(-1),
            "frechet_distance": frechet_distances(feats, reference, idx),
            "diversity": class_diversities(feats, labels, idx)}


def percentile_interval(values: torch.Tensor, confidence: float = CONFIDENCE, centre: float | None = None) -> list[float]:
    """[low, high] percentile interval of bootstrap values.

    With ``centre`` (the point estimate), the interval is shifted by the bootstrap's estimate of
    its own bias, centre - mean(values). Used for the Frechet distance only: a resample repeats
    samples (about 63% distinct), so its covariance is noisier and its FD higher than the point
    estimate's at the same n (the plug-in FD is biased upwards as n falls); unshifted, the
    interval can miss the point estimate altogether. The other metrics are means (verifier,
    accuracy), nearly unbiased (IS) or made duplicate-free (diversity), and are not shifted."""
    alpha = (1 - confidence) / 2
    v = values.double()
    shift = 0.0 if centre is None else float(centre) - float(v.mean())
    return [float(torch.quantile(v, alpha)) + shift, float(torch.quantile(v, 1 - alpha)) + shift]


SHIFTED = ("frechet_distance",)  # metrics whose intervals are bias-shifted (see percentile_interval)


def interval(metric: str, values: torch.Tensor, point: float, confidence: float = CONFIDENCE) -> list[float]:
    """The table's interval of ``metric``: percentile, bias-shifted for the metrics in SHIFTED."""
    return percentile_interval(values, confidence, point if metric in SHIFTED else None)
