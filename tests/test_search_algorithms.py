"""The algorithms on an exact Gaussian-mixture denoiser: costs, budgets, monotone gains, locality."""

from __future__ import annotations

import math

import pytest
import torch

from search import BudgetError, path_search, random_search, sphere_neighbours, zero_order_search
from tests.analytic_backend import GaussianMixtureBackend
from tests.helpers import MEANS, backend, gen, noise


def test_random_search_nfe_closed_form_and_argmax():
    m = backend(steps=10)
    res = random_search(m, noise(8), m.schedule())
    assert res.nfe == 8 * 10 == m.rows
    scores = torch.tensor([c["score"] for c in res.candidates])
    assert res.best_id == int(torch.argmax(scores))
    x, _ = backend(steps=10).solve(None, noise(8)[res.best_id : res.best_id + 1], m.schedule(), [0])
    assert torch.allclose(res.best, x)


def test_random_search_cheap_search_steps_regenerate_winner():
    m = backend(steps=12, search_steps=3)
    res = random_search(m, noise(6), m.schedule(), top_k=2)
    # 6 candidates at 3 NFEs, then the top 2 regenerated at 12.
    assert res.nfe == 6 * 3 + 2 * 12 == m.rows
    full, _ = backend(steps=12).solve(None, res.best_noise, m.schedule(), [0])
    assert torch.allclose(res.best, full)
    assert res.top.shape[0] == 2


def test_random_search_budget_stops_before_exceeding():
    m = backend(steps=10)
    res = random_search(m, noise(8), m.schedule(), budget=35)
    assert res.stopped_by_budget and res.nfe == 30 == m.rows
    with pytest.raises(BudgetError, match="budget"):
        random_search(backend(steps=10), noise(8), m.schedule(), budget=9)


def test_round_size_does_not_change_result():
    a = random_search(backend(), noise(9), backend().schedule(), top_k=3)
    b = random_search(backend(), noise(9), backend().schedule(), top_k=3, round_size=2)
    assert a.best_id == b.best_id and torch.allclose(a.top, b.top)
    assert a.top_scores == pytest.approx(b.top_scores)


def test_zero_order_pays_pivot_once_and_counts_restarts():
    m = backend(steps=8)
    res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=3, iterations=5)
    restarts = sum(c.get("kind") == "restart" for c in res.candidates)
    assert res.nfe == 8 * (1 + 5 * 3 + restarts) == m.rows
    assert len(res.candidates) == 1 + 15 + restarts


def test_zero_order_neighbours_lie_on_the_pivot_sphere():
    p = torch.randn((1, 4, 8, 8), generator=gen(3))
    nb = sphere_neighbours(p, 5, 20.0, gen(4))
    norms = nb.flatten(1).norm(dim=1)
    assert torch.allclose(norms, p.flatten().norm().expand(5), rtol=1e-5)
    dist = (nb - p).flatten(1).norm(dim=1)
    expected = 2 * p.flatten().norm() * math.sin(math.radians(20.0) / 2)
    assert torch.allclose(dist, expected.expand(5), rtol=1e-4)


def test_zero_order_stays_local_without_restart():
    m = backend(steps=8)
    start = noise(1, seed=5)
    seen = []
    res = zero_order_search(m, start, m.schedule(), generator=gen(), neighbours=2, iterations=4,
                            angle=10.0, restart=False, callback=seen.append)
    step = 2 * start.norm() * math.sin(math.radians(10.0) / 2)
    assert (res.best_noise - start).norm() <= 4 * step + 1e-5
    assert len(seen) == 5


def test_zero_order_is_reproducible_from_seed():
    a = zero_order_search(backend(), noise(1), backend().schedule(), generator=gen(7), iterations=4)
    b = zero_order_search(backend(), noise(1), backend().schedule(), generator=gen(7), iterations=4)
    assert torch.equal(a.best, b.best) and a.candidates == b.candidates


