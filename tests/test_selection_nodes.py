"""Issue 26 through ComfyUI's real sampler on the tiny model: the held-out judge's scores belong to
the returned winner and to the seed's plain sample; threshold selection on a latent batch stops each
problem on its own; a search with the host's EasyCache node as draft returns the main model's sample
of the winning noise, counting the draft's NFEs and the regeneration's apart; refusals name the input."""

from __future__ import annotations

import json

import pytest
import torch

from tests.harness.host import run_node
from tests.helpers import LATENT, ks_args, scores_of, search, stock_ksampler
from tests.toy_verifier import ProbeVerifier

HELD_OUT = ProbeVerifier(seed=7)  # another probe: never searched on
FK = dict(particles=3, potential="max", lmbda=20.0, interval=1, ess_threshold=1.0, renoise=0.2, judge_at="last step (cheaper, one step early)")


def judge(parts, held_out=HELD_OUT, verifier=None):
    return run_node("SearchJudge", vae=parts["vae"], verifier=verifier or ProbeVerifier(), condition="",
                    held_out=held_out)[0]


def drop_in(parts, **kw):
    """The KSampler-style inputs with a JUDGE (the new nodes take judging as one input)."""
    args = ks_args(parts, **kw)
    for k in ("vae", "verifier", "condition"):
        args.pop(k)
    args.setdefault("judge", judge(parts))
    return args


def selection(rule, lmbda=1.0, threshold=0.0):
    return run_node("SearchSelection", rule=rule, lambda_=lmbda, threshold=threshold)[0]


@pytest.mark.parametrize("node,options,made_by_search", [
    ("RandomSearchSampler", dict(candidates=4), True),
    ("ParticleSteeringSampler", FK, False),
])
def test_held_out_scores_belong_to_the_winner_and_the_seeds_plain_sample(parts, node, options, made_by_search):
    sampler = "euler_ancestral" if node == "ParticleSteeringSampler" else "euler"
    out = search(node, **drop_in(parts, sampler_name=sampler, top_k=2, **options))
    rep, held = out["report"], out["report"]["held_out"]
    # Re-scored by the test: the returned latents, and the stock KSampler's sample at the seed.
    own = scores_of(parts, out["top"]["samples"], verifier=HELD_OUT)
    assert held["top"] == pytest.approx(own.tolist(), abs=1e-4) and held["winner"] == pytest.approx(own[0].item(), abs=1e-4)
    plain = stock_ksampler(parts, seed=5, sampler_name=sampler)
    assert held["seed_sample"] == pytest.approx(scores_of(parts, plain, verifier=HELD_OUT).item(), abs=1e-4)
    assert held["searched"]["seed_sample"] == pytest.approx(scores_of(parts, plain).item(), abs=1e-4)
    assert held["searched"]["winner"] == rep["best"]["score"]
    assert held["gain"] == pytest.approx(held["winner"] - held["seed_sample"])
    assert held["verifier"] == "probe"
    # The seed's sample costs nothing where the search made it, one sample otherwise; counted apart.
    assert held["seed_sample_from"] == ("the search (candidate 0)" if made_by_search else "generated for the judge")
    assert held["nfe"] == (0 if made_by_search else 3)
    assert rep["nfe"]["measured"] == rep["nfe"]["search_total"]
    assert rep["timings"]["held_out_s"] >= 0
    # The judged output: both verifiers side by side, as the live view shows them.
    judged = json.loads(out["judged"])
    assert judged["held_out"] == {k: held[k] for k in ("verifier", "winner", "seed_sample", "gain")}
    assert judged["searched"] == {"verifier": "probe", "winner": rep["best"]["score"],
                                  "seed_sample": held["searched"]["seed_sample"]}


def test_without_a_held_out_judge_the_report_has_none_and_judged_gives_the_searched_score(parts):
    out = search("RandomSearchSampler", **drop_in(parts, judge=judge(parts, held_out=None), candidates=3))
    assert "held_out" not in out["report"]
    assert json.loads(out["judged"]) == {"searched": {"verifier": "probe", "winner": out["report"]["best"]["score"]}}


