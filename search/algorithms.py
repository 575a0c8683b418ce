"""The paper's three search algorithms, and three that came after it, as short, pure tensor functions.

Shared signature (like k-diffusion's samplers)::

    fn(model, noise, sigmas, *, generator, budget=None, top_k=1, callback=None, select=BEST, **options)

- ``model``: a :class:`search.backend.SearchBackend`;
- ``noise``: initial noises, [N, ...] candidates (random), [1, ...] the first pivot
  (zero-order), [N, ...] the initial paths (paths); row i is candidate id i;
- ``sigmas``: the full schedule; a cheaper search schedule comes from ``model.schedule(True)``;
- ``generator``: the only source of randomness after ``noise``, so a seed reproduces a run;
- ``budget``: total NFEs (search + final denoising); a round that would exceed it is not
  started; ``callback(info)`` is called after every scored round with the round's ids,
  values, images and the plan;
- ``select``: which final candidate is returned (search/selection.py: best, tempered, threshold).

Every initial noise beyond the ``noise`` given is ``model.initial_noise([i])``: the stock noise
of candidate i, so a sample that is a plain chain from an initial noise replays with stock
nodes at seed + i. What a search will spend is decided up front (a ``_Plan``); each returns a
:class:`search.backend.SearchResult` built once, at the end, from its pool of scored
candidates: the reported winner is always the returned latent, and the winner and ranking
never depend on ``top_k`` (a regenerating search ranks what it searched, or regenerates every
finalist and ranks their final samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .backend import Ledger, SearchBackend, SearchResult
from .noise import sphere_neighbours
from .selection import BEST, Selection, tempered_order
from .smc import effective_sample_size, log_potential, normalized, systematic_resample

Callback = Callable[[dict], None] | None


def compare(model: SearchBackend, values: torch.Tensor) -> torch.Tensor:
    """Orderable values of exactly these candidates; a candidate with a non-finite component
    (a diverged sample) gets -inf and never takes part in the others' comparison."""
    values = values.reshape(values.shape[0], -1).float()
    finite = torch.isfinite(values).all(dim=1)
    out = torch.full((values.shape[0],), -math.inf)
    if finite.any():
        out[finite] = model.compare(values[finite]).float()
    return out


def best_first(values: torch.Tensor) -> torch.Tensor:
    # Stable: on equal values the earlier candidate wins.
    return torch.sort(values, descending=True, stable=True).indices


class _Pool:
    """Scored clean candidates (component scores, latents, noises, ids).

    With an absolute verifier only the best k are kept. A relative one (a rank ensemble)
    keeps every candidate: adding one can reorder the others."""

    def __init__(self, model: SearchBackend, k: int | None):
        # k None: keep every candidate (a tempered selection draws among them all).
        self.model, self.k = model, k
        self.prune = not model.relative and k is not None
        self.values = self.latents = self.noises = None
        self.ids: list[int] = []

    def add(self, values, latents, noises, ids) -> None:
        noises = noises if noises is not None else torch.zeros(len(ids))
        self.values, self.latents = _cat(self.values, values), _cat(self.latents, latents)
        self.noises, self.ids = _cat(self.noises, noises), self.ids + list(ids)
        if self.prune:
            self.take(self.order()[: self.k])

    def order(self) -> torch.Tensor:
        return best_first(compare(self.model, self.values))

    def take(self, rows: torch.Tensor) -> None:
        self.values, self.latents, self.noises = self.values[rows], self.latents[rows], self.noises[rows]
        self.ids = [self.ids[i] for i in rows.tolist()]

    def best(self) -> tuple[int, float]:
        values = compare(self.model, self.values)
        i = int(best_first(values)[0])
        return self.ids[i], float(values[i])


def _cat(a, b):
    return b if a is None else torch.cat([a, b])


def _members(model: SearchBackend, values: torch.Tensor) -> torch.Tensor | None:
    """A rank ensemble's component scores, for the report; None for an absolute verifier."""
    return values.reshape(values.shape[0], -1) if model.relative else None


def _judge_cost(sigmas: torch.Tensor) -> int:
    return 1 if float(sigmas[-1]) > 0 else 0


