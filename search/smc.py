"""Sequential Monte Carlo pieces for particle steering: potentials, ESS, systematic resampling.

Feynman-Kac steering (Singhal et al. 2025, arXiv 2501.06848) tilts a diffusion sampler toward
high verifier rewards: particles are advanced with stochastic steps; at resampling points each
particle's weight is multiplied by a potential G_t = exp(lambda * f(rewards along its lineage)),
and the particles are resampled in proportion to their weights when the weights grow uneven.
Everything here works on log-weights, so large lambdas and -inf rewards (diverged samples)
stay finite where they should.
"""

from __future__ import annotations

import math

import torch

POTENTIALS = ("max", "sum", "difference")


def log_potential(kind: str, history: torch.Tensor, lmbda: float) -> torch.Tensor:
    """log G_t of every particle from its rewards so far, ``history`` [K, t] (oldest first).

    - ``max``: lambda * the best reward of the lineage;
    - ``sum``: lambda * the sum of the lineage's rewards;
    - ``difference``: lambda * (current reward - previous reward), the previous of the first
      round being 0, so the product over rounds telescopes to exp(lambda * last reward).
    """
    current = history[:, -1]
    if kind == "max":
        value = history.max(dim=1).values
    elif kind == "sum":
        value = history.sum(dim=1)
    elif kind == "difference":
        value = current - (history[:, -2] if history.shape[1] > 1 else torch.zeros_like(current))
    else:
        raise ValueError(f"potential must be one of {', '.join(POTENTIALS)}, got {kind!r}")
    value = torch.where(torch.isfinite(current), value, torch.full_like(value, -math.inf))
    # lambda = 0 is the flat potential (plain sampling), also for a diverged particle's -inf.
    return torch.zeros_like(value) if lmbda == 0 else lmbda * value


def normalized(log_w: torch.Tensor) -> torch.Tensor:
    """Weights summing to one; every particle at -inf (all diverged) gives uniform weights."""
    if not torch.isfinite(log_w).any():
        return torch.full_like(log_w, 1.0 / log_w.numel())
    return torch.softmax(log_w.double(), dim=0).to(log_w.dtype)


def effective_sample_size(log_w: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2: K for equal weights, 1 when one particle holds all the weight."""
    w = normalized(log_w).double()
    return float(1.0 / (w * w).sum())


def systematic_resample(log_w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of K particles drawn by systematic resampling: one uniform offset u, positions
    (u + i) / K, each taken by the particle whose cumulative weight first exceeds it. Particle
    j is copied floor(K w_j) or ceil(K w_j) times (equal weights: every particle exactly once),
    the lowest-variance of the standard schemes."""
    k = log_w.numel()
    w = normalized(log_w).double()
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    positions = (u + torch.arange(k, dtype=torch.float64)) / k
    cumulative = torch.cumsum(w, dim=0)
    cumulative[-1] = 1.0  # rounding must not leave the last position without a particle
    return torch.searchsorted(cumulative, positions, right=True).clamp(max=k - 1)


__all__ = ["POTENTIALS", "effective_sample_size", "log_potential", "normalized", "systematic_resample"]
