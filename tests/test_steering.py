"""Particle steering (FK/SMC), early rejection and diffusion tree search on the exact
Gaussian-mixture denoiser: NFE counts, resampling, the flat potential, rejection, the tree,
budgets, verifier kinds."""

from __future__ import annotations

import math

import pytest
import torch

from search import BudgetError, early_rejection, particle_steering, random_search, tree_search
from search.algorithms import PARTICLE_JUDGE
from search.smc import effective_sample_size, log_potential, normalized, systematic_resample
from tests.helpers import MEANS, backend, gen, noise


def in_target_mode(x: torch.Tensor) -> torch.Tensor:
    return ((x - MEANS[0]).norm(dim=1) < 2.0).float()


# -- resampling ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_systematic_resampling_keeps_the_weighted_mean_within_its_monte_carlo_error(seed):
    g = torch.Generator().manual_seed(seed)
    k = 4000
    x = torch.randn(k, generator=g, dtype=torch.float64)
    log_w = 1.5 * torch.randn(k, generator=g, dtype=torch.float64)
    f = torch.sin(3 * x) + x**2  # a known test function of the particles
    w = normalized(log_w).double()
    target = float((w * f).sum())
    resampled = f[systematic_resample(log_w, g)].mean()
    # Systematic resampling's error is at most multinomial resampling's: sqrt(Var_w(f) / K).
    error = math.sqrt(float((w * (f - target) ** 2).sum()) / k)
    assert abs(float(resampled) - target) < 4 * error


def test_systematic_resampling_copies_each_particle_floor_or_ceil_of_k_times_its_weight():
    log_w = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    for seed in range(20):
        counts = torch.bincount(systematic_resample(log_w, gen(seed)), minlength=4)
        expected = 4 * normalized(log_w)
        assert ((counts >= expected.floor()) & (counts <= expected.ceil())).all()
    equal = systematic_resample(torch.zeros(7), gen(3))
    assert equal.tolist() == list(range(7))  # equal weights: every particle exactly once


def test_ess_and_potentials():
    assert effective_sample_size(torch.zeros(8)) == pytest.approx(8)
    assert effective_sample_size(torch.tensor([0.0, -math.inf, -math.inf])) == pytest.approx(1)
    history = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]])
    assert log_potential("max", history, 2.0).tolist() == [6.0, 8.0]
    assert log_potential("sum", history, 2.0).tolist() == [12.0, 6.0]
    assert log_potential("difference", history, 2.0).tolist() == [-2.0, 10.0]
    assert log_potential("difference", history[:, :1], 2.0).tolist() == [2.0, 0.0]
    assert log_potential("max", history, 0.0).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="potential must be one of max, sum, difference"):
        log_potential("mean", history, 1.0)


# -- particle steering -------------------------------------------------------------------------
@pytest.mark.parametrize("ancestral", [False, True])
@pytest.mark.parametrize("interval", [1, 3])
def test_particle_steering_nfe_is_exact_and_x0_predictions_cost_nothing(ancestral, interval):
    """judge "last": the sampler's own x0-predictions (free), except where they would be a copy's
    parent's; the default "point" asks the model at every resampling point (test_strategy_truth)."""
    m = backend(steps=10, ancestral=ancestral)
    res = particle_steering(m, noise(6), m.schedule(), generator=gen(), lmbda=2.0, interval=interval, judge="last")
    # One-step pieces of a stochastic sampler: the 8 inner resampling points (after the first)
    # ask the model for the particles' own x0-predictions, one NFE each.
    asked = 6 * 8 if ancestral and interval == 1 else 0
    assert res.nfe == 6 * 10 + asked == m.rows == res.planned_nfe
    labels = [PARTICLE_JUDGE["point" if asked else "last"]] * (len(res.rounds) - 2)
    assert [r.get("x0") for r in res.rounds[1:-1]] == labels
    assert len(res.rounds) == math.ceil(10 / interval)
    # The winner is the best-scoring final particle, and it is the returned latent.
    finals = [c for c in res.candidates if c["round"] == len(res.rounds) - 1]
    best = max(finals, key=lambda c: c["score"])
    assert res.best_id == best["id"] and res.best_score == pytest.approx(best["score"])
    assert res.best_score == pytest.approx(float(m.score(res.best).values[0, 0]))


