"""The paper's three search algorithms as short, pure tensor functions.

Shared signature (like k-diffusion's samplers)::

    fn(model, noise, sigmas, *, generator, budget=None, top_k=1, callback=None, **options)

- ``model``: a :class:`search.backend.SearchBackend`;
- ``noise``: initial noises, [N, ...] candidates (random), [1, ...] the first pivot
  (zero-order), [N, ...] the initial paths (paths);
- ``sigmas``: the full schedule; a cheaper search schedule comes from ``model.schedule(True)``;
- ``generator``: the only source of randomness after ``noise``, so a seed reproduces a run;
- ``budget``: total NFEs (search + final denoising); a round that would exceed it is not
  started; ``callback(info)`` is called after every scored round.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .backend import BudgetError, Ledger, SearchBackend, SearchResult
from .noise import gaussian, sphere_neighbours

Callback = Callable[[dict], None] | None


class _Pool:
    """The best k candidates seen so far: scores, clean latents, and the noises behind them."""

    def __init__(self, k: int):
        self.k = k
        self.scores = torch.empty(0)
        self.latents: torch.Tensor | None = None
        self.noises: torch.Tensor | None = None
        self.ids: list[int] = []

    def add(self, scores, latents, noises, ids) -> None:
        noises = noises if noises is not None else torch.zeros(len(ids))
        # A NaN score (a diverged sample) must never win.
        scores = torch.nan_to_num(scores.float(), nan=-math.inf)
        all_scores = torch.cat([self.scores, scores])
        all_latents, all_noises = _cat(self.latents, latents), _cat(self.noises, noises)
        # Stable order: on equal scores the earlier candidate wins.
        keep = torch.sort(all_scores, descending=True, stable=True).indices[: self.k]
        self.scores, self.latents, self.noises = all_scores[keep], all_latents[keep], all_noises[keep]
        self.ids = [(self.ids + list(ids))[i] for i in keep.tolist()]


def _cat(a, b):
    return b if a is None else torch.cat([a, b])


def _evaluate(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor):
    latents, early = model.solve(None, noise, sigmas)
    return latents, model.score(latents, early)


def _record(result: SearchResult, ids, scores, round_index: int, **extra) -> None:
    for i, s in zip(ids, scores.tolist()):
        result.candidates.append({"id": int(i), "round": round_index, "score": float(s), **extra})


def _finish(model, pool: _Pool, ledger: Ledger, result: SearchResult, regenerate: bool,
            final: torch.Tensor, has_noise: bool = True) -> SearchResult:
    """Regenerate the kept candidates at the full schedule when the search used a cheaper one."""
    top = pool.latents
    if regenerate:
        ledger.pay(model.nfe(final) * len(pool.ids))
        top, _ = model.solve(None, pool.noises, final)
    result.top, result.best = top, top[:1]
    result.top_scores = pool.scores.tolist()
    result.best_score = result.top_scores[0]
    result.best_noise = pool.noises[:1] if has_noise else None
    result.nfe = ledger.spent
    return result


def _round_info(result, ledger, pool, round_index, scores, ids, **extra):
    info = {"round": round_index, "nfe": ledger.spent, "scores": scores.tolist(), "ids": list(ids),
            "best_score": float(pool.scores[0]), "best_id": pool.ids[0], **extra}
    result.rounds.append({k: v for k, v in info.items() if k not in ("scores", "ids", "latents")})
    return info


def random_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                  generator: torch.Generator | None = None, budget: int | None = None,
                  top_k: int = 1, callback: Callback = None,
                  round_size: int | None = None) -> SearchResult:
    """Best-of-N: solve every candidate noise, score it, keep the argmax."""
    search_sigmas = model.schedule(True)
    regenerate = not torch.equal(search_sigmas, sigmas)
    per, final_per = model.nfe(search_sigmas), model.nfe(sigmas)
    ledger, result = Ledger(budget), SearchResult(None, 0.0, None, [])
    n, k = noise.shape[0], min(top_k, noise.shape[0])
    # The budget buys candidates after reserving the regeneration of the kept ones.
    reserve = final_per * k if regenerate else 0
    if ledger.budget is not None:
        ledger.require(per + (final_per if regenerate else 0), "one candidate")
        n_afford = (ledger.budget - reserve) // per
        if n_afford < n:
            n, result.stopped_by_budget = max(1, n_afford), True
            k = min(k, n)
    pool, step = _Pool(k), round_size or n
    for r, start in enumerate(range(0, n, step)):
        ids = list(range(start, min(n, start + step)))
        latents, scores = _evaluate(model, noise[ids], search_sigmas)
        ledger.pay(per * len(ids))
        pool.add(scores, latents, noise[ids], ids)
        _record(result, ids, scores, r)
        if callback:
            callback(_round_info(result, ledger, pool, r, scores, ids, latents=latents))
    result.best_index = pool.ids[0]
    return _finish(model, pool, ledger, result, regenerate, sigmas)


def zero_order_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                      generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                      callback: Callback = None, neighbours: int = 2, angle: float = 30.0,
                      iterations: int = 8, restart: bool = True) -> SearchResult:
    """Zero-order search: move a pivot to its best neighbour on the pivot's sphere.

    The pivot's score is carried over from the round that found it, never paid for twice.
    With ``restart``, a round where no neighbour beats the pivot re-draws the pivot.
    """
    search_sigmas = model.schedule(True)
    regenerate = not torch.equal(search_sigmas, sigmas)
    per, final_per = model.nfe(search_sigmas), model.nfe(sigmas)
    ledger, result = Ledger(budget), SearchResult(None, 0.0, None, [])
    reserve = final_per * top_k if regenerate else 0
    ledger.require(per + reserve, "scoring the first pivot")
    pivot = noise[:1]
    pool, next_id = _Pool(top_k), 1
    latents, scores = _evaluate(model, pivot, search_sigmas)
    ledger.pay(per)
    pivot_score = float(scores[0])
    pool.add(scores, latents, pivot, [0])
    _record(result, [0], scores, 0, kind="pivot")
    if callback:
        callback(_round_info(result, ledger, pool, 0, scores, [0], latents=latents, moved=True))
    for it in range(1, iterations + 1):
        if not ledger.affords(per * neighbours + reserve):
            result.stopped_by_budget = True
            break
        cands = sphere_neighbours(pivot, neighbours, angle, generator)
        ids = list(range(next_id, next_id + neighbours))
        next_id += neighbours
        latents, scores = _evaluate(model, cands, search_sigmas)
        ledger.pay(per * neighbours)
        pool.add(scores, latents, cands, ids)
        _record(result, ids, scores, it, kind="neighbour")
        best = int(torch.argmax(torch.nan_to_num(scores, nan=-math.inf)))
        moved = float(scores[best]) > pivot_score
        if moved:
            pivot, pivot_score = cands[best : best + 1], float(scores[best])
        elif restart and it < iterations and ledger.affords(per * (1 + neighbours) + reserve):
            # A fixed point of the local search: start again from a fresh noise.
            pivot = gaussian(tuple(pivot.shape), generator).to(pivot.dtype)
            lat, sc = _evaluate(model, pivot, search_sigmas)
            ledger.pay(per)
            pivot_score = float(sc[0])
            pool.add(sc, lat, pivot, [next_id])
            _record(result, [next_id], sc, it, kind="restart")
            next_id += 1
        if callback:
            callback(_round_info(result, ledger, pool, it, scores, ids, latents=latents, moved=moved))
    return _finish(model, pool, ledger, result, regenerate, sigmas)


def _level_down(t_up: float, backward: float) -> float:
    # Levels are sums of decimal fractions: 0.1 + 0.2 - 0.3 must end at 0, not at 5e-17.
    t = t_up - backward
    return 0.0 if t < 1e-6 else t


def _segment(model: SearchBackend, t_hi: float, t_lo: float, steps: int) -> torch.Tensor:
    ts = torch.linspace(t_hi, t_lo, steps + 1).tolist()
    return torch.tensor([model.level_sigma(t) for t in ts])


def _tail(sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a descending schedule at ``sigma``: (sigmas down to it, sigmas from it)."""
    above, below = sigmas[sigmas > sigma], sigmas[sigmas < sigma]
    s = torch.tensor([sigma], dtype=sigmas.dtype)
    return torch.cat([above, s]), torch.cat([s, below])