def test_threshold_on_a_latent_batch_stops_each_problem_on_its_own(parts):
    batch = {"samples": torch.zeros(2, 4, 4, 4)}
    full = search("RandomSearchSampler", **drop_in(parts, latent_image=batch, candidates=6, top_k=6))
    scores = [{c["id"]: c["score"] for c in p["candidates"]} for p in full["report"]["problems"]]
    value = sorted(scores[0].values())[-2]  # problem 0 reaches it at some candidate; problem 1 may differ
    out = search("RandomSearchSampler", **drop_in(parts, latent_image=batch, candidates=6,
                                                  selection=selection("threshold", threshold=value)))
    for b, rep in enumerate(out["report"]["problems"]):
        reached = [i for i in range(6) if scores[b][i] >= value]
        spent = (reached[0] + 1) if reached else 6
        assert rep["selection"]["scored"] == spent and rep["selection"]["reached"] == bool(reached)
        assert rep["nfe"]["search_total"] == rep["nfe"]["measured"] == 3 * spent
        assert rep["best"]["id"] == (reached[0] if reached else max(scores[b], key=scores[b].get))
        # The same as that latent searched alone.
        alone = search("RandomSearchSampler", **drop_in(parts, latent_image=run_node(
            "LatentFromBatch", samples=batch, batch_index=b, length=1)[0], candidates=6,
            selection=selection("threshold", threshold=value)))["report"]
        assert (alone["best"]["id"], alone["nfe"]["search_total"]) == (rep["best"]["id"], rep["nfe"]["search_total"])


def test_tempered_selection_through_the_node_is_seeded_and_replays(parts):
    runs = [search("RandomSearchSampler", **drop_in(parts, seed=9, candidates=5,
                                                    selection=selection("tempered", lmbda=0.0))) for _ in range(2)]
    assert runs[0]["report"]["best"] == runs[1]["report"]["best"]
    rep = runs[0]["report"]
    assert rep["selection"] == {"rule": "tempered", "lambda": 0.0, "drawn_among": 5}
    assert rep["settings"]["rule"] == "tempered"
    stock = stock_ksampler(parts, seed=rep["replay"]["seed"])
    assert torch.allclose(runs[0]["best"]["samples"], stock, atol=1e-4)


def easycache(parts):
    return run_node("EasyCache", model=parts["model"], reuse_threshold=0.5, start_percent=0.0, end_percent=1.0,
                    verbose=False)[0]


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_a_search_drafted_with_easycache_returns_the_main_models_sample(parts, sampler):
    draft = run_node("SearchDraft", model=easycache(parts), rescored=3)[0]
    steps = 6
    out = search("RandomSearchSampler", **drop_in(parts, steps=steps, sampler_name=sampler, candidates=6, top_k=2,
                                                  draft=draft))
    rep = out["report"]
    # The winner is the main model's stock sample from the winning noise (replayed with KSampler).
    stock = stock_ksampler(parts, seed=rep["replay"]["seed"], steps=steps, sampler_name=sampler)
    assert torch.allclose(out["best"]["samples"], stock, atol=1e-4)
    assert rep["top_scores"] == pytest.approx(scores_of(parts, out["top"]["samples"]).tolist(), abs=1e-4)
    # Counted apart: the draft's NFEs (6 candidates x 6 steps) and the main model's (3 finalists x 6).
    d = rep["draft"]
    assert (d["nfe"], d["regeneration_nfe"], d["rescored"]) == (36, 18, 3)
    assert d["measured"] == 36 and d["regeneration_measured"] == 18
    assert rep["nfe"]["search_total"] == rep["nfe"]["measured"] == 54
    finals = [c for c in rep["candidates"] if c.get("sample") == "main model"]
    assert len(finals) == 3 and d["spearman"] is not None and -1 <= d["spearman"] <= 1
    # The draft really searched: its scores of the finalists are not the main model's.
    assert any(abs(c["draft_score"] - c["score"]) > 1e-3 for c in finals)


def test_a_draft_is_refused_where_a_winner_is_not_one_noises_sample(parts):
    draft = run_node("SearchDraft", model=easycache(parts), rescored=2)[0]
    with pytest.raises(ValueError, match="draft: Particle Steering cannot search with a draft model: its winner is "
                                         "not the sample of one initial noise"):
        run_node("ParticleSteeringSampler", **drop_in(parts, sampler_name="euler_ancestral", draft=draft, **FK))
    with pytest.raises(ValueError, match=r"draft: rescored \(2\) must be at least top_k \(3\)"):
        run_node("RandomSearchSampler", **drop_in(parts, candidates=4, top_k=3, draft=draft))


