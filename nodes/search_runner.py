"""Runs one search for a node, in one pass: every check, then the search, then the outputs.

``search`` is the core every search node calls with a SEARCH (a configured strategy), a JUDGE
(VAE, verifier, condition) and the sampling parts (noise, guider, sampler, sigmas, latent).
``prepare`` checks everything once, before any denoising; ``run_search`` drives the strategy
on every problem of the latent batch at once (search/lockstep.py: each problem has its own
candidates, budget, pool and report; model calls carry all of them); the report is a pure
function of the strategy, the results and the backend's counters.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import torch

from ..search.backend import BudgetError
from ..search.draft import regenerate_with_main
from ..search.lockstep import run_lockstep
from ..search.strategy import Strategy
from ..verifiers.base import VerifierError
from .progress import SearchProgress
from .sampling_adapter import (
    DOWNSCALE_KEYS,
    ComfyBackend,
    ReplayNoise,
    Scorer,
    candidate_noise,
    check_parts_fit,
    draft_guider,
    sampler_name,
    step_seed,
)

REPORT_KEY = "noise_search_report"
# Problems (latents of one batch) one search runs at once: each runs on a worker thread.
MAX_PROBLEMS = 1024


@dataclass(frozen=True)
class Judge:
    """What a JUDGE socket carries: candidates are decoded by ``vae`` and scored by ``verifier``
    against ``condition`` (for a latent batch, a JSON list gives each latent its own). An optional
    ``held_out`` verifier is never searched on: it scores the returned winners and the unsearched
    sample at the seed, so a report shows whether search improved what it measures too."""

    vae: object
    verifier: object
    condition: str = ""
    held_out: object = None

    def __post_init__(self):
        # Duck-typed: any object with score(images, condition_text, early) is a verifier.
        if not callable(getattr(self.verifier, "score", None)):
            raise VerifierError("verifier: connect a VERIFIER (e.g. from a verifier loader node)")
        if self.held_out is not None:
            if not callable(getattr(self.held_out, "score", None)):
                raise VerifierError("held_out: connect a VERIFIER (e.g. from a verifier loader node), or leave it "
                                    "unconnected")
            if getattr(self.held_out, "early_level", None) is not None:
                raise VerifierError("held_out: this verifier compares an early x0-prediction with the final image; a "
                                    "held-out judge scores final images only. Use another verifier")


@dataclass(frozen=True)
class Draft:
    """What a DRAFT socket carries: the model the search generates and judges its candidates with,
    and how many of its finalists the main model regenerates (from their noises) and ranks."""

    model: object
    rescored: int = 4


class NoReplayNoise:
    """The replay_noise output of a search whose winner cannot be replayed from one noise."""

    seed = 0

    def __init__(self, display_name: str = "this search"):
        self.display_name = display_name

    def generate_noise(self, input_latent):
        raise ValueError(f"replay_noise: the winner of {self.display_name} cannot be replayed from one noise "
                         "(noise is injected along its trajectory); use the search's best output instead")


# -- checks ---------------------------------------------------------------------------------------
def check_latent(latent: dict) -> None:
    samples = latent["samples"]
    supported = (f"supported: a latent batch of 1 to {MAX_PROBLEMS} latents of one size, each searched as its "
                 "own problem (candidates are made by the search)")
    if samples.is_nested:
        raise ValueError(f"latent_image: nested latents (several sizes in one batch) are not supported; {supported}")
    if not 1 <= samples.shape[0] <= MAX_PROBLEMS:
        raise ValueError(f"latent_image: got a batch of {samples.shape[0]} latents; {supported}. Split the batch "
                         "(LatentFromBatch) and search the parts")
    if not torch.isfinite(samples).all():
        raise ValueError("latent_image contains NaN or infinite values")


def check_rows(count: int, latent: dict) -> None:
    """Refuse a round whose noises alone would not fit in memory, before allocating (``count``:
    candidates of one round, over all problems of a latent batch)."""
    need = count * latent["samples"][:1].numel() * 4  # float32 noise per candidate
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 (estimate only)
        return
    if need > available // 2:
        raise ValueError(f"search: {count} candidates per round of this latent need {need / 2**30:.1f} GiB for "
                         f"their noises alone, more than half the free memory ({available / 2**30:.1f} GiB); "
                         f"use fewer candidates or a smaller image")


def problem_conditions(condition: str, problems: int) -> str | list[str]:
    """The verifier's condition for each problem: one for all, or (latent batches) a JSON list
    with one condition per latent."""
    text = (condition or "").strip()
    if problems == 1 or not (text.startswith("[") and text.endswith("]")):
        return condition
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return condition
    if not isinstance(items, list) or not all(isinstance(c, (str, int)) for c in items):
        return condition
    if len(items) not in (1, problems):
        raise ValueError(f"condition: a JSON list of {len(items)} conditions for a latent batch of {problems}; "
                         f"give one condition for every latent, or a list of {problems} (one per latent, in order)")
    return [str(c) for c in items]


def prepare(strategy: Strategy, judge: Judge, noise_source, guider, sampler, sigmas, latent: dict):
    """Every check of a search, each once, before any denoising; returns (backend, the candidate
    noises [B, noises, ...])."""
    check_latent(latent)
    problems = latent["samples"].shape[0]
    check_rows(strategy.rows * problems, latent)
    scorer = Scorer(judge.vae, judge.verifier, problem_conditions(judge.condition, problems))
    if scorer.early_level is not None and float(sigmas[-1]) > 0:
        raise ValueError("verifier: this verifier compares an early x0-prediction with the final image; a "
                         "segment that stops above sigma 0 has no final image to compare. Use another "
                         "verifier, or search the whole schedule")
    backend = ComfyBackend(guider, sampler, sigmas, latent, scorer, search_sigmas=strategy.search_sigmas,
                           seed=int(getattr(noise_source, "seed", 0) or 0), chunk=strategy.batch_size)
    check_parts_fit(backend.patcher, backend.latent, judge.vae)
    # Classifier-like verifiers know their classes: an unknown class fails here.
    class_index = getattr(judge.verifier, "class_index", None)
    if callable(class_index):
        for c in dict.fromkeys(scorer.conditions):
            class_index(c)
    if strategy.check is not None:
        strategy.check(backend)
    if strategy.selection.rule == "threshold" and backend.relative:
        raise ValueError("selection: threshold selection needs a verifier with absolute scores; a rank ensemble's "
                         "values are ranks among the candidates compared, so no fixed value can be reached. Use "
                         "best or tempered selection, or a single verifier")
    if strategy.budget and not backend.cost(backend.sigmas)[1]:
        raise ValueError(f"budget: the {sampler_name(backend.sampler)} sampler chooses its own number of steps, "
                         "so its cost cannot be planned; set budget to 0 (no limit) or choose another sampler")
    count = getattr(noise_source, "count", None)
    if isinstance(count, int) and count < strategy.noises:
        # The SEARCH decides how many noises are searched; the NOISE must supply them.
        raise ValueError(f"noise: NoiseCandidates gives {count} noises, but this search starts from "
                         f"{strategy.noises}; raise its count to at least {strategy.noises} or search fewer")
    noises = candidate_noise(noise_source, backend.latent, strategy.noises, backend.batch_index)
    if noises.abs().max() == 0:
        raise ValueError("noise: every candidate noise is zero (a disabled noise); there is nothing to "
                         "search. Connect a RandomNoise or NoiseCandidates")
    return backend, noises


# -- the search -----------------------------------------------------------------------------------
def problem_seed(seed: int, index: int) -> int:
    """Seed of the generator of problem ``index``'s later random draws (zero-order directions, the
    pack's re-noising, resampling and Boltzmann descent; initial noises come from the seed
    itself): the same for a batch element and for that element searched alone (LatentFromBatch
    tags its index); index 0 keeps the seed a batch of one always had."""
    return step_seed(seed, (1 << 63) + index * 0x9E3779B97F4A7C15)


def prepare_draft(draft: Draft, strategy: Strategy, backend: ComfyBackend, guider, sampler, latent: dict):
    """The backend the search runs on with a draft model: the main one's parts with the draft's
    model, its own counters."""
    if strategy.no_draft:
        raise ValueError(f"draft: {strategy.display_name} cannot search with a draft model: {strategy.no_draft}")
    if strategy.top_k > draft.rescored:
        raise ValueError(f"draft: rescored ({draft.rescored}) must be at least top_k ({strategy.top_k}): the main "
                         "model returns the best of the finalists it regenerates")
    return ComfyBackend(draft_guider(guider, draft.model), sampler, backend.sigmas, latent, backend.scorer,
                        search_sigmas=strategy.search_sigmas, seed=backend.seed, chunk=strategy.batch_size)


def run_with_draft(strategy: Strategy, draft: Draft, drafting: ComfyBackend, backend: ComfyBackend,
                   noises: torch.Tensor, progress: SearchProgress) -> list:
    """The search on the draft (its top ``rescored`` kept), then every problem's finalists
    regenerated and ranked by the main model."""
    results = run_search(dataclasses.replace(strategy, top_k=draft.rescored), drafting, noises, progress)
    backend.counter.on_call = progress.on_call
    keep_order = strategy.selection.rule == "tempered"  # the draw is the draft's; the main model keeps it
    return run_lockstep(backend, [
        (lambda view, r=r: regenerate_with_main(view, r, backend.sigmas, strategy.top_k, keep_order)) for r in results])


def run_search(strategy: Strategy, backend: ComfyBackend, noises: torch.Tensor, progress: SearchProgress) -> list:
    """Run ``strategy`` on every problem of the latent batch at once; one result per problem."""
    problems = backend.problems
    backend.counter.on_call = progress.on_call

    def first_problem_view(info: dict) -> None:
        # The live view follows the first problem; the bar is sized for all of them.
        progress.on_round({**info, "planned": int(info.get("planned") or 0) * problems,
                           "bound": int(info.get("bound") or 0) * problems})

    def job(b: int):
        index = backend.batch_index[b] if backend.batch_index is not None else b
        generator = torch.Generator().manual_seed(problem_seed(backend.seed, index))
        callback = (progress.on_round if problems == 1 else first_problem_view) if b == 0 else None
        return lambda view: strategy(view, noises[b], backend.sigmas, generator=generator,
                                     budget=strategy.budget or None, top_k=strategy.top_k, callback=callback)

    try:
        return run_lockstep(backend, [job(b) for b in range(problems)])
    except BudgetError as err:
        raise ValueError(f"budget: {err}") from err


def held_out_scores(judge: Judge, backend: ComfyBackend, results: list, noises: torch.Tensor) -> list[dict]:
    """The held-out judge's scores of every problem's returned latents and of its unsearched sample at
    the seed (candidate 0's noise on the full schedule: the search's own where it made it, else
    generated here), beside the searched verifier's; the NFEs this costs, per problem."""
    counter, problems = backend.counter, list(range(len(results)))
    before = list(counter.nfe_by_problem)
    need = [b for b, r in enumerate(results) if r.baseline is None]
    baselines = {b: r.baseline for b, r in enumerate(results) if r.baseline is not None}
    if need:
        made, _ = backend.solve(None, torch.cat([noises[b][:1] for b in need]), backend.sigmas, [0] * len(need),
                                problems=need)
        baselines.update({b: made[j : j + 1] for j, b in enumerate(need)})
    latents = torch.cat([*[r.top for r in results], *[baselines[b] for b in problems]])
    rows = [b for b, r in enumerate(results) for _ in r.top_ids] + problems
    end = float(backend.sigmas[-1])
    if end > 0:  # a segment handing leftover noise on: judge the x0-prediction at its end
        latents = backend.predict_x0(latents, end, problems=rows)
    # Decoded once: both verifiers judge the same images.
    scorer = Scorer(judge.vae, judge.held_out, problem_conditions(judge.condition, len(results)))
    scored = scorer(latents, None, backend.chunk, rows)
    held = scorer.compare(scored.values).tolist()
    plain = not backend.relative and backend.scorer.early_level is None
    if plain:
        searcher = Scorer(None, backend.scorer.verifier, backend.scorer.conditions)
        base = scored.images[-len(problems):]
        searched = searcher.compare(searcher(base, None, backend.chunk, problems).values).tolist()
    else:
        searched = [None] * len(problems)
    out, start = [], 0
    for b, r in enumerate(results):
        k, seed_sample = len(r.top_ids), held[len(held) - len(problems) + b]
        out.append({"verifier": getattr(judge.held_out, "name", type(judge.held_out).__name__),
                    "winner": held[start], "top": held[start : start + k], "seed_sample": seed_sample,
                    "gain": held[start] - seed_sample,
                    "searched": {"winner": r.best_score, "seed_sample": searched[b],
                                 **({} if plain else {"note": "a rank ensemble's or early verifier's value of one "
                                                              "sample alone is not defined"})},
                    "seed_sample_from": "generated for the judge" if b in need else "the search (candidate 0)",
                    "nfe": counter.nfe_by_problem[b] - before[b]})
        start += k
    return out


