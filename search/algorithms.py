"""The paper's three search algorithms, and three that came after it, as short, pure tensor functions.

Shared signature (like k-diffusion's samplers)::

    fn(model, noise, sigmas, *, generator, budget=None, top_k=1, callback=None, **options)

- ``model``: a :class:`search.backend.SearchBackend`;
- ``noise``: initial noises, [N, ...] candidates (random), [1, ...] the first pivot
  (zero-order), [N, ...] the initial paths (paths); row i is candidate id i;
- ``sigmas``: the full schedule; a cheaper search schedule comes from ``model.schedule(True)``;
- ``generator``: the only source of randomness after ``noise``, so a seed reproduces a run;
- ``budget``: total NFEs (search + final denoising); a round that would exceed it is not
  started; ``callback(info)`` is called after every scored round with the round's ids,
  values, images and the plan.

Each returns a :class:`search.backend.SearchResult` built once, at the end, from its pool of
scored candidates: the reported winner is always the returned latent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .backend import Ledger, SearchBackend, SearchResult
from .noise import gaussian, sphere_neighbours
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

    def __init__(self, model: SearchBackend, k: int):
        self.model, self.k = model, k
        self.prune = not getattr(model, "relative", False)
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


def _judge_cost(sigmas: torch.Tensor) -> int:
    return 1 if float(sigmas[-1]) > 0 else 0


def _judged(model: SearchBackend, latents: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """What a verifier can judge of a run along ``sigmas``: its clean result, or, for a segment
    that stops above 0 and hands its leftover noise on, the model's x0-prediction there (one
    NFE per candidate, counted in the run's cost)."""
    end = float(sigmas[-1])
    return latents if end == 0 else model.predict_x0(latents, end)


class _Run:
    """What every algorithm keeps while it runs: the ledger, the pool, the record of rounds and
    candidates, and the schedules. The result is built from it once, by ``finish``."""

    def __init__(self, model: SearchBackend, sigmas: torch.Tensor, budget, top_k: int, callback: Callback):
        self.model, self.sigmas, self.callback, self.k = model, sigmas, callback, top_k
        self.search_sigmas = model.schedule(True)
        self.regenerate = not torch.equal(self.search_sigmas, sigmas)
        self.per = model.nfe(self.search_sigmas) + _judge_cost(self.search_sigmas)
        self.final_per = model.nfe(sigmas) + _judge_cost(sigmas)
        self.reserve = self.final_per * top_k if self.regenerate else 0
        self.ledger, self.pool = Ledger(budget), _Pool(model, top_k)
        self.rounds: list[dict] = []
        self.candidates: list[dict] = []
        self.planned, self.stopped = 0, False

    def evaluate(self, noise: torch.Tensor, ids: list[int]):
        """Solve fresh noises along the search schedule and score them (NFEs paid)."""
        latents, early = self.model.solve(None, noise, self.search_sigmas, ids)
        self.ledger.pay(self.per * len(ids))
        return latents, self.model.score(_judged(self.model, latents, self.search_sigmas), early)

    def record(self, ids, values, round_index: int, **extra) -> list[dict]:
        entries = [{"id": int(i), "round": round_index, "score": float(v), **extra}
                   for i, v in zip(ids, values.tolist())]
        self.candidates.extend(entries)
        return entries

    def round_done(self, round_index: int, ids, values, scored, **extra) -> None:
        best_id, best_score = self.pool.best() if self.pool.ids else (None, None)
        info = {"round": round_index, "nfe": self.ledger.spent, "planned": self.planned,
                "best_id": best_id, "best_score": best_score, **extra}
        self.rounds.append(dict(info))
        if self.callback:
            self.callback({**info, "ids": list(ids), "scores": values.tolist(), "images": scored.images})

    def finish(self) -> SearchResult:
        """Take the pool's best k; regenerate them on the full schedule when the search used a
        cheaper one, and score the returned latents again (their scores are what is reported)."""
        pool = self.pool
        rows = pool.order()[: self.k]
        values = compare(self.model, pool.values)[rows]
        ids, latents, noises = [pool.ids[i] for i in rows.tolist()], pool.latents[rows], pool.noises[rows]
        search_scores = None
        if self.regenerate:
            self.ledger.pay(self.final_per * len(ids))
            latents, early = self.model.solve(None, noises, self.sigmas, ids)
            final = compare(self.model, self.model.score(_judged(self.model, latents, self.sigmas), early).values)
            again = best_first(final)
            search_scores = values[again].tolist()
            values, latents, noises = final[again], latents[again], noises[again]
            ids = [ids[i] for i in again.tolist()]
        return SearchResult(
            best=latents[:1], best_id=ids[0], best_score=float(values[0]), top=latents, top_ids=ids,
            top_scores=values.tolist(), best_noise=noises[:1] if noises.ndim > 1 else None,
            search_scores=search_scores, rounds=self.rounds, candidates=self.candidates,
            nfe=self.ledger.spent, planned_nfe=self.planned, stopped_by_budget=self.stopped)


