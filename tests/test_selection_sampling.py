"""Tempered selection samples the reward-tilted distribution (a Monte Carlo test: slow for mutation
testing, so it lives apart from tests/test_selection.py, which `make mutation` runs)."""

from __future__ import annotations

import pytest
import torch

from search.algorithms import random_search
from search.selection import Selection
from tests.helpers import backend, gen, noise
from tests.test_selection import N, plain_scores


@pytest.mark.parametrize("lmbda", [0.0, 0.1])
def test_tempered_winner_is_distributed_as_the_tilted_candidates(lmbda):
    """The winner's empirical distribution over seeds matches exp(lambda r) reweighting of the
    candidates within Monte Carlo error (4 standard errors per candidate); lambda 0 is uniform."""
    m, x = backend(target=2, steps=3), noise(N, seed=3)
    scores = plain_scores(m, x)
    r = torch.tensor([scores[i] for i in range(N)], dtype=torch.float64)
    expected = torch.softmax(lmbda * r, 0)
    draws = 1500
    counts = torch.zeros(N, dtype=torch.float64)
    for seed in range(draws):
        res = random_search(m, x, m.schedule(), generator=gen(seed), select=Selection("tempered", lmbda=lmbda))
        counts[res.best_id] += 1
        assert res.best_score == pytest.approx(scores[res.best_id])  # the winner's own score
    freq = counts / draws
    se = (expected * (1 - expected) / draws).sqrt()
    assert ((freq - expected).abs() <= 4 * se + 1e-9).all(), (freq.tolist(), expected.tolist())
    if lmbda == 0:
        assert torch.allclose(expected, torch.full((N,), 1 / N, dtype=torch.float64))
    # Not "best" in disguise: at these lambdas some non-best candidate wins sometimes.
    assert counts[int(torch.argmax(r))] < draws