def winner_aspects(verifier, vae, backend: ComfyBackend, results: list) -> list | None:
    """A grader's ratings by aspect of every problem's winner (a verifier with ``aspects_of``, such as
    the LLM grader), for the report; None for other verifiers."""
    aspects_of = getattr(verifier, "aspects_of", None)
    if not callable(aspects_of) or float(backend.sigmas[-1]) > 0:
        return None
    with torch.no_grad():
        return [aspects_of(vae.decode(r.best), backend.scorer.condition_of(b))[0] for b, r in enumerate(results)]


def search(strategy: Strategy, judge: Judge, noise_source, guider, sampler, sigmas, latent: dict, *,
           draft: Draft | None = None, settings: dict | None = None, node_id=None, extra_pnginfo=None) -> dict:
    """Check, run ``strategy`` on every latent of the batch, and return every output by name and
    the UI state. With a batch of B: ``best`` holds the B winners, ``top`` each problem's top k in
    turn (problem-major), ``scores`` their scores in that order; the scalar outputs (best_score,
    seed, batch_index) describe the first problem's winner. With a ``draft``, candidates are made
    and judged by the draft model and the finalists regenerated by the main one."""
    backend, noises = prepare(strategy, judge, noise_source, guider, sampler, sigmas, latent)
    drafting = prepare_draft(draft, strategy, backend, guider, sampler, latent) if draft is not None else None
    progress = SearchProgress(node_id, strategy.name)
    progress.state["label"] = strategy.display_name  # what the live view calls the search
    progress.frames_read = backend.scorer.frames_read  # a video candidate's entries list the frames scored
    t0 = time.perf_counter()
    if drafting is None:
        results = run_search(strategy, backend, noises, progress)
    else:
        results = run_with_draft(strategy, draft, drafting, backend, noises, progress)
    # What the search itself made, before the held-out judge's extra samples.
    measured = [(backend.counter.nfe_by_problem[b] + (drafting.counter.nfe_by_problem[b] if drafting else 0),
                 backend.counter.forward_by_problem[b] + (drafting.counter.forward_by_problem[b] if drafting else 0))
                for b in range(len(results))]
    t1 = time.perf_counter()
    held = held_out_scores(judge, backend, results, noises) if judge.held_out is not None else None
    # A grader's ratings of each winner by aspect (the searched verifier's, the held-out judge's).
    aspects = winner_aspects(judge.verifier, judge.vae, backend, results)
    for b, rated in enumerate((winner_aspects(judge.held_out, judge.vae, backend, results) if held else None) or []):
        held[b]["aspects"] = rated
    elapsed = time.perf_counter() - t0

    settings = {"seed": backend.seed, "top_k": strategy.top_k, **strategy.selection.settings(), **(settings or {})}
    reports = [problem_report(strategy, r, backend, noise_source, settings, b, measured[b],
                              held[b] if held else None, drafting, aspects[b] if aspects else None)
               for b, r in enumerate(results)]
    report = build_report(strategy, reports, backend, settings, elapsed, drafting)
    if held:
        report["timings"]["held_out_s"] = round(elapsed - (t1 - t0), 4)
    state = progress.finish(reports[0])
    state["judged"] = judged_summary(reports[0])
    if isinstance(extra_pnginfo, dict):
        # SaveImage writes every key of extra_pnginfo into the PNG: the report travels along.
        extra_pnginfo[REPORT_KEY] = report
    if all(r.best_noise is not None for r in results):
        replay = ReplayNoise(torch.cat([r.best_noise for r in results]), step_seed(backend.seed, results[0].best_id))
    else:
        replay = NoReplayNoise(strategy.display_name)
    best, top = latent_outputs(latent, results)
    return {"best": best, "top": top, "scores": json.dumps([s for r in results for s in r.top_scores]),
            "best_score": results[0].best_score, "replay_noise": replay,
            "replay_seed": reports[0]["replay"].get("seed", -1), "replay_index": 0, "report": report_json(report),
            "judged": json.dumps(state["judged"]), "ui": {"noise_search": [state]}}


