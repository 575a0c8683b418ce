"""The search nodes on ComfyUI's real sampler with a tiny SD1.5-shaped UNet (in-process)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.harness.host import run_node
from tests.toy_verifier import ProbeVerifier

LATENT = {"samples": torch.zeros(1, 4, 4, 4)}  # 32 px: keeps the CPU tests quick



def counted(model):
    """A clone of ``model`` whose diffusion-model calls are counted (rows and calls)."""
    counts = {"rows": 0, "calls": 0}

    def wrapper(apply_model, args):
        counts["rows"] += args["input"].shape[0]
        counts["calls"] += 1
        return apply_model(args["input"], args["timestep"], **args["c"])

    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    return m, counts


def ks_args(parts, **kw):
    args = dict(model=parts["model"], seed=5, steps=3, search_steps=0, cfg=2.0, sampler_name="euler",
                scheduler="normal", positive=parts["positive"], negative=parts["negative"],
                latent_image=LATENT, denoise=1.0, vae=parts["vae"], verifier=ProbeVerifier(),
                condition="", budget=0, top_k=1, batch_size=0)
    args.update(kw)
    return args


def outputs(out):
    names = ["best", "top", "scores", "best_score", "replay_noise", "seed", "batch_index", "report"]
    if len(out) == 6:
        names = ["best", "top", "scores", "best_score", "replay_noise", "report"]
    elif len(out) == 5:
        names = ["best", "top", "scores", "best_score", "report"]
    d = dict(zip(names, out))
    d["report"] = json.loads(d["report"])
    return d


def stock_ksampler(parts, model=None, batch=1, latent=None, **kw):
    args = dict(model=model or parts["model"], seed=5, steps=3, cfg=2.0, sampler_name="euler",
                scheduler="normal", positive=parts["positive"], negative=parts["negative"],
                latent_image=latent or {"samples": torch.zeros(batch, 4, 4, 4)}, denoise=1.0)
    args.update(kw)
    return run_node("KSampler", **args)[0]["samples"]


def test_random_search_winner_replays_with_stock_ksampler(parts):
    out = outputs(run_node("RandomSearch", **ks_args(parts, candidates=5, top_k=3)))
    i = out["batch_index"]
    stock = stock_ksampler(parts, batch=5)
    assert torch.allclose(out["best"]["samples"], stock[i : i + 1], atol=1e-4)
    # Every reported score belongs to the candidate with that id.
    assert len(out["report"]["candidates"]) == 5
    assert out["top"]["samples"].shape[0] == 3
    # Replay through LatentFromBatch (batch_index) with the stock KSampler as well.
    picked = run_node("LatentFromBatch", samples={"samples": torch.zeros(5, 4, 4, 4)}, batch_index=i, length=1)[0]
    again = stock_ksampler(parts, latent=picked)
    assert torch.allclose(out["best"]["samples"], again, atol=1e-4)


def custom_parts(parts, model):
    guider = run_node("CFGGuider", model=model, positive=parts["positive"], negative=parts["negative"], cfg=2.0)[0]
    sampler = run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = run_node("BasicScheduler", model=model, scheduler="simple", steps=3, denoise=1.0)[0]
    return guider, sampler, sigmas


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_advanced_winner_replays_with_sampler_custom_advanced(parts, flow):
    model = parts["model"]
    if flow:
        model = run_node("ModelSamplingSD3", model=model, shift=3.0)[0]
    guider, sampler, sigmas = custom_parts(parts, model)
    noise = run_node("NoiseCandidates", seed=11, count=4)[0]
    out = outputs(run_node("RandomSearchAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                           latent_image=LATENT, candidates=4, vae=parts["vae"], verifier=ProbeVerifier(),
                           condition="", budget=0, top_k=1, batch_size=0))
    replay = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider, sampler=sampler,
                      sigmas=sigmas, latent_image=LATENT)[0]["samples"]
    assert torch.allclose(out["best"]["samples"], replay, atol=1e-4)
    # NoiseCandidates composes with SamplerCustomAdvanced: all candidates in one stock call.
    batch = run_node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                     latent_image=LATENT)[0]["samples"]
    i = out["report"]["best"]["id"]
    assert batch.shape[0] == 4 and torch.allclose(batch[i : i + 1], replay, atol=1e-4)


def test_zero_order_winner_replays_and_counts(parts):
    model, counts = counted(parts["model"])
    out = outputs(run_node("ZeroOrderSearch", **ks_args(parts, model=model, neighbours=2, iterations=3, angle=25.0,
                                                        restart=True)))
    rep = out["report"]
    restarts = sum(c.get("kind") == "restart" for c in rep["candidates"])
    assert rep["nfe"]["search_total"] == 3 * (1 + 3 * 2 + restarts) == rep["nfe"]["measured"]
    assert counts["rows"] == 2 * rep["nfe"]["search_total"] == rep["nfe"]["forward_passes"]  # CFG: 2 rows
    guider, sampler, _ = custom_parts(parts, parts["model"])
    sigmas = run_node("BasicScheduler", model=parts["model"], scheduler="normal", steps=3, denoise=1.0)[0]
    replay = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider, sampler=sampler,
                      sigmas=sigmas, latent_image=LATENT)[0]["samples"]
    assert torch.allclose(out["best"]["samples"], replay, atol=1e-4)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_random_search_counts_match_closed_form(parts, sampler):
    model, counts = counted(parts["model"])
    out = outputs(run_node("RandomSearch", **ks_args(parts, model=model, sampler_name=sampler, steps=4,
                                                     search_steps=2, candidates=3, top_k=2, cfg=1.0)))
    per = {"euler": lambda s: s, "heun": lambda s: 2 * s - 1}[sampler]
    expected = 3 * per(2) + 2 * per(4)  # search at 2 steps, top 2 regenerated at 4
    rep = out["report"]["nfe"]
    assert rep["search_total"] == rep["measured"] == expected
    assert counts["rows"] == expected == rep["forward_passes"]  # cfg 1: no unconditional rows


def test_path_search_counts_match_closed_form(parts):
    model, counts = counted(parts["model"])
    out = outputs(run_node("PathSearch", **ks_args(parts, model=model, steps=6, cfg=1.0, paths=2, branches=2,
                                                   start=0.4, forward=0.2, backward=0.3, interval_steps=2)))
    rep = out["report"]
    # Head: the schedule's steps above sigma(start) plus the step onto it, for 2 paths;
    # rounds: 0.4 -> 0.3 -> 0.2 -> 0.1 -> 0.0, each 2 paths x 2 branches x (2 steps + 1 x0 call),
    # the last without the x0 call.
    import comfy.samplers

    sig = comfy.samplers.calculate_sigmas(parts["model"].get_model_object("model_sampling"), "normal", 6)
    level = parts["model"].get_model_object("model_sampling").percent_to_sigma(0.6)
    head = int((sig > level).sum())
    expected = 2 * head + 3 * (2 * 2 * 3) + 2 * 2 * 2
    assert rep["nfe"]["search_total"] == rep["nfe"]["measured"] == counts["rows"] == expected
    assert len(rep["rounds"]) == 4


def test_chunk_size_does_not_change_candidates(parts):
    one = outputs(run_node("RandomSearch", **ks_args(parts, candidates=4, top_k=4, batch_size=1)))
    all_ = outputs(run_node("RandomSearch", **ks_args(parts, candidates=4, top_k=4, batch_size=4)))
    s1 = [c["score"] for c in one["report"]["candidates"]]
    s4 = [c["score"] for c in all_["report"]["candidates"]]
    assert s1 == pytest.approx(s4, abs=1e-4)
    assert one["batch_index"] == all_["batch_index"]
    assert torch.allclose(one["top"]["samples"], all_["top"]["samples"], atol=1e-4)


def test_img2img_and_inpainting_match_stock(parts):
    g = torch.Generator().manual_seed(2)
    source = {"samples": torch.randn(1, 4, 4, 4, generator=g)}
    out = outputs(run_node("RandomSearch", **ks_args(parts, latent_image=source, denoise=0.5, candidates=3)))
    i = out["batch_index"]
    stock = stock_ksampler(parts, latent={"samples": source["samples"].repeat(3, 1, 1, 1)}, denoise=0.5)
    assert torch.allclose(out["best"]["samples"], stock[i : i + 1], atol=1e-4)

    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1.0
    masked = {"samples": source["samples"], "noise_mask": mask}
    out = outputs(run_node("RandomSearch", **ks_args(parts, latent_image=masked, candidates=3)))
    i = out["batch_index"]
    stock = stock_ksampler(parts, latent={"samples": source["samples"].repeat(3, 1, 1, 1), "noise_mask": mask})
    assert torch.allclose(out["best"]["samples"], stock[i : i + 1], atol=1e-4)
    # The unmasked half keeps the source latent.
    assert torch.allclose(out["best"]["samples"][..., 2:, :], source["samples"][..., 2:, :], atol=1e-4)


def test_early_prediction_reaches_verifiers_that_ask(parts):
    class Recorder(ProbeVerifier):
        def _score(self, images, condition, early):
            self.seen = early
            return super()._score(images, condition, early)

    v = Recorder(early_level=0.4)
    run_node("RandomSearch", **ks_args(parts, verifier=v, candidates=2, steps=4))
    assert v.seen is not None and v.seen.shape[0] == 2


def test_budget_truncates_and_report_travels_in_png_info(parts):
    from tests.harness.host import node_class

    pnginfo = {}
    cls = node_class("RandomSearch").PREPARE_CLASS_CLONE({"EXTRA_PNGINFO": pnginfo, "UNIQUE_ID": "7"})
    res = cls.EXECUTE_NORMALIZED(**ks_args(parts, candidates=6, budget=10))
    rep = json.loads(res.args[-1])
    assert rep["nfe"]["search_total"] == 9 and rep["nfe"]["stopped_by_budget"]
    assert pnginfo["noise_search_report"]["nfe"] == rep["nfe"]
    assert res.ui["noise_search"][0]["finished"]


@pytest.mark.parametrize("node,kwargs,needle", [
    ("RandomSearch", dict(budget=2, steps=3, search_steps=0, sampler_name="euler"), "budget"),
    ("RandomSearch", dict(budget=0, steps=0, search_steps=0, sampler_name="euler"), "steps"),
    ("PathSearch", dict(start=0.4, forward=0.3, backward=0.3, budget=0, steps=4, sampler_name="euler"), "backward"),
    ("PathSearch", dict(start=0.9, forward=0.2, backward=0.3, budget=0, steps=4, sampler_name="euler"), "start"),
    ("PathSearch", dict(start=1.5, forward=0.2, backward=0.3, budget=0, steps=4, sampler_name="euler"), "start"),
    ("ZeroOrderSearch", dict(budget=4, steps=3, search_steps=0, sampler_name="heun"), "budget"),  # heun: 5 NFEs
])
def test_invalid_settings_rejected_at_validation(comfy, node, kwargs, needle):
    from tests.harness.host import node_class

    msg = node_class(node).validate_inputs(**kwargs)
    assert msg is not True and needle in msg


def test_latent_batch_other_than_one_is_rejected(parts):
    with pytest.raises(ValueError, match="latent_image"):
        run_node("RandomSearch", **ks_args(parts, latent_image={"samples": torch.zeros(2, 4, 4, 4)}, candidates=2))


def test_interrupt_propagates_and_is_not_swallowed(parts):
    import comfy.model_management as mm

    calls = {"n": 0}

    class InterruptAfterFirst(ProbeVerifier):
        def _score(self, images, condition, early):
            calls["n"] += 1
            mm.interrupt_current_processing(True)
            return super()._score(images, condition, early)

    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node("RandomSearch", **ks_args(parts, verifier=InterruptAfterFirst(), candidates=4, batch_size=1))
    finally:
        mm.interrupt_current_processing(False)
    assert calls["n"] == 1  # stopped at the next denoiser call, before a second candidate


def test_video_candidates_score_the_mean_of_their_frames():
    from tests.harness.host import pack_module

    frame_scores = pack_module("nodes.sampling_adapter").frame_scores

    frames = torch.rand(2, 3, 8, 8, 3)
    v = ProbeVerifier()
    per_frame = v.score(frames.reshape(6, 8, 8, 3)).reshape(2, 3).mean(1)
    assert torch.allclose(frame_scores(v, frames, ""), per_frame)


def test_rank_ensemble_random_search_matches_mean_rank_of_one_batch(parts):
    from tests.harness.host import pack_module

    ensemble_mod = pack_module("verifiers.ensemble")
    members = [ProbeVerifier(seed=1), ProbeVerifier(seed=2)]
    ens = ensemble_mod.EnsembleVerifier(members)
    out = outputs(run_node("RandomSearch", **ks_args(parts, verifier=ens, candidates=4, top_k=4, batch_size=1)))
    # Reference: decode the four stock candidates and rank them in one call.
    stock = stock_ksampler(parts, batch=4)
    images = parts["vae"].decode(stock)
    expected = ens.score(images, "")
    got = torch.tensor([c["score"] for c in sorted(out["report"]["candidates"], key=lambda c: c["id"])])
    assert torch.allclose(got * 4, expected, atol=1e-4)
    assert out["batch_index"] == int(torch.argmax(expected))


@pytest.mark.parametrize("node", ["RandomSearch", "ZeroOrderSearch", "PathSearch", "ZeroOrderSearchAdvanced",
                                  "PathSearchAdvanced"])
def test_validation_accepts_linked_inputs(comfy, node):
    """ComfyUI leaves linked inputs out of the validate_inputs call: none may be required."""
    from tests.harness.host import node_class

    assert node_class(node).validate_inputs() is True