def test_particle_steering_budget_buys_whole_particles():
    m = backend(steps=10)
    res = particle_steering(m, noise(8), m.schedule(), generator=gen(), budget=35, judge="last")
    assert res.stopped_by_budget and res.nfe == 30 == m.rows and res.planned_nfe == 80
    # Judged at every resampling point: 10 steps + 9 x0-predictions a particle.
    point = particle_steering(backend(steps=10), noise(8), m.schedule(), generator=gen(), budget=40, judge="point")
    assert point.stopped_by_budget and point.nfe == 38 and point.planned_nfe == 8 * 19
    with pytest.raises(BudgetError, match="budget of 9 NFEs cannot pay for one particle"):
        particle_steering(backend(steps=10), noise(8), m.schedule(), generator=gen(), budget=9)


@pytest.mark.parametrize("ancestral", [False, True])
def test_flat_potential_is_independent_sampling(ancestral):
    """lambda = 0: weights stay equal and nothing is resampled, even at ess_threshold 1."""
    m = backend(steps=8, ancestral=ancestral)
    res = particle_steering(m, noise(5), m.schedule(), generator=gen(), lmbda=0.0, interval=2, ess_threshold=1.0)
    assert all(r["ess"] == pytest.approx(5) and not r["resampled"] for r in res.rounds[:-1])
    assert [r["ancestors"] for r in res.rounds[:-1]] == [[r * 5 + i for i in range(5)] for r in range(3)]


def test_flat_potential_particle_is_its_own_trajectory_advanced_alone():
    """With the sampler's own per-step noise, every particle of a flat-potential run is the
    trajectory of its noise advanced alone, piece by piece, under the ids the report names."""
    m = backend(steps=8, ancestral=True)
    res = particle_steering(m, noise(5), m.schedule(), generator=gen(), lmbda=0.0, interval=2, top_k=5)
    sigmas = m.schedule()
    for i in range(5):
        alone, state = backend(steps=8, ancestral=True), None
        for r, a in enumerate(range(0, 8, 2)):
            state, _ = alone.advance(state, noise(5)[i : i + 1] if r == 0 else None, sigmas[a : a + 3], [r * 5 + i])
        assert torch.allclose(res.top[res.top_ids.index(15 + i)], state[0], atol=1e-6)


def test_flat_potential_keeps_the_models_marginals():
    """With lambda = 0 the particles are independent samples of the mixture: each mode holds a
    quarter of them, within Monte Carlo error, for the pack's re-noising and for ancestral steps."""
    k = 2000
    for ancestral in (False, True):
        m = backend(steps=16, ancestral=ancestral)
        res = particle_steering(m, noise(k, seed=5), m.schedule(), generator=gen(), lmbda=0.0, top_k=k)
        share = float(in_target_mode(res.top).mean())
        assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / k), (ancestral, share)


@pytest.mark.parametrize("potential", ["max", "sum", "difference"])
def test_steering_tilts_particles_toward_the_reward(potential):
    k = 400
    m = backend(steps=12)
    plain = particle_steering(m, noise(k, seed=7), m.schedule(), generator=gen(), lmbda=0.0, top_k=k)
    steered = particle_steering(backend(steps=12), noise(k, seed=7), m.schedule(), generator=gen(),
                                potential=potential, lmbda=1.0, top_k=k)
    assert any(r["resampled"] for r in steered.rounds[:-1])
    # Judged one step early (the default) the tilt measured 0.27 -> 0.57 of the particles in the
    # target mode; judged at the resampling points, 0.27 -> 0.51.
    assert float(in_target_mode(steered.top).mean()) > float(in_target_mode(plain.top).mean()) + 0.3


def test_resampling_follows_the_ess_threshold_and_reports_ancestors():
    m = backend(steps=6)
    never = particle_steering(m, noise(8), m.schedule(), generator=gen(), lmbda=5.0, ess_threshold=0.0)
    assert not any(r["resampled"] for r in never.rounds[:-1])
    always = particle_steering(backend(steps=6), noise(8), m.schedule(), generator=gen(), lmbda=5.0,
                               ess_threshold=1.0)
    for r in always.rounds[:-1]:
        assert r["resampled"] == (r["ess"] < 8 * (1 - 1e-6))
        if r["resampled"]:
            assert len(set(r["ancestors"])) < 8  # some particles copied, others dropped
        # Every ancestor is a particle of that round, and the next round's particles name them.
        round_ids = {c["id"] for c in always.candidates if c["round"] == r["round"]}
        assert set(r["ancestors"]) <= round_ids
        children = [c for c in always.candidates if c["round"] == r["round"] + 1]
        assert [c["parent"] for c in children] == r["ancestors"]


