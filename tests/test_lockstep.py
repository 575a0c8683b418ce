"""search/lockstep.py on the exact Gaussian-mixture backend: B problems in one pass give each
problem exactly what it gives alone, with every backend call shared by the live problems, and
failures stop every problem without leaving a thread behind. Pure and fast: no ComfyUI."""

from __future__ import annotations

import threading

import pytest
import torch

from search import (
    early_rejection,
    particle_steering,
    path_search,
    random_search,
    tree_search,
    zero_order_search,
)
from search.backend import Scores
from search.lockstep import run_lockstep
from tests.analytic_backend import GaussianMixtureBackend

MEANS = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])


class BatchedMixture(GaussianMixtureBackend):
    """B problems on one exact model: problem p's verifier wants mode ``targets[p]`` and its
    fresh candidates start from ``starts[p]``. Row-wise calls take ``problems`` and are logged."""

    def __init__(self, targets: list[int], starts: list[float] | None = None, **kw):
        super().__init__(MEANS, **kw)
        self.targets = targets
        self.starts = starts or [0.0] * len(targets)
        self.log: list[tuple[str, list[int]]] = []  # (method, problems of the rows) per call

    def _rows(self, method, problems, rows):
        problems = [0] * rows if problems is None else list(problems)
        self.log.append((method, problems))
        return torch.tensor(problems)

    def solve(self, state, noise, sigmas, ids, problems=None):
        p = self._rows("solve", problems, len(ids))
        if state is None:
            # A problem's own latent, as an img2img start would be (here: a shift of the noise).
            noise = noise + torch.tensor(self.starts)[p, None]
        return super().solve(state, noise, sigmas, ids)

    def advance(self, state, noise, sigmas, ids, problems=None):
        p = self._rows("advance", problems, len(ids))
        if state is None:
            noise = noise + torch.tensor(self.starts)[p, None]
        return super().advance(state, noise, sigmas, ids)

    def predict_x0(self, state, sigma, problems=None):
        self._rows("predict_x0", problems, state.shape[0])
        return super().predict_x0(state, sigma)

    def score(self, latents, early=None, problems=None):
        p = self._rows("score", problems, latents.shape[0])
        self.scored += latents.shape[0]
        gap = (latents - self.means[torch.tensor(self.targets)[p]]) ** 2
        values = torch.cat([-gap, -gap.sum(-1, keepdim=True)], 1) if self.relative else -gap.sum(-1, keepdim=True)
        return Scores(values, images=latents)


def alone(backend: BatchedMixture, b: int) -> BatchedMixture:
    return BatchedMixture([backend.targets[b]], [backend.starts[b]], steps=backend.steps,
                          search_steps=backend.search_steps, ensemble=backend.relative)


STRATEGIES = {
    "random": (random_search, dict(round_size=3), 7),
    "zero_order": (zero_order_search, dict(neighbours=3, iterations=6, angle=40.0, restart=True), 1),
    "paths": (path_search, dict(branches=3, start=0.5, forward=0.2, backward=0.3, interval_steps=2), 3),
    "particles": (particle_steering, dict(lmbda=2.0, interval=2), 4),
    "rejection": (early_rejection, dict(keep=0.5, levels=(0.7, 0.4)), 8),
    "tree": (tree_search, dict(rollouts=6, branches=2, wave=2), 2),
}
# Strategies whose problems fall out of step (restarts, budgets, trees of their own shape).
OUT_OF_STEP = ("zero_order", "tree")


def noises(b: int, n: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(100 + b))


def jobs(fn, options, n, problems, budget=None, top_k=2):
    def job(b):
        gen = torch.Generator().manual_seed(7 + b)
        return lambda view: fn(view, noises(b, n), view.schedule(), generator=gen, budget=budget, top_k=top_k,
                               **options)
    return [job(b) for b in range(problems)]


def same_result(a, b) -> bool:
    return (a.best_id == b.best_id and a.top_ids == b.top_ids and a.top_scores == b.top_scores
            and torch.equal(a.top, b.top) and a.nfe == b.nfe and a.planned_nfe == b.planned_nfe
            and a.rounds == b.rounds and a.candidates == b.candidates and a.stopped_by_budget == b.stopped_by_budget)


