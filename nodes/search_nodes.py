"""Search nodes. KSampler-style variants take (model, seed, steps, cfg, sampler, scheduler,
positive, negative); the Advanced variants take (noise, guider, sampler, sigmas) like
SamplerCustomAdvanced, so FLUX's BasicGuider works as well as CFG models."""

from __future__ import annotations

import json
import math

import comfy.samplers
import torch
from comfy_api.latest import io

from ..search import BudgetError
from .sampling_adapter import ComfyBackend, ksampler_sigmas, nfe_per_run
from .search_runner import (
    CandidateNoise,
    ReplayNoise,
    candidate_noise,
    latent_outputs,
    report_json,
    run_search,
)
from .types import VerifierType

CATEGORY = "sampling/noise_search"
MAX_SEED = 0xFFFFFFFFFFFFFFFF


# -- shared schema pieces ---------------------------------------------------------------
def ksampler_inputs():
    return [
        io.Model.Input("model", tooltip="The diffusion model whose noises are searched."),
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                     tooltip="Seeds the candidate noises (candidate i = batch element i of a stock "
                             "KSampler batch with this seed) and every later random draw."),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps of the final sample."),
        io.Int.Input("search_steps", default=0, min=0, max=10000,
                     tooltip="Steps while searching (the paper's NFEs/iter); 0 = same as steps. "
                             "Winners are regenerated with the full steps."),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale."),
        io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES,
                       tooltip="ODE solver; deterministic samplers make winners replayable."),
        io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES,
                       tooltip="Noise schedule."),
        io.Conditioning.Input("positive", tooltip="What to generate."),
        io.Conditioning.Input("negative", tooltip="What to avoid."),
        io.Latent.Input("latent_image", tooltip="Latent of batch size 1 (empty, or an image for img2img; "
                                                "a noise mask makes it inpainting)."),
        io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Below 1: img2img, searching only the last part of the schedule."),
    ]


def advanced_inputs(with_noise: bool = True):
    noise = [io.Noise.Input("noise", tooltip="Source of the candidate noises (RandomNoise or "
                                            "NoiseCandidates); candidate i is its i-th noise.")]
    return (noise if with_noise else []) + [
        io.Guider.Input("guider", tooltip="Model and conditioning (CFGGuider, BasicGuider for FLUX, ...)."),
        io.Sampler.Input("sampler", tooltip="ODE solver."),
        io.Sigmas.Input("sigmas", tooltip="Schedule of the final sample."),
        io.Latent.Input("latent_image", tooltip="Latent of batch size 1."),
    ]


def verifier_inputs():
    return [
        io.Vae.Input("vae", tooltip="Decodes candidates for the verifier."),
        VerifierType.Input("verifier", tooltip="Scores decoded candidates; higher is better."),
        io.String.Input("condition", default="", multiline=True,
                        tooltip="What the verifier judges against: the prompt text for CLIPScore / "
                                "ImageReward, a class name or index for classifier verifiers."),
        io.Int.Input("budget", default=0, min=0, max=10**9,
                     tooltip="Total NFEs (search + final denoising, per candidate summed); a round "
                             "that would exceed it is not started. 0 = no limit."),
        io.Int.Input("top_k", default=1, min=1, max=4096, tooltip="How many best candidates to return."),
        io.Int.Input("batch_size", default=0, min=0, max=4096,
                     tooltip="Candidates per model call; 0 = as many as free memory allows."),
    ]


def search_outputs(replayable: bool, seed_replay: bool = False):
    out = [
        io.Latent.Output("best", display_name="best", tooltip="The winning latent, fully denoised."),
        io.Latent.Output("top", display_name="top_k", tooltip="The best top_k latents, best first."),
        io.String.Output("scores", display_name="scores", tooltip="JSON list of the top_k scores."),
        io.Float.Output("best_score", display_name="best_score", tooltip="The winner's verifier score."),
    ]
    if replayable:
        out.append(io.Noise.Output("replay_noise", display_name="replay_noise",
                                   tooltip="A NOISE that regenerates the winner with SamplerCustomAdvanced."))
    if seed_replay:
        out += [io.Int.Output("replay_seed", display_name="seed",
                              tooltip="Seed that regenerates the winner with a stock KSampler ..."),
                io.Int.Output("replay_index", display_name="batch_index",
                              tooltip="... at this index of a batch of the candidate count."),]
    out.append(io.String.Output("report", display_name="report",
                                tooltip="JSON search report: every candidate's score, NFEs, rounds, timings, "
                                        "settings. Also embedded in images saved downstream."))
    return out