def test_threshold_with_a_rank_ensemble_is_refused_naming_the_input(parts):
    ensemble = run_node("VerifierEnsemble", verifier_1=ProbeVerifier(1), verifier_2=ProbeVerifier(2))[0]
    with pytest.raises(ValueError, match="selection: threshold selection needs a verifier with absolute scores"):
        run_node("RandomSearchSampler", **drop_in(parts, judge=judge(parts, verifier=ensemble), candidates=3,
                                                  selection=selection("threshold", threshold=1.0)))


def test_a_held_out_judge_must_be_a_verifier(parts):
    with pytest.raises(ValueError, match="held_out: connect a VERIFIER"):
        run_node("SearchJudge", vae=parts["vae"], verifier=ProbeVerifier(), condition="", held_out="not one")


def test_latent_is_not_changed_by_a_search_with_a_judge(parts):
    before = LATENT["samples"].clone()
    search("RandomSearchSampler", **drop_in(parts, candidates=2))
    assert torch.equal(LATENT["samples"], before)


def noise_search_with_draft(model, positive, negative, vae, verifier, condition, latent, draft_model, steps=6,
                            sampler="euler", cfg=2.0):
    """NoiseSearch (custom sampling) with an EasyCache draft; returns its outputs and the stock parts."""
    guider = run_node("CFGGuider", model=model, positive=positive, negative=negative, cfg=cfg)[0]
    ksampler = run_node("KSamplerSelect", sampler_name=sampler)[0]
    sigmas = run_node("BasicScheduler", model=model, scheduler="normal", steps=steps, denoise=1.0)[0]
    judge_ = run_node("SearchJudge", vae=vae, verifier=verifier, condition=condition)[0]
    draft = run_node("SearchDraft", model=draft_model, rescored=3)[0]
    out = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=11, count=5)[0], guider=guider, sampler=ksampler,
                 sigmas=sigmas, latent_image=latent, search=run_node("SearchRandom", candidates=5)[0], judge=judge_,
                 draft=draft)
    return out, guider, ksampler, sigmas


def stock_custom(guider, sampler, sigmas, latent, seed):
    """The stock custom-sampling graph at ``seed``: RandomNoise + SamplerCustomAdvanced."""
    return run_node("SamplerCustomAdvanced", noise=run_node("RandomNoise", noise_seed=seed)[0], guider=guider,
                    sampler=sampler, sigmas=sigmas, latent_image=latent)[0]["samples"]


def check_draft_report(rep, steps):
    d = rep["draft"]
    assert (d["nfe"], d["regeneration_nfe"], d["rescored"]) == (5 * steps, 3 * steps, 3)
    assert (d["measured"], d["regeneration_measured"]) == (5 * steps, 3 * steps)
    assert rep["nfe"]["search_total"] == rep["nfe"]["measured"] == 8 * steps
    assert d["spearman"] is None or -1 <= d["spearman"] <= 1


def test_noise_search_with_an_easycache_draft_replays_with_the_stock_custom_graph(parts):
    out, guider, sampler, sigmas = noise_search_with_draft(parts["model"], parts["positive"], parts["negative"],
                                                           parts["vae"], ProbeVerifier(), "", LATENT, easycache(parts))
    rep = out["report"]
    assert torch.allclose(out["best"]["samples"], stock_custom(guider, sampler, sigmas, LATENT, rep["replay"]["seed"]),
                          atol=1e-4)
    check_draft_report(rep, 6)


def test_an_easycache_draft_on_the_digits_testbed(comfy):
    """The demo's model, VAE and verifier (as the demo loads them), the host's EasyCache as the draft."""
    import folder_paths

    from bench.testbed.comfy_model import class_conditioning, load_digits_model, pixel_vae
    from bench.testbed.demo import WEIGHTS

    folder_paths.add_model_folder_path("verifiers", str(WEIGHTS))
    model, vae = load_digits_model(WEIGHTS), pixel_vae()
    verifier = run_node("ClassifierVerifierLoader", classifier_file="verifier_classifier.safetensors")[0]
    cached = run_node("EasyCache", model=model, reuse_threshold=0.5, start_percent=0.0, end_percent=1.0,
                      verbose=False)[0]
    latent = {"samples": torch.zeros(1, 1, 16, 16)}
    out, guider, sampler, sigmas = noise_search_with_draft(model, class_conditioning(3), class_conditioning(None), vae,
                                                           verifier, "3", latent, cached, steps=8, cfg=1.0)
    rep = out["report"]
    assert torch.allclose(out["best"]["samples"], stock_custom(guider, sampler, sigmas, latent, rep["replay"]["seed"]),
                          atol=1e-4)
    check_draft_report(rep, 8)
    # The winner's score is the main model's sample's, re-scored.
    assert rep["best"]["score"] == pytest.approx(verifier.score(vae.decode(out["best"]["samples"]), "3").item(), abs=1e-4)


