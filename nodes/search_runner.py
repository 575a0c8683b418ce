"""Runs one search for a node: checks the parts, drives the strategy, builds the report.

The report is a pure function of the strategy, the result and the backend's counters.
"""

from __future__ import annotations

import json
import time

import torch

from ..search import Strategy
from ..search.backend import BudgetError
from .progress import SearchProgress
from .sampling_adapter import (
    DOWNSCALE_KEYS,
    ComfyBackend,
    ReplayNoise,
    Scorer,
    candidate_noise,
    check_parts_fit,
    sampler_name,
    step_seed,
)

REPORT_KEY = "noise_search_report"


def check_latent(latent: dict) -> None:
    samples = latent["samples"]
    if samples.is_nested or samples.shape[0] != 1:
        raise ValueError(f"latent_image: search works on one latent at a time, got a batch of "
                         f"{samples.shape[0] if not samples.is_nested else 'nested latents'}; "
                         "use a latent with batch size 1 (candidates are made by the search)")
    if not torch.isfinite(samples).all():
        raise ValueError("latent_image contains NaN or infinite values")


def build_backend(strategy: Strategy, noise_source, guider, sampler, sigmas, latent: dict, vae, verifier,
                  condition: str, batch_size: int, search_sigmas=None) -> ComfyBackend:
    check_latent(latent)
    scorer = Scorer(vae, verifier, condition)
    if scorer.early_level is not None and float(sigmas[-1]) > 0:
        raise ValueError("verifier: this verifier compares an early x0-prediction with the final image; a "
                         "segment that stops above sigma 0 has no final image to compare. Use another "
                         "verifier, or search the whole schedule")
    if not strategy.uses_search_schedule:
        search_sigmas = None
    backend = ComfyBackend(guider, sampler, sigmas, latent, scorer, search_sigmas=search_sigmas,
                           seed=int(getattr(noise_source, "seed", 0) or 0), chunk=batch_size)
    check_parts_fit(backend.patcher, backend.latent, vae)
    # Classifier-like verifiers know their classes: an unknown class fails here, before
    # any denoising, rather than after the first round.
    class_index = getattr(verifier, "class_index", None)
    if callable(class_index):
        class_index(scorer.condition)
    return backend


def run_search(strategy: Strategy, backend: ComfyBackend, noise_source, *, budget: int, top_k: int,
               settings: dict, node_id=None, extra_pnginfo=None):
    """Run ``strategy``; returns (result, report, UI state, replay NOISE or None)."""
    if budget and not backend.cost(backend.sigmas)[1]:
        raise ValueError(f"budget: the {sampler_name(backend.sampler)} sampler chooses its own number of steps, "
                         "so its cost cannot be planned; set budget to 0 (no limit) or choose another sampler")
    count = getattr(noise_source, "count", None)
    if isinstance(count, int) and count < strategy.noises:
        # The SEARCH decides how many noises are searched; the NOISE must supply them.
        raise ValueError(f"noise: NoiseCandidates gives {count} noises, but this search starts from "
                         f"{strategy.noises}; raise its count to at least {strategy.noises} or search fewer")
    noise = candidate_noise(noise_source, backend.latent, strategy.noises)
    if noise.abs().max() == 0:
        raise ValueError("noise: every candidate noise is zero (a disabled noise); there is nothing to "
                         "search. Connect a RandomNoise or NoiseCandidates")
    progress = SearchProgress(node_id, strategy.name)
    backend.counter.on_call = progress.on_call
    generator = torch.Generator().manual_seed(step_seed(backend.seed, 1 << 63))
    t0 = time.perf_counter()
    try:
        result = strategy(backend, noise, backend.sigmas, generator=generator, budget=budget or None,
                          top_k=top_k, callback=progress.on_round)
    except BudgetError as err:
        raise ValueError(f"budget: {err}") from err
    report = build_report(strategy, result, backend, noise_source, budget, settings, time.perf_counter() - t0)
    state = progress.finish(report)
    if isinstance(extra_pnginfo, dict):
        # SaveImage writes every key of extra_pnginfo into the PNG: the report travels along.
        extra_pnginfo[REPORT_KEY] = report
    replay = ReplayNoise(result.best_noise, step_seed(backend.seed, result.best_id)) \
        if result.best_noise is not None else None
    return result, report, state, replay


def build_report(strategy: Strategy, result, backend: ComfyBackend, noise_source, budget: int, settings: dict,
                 elapsed: float) -> dict:
    return {
        "algorithm": strategy.name,
        "settings": {**settings, **{k: v for k, v in strategy.settings.items() if _plain(v)},
                     "sampler": sampler_name(backend.sampler), "batch_size": backend.chunk},
        "best": {"id": result.best_id, "score": result.best_score},
        "top": [{"id": i, "score": s, **({"search_score": ss} if result.search_scores else {})}
                for i, s, ss in zip(result.top_ids, result.top_scores, result.search_scores or result.top_scores)],
        "top_scores": result.top_scores,
        "replay": replay_rule(strategy, result, backend, noise_source),
        "nfe": {"search_total": result.nfe, "planned": result.planned_nfe, "measured": backend.counter.nfe,
                "forward_passes": backend.counter.forward, "budget": budget or None,
                "stopped_by_budget": result.stopped_by_budget},
        "rounds": result.rounds,
        "candidates": result.candidates,
        "timings": {"total_s": round(elapsed, 4),
                    **{k + "_s": round(v, 4) for k, v in {**backend.timings, **backend.scorer.timings}.items()}},
        "verifier": getattr(backend.scorer.verifier, "name", type(backend.scorer.verifier).__name__),
        "condition": backend.scorer.condition,
    }


def replay_rule(strategy: Strategy, result, backend: ComfyBackend, noise_source) -> dict:
    """How to regenerate the winner with stock nodes (see the README's replay section)."""
    if result.best_noise is None or strategy.replay == "none":
        return {"how": "not replayable from one noise: path search injects noise along the trajectory"}
    seed = step_seed(backend.seed, result.best_id)
    seeded = getattr(noise_source, "per_candidate_seed", False) and \
        (strategy.replay == "seed" or result.best_id < strategy.noises)
    rule = {"seed": seed, "candidate": result.best_id,
            "with_noise": "SamplerCustomAdvanced with the replay_noise output, on a latent of batch size 1, "
                          "with the same guider, sampler and sigmas"}
    if seeded:
        rule["with_seed"] = (f"a stock KSampler (or RandomNoise + SamplerCustomAdvanced) with seed {seed} on a "
                             "latent of batch size 1, with the same model, conditioning, cfg, sampler, "
                             "scheduler, steps and denoise")
    rule["how"] = rule.get("with_seed", rule["with_noise"])
    return rule


def _plain(v) -> bool:
    return isinstance(v, (int, float, str, bool))


def latent_outputs(latent: dict, result) -> tuple[dict, dict]:
    best, top = latent.copy(), latent.copy()
    best["samples"], top["samples"] = result.best, result.top
    for d in (best, top):
        for key in ("batch_index", *DOWNSCALE_KEYS):
            d.pop(key, None)
    return best, top


def report_json(report: dict) -> str:
    return json.dumps(report, indent=1)
