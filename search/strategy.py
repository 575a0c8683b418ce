"""A configured search: one strategy of search/registry.py with the options a user chose.

It is what a SEARCH socket carries between nodes, as a SAMPLER carries a sampler function
and its options: the strategy's spec builds it (``StrategySpec.configure``) from an option
node's values, one executor runs it. Besides the algorithm's own options it carries the
search's settings: budget, top_k, batch size and the cheaper search schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .backend import SearchBackend, SearchResult
from .selection import BEST, Selection


@dataclass(frozen=True, eq=False)  # compared by identity: it may hold a tensor (search_sigmas)
class Strategy:
    name: str                       # the report's name of the algorithm: "random", "zero_order", ...
    run: Callable[..., SearchResult]  # the algorithm, with the shared signature
    noises: int                     # initial noises it starts from (candidate ids 0 .. noises-1)
    options: dict[str, Any] = field(default_factory=dict)   # keyword options of ``run``
    settings: dict[str, Any] = field(default_factory=dict)  # what the user chose, for reports
    rows: int = 1                   # most candidates one round holds (sizes memory checks)
    full_schedule: bool = False     # True: searches on the full schedule only (no search_sigmas)
    # Refuses a backend the algorithm cannot run on, before any denoising (message names the input).
    check: Callable[[Any], None] | None = None
    display_name: str = ""          # what messages call it
    budget: int = 0                 # total NFEs per problem; 0 = no limit
    top_k: int = 1
    batch_size: int = 0             # candidates per model call; 0 = as many as fit
    search_sigmas: torch.Tensor | None = None  # cheaper schedule while searching
    selection: Selection = BEST     # which final candidate it returns
    # Why it cannot search with a draft model ("" = it can: its winners are one noise's samples).
    no_draft: str = ""

    def __call__(self, model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, **kwargs) -> SearchResult:
        return self.run(model, noise, sigmas, select=self.selection, **kwargs, **self.options)
