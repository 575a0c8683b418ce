"""What the results and reports of the search core promise, on the exact Gaussian-mixture backend
(no ComfyUI; part of the fast set `make mutation` judges mutants with): regeneration rules,
sample labels, the progress bound, whether a winner replays from its seed, and the one
scoring path's handling of conditions, rank ensembles and early levels."""

from __future__ import annotations

import math

import pytest
import torch

from search import early_rejection, particle_steering, path_search, random_search, zero_order_search
from search.scoring import Scorer
from tests.helpers import backend, gen, noise
from verifiers.base import Verifier
from verifiers.ensemble import EnsembleVerifier


# -- regeneration: "rerank" (early rejection) and "keep order" (cheaper search schedule) ------------
def test_rejection_regenerates_every_survivor_and_ranks_their_final_samples():
    results = {k: early_rejection(backend(steps=10, ancestral=True), noise(16), backend().schedule(), top_k=k,
                                  keep=0.5, levels=(0.7, 0.4)) for k in (1, 3)}
    one, three = results[1], results[3]
    assert one.best_id == three.best_id and one.best_score == pytest.approx(three.best_score)
    last = three.rounds[-1]
    assert last["round"] == len(three.rounds) - 1 == 3
    finals = [c for c in three.candidates if c["sample"] == "final"]
    survivors = [c["id"] for c in three.candidates if c["round"] == 2]
    assert sorted(c["id"] for c in finals) == sorted(survivors) and len(survivors) == 4
    assert {c["round"] for c in finals} == {3} and {c["level"] for c in finals} == {0.0}
    assert {c["sample"] for c in three.candidates if c["round"] < 3} == {"split run"}
    by_final = sorted(finals, key=lambda c: -c["score"])
    assert three.top_ids == [c["id"] for c in by_final[:3]] == last["regenerated"]
    assert three.top_scores == pytest.approx([c["score"] for c in by_final[:3]])
    assert (last["best_id"], last["best_score"]) == (three.best_id, pytest.approx(three.best_score))
    assert three.seeded and torch.equal(three.best_noise, noise(16)[three.best_id : three.best_id + 1])


def test_rejection_on_a_resumable_sampler_returns_its_own_trajectories():
    res = early_rejection(backend(steps=10), noise(16), backend().schedule(), top_k=2)
    assert {c["sample"] for c in res.candidates if c["round"] == len(res.rounds) - 1} == {"final"}
    assert "regenerated" not in res.rounds[-1] and res.search_scores is None


def test_rejection_budget_of_exactly_its_cost_is_not_a_stop():
    full = early_rejection(backend(steps=10, ancestral=True), noise(8), backend().schedule(), top_k=2)
    again = early_rejection(backend(steps=10, ancestral=True), noise(8), backend().schedule(), top_k=2,
                            budget=full.nfe)
    assert again.nfe == full.nfe and not again.stopped_by_budget and again.best_id == full.best_id


def test_a_cheaper_search_schedule_keeps_the_searchs_order():
    res = random_search(backend(steps=12, search_steps=2), noise(8), backend(steps=12).schedule(), top_k=3)
    searched = sorted((c for c in res.candidates if c["sample"] == "search schedule"), key=lambda c: -c["score"])
    assert res.top_ids == [c["id"] for c in searched[:3]] == res.rounds[-1]["regenerated"]
    assert res.search_scores == pytest.approx([c["score"] for c in searched[:3]])
    finals = [c for c in res.candidates if c["sample"] == "final"]
    assert [c["id"] for c in finals] == res.top_ids and [c["score"] for c in finals] == pytest.approx(res.top_scores)
    assert {c["level"] for c in finals} == {0.0} and {c["round"] for c in finals} == {len(res.rounds) - 1}


# -- the progress bound ---------------------------------------------------------------------------
def test_rounds_report_the_bound_a_run_can_spend():
    seen = []
    res = zero_order_search(backend(steps=4), noise(1), backend(steps=4).schedule(), generator=gen(), budget=16,
                            neighbours=2, iterations=10000, callback=seen.append)
    assert res.planned_nfe > 1000 and all(r["bound"] == 16 for r in res.rounds) and res.nfe <= 16
    assert [s["bound"] for s in seen] == [16] * len(seen)
    free = random_search(backend(steps=4), noise(3), backend(steps=4).schedule())
    assert all(r["bound"] == r["planned"] == free.planned_nfe for r in free.rounds)


