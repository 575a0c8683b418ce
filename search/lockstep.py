"""Many independent searches in one pass: B problems in lockstep, their model calls batched.

``run_lockstep(backend, jobs)`` runs ``jobs[b](view_b)`` for every problem b and returns their
results in order. ``view_b`` is a :class:`ProblemView`: a :class:`search.backend.SearchBackend`
for problem b alone, on one shared backend whose row-wise methods also take ``problems``, the
problem of every row::

    backend.solve(state, noise, sigmas, ids, problems=[...])  # state None: the problem's latent
    backend.advance(state, noise, sigmas, ids, problems=[...])
    backend.predict_x0(state, sigma, problems=[...])
    backend.score(latents, early, problems=[...])

The algorithms of search/algorithms.py run unchanged on the views.

Batching policy. A view does not run its row-wise calls: it posts them. Once every unfinished
problem has posted its next call, the posted calls are grouped (the same method with the same
schedule, level and kind of arguments) and each group runs as ONE backend call over the rows
of all its problems, in problem order; results are split back by rows. The backend chunks
those rows by memory as it chunks any call, so every model call carries candidates of many
problems. Calls that cannot share a model call (another schedule, a re-noised state beside a
fresh noise) run as separate calls of the same round. A problem that finishes early (its
budget spent, fewer rounds) simply stops posting. What needs no model (costs, levels,
re-noising with the problem's own generator, comparisons) a view answers itself, from the
shared backend.

Threads. Each problem runs on a worker thread, but only one at a time: the caller hands a
turn to each unfinished problem in order and waits until it posts a call or finishes. So no
two problems run concurrently, every batched call runs on the caller's thread, and results
do not depend on scheduling. Workers run in a copy of the caller's context variables and in
its autograd / inference mode. An exception in a problem, or in a batched call (an
interruption, running out of memory), stops every problem and is raised in the caller; no
thread is left waiting. A single job runs on the caller's thread, its calls run at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .backend import Scores

Job = Callable[["ProblemView"], Any]


class _Stopped(BaseException):
    """Ends a problem's thread when the run stops (another problem or a batched call failed)."""


@dataclass
class _Call:
    problem: int
    method: str
    args: tuple
    rows: int
    result: Any = None

    @property
    def key(self) -> tuple:
        """Calls with equal keys can share one backend call."""
        if self.method in ("solve", "advance"):
            state, noise, sigmas, _ = self.args
            return (self.method, state is None, noise is None, tuple(float(s) for s in sigmas.tolist()))
        if self.method == "predict_x0":
            return (self.method, float(self.args[1]))
        return (self.method, self.args[1] is None)  # score: with or without early x0-predictions


class ProblemView:
    """Problem ``index`` of a batched backend, seen as a SearchBackend of its own."""

    def __init__(self, backend, index: int, post: Callable[[_Call], Any]):
        self.backend, self.index, self._post = backend, index, post

    @property
    def relative(self) -> bool:
        return bool(self.backend.relative)

    @property
    def chunk(self):
        return self.backend.chunk

    def schedule(self, search: bool = False) -> torch.Tensor:
        return self.backend.schedule(search)

    def level_sigma(self, t: float) -> float:
        return self.backend.level_sigma(t)

    def sigma_level(self, sigma: float) -> float:
        return self.backend.sigma_level(sigma)

    def nfe(self, sigmas: torch.Tensor) -> int:
        return self.backend.nfe(sigmas)

    @property
    def stochastic(self) -> bool:
        return bool(self.backend.stochastic)

    def resumable(self, sigmas: torch.Tensor, at: list[int]) -> bool:
        return self.backend.resumable(sigmas, at)

    def renoise(self, state, sigma_from, sigma_to, generator):
        return self.backend.renoise(state, sigma_from, sigma_to, generator)

    def initial_noise(self, ids):
        return self.backend.initial_noise(ids, problem=self.index)

    def compare(self, values: torch.Tensor) -> torch.Tensor:
        return self.backend.compare(values)

    def solve(self, state, noise, sigmas, ids):
        ids = [int(i) for i in ids]
        return self._post(_Call(self.index, "solve", (state, noise, sigmas, ids), len(ids)))

    def advance(self, state, noise, sigmas, ids):
        ids = [int(i) for i in ids]
        return self._post(_Call(self.index, "advance", (state, noise, sigmas, ids), len(ids)))

    def predict_x0(self, state, sigma):
        return self._post(_Call(self.index, "predict_x0", (state, sigma), state.shape[0]))

    def score(self, latents, early=None) -> Scores:
        return self._post(_Call(self.index, "score", (latents, early), latents.shape[0]))


