"""The search nodes on ComfyUI's real sampler with a tiny SD1.5-shaped UNet (in-process).

Every reported result is checked against what a stock node produces: winners replay with
stock samplers, scores belong to the returned latents, NFEs planned equal NFEs measured for
every sampler the host lists, results do not depend on the chunk size."""

from __future__ import annotations

import json

import pytest
import torch

from tests.harness.host import node_class, pack_module, run_node
from tests.helpers import (
    LATENT,
    forward_rows,
    ks_args,
    out_of_memory_above,
    scores_of,
    search,
    stock_ksampler,
)
from tests.toy_verifier import InterruptingVerifier, ProbeVerifier

STOCHASTIC = ["euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde"]


def same_top(a: list[dict], b: list[dict]) -> bool:
    return [t["id"] for t in a] == [t["id"] for t in b] and \
        [t["score"] for t in a] == pytest.approx([t["score"] for t in b], abs=1e-4)


def judge(parts, verifier=None, condition=""):
    """A JUDGE of the tiny VAE and a verifier (default: the probe verifier)."""
    return run_node("SearchJudge", vae=parts["vae"], verifier=verifier or ProbeVerifier(), condition=condition)[0]


def custom_parts(parts, model, sampler_name="euler", steps=3):
    guider = run_node("CFGGuider", model=model, positive=parts["positive"], negative=parts["negative"], cfg=2.0)[0]
    sampler = run_node("KSamplerSelect", sampler_name=sampler_name)[0]
    sigmas = run_node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0)[0]
    return guider, sampler, sigmas


# -- replay and chunk invariance ---------------------------------------------------------
@pytest.mark.parametrize("sampler", ["euler", *STOCHASTIC])
def test_random_search_is_chunk_invariant_and_replays_with_stock_ksampler(parts, sampler):
    """Candidate i is the stock KSampler's sample at seed + i on a batch of one, for ancestral
    and SDE samplers too, whatever the chunk size."""
    runs = {bs: search("RandomSearch", **ks_args(parts, sampler_name=sampler, candidates=4, top_k=4, batch_size=bs))
            for bs in (1, 3, 4)}
    ref = runs[4]
    for bs, out in runs.items():
        assert same_top(out["report"]["top"], ref["report"]["top"]), f"batch_size {bs}"
        assert torch.allclose(out["top"]["samples"], ref["top"]["samples"], atol=1e-4), f"batch_size {bs}"
    for rank, entry in enumerate(ref["report"]["top"]):
        stock = stock_ksampler(parts, seed=5 + entry["id"], sampler_name=sampler)
        assert torch.allclose(ref["top"]["samples"][rank : rank + 1], stock, atol=1e-4)
    assert ref["replay_seed"] == 5 + ref["report"]["best"]["id"] == ref["report"]["replay"]["seed"]
    assert ref["replay_index"] == 0


def test_every_host_sampler_replays_at_seed_plus_id_whatever_the_chunk(parts, comfy):
    import comfy.samplers

    for name in comfy.samplers.KSampler.SAMPLERS:
        one = search("RandomSearch", **ks_args(parts, sampler_name=name, candidates=2, top_k=2, batch_size=1))
        two = search("RandomSearch", **ks_args(parts, sampler_name=name, candidates=2, top_k=2, batch_size=2))
        assert same_top(one["report"]["top"], two["report"]["top"]), name
        stock = stock_ksampler(parts, seed=two["replay_seed"], sampler_name=name)
        assert torch.allclose(two["best"]["samples"], stock, atol=1e-4), name


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_noise_search_winner_replays_with_sampler_custom_advanced(parts, flow, sampler):
    model = parts["model"]
    if flow:
        model = run_node("ModelSamplingSD3", model=model, shift=3.0)[0]
    guider, ksel, sigmas = custom_parts(parts, model, sampler)
    noise = run_node("NoiseCandidates", seed=11, count=4)[0]
    strategy = run_node("SearchRandom", candidates=4, budget=0, top_k=1, batch_size=2)[0]
    out = search("NoiseSearch", noise=noise, guider=guider, sampler=ksel, sigmas=sigmas, latent_image=LATENT,
                 search=strategy, judge=judge(parts))
    replay = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider, sampler=ksel,
                      sigmas=sigmas, latent_image=LATENT)[0]["samples"]
    assert torch.allclose(out["best"]["samples"], replay, atol=1e-4)
    # NoiseCandidates' candidate i is RandomNoise(seed + i): the stock custom-sampling replay.
    seeded = run_node("RandomNoise", noise_seed=out["replay_seed"])[0]
    again = run_node("SamplerCustomAdvanced", noise=seeded, guider=guider, sampler=ksel, sigmas=sigmas,
                     latent_image=LATENT)[0]["samples"]
    assert out["replay_seed"] == 11 + out["report"]["best"]["id"]
    assert torch.allclose(out["best"]["samples"], again, atol=1e-4)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_sde"])
