"""Selection rules (search/selection.py) and drafts (search/draft.py) on the analytic Gaussian-mixture
backend: tempered selection samples the reward-tilted distribution, threshold selection stops at the
first candidate reaching the value and spends no more, a draft's finalists are the main model's samples."""

from __future__ import annotations

import math

import pytest
import torch

from search import registry
from search.algorithms import (
    early_rejection,
    particle_steering,
    path_search,
    random_search,
    tree_search,
    zero_order_search,
)
from search.draft import regenerate_with_main, spearman
from search.selection import BEST, Selection, tempered_order
from tests.helpers import backend, gen, noise

N = 6


def plain_scores(m, x):
    """Every candidate's score from a run that returns them all (top_k = N)."""
    res = random_search(m, x, m.schedule(), generator=gen(), top_k=x.shape[0])
    return {e["id"]: e["score"] for e in res.candidates}


def test_tempered_draw_is_seeded_and_infinite_lambda_is_best():
    m, x = backend(target=1), noise(N, seed=4)
    a = random_search(m, x, m.schedule(), generator=gen(7), select=Selection("tempered", lmbda=0.1))
    b = random_search(m, x, m.schedule(), generator=gen(7), select=Selection("tempered", lmbda=0.1))
    assert a.best_id == b.best_id and a.top_ids == b.top_ids
    best = random_search(m, x, m.schedule(), generator=gen(7), top_k=3)
    inf = random_search(m, x, m.schedule(), generator=gen(7), top_k=3, select=Selection("tempered"))
    assert inf.top_ids == best.top_ids and inf.selection["drawn_among"] == N


def test_tempered_order_draws_in_proportion_to_exp_lambda_value():
    """The draw itself (fast): winner frequencies match softmax(lambda x values) within 4 standard
    errors, for values far from zero too (centred, so exp never overflows)."""
    for offset in (0.0, 1e4):
        values = torch.tensor([0.0, 1.0, 2.0, 0.5]) + offset
        g, draws = gen(3), 4000
        counts = torch.bincount(torch.tensor([int(tempered_order(values, 0.7, 1, g)[0]) for _ in range(draws)]),
                                minlength=4).double()
        expected = torch.softmax(0.7 * (values - offset).double(), 0)
        se = (expected * (1 - expected) / draws).sqrt()
        assert ((counts / draws - expected).abs() <= 4 * se).all(), (counts / draws, expected)


def test_tempered_order_draws_without_replacement_and_never_a_diverged_row_first():
    values = torch.tensor([1.0, float("-inf"), 0.5, float("nan")])
    for seed in range(50):
        rows = tempered_order(values, 0.0, 4, gen(seed)).tolist()
        assert sorted(rows) == [0, 1, 2, 3] and set(rows[:2]) == {0, 2}


