"""Promised behaviours that the mutation run (`make mutation`) found unguarded.

Each test here kills mutants of search/ or of the scoring code (verifiers/ensemble.py,
verifiers/scoring.py) that the other fast tests let pass: budgets and NFE accounting, the
plan, pool ordering and ties, strict pivot moves and restarts, the path levels, rounds and
callbacks, early x0-predictions, rank ensembles, chunked scoring and out-of-memory halving.
Pure and fast: the exact Gaussian-mixture backend of tests/analytic_backend.py, no ComfyUI.
"""

from __future__ import annotations

import math

import pytest
import torch

from search import (
    BudgetError,
    Scores,
    Strategy,
    path_search,
    random_search,
    sphere_neighbours,
    zero_order_search,
)
from search.chunking import ChunkOOMError, is_oom, map_chunked
from tests.analytic_backend import GaussianMixtureBackend
from verifiers.base import Verifier, VerifierError
from verifiers.ensemble import EnsembleVerifier, fractional_ranks, mean_rank
from verifiers.scoring import ranking, score_in_chunks

MEANS = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])


def backend(**kw):
    return GaussianMixtureBackend(MEANS, **kw)


def noise(n, seed=0, dtype=torch.float32):
    return torch.randn((n, 2), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


class Flat(GaussianMixtureBackend):
    """Every candidate gets the same score: every comparison is a tie."""

    def score(self, latents, early=None):
        self.scored += latents.shape[0]
        return Scores(torch.zeros(latents.shape[0], 1), images=latents)


class Recording(GaussianMixtureBackend):
    """Records what the algorithms ask of the model; ``solve`` returns an early x0 of its own
    rows (the state + 100), and ``score`` records the early tensor it is given."""

    def __init__(self, *args, chunk=None, **kw):
        super().__init__(MEANS, *args, **kw)
        if chunk is not None:
            self.chunk = chunk
        self.solves, self.x0_sigmas, self.renoised, self.early_seen = [], [], [], []

    def solve(self, state, noise, sigmas, ids):
        self.solves.append({"fresh": state is None, "sigmas": sigmas.clone(), "ids": list(ids)})
        x, _ = super().solve(state, noise, sigmas, ids)
        return x, x + 100.0

    def predict_x0(self, state, sigma):
        self.x0_sigmas.append(sigma)
        return super().predict_x0(state, sigma)

    def renoise(self, state, sigma_from, sigma_to, generator):
        self.renoised.append((sigma_from, sigma_to))
        return super().renoise(state, sigma_from, sigma_to, generator)

    def score(self, latents, early=None):
        self.early_seen.append(None if early is None else early - latents)
        return super().score(latents)


# -- budgets and the plan ------------------------------------------------------------------------

def test_budget_zero_or_none_means_no_limit_and_one_is_a_limit():
    for budget in (None, 0):
        m = backend(steps=10)
        res = random_search(m, noise(5), m.schedule(), budget=budget)
        assert res.nfe == 50 and not res.stopped_by_budget and len(res.candidates) == 5
    with pytest.raises(BudgetError, match="budget of 1 NFEs"):
        random_search(backend(steps=10), noise(5), backend(steps=10).schedule(), budget=1)


def test_budget_errors_name_what_cannot_be_paid_and_the_minimum():
    m = backend(steps=10)
    with pytest.raises(BudgetError, match=r"one candidate \(10 NFEs\); raise 'budget' to at least 10 or set it to 0 for no limit"):
        random_search(m, noise(4), m.schedule(), budget=9)
    # With cheaper search steps one candidate costs its search (3) and its regeneration (12).
    m = backend(steps=12, search_steps=3)
    with pytest.raises(BudgetError, match=r"one candidate \(15 NFEs\)"):
        random_search(m, noise(4), m.schedule(), budget=14)
    with pytest.raises(BudgetError, match=r"scoring the first pivot \(15 NFEs\)"):
        zero_order_search(m, noise(1), m.schedule(), generator=gen(), budget=14)
    m = backend(steps=20)
    need = 2 * 10 + 2 * 10  # two paths down to level 0.5 (10 of 20 steps), then finished (10 more)
    with pytest.raises(BudgetError, match=rf"2 paths without any search round \({need} NFEs\)"):
        path_search(m, noise(2), m.schedule(), generator=gen(), start=0.5, budget=need - 1)
    res = path_search(m, noise(2), m.schedule(), generator=gen(), start=0.5, budget=need)
    assert res.nfe == need == m.rows and res.stopped_by_budget


def test_budget_of_exactly_one_candidate_buys_one():
    m = backend(steps=10)
    res = random_search(m, noise(4), m.schedule(), budget=10)
    assert res.nfe == 10 and res.stopped_by_budget and [c["id"] for c in res.candidates] == [0]


def test_random_search_budget_sweep_buys_candidates_after_the_reserve():
    """The budget buys (budget - reserve) // per candidates, the reserve paying the
    regeneration of the kept ones; never more than the budget."""
    n, k, per, final = 6, 2, 3, 12
    for budget in range(per + final, n * per + k * final + 4):
        m = backend(steps=final, search_steps=per)
        res = random_search(m, noise(n), m.schedule(), top_k=k, budget=budget)
        bought = min(n, max(1, (budget - k * final) // per))
        assert len(res.candidates) == bought, budget
        assert res.nfe == bought * per + min(k, bought) * final == m.rows, budget
        assert res.nfe <= budget and res.stopped_by_budget == (bought < n), budget
        assert len(res.top_ids) == min(k, bought)


def test_exact_budget_runs_the_whole_plan():
    """A budget equal to the plan runs everything and is not 'stopped by budget'."""
    runs = {
        "random": lambda m, **kw: random_search(m, noise(5), m.schedule(), top_k=2, **kw),
        "zero_order": lambda m, **kw: zero_order_search(m, noise(1), m.schedule(), generator=gen(3),
                                                        neighbours=2, iterations=3, restart=False, **kw),
        "paths": lambda m, **kw: path_search(m, noise(2), m.schedule(), generator=gen(3), branches=2,
                                             start=0.5, forward=0.2, backward=0.3, interval_steps=2, **kw),
    }
    for name, run in runs.items():
        search_steps = None if name == "paths" else 3
        free = run(backend(steps=8, search_steps=search_steps))
        assert free.nfe == free.planned_nfe and not free.stopped_by_budget, name
        m = backend(steps=8, search_steps=search_steps)
        exact = run(m, budget=free.planned_nfe)
        assert exact.nfe == free.nfe == m.rows and not exact.stopped_by_budget, name
        assert exact.best_id == free.best_id and exact.candidates == free.candidates, name


def test_planned_nfe_closed_forms():
    m = backend(steps=12, search_steps=3)
    assert random_search(m, noise(5), m.schedule(), top_k=2).planned_nfe == 5 * 3 + 2 * 12
    m = backend(steps=12, search_steps=3)
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=3, iterations=4, restart=False)
    assert res.planned_nfe == 3 * (1 + 4 * 3) + 12 == res.nfe
    m = Flat(MEANS, steps=5)
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=2, iterations=4)
    restarts = sum(c.get("kind") == "restart" for c in res.candidates)
    assert restarts == 3 and res.planned_nfe == res.nfe == 5 * (1 + 4 * 2 + restarts)
    m = backend(steps=20)
    res = path_search(m, noise(2), m.schedule(), generator=gen(), branches=2, start=0.3, forward=0.2,
                      backward=0.3, interval_steps=2)
    head, rounds, _ = path_plan(m, 2, 2, 0.3, 0.2, 0.3, 2)
    assert res.planned_nfe == head + sum(cost for *_, cost in rounds) == res.nfe


def zero_order_spec(budget, *, per, final, neighbours, iterations, restart):
    """The budget rule of zero-order search when no neighbour ever beats the pivot: a round is
    started only if it and the reserved regeneration fit; a restart only if it, the next
    round and the reserve fit, and never after the last round."""
    reserve, spent, restarts, stopped = final, per, 0, False
    for it in range(1, iterations + 1):
        if spent + per * neighbours + reserve > budget:
            stopped = True
            break
        spent += per * neighbours
        if restart and it < iterations and spent + per * (1 + neighbours) + reserve <= budget:
            spent += per
            restarts += 1
    return spent + reserve, restarts, stopped


@pytest.mark.parametrize("restart", [False, True])
def test_zero_order_budget_sweep_with_restarts(restart):
    per, final, nb, iters = 2, 6, 2, 4
    for budget in range(per + final, per * (1 + iters * (nb + 1)) + final + 3):
        m = Flat(MEANS, steps=final, search_steps=per)
        res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=nb, iterations=iters,
                                restart=restart, budget=budget)
        nfe, restarts, stopped = zero_order_spec(budget, per=per, final=final, neighbours=nb,
                                                 iterations=iters, restart=restart)
        assert (res.nfe, sum(c.get("kind") == "restart" for c in res.candidates)) == (nfe, restarts), budget
        assert res.nfe == m.rows <= budget and res.stopped_by_budget == stopped, budget