def _judged(model: SearchBackend, latents: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """What a verifier can judge of a run along ``sigmas``: its clean result, or, for a segment
    that stops above 0 and hands its leftover noise on, the model's x0-prediction there (one
    NFE per candidate, counted in the run's cost)."""
    end = float(sigmas[-1])
    return latents if end == 0 else model.predict_x0(latents, end)


@dataclass(frozen=True)
class _Plan:
    """What a search will spend, decided before it starts."""

    count: int                     # candidates (particles, rollouts) it starts
    k: int                         # how many it returns
    planned: int                   # NFEs of the whole search without a budget
    stopped: bool = False          # the budget cut ``count``
    # How the finalists are regenerated on the full schedule: None (they are final already),
    # "keep order" (the top k of the search's ranking, reported in that order) or "rerank"
    # (every finalist, ranked by its final sample: their search runs were not the final ones).
    regenerate: str | None = None
    final_per: int = 0             # NFEs of one regeneration


class _Record:
    """The ledger, the rounds and the candidate entries of a run, and its callback: what an
    algorithm writes as it goes. The result is built from it once, by ``_finish``."""

    def __init__(self, budget, callback: Callback, planned: int, select: Selection = BEST):
        self.ledger, self.callback, self.planned, self.select = Ledger(budget), callback, planned, select
        self.rounds: list[dict] = []
        self.candidates: list[dict] = []
        self.stopped = False
        self.reached_at: int | None = None  # threshold selection: the round that reached the value
        self.baseline = None                # the plain sample of candidate 0, where the search made one

    def pool(self, model: SearchBackend, k: int) -> _Pool:
        """A pool of a search's final candidates: the best k, or every one for a tempered draw."""
        return _Pool(model, None if self.select.keeps_all else k)

    def reached(self, values: torch.Tensor) -> bool:
        """Threshold selection: whether the values of the round just recorded stop the search
        (the first such round is noted)."""
        if self.reached_at is None and self.select.reached(values):
            self.reached_at = len(self.rounds) - 1
        return self.reached_at is not None

    def stop(self) -> None:
        """The budget ended the search before its plan did."""
        self.stopped = True

    def bound(self) -> int:
        """The most this run can spend: its plan, or the budget where that is lower (what a
        progress bar's total should be: never a total the run cannot reach)."""
        budget = self.ledger.budget
        return self.planned if budget is None else min(self.planned, budget)

    def plan_more(self, nfe: int) -> None:
        """A step the plan could not foresee (zero-order's restarts)."""
        self.planned += nfe

    def entries(self, ids, values, round_index: int, members: torch.Tensor | None = None, **extra) -> list[dict]:
        """Candidate entries; ``members``: a rank ensemble's component scores of each (its value is a
        rank among the candidates compared, so a merge of several searches re-ranks from these)."""
        entries = [{"id": int(i), "round": round_index, "score": float(v), **extra}
                   for i, v in zip(ids, values.tolist())]
        if members is not None:
            for entry, row in zip(entries, members.tolist()):
                entry["members"] = row
        self.candidates.extend(entries)
        return entries

    def round(self, round_index: int, ids, values, scored, pool: _Pool, **extra) -> None:
        best_id, best_score = pool.best() if pool.ids else (None, None)
        info = {"round": round_index, "nfe": self.ledger.spent, "planned": self.planned, "bound": self.bound(),
                "best_id": best_id, "best_score": best_score, **extra}
        self.rounds.append(dict(info))
        if self.callback:
            self.callback({**info, "ids": list(ids), "scores": values.tolist(), "images": scored.images})


def _evaluate(model: SearchBackend, record: _Record, sigmas: torch.Tensor, noise: torch.Tensor, ids: list[int]):
    """Solve fresh noises along ``sigmas`` and score them (NFEs paid)."""
    latents, early = model.solve(None, noise, sigmas, ids)
    record.ledger.pay((model.nfe(sigmas) + _judge_cost(sigmas)) * len(ids))
    return latents, model.score(_judged(model, latents, sigmas), early)


def _selected(model: SearchBackend, values: torch.Tensor, k: int, select: Selection, generator) -> torch.Tensor:
    """The rows a search returns, winner first: the best k, or k drawn by a tempered selection."""
    if select.rule != "tempered":
        return best_first(values)[:k]
    return tempered_order(values, select.lmbda, k, generator if generator is not None else torch.Generator())


def _finish(model: SearchBackend, sigmas: torch.Tensor, plan: _Plan, record: _Record, pool: _Pool,
            seeded=lambda i: True, generator: torch.Generator | None = None) -> SearchResult:
    """The result, built once: the pool's best k (or k drawn by the selection rule), regenerated on
    the full schedule where the plan says so, every returned latent with its own score.
    ``seeded(id)``: whether that candidate's initial noise is the stock noise of its id (it then
    replays at seed + id)."""
    select, values = record.select, compare(model, pool.values)
    rows = torch.arange(len(pool.ids)) if plan.regenerate == "rerank" else \
        _selected(model, values, plan.k, select, generator)
    values = values[rows]
    ids, latents, noises = [pool.ids[i] for i in rows.tolist()], pool.latents[rows], pool.noises[rows]
    search_scores = None
    if plan.regenerate:
        record.ledger.pay(plan.final_per * len(ids))
        latents, early = model.solve(None, noises, sigmas, ids)
        scored = model.score(_judged(model, latents, sigmas), early)
        final = compare(model, scored.values)
        record.entries(ids, final, len(record.rounds), members=_members(model, scored.values), level=0.0,
                       sample="final")
        order = _selected(model, final, plan.k, select, generator) if plan.regenerate == "rerank" \
            else torch.arange(len(ids))
        search_scores = values[order].tolist()
        values, latents, noises = final[order], latents[order], noises[order]
        ids = [ids[i] for i in order.tolist()]
        final_pool = _Pool(model, plan.k)
        final_pool.add(values[:, None], latents, noises, ids)
        record.round(len(record.rounds), ids, values, scored, final_pool, regenerated=list(ids))
    best_noise = noises[:1] if noises.ndim > 1 else None
    return SearchResult(
        best=latents[:1], best_id=ids[0], best_score=float(values[0]), top=latents, top_ids=ids,
        top_scores=values.tolist(), best_noise=best_noise, top_noise=noises if noises.ndim > 1 else None,
        top_seeded=[noises.ndim > 1 and bool(seeded(i)) for i in ids],
        search_scores=search_scores, seeded=best_noise is not None and bool(seeded(ids[0])),
        rounds=record.rounds, candidates=record.candidates, nfe=record.ledger.spent, planned_nfe=record.planned,
        stopped_by_budget=plan.stopped or record.stopped, selection=_selection_report(record, pool),
        baseline=record.baseline)


def _selection_report(record: _Record, pool: _Pool) -> dict:
    out = record.select.settings()
    if record.select.rule == "tempered":
        out["drawn_among"] = len(pool.ids)
    if record.select.rule == "threshold":
        out["reached"] = record.reached_at is not None
        out["reached_in_round"] = record.reached_at
        out["scored"] = len({e["id"] for e in record.candidates})
    return out


def _search_costs(model: SearchBackend, sigmas: torch.Tensor, search_sigmas: torch.Tensor):
    """(NFEs of a candidate while searching, of its regeneration, whether it is regenerated)."""
    regenerate = not torch.equal(search_sigmas, sigmas)
    return model.nfe(search_sigmas) + _judge_cost(search_sigmas), model.nfe(sigmas) + _judge_cost(sigmas), regenerate


def _best_of_plan(model: SearchBackend, sigmas, search_sigmas, n: int, top_k: int, budget) -> _Plan:
    """Best-of-N's plan: with a budget, the most candidates whose search plus the regeneration of
    the kept ones (at most k of them) it pays for."""
    per, final_per, regenerate = _search_costs(model, sigmas, search_sigmas)
    k, regen = min(top_k, n), (final_per if regenerate else 0)
    plan = _Plan(n, k, n * per + k * regen, regenerate="keep order" if regenerate else None, final_per=final_per)
    ledger = Ledger(budget)
    if ledger.budget is None:
        return plan
    ledger.require(per + regen, "one candidate")
    afford = max(m for m in range(1, n + 1) if m * per + min(k, m) * regen <= ledger.budget)
    if afford == n:
        return plan
    return _Plan(afford, min(k, afford), plan.planned, True, plan.regenerate, final_per)


def _best_of(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, search_sigmas: torch.Tensor, *,
             budget, top_k: int, callback: Callback, round_size: int | None = None, select: Selection = BEST,
             generator: torch.Generator | None = None) -> SearchResult:
    plan = _best_of_plan(model, sigmas, search_sigmas, noise.shape[0], top_k, budget)
    record, n = _Record(budget, callback, plan.planned, select), plan.count
    pool = record.pool(model, plan.k)
    # One round per model chunk (the backend's hint), so progress views fill in as candidates
    # finish; the result does not depend on it. Threshold selection scores one candidate at a
    # time: nothing after the first to reach the value is paid for.
    step, seen = 1 if select.rule == "threshold" else (round_size or model.chunk or n), []
    for r, start in enumerate(range(0, n, step)):
        ids = list(range(start, min(n, start + step)))
        latents, scored = _evaluate(model, record, search_sigmas, noise[ids], ids)
        if start == 0 and not plan.regenerate:
            record.baseline = latents[:1]
        pool.add(scored.values, latents, noise[ids], ids)
        seen.append(scored.values)
        record.round(r, ids, compare(model, torch.cat(seen))[start:], scored, pool)
        if record.reached(compare(model, scored.values)):
            break
    # Recorded at the end: a candidate's score is its value among all scored (for a rank
    # ensemble, its rank among every candidate, the ranking that picked the winner).
    raw = torch.cat(seen)
    everyone, sample = compare(model, raw), ({"sample": "search schedule"} if plan.regenerate else {})
    members = _members(model, raw)
    for r, start in enumerate(range(0, len(everyone), step)):
        record.entries(range(start, min(len(everyone), start + step)), everyone[start : start + step], r,
                       members=None if members is None else members[start : start + step], **sample)
    return _finish(model, sigmas, plan, record, pool, generator=generator)


def random_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                  generator: torch.Generator | None = None, budget: int | None = None,
                  top_k: int = 1, callback: Callback = None, select: Selection = BEST,
                  round_size: int | None = None) -> SearchResult:
    """Best-of-N: solve every candidate noise, score it, keep the argmax (or the one ``select``
    picks). On a cheaper search schedule the search's top k are regenerated on the full one, in
    the search's order."""
    return _best_of(model, noise, sigmas, model.schedule(True), budget=budget, top_k=top_k, callback=callback,
                    round_size=round_size, select=select, generator=generator)