def test_resampling_round_keeps_the_weighted_reward_mean():
    """In a resampling round, the mean reward of the chosen ancestors estimates the weighted mean
    reward of the round within its Monte Carlo error."""
    k = 3000
    m = backend(steps=8)
    res = particle_steering(m, noise(k, seed=2), m.schedule(), generator=gen(), lmbda=0.5, ess_threshold=1.0)
    r = next(r for r in res.rounds[:-1] if r["resampled"])
    entries = {c["id"]: c for c in res.candidates if c["round"] == r["round"]}
    w = torch.tensor([c["weight"] for c in entries.values()], dtype=torch.float64)
    f = torch.tensor([c["score"] for c in entries.values()], dtype=torch.float64)
    target = float((w * f).sum())
    chosen = torch.tensor([entries[a]["score"] for a in r["ancestors"]], dtype=torch.float64).mean()
    error = math.sqrt(float((w * (f - target) ** 2).sum()) / k)
    assert abs(float(chosen) - target) < 4 * error


def test_particle_steering_with_a_rank_ensemble_picks_the_best_ranked_final():
    m = backend(steps=8, ensemble=True)
    every = particle_steering(m, noise(6), m.schedule(), generator=gen(), lmbda=3.0, top_k=6)
    # Ranks among all six final particles, best first; the returned latents are those ranked.
    values = m.compare(m.score(every.top).values)
    assert every.top_scores == pytest.approx(values.tolist())
    assert every.top_scores == sorted(every.top_scores, reverse=True)
    three = particle_steering(backend(steps=8, ensemble=True), noise(6), m.schedule(), generator=gen(), lmbda=3.0,
                              top_k=3)
    assert three.top_ids == every.top_ids[:3] and three.top_scores == pytest.approx(every.top_scores[:3])


# -- early rejection ---------------------------------------------------------------------------
def lane_owner(res) -> dict[int, int]:
    owner = {}
    for r in res.rounds:
        judged = [c["id"] for c in res.candidates if c["round"] == r["round"]]
        owner.update(zip(r.get("lanes", judged), judged))  # a regeneration round runs under the ids
    return owner


@pytest.mark.parametrize("ancestral", [False, True])
def test_early_rejection_never_finishes_a_candidate_it_rejected(ancestral):
    m = backend(steps=10, ancestral=ancestral)
    res = early_rejection(m, noise(16), m.schedule(), generator=gen(), keep=0.5, levels=(0.7, 0.4), top_k=2)
    rejected = {i for r in res.rounds for i in r.get("rejected", [])}
    assert len(rejected) == 16 - 4
    owner = lane_owner(res)
    finished = {owner.get(i, i) for ids, _, end in m.runs if end == 0 for i in ids}
    assert finished and not finished & rejected
    for r in res.rounds[1:]:
        judged = {c["id"] for c in res.candidates if c["round"] == r["round"]}
        assert not judged & {i for q in res.rounds[: r["round"]] for i in q.get("rejected", [])}
    assert res.best_id not in rejected and not set(res.top_ids) & rejected


@pytest.mark.parametrize("ancestral", [False, True])
def test_early_rejection_nfe_is_exact_and_the_winner_is_its_noises_plain_sample(ancestral):
    m = backend(steps=10, ancestral=ancestral)
    res = early_rejection(m, noise(16), m.schedule(), generator=gen(), keep=0.5, levels=(0.7, 0.4))
    steps = [r["step"] for r in res.rounds if "step" in r]
    pieces = [b - a for a, b in zip([0, *steps[:-1]], steps)]
    regen = 4 * 10 if ancestral else 0  # per-step noise: every survivor is regenerated in one piece
    assert res.nfe == 16 * pieces[0] + 8 * pieces[1] + 4 * pieces[2] + regen == m.rows == res.planned_nfe
    plain, _ = backend(steps=10, ancestral=ancestral).solve(None, noise(16)[res.best_id : res.best_id + 1],
                                                            m.schedule(), [res.best_id])
    assert torch.allclose(res.best, plain, atol=1e-5)
    assert torch.equal(res.best_noise, noise(16)[res.best_id : res.best_id + 1])