def path_plan(m, n, branches, start, forward, backward, interval):
    """Path search costs, from its definition: the head (N paths down to the start level), each
    round (N*M children re-noised up by ``forward``, solved down by ``backward`` in
    ``interval`` steps, plus one NFE for the x0-prediction unless the round reaches 0), and the
    finish of the N survivors from a level along the full schedule."""
    sig = m.schedule()
    head = n * int((sig > m.level_sigma(start)).sum())
    rounds, t = [], start
    while t > 0:
        up = min(1.0, t + forward)
        down = up - backward
        down = 0.0 if down < 1e-6 else down
        rounds.append((t, up, down, n * branches * (interval + (1 if down > 0 else 0))))
        t = down

    def finish(level):
        return n * int((sig < m.level_sigma(level)).sum()) if level > 0 else 0

    return head, rounds, finish


def test_path_search_budget_sweep_matches_the_plan():
    """Every budget: the rounds that fit with the survivors' finish are run, then the survivors
    are finished along the full schedule (a clean result), never above the budget."""
    n, b, start, fwd, bwd, interval = 2, 2, 0.5, 0.2, 0.3, 2
    head, rounds, finish = path_plan(backend(steps=20), n, b, start, fwd, bwd, interval)
    assert backend(steps=20).level_sigma(start) in backend(steps=20).schedule().tolist()  # start on the grid
    full = head + sum(r[-1] for r in rounds)
    for budget in range(head + finish(start), full + 2):
        spent, level, ran = head, start, 0
        for _, _, down, cost in rounds:
            if spent + cost + finish(down) > budget:
                break
            spent, level, ran = spent + cost, down, ran + 1
        expected = spent + finish(level)
        m = Recording(steps=20)
        res = path_search(m, noise(n), m.schedule(), generator=gen(), branches=b, start=start, forward=fwd,
                          backward=bwd, interval_steps=interval, budget=budget)
        assert res.nfe == expected == m.rows and res.nfe <= budget, budget
        assert res.stopped_by_budget == (ran < len(rounds)), budget
        assert float(m.solves[-1]["sigmas"][-1]) == 0.0, "the returned paths are finished to sigma 0"


