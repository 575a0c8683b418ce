"""Which of a search's final candidates it returns: the selection rule.

- ``best``: the highest-scoring candidate (the paper's rule; what every search did before).
- ``tempered``: a candidate drawn in proportion to exp(lambda x reward) among the final
  candidates, from the search's seeded generator. lambda -> infinity is ``best``; lambda 0
  draws uniformly, which for random search is no search at all. The winner is then a sample of
  the reward-tilted distribution p(x) exp(lambda r(x)) / Z that Feynman-Kac steering targets,
  approximated by self-normalised importance sampling over the candidates: a lower lambda trades
  reward for fidelity to the model (less of the verifier's prototype, more of the model's
  variety). With top_k > 1 the others are drawn in turn without replacement (Plackett-Luce).
- ``threshold``: stop at the first candidate whose score reaches a value (arXiv 2512.08985):
  what a search would have spent after it is saved. The winner is the best candidate scored,
  which is that first one; a search that never reaches the value returns its best as usual.

Nothing here imports ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RULES = ("best", "tempered", "threshold")


@dataclass(frozen=True)
class Selection:
    rule: str = "best"
    lmbda: float = math.inf          # tempered: the inverse temperature
    threshold: float | None = None   # threshold: the score that stops the search

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"selection rule {self.rule!r} is not one of: {', '.join(RULES)}")
        if self.rule == "tempered" and not (self.lmbda >= 0):  # NaN too
            raise ValueError(f"lambda must be 0 or more for tempered selection, got {self.lmbda}")
        if self.rule == "threshold" and (self.threshold is None or not math.isfinite(self.threshold)):
            raise ValueError(f"threshold must be a finite score for threshold selection, got {self.threshold}")

    @property
    def keeps_all(self) -> bool:
        """Whether every final candidate must be kept to the end (a tempered draw needs them all)."""
        return self.rule == "tempered"

    def reached(self, values: torch.Tensor) -> bool:
        """Whether a candidate of ``values`` (comparable values of one round) stops the search."""
        return self.rule == "threshold" and bool((values >= self.threshold).any())

    def settings(self) -> dict:
        """How a report shows the rule."""
        if self.rule == "tempered":
            return {"rule": "tempered", "lambda": self.lmbda}
        if self.rule == "threshold":
            return {"rule": "threshold", "threshold": self.threshold}
        return {"rule": "best"}


BEST = Selection()


def tempered_order(values: torch.Tensor, lmbda: float, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` rows drawn without replacement, each in proportion to exp(lambda x value) among the
    rows not yet drawn (the first is the winner). Non-finite values are never drawn while a
    finite one is left; lambda infinite is the best-first order."""
    values = values.double()
    k = min(k, values.numel())
    if math.isinf(lmbda):
        return torch.sort(values, descending=True, stable=True).indices[:k]
    finite = torch.isfinite(values)
    # Centred on the best finite value, so exp never overflows however large lambda x value is.
    top = values[finite].max() if finite.any() else torch.zeros((), dtype=values.dtype)
    logits = torch.where(finite, lmbda * (values - top), torch.full_like(values, -math.inf))
    if not finite.any():
        logits = torch.zeros_like(values)
    rows, left = [], torch.ones_like(values, dtype=torch.bool)
    for _ in range(k):
        masked = torch.where(left, logits, torch.full_like(logits, -math.inf))
        if not torch.isfinite(masked).any():  # only diverged rows left: take them in order
            masked = torch.where(left, torch.zeros_like(logits), masked)
        p = torch.softmax(masked, 0)
        row = int(torch.multinomial(p, 1, generator=generator))
        rows.append(row)
        left[row] = False
    return torch.tensor(rows, dtype=torch.long)


__all__ = ["BEST", "RULES", "Selection", "tempered_order"]