STRATEGIES = {
    "random": lambda m, x, **kw: random_search(m, x, m.schedule(), generator=gen(), **kw),
    "zero_order": lambda m, x, **kw: zero_order_search(m, x[:1], m.schedule(), generator=gen(), iterations=3, **kw),
    "paths": lambda m, x, **kw: path_search(m, x[:2], m.schedule(), generator=gen(), **kw),
    "particles": lambda m, x, **kw: particle_steering(m, x[:4], m.schedule(), generator=gen(), lmbda=1.0, **kw),
    "rejection": lambda m, x, **kw: early_rejection(m, x, m.schedule(), generator=gen(), **kw),
    "tree": lambda m, x, **kw: tree_search(m, x[:2], m.schedule(), generator=gen(), rollouts=6, **kw),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("ancestral", [False, True])
def test_every_strategy_tempers_among_its_final_candidates(name, ancestral):
    """lambda infinite returns exactly what best does; a finite lambda returns one of the final
    candidates, with that candidate's own score, and the rest of the result unchanged."""
    run = STRATEGIES[name]
    best = run(backend(ancestral=ancestral, seed=2), noise(N, seed=1), top_k=2)
    inf = run(backend(ancestral=ancestral, seed=2), noise(N, seed=1), top_k=2, select=Selection("tempered"))
    assert inf.top_ids == best.top_ids and inf.top_scores == best.top_scores and inf.nfe == best.nfe
    low = run(backend(ancestral=ancestral, seed=2), noise(N, seed=1), top_k=2, select=Selection("tempered", lmbda=0.0))
    assert low.nfe == best.nfe and len(low.top_ids) == 2 and low.selection["rule"] == "tempered"
    final = {e["id"]: e["score"] for e in low.candidates}  # the last entry of each id: its final score
    assert low.best_id in final and low.best_score == pytest.approx(final[low.best_id])
    assert [final[i] for i in low.top_ids] == pytest.approx(low.top_scores)


def test_threshold_stops_at_the_first_candidate_reaching_the_value_and_spends_no_more():
    m, x = backend(target=3), noise(12, seed=5)
    scores = plain_scores(m, x)
    value = sorted(scores.values())[-3]  # three candidates reach it
    first = min(i for i, s in scores.items() if s >= value)
    per = m.nfe(m.schedule())
    m2 = backend(target=3)
    res = random_search(m2, x, m2.schedule(), generator=gen(), select=Selection("threshold", threshold=value))
    assert res.best_id == first and res.best_score == pytest.approx(scores[first])
    assert res.nfe == (first + 1) * per == m2.rows  # nothing after it was started
    assert res.selection == {"rule": "threshold", "threshold": value, "reached": True,
                             "reached_in_round": first, "scored": first + 1}
    # Never reached: the best of all N, all N paid.
    m3 = backend(target=3)
    res = random_search(m3, x, m3.schedule(), generator=gen(), select=Selection("threshold", threshold=1e9))
    assert res.best_score == pytest.approx(max(scores.values())) and res.nfe == 12 * per
    assert res.selection["reached"] is False and res.selection["scored"] == 12


@pytest.mark.parametrize("name", ["zero_order", "tree"])
def test_threshold_stops_zero_order_and_tree_search_after_the_round_that_reaches_it(name):
    run = STRATEGIES[name]
    full = run(backend(target=0), noise(N, seed=2))
    first_round = next(r for r in full.rounds if r.get("best_score") is not None)
    res = run(backend(target=0), noise(N, seed=2), select=Selection("threshold", threshold=first_round["best_score"]))
    assert res.selection["reached"] and res.selection["reached_in_round"] == first_round["round"]
    assert res.nfe == first_round["nfe"] < full.nfe
    assert res.best_score >= first_round["best_score"]


@pytest.mark.parametrize("name", ["paths", "particles", "rejection"])
def test_strategies_whose_candidates_finish_together_refuse_threshold_and_say_why(name):
    spec = registry.get(name)
    with pytest.raises(ValueError, match=f"selection: {spec.display_name} cannot use threshold selection: its "
                                         "candidates all finish together"):
        spec.configure({}, selection=Selection("threshold", threshold=1.0))
    assert spec.configure({}, selection=Selection("tempered", lmbda=1.0)).selection.rule == "tempered"


def test_selection_refuses_bad_values_naming_them():
    with pytest.raises(ValueError, match="lambda must be 0 or more"):
        Selection("tempered", lmbda=-1.0)
    with pytest.raises(ValueError, match="threshold must be a finite score"):
        Selection("threshold", threshold=math.nan)
    with pytest.raises(ValueError, match="selection rule 'worst' is not one of: best, tempered, threshold"):
        Selection("worst")
    assert BEST.settings() == {"rule": "best"}


def test_spearman_matches_its_definition():
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 30.0, 20.0, 40.0])
    # d = rank differences 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(a, b) == pytest.approx(0.8)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([1.0, 1.0, 2.0, 2.0])) == pytest.approx(0.894427, rel=1e-5)  # ties: mean ranks
    assert spearman(a[:1], b[:1]) is None and spearman(a, torch.ones(4)) is None