HIDDEN = [io.Hidden.unique_id, io.Hidden.extra_pnginfo]


# Most candidates (rows of one batch) a single round may hold: paths x branches of path
# search, and RandomSearch's candidates, are bounded by it before anything is allocated.
MAX_ROWS = 4096


def _check(name, value, lo, hi):
    if value is None:
        return None
    # `not (lo <= v <= hi)` is also true for NaN, which JSON (and so the API) can carry.
    if not (lo <= value <= hi):
        return f"{name} must be between {lo} and {hi}, got {value}"
    return None


def validate_ksampler_budget(budget, steps, search_steps, sampler_name, cfg=None, denoise=None,
                             scheduler=None) -> bool | str:
    # ComfyUI skips its own min/max checks for every input named in validate_inputs, so
    # each range is checked again here. An input linked from another node is absent (None)
    # at validation; execute re-checks it (check_values) once its value exists.
    for msg in (_check("budget", budget, 0, 10**9), _check("steps", steps, 1, 10000),
                _check("search_steps", search_steps, 0, 10000), _check("cfg", cfg, 0.0, 100.0),
                _check("denoise", denoise, 0.01, 1.0)):
        if msg:
            return msg
    if sampler_name is not None and sampler_name not in comfy.samplers.SAMPLER_NAMES:
        return f"sampler_name '{sampler_name}' is not one of {comfy.samplers.SAMPLER_NAMES}"
    # ComfyUI v0.3.75 does not check V3 combo values itself.
    if scheduler is not None and scheduler not in comfy.samplers.SCHEDULER_NAMES:
        return f"scheduler '{scheduler}' is not one of {comfy.samplers.SCHEDULER_NAMES}"
    if budget and steps is not None:
        per = nfe_per_run(sampler_name, search_steps or steps)
        one = per + (nfe_per_run(sampler_name, steps) if search_steps and search_steps != steps else 0)
        if budget < one:
            return (f"budget {budget} NFEs is below one candidate ({one} NFEs with these steps); "
                    f"set budget to at least {one}, or 0 for no limit")
    return True


def check_values(cls, values: dict) -> None:
    """Check every number and choice again when the node runs.

    ComfyUI range-checks widget values at validation, but a value linked from another node
    (a primitive, a math node) arrives unchecked, and validation sees it only as None: a
    linked candidates=10**9 would otherwise be allocated. Raises ValueError naming the input
    and its valid range."""
    for inp in cls.define_schema().inputs:
        value = values.get(inp.id)
        if value is None:
            continue
        if isinstance(inp, (io.Int.Input, io.Float.Input)):
            lo = inp.min if inp.min is not None else -math.inf
            hi = inp.max if inp.max is not None else math.inf
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{inp.id} must be a number between {lo} and {hi}, got {type(value).__name__}")
            msg = _check(inp.id, value, lo, hi)
            if msg:
                raise ValueError(msg)
        elif isinstance(inp, io.Combo.Input) and inp.options and value not in inp.options:
            shown = ", ".join(map(str, inp.options[:40])) + (", ..." if len(inp.options) > 40 else "")
            raise ValueError(f"{inp.id} '{value}' is not one of: {shown}")


def check_rows(count: int, latent: dict, what: str) -> None:
    """Refuse a candidate count whose noises alone would not fit in memory, before allocating."""
    samples = latent["samples"]
    if getattr(samples, "is_nested", False):
        return
    per = samples[:1].numel() * 4  # float32 noise per candidate
    need = count * per
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 (estimate only)
        return
    if need > available // 2:
        raise ValueError(f"{what}: {count} candidates of this latent need {need / 2**30:.1f} GiB for their "
                         f"noises alone, more than half the free memory ({available / 2**30:.1f} GiB); "
                         f"use fewer candidates or a smaller image")