@pytest.mark.parametrize("ensemble", [False, True], ids=["plain", "rank_ensemble"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_problem_gets_what_it_gets_alone(name, ensemble):
    fn, options, n = STRATEGIES[name]
    targets, starts = [0, 1, 2, 3, 1], [0.0, 0.5, -0.5, 1.0, 0.0]
    search_steps = 4 if name in ("random", "zero_order") else None
    batch = BatchedMixture(targets, starts, steps=8, search_steps=search_steps, ensemble=ensemble)
    budget = {"random": 60, "zero_order": 90, "tree": 40}.get(name)
    together = run_lockstep(batch, jobs(fn, options, n, len(targets), budget))
    calls_alone = []
    for b in range(len(targets)):
        one = alone(batch, b)
        (by_itself,) = run_lockstep(one, [jobs(fn, options, n, b + 1, budget)[b]])
        assert same_result(together[b], by_itself), (name, b)
        # The shared model evaluated each problem's rows exactly as often as alone.
        assert sum(sum(p == b for p in problems) for m, problems in batch.log if m in ("solve", "advance")) == \
            sum(len(problems) for m, problems in one.log if m in ("solve", "advance"))
        calls_alone.append(len(one.log))
    assert any(len(set(problems)) == len(targets) for _, problems in batch.log)
    if name in OUT_OF_STEP:
        # Restarts and budgets put problems out of step now and then: a round may need a
        # call per schedule, yet far fewer calls than the problems alone.
        assert len(batch.log) < 2 * max(calls_alone) < sum(calls_alone)
    else:
        # Problems in step share every call: as many calls as one problem alone makes.
        assert len(batch.log) == max(calls_alone)


def test_random_search_of_every_problem_runs_in_one_call_per_round():
    batch = BatchedMixture([0, 1, 2, 3])
    run_lockstep(batch, jobs(random_search, dict(round_size=4), 8, 4))
    assert [m for m, _ in batch.log] == ["solve", "score"] * 2
    assert all(problems == [p for p in range(4) for _ in range(4)] for _, problems in batch.log)


def test_a_problem_that_finishes_early_stops_contributing():
    """Zero-order search whose budgets differ: the poorer problem stops, the others go on."""
    batch = BatchedMixture([0, 1, 2])
    budgets = [12 * 3, 12 * 9, 12 * 9]  # 12 NFEs per candidate: 1 pivot + 1 or 4 rounds of 2

    def job(b):
        gen = torch.Generator().manual_seed(b)
        return lambda view: zero_order_search(view, noises(b, 1), view.schedule(), generator=gen,
                                              budget=budgets[b], neighbours=2, iterations=20, restart=False)

    results = run_lockstep(batch, [job(b) for b in range(3)])
    assert [r.nfe for r in results] == [36, 108, 108]
    late = [problems for m, problems in batch.log if m == "solve"][2:]
    assert late and all(0 not in problems for problems in late)


class Boom(RuntimeError):
    pass


def _threads_after(fn) -> tuple[BaseException | None, int]:
    """Run ``fn`` on a helper thread (so a hang fails the test instead of blocking it)."""
    before = threading.active_count()
    caught = {}

    def target():
        try:
            fn()
        except BaseException as err:  # noqa: BLE001
            caught["err"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "run_lockstep hung"
    return caught.get("err"), threading.active_count() - before


def test_an_error_in_a_batched_call_stops_every_problem():
    class Failing(BatchedMixture):
        def score(self, latents, early=None, problems=None):
            if len(self.log) >= 3:
                raise Boom("out of memory (test)")
            return super().score(latents, early, problems)

    batch = Failing([0, 1, 2, 3])
    err, leftover = _threads_after(lambda: run_lockstep(batch, jobs(random_search, dict(round_size=2), 6, 4)))
    assert isinstance(err, Boom) and leftover == 0


def test_an_error_in_one_problem_stops_the_others():
    batch = BatchedMixture([0, 1, 2])
    calls = {"n": 0}

    def job(b):
        def run(view):
            view.solve(None, noises(b, 2), view.schedule(), [0, 1])
            if b == 1:
                raise Boom("problem 1")
            calls["n"] += 1
            view.solve(None, noises(b, 2), view.schedule(), [2, 3])
            calls["n"] += 1
            return b
        return run

    err, leftover = _threads_after(lambda: run_lockstep(batch, [job(b) for b in range(3)]))
    assert isinstance(err, Boom) and str(err) == "problem 1" and leftover == 0
    assert calls["n"] <= 1  # problem 0 may have gone on once; problem 2 never passed its first call
    assert len(batch.log) == 1


def test_keyboard_interrupt_style_errors_propagate_too():
    """BaseExceptions (ComfyUI's InterruptProcessingException is one on newer hosts) are raised
    in the caller like any other error."""
    class Interrupted(BaseException):
        pass

    class Interrupting(BatchedMixture):
        def solve(self, *args, **kwargs):
            raise Interrupted

    err, leftover = _threads_after(lambda: run_lockstep(Interrupting([0, 1]), jobs(random_search, {}, 2, 2)))
    assert isinstance(err, Interrupted) and leftover == 0


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_problems_run_in_the_callers_autograd_mode(mode):
    seen = []

    def job(view):
        seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return view.solve(None, torch.zeros(1, 2), view.schedule(), [0])

    with torch.inference_mode(mode == "inference"), torch.set_grad_enabled(mode == "grad"):
        expected = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
        run_lockstep(BatchedMixture([0, 1]), [job, job])
    assert seen == [expected] * 2