def test_early_rejection_judges_at_schedule_steps_nearest_the_levels():
    m = backend(steps=10)
    res = early_rejection(m, noise(8), m.schedule(), generator=gen(), levels=(0.7, 0.4))
    sigmas = m.schedule()
    for r, t in zip(res.rounds, (0.7, 0.4)):
        nearest = min(range(1, 10), key=lambda i: abs(float(sigmas[i]) - m.level_sigma(t)))
        assert r["step"] == nearest
    assert res.rounds[-1]["step"] == 10


def test_early_rejection_budget_starts_as_many_candidates_as_it_pays_for():
    m = backend(steps=10)
    res = early_rejection(m, noise(4096), m.schedule(), generator=gen(), budget=100)
    assert res.stopped_by_budget and res.nfe <= 100 and res.nfe == m.rows
    started = sum(c["round"] == 0 for c in res.candidates)
    more = early_rejection(backend(steps=10), noise(started + 1), m.schedule(), generator=gen())
    assert more.nfe > 100  # one more candidate would not have been paid for
    with pytest.raises(BudgetError, match="one candidate"):
        early_rejection(backend(steps=10), noise(8), m.schedule(), budget=9)


def test_early_rejection_beats_random_search_at_equal_nfe_on_average():
    budget, wins, runs = 120, 0.0, 12
    for seed in range(runs):
        m = backend(steps=10)
        rej = early_rejection(m, noise(4096, seed=seed), m.schedule(), generator=gen(), budget=budget)
        rnd = random_search(backend(steps=10), noise(4096, seed=seed)[: budget // 10], m.schedule())
        wins += rej.best_score - rnd.best_score
    assert wins / runs > 0


def test_early_rejection_with_a_rank_ensemble_keeps_the_best_ranked():
    m = backend(steps=10, ensemble=True)
    res = early_rejection(m, noise(8), m.schedule(), generator=gen(), keep=0.5, top_k=2)
    first = [c for c in res.candidates if c["round"] == 0]
    ranked = sorted(first, key=lambda c: -c["score"])
    assert sorted(res.rounds[0]["kept"]) == sorted(c["id"] for c in ranked[:4])
    assert res.top_scores == sorted(res.top_scores, reverse=True)


# -- diffusion tree search ---------------------------------------------------------------------
def tree_nodes(res, steps: int) -> int:
    """Nodes a run's rollouts added: a new initial noise adds itself and one node per step; a
    branch from a node at step s adds the steps below it."""
    return sum(steps - c["branched_at"] for c in res.candidates)


@pytest.mark.parametrize("ancestral", [False, True])
@pytest.mark.parametrize("greedy", [False, True])
def test_tree_search_nfe_is_exact_and_the_tree_grows_by_its_rollouts(ancestral, greedy):
    m = backend(steps=8, ancestral=ancestral)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=12, branches=2, wave=3, greedy=greedy)
    assert len(res.candidates) == 12
    # Every rollout pays one NFE per step below where it branched (Euler steps: 1 NFE each).
    assert res.nfe == sum(8 - max(0, c["branched_at"]) for c in res.candidates) == m.rows
    assert res.planned_nfe == 12 * 8 >= res.nfe
    assert res.rounds[-1]["nodes"] == tree_nodes(res, 8)
    assert sum(c["branched_at"] == -1 for c in res.candidates) == 2  # the root holds `branches` noises
    assert any(c["branched_at"] > 0 for c in res.candidates)  # later rollouts branch inside the tree
    # The winner is the best leaf found, and the returned latent is that leaf.
    best = max(res.candidates, key=lambda c: c["score"])
    assert res.best_id == best["id"] and res.best_score == pytest.approx(best["score"])
    assert res.best_score == pytest.approx(float(m.score(res.best).values[0, 0]))


def test_tree_search_budget_is_never_exceeded():
    for budget in (8, 20, 37, 60):
        m = backend(steps=8)
        res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=1000, budget=budget)
        assert res.nfe == m.rows <= budget and res.stopped_by_budget, budget
        # Nothing that the rest of the budget could pay for was left out: the next rollout costs more.
        assert budget - res.nfe < 8
    with pytest.raises(BudgetError, match="one rollout"):
        tree_search(backend(steps=8), noise(4), backend().schedule(), generator=gen(), budget=7)


