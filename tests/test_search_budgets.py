"""What a budget buys: the search plan's NFEs in closed form, budgets that stop the search
before it would exceed them (never above, never 'stopped' when the plan fits), and the errors
that name what a budget cannot pay for. Random, zero-order and path search on the exact
Gaussian-mixture backend of tests/analytic_backend.py, no ComfyUI."""

from __future__ import annotations

import pytest

from search import BudgetError, path_search, random_search, zero_order_search
from tests.helpers import MEANS, Flat, Recording, backend, gen, noise, path_plan

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
        assert sum(c["sample"] == "search schedule" for c in res.candidates) == bought, budget
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