def _cat(parts: list):
    return None if parts[0] is None else torch.cat(parts)


def _split(x, rows: list[int]) -> list:
    if not isinstance(x, torch.Tensor) or x.shape[0] != sum(rows):
        return [None] * len(rows)
    return list(torch.split(x, rows))


def execute(backend, calls: list[_Call]) -> None:
    """Run calls with one key as one backend call over all their rows; set each call's result."""
    first, rows = calls[0], [c.rows for c in calls]
    problems = [c.problem for c in calls for _ in range(c.rows)]
    parts = list(zip(*(c.args for c in calls)))
    if first.method in ("solve", "advance"):
        ids = [i for c in calls for i in c.args[3]]
        run = backend.solve if first.method == "solve" else backend.advance
        out, early = run(_cat(parts[0]), _cat(parts[1]), first.args[2], ids, problems=problems)
        results = list(zip(_split(out, rows), _split(early, rows)))
    elif first.method == "predict_x0":
        results = _split(backend.predict_x0(_cat(parts[0]), first.args[1], problems=problems), rows)
    else:
        scored = backend.score(_cat(parts[0]), _cat(parts[1]), problems=problems)
        results = [Scores(v, im) for v, im in zip(_split(scored.values, rows), _split(scored.images, rows))]
    for call, result in zip(calls, results):
        call.result = result


def _caller_modes() -> Callable[[], contextlib.ExitStack]:
    """The caller's autograd and inference modes (thread-local in torch), for the workers."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def enter() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if inference:
            stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.set_grad_enabled(grad))
        return stack

    return enter


class _Lockstep:
    def __init__(self, backend, jobs: Sequence[Job]):
        self.backend, self.jobs = backend, list(jobs)
        n = len(self.jobs)
        self.turns = [threading.Semaphore(0) for _ in range(n)]  # a problem may run
        self.back = threading.Semaphore(0)  # the caller may run
        self.calls: list[_Call | None] = [None] * n
        self.done = [False] * n
        self.errors: list[BaseException | None] = [None] * n
        self.values: list[Any] = [None] * n
        self.stopping = False

    # -- in a problem's thread --------------------------------------------------------------
    def post(self, call: _Call):
        if self.stopping:
            raise _Stopped
        self.calls[call.problem] = call
        self.back.release()
        self.turns[call.problem].acquire()
        if self.stopping:
            raise _Stopped
        self.calls[call.problem] = None
        return call.result

    def work(self, index: int, modes, context: contextvars.Context) -> None:
        self.turns[index].acquire()
        try:
            if not self.stopping:
                with modes():
                    view = ProblemView(self.backend, index, self.post)
                    self.values[index] = context.run(self.jobs[index], view)
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 (raised again in the caller)
            self.errors[index] = err
        finally:
            self.done[index] = True
            self.back.release()

    # -- in the caller's thread -------------------------------------------------------------
    def run(self) -> list:
        modes = _caller_modes()
        threads = [threading.Thread(target=self.work, args=(i, modes, contextvars.copy_context()), daemon=True,
                                    name=f"noise-search problem {i}") for i in range(len(self.jobs))]
        for t in threads:
            t.start()
        live = list(range(len(self.jobs)))
        try:
            while live:
                for i in live:
                    self.turns[i].release()
                    self.back.acquire()
                    if self.errors[i] is not None:
                        raise self.errors[i]
                live = [i for i in live if not self.done[i]]
                groups: dict[tuple, list[_Call]] = {}
                for i in live:
                    groups.setdefault(self.calls[i].key, []).append(self.calls[i])
                for calls in groups.values():
                    execute(self.backend, calls)
        finally:
            self.stopping = True
            for i, turn in enumerate(self.turns):
                if not self.done[i]:
                    turn.release()
            for t in threads:
                t.join()
        return self.values


def run_lockstep(backend, jobs: Sequence[Job]) -> list:
    """Run ``jobs[b](view_b)`` for every problem b in lockstep; returns their results in order."""
    if len(jobs) == 1:
        def at_once(call: _Call):
            execute(backend, [call])
            return call.result

        return [jobs[0](ProblemView(backend, 0, at_once))]
    return _Lockstep(backend, jobs).run()


__all__ = ["ProblemView", "execute", "run_lockstep"]