def test_tree_search_without_any_noise_along_the_way_is_random_search_over_its_root():
    """A deterministic sampler and renoise 0: every step has one possible child, so every rollout
    is a new initial noise and the search is best-of-`rollouts` over stock samples."""
    m = backend(steps=8)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=3, branches=3, renoise=0.0)
    plain = random_search(backend(steps=8), noise(4)[:3], m.schedule())
    assert len(res.candidates) == 3 and res.nfe == 3 * 8
    assert torch.allclose(res.best, plain.best) and res.best_score == pytest.approx(plain.best_score)
    # Beyond the given noises: the backend's stock noises of their index (seed + i).
    more = tree_search(backend(steps=8), noise(4), m.schedule(), generator=gen(), rollouts=6, branches=3,
                       renoise=0.0)
    assert sorted(c["id"] for c in more.candidates) == list(range(6)) and more.nfe == 6 * 8
    extra = torch.cat([noise(4), backend(steps=8).initial_noise([4, 5])])
    assert torch.allclose(more.best, random_search(backend(steps=8), extra, m.schedule()).best)
    assert more.seeded and more.best_score >= res.best_score


def test_tree_search_children_never_exceed_branches():
    m = backend(steps=6, ancestral=True)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=40, branches=3, wave=4, greedy=False,
                      lmbda=0.0)
    # At lambda 0 the descent is uniform: rollouts branch at many depths.
    depths = [c["branched_at"] for c in res.candidates]
    assert depths.count(-1) == 3 and len(set(depths)) >= 4
    # A node's children: the rollouts that branched from it, plus the one that made it.
    from collections import Counter

    branches = Counter(c["branched_from"] for c in res.candidates)
    assert branches.pop(None) == 3
    assert branches and max(branches.values()) + 1 <= 3


def test_tree_search_with_a_rank_ensemble_ranks_every_leaf():
    m = backend(steps=6, ensemble=True, ancestral=True)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=9, top_k=9)
    values = m.compare(m.score(res.top).values)
    assert res.top_scores == pytest.approx(values.tolist())
    assert res.top_scores == sorted(res.top_scores, reverse=True)


# -- what the reports and callbacks say (each field is read by the progress view or users) ------
def level_of(m, sigma: float) -> float:
    return math.sqrt(sigma / m.sigma_max)  # the GMM backend's levels: sigma = sigma_max t^2


def test_smc_edge_cases():
    two = torch.tensor([[1.0, 3.0], [2.0, 0.5]])
    assert log_potential("difference", two, 1.0).tolist() == [2.0, -1.5]  # against the previous reward
    diverged = torch.tensor([[1.0, -math.inf]])
    assert log_potential("max", diverged, 2.0).tolist() == [-math.inf]  # a diverged particle weighs 0
    assert log_potential("sum", diverged, 0.0).tolist() == [0.0]  # flat, not nan
    assert normalized(torch.full((4,), -math.inf)).tolist() == [0.25] * 4


def test_particle_pieces_are_renoised_up_only_with_a_deterministic_sampler():
    m = backend(steps=8)
    sigmas = m.schedule()
    particle_steering(m, noise(3), sigmas, generator=gen(), lmbda=1.0, interval=2, renoise=0.2)
    starts = [first for _, first, _ in m.runs]
    ends = [float(sigmas[0])] + [last for _, _, last in m.runs[:-1]]
    assert starts[0] == pytest.approx(float(sigmas[0]))
    for start, end in zip(starts[1:], ends[1:]):
        up = min(float(sigmas[0]), m.level_sigma(min(1.0, level_of(m, end) + 0.2)))
        assert start == pytest.approx(up, rel=1e-4) and start > end
    a = backend(steps=8, ancestral=True)
    particle_steering(a, noise(3), sigmas, generator=gen(), lmbda=1.0, interval=2, renoise=0.2)
    assert [first for _, first, _ in a.runs[1:]] == [last for _, _, last in a.runs[:-1]]