# -- results: top k, rounds, callbacks, candidates ------------------------------------------------

def test_default_top_k_is_one_and_top_k_is_respected():
    m = backend()
    assert len(random_search(m, noise(5), m.schedule()).top_ids) == 1
    assert len(zero_order_search(m, noise(1), m.schedule(), generator=gen(), iterations=2).top_ids) == 1
    assert len(path_search(m, noise(3), m.schedule(), generator=gen()).top_ids) == 1
    for k in (2, 3):
        assert len(zero_order_search(backend(), noise(1), backend().schedule(), generator=gen(), iterations=2,
                                     top_k=k).top_ids) == k
        res = path_search(backend(), noise(3), backend().schedule(), generator=gen(), top_k=k)
        assert len(res.top_ids) == len(set(res.top_ids)) == k
    # A budget that buys fewer candidates than top_k returns what it bought, and top_k of them.
    m = backend(steps=10)
    res = random_search(m, noise(8), m.schedule(), top_k=1, budget=35)
    assert len(res.candidates) == 3 and len(res.top_ids) == 1


def test_result_fields_without_regeneration_or_budget():
    for res in (random_search(backend(), noise(4), backend().schedule()),
                zero_order_search(backend(), noise(1), backend().schedule(), generator=gen(), iterations=2),
                path_search(backend(), noise(2), backend().schedule(), generator=gen())):
        assert res.search_scores is None and res.stopped_by_budget is False
        assert res.planned_nfe == res.nfe > 0