def test_zero_order_winner_replays_and_counts(parts, sampler):
    with forward_rows(parts["model"]) as counts:
        out = search("ZeroOrderSearch", **ks_args(parts, sampler_name=sampler, neighbours=2, iterations=3,
                                                  angle=25.0, restart=True))
    rep = out["report"]
    per = {"euler": 3, "dpmpp_sde": 5}[sampler]
    restarts = sum(c.get("kind") == "restart" for c in rep["candidates"])
    assert rep["nfe"]["search_total"] == per * (1 + 3 * 2 + restarts) == rep["nfe"]["measured"]
    assert counts["rows"] == 2 * rep["nfe"]["search_total"] == rep["nfe"]["forward_passes"]  # CFG: 2 rows
    guider, ksel, _ = custom_parts(parts, parts["model"], sampler)
    sigmas = run_node("BasicScheduler", model=parts["model"], scheduler="normal", steps=3, denoise=1.0)[0]
    replay = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider, sampler=ksel,
                      sigmas=sigmas, latent_image=LATENT)[0]["samples"]
    assert torch.allclose(out["best"]["samples"], replay, atol=1e-4)
    assert out["report"]["best"]["score"] == pytest.approx(float(scores_of(parts, out["best"]["samples"])[0]),
                                                           abs=1e-4)


# -- costs -------------------------------------------------------------------------------
def test_planned_nfe_equals_measured_for_every_host_sampler(parts, comfy):
    """The ledger's costs are measured on the sampler itself: planned == spent == counted for
    every sampler the host lists, with a cheaper search schedule and a budget."""
    import comfy.samplers

    for name in comfy.samplers.KSampler.SAMPLERS:
        args = ks_args(parts, sampler_name=name, steps=4, search_steps=2, candidates=3, top_k=2, cfg=1.0)
        if name == "dpm_adaptive":
            with pytest.raises(ValueError, match="budget.*dpm_adaptive.*cannot be planned"):
                run_node("RandomSearch", **{**args, "budget": 100})
            continue
        with forward_rows(parts["model"]) as counts:
            rep = search("RandomSearch", **args)["report"]["nfe"]
        assert rep["planned"] == rep["search_total"] == rep["measured"], name
        # cfg 1 evaluates one row per NFE (CFG++ samplers keep the unconditional row: two).
        assert counts["rows"] == rep["forward_passes"] in (rep["measured"], 2 * rep["measured"]), name
        # A budget one NFE short of the whole search stops a candidate early, never overspends.
        short = search("RandomSearch", **{**args, "budget": rep["planned"] - 1})["report"]["nfe"]
        assert short["stopped_by_budget"] and short["measured"] <= rep["planned"] - 1, name