def judged_summary(report: dict) -> dict:
    """The searched verifier's and the held-out judge's scores of the winner and of the unsearched
    sample at the seed, side by side (the first problem's)."""
    held = report.get("held_out")
    searched = {"verifier": report["verifier"], "winner": report["best"]["score"]}
    if not held:
        return {"searched": searched}
    return {"searched": {**searched, "seed_sample": held["searched"]["seed_sample"]},
            "held_out": {k: held[k] for k in ("verifier", "winner", "seed_sample", "gain")}}


# -- the report -----------------------------------------------------------------------------------
def problem_report(strategy: Strategy, result, backend: ComfyBackend, noise_source, settings: dict, b: int,
                   measured: tuple[int, int], held: dict | None = None, drafting: ComfyBackend | None = None,
                   aspects: dict | None = None) -> dict:
    """One problem's report: the whole report of a search on a batch of one. ``measured``: the
    (NFEs, forward rows) the search's model calls made for it (draft and main model together)."""
    extra = {} if aspects is None else {"winner_aspects": aspects}
    if held is not None:
        extra["held_out"] = held
    if result.draft is not None:
        extra["draft"] = {**result.draft, "measured": drafting.counter.nfe_by_problem[b],
                          "regeneration_measured": measured[0] - drafting.counter.nfe_by_problem[b]}
    return {
        "algorithm": strategy.name,
        "settings": {**settings, **{k: v for k, v in strategy.settings.items() if _plain(v)},
                     "sampler": sampler_name(backend.sampler), "batch_size": backend.chunk},
        "best": {"id": result.best_id, "score": result.best_score},
        "top": [{"id": i, "score": s, **({"search_score": ss} if result.search_scores else {})}
                for i, s, ss in zip(result.top_ids, result.top_scores, result.search_scores or result.top_scores)],
        "top_scores": result.top_scores,
        "replay": replay_rule(strategy, result, backend, noise_source, b),
        "nfe": {"search_total": result.nfe, "planned": result.planned_nfe,
                "measured": measured[0], "forward_passes": measured[1], "budget": strategy.budget or None,
                "stopped_by_budget": result.stopped_by_budget},
        "selection": result.selection,
        "rounds": result.rounds,
        "candidates": result.candidates,
        "verifier": getattr(backend.scorer.verifier, "name", type(backend.scorer.verifier).__name__),
        # A rank ensemble's scores are ranks among the candidates compared; entries then hold each
        # candidate's member scores ("members") and the report the weights, so searches can be merged.
        "relative": backend.relative,
        **({"weights": getattr(backend.scorer.verifier, "weights", None)} if backend.relative else {}),
        "condition": backend.scorer.condition_of(b),
        **({"frames_scored": backend.scorer.frames_read(backend.scorer.decoded_frames(result.best))}
           if result.best.ndim == 5 else {}),
        **extra,
    }