def test_random_search_rounds_follow_the_backend_chunk_and_feed_the_callback():
    m = Recording(steps=4, chunk=3)
    seen = []
    res = random_search(m, noise(7), m.schedule(), callback=seen.append)
    assert [s["ids"] for s in seen] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [s["round"] for s in seen] == [r["round"] for r in res.rounds] == [0, 1, 2]
    assert [s["nfe"] for s in seen] == [12, 24, 28] and all(s["planned"] == 28 for s in seen)
    scores = {c["id"]: c["score"] for c in res.candidates}
    for s in seen:
        assert s["scores"] == pytest.approx([scores[i] for i in s["ids"]])
        assert s["images"].shape[0] == len(s["ids"])
        assert m.score(s["images"]).values[:, 0].tolist() == pytest.approx(s["scores"])
        so_far = [i for i in scores if i <= s["ids"][-1]]
        best = max(so_far, key=lambda i: (scores[i], -i))
        assert (s["best_id"], s["best_score"]) == (best, pytest.approx(scores[best]))
    assert {c["id"]: c["round"] for c in res.candidates} == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2}
    # The record of rounds is the callback's information without ids, scores and images.
    assert [{k: v for k, v in s.items() if k not in ("ids", "scores", "images")} for s in seen] == res.rounds


def test_zero_order_first_round_and_callback():
    m = backend(steps=5)
    seen = []
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=3, iterations=2,
                            restart=False, callback=seen.append)
    first = res.candidates[0]
    assert {k: first[k] for k in ("id", "round", "kind")} == {"id": 0, "round": 0, "kind": "pivot"}
    assert res.rounds[0] == {"round": 0, "nfe": 5, "planned": 5 * 7, "best_id": 0,
                             "best_score": pytest.approx(first["score"]), "pivot": 0, "moved": False}
    assert seen[0]["ids"] == [0] and seen[0]["scores"] == pytest.approx([first["score"]])
    for s in seen[1:]:
        assert len(s["ids"]) == len(s["scores"]) == 3 and s["images"].shape[0] == 3


def test_zero_order_starts_from_the_first_noise_only():
    a = zero_order_search(backend(), noise(3), backend().schedule(), generator=gen(), iterations=2)
    b = zero_order_search(backend(), noise(3)[:1], backend().schedule(), generator=gen(), iterations=2)
    assert a.candidates == b.candidates and torch.equal(a.best, b.best)


def test_path_rounds_levels_and_callback():
    m = backend(steps=20)
    seen = []
    res = path_search(m, noise(2), m.schedule(), generator=gen(), branches=3, start=0.5, forward=0.2,
                      backward=0.3, interval_steps=2, callback=seen.append)
    levels = [0.4, 0.3, 0.2, 0.1, 0.0]
    assert [r["round"] for r in res.rounds] == [s["round"] for s in seen] == [1, 2, 3, 4, 5]
    assert [r["level"] for r in res.rounds] == pytest.approx(levels)
    for s, r in zip(seen, res.rounds):
        kids = [c for c in res.candidates if c["round"] == s["round"]]
        assert s["ids"] == [c["id"] for c in kids] and len(s["scores"]) == 6 and s["images"].shape[0] == 6
        assert s["scores"] == pytest.approx([c["score"] for c in kids])
        assert all(c["level"] == pytest.approx(r["level"]) for c in kids)
        assert {k: v for k, v in s.items() if k not in ("ids", "scores", "images")} == r


def test_candidate_ids_are_unique_and_consecutive():
    m = Flat(MEANS, steps=5)
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=2, iterations=4)
    assert any(c["kind"] == "restart" for c in res.candidates)
    assert sorted(c["id"] for c in res.candidates) == list(range(len(res.candidates)))
    assert sorted(set(m.solved_ids)) == list(range(len(res.candidates)))
    m = backend(steps=20)
    res = path_search(m, noise(2), m.schedule(), generator=gen(), branches=2, start=0.5, forward=0.2,
                      backward=0.3, interval_steps=2)
    ids = [c["id"] for c in res.candidates]
    assert ids == list(range(2, 2 + len(ids))), "children ids follow the initial paths 0..N-1"


# -- ties, strict moves, restarts -----------------------------------------------------------------