def test_path_search_counts_match_closed_form(parts):
    with forward_rows(parts["model"]) as counts:
        out = search("PathSearch", **ks_args(parts, steps=6, cfg=1.0, paths=2, branches=2, start=0.4,
                                             forward=0.2, backward=0.3, interval_steps=2))
    rep = out["report"]
    backend_levels = pack_module("nodes.sampling_adapter")
    sig = backend_levels.ksampler_sigmas(parts["model"], "euler", "normal", 6, 1.0)
    level = 0.4 / 0.6  # EPS: sigma = t / (1 - t)
    head = int((sig > level).sum())
    # rounds: 0.4 -> 0.3 -> 0.2 -> 0.1 -> 0.0, each 2 paths x 2 branches x (2 steps + 1 x0 call),
    # the last without the x0 call.
    expected = 2 * head + 3 * (2 * 2 * 3) + 2 * 2 * 2
    assert rep["nfe"]["search_total"] == rep["nfe"]["measured"] == counts["rows"] == expected
    assert rep["nfe"]["planned"] == expected
    assert len(rep["rounds"]) == 4


# -- reported results belong to the returned latents --------------------------------------
def test_regenerated_winners_carry_their_own_scores(parts):
    """search_steps < steps: the returned latents are regenerated and scored again."""
    out = search("RandomSearch", **ks_args(parts, steps=4, search_steps=1, candidates=5, top_k=3))
    own = scores_of(parts, out["top"]["samples"])
    assert json.loads(out["scores"]) == pytest.approx(own.tolist(), abs=1e-4)
    assert out["best_score"] == pytest.approx(float(own[0]), abs=1e-4)
    assert [t["score"] for t in out["report"]["top"]] == sorted((t["score"] for t in out["report"]["top"]),
                                                                reverse=True)
    assert all("search_score" in t for t in out["report"]["top"])
    for rank, entry in enumerate(out["report"]["top"]):
        stock = stock_ksampler(parts, seed=5 + entry["id"], steps=4)
        assert torch.allclose(out["top"]["samples"][rank : rank + 1], stock, atol=1e-4)


def test_path_search_reports_the_returned_winner(parts):
    out = search("PathSearch", **ks_args(parts, steps=6, paths=2, branches=3, start=0.4, forward=0.2,
                                         backward=0.3, interval_steps=1, top_k=2))
    rep = out["report"]
    last = max(c["round"] for c in rep["candidates"])
    final = {c["id"]: c for c in rep["candidates"] if c["round"] == last}
    assert rep["best"]["id"] in final and final[rep["best"]["id"]]["level"] == 0
    own = scores_of(parts, out["top"]["samples"])
    assert [t["score"] for t in rep["top"]] == pytest.approx(own.tolist(), abs=1e-4)
    assert rep["best"]["score"] == pytest.approx(final[rep["best"]["id"]]["score"], abs=1e-4)


def test_zero_order_with_rank_ensemble_moves_its_pivot(parts):
    ensemble = pack_module("verifiers.ensemble").EnsembleVerifier([ProbeVerifier(1), ProbeVerifier(2),
                                                                   ProbeVerifier(3)])
    out = search("ZeroOrderSearch", **ks_args(parts, verifier=ensemble, neighbours=2, iterations=6, angle=40.0,
                                              restart=False))
    rounds = out["report"]["rounds"]
    assert any(r["moved"] for r in rounds[1:]), "the pivot never moved"
    assert out["report"]["best"]["id"] != 0
    plain = stock_ksampler(parts)  # the seed's plain sample: candidate 0
    assert not torch.allclose(out["best"]["samples"], plain, atol=1e-3)


def test_rank_ensemble_random_search_ranks_all_candidates_together(parts):
    ens = pack_module("verifiers.ensemble").EnsembleVerifier([ProbeVerifier(seed=1), ProbeVerifier(seed=2)])
    out = search("RandomSearch", **ks_args(parts, verifier=ens, candidates=4, top_k=4, batch_size=1))
    stock = torch.cat([stock_ksampler(parts, seed=5 + i) for i in range(4)])
    expected = ens.score(parts["vae"].decode(stock), "")
    got = torch.tensor([c["score"] for c in sorted(out["report"]["candidates"], key=lambda c: c["id"])])
    assert torch.allclose(got, expected, atol=1e-4)
    assert out["report"]["best"]["id"] == int(torch.argmax(expected))


