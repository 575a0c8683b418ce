"""Runs one search for a node: builds the backend, drives an algorithm, shapes outputs."""

from __future__ import annotations

import json
import time

import comfy.sample
import torch

from ..search import SEARCHES
from ..search.algorithms import planned_nfe
from .progress import SearchProgress
from .sampling_adapter import ComfyBackend, sampler_name

REPORT_KEY = "noise_search_report"


class ReplayNoise:
    """A NOISE that regenerates the search's winner with stock sampler nodes."""

    def __init__(self, noise: torch.Tensor, seed: int):
        self.noise, self.seed = noise.cpu(), seed

    def generate_noise(self, input_latent):
        samples = input_latent["samples"]
        if samples.shape[0] != 1:
            raise ValueError("this replay noise holds one winner: use a latent with batch size 1")
        return self.noise.reshape(samples.shape).to(samples.dtype)


class CandidateNoise:
    """Seeded candidate noises: candidate i is batch element i of a stock KSampler batch."""

    def __init__(self, seed: int, count: int):
        self.seed, self.count = seed, count

    def generate_noise(self, input_latent):
        samples = input_latent["samples"]
        if samples.shape[0] == 1 and self.count > 1:
            samples = samples.expand(self.count, *samples.shape[1:])
        inds = input_latent.get("batch_index")
        return comfy.sample.prepare_noise(samples, self.seed, inds)


def candidate_noise(noise_source, latent: dict, count: int) -> torch.Tensor:
    """``count`` candidate noises from any NOISE object, as rows of one batch."""
    samples = latent["samples"]
    batch = {"samples": samples[:1].expand(count, *samples.shape[1:])}
    out = noise_source.generate_noise(batch)
    if out.shape[0] != count:
        raise ValueError(f"noise: produced {out.shape[0]} noises for {count} candidates")
    return out.float()


def run_search(algorithm: str, backend: ComfyBackend, noise: torch.Tensor, *, seed: int,
               budget: int, top_k: int, settings: dict, node_id=None, extra_pnginfo=None,
               options: dict | None = None):
    options = options or {}
    n = noise.shape[0]
    top_k = min(top_k, n) if algorithm != "zero_order" else top_k
    progress = SearchProgress(node_id, algorithm, planned_nfe(algorithm, backend, n, top_k, **options),
                              backend)
    backend.counter.on_call = progress.on_call
    generator = torch.Generator().manual_seed((seed + 1) % 2**64)
    t0 = time.perf_counter()
    result = SEARCHES[algorithm](backend, noise, backend.sigmas, generator=generator,
                                 budget=budget or None, top_k=top_k, callback=progress.on_round,
                                 **({"round_size": _round_size(backend)} if algorithm == "random" else {}),
                                 **options)
    report = {
        "algorithm": algorithm,
        "settings": {**settings, "sampler": sampler_name(backend.sampler), "batch_size": backend.chunk},
        "best": {"id": result.best_index if result.best_index is not None else _best_id(result),
                 "score": result.best_score},
        "top_scores": result.top_scores,
        "replay": _replay(algorithm, result, seed),
        "nfe": {"search_total": result.nfe, "measured": backend.counter.nfe,
                "forward_passes": backend.counter.forward, "budget": budget or None,
                "stopped_by_budget": result.stopped_by_budget},
        "rounds": result.rounds,
        "candidates": result.candidates,
        "timings": {"total_s": round(time.perf_counter() - t0, 4),
                    **{k + "_s": round(v, 4) for k, v in backend.timings.items()}},
        "verifier": getattr(backend.verifier, "name", type(backend.verifier).__name__),
        "condition": backend.condition,
    }
    state = progress.finish(report)
    if isinstance(extra_pnginfo, dict):
        # SaveImage writes every key of extra_pnginfo into the PNG: the report travels along.
        extra_pnginfo[REPORT_KEY] = report
    return result, report, state


def _round_size(backend) -> int | None:
    # One round per model chunk, so the web view fills in as candidates finish; a rank
    # ensemble scores all candidates in one round so its ranks are the paper's exactly.
    return None if getattr(backend.verifier, "relative_scores", False) else backend.chunk


def _best_id(result) -> int:
    scores = [c["score"] for c in result.candidates]
    return result.candidates[scores.index(max(scores))]["id"] if scores else 0


def _replay(algorithm: str, result, seed: int) -> dict:
    if algorithm == "random":
        return {"how": "KSampler with this seed on a latent batch of the candidate count; take "
                       "batch_index (LatentFromBatch), or the NOISE output with SamplerCustomAdvanced",
                "seed": seed, "batch_index": result.best_index}
    if algorithm == "zero_order":
        return {"how": "the NOISE output with SamplerCustomAdvanced (the winner is a moved noise)"}
    return {"how": "not replayable from one noise: path search injects noise along the trajectory"}


def latent_outputs(latent: dict, result) -> tuple[dict, dict]:
    best, top = latent.copy(), latent.copy()
    best["samples"], top["samples"] = result.best, result.top
    for d in (best, top):
        d.pop("batch_index", None)
    if "noise_mask" in latent:
        top["noise_mask"] = latent["noise_mask"]
    return best, top


def report_json(report: dict) -> str:
    return json.dumps(report, indent=1)
