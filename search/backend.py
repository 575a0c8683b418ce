"""What the search algorithms need from a diffusion model, and what they return.

Conventions shared by every backend:
- A *state* is a latent at some noise level in the host's own representation (for ComfyUI,
  the "leftover" latent a sampler returns when stopped early). A fresh candidate is a
  Gaussian noise tensor; ``solve(None, noise, sigmas, ids)`` starts from it at ``sigmas[0]``.
- Every candidate has an integer id, unique within one search. ``solve`` receives the ids
  of its rows so a stochastic sampler can draw each row's per-step noise from that row's
  own stream: results never depend on how rows are grouped into model calls.
- Levels ``t`` in [0, 1] are noise-to-signal levels on the rectified-flow time axis: the
  state at level t has the signal-to-noise ratio of ``(1 - t) x0 + t eps`` (noise-to-signal
  ratio ``t / (1 - t)``), whatever the model family. 1 is pure noise, 0 is clean.
- NFEs are counted as the paper counts them: denoiser evaluations per candidate, summed
  over candidates. Forward passes count model rows (CFG evaluates two per NFE).
- Scores are ``[N, V]`` tensors: V component scores per candidate (V = 1 for a plain
  verifier). Only ``compare`` turns them into values that can be ordered, and only among
  the rows it is given: a rank ensemble's value of a candidate depends on who it is
  ranked with, so an algorithm compares exactly the candidates it means to compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch


class BudgetError(ValueError):
    """The NFE budget cannot pay for even the first round of a search."""


class Scores(NamedTuple):
    values: torch.Tensor      # [N, V] component scores, higher is better in each
    images: Any = None        # whatever the backend decoded (for progress views); opaque here


class SearchBackend(Protocol):
    """What every algorithm may use. A backend of many problems (a latent batch, see
    search/lockstep.py) also takes ``problems=``, the problem of every row, in its row-wise
    methods (solve, advance, predict_x0, score) and ``problem`` in ``initial_noise``; the
    algorithms see one problem through a view and never pass them."""

    stochastic: bool  # the sampler injects per-step noise (each row's drawn from its id's stream)
    relative: bool    # compare() ranks the rows it is given (a rank ensemble): keep every candidate
    chunk: int | None  # rows one model call holds (a hint for progress rounds; results never depend on it)

    def schedule(self, search: bool = False) -> torch.Tensor:
        """Sigmas of a full run (``search=True``: the cheaper schedule used while searching)."""

    def level_sigma(self, t: float) -> float:
        """Sigma at noise level ``t`` in [0, 1] (see the module docstring)."""

    def sigma_level(self, sigma: float) -> float:
        """The inverse of ``level_sigma``: the noise level of ``sigma``."""

    def nfe(self, sigmas: torch.Tensor) -> int:
        """Denoiser evaluations one candidate costs in ``solve`` along ``sigmas``."""

    def solve(self, state: torch.Tensor | None, noise: torch.Tensor | None, sigmas: torch.Tensor,
              ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Solve a batch from sigmas[0] to sigmas[-1]; returns (state, early x0 or None).

        The early x0-prediction is captured on the way for verifiers that ask for it."""

    def advance(self, state: torch.Tensor | None, noise: torch.Tensor | None, sigmas: torch.Tensor,
                ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``solve`` that returns (state, the x0-prediction of the last denoiser call the sampler
        made on the way): what a verifier can judge mid-trajectory at no extra model call."""

    def initial_noise(self, ids: list[int]) -> torch.Tensor:
        """Initial noises of candidates ``ids`` beyond those a search was given: the stock noise
        of each id (for ComfyUI, the stock KSampler's noise at seed + id), so a sample that is a
        plain chain from one replays with stock nodes."""

    def resumable(self, sigmas: torch.Tensor, at: list[int]) -> bool:
        """Whether solving along ``sigmas`` in pieces split at step indices ``at`` (each piece
        continuing the last one's state under fresh ids) gives the run in one piece."""

    def predict_x0(self, state: torch.Tensor, sigma: float) -> torch.Tensor:
        """The model's x0-prediction of ``state`` at ``sigma`` (one NFE per candidate)."""

    def renoise(self, state: torch.Tensor, sigma_from: float, sigma_to: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward-noise ``state`` from sigma_from up to sigma_to with the model's schedule.

        Returns (state, noise) ready for ``solve(state, noise, sigmas from sigma_to)``."""

    def score(self, latents: torch.Tensor, early: torch.Tensor | None = None) -> Scores:
        """Decode and verify clean latents."""

    def compare(self, values: torch.Tensor) -> torch.Tensor:
        """[M, V] component scores -> [M] values that order exactly these M candidates."""


@dataclass
class SearchResult:
    best: torch.Tensor                      # [1, ...] winning clean latent (full schedule)
    best_id: int
    best_score: float
    top: torch.Tensor                       # [k, ...] best k clean latents, best first
    top_ids: list[int]
    top_scores: list[float]                 # the returned latents' scores
    best_noise: torch.Tensor | None         # initial noise that regenerates ``best``
    # The initial noises of ``top`` (None: the winners are not one noise's samples).
    top_noise: torch.Tensor | None = None
    top_seeded: list[bool] = field(default_factory=list)  # each of ``top`` is the stock noise of its id
    # ``best_noise`` is the stock noise of ``best_id`` (the winner replays at seed + best_id).
    seeded: bool = False
    # Scores on the cheaper search schedule, when the kept candidates were regenerated.
    search_scores: list[float] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    nfe: int = 0                            # NFEs spent, from the plan of every round run
    planned_nfe: int = 0                    # what the whole search would cost without a budget
    stopped_by_budget: bool = False
    selection: dict[str, Any] = field(default_factory=dict)  # the selection rule and what it did
    # The plain sample of candidate 0 on the full schedule, where the search made it (random-style
    # searches); the held-out judge scores it against the winner.
    baseline: torch.Tensor | None = None
    # A search with a draft model: the draft's NFEs, the main model's regeneration, and how well
    # the draft's ranking of the regenerated finalists predicts the main model's (Spearman).
    draft: dict[str, Any] | None = None


class Ledger:
    """NFE bookkeeping and the budget rule: never start an unaffordable round."""

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