def path_cost(n, m, steps, start, fwd, bwd, interval, mdl):
    """The paper's closed form: N x NFE(sigma_max -> sigma) + rounds x N x M x (L + 1)."""
    head = int((mdl.schedule() > mdl.level_sigma(start)).sum())  # steps down to the start level
    t, total = start, n * head
    while t > 0:
        t_down = max(0.0, min(1.0, t + fwd) - bwd)
        t_down = 0.0 if t_down < 1e-6 else t_down
        total += n * m * (interval + (1 if t_down > 0 else 0))
        t = t_down
    return total


def test_path_search_exact_nfe_count():
    m = backend(steps=20)
    res = path_search(m, noise(3), m.schedule(), generator=gen(), branches=2, start=0.5,
                      forward=0.2, backward=0.3, interval_steps=3)
    assert res.nfe == m.rows == path_cost(3, 2, 20, 0.5, 0.2, 0.3, 3, m)
    assert res.best_noise is None and res.best.shape == (1, 2)


def test_path_search_rejects_backward_not_greater_than_forward():
    with pytest.raises(ValueError, match="backward"):
        path_search(backend(), noise(2), backend().schedule(), generator=gen(), forward=0.3, backward=0.3)


def test_path_search_budget_finishes_survivors():
    m = backend(steps=20)
    full = path_cost(2, 2, 20, 0.5, 0.2, 0.3, 3, m)
    res = path_search(m, noise(2), m.schedule(), generator=gen(), branches=2, start=0.5, forward=0.2,
                      backward=0.3, interval_steps=3, budget=full - 1)
    assert res.stopped_by_budget and res.nfe <= full - 1 and res.nfe == m.rows


@pytest.mark.parametrize("algo", ["random", "zero_order", "paths"])
def test_score_rises_with_budget(algo):
    """Mean verifier score over seeds is non-decreasing along a ladder of budgets."""
    means = []
    for budget in (30, 90, 320):
        vals = []
        for seed in range(12):
            m = backend(steps=10)
            if algo == "random":
                r = random_search(m, noise(64, seed), m.schedule(), budget=budget)
            elif algo == "zero_order":
                r = zero_order_search(m, noise(1, seed), m.schedule(), generator=gen(seed),
                                      neighbours=2, iterations=100, angle=40.0, budget=budget)
            else:
                n_paths = 2
                r = path_search(m, noise(n_paths, seed), m.schedule(), generator=gen(seed), branches=2,
                                start=0.3 if budget > 30 else 0.05, forward=0.3, backward=0.35,
                                interval_steps=2, budget=budget)
            assert r.nfe <= budget
            vals.append(r.best_score)
        means.append(sum(vals) / len(vals))
    assert means[0] < means[1] <= means[2] + 1e-6, means


def test_path_search_children_stay_near_their_parent():
    """Re-noising a short interval keeps children near the parent's x0, unlike fresh samples."""
    m = backend(steps=20)
    res = path_search(m, noise(4, 2), m.schedule(), generator=gen(), branches=4, start=0.2,
                      forward=0.1, backward=0.2, interval_steps=3)
    by_id = {c["id"]: c for c in res.candidates}
    kids = [c for c in res.candidates if c.get("parent") in by_id]
    assert kids, "expected at least two rounds"
    gaps = [abs(c["score"] - by_id[c["parent"]]["score"]) for c in kids]
    spread = torch.tensor([c["score"] for c in res.candidates]).std()
    assert sum(gaps) / len(gaps) < spread


def test_neighbours_survive_a_draw_parallel_to_the_pivot():
    p = torch.randn((1, 2), generator=gen(9))
    nb = sphere_neighbours(p, 2, 30.0, gen(9))  # same seed: the first draw is the pivot itself
    assert torch.isfinite(nb).all()
    assert torch.allclose(nb.norm(dim=1), p.norm().expand(2), rtol=1e-5)


