"""The algorithms on an exact Gaussian-mixture denoiser: costs, budgets, monotone gains, locality."""

from __future__ import annotations

import math

import pytest
import torch

from search import BudgetError, path_search, random_search, sphere_neighbours, zero_order_search
from tests.analytic_backend import GaussianMixtureBackend

MEANS = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])


def backend(**kw):
    return GaussianMixtureBackend(MEANS, **kw)


def noise(n, seed=0):
    return torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_random_search_nfe_closed_form_and_argmax():
    m = backend(steps=10)
    res = random_search(m, noise(8), m.schedule())
    assert res.nfe == 8 * 10 == m.rows
    scores = torch.tensor([c["score"] for c in res.candidates])
    assert res.best_index == int(torch.argmax(scores))
    x, _ = backend(steps=10).solve(None, noise(8)[res.best_index : res.best_index + 1], m.schedule())
    assert torch.allclose(res.best, x)


def test_random_search_cheap_search_steps_regenerate_winner():
    m = backend(steps=12, search_steps=3)
    res = random_search(m, noise(6), m.schedule(), top_k=2)
    # 6 candidates at 3 NFEs, then the top 2 regenerated at 12.
    assert res.nfe == 6 * 3 + 2 * 12 == m.rows
    full, _ = backend(steps=12).solve(None, res.best_noise, m.schedule())
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
    assert a.best_index == b.best_index and torch.allclose(a.top, b.top)
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
            s[0] = float("nan")
            return s

    m = NaNFirst(MEANS)
    res = random_search(m, noise(5), m.schedule(), top_k=5)
    assert res.best_index != 0 and math.isfinite(res.best_score)