def zero_order_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                      generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                      callback: Callback = None, select: Selection = BEST, neighbours: int = 2, angle: float = 30.0,
                      iterations: int = 8, restart: bool = True) -> SearchResult:
    """Zero-order search: move a pivot to its best neighbour on the pivot's sphere.

    Every round compares the pivot with its neighbours in one comparison (for a rank
    ensemble: one ranking of the 1 + N of them); the pivot's scores are carried over from
    the round that found it, never paid for twice. With ``restart``, a round where no
    neighbour beats the pivot restarts from a fresh initial noise (the stock noise of its id).
    """
    search_sigmas = model.schedule(True)
    per, final_per, regenerate = _search_costs(model, sigmas, search_sigmas)
    reserve = final_per * top_k if regenerate else 0
    plan = _Plan(1, top_k, per * (1 + iterations * neighbours) + reserve,
                 regenerate="keep order" if regenerate else None, final_per=final_per)
    record = _Record(budget, callback, plan.planned, select)
    pool = record.pool(model, top_k)
    record.ledger.require(per + reserve, "scoring the first pivot")
    pivot, pivot_id, seeded = noise[:1], 0, {0}
    latents, scored = _evaluate(model, record, search_sigmas, pivot, [0])
    record.baseline = None if regenerate else latents[:1]
    pivot_values = scored.values
    pool.add(pivot_values, latents, pivot, [0])
    record.entries([0], compare(model, pivot_values), 0, members=_members(model, pivot_values), kind="pivot")
    record.round(0, [0], compare(model, pivot_values), scored, pool, pivot=0, moved=False)
    next_id = 1
    for it in range(1, iterations + 1):
        if record.reached(compare(model, pool.values)):
            break
        if not record.ledger.affords(per * neighbours + reserve):
            record.stop()
            break
        cands = sphere_neighbours(pivot, neighbours, angle, generator)
        ids = list(range(next_id, next_id + neighbours))
        next_id += neighbours
        latents, scored = _evaluate(model, record, search_sigmas, cands, ids)
        pool.add(scored.values, latents, cands, ids)
        values = compare(model, torch.cat([pivot_values, scored.values]))
        record.entries(ids, values[1:], it, members=_members(model, scored.values), kind="neighbour", pivot=pivot_id)
        best = int(best_first(values[1:])[0])
        moved = bool(values[1 + best] > values[0])
        if moved:
            pivot, pivot_id, pivot_values = cands[best : best + 1], ids[best], scored.values[best : best + 1]
        elif restart and it < iterations and record.ledger.affords(per * (1 + neighbours) + reserve):
            # A fixed point of the local search: start again from a fresh initial noise.
            pivot_id, next_id = next_id, next_id + 1
            pivot = model.initial_noise([pivot_id]).to(pivot.dtype)
            seeded.add(pivot_id)
            fresh, fresh_scored = _evaluate(model, record, search_sigmas, pivot, [pivot_id])
            pivot_values = fresh_scored.values
            pool.add(pivot_values, fresh, pivot, [pivot_id])
            record.plan_more(per)
            record.entries([pivot_id], compare(model, pivot_values), it, members=_members(model, pivot_values),
                           kind="restart")
        record.round(it, ids, values[1:], scored, pool, pivot=pivot_id, moved=moved)
    return _finish(model, sigmas, plan, record, pool, seeded=seeded.__contains__, generator=generator)