@pytest.mark.parametrize("node,options", [("RandomSearchSampler", dict(candidates=6)),
                                          ("EarlyRejectionSampler", dict(candidates=6, keep=0.5, levels="0.6"))])
def test_a_rank_ensembles_report_lets_shards_be_merged_as_one_search(parts, node, options):
    """Entries of a rank-ensemble search carry each candidate's member scores and the report the
    weights, so the distributed search re-ranks two candidate ranges (seed 5: ids 0-2, seed 8: ids
    0-2 there, 3-5 here) exactly as the one search of all six ranked them."""
    from sweep.distributed import Shard, merge_problem

    ensemble = run_node("VerifierEnsemble", verifier_1=ProbeVerifier(1), verifier_2=ProbeVerifier(2),
                        weight_1=1.0, weight_2=2.0)[0]
    judged = judge(parts, held_out=None, verifier=ensemble)

    def run(seed, count):
        return search(node, **drop_in(parts, seed=seed, steps=4, judge=judged, **{**options, "candidates": count}))

    whole = run(5, 6)["report"]
    assert whole["relative"] is True and whole["weights"] == [1.0, 2.0]
    assert all(len(e["members"]) == 2 for e in whole["candidates"])
    shards = [Shard(0, 0, 3, 5), Shard(1, 3, 3, 8)]
    merged = merge_problem("ranges", [(s, run(s.seed, s.count)["report"], "local") for s in shards], top_k=1)
    if node == "RandomSearchSampler":
        assert merged["best"]["id"] == whole["best"]["id"]
        assert merged["top"][0]["merged_score"] == pytest.approx(whole["best"]["score"])
    else:  # each range halves its own candidates: the merged winner is the best of the shards' finalists
        finals = {e["id"]: e["members"] for e in whole["candidates"] if e.get("sample") == "final"}
        assert merged["best"]["id"] in {e["id"] for e in merged["candidates"] if e.get("sample") == "final"}
        assert finals  # the one search's finalists carry members too


def test_held_out_judge_beside_an_early_x0_verifier_and_refusing_one(parts):
    """The searched verifier judges early x0-predictions (DINOv2-like): the held-out judge still scores
    the winner and the seed sample; the searched verifier's value of the seed sample alone is not
    defined and the report says so. An early-x0 verifier cannot be the held-out judge."""
    early = ProbeVerifier(seed=3, early_level=0.5)
    out = search("RandomSearchSampler", **drop_in(parts, judge=judge(parts, verifier=early), candidates=3))
    held = out["report"]["held_out"]
    assert held["winner"] == pytest.approx(scores_of(parts, out["best"]["samples"], verifier=HELD_OUT).item(), abs=1e-4)
    assert held["searched"]["seed_sample"] is None and "not defined" in held["searched"]["note"]
    with pytest.raises(ValueError, match="held_out: this verifier compares an early x0-prediction"):
        judge(parts, held_out=ProbeVerifier(early_level=0.5))


@pytest.mark.parametrize("name", ["random", "zero_order", "paths", "particles", "rejection", "tree"])
@pytest.mark.parametrize("ancestral", [False, True])
def test_tempered_selection_with_a_rank_ensemble_draws_among_the_final_candidates(name, ancestral):
    from search.selection import Selection
    from tests.helpers import backend
    from tests.test_selection import STRATEGIES, noise

    best = STRATEGIES[name](backend(ensemble=True, ancestral=ancestral, seed=2), noise(6, seed=1), top_k=2)
    inf = STRATEGIES[name](backend(ensemble=True, ancestral=ancestral, seed=2), noise(6, seed=1), top_k=2,
                           select=Selection("tempered"))
    assert inf.top_ids == best.top_ids and inf.top_scores == best.top_scores
    low = STRATEGIES[name](backend(ensemble=True, ancestral=ancestral, seed=2), noise(6, seed=1), top_k=2,
                           select=Selection("tempered", lmbda=0.0))
    final = {e["id"]: e for e in low.candidates}
    assert low.best_id in final and low.selection["drawn_among"] >= 2
    assert all("members" in final[i] for i in low.top_ids)  # a rank ensemble's entries carry member scores
