"""Proposal distributions over initial noises."""

from __future__ import annotations

import math

import torch


def sphere_neighbours(pivot: torch.Tensor, n: int, angle_deg: float,
                      generator: torch.Generator) -> torch.Tensor:
    """``n`` points on the pivot's sphere at a fixed angle from it.

    candidate = |p| (cos(a) u + sin(a) w), u = p/|p|, w a random unit vector orthogonal to u.
    Every neighbour keeps the pivot's norm, so it stays a typical Gaussian sample, and its
    distance to the pivot is exactly 2 |p| sin(a/2). The paper's lambda (a step on the
    neighbourhood of the pivot) corresponds to cos(a) = t: a = arccos(t).
    """
    p = pivot.reshape(1, -1).float()
    norm = p.norm()
    u = p / norm
    w = torch.randn((n, p.shape[1]), generator=generator, dtype=torch.float32)
    w = w - (w @ u.T) * u
    # A draw parallel to the pivot (e.g. the same seed drew both) has no orthogonal part:
    # fall back to a fixed orthogonal direction rather than divide by zero.
    degenerate = w.norm(dim=1) < 1e-6 * math.sqrt(p.shape[1])
    if degenerate.any():
        e = torch.zeros_like(u)
        e[0, int(torch.argmin(u.abs()))] = 1.0
        e = e - (e @ u.T) * u
        w[degenerate] = e
    w = w / w.norm(dim=1, keepdim=True)
    a = math.radians(angle_deg)
    out = norm * (math.cos(a) * u + math.sin(a) * w)
    return out.reshape(n, *pivot.shape[1:]).to(pivot.dtype)