# -- latents and levels --------------------------------------------------------------------
class ChannelMeanVAE:
    """Decodes any latent to a small RGB image (tests need no 16-channel VAE)."""

    def decode(self, latents):
        return torch.sigmoid(latents[:, :3]).movedim(1, -1)


@pytest.fixture(scope="module")
def model16(comfy, tiny_unet_path):
    """The tiny UNet with 16 latent channels and SD3's latent format (what SD3/FLUX report)."""
    import comfy.latent_formats
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(tiny_unet_path))
    unet = model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    conv_in, conv_out = unet.input_blocks[0][0], unet.out[2]
    unet.input_blocks[0][0] = torch.nn.Conv2d(16, conv_in.out_channels, 3, padding=1)
    unet.out[2] = torch.nn.Conv2d(conv_out.in_channels, 16, 3, padding=1)
    for conv in (unet.input_blocks[0][0], unet.out[2]):
        torch.nn.init.normal_(conv.weight, std=0.02, generator=g)
        torch.nn.init.zeros_(conv.bias)
    model.add_object_patch("latent_format", comfy.latent_formats.SD3())
    return model


def test_empty_four_channel_latent_into_sixteen_channel_model_matches_stock(parts, model16):
    out = search("RandomSearch", **ks_args(parts, model=model16, vae=ChannelMeanVAE(), candidates=3))
    assert out["best"]["samples"].shape == (1, 16, 4, 4)
    stock = stock_ksampler(parts, model=model16, seed=out["replay_seed"])
    assert torch.allclose(out["best"]["samples"], stock, atol=1e-4)


DOWNSCALED = {"samples": torch.zeros(1, 4, 4, 4), "downscale_ratio_spacial": 8}
ZO_OPTIONS = dict(neighbours=1, iterations=1, angle=20.0, restart=False)
PATH_OPTIONS = dict(paths=1, branches=2, start=0.4, forward=0.2, backward=0.3, interval_steps=1)