def _level_down(t_up: float, backward: float) -> float:
    # Levels are sums of decimal fractions: 0.1 + 0.2 - 0.3 must end at 0, not at 5e-17.
    t = t_up - backward
    return 0.0 if t < 1e-6 else t


def _segment(model: SearchBackend, t_hi: float, t_lo: float, steps: int) -> torch.Tensor:
    ts = torch.linspace(t_hi, t_lo, steps + 1).tolist()
    return torch.tensor([model.level_sigma(t) for t in ts])


def _split(sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a descending schedule at ``sigma``: (sigmas down to it, sigmas from it)."""
    above, below = sigmas[sigmas > sigma], sigmas[sigmas < sigma]
    s = torch.tensor([sigma], dtype=sigmas.dtype)
    return torch.cat([above, s]), torch.cat([s, below])


def _path_rounds(start: float, forward: float, backward: float):
    """The (t, t_up, t_down) levels of every round, from ``start`` down to 0."""
    t = start
    while t > 0:
        t_up = min(1.0, t + forward)
        t_down = _level_down(t_up, backward)
        yield t, t_up, t_down
        t = t_down


def path_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                callback: Callback = None, select: Selection = BEST, branches: int = 2, start: float = 0.4,
                forward: float = 0.2, backward: float = 0.3, interval_steps: int = 4) -> SearchResult:
    """Search over paths: branch N paths into N*M by re-noising, denoise, keep the top N.

    Each round re-noises from level t up to t + forward, solves down to t + forward -
    backward with ``interval_steps`` steps, and scores the x0-prediction there (one extra
    NFE; none when the round reaches 0). A round's children are compared among themselves;
    the winner is the best of the N finished survivors. Noise is injected along the way: the
    paths are searched on the full schedule, and nothing can be regenerated from one noise.
    """
    if backward <= forward:
        raise ValueError(f"backward ({backward}) must be greater than forward ({forward})")
    n, m = noise.shape[0], branches
    head = _split(sigmas, model.level_sigma(start))[0]

    def round_cost(t_up, t_down):
        return n * m * (model.nfe(_segment(model, t_up, t_down, interval_steps)) + (1 if t_down > 0 else 0))

    def finish_cost(t):
        return n * model.nfe(_split(sigmas, model.level_sigma(t))[1]) if t > 0 else 0

    plan = _Plan(n, min(top_k, n), n * model.nfe(head) +
                 sum(round_cost(u, d) for _, u, d in _path_rounds(start, forward, backward)))
    record = _Record(budget, callback, plan.planned, select)
    record.ledger.require(n * model.nfe(head) + finish_cost(start), f"{n} paths without any search round")
    ids = list(range(n))
    state, _ = model.solve(None, noise, head, ids)
    record.ledger.pay(n * model.nfe(head))
    values, t, next_id, pool = None, start, n, record.pool(model, plan.k)
    for r, (t, t_up, t_down) in enumerate(_path_rounds(start, forward, backward), start=1):
        if not record.ledger.affords(round_cost(t_up, t_down) + finish_cost(t_down)):
            record.stop()
            break
        children = list(range(next_id, next_id + n * m))
        parents = [ids[i // m] for i in range(n * m)]
        next_id += n * m
        branched, fresh = model.renoise(state.repeat_interleave(m, 0), model.level_sigma(t),
                                        model.level_sigma(t_up), generator)
        seg = _segment(model, t_up, t_down, interval_steps)
        branched, _ = model.solve(branched, fresh, seg, children)
        x0 = model.predict_x0(branched, float(seg[-1])) if t_down > 0 else branched
        record.ledger.pay(round_cost(t_up, t_down))
        scored = model.score(x0)
        round_values = compare(model, scored.values)
        entries = record.entries(children, round_values, r, members=_members(model, scored.values), level=t_down)
        for entry, parent in zip(entries, parents):
            entry["parent"] = parent
        keep = best_first(round_values)[:n]
        state, values, ids = branched[keep], scored.values[keep], [children[i] for i in keep.tolist()]
        pool = record.pool(model, plan.k)
        pool.add(values, x0[keep], None, ids)
        record.round(r, children, round_values, scored, pool, level=t_down)
        t = t_down
    if t > 0:
        # Out of budget for another round: finish the survivors along the full schedule.
        rest = _split(sigmas, model.level_sigma(t))[1]
        state, _ = model.solve(state, None, rest, ids)
        record.ledger.pay(n * model.nfe(rest))
        values = model.score(state).values
    pool = record.pool(model, plan.k)
    pool.add(values, state, None, ids)
    return _finish(model, sigmas, plan, record, pool, generator=generator)


def _renoised_from(model: SearchBackend, sigmas: torch.Tensor, sigma: float, renoise: float) -> float:
    """Where the pack's stochastic step re-noises a state at ``sigma`` to: ``renoise`` levels
    up, never above where the run starts."""
    up = model.level_sigma(min(1.0, model.sigma_level(sigma) + renoise))
    return min(max(up, sigma), float(sigmas[0]))


def _steering_segments(model: SearchBackend, sigmas: torch.Tensor, interval: int, renoise: float):
    """The schedule pieces particle steering advances along, resampling between them: every
    ``interval`` steps. Where the pack supplies the stochastic step (``renoise`` > 0 on a
    deterministic sampler), every piece after the first starts re-noised up from where the
    last one ended."""
    ends = list(range(0, len(sigmas) - 1, interval)) + [len(sigmas) - 1]
    pieces = []
    for r, (a, b) in enumerate(zip(ends[:-1], ends[1:])):
        piece = sigmas[a : b + 1].clone()
        if r > 0 and renoise > 0:
            piece[0] = _renoised_from(model, sigmas, float(piece[0]), renoise)
        pieces.append(piece)
    return pieces


# Where particle steering takes the x0-prediction a reward judges at a resampling point.
PARTICLE_JUDGE = {"point": "at the resampling point", "last": "one step early (the sampler's last prediction)"}


def _particle_asks(pieces: list, judge: str, own_steps: bool) -> list[bool]:
    """Per piece: whether the particles' x0-predictions at its end are asked of the model (one
    NFE each). "point" (the paper's definition): at every resampling point. "last" (the default,
    chosen by measurement: on the digits testbed it scored higher at equal NFEs, e.g. verifier
    10.95 against 10.02 at 16 NFEs, docs/strategies.md): the sampler's last prediction, made at
    the start of the piece's last step, is judged instead (free, one step early), except in a
    one-step piece that starts where resampling left the particles without re-noising, where
    copies of one particle would all get their parent's prediction."""
    if judge not in PARTICLE_JUDGE:
        raise ValueError(f"judge must be one of {', '.join(PARTICLE_JUDGE)}, got {judge!r}")
    if judge == "point":
        return [True] * (len(pieces) - 1) + [False]
    return [len(p) == 2 and r > 0 and not own_steps for r, p in enumerate(pieces[:-1])] + [False]