def test_ties_keep_the_earliest_candidate():
    """Equal values never reorder candidates (a sort that is not stable does, from 17 ties on)."""
    m = Flat(MEANS, steps=2)
    res = random_search(m, noise(40), m.schedule(), top_k=5)
    assert res.best_id == 0 and res.top_ids == [0, 1, 2, 3, 4]
    assert ranking(torch.zeros(40)) == list(range(40))


def test_zero_order_pivot_moves_only_on_a_strict_win_and_restarts_before_the_last_round():
    m = Flat(MEANS, steps=4)
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=3, iterations=4, restart=False)
    assert not any(r["moved"] for r in res.rounds) and res.best_id == 0
    assert all(r["pivot"] == 0 for r in res.rounds)
    m = Flat(MEANS, steps=4)
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=3, iterations=4)
    restart_rounds = [c["round"] for c in res.candidates if c["kind"] == "restart"]
    assert restart_rounds == [1, 2, 3], "a restart after every tied round but the last"
    assert [r["pivot"] for r in res.rounds] == [0, 4, 8, 12, 12]
    assert res.nfe == m.rows == 4 * (1 + 4 * 3 + 3)


def test_zero_order_defaults():
    """neighbours=2, angle=30 degrees, iterations=8, restart on, top_k=1."""
    m = Flat(MEANS, steps=3)
    start = noise(1, 4)
    res = zero_order_search(m, start, m.schedule(), generator=gen())
    assert len(res.rounds) == 9 and len(res.top_ids) == 1
    nbrs = [c for c in res.candidates if c["kind"] == "neighbour"]
    assert len(nbrs) == 16 and sum(c["kind"] == "restart" for c in res.candidates) == 7
    for c in nbrs:
        p = m.noise_of[c["pivot"]]
        assert float((m.noise_of[c["id"]] - p).norm()) == pytest.approx(
            float(2 * p.norm() * math.sin(math.radians(30.0) / 2)), rel=1e-4)


def test_path_search_defaults():
    """branches=2, start=0.4, forward=0.2, backward=0.3, interval_steps=4, top_k=1."""
    m = backend(steps=20)
    res = path_search(m, noise(2), m.schedule(), generator=gen())
    assert [r["level"] for r in res.rounds] == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert all(sum(c["round"] == r["round"] for c in res.candidates) == 4 for r in res.rounds)
    head, rounds, _ = path_plan(m, 2, 2, 0.4, 0.2, 0.3, 4)
    assert res.nfe == head + sum(r[-1] for r in rounds) and len(res.top_ids) == 1


# -- what the model is asked ----------------------------------------------------------------------

def test_early_predictions_reach_the_verifier_with_their_rows():
    """The early x0 a solve captures is scored with its own candidates, in the search and when
    the kept candidates are regenerated."""
    m = Recording(steps=6, search_steps=2)
    random_search(m, noise(5), m.schedule(), top_k=2)
    m2 = Recording(steps=6, search_steps=2)
    zero_order_search(m2, noise(1), m2.schedule(), generator=gen(), iterations=2)
    for rec in (m, m2):
        assert rec.early_seen and all(e is not None and torch.allclose(e, torch.full_like(e, 100.0))
                                      for e in rec.early_seen)


class Segment(Recording):
    """Schedules that stop above sigma 0, at sigma 0.8 (level 0.2): a base model's segment that
    hands its leftover noise on. The verifier judges the x0-prediction at the segment's end."""

    def schedule(self, search=False):
        n = self.search_steps if search else self.steps
        return torch.tensor([self.level_sigma(t) for t in torch.linspace(1, 0.2, n + 1).tolist()])


def test_segments_are_judged_by_their_x0_prediction_at_the_end_counted():
    m = Segment(steps=6, search_steps=2)
    end = float(m.schedule()[-1])
    assert 0 < end < 1
    res = random_search(m, noise(4), m.schedule(), top_k=1)
    # Each candidate: 2 steps + 1 x0-prediction; the kept one regenerated: 6 steps + 1.
    assert res.nfe == res.planned_nfe == 4 * 3 + 7 == m.rows
    assert m.x0_sigmas == pytest.approx([end, end])
    judged = m.score(m.predict_x0(res.best, end)).values[0, 0]
    assert res.best_score == pytest.approx(float(judged))
    assert not torch.equal(res.best, m.predict_x0(res.best, end)), "the returned latent keeps its leftover noise"