def path_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                callback: Callback = None, branches: int = 2, start: float = 0.4,
                forward: float = 0.2, backward: float = 0.3, interval_steps: int = 4) -> SearchResult:
    """Search over paths: branch N paths into N*M by re-noising, denoise, keep the top N.

    Levels are schedule fractions (1 = noise, 0 = clean). Each round re-noises from t up to
    t + forward, solves down to t + forward - backward with ``interval_steps`` steps, and
    scores the x0-prediction there (one extra NFE; none when the round reaches 0).
    """
    if backward <= forward:
        raise ValueError(f"backward ({backward}) must be greater than forward ({forward})")
    n, m = noise.shape[0], branches
    ledger, result = Ledger(budget), SearchResult(None, 0.0, None, [])
    head, _ = _tail(sigmas, model.level_sigma(start))
    ledger.require(n * model.nfe(head) + n * model.nfe(_tail(sigmas, model.level_sigma(start))[1]),
                   f"{n} paths without any search round")
    state, _ = model.solve(None, noise, head)
    ledger.pay(n * model.nfe(head))
    t, r, ids, next_id = start, 0, list(range(n)), n
    scores = None
    while t > 0:
        t_up = min(1.0, t + forward)
        t_down = _level_down(t_up, backward)
        seg = _segment(model, t_up, t_down, interval_steps)
        finish_after = n * model.nfe(_tail(sigmas, model.level_sigma(t_down))[1]) if t_down > 0 else 0
        cost = n * m * (model.nfe(seg) + (1 if t_down > 0 else 0))
        if not ledger.affords(cost + finish_after):
            result.stopped_by_budget = True
            break
        r += 1
        branched, fresh = model.renoise(state.repeat_interleave(m, 0), model.level_sigma(t),
                                        model.level_sigma(t_up), generator)
        branched, _ = model.solve(branched, fresh, seg)
        x0 = model.predict_x0(branched, float(seg[-1])) if t_down > 0 else branched
        ledger.pay(cost)
        all_scores = model.score(x0)
        child_ids = list(range(next_id, next_id + n * m))
        next_id += n * m
        _record(result, child_ids, all_scores, r, level=t_down)
        for c, parent in zip(result.candidates[-n * m :], [ids[i // m] for i in range(n * m)]):
            c["parent"] = parent
        ranked = torch.nan_to_num(all_scores.float(), nan=-math.inf)
        keep = torch.sort(ranked, descending=True, stable=True).indices[:n]
        state, scores = branched[keep], all_scores[keep]
        ids = [child_ids[i] for i in keep.tolist()]
        t = t_down
        if callback:
            pool = _Pool(1)
            pool.add(scores[:1], x0[keep[:1]], None, ids[:1])
            callback(_round_info(result, ledger, pool, r, all_scores, child_ids, latents=x0,
                                 level=t_down))
    if t > 0:
        # Out of budget for another round: finish the survivors along the full schedule.
        rest = _tail(sigmas, model.level_sigma(t))[1]
        state, _ = model.solve(state, None, rest)
        ledger.pay(n * model.nfe(rest))
        scores = model.score(state)
    elif scores is None:
        scores = model.score(state)
    pool = _Pool(min(top_k, n))
    pool.add(scores, state, None, ids)
    return _finish(model, pool, ledger, result, False, sigmas, has_noise=False)


SEARCHES = {"random": random_search, "zero_order": zero_order_search, "paths": path_search}

__all__ = ["SEARCHES", "BudgetError", "path_search", "planned_nfe", "random_search", "zero_order_search"]


def planned_nfe(name: str, model: SearchBackend, n: int, top_k: int = 1, **options) -> int:
    """NFEs a search will spend without a budget (restarts of zero-order search aside):
    sizes the progress bar before the first round."""
    search_sigmas, sigmas = model.schedule(True), model.schedule()
    regen = 0 if torch.equal(search_sigmas, sigmas) else model.nfe(sigmas) * top_k
    per = model.nfe(search_sigmas)
    if name == "random":
        return n * per + regen
    if name == "zero_order":
        return per * (1 + options.get("iterations", 8) * options.get("neighbours", 2)) + regen
    start, fwd, bwd = options.get("start", 0.4), options.get("forward", 0.2), options.get("backward", 0.3)
    m, steps = options.get("branches", 2), options.get("interval_steps", 4)
    total, t = n * model.nfe(_tail(sigmas, model.level_sigma(start))[0]), start
    while t > 0 and bwd > fwd:
        t_down = _level_down(min(1.0, t + fwd), bwd)
        total += n * m * (model.nfe(_segment(model, min(1.0, t + fwd), t_down, steps)) + (t_down > 0))
        t = t_down
    return total