@pytest.mark.parametrize("node,options", [
    ("RandomSearch", dict(candidates=2)), ("ZeroOrderSearch", ZO_OPTIONS), ("PathSearch", PATH_OPTIONS),
    ("RandomSearchAdvanced", dict(candidates=2)), ("ZeroOrderSearchAdvanced", ZO_OPTIONS),
    ("PathSearchAdvanced", PATH_OPTIONS), ("NoiseSearch", dict(candidates=2)),
    ("RandomSearchSampler", dict(candidates=2)), ("PathSearchSampler", PATH_OPTIONS),
])
def test_latent_with_downscale_ratio_keys_matches_stock_and_drops_them(parts, node, options):
    """A latent as newer hosts' EmptyLatentImage makes it (downscale ratio attached) runs at the
    stock sampler's resolution in every search node; the keys are dropped from the outputs, as
    the stock samplers drop them; winners equal the stock sampler's output."""
    ksampler_style = node in ("RandomSearch", "ZeroOrderSearch", "PathSearch", "RandomSearchSampler",
                              "PathSearchSampler")
    if ksampler_style:  # the parts the stock KSampler builds
        guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"],
                          negative=parts["negative"], cfg=2.0)[0]
        ksel = run_node("KSamplerSelect", sampler_name="euler")[0]
        sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 3, 1.0)
        args = ks_args(parts, latent_image=DOWNSCALED, **options)
        if node.endswith("Sampler"):  # judging as one JUDGE
            args = {k: v for k, v in args.items() if k not in ("vae", "verifier", "condition")}
            args["judge"] = judge(parts)
    elif node == "NoiseSearch":
        guider, ksel, sigmas = custom_parts(parts, parts["model"])
        args = dict(noise=run_node("NoiseCandidates", seed=5, count=2)[0], guider=guider, sampler=ksel,
                    sigmas=sigmas, latent_image=DOWNSCALED, search=run_node("SearchRandom", **options)[0],
                    judge=judge(parts))
    else:
        guider, ksel, sigmas = custom_parts(parts, parts["model"])
        args = dict(noise=run_node("NoiseCandidates", seed=5, count=2)[0], guider=guider, sampler=ksel,
                    sigmas=sigmas, latent_image=DOWNSCALED, vae=parts["vae"], verifier=ProbeVerifier(),
                    condition="", budget=0, top_k=1, batch_size=0, **options)
    out = search(node, **args)
    assert "downscale_ratio_spacial" not in out["best"] and "downscale_ratio_spacial" not in out["top"]
    # The stock custom sampler on the same latent: with the winner's replay noise where there is
    # one, else (path search) with the seed's noise, for the resolution.
    replayable = "seed" in out["report"]["replay"]
    noise = out["replay_noise"] if replayable else run_node("RandomNoise", noise_seed=5)[0]
    stock = run_node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=ksel, sigmas=sigmas,
                     latent_image=DOWNSCALED)[0]["samples"]
    assert out["best"]["samples"].shape == stock.shape
    if replayable:
        assert torch.allclose(out["best"]["samples"], stock, atol=1e-4)


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_noise_levels_mean_the_same_signal_to_noise_ratio(parts, flow):
    model = run_node("ModelSamplingSD3", model=parts["model"], shift=3.0)[0] if flow else parts["model"]
    adapter = pack_module("nodes.sampling_adapter")
    backend = make_backend(adapter, model, parts)
    ms = model.get_model_object("model_sampling")
    for t in (0.2, 0.4, 0.6):
        sigma = backend.level_sigma(t)
        alpha = float(ms.noise_scaling(torch.tensor([sigma]), torch.zeros(1), torch.ones(1)))
        scale = float(ms.noise_scaling(torch.tensor([sigma]), torch.ones(1), torch.zeros(1)))
        assert scale / alpha == pytest.approx(t / (1 - t), rel=1e-4)
        assert backend.sigma_level(sigma) == pytest.approx(t, rel=1e-4)  # and back
    assert backend.level_sigma(0.4) == pytest.approx(0.4 if flow else 0.4 / 0.6, rel=1e-4)
    assert backend.sigma_level(0.0) == 0.0


def make_backend(adapter, model, parts, verifier=None, steps=3):
    guider, sampler, sigmas = custom_parts(parts, model, steps=steps)
    scorer = adapter.Scorer(parts["vae"], verifier or ProbeVerifier())
    return adapter.ComfyBackend(guider, sampler, sigmas, LATENT, scorer, seed=1)


def test_early_x0_is_captured_at_exactly_the_level(parts):
    """With 2 steps the schedule never passes near level 0.4: the early x0 is still the model's
    prediction at sigma(0.4), reproduced here with stock nodes only."""
    class Recorder(ProbeVerifier):
        def _score(self, images, condition, early):
            self.seen = early
            return super()._score(images, condition, early)

    v = Recorder(early_level=0.4)
    with forward_rows(parts["model"]) as counts:
        out = search("RandomSearch", **ks_args(parts, verifier=v, candidates=1, steps=2, cfg=1.0))
    assert out["report"]["nfe"]["measured"] == 2 + 1 == out["report"]["nfe"]["planned"] == counts["rows"]
    level = 0.4 / 0.6
    sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 2, 1.0)
    assert float(sigmas[1]) < level < float(sigmas[0])
    guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"], negative=parts["negative"],
                      cfg=1.0)[0]
    euler = run_node("KSamplerSelect", sampler_name="euler")[0]
    first = run_node("SamplerCustomAdvanced", noise=run_node("RandomNoise", noise_seed=5)[0], guider=guider,
                     sampler=euler, sigmas=torch.tensor([float(sigmas[0]), level]), latent_image=LATENT)[0]
    x0 = run_node("SamplerCustomAdvanced", noise=run_node("DisableNoise")[0], guider=guider, sampler=euler,
                  sigmas=torch.tensor([level, 0.0]), latent_image=first)[0]["samples"]
    assert torch.allclose(v.seen, parts["vae"].decode(x0).clamp(0, 1), atol=1e-3)