def _particle_plan(model: SearchBackend, pieces: list, asks: list[bool], k: int, top_k: int, budget) -> _Plan:
    per = sum(model.nfe(p) + ask for p, ask in zip(pieces, asks))
    ledger = Ledger(budget)
    if ledger.budget is None or k * per <= ledger.budget:
        return _Plan(k, min(top_k, k), k * per)
    ledger.require(per, "one particle")
    count = ledger.budget // per
    return _Plan(count, min(top_k, count), k * per, stopped=True)


def _resample(log_w, history, values, potential, lmbda, ess_threshold, generator):
    """One resampling point: the weights times the potential; resampled (systematic) when the ESS
    falls below the threshold, and then equal again. Returns (order, log_w, ess, resampled, the
    weights before resampling)."""
    k = values.shape[0]
    log_w = log_w + log_potential(potential, history, lmbda)
    ess = effective_sample_size(log_w)
    # Equal weights give ESS = K up to rounding: that is never a reason to resample.
    resampled = ess < ess_threshold * k * (1 - 1e-6)
    if not resampled:
        return torch.arange(k), log_w, ess, False, normalized(log_w)
    return systematic_resample(log_w, generator), torch.zeros(k), ess, True, normalized(log_w)


def particle_steering(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                      generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                      callback: Callback = None, select: Selection = BEST, potential: str = "max",
                      lmbda: float = 10.0,
                      interval: int = 1, ess_threshold: float = 0.5, renoise: float = 0.1,
                      judge: str = "last") -> SearchResult:
    """Feynman-Kac steering: K particles advanced together along the schedule with stochastic
    steps; every ``interval`` steps each is weighted by a potential of the verifier's rewards of
    its x0-predictions at that point (``judge``, see ``_particle_asks``), and the particles are
    resampled (systematic) when the effective sample size falls below ``ess_threshold`` x K.
    The winner is the best-scoring particle at the end.

    Stochastic steps: the backend's sampler where it injects noise (each particle's draws its
    own, by id: particles get fresh ids every round, so copies of one particle part ways);
    otherwise the pack re-noises every particle ``renoise`` levels up before each piece.
    Rewards are ``compare`` values among the K particles of the round (for a rank ensemble,
    ranks among them).
    """
    own_steps = renoise > 0 and not model.stochastic
    pieces = _steering_segments(model, sigmas, max(1, interval), renoise if own_steps else 0.0)
    asks = _particle_asks(pieces, judge, own_steps)
    plan = _particle_plan(model, pieces, asks, noise.shape[0], top_k, budget)
    record, k = _Record(budget, callback, plan.planned, select), plan.count
    ids, parents, state, fresh = list(range(k)), [None] * k, None, noise[:k]
    history, log_w, next_id, ended = torch.zeros(k, 0), torch.zeros(k), k, float(sigmas[0])
    for r, piece in enumerate(pieces):
        if state is not None:
            ids, next_id, fresh = list(range(next_id, next_id + k)), next_id + k, None
            if own_steps:
                state, fresh = model.renoise(state, ended, float(piece[0]), generator)
        state, x0 = model.advance(state, fresh, piece, ids)
        ended, last = float(piece[-1]), r == len(pieces) - 1
        if asks[r]:
            x0 = model.predict_x0(state, ended)
        record.ledger.pay(k * (model.nfe(piece) + asks[r]))
        scored = model.score(state if last else x0)
        values = compare(model, scored.values)
        level = 0.0 if last else model.sigma_level(ended)
        entries = record.entries(ids, values, r, members=_members(model, scored.values), level=level)
        for entry, parent in zip(entries, parents):
            if parent is not None:
                entry["parent"] = parent
        pool = record.pool(model, plan.k)
        pool.add(scored.values, state if last else x0, None, ids)
        if last:
            record.round(r, ids, values, scored, pool, level=0.0)
            break
        history = torch.cat([history, values[:, None]], dim=1)
        order, log_w, ess, resampled, weights = _resample(log_w, history, values, potential, lmbda, ess_threshold,
                                                          generator)
        for entry, w in zip(entries, weights.tolist()):
            entry["weight"] = w
        parents = [ids[i] for i in order.tolist()]
        state, history = state[order], history[order]
        record.round(r, ids, values, scored, pool, level=level, ess=ess, resampled=resampled, ancestors=parents,
                     x0=PARTICLE_JUDGE["point" if asks[r] else "last"])
    return _finish(model, sigmas, plan, record, pool, generator=generator)