def test_resampled_copies_part_ways_only_when_re_noised():
    def finals(renoise):
        m = backend(steps=6)
        return particle_steering(m, noise(4), m.schedule(), generator=gen(), lmbda=50.0, ess_threshold=1.0,
                                 renoise=renoise, top_k=4)

    frozen, parted = finals(0.0), finals(0.2)
    assert len(set(frozen.rounds[0]["ancestors"])) < 4  # lambda 50: copies were made
    assert len({tuple(x.tolist()) for x in frozen.top}) < 4
    assert len({tuple(x.tolist()) for x in parted.top}) == 4


def test_rounds_report_levels_and_keep_unresampled_particles():
    m = backend(steps=8)
    sigmas = m.schedule()
    res = particle_steering(m, noise(4), sigmas, generator=gen(), lmbda=0.3, interval=2, ess_threshold=0.0)
    for r, end in zip(res.rounds[:-1], sigmas[2::2].tolist()):
        assert m.level_sigma(r["level"]) == pytest.approx(end, rel=1e-4)
        ids = [c["id"] for c in res.candidates if c["round"] == r["round"]]
        assert r["ancestors"] == ids and not r["resampled"]  # not resampled: every particle goes on
    assert res.rounds[-1]["level"] == 0.0
    assert {c["level"] for c in res.candidates if c["round"] == 3} == {0.0}


@pytest.mark.parametrize("name", ["particles", "rejection", "tree"])
def test_callback_gets_every_round_with_its_candidates(name):
    m = backend(steps=8)
    seen = []
    fn, kw = {"particles": (particle_steering, dict(interval=2)), "rejection": (early_rejection, {}),
              "tree": (tree_search, dict(rollouts=5, wave=2))}[name]
    res = fn(m, noise(6), m.schedule(), generator=gen(), callback=seen.append, **kw)
    assert [s["round"] for s in seen] == [r["round"] for r in res.rounds] == list(range(len(res.rounds)))
    for info in seen:
        if name == "tree":  # a wave's new leaves, scored among every leaf so far
            assert len(info["ids"]) == info["rollouts"] == len(info["scores"])
            continue
        mine = {c["id"]: c["score"] for c in res.candidates if c["round"] == info["round"]}
        assert info["ids"] == list(mine) and info["scores"] == pytest.approx(list(mine.values()))
        assert info["images"] is not None and len(info["images"]) == len(info["ids"])


def test_early_rejection_snaps_levels_to_inner_steps_and_reports_them():
    m = backend(steps=10)
    sigmas = m.schedule()
    res = early_rejection(m, noise(8), sigmas, generator=gen(), levels=(0.999, 0.001))
    assert [r["step"] for r in res.rounds] == [1, 9, 10]  # never step 0 or the last one
    for r in res.rounds[:-1]:
        assert m.level_sigma(r["level"]) == pytest.approx(float(sigmas[r["step"]]), rel=1e-4)
        assert {c["step"] for c in res.candidates if c["round"] == r["round"]} == {r["step"]}
    assert res.rounds[-1]["level"] == 0.0


def test_early_rejection_lanes_are_fresh_ids():
    m = backend(steps=10)
    res = early_rejection(m, noise(8), m.schedule(), generator=gen())
    assert res.rounds[0]["lanes"] == list(range(8))
    later = [i for r in res.rounds[1:] for i in r["lanes"]]
    assert len(later) == len(set(later)) and min(later) >= 8


def rejection_cost(pieces, n, keep, top_k, regen):
    counts = [n]
    for _ in pieces[1:]:
        counts.append(max(min(top_k, n), math.ceil(counts[-1] * keep - 1e-9)))
    return sum(c * p for c, p in zip(counts, pieces)) + (counts[-1] * sum(pieces) if regen else 0)


