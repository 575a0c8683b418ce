"""What a search returns and how it gets there: top k, rounds and their callbacks, candidate
ids, ties kept in order, zero-order moves on strict wins and restarts, the strategies'
defaults, what the model is asked (early x0-predictions, segments that stop above sigma 0,
path levels), neighbours on the sphere, rank ensembles that judge the whole pool, and a
Strategy calling its algorithm. On the exact Gaussian-mixture backend, no ComfyUI."""

from __future__ import annotations

import math

import pytest
import torch

from search import Strategy, path_search, random_search, sphere_neighbours, zero_order_search
from search.scoring import ranking
from search.selection import BEST, Selection
from tests.helpers import MEANS, Flat, Recording, backend, gen, noise, path_plan

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
    assert res.rounds[0] == {"round": 0, "nfe": 5, "planned": 5 * 7, "bound": 5 * 7, "best_id": 0,
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

    s = Strategy(name="x", run=algorithm, noises=1, options={"angle": 10.0})
    assert s("model", "noise", "sigmas", generator="g", budget=5) == "result"
    # The selection rule travels with the SEARCH (best unless one was chosen).
    assert calls == [("model", "noise", "sigmas", {"select": BEST, "generator": "g", "budget": 5, "angle": 10.0})]
    tempered = Selection("tempered", lmbda=2.0)
    Strategy(name="x", run=algorithm, noises=1, selection=tempered)("model", "noise", "sigmas")
    assert calls[-1][3] == {"select": tempered}