# -- chunking and budgets --------------------------------------------------------------------
def test_out_of_memory_halving_sticks(parts):
    model = out_of_memory_above(parts["model"], 4)  # CFG: two rows per candidate
    out = search("RandomSearch", **ks_args(parts, model=model, candidates=8, top_k=8, batch_size=8))
    ref = search("RandomSearch", **ks_args(parts, candidates=8, top_k=8, batch_size=2))
    assert out["report"]["settings"]["batch_size"] == 2
    assert same_top(out["report"]["top"], ref["report"]["top"])


def test_budget_truncates_and_report_travels_in_png_info(parts):
    pnginfo = {}
    cls = node_class("RandomSearch").PREPARE_CLASS_CLONE({"EXTRA_PNGINFO": pnginfo, "UNIQUE_ID": "7"})
    res = cls.EXECUTE_NORMALIZED(**ks_args(parts, candidates=6, budget=10))
    rep = json.loads(res.args[-1])
    assert rep["nfe"]["search_total"] == 9 and rep["nfe"]["stopped_by_budget"]
    assert pnginfo["noise_search_report"]["nfe"] == rep["nfe"]
    state = res.ui["noise_search"][0]
    assert state["finished"] and state["best_id"] == rep["best"]["id"]


def test_report_rounds_are_recorded(parts):
    out = search("ZeroOrderSearch", **ks_args(parts, neighbours=2, iterations=2, angle=20.0, restart=False))
    assert [r["round"] for r in out["report"]["rounds"]] == [0, 1, 2]


# -- the composable layer --------------------------------------------------------------------
@pytest.mark.parametrize("node,options", [
    ("SearchRandom", dict(candidates=3)),
    ("SearchZeroOrder", dict(neighbours=2, iterations=2, angle=30.0, restart=True)),
    ("SearchPaths", dict(paths=2, branches=2, start=0.4, forward=0.2, backward=0.3, interval_steps=1)),
])
def test_noise_search_matches_its_ksampler_style_node(parts, node, options):
    """The executor with a SEARCH gives what the drop-in node gives with the same parts."""
    drop_in = {"SearchRandom": "RandomSearch", "SearchZeroOrder": "ZeroOrderSearch",
               "SearchPaths": "PathSearch"}[node]
    a = search(drop_in, **ks_args(parts, steps=4, **options))
    guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"], negative=parts["negative"],
                      cfg=2.0)[0]
    sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 4, 1.0)
    b = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=5, count=8)[0], guider=guider,
               sampler=run_node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas, latent_image=LATENT,
               search=run_node(node, **options)[0], judge=judge(parts))
    assert a["report"]["best"] == b["report"]["best"]
    assert torch.allclose(a["best"]["samples"], b["best"]["samples"], atol=1e-5)


def test_path_search_refuses_search_steps(parts):
    msg = node_class("PathSearch").validate_inputs(search_steps=3)
    assert msg is not True and "search_steps" in msg
    with pytest.raises(ValueError, match="search_steps"):
        run_node("PathSearch", **ks_args(parts, search_steps=2, paths=1, branches=1, start=0.4, forward=0.2,
                                         backward=0.3, interval_steps=1))


