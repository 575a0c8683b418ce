"""Inference-time search over diffusion noises, as pure tensor functions.

Every algorithm has the signature of a k-diffusion sampler turned search::

    result = search_fn(model, noise, sigmas, *, generator, budget, callback, **options)

``model`` implements :class:`search.backend.SearchBackend` (denoise, predict x0, re-noise,
score); nothing here imports ComfyUI. See search/algorithms.py.
"""

from .algorithms import SEARCHES, path_search, random_search, zero_order_search
from .backend import BudgetError, SearchBackend, SearchResult
from .chunking import map_chunked
from .noise import sphere_neighbours

__all__ = [
    "SEARCHES", "BudgetError", "SearchBackend", "SearchResult", "map_chunked", "path_search",
    "random_search", "sphere_neighbours", "zero_order_search",
]
