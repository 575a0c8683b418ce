"""Progress bars never show a total a run cannot reach (issue 29): a node's ComfyUI bar is sized
by what the search can spend (its plan, or its budget where lower) and closes at what it spent;
the sweep's bar counts its tasks."""

from __future__ import annotations

import pytest

from tests.helpers import ks_args, search

STRATEGIES = [
    ("RandomSearch", dict(candidates=5, search_steps=2, top_k=2), 0),
    ("ZeroOrderSearch", dict(neighbours=2, iterations=10000, angle=30.0, restart=True), 16),
    ("PathSearch", dict(paths=2, branches=2, start=0.4, forward=0.2, backward=0.3, interval_steps=1), 0),
    ("ParticleSteering", dict(particles=3, potential="max", lmbda=2.0, interval=1, ess_threshold=0.5,
                              renoise=0.1), 0),
    ("EarlyRejectionSearch", dict(candidates=4096, keep=0.5, levels="0.7, 0.4"), 40),
    ("DiffusionTreeSearch", dict(rollouts=100000, branches=2, lmbda=1.0, greedy=True, wave=4, renoise=0.1), 32),
]


@pytest.fixture
def bar_updates(comfy):
    import comfy.utils

    seen, before, enabled = [], comfy.utils.PROGRESS_BAR_HOOK, comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = True
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None, **_:
                                             seen.append((int(value), int(total))))
    try:
        yield seen
    finally:
        comfy.utils.set_progress_bar_global_hook(before)
        comfy.utils.PROGRESS_BAR_ENABLED = enabled


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
@pytest.mark.parametrize("node,options,budget", STRATEGIES, ids=[s[0] for s in STRATEGIES])
def test_bar_total_is_the_bound_and_closes_at_what_was_spent(parts, bar_updates, node, options, budget, sampler):
    rep = search(node, **ks_args(parts, steps=4, sampler_name=sampler, budget=budget, **options))["report"]
    spent = rep["nfe"]["measured"]
    assert spent == rep["nfe"]["search_total"]
    bound = rep["nfe"]["planned"] if not budget else min(rep["nfe"]["planned"], budget)
    assert bar_updates, "the node drew no progress"
    # No total above what the search could spend (nor below what it had spent by then).
    assert all(value <= total <= max(bound, spent) for value, total in bar_updates), bar_updates[:5]
    # The bar ends full, at what was spent.
    assert bar_updates[-1] == (spent, spent)
    if budget:
        assert spent <= budget


def test_a_latent_batch_bar_counts_every_problem(parts, bar_updates):
    import torch

    rep = search("DiffusionTreeSearch", **ks_args(parts, latent_image={"samples": torch.zeros(2, 4, 4, 4)}, steps=4,
                                                  budget=32, **STRATEGIES[-1][1]))["report"]
    spent = rep["nfe"]["measured"]
    # Sized for both problems from the first round on (not grown by what was spent).
    assert bar_updates[0][1] == 2 * 32
    assert all(total <= max(2 * 32, spent) for _, total in bar_updates)
    assert bar_updates[-1] == (spent, spent)


def test_sweep_bar_counts_tasks_to_the_total():
    from sweep.scheduler import Bars

    bars = Bars(total=5, done=2, names=["a", "b"])
    for name in ("a", "b", "a"):
        bars.finished(name)
    assert (bars.total.n, bars.total.total) == (5, 5)
    assert bars.servers["a"].n == 2 and bars.servers["b"].n == 1
    bars.close()