def test_path_search_levels_asked_of_the_model():
    """The head solves from sigma_max to the start level; each round re-noises from the level up
    to min(1, t + forward) and predicts x0 at the round's lower level."""
    m = Recording(steps=20)
    start, fwd, bwd = 0.8, 0.3, 0.35
    res = path_search(m, noise(2), m.schedule(), generator=gen(), branches=2, start=start, forward=fwd,
                      backward=bwd, interval_steps=2)
    head = m.solves[0]["sigmas"]
    assert float(head[0]) == m.sigma_max and float(head[-1]) == pytest.approx(m.level_sigma(start))
    assert m.renoised[0] == (pytest.approx(m.level_sigma(start)), pytest.approx(m.sigma_max))
    levels = [r["level"] for r in res.rounds]
    assert levels[0] == pytest.approx(1.0 - bwd)
    assert m.x0_sigmas == pytest.approx([m.level_sigma(t) for t in levels if t > 0])


def test_path_search_is_reproducible_from_its_generator():
    runs = [path_search(backend(steps=12), noise(2), backend(steps=12).schedule(), generator=gen(seed),
                        branches=3, start=0.5, interval_steps=2) for seed in (4, 4, 5)]
    assert runs[0].candidates == runs[1].candidates and torch.equal(runs[0].best, runs[1].best)
    assert runs[0].candidates != runs[2].candidates


def test_zero_order_noises_keep_the_pivot_dtype():
    m = Flat(MEANS, steps=3)
    res = zero_order_search(m, noise(1, dtype=torch.float64), m.schedule(), generator=gen(), iterations=3)
    assert {c["kind"] for c in res.candidates} == {"pivot", "neighbour", "restart"}
    assert {m.noise_of[c["id"]].dtype for c in res.candidates} == {torch.float64}
    assert res.best_noise.dtype == torch.float64


def test_sphere_neighbours_draw_distinct_directions_and_survive_parallel_draws():
    p = torch.randn((1, 4, 8, 8), generator=gen(3))
    nb = sphere_neighbours(p, 8, 20.0, gen(4)).flatten(1)
    assert float(torch.pdist(nb).min()) > 1e-3, "neighbours share a direction"
    # A draw exactly parallel to the pivot (same seed) in many dimensions: still on the sphere
    # at the angle, in a fixed orthogonal direction.
    p = torch.randn((1, 256), generator=gen(9))
    nb = sphere_neighbours(p, 1, 20.0, gen(9))
    assert float(nb.norm()) == pytest.approx(float(p.norm()), rel=1e-5)
    assert float((nb - p).norm()) == pytest.approx(float(2 * p.norm() * math.sin(math.radians(10.0))), rel=1e-4)


# -- rank ensembles in the search -----------------------------------------------------------------

class NoRelative(GaussianMixtureBackend):
    """A backend that does not declare ``relative`` (it is optional: absolute verifiers)."""

    def __init__(self, **kw):
        super().__init__(MEANS, **kw)
        del self.relative

    def score(self, latents, early=None):
        return Scores(-((latents - self.means[0]) ** 2).sum(-1, keepdim=True), images=latents)

    def compare(self, values):
        return values[:, 0]


def test_backends_need_not_declare_relative():
    res = random_search(NoRelative(), noise(6), backend().schedule(), top_k=2)
    ref = random_search(backend(), noise(6), backend().schedule(), top_k=2)
    assert res.top_ids == ref.top_ids


def test_rank_ensemble_pool_keeps_every_candidate():
    """With a rank ensemble the winner is the best of a ranking of all candidates, even when
    they arrive one round at a time and only one is kept."""
    for seed in range(6):
        m = backend(steps=6, ensemble=True)
        res = random_search(m, noise(12, seed), m.schedule(), top_k=1, round_size=1)
        values = m.score(m.solve(None, noise(12, seed), m.schedule(), list(range(12)))[0]).values
        expected = torch.sort(m.compare(values), descending=True, stable=True).indices
        assert res.best_id == int(expected[0]), seed