def random_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                  generator: torch.Generator | None = None, budget: int | None = None,
                  top_k: int = 1, callback: Callback = None,
                  round_size: int | None = None) -> SearchResult:
    """Best-of-N: solve every candidate noise, score it, keep the argmax."""
    n = noise.shape[0]
    run = _Run(model, sigmas, budget, min(top_k, n), callback)
    run.planned = n * run.per + run.reserve
    if run.ledger.budget is not None:
        # The budget buys the most candidates whose search plus the regeneration of the kept
        # ones (at most k of them) it can pay for.
        regen = run.final_per if run.regenerate else 0
        run.ledger.require(run.per + regen, "one candidate")
        afford = max(m for m in range(1, n + 1) if m * run.per + min(run.k, m) * regen <= run.ledger.budget)
        if afford < n:
            n, run.stopped, run.k = afford, True, min(run.k, afford)
    # One round per model chunk (the backend's hint), so progress views fill in as
    # candidates finish; the result does not depend on it.
    step, seen = round_size or getattr(model, "chunk", None) or n, []
    for r, start in enumerate(range(0, n, step)):
        ids = list(range(start, min(n, start + step)))
        latents, scored = run.evaluate(noise[ids], ids)
        run.pool.add(scored.values, latents, noise[ids], ids)
        seen.append(scored.values)
        run.round_done(r, ids, compare(model, torch.cat(seen))[start:], scored)
    # Recorded at the end: a candidate's score is its value among all N (for a rank
    # ensemble, its rank among every candidate, the ranking that picked the winner).
    everyone = compare(model, torch.cat(seen))
    for r, start in enumerate(range(0, n, step)):
        run.record(range(start, min(n, start + step)), everyone[start : start + step], r)
    return run.finish()