def pivot_noise(noise_source, latent: dict) -> torch.Tensor:
    """The first noise of any NOISE (NoiseCandidates gives several: its first is the pivot)."""
    samples = latent["samples"]
    out = noise_source.generate_noise({"samples": samples[:1]})
    if out.ndim != samples.ndim or out.shape[0] < 1 or out.shape[1:] != samples.shape[1:]:
        raise ValueError(f"noise: produced shape {tuple(out.shape)} for a latent of shape {tuple(samples[:1].shape)}")
    return out[:1].float()


# -- backend construction ---------------------------------------------------------------
def ksampler_backend(model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive,
                     negative, latent_image, denoise, vae, verifier, condition, batch_size):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = ksampler_sigmas(model, sampler_name, scheduler, steps, denoise)
    search_sigmas = (ksampler_sigmas(model, sampler_name, scheduler, search_steps, denoise)
                     if search_steps and search_steps != steps else None)
    return ComfyBackend(guider, comfy.samplers.sampler_object(sampler_name), sigmas, latent_image, vae,
                        verifier, condition, search_sigmas=search_sigmas, seed=seed, chunk=batch_size)


def _settings(**kw):
    return {k: v for k, v in kw.items() if isinstance(v, (int, float, str, bool))}


def _outputs(cls, latent, result, report, state, replay_noise=None, seed_replay=None):
    best, top = latent_outputs(latent, result)
    outs = [best, top, json.dumps(result.top_scores), float(result.best_score)]
    if replay_noise is not None:
        outs.append(replay_noise)
    if seed_replay is not None:
        outs += list(seed_replay)
    outs.append(report_json(report))
    return io.NodeOutput(*outs, ui={"noise_search": [state]})


def _run(cls, algorithm, backend, noise, seed, budget, top_k, settings, options=None):
    # Classifier-like verifiers know their classes: an unknown class fails here, before
    # any denoising, rather than after the first round.
    class_index = getattr(backend.verifier, "class_index", None)
    if callable(class_index):
        class_index(backend.condition)
    try:
        return run_search(algorithm, backend, noise, seed=seed, budget=budget, top_k=top_k,
                          settings=settings, node_id=cls.hidden.unique_id,
                          extra_pnginfo=cls.hidden.extra_pnginfo, options=options)
    except BudgetError as err:
        raise ValueError(f"budget: {err}") from err


# -- nodes ------------------------------------------------------------------------------
class NoiseCandidates(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NoiseCandidates", display_name="Noise Candidates", category=CATEGORY,
            description="Seeded candidate noises: with a batch-1 latent, SamplerCustomAdvanced "
                        "samples all `count` candidates at once; search nodes draw their candidates from it.",
            inputs=[io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                                 tooltip="Candidate i is batch element i of a stock KSampler batch with this seed."),
                    io.Int.Input("count", default=8, min=1, max=4096, tooltip="Number of candidate noises.")],
            outputs=[io.Noise.Output(tooltip="The candidate noises.")],
        )

    @classmethod
    def execute(cls, seed, count) -> io.NodeOutput:
        check_values(cls, locals())
        return io.NodeOutput(CandidateNoise(seed, count))


class RandomSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RandomSearch", display_name="Random Search (best-of-N)", category=CATEGORY,
            description="Samples N candidate noises with the host's sampler, scores each decoded "
                        "candidate with the verifier, and keeps the best (the paper's random search).",
            inputs=ksampler_inputs() + [io.Int.Input("candidates", default=8, min=1, max=4096,
                                                     tooltip="N: candidate noises to try.")] + verifier_inputs(),
            outputs=search_outputs(True, True), hidden=HIDDEN)

    @classmethod
    def validate_inputs(cls, budget=None, steps=None, search_steps=None, sampler_name=None, cfg=None, denoise=None,
                        scheduler=None):
        return validate_ksampler_budget(budget, steps, search_steps, sampler_name, cfg, denoise, scheduler)

    @classmethod
    def execute(cls, model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, denoise, candidates, vae, verifier, condition, budget, top_k,
                batch_size) -> io.NodeOutput:
        check_values(cls, locals())
        check_rows(candidates, latent_image, "candidates")
        backend = ksampler_backend(model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive,
                                   negative, latent_image, denoise, vae, verifier, condition, batch_size)
        noise = candidate_noise(CandidateNoise(seed, candidates), latent_image, candidates)
        settings = _settings(seed=seed, steps=steps, search_steps=search_steps, cfg=cfg, scheduler=scheduler,
                             denoise=denoise, candidates=candidates, top_k=top_k)
        result, report, state = _run(cls, "random", backend, noise, seed, budget, top_k, settings)
        return _outputs(cls, latent_image, result, report, state, ReplayNoise(result.best_noise, seed),
                        (seed, result.best_index))


class RandomSearchAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RandomSearchAdvanced", display_name="Random Search (Advanced)", category=CATEGORY,
            description="Random search for custom-sampling graphs (NOISE, GUIDER, SAMPLER, SIGMAS).",
            inputs=advanced_inputs() + [
                io.Sigmas.Input("search_sigmas", optional=True,
                                tooltip="Cheaper schedule while searching; winners are regenerated on sigmas."),
                io.Int.Input("candidates", default=8, min=1, max=4096, tooltip="N: candidate noises to try.")]
            + verifier_inputs(),
            outputs=search_outputs(True), hidden=HIDDEN)

    @classmethod
    def execute(cls, noise, guider, sampler, sigmas, latent_image, candidates, vae, verifier, condition,
                budget, top_k, batch_size, search_sigmas=None) -> io.NodeOutput:
        check_values(cls, locals())
        check_rows(candidates, latent_image, "candidates")
        seed = int(getattr(noise, "seed", 0) or 0)
        backend = ComfyBackend(guider, sampler, sigmas, latent_image, vae, verifier, condition,
                               search_sigmas=search_sigmas, seed=seed, chunk=batch_size)
        cands = candidate_noise(noise, latent_image, candidates)
        result, report, state = _run(cls, "random", backend, cands, seed, budget, top_k,
                                     _settings(seed=seed, candidates=candidates, top_k=top_k))
        return _outputs(cls, latent_image, result, report, state, ReplayNoise(result.best_noise, seed))


ANGLE_MIN, ANGLE_MAX = 0.01, 179.99


def zero_order_inputs():
    return [
        io.Int.Input("neighbours", default=2, min=1, max=1024, tooltip="N: neighbours drawn around the pivot per iteration."),
        io.Int.Input("iterations", default=8, min=1, max=10000, tooltip="K: iterations."),
        io.Float.Input("angle", default=30.0, min=ANGLE_MIN, max=ANGLE_MAX, step=0.01,
                       tooltip="Step size as the angle in degrees between pivot and neighbour on the "
                               "pivot's sphere (neighbours keep the pivot's norm). The paper's lambda "
                               "corresponds to cos(angle); small angles stay local."),
        io.Boolean.Input("restart", default=True,
                         tooltip="When no neighbour beats the pivot, restart from a fresh noise."),
    ]


class ZeroOrderSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZeroOrderSearch", display_name="Zero-Order Search", category=CATEGORY,
            description="Moves a pivot noise to its best-scoring neighbour, K times (the paper's ZO-N).",
            inputs=ksampler_inputs() + zero_order_inputs() + verifier_inputs(),
            outputs=search_outputs(True), hidden=HIDDEN)

    @classmethod
    def validate_inputs(cls, budget=None, steps=None, search_steps=None, sampler_name=None, cfg=None, denoise=None,
                        scheduler=None, angle=None):
        return _check("angle", angle, ANGLE_MIN, ANGLE_MAX) or \
            validate_ksampler_budget(budget, steps, search_steps, sampler_name, cfg, denoise, scheduler)

    @classmethod
    def execute(cls, model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, denoise, neighbours, iterations, angle, restart, vae, verifier, condition,
                budget, top_k, batch_size) -> io.NodeOutput:
        check_values(cls, locals())
        check_rows(neighbours, latent_image, "neighbours")
        backend = ksampler_backend(model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive,
                                   negative, latent_image, denoise, vae, verifier, condition, batch_size)
        pivot = candidate_noise(CandidateNoise(seed, 1), latent_image, 1)
        opts = {"neighbours": neighbours, "iterations": iterations, "angle": angle, "restart": restart}
        settings = _settings(seed=seed, steps=steps, search_steps=search_steps, cfg=cfg, scheduler=scheduler,
                             denoise=denoise, top_k=top_k, **opts)
        result, report, state = _run(cls, "zero_order", backend, pivot, seed, budget, top_k, settings, opts)
        return _outputs(cls, latent_image, result, report, state, ReplayNoise(result.best_noise, seed))


class ZeroOrderSearchAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZeroOrderSearchAdvanced", display_name="Zero-Order Search (Advanced)", category=CATEGORY,
            description="Zero-order search for custom-sampling graphs; the NOISE gives the first pivot.",
            inputs=advanced_inputs() + [io.Sigmas.Input("search_sigmas", optional=True,
                                                        tooltip="Cheaper schedule while searching.")]
            + zero_order_inputs() + verifier_inputs(),
            outputs=search_outputs(True), hidden=HIDDEN)

    @classmethod
    def validate_inputs(cls, angle=None):
        return _check("angle", angle, ANGLE_MIN, ANGLE_MAX) or True

    @classmethod
    def execute(cls, noise, guider, sampler, sigmas, latent_image, neighbours, iterations, angle, restart,
                vae, verifier, condition, budget, top_k, batch_size, search_sigmas=None) -> io.NodeOutput:
        check_values(cls, locals())
        check_rows(neighbours, latent_image, "neighbours")
        seed = int(getattr(noise, "seed", 0) or 0)
        backend = ComfyBackend(guider, sampler, sigmas, latent_image, vae, verifier, condition,
                               search_sigmas=search_sigmas, seed=seed, chunk=batch_size)
        opts = {"neighbours": neighbours, "iterations": iterations, "angle": angle, "restart": restart}
        result, report, state = _run(cls, "zero_order", backend, pivot_noise(noise, latent_image),
                                     seed, budget, top_k, _settings(seed=seed, top_k=top_k, **opts), opts)
        return _outputs(cls, latent_image, result, report, state, ReplayNoise(result.best_noise, seed))


def path_inputs():
    return [
        io.Int.Input("paths", default=2, min=1, max=1024, tooltip="N: paths kept after every round."),
        io.Int.Input("branches", default=2, min=1, max=1024, tooltip="M: fresh noises per path per round."),
        io.Float.Input("start", default=0.4, min=0.01, max=0.99, step=0.01,
                       tooltip="Level where the search starts, as a fraction of the model's noise "
                               "schedule (1 = pure noise, 0 = clean; mapped through the model's own sigmas)."),
        io.Float.Input("forward", default=0.2, min=0.01, max=0.99, step=0.01,
                       tooltip="delta_f: how far each round re-noises, in schedule fraction."),
        io.Float.Input("backward", default=0.3, min=0.02, max=1.0, step=0.01,
                       tooltip="delta_b: how far each round denoises; must exceed forward."),
        io.Int.Input("interval_steps", default=4, min=1, max=1000,
                     tooltip="L: solver steps per backward interval."),
    ]


def validate_paths(start, forward, backward, paths=None, branches=None) -> bool | str:
    for msg in (_check("start", start, 0.01, 0.99), _check("forward", forward, 0.01, 0.99),
                _check("backward", backward, 0.02, 1.0), _check("paths", paths, 1, 1024),
                _check("branches", branches, 1, 1024)):
        if msg:
            return msg
    if None not in (paths, branches) and paths * branches > MAX_ROWS:
        return (f"paths x branches ({paths} x {branches} = {paths * branches}) candidates per round exceeds "
                f"{MAX_ROWS}; lower paths or branches")
    if None not in (forward, backward) and backward <= forward:
        return f"backward ({backward}) must be greater than forward ({forward}) so every round moves toward clean"
    if None not in (start, forward) and start + forward > 1.0:
        return (f"start + forward ({start} + {forward}) exceeds 1, the noisiest level of the model's "
                "schedule; lower start or forward")
    return True


class PathSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PathSearch", display_name="Path Search", category=CATEGORY,
            description="Search over sampling paths: branch, re-noise, denoise, score x0-predictions, keep the best N.",
            inputs=ksampler_inputs() + path_inputs() + verifier_inputs(),
            outputs=search_outputs(False), hidden=HIDDEN)

    @classmethod
    def validate_inputs(cls, start=None, forward=None, backward=None, budget=None, steps=None, sampler_name=None,
                        cfg=None, denoise=None, scheduler=None, paths=None, branches=None):
        ok = validate_paths(start, forward, backward, paths, branches)
        return ok if ok is not True else validate_ksampler_budget(budget, steps, 0, sampler_name, cfg, denoise,
                                                                  scheduler)

    @classmethod
    def execute(cls, model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, denoise, paths, branches, start, forward, backward, interval_steps, vae,
                verifier, condition, budget, top_k, batch_size) -> io.NodeOutput:
        check_values(cls, locals())
        ok = validate_paths(start, forward, backward, paths, branches)
        if ok is not True:
            raise ValueError(ok)
        check_rows(paths * branches, latent_image, "paths x branches")
        backend = ksampler_backend(model, seed, steps, 0, cfg, sampler_name, scheduler, positive,
                                   negative, latent_image, denoise, vae, verifier, condition, batch_size)
        noise = candidate_noise(CandidateNoise(seed, paths), latent_image, paths)
        return run_path_search(cls, backend, latent_image, noise, seed, budget, top_k, paths, branches, start,
                               forward, backward, interval_steps)


def run_path_search(cls, backend, latent_image, noise, seed, budget, top_k, paths, branches, start, forward,
                    backward, interval_steps):
    check_path_backend(backend, start, forward)
    opts = {"branches": branches, "start": start, "forward": forward, "backward": backward,
            "interval_steps": interval_steps}
    result, report, state = _run(cls, "paths", backend, noise, seed, budget, top_k,
                                 _settings(seed=seed, paths=paths, top_k=top_k, **opts), opts)
    return _outputs(cls, latent_image, result, report, state)


def check_path_backend(backend: ComfyBackend, start: float, forward: float) -> None:
    if backend.mask is not None:
        raise ValueError("latent_image: path search does not support noise masks (inpainting); "
                         "use RandomSearch or ZeroOrderSearch")
    if getattr(backend.verifier, "early_level", None) is not None:
        raise ValueError("verifier: this verifier compares against an early x0-prediction of a full "
                         "trajectory; use it with RandomSearch or ZeroOrderSearch")
    top = float(backend.sigmas[0])
    if backend.level_sigma(start + forward) > top * (1 + 1e-4):
        raise ValueError(f"start + forward ({start + forward:.2f}) re-noises above where this run starts "
                         f"(sigma {top:.3g}, e.g. because denoise < 1); lower start or forward")


class PathSearchAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PathSearchAdvanced", display_name="Path Search (Advanced)", category=CATEGORY,
            description="Path search for custom-sampling graphs (NOISE, GUIDER, SAMPLER, SIGMAS).",
            inputs=advanced_inputs() + path_inputs() + verifier_inputs(),
            outputs=search_outputs(False), hidden=HIDDEN)

    @classmethod
    def validate_inputs(cls, start=None, forward=None, backward=None, paths=None, branches=None):
        return validate_paths(start, forward, backward, paths, branches)

    @classmethod
    def execute(cls, noise, guider, sampler, sigmas, latent_image, paths, branches, start, forward, backward,
                interval_steps, vae, verifier, condition, budget, top_k, batch_size) -> io.NodeOutput:
        check_values(cls, locals())
        ok = validate_paths(start, forward, backward, paths, branches)
        if ok is not True:
            raise ValueError(ok)
        check_rows(paths * branches, latent_image, "paths x branches")
        seed = int(getattr(noise, "seed", 0) or 0)
        backend = ComfyBackend(guider, sampler, sigmas, latent_image, vae, verifier, condition, seed=seed,
                               chunk=batch_size)
        return run_path_search(cls, backend, latent_image, candidate_noise(noise, latent_image, paths), seed,
                               budget, top_k, paths, branches, start, forward, backward, interval_steps)


SEARCH_NODES = [NoiseCandidates, RandomSearch, RandomSearchAdvanced, ZeroOrderSearch, ZeroOrderSearchAdvanced,
                PathSearch, PathSearchAdvanced]