PATH_ARGS = dict(paths=2, branches=2, start=0.4, forward=0.2, backward=0.3, interval_steps=1)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(forward=0.3, backward=0.3), "backward (0.3) must be greater than forward (0.3)"),
    (dict(start=0.9, forward=0.2), "start + forward"),
    (dict(paths=100, branches=100), "paths x branches"),
])
def test_path_rules_relating_inputs_are_refused_before_any_denoising(parts, kwargs, needle):
    for node, args in (("PathSearch", ks_args(parts, **{**PATH_ARGS, **kwargs})),
                       ("SearchPaths", {**PATH_ARGS, **kwargs})):
        with forward_rows(parts["model"]) as counts, pytest.raises(ValueError, match=needle.replace("(", r"\(")
                                                                   .replace(")", r"\)").replace("+", r"\+")):
            run_node(node, **args)
        assert counts["rows"] == 0


def test_budget_below_one_candidate_is_refused_naming_budget(parts):
    with pytest.raises(ValueError, match="budget"):
        run_node("RandomSearch", **ks_args(parts, candidates=2, budget=2))


def test_latent_batch_above_the_limit_is_rejected_saying_what_is_supported(parts):
    limit = pack_module("nodes.search_runner").MAX_PROBLEMS
    with pytest.raises(ValueError, match=rf"^latent_image: got a batch of {limit + 1} latents; supported: a latent "
                                         rf"batch of 1 to {limit}"):
        run_node("RandomSearch", **ks_args(parts, latent_image={"samples": torch.zeros(limit + 1, 4, 1, 1)},
                                           candidates=2))


def test_disabled_noise_is_refused_naming_noise(parts):
    guider, ksel, sigmas = custom_parts(parts, parts["model"])
    for strategy in (run_node("SearchRandom", candidates=2)[0],
                     run_node("SearchZeroOrder", neighbours=2, iterations=1, angle=30.0, restart=False)[0]):
        with pytest.raises(ValueError, match="noise"):
            run_node("NoiseSearch", noise=run_node("DisableNoise")[0], guider=guider, sampler=ksel, sigmas=sigmas,
                     latent_image=LATENT, search=strategy, judge=judge(parts))


def test_interrupt_propagates_and_is_not_swallowed(parts):
    import comfy.model_management as mm

    verifier = InterruptingVerifier()

    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node("RandomSearch", **ks_args(parts, verifier=verifier, candidates=4, batch_size=1))
    finally:
        mm.interrupt_current_processing(False)
    assert verifier.calls == 1  # stopped at the next denoiser call, before a second candidate


def test_video_candidates_score_the_mean_of_their_frames():
    scorer = pack_module("nodes.sampling_adapter").Scorer(None, ProbeVerifier())
    frames = torch.rand(2, 3, 8, 8, 3)
    per_frame = ProbeVerifier().score(frames.reshape(6, 8, 8, 3)).reshape(2, 3).mean(1)
    assert torch.allclose(scorer.verify(frames, None)[:, 0], per_frame)


def test_only_full_schedule_searches_have_a_validation_rule_and_it_names_one_input(comfy):
    """ComfyUI reports a validate_inputs failure under every input the function names and skips
    its own range checks for them: the nodes leave ranges to the schema."""
    import inspect

    for node in ("RandomSearch", "ZeroOrderSearch", "NoiseSearch", "SearchRandom", "SearchZeroOrder",
                 "SearchPaths", "SearchParticles", "SearchEarlyRejection", "SearchTree", "RandomSearchAdvanced",
                 "ZeroOrderSearchAdvanced", "PathSearchAdvanced", "SearchJudge", "RandomSearchSampler",
                 "ZeroOrderSearchSampler", "PathSearchSampler", "ParticleSteeringSampler", "EarlyRejectionSampler",
                 "DiffusionTreeSampler"):
        assert "validate_inputs" not in vars(node_class(node)), node
    for node in ("PathSearch", "ParticleSteering", "EarlyRejectionSearch", "DiffusionTreeSearch"):
        validate = node_class(node).validate_inputs
        assert list(inspect.signature(validate).parameters) == ["search_steps"], node
        assert validate() is True  # a linked value is absent at validation