def zero_order_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                      generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                      callback: Callback = None, neighbours: int = 2, angle: float = 30.0,
                      iterations: int = 8, restart: bool = True) -> SearchResult:
    """Zero-order search: move a pivot to its best neighbour on the pivot's sphere.

    Every round compares the pivot with its neighbours in one comparison (for a rank
    ensemble: one ranking of the 1 + N of them); the pivot's scores are carried over from
    the round that found it, never paid for twice. With ``restart``, a round where no
    neighbour beats the pivot re-draws the pivot from a fresh noise.
    """
    run = _Run(model, sigmas, budget, top_k, callback)
    run.planned = run.per * (1 + iterations * neighbours) + run.reserve
    run.ledger.require(run.per + run.reserve, "scoring the first pivot")
    pivot, pivot_id = noise[:1], 0
    latents, scored = run.evaluate(pivot, [0])
    pivot_values = scored.values
    run.pool.add(pivot_values, latents, pivot, [0])
    run.record([0], compare(model, pivot_values), 0, kind="pivot")
    run.round_done(0, [0], compare(model, pivot_values), scored, pivot=0, moved=False)
    next_id = 1
    for it in range(1, iterations + 1):
        if not run.ledger.affords(run.per * neighbours + run.reserve):
            run.stopped = True
            break
        cands = sphere_neighbours(pivot, neighbours, angle, generator)
        ids = list(range(next_id, next_id + neighbours))
        next_id += neighbours
        latents, scored = run.evaluate(cands, ids)
        run.pool.add(scored.values, latents, cands, ids)
        values = compare(model, torch.cat([pivot_values, scored.values]))
        run.record(ids, values[1:], it, kind="neighbour", pivot=pivot_id)
        best = int(best_first(values[1:])[0])
        moved = bool(values[1 + best] > values[0])
        if moved:
            pivot, pivot_id, pivot_values = cands[best : best + 1], ids[best], scored.values[best : best + 1]
        elif restart and it < iterations and run.ledger.affords(run.per * (1 + neighbours) + run.reserve):
            # A fixed point of the local search: start again from a fresh noise.
            pivot, pivot_id = gaussian(tuple(pivot.shape), generator).to(pivot.dtype), next_id
            next_id += 1
            fresh, fresh_scored = run.evaluate(pivot, [pivot_id])
            pivot_values = fresh_scored.values
            run.pool.add(pivot_values, fresh, pivot, [pivot_id])
            run.planned += run.per
            run.record([pivot_id], compare(model, pivot_values), it, kind="restart")
        run.round_done(it, ids, values[1:], scored, pivot=pivot_id, moved=moved)
    return run.finish()


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
                callback: Callback = None, branches: int = 2, start: float = 0.4,
                forward: float = 0.2, backward: float = 0.3, interval_steps: int = 4) -> SearchResult:
    """Search over paths: branch N paths into N*M by re-noising, denoise, keep the top N.

    Each round re-noises from level t up to t + forward, solves down to t + forward -
    backward with ``interval_steps`` steps, and scores the x0-prediction there (one extra
    NFE; none when the round reaches 0). A round's children are compared among themselves;
    the winner is the best of the N finished survivors.
    """
    if backward <= forward:
        raise ValueError(f"backward ({backward}) must be greater than forward ({forward})")
    n, m = noise.shape[0], branches
    run = _Run(model, sigmas, budget, min(top_k, n), callback)
    # Noise is injected along the way: the paths are searched on the full schedule, and
    # nothing can be regenerated from an initial noise.
    run.regenerate, run.reserve = False, 0
    head = _split(sigmas, model.level_sigma(start))[0]

    def round_cost(t_up, t_down):
        return n * m * (model.nfe(_segment(model, t_up, t_down, interval_steps)) + (1 if t_down > 0 else 0))

    def finish_cost(t):
        return n * model.nfe(_split(sigmas, model.level_sigma(t))[1]) if t > 0 else 0

    run.planned = n * model.nfe(head) + sum(round_cost(u, d) for _, u, d in _path_rounds(start, forward, backward))
    run.ledger.require(n * model.nfe(head) + finish_cost(start), f"{n} paths without any search round")
    ids = list(range(n))
    state, _ = model.solve(None, noise, head, ids)
    run.ledger.pay(n * model.nfe(head))
    values, t, next_id = None, start, n
    for r, (t, t_up, t_down) in enumerate(_path_rounds(start, forward, backward), start=1):
        if not run.ledger.affords(round_cost(t_up, t_down) + finish_cost(t_down)):
            run.stopped = True
            break
        children = list(range(next_id, next_id + n * m))
        parents = [ids[i // m] for i in range(n * m)]
        next_id += n * m
        branched, fresh = model.renoise(state.repeat_interleave(m, 0), model.level_sigma(t),
                                        model.level_sigma(t_up), generator)
        seg = _segment(model, t_up, t_down, interval_steps)
        branched, _ = model.solve(branched, fresh, seg, children)
        x0 = model.predict_x0(branched, float(seg[-1])) if t_down > 0 else branched
        run.ledger.pay(round_cost(t_up, t_down))
        scored = model.score(x0)
        round_values = compare(model, scored.values)
        for entry, parent in zip(run.record(children, round_values, r, level=t_down), parents):
            entry["parent"] = parent
        keep = best_first(round_values)[:n]
        state, values, ids = branched[keep], scored.values[keep], [children[i] for i in keep.tolist()]
        run.pool = _Pool(model, run.k)
        run.pool.add(values, x0[keep], None, ids)
        run.round_done(r, children, round_values, scored, level=t_down)
        t = t_down
    if t > 0:
        # Out of budget for another round: finish the survivors along the full schedule.
        rest = _split(sigmas, model.level_sigma(t))[1]
        state, _ = model.solve(state, None, rest, ids)
        run.ledger.pay(n * model.nfe(rest))
        values = model.score(state).values
    run.pool = _Pool(model, run.k)
    run.pool.add(values, state, None, ids)
    return run.finish()


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


def particle_steering(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                      generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                      callback: Callback = None, potential: str = "max", lmbda: float = 10.0,
                      interval: int = 1, ess_threshold: float = 0.5, renoise: float = 0.1) -> SearchResult:
    """Feynman-Kac steering: K particles advanced together along the schedule with stochastic
    steps; every ``interval`` steps each is weighted by a potential of the verifier's rewards of
    its x0-predictions (the ones the sampler just computed: no extra model call), and the
    particles are resampled (systematic) when the effective sample size falls below
    ``ess_threshold`` x K. The winner is the best-scoring particle at the end.

    Stochastic steps: the backend's sampler where it injects noise (each particle's draws its
    own, by id: particles get fresh ids every round, so copies of one particle part ways);
    otherwise the pack re-noises every particle ``renoise`` levels up before each piece.
    Rewards are ``compare`` values among the K particles of the round (for a rank ensemble,
    ranks among them).
    """
    k = noise.shape[0]
    run = _Run(model, sigmas, budget, min(top_k, k), callback)
    run.regenerate, run.reserve = False, 0  # noise enters along the way: nothing to regenerate
    own_steps = renoise > 0 and not model.stochastic
    pieces = _steering_segments(model, sigmas, max(1, interval), renoise if own_steps else 0.0)
    # The sampler's last x0-prediction of a piece is made at the start of its last step. In a
    # one-step piece that starts where resampling left the particles (no re-noising), copies of
    # one particle would all get their parent's prediction: there, the particles' own
    # x0-predictions are asked of the model (one NFE each, counted).
    asks = [len(p) == 2 and r > 0 and not own_steps for r, p in enumerate(pieces[:-1])] + [False]
    per = sum(model.nfe(p) + ask for p, ask in zip(pieces, asks))
    run.planned = k * per
    if run.ledger.budget is not None:
        run.ledger.require(per, "one particle")
        if k * per > run.ledger.budget:
            k, run.stopped = run.ledger.budget // per, True
            run.k = min(run.k, k)
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
        run.ledger.pay(k * (model.nfe(piece) + asks[r]))
        scored = model.score(state if last else x0)
        values = compare(model, scored.values)
        level = 0.0 if last else model.sigma_level(ended)
        entries = run.record(ids, values, r, level=level)
        for entry, parent in zip(entries, parents):
            if parent is not None:
                entry["parent"] = parent
        run.pool = _Pool(model, run.k)
        run.pool.add(scored.values, state if last else x0, None, ids)
        if last:
            run.round_done(r, ids, values, scored, level=0.0)
            break
        history = torch.cat([history, values[:, None]], dim=1)
        log_w = log_w + log_potential(potential, history, lmbda)
        ess = effective_sample_size(log_w)
        for entry, w in zip(entries, normalized(log_w).tolist()):
            entry["weight"] = w
        # Equal weights give ESS = K up to rounding: that is never a reason to resample.
        resampled = ess < ess_threshold * k * (1 - 1e-6)
        order = systematic_resample(log_w, generator) if resampled else torch.arange(k)
        parents = [ids[i] for i in order.tolist()]
        state, history = state[order], history[order]
        if resampled:
            log_w = torch.zeros(k)
        run.round_done(r, ids, values, scored, level=level, ess=ess, resampled=resampled, ancestors=parents,
                       x0="model call" if asks[r] else "sampler")
    return run.finish()


def _rejection_steps(model: SearchBackend, sigmas: torch.Tensor, levels) -> list[int]:
    """Schedule steps where early rejection judges: for each level, the inner step whose sigma
    is nearest to the level's (the trajectories are not changed to meet a level exactly)."""
    inner = range(1, len(sigmas) - 1)
    steps = {min(inner, key=lambda i: abs(float(sigmas[i]) - model.level_sigma(t))) for t in levels} if inner else set()
    return sorted(steps)


def early_rejection(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                    generator: torch.Generator | None = None, budget: int | None = None, top_k: int = 1,
                    callback: Callback = None, keep: float = 0.5,
                    levels: tuple[float, ...] = (0.7, 0.4)) -> SearchResult:
    """Early rejection (successive halving): start N candidates; at each level score their
    x0-predictions (the ones the sampler just computed: no extra model call), keep the best
    ``keep`` fraction (at least top_k) and continue only those; finish and score the survivors.

    The survivors continue their own trajectories. Where the backend reports that a run split
    into pieces differs from the run in one piece (a sampler with per-step noise or with a
    multistep history), the kept candidates are regenerated from their initial noises along the
    whole schedule (paid), so a winner is always its noise's plain sample. With a budget, N is
    the most candidates whose rounds (and regeneration) it pays for.
    """
    steps = _rejection_steps(model, sigmas, levels)
    bounds = [0, *steps, len(sigmas) - 1]
    pieces = [sigmas[a : b + 1] for a, b in zip(bounds[:-1], bounds[1:])]
    costs = [model.nfe(p) for p in pieces]
    resumable = bool(model.resumable(sigmas, steps))
    full = model.nfe(sigmas)

    def survivors(n: int) -> list[int]:
        counts = [n]
        for _ in steps:
            counts.append(max(min(top_k, n), math.ceil(counts[-1] * keep - 1e-9)))
        return counts

    def cost(n: int) -> int:
        regen = 0 if resumable else min(top_k, survivors(n)[-1]) * full
        return sum(c * m for c, m in zip(costs, survivors(n))) + regen

    n = noise.shape[0]
    run = _Run(model, sigmas, budget, min(top_k, n), callback)
    run.planned = cost(n)
    if run.ledger.budget is not None:
        run.ledger.require(cost(1), "one candidate")
        afford = max(m for m in range(1, n + 1) if cost(m) <= run.ledger.budget)
        if afford < n:
            n, run.stopped = afford, True
    counts = survivors(n)
    run.k = min(run.k, counts[-1])
    run.regenerate, run.final_per = not resumable, full
    ids, state, next_id = list(range(n)), None, n
    for r, piece in enumerate(pieces):
        last = r == len(pieces) - 1
        # A survivor continues under a fresh id: a sampler with per-step noise draws new noise
        # for the rest of its trajectory rather than repeat its first draws.
        lanes = ids if state is None else list(range(next_id, next_id + len(ids)))
        next_id += 0 if state is None else len(ids)
        state, x0 = model.advance(state, noise[ids] if r == 0 else None, piece, lanes)
        run.ledger.pay(len(ids) * costs[r])
        scored = model.score(state if last else x0)
        values = compare(model, scored.values)
        level = 0.0 if last else model.sigma_level(float(piece[-1]))
        run.record(ids, values, r, level=level, step=bounds[r + 1])
        run.pool = _Pool(model, run.k)
        if last:
            run.pool.add(scored.values, state, noise[ids], ids)
            run.round_done(r, ids, values, scored, level=0.0, step=bounds[r + 1], lanes=lanes)
            break
        judged, kept = ids, best_first(values)[: counts[r + 1]]
        state, ids = state[kept], [judged[i] for i in kept.tolist()]
        rejected = sorted(set(judged) - set(ids))
        run.pool.add(scored.values[kept], x0[kept], noise[ids], ids)
        run.round_done(r, judged, values, scored, level=level, step=bounds[r + 1], lanes=lanes, kept=list(ids),
                       rejected=rejected)
    return run.finish()


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

    def path(self, node: int) -> list:
        """The ids of the nodes from the initial noise down to ``node``."""
        ids = []
        while node:
            ids.append(self.ids[node])
            node = self.parent[node]
        return ids[::-1]


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


def tree_search(model: SearchBackend, noise: torch.Tensor, sigmas: torch.Tensor, *,
                generator: torch.Generator, budget: int | None = None, top_k: int = 1,
                callback: Callback = None, rollouts: int = 16, branches: int = 2, lmbda: float = 1.0,
                greedy: bool = True, wave: int = 4, renoise: float = 0.1) -> SearchResult:
    """Diffusion tree sampling / search (Jain et al. 2025, arXiv 2506.20701): the denoising chain
    as a tree whose edges are stochastic sampler steps. Each rollout descends from the root by
    the children's soft values (``greedy``: the best one, DTS*; otherwise sampled in proportion
    to exp(lambda v), DTS), expands the first node with fewer than ``branches`` children (the
    root's children are initial noises: ``branches`` of them, one more whenever the whole tree
    is grown out, drawn from ``generator`` beyond those given), and rolls out to a clean sample, adding every state on
    the way to the tree; the rewards are backed up with the soft Bellman backup. ``wave``
    rollouts share their model calls. The winner is the best-scoring clean sample found.

    Stochastic steps as in particle steering: the sampler's own per-step noise under a fresh
    id per node, or, for samplers without it, re-noising ``renoise`` levels up before each
    step (there the initial noise's first step is deterministic: one child per initial noise).
    """
    steps = len(sigmas) - 1
    run = _Run(model, sigmas, budget, top_k, callback)
    run.regenerate, run.reserve = False, 0
    model_stochastic = bool(model.stochastic)
    own_steps = renoise > 0 and not model_stochastic

    def piece(j: int) -> torch.Tensor:
        p = sigmas[j : j + 2].clone()
        if own_steps and j > 0:
            p[0] = _renoised_from(model, sigmas, float(p[0]), renoise)
        return p

    pieces = [piece(j) for j in range(steps)]
    step_cost = [model.nfe(p) for p in pieces]
    run.planned = rollouts * sum(step_cost)  # at most: a rollout from the root pays every step

    def max_children(node: int) -> int:
        if node == 0:
            return roots
        s = tree.step[node]
        if s == steps:
            return 0
        # A step that adds no noise gives one child: without per-step noise, the first step
        # from an initial noise (nothing above it to re-noise to) and every step at renoise 0;
        # with it, the last step (samplers add no noise on the step to sigma 0).
        noisy = (own_steps and s > 0) or (model_stochastic and float(sigmas[s + 1]) > 0)
        return branches if noisy else 1

    run.ledger.require(sum(step_cost), "one rollout")
    tree, next_id, roots = _Tree(), 0, branches
    leaf_scores = None
    done, r = 0, 0
    while done < rollouts:
        values, _ = _soft_values(tree, compare(model, leaf_scores) if leaf_scores is not None else None, lmbda)
        pending = [0] * len(tree.step)
        starts = []
        for _ in range(min(wave, rollouts - done)):
            node = 0
            if not tree.open[0]:
                # Every branch of the tree is grown out: start another initial noise (anytime).
                roots, tree.open[0] = roots + 1, True
            while tree.open[node] and len(tree.children[node]) + pending[node] >= max_children(node):
                kids = [c for c in tree.children[node] if tree.open[c]]
                if not kids:
                    node = None
                    break
                v = torch.tensor([values[c] for c in kids], dtype=torch.float64)
                v = torch.where(torch.isfinite(v), v, torch.full_like(v, -1e30))
                if greedy:
                    node = kids[int(torch.argmax(v))]
                else:
                    p = torch.softmax(lmbda * v, 0) if lmbda else torch.full_like(v, 1 / len(kids))
                    node = kids[int(torch.multinomial(p, 1, generator=generator))]
            if node is None:
                break  # the rest of the tree is taken by this wave's other rollouts
            pending[node] += 1
            starts.append(node)
        # (the first rollout of a wave always finds a node: an open tree has one to expand, and
        # a grown-out tree gets another initial noise)
        cost = [sum(step_cost[max(0, tree.step[n]) :]) for n in starts]
        while starts and not run.ledger.affords(sum(cost)):
            starts.pop(), cost.pop()
            run.stopped = True
        if not starts:
            break
        # Expand: a new initial noise under the root, otherwise a step from the chosen node.
        branched = [tree.step[n] for n in starts]  # -1: a new initial noise
        parents = [tree.ids[n] for n in starts]    # None: the root
        current = []
        for n in starts:
            if n == 0:
                i = len(tree.children[0])
                fresh = noise[i : i + 1] if i < noise.shape[0] else \
                    gaussian((1, *noise.shape[1:]), generator).to(noise.dtype)
                current.append(tree.add(0, fresh, next_id))
                next_id += 1
            else:
                current.append(n)
        for j in range(min(tree.step[c] for c in current), steps):
            # The rollout that starts highest takes every step: no step is without rows.
            rows = [k for k, c in enumerate(current) if tree.step[c] == j]
            ids = list(range(next_id, next_id + len(rows)))
            next_id += len(rows)
            states = torch.cat([tree.states[current[k]] for k in rows])
            if j == 0:
                out, _ = model.advance(None, states, pieces[0], ids)
            else:
                fresh = None
                if own_steps:
                    states, fresh = model.renoise(states, float(sigmas[j]), float(pieces[j][0]), generator)
                out, _ = model.advance(states, fresh, pieces[j], ids)
            run.ledger.pay(len(rows) * step_cost[j])
            for k, state, node_id in zip(rows, out, ids):
                current[k] = tree.add(current[k], state[None], node_id)
        finished = torch.cat([tree.states[c] for c in current])
        scored = model.score(finished)
        leaf_ids = [tree.ids[c] for c in current]
        # The pool keeps the finished samples (the best k; every one for a rank ensemble).
        run.pool.add(scored.values, finished, None, leaf_ids)
        leaf_scores = _cat(leaf_scores, scored.values)
        for c in current:
            tree.leaf_rows[c], tree.states[c] = len(tree.leaf_rows), None
            node = c
            while node is not None:
                tree.open[node] = len(tree.children[node]) < max_children(node) or \
                    any(tree.open[k] for k in tree.children[node])
                node = tree.parent[node]
        new = compare(model, leaf_scores)[-len(current):]
        entries = run.record(leaf_ids, new, r)
        for entry, step, parent, leaf in zip(entries, branched, parents, current):
            entry["branched_at"], entry["branched_from"] = step, parent
            entry["path"] = tree.path(leaf)
        done += len(current)
        run.round_done(r, leaf_ids, new, scored, rollouts=len(current), nodes=len(tree.step) - 1,
                       branched_at=branched)
        r += 1
    # A candidate's score is its value among every leaf (for a rank ensemble, its rank in the
    # final ranking, the one that picked the winner); entries are in leaf order.
    for entry, value in zip(run.candidates, compare(model, leaf_scores).tolist()):
        entry["score"] = value
    return run.finish()


SEARCHES = {"random": random_search, "zero_order": zero_order_search, "paths": path_search,
            "particles": particle_steering, "rejection": early_rejection, "tree": tree_search}

__all__ = ["SEARCHES", "compare", "early_rejection", "particle_steering", "path_search", "random_search",
           "tree_search", "zero_order_search"]