def test_strategy_calls_its_algorithm_with_the_options():
    calls = []

    def algorithm(model, noise, sigmas, **kwargs):
        calls.append((model, noise, sigmas, kwargs))
        return "result"

    s = Strategy(name="x", run=algorithm, noises=1, replay="seed", options={"angle": 10.0})
    assert s("model", "noise", "sigmas", generator="g", budget=5) == "result"
    assert calls == [("model", "noise", "sigmas", {"generator": "g", "budget": 5, "angle": 10.0})]


# -- rank ensemble verifier -----------------------------------------------------------------------

def test_ranks_are_taken_in_float64():
    assert fractional_ranks([1.0, 1.0 + 1e-9]).tolist() == [1.0, 2.0]
    assert mean_rank([[1.0, 1.0 + 1e-9]]).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("weights", [[0.0, 0.0], [2.0, -1.0], [math.inf, 1.0], [math.nan, 1.0]])
def test_bad_ensemble_weights_are_refused(weights):
    with pytest.raises(VerifierError, match="finite, non-negative and not all zero"):
        mean_rank([[1, 2], [2, 1]], weights=weights)


def test_mean_rank_needs_scores():
    with pytest.raises(VerifierError, match="at least one list of scores"):
        mean_rank([])


class ByCondition(Verifier):
    """Brightness when the condition says 'bright', darkness otherwise; records its calls."""

    def __init__(self, name="cond", max_batch=64, relative=False):
        self.name, self.max_batch, self.relative_scores = name, max_batch, relative
        self.calls = []

    def _score(self, images, condition, early):
        self.calls.append((images.shape[0], condition.text, early))
        mean = images.mean(dim=(1, 2, 3))
        return mean if condition.text == "bright" else -mean


class ByEarly(Verifier):
    """How close each image is to its early image (the self-supervised verifier's shape)."""

    name = "early"
    early_level = 0.4

    def _score(self, images, condition, early):
        return -(images - early).abs().mean(dim=(1, 2, 3))


def images(levels, h=3, w=5):
    return torch.stack([torch.full((h, w, 3), float(v)) for v in levels])


def test_ensemble_passes_condition_and_early_to_its_members():
    imgs, early = images([0.1, 0.5, 0.9]), images([0.8, 0.5, 0.0])
    cond, near = ByCondition(), ByEarly()
    ens = EnsembleVerifier([cond, near])
    assert ens.name == "ensemble(cond, early)" and ens.early_level == 0.4
    comps = ens.component_scores(imgs, "bright", early)
    assert torch.equal(comps, torch.stack([cond.score(imgs, "bright"), near.score(imgs, "", early)]))
    # bright: ranks 1, 2, 3; near its early image: 0.5 best, then 0.1 (0.7 off), then 0.9 (0.9 off).
    assert ens.score(imgs, "bright", early).tolist() == pytest.approx([1.5, 2.5, 2.0])


def test_ensemble_weights_are_checked_when_it_is_built():
    a, b = ByCondition("a"), ByCondition("b")
    with pytest.raises(VerifierError, match="non-negative"):
        EnsembleVerifier([a, b], weights=[1.0, -1.0])
    with pytest.raises(VerifierError, match="1 weights for 2 verifiers"):
        EnsembleVerifier([a, b], weights=[1.0])


# -- chunked scoring -------------------------------------------------------------------------------

def test_score_in_chunks_chunks_by_max_batch_in_order():
    imgs = images([0.1, 0.2, 0.3, 0.4, 0.5])  # 5 images of 3 x 5: the batch is the first axis
    whole = ByCondition().score(imgs, "bright")
    for max_batch, sizes in ((2, [2, 2, 1]), (1, [1] * 5), (0, [1] * 5), (64, [5])):
        v, progress = ByCondition(max_batch=max_batch), []
        out = score_in_chunks(v, imgs, "bright", on_chunk=lambda done, total, seen=progress: seen.append((done, total)))
        assert torch.equal(out, whole), max_batch
        assert [c[0] for c in v.calls] == sizes and {c[1] for c in v.calls} == {"bright"}, max_batch
        ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        assert progress == [(e, 5) for e in ends], max_batch
    single = score_in_chunks(ByCondition(), imgs[:1], "bright")
    assert single.tolist() == pytest.approx([0.1])