# -- which winners replay from their seed ------------------------------------------------------
def test_seeded_says_whether_the_winner_is_the_stock_noise_of_its_id():
    m = backend(steps=6)
    assert random_search(m, noise(4), m.schedule()).seeded
    assert not path_search(m, noise(2), m.schedule(), generator=gen(), start=0.4).seeded
    assert not particle_steering(m, noise(3), m.schedule(), generator=gen()).seeded
    stays = zero_order_search(m, noise(1), m.schedule(), generator=gen(), neighbours=1, iterations=1, angle=179.0,
                              restart=False)
    assert stays.best_id == 0 and stays.seeded
    moved = [zero_order_search(backend(steps=6), noise(1, seed=s), m.schedule(), generator=gen(s), neighbours=4,
                               iterations=3, angle=20.0, restart=False) for s in range(6)]
    assert any(r.best_id != 0 for r in moved)
    assert all(r.seeded == (r.best_id == 0) for r in moved)


def test_particle_judge_names_its_choices():
    with pytest.raises(ValueError, match=r"judge must be one of point, last, got 'soon'"):
        particle_steering(backend(), noise(2), backend().schedule(), generator=gen(), judge="soon")


# -- the one scoring path ------------------------------------------------------------------------
class Brightness(Verifier):
    """Mean brightness, times -1 for the condition "dark"; records its batch sizes."""

    def __init__(self, sign_by_condition=True, max_batch=64, early_level=None):
        self.max_batch, self.early_level, self.name = max_batch, early_level, "brightness"
        self.sign_by_condition, self.calls = sign_by_condition, []

    def _score(self, images, condition, early):
        self.calls.append((images.shape[0], condition.text))
        mean = images.mean(dim=(1, 2, 3))
        return -mean if self.sign_by_condition and condition.text == "dark" else mean


def flat(levels):
    return torch.stack([torch.full((2, 2, 3), float(v)) for v in levels])


def test_scorer_gives_each_problem_its_condition():
    v = Brightness()
    scorer = Scorer(None, v, ["bright", "dark"])
    out = scorer(flat([0.2, 0.4, 0.6]), None, 64, problems=[0, 1, 0])
    assert out.values[:, 0].tolist() == pytest.approx([0.2, -0.4, 0.6])
    assert sorted(v.calls) == [(1, "dark"), (2, "bright")]
    assert scorer.condition_of(3) == "dark" and Scorer(None, v, None).condition == ""
    assert Scorer(None, v, ["", "dark"]).conditions == ["", "dark"]


def test_scorer_ranks_a_rank_ensemble_over_every_chunk():
    a, b = Brightness(False, max_batch=1), Brightness(False, max_batch=1)
    ens = EnsembleVerifier([a, b])
    scorer = Scorer(None, ens)
    assert scorer.relative and not scorer.whole_batch
    values = scorer(flat([0.3, 0.1, 0.2]), None, 1).values
    assert values.shape == (3, 2)  # the members' scores, chunked
    assert scorer.compare(values).tolist() == ens.score(flat([0.3, 0.1, 0.2])).tolist() == [3.0, 1.0, 2.0]


def test_scorer_reads_the_verifiers_early_level_and_times_its_work():
    scorer = Scorer(None, Brightness(early_level=0.4))
    assert scorer.early_level == 0.4 and Scorer(None, Brightness()).early_level is None
    assert scorer.timings == {"decode": 0.0, "score": 0.0}
    scorer(flat([0.5]), flat([0.4]), 8)
    assert scorer.timings["score"] > 0 and scorer.timings["decode"] == 0.0  # nothing to decode
    assert not Scorer(None, Brightness()).relative and not Scorer(None, Brightness()).whole_batch
    assert math.isfinite(float(scorer.verify(flat([0.5]), flat([0.4]))[0, 0]))