@pytest.mark.parametrize("ancestral", [False, True])
def test_a_drafts_finalists_are_the_main_models_samples_of_their_noises(ancestral):
    """A draft (here: the same mixture at 3 steps instead of 12, an imperfect model) searches; the main
    model regenerates its rescored finalists from their noises and ranks them by its own samples."""
    x = noise(8, seed=6)
    draft = backend(steps=3, ancestral=ancestral, seed=4)
    found = random_search(draft, x, draft.schedule(), generator=gen(), top_k=4)
    main = backend(ancestral=ancestral, seed=4)
    res = regenerate_with_main(main, found, main.schedule(), k=2)
    alone = backend(ancestral=ancestral, seed=4)
    plain = {i: alone.score(alone.solve(None, x[i : i + 1], alone.schedule(), [i])[0]).values.item()
             for i in found.top_ids}
    assert set(res.top_ids) <= set(found.top_ids) and len(res.top_ids) == 2
    assert res.best_id == max(found.top_ids, key=plain.get)
    assert res.top_scores == pytest.approx([plain[i] for i in res.top_ids])
    assert torch.equal(res.best_noise[0], x[res.best_id])
    per = main.nfe(main.schedule())
    assert res.draft == {"nfe": found.nfe, "regeneration_nfe": 4 * per, "rescored": 4,
                         "spearman": spearman(torch.tensor(found.top_scores),
                                              torch.tensor([plain[i] for i in found.top_ids])),
                         "draft_winner": found.best_id}
    assert res.nfe == found.nfe + 4 * per and main.rows == 4 * per
    assert res.search_scores == [found.top_scores[found.top_ids.index(i)] for i in res.top_ids]


def test_a_drafts_report_names_every_regenerated_sample_and_its_costs():
    """Everything the result of a draft search says: the main model's entries beside the draft's scores,
    the regeneration round, the plan grown by the regeneration, replay facts of the returned finalists,
    and the tempered order kept (keep_order)."""
    x = noise(8, seed=9)
    draft = backend(steps=3)
    found = random_search(draft, x, draft.schedule(), generator=gen(), top_k=3)
    main = backend()
    res = regenerate_with_main(main, found, main.schedule(), k=2)
    per = main.nfe(main.schedule())
    alone = backend()
    plain = {i: alone.score(alone.solve(None, x[i : i + 1], alone.schedule(), [i])[0]).values.item()
             for i in found.top_ids}
    new = res.candidates[len(found.candidates):]
    assert [(e["id"], e["round"], e["level"], e["sample"]) for e in new] == \
        [(i, len(found.rounds), 0.0, "main model") for i in found.top_ids]
    assert [e["score"] for e in new] == pytest.approx([plain[i] for i in found.top_ids])
    assert [e["draft_score"] for e in new] == pytest.approx(found.top_scores)
    assert res.rounds[:-1] == found.rounds
    last = res.rounds[-1]
    assert last == {"round": len(found.rounds), "nfe": found.nfe + 3 * per, "planned": found.planned_nfe + 3 * per,
                    "bound": found.planned_nfe + 3 * per, "best_id": res.best_id, "best_score": res.best_score,
                    "regenerated": found.top_ids, "model": "main", "spearman": res.draft["spearman"]}
    assert res.planned_nfe == found.planned_nfe + 3 * per and res.stopped_by_budget is False
    assert res.selection == found.selection and res.best.shape == x[:1].shape and res.top.shape[0] == 2
    assert res.best_score == pytest.approx(plain[res.best_id])
    assert res.seeded is True and res.top_seeded == [True, True]
    assert torch.equal(res.top_noise, x[res.top_ids])
    # A tempered draw's order is the draft's: kept, not re-ranked.
    kept = regenerate_with_main(backend(), found, main.schedule(), k=2, keep_order=True)
    assert kept.top_ids == found.top_ids[:2]
    # A result that is not one noise's sample cannot be regenerated.
    with pytest.raises(ValueError, match="each be the sample of one initial noise"):
        regenerate_with_main(main, path_search(draft, x[:2], draft.schedule(), generator=gen()), main.schedule(), k=1)