def build_report(strategy: Strategy, reports: list[dict], backend: ComfyBackend, settings: dict,
                 elapsed: float, drafting: ComfyBackend | None = None) -> dict:
    """A batch of one: that problem's report with the timings. A batch of B > 1: the shared
    settings, totals and timings, and every problem's report under ``problems`` (in batch
    order, each with its ``problem`` index)."""
    timings = {"total_s": round(elapsed, 4),
               **{k + "_s": round(v, 4) for k, v in {**backend.timings, **backend.scorer.timings}.items()}}
    if drafting is not None:
        timings.update({"draft_" + k + "_s": round(v, 4) for k, v in drafting.timings.items()})
    if len(reports) == 1:
        return {**reports[0], "timings": timings}
    return {
        "algorithm": strategy.name,
        "batch": len(reports),
        "settings": {**reports[0]["settings"], "problems": len(reports)},
        "nfe": {"search_total": sum(r["nfe"]["search_total"] for r in reports),
                "planned": sum(r["nfe"]["planned"] for r in reports),
                "measured": sum(r["nfe"]["measured"] for r in reports),
                "forward_passes": sum(r["nfe"]["forward_passes"] for r in reports),
                "budget_per_problem": strategy.budget or None,
                "stopped_by_budget": sum(bool(r["nfe"]["stopped_by_budget"]) for r in reports)},
        "timings": timings,
        "verifier": reports[0]["verifier"],
        "problems": [{"problem": b, **r} for b, r in enumerate(reports)],
    }


