"""The paper's verifier ensemble: candidates ranked by their mean rank across verifiers.

For each verifier the candidates of one call are ranked 1 (worst) .. N (best), so a higher
rank is better; tied scores share the average of the ranks they span (the usual
"fractional ranking", so ties neither help nor hurt anyone). A candidate's ensemble score
is the unweighted mean of its ranks, or the weighted mean ``sum(w_i r_i) / sum(w_i)``
when weights are given.

Ranks only mean something inside one call: the same image gets a different score in a
different batch. Search code that compares candidates across rounds must therefore keep
the component scores (``component_scores``) and re-rank the union with ``mean_rank``
(``relative_scores`` is True to flag this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Condition, Verifier, VerifierError


def fractional_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of a 1-d tensor, ascending (highest score -> N); ties get their mean rank."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if not torch.isfinite(scores).all():
        raise VerifierError("cannot rank non-finite scores")
    n = scores.numel()
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty(n, dtype=torch.float64)
    start = 0
    while start < n:
        end = start
        while end + 1 < n and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        # positions start..end hold equal scores: all get the mean of ranks start+1..end+1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def mean_rank(score_lists: Sequence[Sequence[float]] | torch.Tensor,
              weights: Sequence[float] | None = None) -> torch.Tensor:
    """Mean (or weighted mean) rank of each candidate over several verifiers' scores.

    ``score_lists`` is [V][N]: V verifiers' scores of the same N candidates. Returns a
    float64 tensor [N]; higher is better.
    """
    rows = [torch.as_tensor(s, dtype=torch.float64).flatten() for s in score_lists]
    if not rows:
        raise VerifierError("mean_rank needs at least one list of scores")
    n = rows[0].numel()
    if any(r.numel() != n for r in rows):
        raise VerifierError(f"every verifier must score the same candidates; got lengths {[r.numel() for r in rows]}")
    if weights is None:
        w = torch.ones(len(rows), dtype=torch.float64)
    else:
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        if w.numel() != len(rows):
            raise VerifierError(f"{w.numel()} weights for {len(rows)} verifiers")
        if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
            raise VerifierError("ensemble weights must be finite, non-negative and not all zero")
    ranks = torch.stack([fractional_ranks(r) for r in rows])  # [V, N]
    return (w[:, None] * ranks).sum(dim=0) / w.sum()


def _member_score(verifier: Verifier, images: torch.Tensor, condition, early) -> torch.Tensor:
    """One member's scores [B]; an image verifier given videos [B, T, H, W, C] scores the mean
    over their frames."""
    if images.ndim != 5 or getattr(verifier, "scores_videos", False):
        return verifier.score(images, condition, early)
    b, t = images.shape[:2]
    flat_early = early.reshape(b * t, *early.shape[2:]) if early is not None else None
    return verifier.score(images.reshape(b * t, *images.shape[2:]), condition, flat_early).reshape(b, t).mean(1)


class EnsembleVerifier(Verifier):
    """Mean rank of the candidates under several verifiers (see the module docstring)."""

    name = "ensemble"
    relative_scores = True
    # Ranks need the whole candidate set at once: callers must not chunk an ensemble; it
    # chunks each member by the member's own max_batch.
    max_batch = 1 << 30

    def __init__(self, verifiers: Sequence[Verifier], weights: Sequence[float] | None = None):
        self.verifiers = [v for v in verifiers if v is not None]
        if len(self.verifiers) < 2:
            raise VerifierError("an ensemble needs at least two verifiers")
        if any(getattr(v, "relative_scores", False) for v in self.verifiers):
            raise VerifierError("an ensemble cannot contain another ensemble (ranks of ranks are not the paper's "
                                "rule); list all the verifiers in one ensemble")
        self.weights = None if weights is None else [float(w) for w in weights]
        if self.weights is not None:
            mean_rank([[0.0]] * len(self.verifiers), self.weights)  # validates the weights
        levels = {v.early_level for v in self.verifiers if v.early_level is not None}
        if len(levels) > 1:
            raise VerifierError(f"the ensemble's verifiers need the early x0-prediction at different levels "
                                f"{sorted(levels)}; use one level for all")
        self.early_level = levels.pop() if levels else None
        self.name = "ensemble(" + ", ".join(v.name for v in self.verifiers) + ")"
        # With a video verifier among the members the ensemble takes whole videos [B, T, H, W, C]
        # and gives its image members every frame (the mean of their frame scores).
        self.scores_videos = any(getattr(v, "scores_videos", False) for v in self.verifiers)

    def component_scores(self, images: torch.Tensor, condition: Condition | str | None = None,
                         early: torch.Tensor | None = None) -> torch.Tensor:
        """Raw scores [V, B] of every member verifier (each chunked by its max_batch)."""
        rows = []
        for v in self.verifiers:
            parts = []
            for start in range(0, images.shape[0], max(1, v.max_batch)):
                sl = slice(start, start + v.max_batch)
                member_early = early[sl] if (early is not None and v.early_level is not None) else None
                parts.append(_member_score(v, images[sl], condition, member_early))
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def combine(self, components: torch.Tensor) -> torch.Tensor:
        return mean_rank(components, self.weights).float()

    def _score(self, images, condition: Condition, early):
        return self.combine(self.component_scores(images, condition, early))