@pytest.mark.parametrize("ancestral", [False, True])
def test_early_rejection_budget_sweep_starts_the_most_it_pays_for(ancestral):
    sigmas = backend(steps=10).schedule()
    probe = early_rejection(backend(steps=10, ancestral=ancestral), noise(8), sigmas, generator=gen(), top_k=2)
    steps = [r["step"] for r in probe.rounds if "step" in r]
    pieces = [b - a for a, b in zip([0, *steps[:-1]], steps)]
    assert probe.nfe == rejection_cost(pieces, 8, 0.5, 2, ancestral)  # survivors regenerated if ancestral
    for budget in range(rejection_cost(pieces, 1, 0.5, 2, ancestral), rejection_cost(pieces, 12, 0.5, 2, ancestral)):
        m = backend(steps=10, ancestral=ancestral)
        res = early_rejection(m, noise(12), sigmas, generator=gen(), budget=budget, top_k=2)
        n = max(k for k in range(1, 13) if rejection_cost(pieces, k, 0.5, 2, ancestral) <= budget)
        assert sum(c["round"] == 0 for c in res.candidates) == n, budget
        assert res.nfe == m.rows == rejection_cost(pieces, n, 0.5, 2, ancestral) <= budget, budget


def test_tree_waves_hold_their_rollouts():
    m = backend(steps=6, ancestral=True)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=7, branches=2, wave=3)
    assert [r["rollouts"] for r in res.rounds] == [2, 3, 2]  # the first wave: the root's two noises
    assert res.rounds[0]["branched_at"] == [-1, -1]
    for r in res.rounds:
        mine = [c for c in res.candidates if c["round"] == r["round"]]
        assert [c["branched_at"] for c in mine] == r["branched_at"]


@pytest.mark.parametrize("ancestral", [False, True])
def test_tree_branches_only_where_a_step_adds_noise(ancestral):
    m = backend(steps=5, ancestral=ancestral)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=30, branches=2, wave=2, greedy=False,
                      lmbda=0.0)
    depths = {c["branched_at"] for c in res.candidates}
    # Without per-step noise the first step from a noise is deterministic (step 0 never
    # branches); with it the step to sigma 0 adds none (step 4 never branches).
    if ancestral:
        assert 0 in depths and 4 not in depths
    else:
        assert 0 not in depths and 4 in depths
    assert {1, 2, 3} <= depths
    for c in res.candidates:
        assert len(c["path"]) == 6 and c["path"][-1] == c["id"]
        if c["branched_from"] is not None:
            assert c["path"][c["branched_at"]] == c["branched_from"]


def test_greedy_descent_follows_the_best_leaf():
    m = backend(steps=6, ancestral=True)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=3, branches=2, wave=1, greedy=True)
    first, second, third = res.candidates
    best = max((first, second), key=lambda c: c["score"])
    assert third["branched_from"] in best["path"]


def test_soft_values_back_up_the_leaves():
    from search.algorithms import _soft_values, _Tree

    tree = _Tree()
    a = tree.add(0, None, 10)
    l1, l2 = tree.add(a, None, 11), tree.add(a, None, 12)
    b = tree.add(0, None, 20)
    l3 = tree.add(b, None, 21)
    l4 = tree.add(b, None, 22)
    tree.leaf_rows = {l1: 0, l2: 1, l3: 2, l4: 3}
    leaves = torch.tensor([1.0, 3.0, 2.0, -math.inf])
    # Nodes the backup must pass over: one with no finished leaf yet, one whose only leaf diverged.
    waiting = tree.add(0, None, 30)
    tree.add(waiting, None, 31)
    lost = tree.add(0, None, 40)
    tree.leaf_rows[tree.add(lost, None, 41)] = 4
    leaves = torch.cat([leaves, torch.tensor([-math.inf])])
    mean, count = _soft_values(tree, leaves, 0.0)
    assert count[waiting] == 0 and mean[waiting] == -math.inf
    assert count[lost] == 1 and mean[lost] == -math.inf
    assert count[0] == 5 and count[a] == 2 and count[b] == 2
    assert mean[a] == pytest.approx(2.0) and mean[b] == pytest.approx(2.0)  # a diverged leaf is left out
    assert mean[0] == pytest.approx(2.0)
    soft, _ = _soft_values(tree, leaves, 2.0)
    assert soft[a] == pytest.approx(math.log((math.exp(2) + math.exp(6)) / 2) / 2)
    assert soft[b] == pytest.approx(2.0)
    assert soft[0] == pytest.approx(math.log((2 * math.exp(2 * soft[a]) + 2 * math.exp(4.0)) / 4) / 2)


def test_tree_budget_sweep_never_overspends():
    for budget in range(6, 60):
        m = backend(steps=6)
        res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=1000, budget=budget, wave=3)
        assert res.nfe == m.rows <= budget, budget