def _rejection_steps(model: SearchBackend, sigmas: torch.Tensor, levels) -> list[int]:
    """Schedule steps where early rejection judges: for each level, the inner step whose sigma
    is nearest to the level's (the trajectories are not changed to meet a level exactly)."""
    inner = range(1, len(sigmas) - 1)
    steps = {min(inner, key=lambda i: abs(float(sigmas[i]) - model.level_sigma(t))) for t in levels} if inner else set()
    return sorted(steps)


def _rejection_plan(model: SearchBackend, sigmas, costs: list[int], resumable: bool, n: int, top_k: int,
                    keep: float, budget) -> tuple[_Plan, list[int]]:
    """Early rejection's plan and how many candidates run each piece. Where split runs differ
    from runs in one piece, every last survivor is regenerated (paid) and ranked by its final
    sample, so neither the winner nor the ranking depends on top_k."""
    full = model.nfe(sigmas)

    def survivors(m: int) -> list[int]:
        counts = [m]
        for _ in costs[1:]:
            counts.append(max(min(top_k, m), math.ceil(counts[-1] * keep - 1e-9)))
        return counts

    def cost(m: int) -> int:
        counts = survivors(m)
        return sum(c * s for c, s in zip(costs, counts)) + (0 if resumable else counts[-1] * full)

    regenerate = None if resumable else "rerank"
    plan = _Plan(n, min(top_k, survivors(n)[-1]), cost(n), regenerate=regenerate, final_per=full)
    ledger = Ledger(budget)
    if ledger.budget is not None:
        ledger.require(cost(1), "one candidate")
        afford = max(m for m in range(1, n + 1) if cost(m) <= ledger.budget)
        if afford < n:
            plan = _Plan(afford, min(top_k, survivors(afford)[-1]), cost(n), True, regenerate, full)
    return plan, survivors(plan.count)


def early_rejection(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                    generator: torch.Generator | None = None, budget: int | None = None, top_k: int = 1,
                    callback: Callback = None, select: Selection = BEST, keep: float = 0.5,
                    levels: tuple[float, ...] = (0.7, 0.4)) -> SearchResult:
    """Early rejection (successive halving): start N candidates; at each level score their
    x0-predictions (the ones the sampler just computed: no extra model call), keep the best
    ``keep`` fraction (at least top_k) and continue only those; finish and score the survivors.

    The survivors continue their own trajectories. Where the backend reports that a run split
    into pieces differs from the run in one piece (a sampler with per-step noise or with a
    multistep history), every last survivor is regenerated from its initial noise along the
    whole schedule (paid) and the finalists are ranked by those samples, so a winner is always
    its noise's plain sample and does not depend on top_k. With a budget, N is the most
    candidates whose rounds (and regeneration) it pays for. Entries say whose score they hold:
    ``sample`` "split run" (the run in pieces) or "final" (the returned sample).
    """
    steps = _rejection_steps(model, sigmas, levels)
    bounds = [0, *steps, len(sigmas) - 1]
    pieces = [sigmas[a : b + 1] for a, b in zip(bounds[:-1], bounds[1:])]
    costs = [model.nfe(p) for p in pieces]
    resumable = bool(model.resumable(sigmas, steps))
    plan, counts = _rejection_plan(model, sigmas, costs, resumable, noise.shape[0], top_k, keep, budget)
    record = _Record(budget, callback, plan.planned, select)
    ids, state, next_id = list(range(plan.count)), None, plan.count
    for r, piece in enumerate(pieces):
        last = r == len(pieces) - 1
        # A survivor continues under a fresh id: a sampler with per-step noise draws new noise
        # for the rest of its trajectory rather than repeat its first draws.
        lanes = ids if state is None else list(range(next_id, next_id + len(ids)))
        next_id += 0 if state is None else len(ids)
        state, x0 = model.advance(state, noise[ids] if r == 0 else None, piece, lanes)
        record.ledger.pay(len(ids) * costs[r])
        scored = model.score(state if last else x0)
        values = compare(model, scored.values)
        level = 0.0 if last else model.sigma_level(float(piece[-1]))
        sample = "final" if last and resumable else "split run"
        record.entries(ids, values, r, members=_members(model, scored.values), level=level, step=bounds[r + 1],
                       sample=sample)
        if last:
            pool = record.pool(model, plan.k if resumable else len(ids))
            pool.add(scored.values, state, noise[ids], ids)
            record.round(r, ids, values, scored, pool, level=0.0, step=bounds[r + 1], lanes=lanes)
            break
        judged, kept = ids, best_first(values)[: counts[r + 1]]
        state, ids = state[kept], [judged[i] for i in kept.tolist()]
        pool = record.pool(model, plan.k)
        pool.add(scored.values[kept], x0[kept], noise[ids], ids)
        record.round(r, judged, values, scored, pool, level=level, step=bounds[r + 1], lanes=lanes,
                     kept=list(ids), rejected=sorted(set(judged) - set(ids)))
    return _finish(model, sigmas, plan, record, pool, generator=generator)