def test_score_in_chunks_never_chunks_a_relative_verifier():
    v = ByCondition(max_batch=1, relative=True)
    score_in_chunks(v, images([0.1, 0.2, 0.3]), "bright")
    assert [c[0] for c in v.calls] == [3]


def test_score_in_chunks_passes_each_chunk_its_early_images():
    imgs, early = images([0.1, 0.5, 0.9, 0.3], h=2), images([0.8, 0.5, 0.0, 0.3], h=2)
    v = ByEarly()
    v.max_batch = 3
    assert torch.equal(score_in_chunks(v, imgs, None, early), ByEarly().score(imgs, None, early))
    with pytest.raises(VerifierError, match="3 early images for 4 images"):
        score_in_chunks(v, imgs, None, early[:3])


def test_score_in_chunks_errors():
    with pytest.raises(VerifierError, match="empty batch"):
        score_in_chunks(ByCondition(), torch.zeros((0, 3, 5, 3)))

    class NaN(ByCondition):
        def _score(self, images, condition, early):
            return torch.full((images.shape[0],), float("nan"))

    with pytest.raises(VerifierError, match="the cond verifier returned non-finite scores"):
        score_in_chunks(NaN(), images([0.1, 0.2]))


# -- chunking and out-of-memory halving -------------------------------------------------------------

def test_map_chunked_chunks_passes_none_and_concatenates_each_output():
    x, y = torch.arange(7.0), torch.arange(7.0) * 10
    sizes = []

    def fn(a, none, b):
        assert none is None
        sizes.append(a.shape[0])
        return a + b, None, a * 2

    total, nothing, doubled = map_chunked(fn, [x, None, y], 3)
    assert sizes == [3, 3, 1] and nothing is None
    assert torch.equal(total, x + y) and torch.equal(doubled, x * 2)
    for chunk, expected in ((0, [1] * 7), (100, [7])):
        sizes.clear()
        map_chunked(fn, [x, None, y], chunk)
        assert sizes == expected


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried")])
def test_map_chunked_halves_on_out_of_memory_and_keeps_the_smaller_chunk(error):
    sizes, shrinks = [], []

    def fn(a):
        sizes.append(a.shape[0])
        if a.shape[0] > 2:
            raise error
        return a * 3

    out = map_chunked(fn, [torch.arange(9.0)], 8, on_shrink=shrinks.append)
    assert torch.equal(out[0], torch.arange(9.0) * 3)
    assert shrinks == [4, 2] and sizes == [8, 4, 2, 2, 2, 2, 1]


def test_map_chunked_out_of_memory_with_one_row():
    def fn(a):
        raise torch.OutOfMemoryError("CUDA out of memory.\nsecond line" + "x" * 300)

    with pytest.raises(ChunkOOMError, match=r"chunk of one candidate.*Detail: CUDA out of memory\.$") as info:
        map_chunked(fn, [torch.arange(4.0)], 1)
    assert isinstance(info.value, torch.OutOfMemoryError) and isinstance(info.value.__cause__, torch.OutOfMemoryError)

    def silent(a):
        raise torch.OutOfMemoryError()

    with pytest.raises(ChunkOOMError, match="Detail: OutOfMemoryError$"):
        map_chunked(silent, [torch.arange(4.0)], 2)

    def long(a):
        raise torch.OutOfMemoryError("y" * 300)

    with pytest.raises(ChunkOOMError) as info:
        map_chunked(long, [torch.arange(2.0)], 1)
    assert str(info.value).endswith("Detail: " + "y" * 200)


def test_map_chunked_does_not_retry_other_errors():
    for error in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ChunkOOMError("inner"),
                  NotImplementedError("out of memory"), ValueError("out of memory")):
        calls = []

        def fn(a, error=error, calls=calls):
            calls.append(a.shape[0])
            raise error

        with pytest.raises(type(error)) as info:
            map_chunked(fn, [torch.arange(8.0)], 8)
        assert info.value is error and calls == [8], error


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("anything"))
    for text in ("CUDA out of memory", "DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory",
                 "not enough memory: you tried", "Failed to allocate memory for tensor", "OUT OF MEMORY"):
        assert is_oom(RuntimeError(text)), text
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_oom(NotImplementedError("out of memory"))  # a RuntimeError subclass: its own meaning
    assert not is_oom(ValueError("out of memory"))