def test_spearman_edge_cases():
    assert spearman(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0])) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 3.0])) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([1.0, 2.0, 3.0])) is None
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, float("inf"), 3.0])) is None


def test_tempered_order_edge_cases():
    # Infinite lambda on ties: the earlier row first (stable), as best does.
    assert tempered_order(torch.tensor([1.0, 2.0, 2.0, 2.0]), math.inf, 4, gen()).tolist() == [1, 2, 3, 0]
    # Every row diverged: each drawn once, uniformly.
    firsts = {int(tempered_order(torch.full((3,), -math.inf), 1.0, 3, gen(s))[0]) for s in range(40)}
    assert firsts == {0, 1, 2}
    # Seeded: the generator alone decides (the global RNG does not).
    values = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0])
    draws = []
    for s in range(20):
        torch.manual_seed(1000 + s)
        draws.append(tempered_order(values, 0.3, 5, gen(s)).tolist())
        torch.manual_seed(2000 + s)
        assert tempered_order(values, 0.3, 5, gen(s)).tolist() == draws[-1]
    assert len({tuple(d) for d in draws}) > 1
    assert Selection("tempered", lmbda=0.5).settings() == {"rule": "tempered", "lambda": 0.5}
    assert Selection("threshold", threshold=2.0).settings() == {"rule": "threshold", "threshold": 2.0}


def test_the_main_model_reranks_a_drafts_finalists_and_keeps_the_drafts_budget_stop():
    """Noises where the 3-step draft and the 12-step main model disagree on the best finalist: the main
    model's ranking decides (keep_order off by default); a budget stop of the draft stays reported."""
    x = noise(8, seed=4)
    draft = backend(steps=3)
    found = random_search(draft, x, draft.schedule(), generator=gen(), top_k=3)
    res = regenerate_with_main(backend(), found, backend().schedule(), k=3)
    assert found.top_ids == [5, 2, 6] and res.top_ids == [2, 5, 6]  # the draft's winner is not the main's
    assert res.best_noise.shape == x[:1].shape and torch.equal(res.best_noise[0], x[2])
    assert res.search_scores == [found.top_scores[1], found.top_scores[0], found.top_scores[2]]
    stopped = random_search(draft, x, draft.schedule(), generator=gen(), top_k=2, budget=5 * 3)
    assert stopped.stopped_by_budget
    assert regenerate_with_main(backend(), stopped, backend().schedule(), k=1).stopped_by_budget


@pytest.mark.parametrize("name", ["zero_order", "rejection"])
@pytest.mark.parametrize("ancestral", [False, True])
def test_zero_order_and_early_rejection_drafts_return_the_main_models_sample_of_the_winning_noise(name, ancestral):
    draft = backend(steps=3, ancestral=ancestral, seed=4)
    found = STRATEGIES[name](draft, noise(N, seed=8), top_k=2)
    main = backend(ancestral=ancestral, seed=4)
    res = regenerate_with_main(main, found, main.schedule(), k=1)
    alone = backend(ancestral=ancestral, seed=4)
    plain = alone.solve(None, res.best_noise, alone.schedule(), [res.best_id])[0]
    assert torch.allclose(res.best, plain, atol=1e-5)
    assert res.seeded == found.top_seeded[found.top_ids.index(res.best_id)]


@pytest.mark.parametrize("ancestral", [False, True])
def test_early_rejections_reported_scores_are_its_returned_samples_and_carry_members(ancestral):
    m = backend(ancestral=ancestral, seed=3, ensemble=False)
    res = early_rejection(m, noise(8, seed=2), m.schedule(), generator=gen(), top_k=2, levels=(0.6,))
    assert res.top_scores == pytest.approx(m.compare(m.score(res.top).values).tolist())
    e = backend(ancestral=ancestral, seed=3, ensemble=True)
    ens = early_rejection(e, noise(8, seed=2), e.schedule(), generator=gen(), top_k=2, levels=(0.6,))
    assert all(len(c["members"]) == 3 for c in ens.candidates)