def test_nan_scores_never_win():
    class NaNFirst(GaussianMixtureBackend):
        def score(self, latents, early=None):
            s = super().score(latents)
            s.values[0] = float("nan")
            return s

    m = NaNFirst(MEANS)
    res = random_search(m, noise(5), m.schedule(), top_k=5)
    assert res.best_id != 0 and math.isfinite(res.best_score)


# -- search-core-v2: each reported result is what the algorithm did --------------------
@pytest.mark.parametrize("ensemble", [False, True], ids=["absolute", "rank-ensemble"])
@pytest.mark.parametrize("restart", [False, True])
def test_zero_order_pivot_follows_the_best_neighbour(ensemble, restart):
    """Every round's neighbours lie on the sphere around the pivot the previous round moved to,
    the pivot moves exactly when a neighbour beats it in one comparison with it, and it does
    move: a pivot that never moves (or is ranked alone) fails here."""
    m = backend(steps=6, ensemble=ensemble)
    angle = 25.0
    res = zero_order_search(m, noise(1, seed=5), m.schedule(), generator=gen(2), neighbours=3,
                            iterations=8, angle=angle, restart=restart)
    by_round = {}
    for c in res.candidates:
        by_round.setdefault(c["round"], []).append(c)
    moves = [r for r in res.rounds[1:] if r["moved"]]
    assert moves, "the pivot never moved"
    pivot = 0
    for r in res.rounds[1:]:
        nbrs = [c for c in by_round[r["round"]] if c["kind"] == "neighbour"]
        assert {c["pivot"] for c in nbrs} == {pivot}
        p = m.noise_of[pivot]
        for c in nbrs:
            gap = (m.noise_of[c["id"]] - p).norm()
            assert float(gap) == pytest.approx(float(2 * p.norm() * math.sin(math.radians(angle) / 2)), rel=1e-4)
        # The round's own comparison: pivot and neighbours ranked together.
        rows = torch.cat([m.score(m.solve(None, m.noise_of[i][None], m.schedule(), [i])[0]).values
                          for i in [pivot] + [c["id"] for c in nbrs]])
        values = m.compare(rows)
        beaten = bool(values[1:].max() > values[0])
        assert r["moved"] == beaten
        if beaten:
            pivot = nbrs[int(torch.argmax(values[1:]))]["id"]
        restarts = [c for c in by_round[r["round"]] if c["kind"] == "restart"]
        if restarts:
            pivot = restarts[0]["id"]
        assert r["pivot"] == pivot
    assert res.best_id != 0 or not restart


@pytest.mark.parametrize("ensemble", [False, True], ids=["absolute", "rank-ensemble"])
def test_reported_winner_is_the_returned_latent(ensemble):
    """best_id names the returned latent; its score is the returned latent's score."""
    for algo in ("random", "zero_order", "paths"):
        m = backend(steps=8, ensemble=ensemble)
        if algo == "random":
            res = random_search(m, noise(7), m.schedule(), top_k=3, round_size=2)
        elif algo == "zero_order":
            res = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=2, iterations=4,
                                    top_k=3)
        else:
            res = path_search(m, noise(3, 4), m.schedule(), generator=gen(), branches=3, start=0.5,
                              forward=0.2, backward=0.3, interval_steps=2, top_k=3)
        assert res.best_id == res.top_ids[0] and torch.equal(res.best, res.top[:1])
        assert res.top_scores == sorted(res.top_scores, reverse=True)
        if algo != "paths":
            again, _ = backend(steps=8).solve(None, res.best_noise, m.schedule(), [res.best_id])
            assert torch.allclose(res.best, again)
            assert torch.equal(res.best_noise[0], m.noise_of[res.best_id])
        else:
            last = max(c["round"] for c in res.candidates)
            finals = {c["id"] for c in res.candidates if c["round"] == last}
            assert set(res.top_ids) <= finals
        # The scores are those of the returned latents, compared among the returned ones.
        assert res.top_scores == pytest.approx(m.compare(m.score(res.top).values).tolist()) or ensemble
        if not ensemble:
            assert res.best_score == pytest.approx(float(m.score(res.best).values[0, 0]))
        assert len(res.rounds) >= 2, "rounds are recorded without a callback"


