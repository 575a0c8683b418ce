"""What the search algorithms need from a diffusion model, and what they return.

Conventions shared by every backend:
- A *state* is a latent at some noise level in the host's own representation (for ComfyUI,
  the "leftover" latent a sampler returns when stopped early). A fresh candidate is a
  Gaussian noise tensor; ``solve(None, noise, sigmas)`` starts from it at ``sigmas[0]``.
- Levels ``t`` are fractions of the model's noise schedule on its own time axis: 1 is pure
  noise (sigma_max), 0 is clean. They map to sigmas through the model's sampling object, so
  one setting means the same for noise-prediction and flow models.
- NFEs are counted as the paper counts them: denoiser evaluations per candidate, summed
  over candidates. Forward passes count model rows (CFG evaluates two per NFE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class BudgetError(ValueError):
    """The NFE budget cannot pay for even the first round of a search."""


class SearchBackend(Protocol):
    def schedule(self, search: bool = False) -> torch.Tensor:
        """Sigmas of a full run (``search=True``: the cheaper schedule used while searching)."""

    def level_sigma(self, t: float) -> float:
        """Sigma at schedule fraction ``t`` in [0, 1]."""

    def nfe(self, sigmas: torch.Tensor) -> int:
        """Denoiser evaluations one candidate costs to solve along ``sigmas``."""

    def solve(self, state: torch.Tensor | None, noise: torch.Tensor | None,
              sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Solve a batch from sigmas[0] to sigmas[-1]; returns (state, early x0 or None).

        The early x0-prediction is captured on the way for verifiers that ask for it."""

    def predict_x0(self, state: torch.Tensor, sigma: float) -> torch.Tensor:
        """The model's x0-prediction of ``state`` at ``sigma`` (one NFE per candidate)."""

    def renoise(self, state: torch.Tensor, sigma_from: float, sigma_to: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward-noise ``state`` from sigma_from up to sigma_to with the model's schedule.

        Returns (state, noise) ready for ``solve(state, noise, sigmas from sigma_to)``."""

    def score(self, latents: torch.Tensor, early: torch.Tensor | None = None) -> torch.Tensor:
        """Decode and verify clean latents: one float per candidate, higher is better."""


@dataclass
class SearchResult:
    best: torch.Tensor                      # [1, ...] winning clean latent (full schedule)
    best_score: float
    top: torch.Tensor                       # [k, ...] best k clean latents, best first
    top_scores: list[float]
    best_noise: torch.Tensor | None = None  # initial noise that regenerates ``best``
    best_index: int | None = None           # index in the seeded candidate batch, if any
    rounds: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    nfe: int = 0                            # NFEs planned by the algorithm (closed form)
    stopped_by_budget: bool = False


class Ledger:
    """Closed-form NFE bookkeeping and the budget rule: never start an unaffordable round."""

    def __init__(self, budget: int | None):
        self.budget = budget if budget and budget > 0 else None
        self.spent = 0

    def affords(self, cost: int) -> bool:
        return self.budget is None or self.spent + cost <= self.budget

    def pay(self, cost: int) -> None:
        self.spent += cost

    def require(self, cost: int, what: str) -> None:
        if not self.affords(cost):
            raise BudgetError(f"budget of {self.budget} NFEs cannot pay for {what} "
                              f"({cost} NFEs); raise 'budget' to at least {cost} or set it to 0 "
                              "for no limit")