class _Tree:
    """Diffusion tree search's tree: node 0 is a virtual root above the initial noises; a node
    at step s holds the state at sigmas[s] (step 0: the initial noise itself). Children are
    always created after their parent, so a reverse sweep over nodes visits children first."""

    def __init__(self):
        self.step, self.parent, self.children = [-1], [None], [[]]
        self.states: list = [None]
        self.ids: list = [None]
        self.leaf_rows: dict[int, int] = {}   # node -> row of the leaf tables
        self.open = [True]

    def add(self, parent: int, state, node_id: int) -> int:
        self.step.append(self.step[parent] + 1)
        self.parent.append(parent)
        self.children.append([])
        self.states.append(state)
        self.ids.append(node_id)
        self.open.append(True)
        self.children[parent].append(len(self.step) - 1)
        return len(self.step) - 1

    def lineage(self, node: int) -> list[int]:
        """The nodes from the initial noise down to ``node``."""
        nodes = []
        while node:
            nodes.append(node)
            node = self.parent[node]
        return nodes[::-1]

    def path(self, node: int) -> list:
        """The ids of the nodes from the initial noise down to ``node``."""
        return [self.ids[n] for n in self.lineage(node)]

    def noise_index(self, node: int) -> int:
        """Which initial noise ``node`` descends from (its root's place under the virtual root)."""
        return self.children[0].index(self.lineage(node)[0])


def _soft_values(tree: _Tree, leaf_values: torch.Tensor, lmbda: float):
    """Every node's soft value (the leaves' rewards backed up with the soft Bellman backup,
    v = 1/lambda log of the leaf-count-weighted mean of exp(lambda v_child); the weighted mean
    at lambda 0) and its number of leaves."""
    n = len(tree.step)
    value, count = [-math.inf] * n, [0] * n
    for node in range(n - 1, -1, -1):
        if node in tree.leaf_rows:
            value[node], count[node] = float(leaf_values[tree.leaf_rows[node]]), 1
            continue
        kids = [c for c in tree.children[node] if count[c]]
        if not kids:
            continue
        counts = torch.tensor([count[c] for c in kids], dtype=torch.float64)
        vals = torch.tensor([value[c] for c in kids], dtype=torch.float64)
        count[node] = int(counts.sum())
        finite = torch.isfinite(vals)
        if not finite.any():
            continue
        counts, vals = counts[finite], vals[finite]
        if lmbda == 0:
            value[node] = float((counts * vals).sum() / counts.sum())
        else:
            value[node] = float((torch.logsumexp(lmbda * vals + counts.log(), 0) - counts.sum().log()) / lmbda)
    return value, count


@dataclass(frozen=True)
class _TreeShape:
    """How a tree over ``sigmas`` may branch: the one-step pieces its edges solve along (re-noised
    first where the pack supplies the stochastic step) and which steps add noise."""

    pieces: list
    noisy: list[bool]        # step s adds noise: its node may have ``branches`` children
    branches: int
    renoised: bool           # the pack re-noises before every step after the first

    def max_children(self, tree: _Tree, node: int, roots: int) -> int:
        if node == 0:
            return roots
        s = tree.step[node]
        return 0 if s == len(self.pieces) else (self.branches if self.noisy[s] else 1)


def _tree_shape(model: SearchBackend, sigmas: torch.Tensor, branches: int, renoise: float) -> _TreeShape:
    # A step that adds no noise gives one child: without per-step noise, the first step from an
    # initial noise (nothing above it to re-noise to) and every step at renoise 0; with it, the
    # last step (samplers add no noise on the step to sigma 0).
    steps = len(sigmas) - 1
    pieces, noisy = [], []
    for j in range(steps):
        p = sigmas[j : j + 2].clone()
        if renoise > 0 and j > 0:
            p[0] = _renoised_from(model, sigmas, float(p[0]), renoise)
        pieces.append(p)
        noisy.append((renoise > 0 and j > 0) or (model.stochastic and float(sigmas[j + 1]) > 0))
    return _TreeShape(pieces, noisy, branches, renoise > 0)


def _descend(tree: _Tree, shape: _TreeShape, values: list, pending: list, roots: int, greedy: bool, lmbda: float,
             generator) -> int | None:
    """The node a rollout expands: down from the root by the children's soft values (greedy: the
    best; otherwise in proportion to exp(lambda v)) to the first node with room for a child.
    None: every open branch is taken by this wave's other rollouts."""
    node = 0
    while tree.open[node] and len(tree.children[node]) + pending[node] >= shape.max_children(tree, node, roots):
        kids = [c for c in tree.children[node] if tree.open[c]]
        if not kids:
            return None
        v = torch.tensor([values[c] for c in kids], dtype=torch.float64)
        v = torch.where(torch.isfinite(v), v, torch.full_like(v, -1e30))
        if greedy:
            node = kids[int(torch.argmax(v))]
        else:
            p = torch.softmax(lmbda * v, 0) if lmbda else torch.full_like(v, 1 / len(kids))
            node = kids[int(torch.multinomial(p, 1, generator=generator))]
    return node


def _expand(model: SearchBackend, tree: _Tree, shape: _TreeShape, starts: list[int], noise: torch.Tensor,
            next_id: int, sigmas: torch.Tensor, generator) -> tuple[list[int], int]:
    """Roll out from ``starts`` (0: a new initial noise under the root) to clean samples, adding
    every state to the tree; rollouts at the same step share one model call. Returns the leaves
    and the next free id."""
    current = []
    for n in starts:
        if n == 0:
            i = len(tree.children[0])
            fresh = noise[i : i + 1] if i < noise.shape[0] else model.initial_noise([i]).to(noise.dtype)
            current.append(tree.add(0, fresh, next_id))
            next_id += 1
        else:
            current.append(n)
    for j in range(min(tree.step[c] for c in current), len(shape.pieces)):
        # The rollout that starts highest takes every step: no step is without rows.
        rows = [k for k, c in enumerate(current) if tree.step[c] == j]
        ids = list(range(next_id, next_id + len(rows)))
        next_id += len(rows)
        states, fresh = torch.cat([tree.states[current[k]] for k in rows]), None
        if j == 0:
            states, fresh = None, states
        elif shape.renoised:
            states, fresh = model.renoise(states, float(sigmas[j]), float(shape.pieces[j][0]), generator)
        out, _ = model.advance(states, fresh, shape.pieces[j], ids)
        for k, state, node_id in zip(rows, out, ids):
            current[k] = tree.add(current[k], state[None], node_id)
    return current, next_id


