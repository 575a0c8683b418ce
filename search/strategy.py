"""A search strategy: one algorithm of search/algorithms.py with its options.

It is what a SEARCH socket carries between nodes, as a SAMPLER carries a sampler function
and its options: small option nodes build it, one executor runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .backend import SearchBackend, SearchResult


@dataclass(frozen=True)
class Strategy:
    name: str                       # short name in reports: "random", "zero_order", "paths"
    run: Callable[..., SearchResult]  # the algorithm, with the shared signature
    noises: int                     # initial noises it starts from (candidate ids 0 .. noises-1)
    # How a winner is reproduced with stock samplers: "seed" (its initial noise is the seeded
    # noise of its id), "noise" (only through its recorded initial noise), "none" (noise is
    # injected along the trajectory: not reproducible from one initial noise).
    replay: str
    options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # what the user chose, for reports
    rows: int = 1                   # most candidates one round holds (sizes memory checks)
    uses_search_schedule: bool = True  # False: searches on the full schedule only
    # Refuses a backend the algorithm cannot run on, before any denoising (message names the input).
    check: Callable[[Any], None] | None = None

    def __call__(self, model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, **kwargs) -> SearchResult:
        return self.run(model, noise, sigmas, **kwargs, **self.options)