def test_rank_ensemble_random_search_ranks_all_candidates_at_once():
    """Chunked rounds give the same ranking as one comparison of all N (the paper's best-of-N)."""
    whole = random_search(backend(ensemble=True), noise(9), backend().schedule(), top_k=9)
    chunked = random_search(backend(ensemble=True), noise(9), backend().schedule(), top_k=9, round_size=2)
    assert whole.top_ids == chunked.top_ids and whole.top_scores == chunked.top_scores
    m = backend(ensemble=True)
    all_values = m.score(m.solve(None, noise(9), m.schedule(), list(range(9)))[0]).values
    expected = m.compare(all_values)
    assert [c["score"] for c in sorted(chunked.candidates, key=lambda c: c["id"])] == pytest.approx(expected.tolist())


def test_regenerated_winners_are_scored_again():
    """With cheaper search steps the returned (regenerated) latents carry their own scores,
    re-sorted, and the search-schedule scores are reported beside them."""
    m = backend(steps=12, search_steps=2)
    res = random_search(m, noise(8, 1), m.schedule(), top_k=4)
    own = m.score(res.top).values[:, 0]
    assert res.top_scores == pytest.approx(own.tolist())
    assert res.top_scores == sorted(res.top_scores, reverse=True)
    assert res.search_scores is not None and len(res.search_scores) == 4
    assert res.search_scores != pytest.approx(res.top_scores)


def test_path_branches_get_fresh_noise():
    """Children of one parent are re-noised with different noises: they differ."""
    m = backend(steps=20)
    res = path_search(m, noise(2, 3), m.schedule(), generator=gen(), branches=4, start=0.5,
                      forward=0.3, backward=0.35, interval_steps=2)
    first = [c for c in res.candidates if c["round"] == 1]
    for parent in {c["parent"] for c in first}:
        scores = [c["score"] for c in first if c["parent"] == parent]
        assert len(set(scores)) == len(scores), f"children of {parent} are identical"


def test_path_search_ranks_each_rounds_children_among_themselves():
    m = backend(steps=20, ensemble=True)
    n, b = 2, 3
    res = path_search(m, noise(n, 5), m.schedule(), generator=gen(), branches=b, start=0.5,
                      forward=0.2, backward=0.3, interval_steps=2)
    for r in {c["round"] for c in res.candidates}:
        scores = [c["score"] for c in res.candidates if c["round"] == r]
        assert len(scores) == n * b
        # Mean ranks among exactly these n*b children: they average (n*b + 1) / 2.
        assert sum(scores) / len(scores) == pytest.approx((n * b + 1) / 2)


def test_every_solve_names_its_rows():
    """Each solved row carries its candidate id (per-candidate noise streams depend on it)."""
    m = backend(steps=5)
    zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=2, iterations=3, restart=False)
    assert m.solved_ids == list(range(7))


def test_random_search_budget_buys_as_many_candidates_as_it_can_regenerate():
    """3 search NFEs, 12 to regenerate, top_k 4: 30 NFEs pay for 2 candidates (6 + 24), 45 for 3."""
    for budget, n in ((30, 2), (45, 3), (15, 1), (29, 1)):
        m = backend(steps=12, search_steps=3)
        res = random_search(m, noise(8), m.schedule(), top_k=4, budget=budget)
        searched = [c for c in res.candidates if c["sample"] == "search schedule"]
        assert len(searched) == n and res.nfe == n * 3 + n * 12 <= budget
        assert [c["id"] for c in res.candidates if c["sample"] == "final"] == res.top_ids