STOCK = "the same model, conditioning, cfg, sampler, scheduler, steps and denoise"


def replay_rule(strategy: Strategy, result, backend: ComfyBackend, noise_source, b: int = 0) -> dict:
    """How to regenerate problem ``b``'s winner with stock nodes, from what the result says of it:
    ``best_noise`` None (not one noise's sample), ``seeded`` (the stock noise of its id)."""
    if result.best_noise is None:
        return {"how": f"not replayable from one noise: {strategy.display_name} injects noise along the trajectory"}
    seed = step_seed(backend.seed, result.best_id)
    # Only NoiseCandidates (and the KSampler-style nodes) give candidate i the stock noise at seed + i.
    seeded = bool(getattr(noise_source, "per_candidate_seed", False) and result.seeded)
    problems = backend.problems
    rule = {"seed": seed, "candidate": result.best_id}
    if problems == 1:
        rule["with_noise"] = ("SamplerCustomAdvanced with the replay_noise output, on a latent of batch size 1, "
                              "with the same guider, sampler and sigmas")
        if seeded:
            rule["with_seed"] = (f"a stock KSampler (or RandomNoise + SamplerCustomAdvanced) with seed {seed} on a "
                                 f"latent of batch size 1, with {STOCK}")
    else:
        rule["batch_index"] = b
        rule["with_noise"] = (f"SamplerCustomAdvanced with the replay_noise output on the same latent batch of "
                              f"{problems} (element {b} is this winner) or on its element alone (LatentFromBatch "
                              f"batch_index {b}), with the same guider, sampler and sigmas; exact for deterministic "
                              "samplers (replay_noise carries one seed for the per-step noise of ancestral and SDE "
                              "samplers)")
        if seeded:
            rule["with_seed"] = (f"LatentFromBatch (batch_index {b}, length 1) of the same latent batch, then a stock "
                                 f"KSampler (or RandomNoise + SamplerCustomAdvanced) with seed {seed} and {STOCK} "
                                 f"(for a conditioning batch, its element {b}): exact for every sampler. Element {b} "
                                 f"of a stock KSampler run on the whole batch of {problems} at seed {seed} is the same "
                                 "only for deterministic samplers (ancestral and SDE samplers draw one seed's "
                                 "per-step noise for the whole batch)")
    rule["how"] = rule.get("with_seed", rule["with_noise"])
    return rule


def _plain(v) -> bool:
    return isinstance(v, (int, float, str, bool))


def latent_outputs(latent: dict, results: list) -> tuple[dict, dict]:
    """(best, top): the B winners [B, ...] and every problem's top k, problem-major."""
    best, top = latent.copy(), latent.copy()
    best["samples"] = torch.cat([r.best for r in results])
    top["samples"] = torch.cat([r.top for r in results])
    for d in (best, top):
        for key in ("batch_index", *DOWNSCALE_KEYS):
            d.pop(key, None)
    return best, top


def report_json(report: dict) -> str:
    return json.dumps(report, indent=1)
