"""Inference-time search over diffusion noises, as pure tensor functions.

Every algorithm has the signature of a k-diffusion sampler turned search::

    result = search_fn(model, noise, sigmas, *, generator, budget, top_k, callback, **options)

``model`` implements :class:`search.backend.SearchBackend` (solve, predict x0, re-noise,
score, compare); nothing here imports ComfyUI. See search/algorithms.py; a
:class:`search.strategy.Strategy` bundles one algorithm with its options.
"""

from .algorithms import (
    compare,
    early_rejection,
    particle_steering,
    path_search,
    random_search,
    tree_search,
    zero_order_search,
)
from .backend import BudgetError, Scores, SearchBackend, SearchResult
from .chunking import map_chunked
from .noise import sphere_neighbours
from .strategy import Strategy

__all__ = [
    "BudgetError", "Scores", "SearchBackend", "SearchResult", "Strategy", "compare",
    "early_rejection", "map_chunked", "particle_steering", "path_search", "random_search", "sphere_neighbours", "tree_search", "zero_order_search",
]