def test_tree_candidate_scores_are_their_final_ranks():
    m = backend(steps=6, ensemble=True, ancestral=True)
    res = tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=8, wave=3, top_k=8)
    assert sorted((c["score"] for c in res.candidates), reverse=True) == pytest.approx(res.top_scores)


def test_tree_steps_are_re_noised_and_its_root_holds_the_given_noises():
    m = backend(steps=6)
    sigmas = m.schedule()
    res = tree_search(m, noise(4), sigmas, generator=gen(), rollouts=10, branches=3, wave=2, renoise=0.2)
    for _, first, last in m.runs:
        j = int(torch.argmin((sigmas - last).abs())) - 1  # the step this call took
        if j == 0:
            assert first == pytest.approx(float(sigmas[0]))
        else:
            up = min(float(sigmas[0]), m.level_sigma(min(1.0, level_of(m, float(sigmas[j])) + 0.2)))
            assert first == pytest.approx(up, rel=1e-4)
    # The root's children are the given noises (three of the four), and re-noised siblings part.
    assert {tuple(v.tolist()) for v in m.noise_of.values()} == {tuple(v.tolist()) for v in noise(4)[:3]}
    assert len({tuple(x.tolist()) for x in res.top}) == len(res.top)
    finals = tree_search(backend(steps=6), noise(4), sigmas, generator=gen(), rollouts=10, branches=3, wave=2,
                         renoise=0.2, top_k=10).top
    assert len({tuple(x.tolist()) for x in finals}) == 10


def test_particle_budget_of_exactly_k_particles_is_not_a_stop():
    m = backend(steps=10)
    res = particle_steering(m, noise(4), m.schedule(), generator=gen(), budget=40, judge="last")
    assert res.nfe == 40 and not res.stopped_by_budget


def test_early_rejection_finished_candidates_are_at_level_zero():
    m = backend(steps=10)
    res = early_rejection(m, noise(8), m.schedule(), generator=gen())
    last = res.rounds[-1]["round"]
    assert {c["level"] for c in res.candidates if c["round"] == last} == {0.0}


def test_boltzmann_descent_with_a_large_lambda_follows_the_best_leaf():
    """DTS's descent samples children in proportion to exp(lambda v): a large lambda makes it
    greedy (the third rollout branches off the better of the first two, for every seed)."""
    for seed in range(10):
        m = backend(steps=6, ancestral=True)
        res = tree_search(m, noise(4, seed=seed), m.schedule(), generator=gen(seed), rollouts=3, branches=2, wave=1,
                          greedy=False, lmbda=1e4)
        first, second, third = res.candidates
        assert third["branched_from"] in max((first, second), key=lambda c: c["score"])["path"], seed


def test_a_wave_of_rollouts_shares_its_model_calls():
    """`wave` rollouts are one batch: a first wave of three new noises costs one denoiser call per
    step, not three."""
    m = backend(steps=6, ancestral=True)
    tree_search(m, noise(4), m.schedule(), generator=gen(), rollouts=3, branches=3, wave=3)
    assert m.calls == 6 and m.rows == 3 * 6
    one_by_one = backend(steps=6, ancestral=True)
    tree_search(one_by_one, noise(4), one_by_one.schedule(), generator=gen(), rollouts=3, branches=3, wave=1)
    assert one_by_one.calls == 3 * 6


def test_greedy_descent_leaves_a_diverged_branch_alone():
    """A clean sample that diverged (a non-finite score) never draws later rollouts to its branch."""
    from search.backend import Scores

    class Diverging(type(backend())):
        def score(self, latents, early=None):
            scored = super().score(latents, early)
            bad = latents[:, 0] < 0  # samples on the left half "diverge"
            return Scores(torch.where(bad[:, None], torch.full_like(scored.values, -math.inf), scored.values),
                          scored.images)

    cases = 0
    for seed in range(20):
        m = Diverging(MEANS, steps=6, ancestral=True)
        res = tree_search(m, noise(4, seed=seed), m.schedule(), generator=gen(seed), rollouts=3, branches=2, wave=1)
        first, second, third = res.candidates
        if math.isinf(first["score"]) != math.isinf(second["score"]):
            cases += 1
            finite = first if math.isfinite(first["score"]) else second
            assert third["branched_from"] in finite["path"], seed
    assert cases >= 3