def _back_up(tree: _Tree, shape: _TreeShape, leaves: list[int], roots: int) -> None:
    """Mark the new leaves, and close every node whose subtree has no room left."""
    for c in leaves:
        tree.leaf_rows[c], tree.states[c] = len(tree.leaf_rows), None
        node = c
        while node is not None:
            tree.open[node] = len(tree.children[node]) < shape.max_children(tree, node, roots) or \
                any(tree.open[k] for k in tree.children[node])
            node = tree.parent[node]


def tree_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                callback: Callback = None, select: Selection = BEST, rollouts: int = 16, branches: int = 2,
                lmbda: float = 1.0, greedy: bool = True, wave: int = 4, renoise: float = 0.1) -> SearchResult:
    """Diffusion tree sampling / search (Jain et al. 2025, arXiv 2506.20701): the denoising chain
    as a tree whose edges are stochastic sampler steps. Each rollout descends from the root by
    the children's soft values (``greedy``: the best one, DTS*; otherwise sampled in proportion
    to exp(lambda v), DTS), expands the first node with fewer than ``branches`` children (the
    root's children are initial noises: ``branches`` of them, one more whenever the whole tree
    is grown out, the stock noise of its index), and rolls out to a clean sample, adding every
    state on the way to the tree; the rewards are backed up with the soft Bellman backup.
    ``wave`` rollouts share their model calls. The winner is the best-scoring clean sample.

    Stochastic steps as in particle steering: the sampler's own per-step noise under a fresh
    id per node, or, for samplers without it, re-noising ``renoise`` levels up before each
    step. Where no step adds noise (a deterministic sampler at renoise 0) nothing can branch
    below an initial noise: the search is best-of-``rollouts`` over stock samples.
    """
    shape = _tree_shape(model, sigmas, branches, 0.0 if model.stochastic else renoise)
    if not any(shape.noisy):
        if rollouts > noise.shape[0]:
            noise = torch.cat([noise, model.initial_noise(list(range(noise.shape[0], rollouts))).to(noise.dtype)])
        return _best_of(model, noise[:rollouts], sigmas, sigmas, budget=budget, top_k=top_k, callback=callback,
                        round_size=wave, select=select, generator=generator)
    step_cost = [model.nfe(p) for p in shape.pieces]
    # At most: a rollout from the root pays every step.
    plan = _Plan(rollouts, top_k, rollouts * sum(step_cost))
    record = _Record(budget, callback, plan.planned, select)
    pool = record.pool(model, top_k)
    record.ledger.require(sum(step_cost), "one rollout")
    tree, next_id, roots, leaf_scores, done = _Tree(), 0, branches, None, 0
    while done < rollouts:
        values, _ = _soft_values(tree, compare(model, leaf_scores) if leaf_scores is not None else None, lmbda)
        pending, starts = [0] * len(tree.step), []
        for _ in range(min(wave, rollouts - done)):
            if not tree.open[0]:
                # Every branch of the tree is grown out: start another initial noise (anytime).
                roots, tree.open[0] = roots + 1, True
            node = _descend(tree, shape, values, pending, roots, greedy, lmbda, generator)
            if node is None:
                break  # the rest of the tree is taken by this wave's other rollouts
            pending[node] += 1
            starts.append(node)
        cost = [sum(step_cost[max(0, tree.step[n]) :]) for n in starts]
        while starts and not record.ledger.affords(sum(cost)):
            starts.pop(), cost.pop()
            record.stop()
        if not starts:
            break
        branched = [tree.step[n] for n in starts]  # -1: a new initial noise
        parents = [tree.ids[n] for n in starts]    # None: the root
        leaves, next_id = _expand(model, tree, shape, starts, noise, next_id, sigmas, generator)
        record.ledger.pay(sum(cost))
        finished = torch.cat([tree.states[c] for c in leaves])
        scored = model.score(finished)
        leaf_ids = [tree.ids[c] for c in leaves]
        # The pool keeps the finished samples (the best k; every one for a rank ensemble).
        pool.add(scored.values, finished, None, leaf_ids)
        leaf_scores = _cat(leaf_scores, scored.values)
        _back_up(tree, shape, leaves, roots)
        new = compare(model, leaf_scores)[-len(leaves):]
        recorded = record.entries(leaf_ids, new, len(record.rounds), members=_members(model, scored.values))
        for entry, step, parent, leaf in zip(recorded, branched, parents, leaves):
            entry.update(branched_at=step, branched_from=parent, path=tree.path(leaf), noise=tree.noise_index(leaf))
        done += len(leaves)
        record.round(len(record.rounds), leaf_ids, new, scored, pool, rollouts=len(leaves),
                     nodes=len(tree.step) - 1, branched_at=branched)
        if record.reached(new):
            break
    # A candidate's score is its value among every leaf (for a rank ensemble, its rank in the
    # final ranking, the one that picked the winner); entries are in leaf order.
    for entry, value in zip(record.candidates, compare(model, leaf_scores).tolist()):
        entry["score"] = value
    return _finish(model, sigmas, plan, record, pool, generator=generator)


__all__ = ["PARTICLE_JUDGE", "compare", "early_rejection", "particle_steering", "path_search", "random_search",
           "tree_search", "zero_order_search"]
