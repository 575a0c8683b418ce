"""Search nodes, composed as ComfyUI's custom-sampling nodes are.

- ``SearchRandom`` / ``SearchZeroOrder`` / ``SearchPaths`` build a SEARCH (a strategy with
  its options), as KSamplerSelect builds a SAMPLER;
- ``NoiseSearch`` runs any SEARCH with (noise, guider, sampler, sigmas, latent), as
  SamplerCustomAdvanced runs a SAMPLER;
- ``RandomSearch`` / ``ZeroOrderSearch`` / ``PathSearch`` are KSampler-style drop-ins: they
  build what the stock KSampler builds and run the same core; the ``...Advanced`` nodes are
  kept so saved workflows load and run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import NamedTuple

import comfy.samplers

from ..search import (
    Strategy,
    early_rejection,
    particle_steering,
    path_search,
    random_search,
    tree_search,
    zero_order_search,
)
from ..search.smc import POTENTIALS
from ..verifiers.base import quoted
from .host_compat import io
from .sampling_adapter import CandidateNoise, ksampler_parts
from .search_runner import MAX_PROBLEMS, build_backend, check_latent, latent_outputs, report_json, run_search
from .types import SearchType, VerifierType

CATEGORY = "sampling/noise_search"
MAX_SEED = 0xFFFFFFFFFFFFFFFF
# Most candidates (rows of one batch) a single round may hold: paths x branches of path
# search, and RandomSearch's candidates, are bounded by it before anything is allocated.
MAX_ROWS = 4096
ANGLE_MIN, ANGLE_MAX = 0.01, 179.99


# -- inputs ----------------------------------------------------------------------------
LATENT_TOOLTIP = (f"A latent or a batch of up to {MAX_PROBLEMS}: each latent is searched as its own problem, all "
                  "in one pass (a conditioning batch gives latent b its prompt b, as with KSampler). Outputs "
                  "hold one winner per latent.")


def ksampler_inputs(search_steps_tooltip: str | None = None):
    return [
        io.Model.Input("model", tooltip="The diffusion model whose noises are searched."),
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                     tooltip="Candidate i is the stock KSampler's sample at seed + i (batch size 1; for a "
                             "latent batch, element b of the stock batch at seed + i), with any sampler; later "
                             "random draws of the search derive from it too."),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps of the final sample."),
        io.Int.Input("search_steps", default=0, min=0, max=10000,
                     tooltip=search_steps_tooltip or
                     "Steps while searching (the paper's NFEs/iter); 0 = same as steps. The kept "
                     "candidates are regenerated with the full steps and scored again."),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale."),
        io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES,
                       tooltip="The host's sampler; ancestral and SDE samplers draw each candidate's "
                               "per-step noise from its own seed."),
        io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, tooltip="Noise schedule."),
        io.Conditioning.Input("positive", tooltip="What to generate."),
        io.Conditioning.Input("negative", tooltip="What to avoid."),
        io.Latent.Input("latent_image", tooltip=LATENT_TOOLTIP + " Empty, or an image for img2img; a noise "
                                                                 "mask makes it inpainting."),
        io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Below 1: img2img, searching only the last part of the schedule."),
    ]


def advanced_inputs():
    return [
        io.Noise.Input("noise", tooltip="Source of the candidate noises (NoiseCandidates: candidate i "
                                        "replays at seed + i; RandomNoise: candidate i is batch element i)."),
        io.Guider.Input("guider", tooltip="Model and conditioning (CFGGuider, BasicGuider for FLUX, ...)."),
        io.Sampler.Input("sampler", tooltip="The host's sampler."),
        io.Sigmas.Input("sigmas", tooltip="Schedule of the final sample."),
        io.Latent.Input("latent_image", tooltip=LATENT_TOOLTIP),
    ]


def search_sigmas_input():
    return io.Sigmas.Input("search_sigmas", optional=True,
                           tooltip="Cheaper schedule while searching; the kept candidates are regenerated "
                                   "on sigmas and scored again.")


def verifier_inputs():
    return [
        io.Vae.Input("vae", tooltip="Decodes candidates for the verifier."),
        VerifierType.Input("verifier", tooltip="Scores decoded candidates; higher is better."),
        io.String.Input("condition", default="", multiline=True,
                        tooltip="What the verifier judges against: the prompt text for CLIPScore / "
                                "ImageReward, a class name or index for classifier verifiers. For a latent "
                                "batch, a JSON list gives each latent its own: [\"a cat\", \"a dog\"]."),
        io.Int.Input("budget", default=0, min=0, max=10**9,
                     tooltip="Total NFEs (search + final denoising, per candidate summed), measured "
                             "for the sampler in use; a round that would exceed it is not started. "
                             "0 = no limit."),
        io.Int.Input("top_k", default=1, min=1, max=4096, tooltip="How many best candidates to return."),
        io.Int.Input("batch_size", default=0, min=0, max=4096,
                     tooltip="Candidates per model call; 0 = as many as free memory allows. Halved "
                             "for the rest of the search when memory runs out; results do not depend on it."),
    ]


def segment_inputs():
    # Optional and last, so workflows and API prompts saved without them keep working.
    return [
        io.Int.Input("start_at_step", default=0, min=0, max=10000, optional=True,
                     tooltip="First step of the searched segment, as KSamplerAdvanced's start_at_step."),
        io.Int.Input("end_at_step", default=10000, min=0, max=10000, optional=True,
                     tooltip="Step where the searched segment ends, as KSamplerAdvanced's end_at_step with "
                             "return_with_leftover_noise: below steps, the latents keep their leftover noise "
                             "for a later sampler (a refiner), and candidates are judged by the model's "
                             "x0-prediction there (one NFE each)."),
    ]


def random_inputs():
    return [io.Int.Input("candidates", default=8, min=1, max=MAX_ROWS, tooltip="N: candidate noises to try.")]


def zero_order_inputs():
    return [
        io.Int.Input("neighbours", default=2, min=1, max=1024,
                     tooltip="N: neighbours drawn around the pivot per iteration."),
        io.Int.Input("iterations", default=8, min=1, max=10000, tooltip="K: iterations."),
        io.Float.Input("angle", default=30.0, min=ANGLE_MIN, max=ANGLE_MAX, step=0.01,
                       tooltip="Step size as the angle in degrees between pivot and neighbour on the "
                               "pivot's sphere (neighbours keep the pivot's norm). The paper's lambda "
                               "corresponds to cos(angle); small angles stay local."),
        io.Boolean.Input("restart", default=True,
                         tooltip="When no neighbour beats the pivot, restart from a fresh noise."),
    ]


LEVEL_TOOLTIP = ("as a noise level: t has the signal-to-noise ratio of (1 - t) x0 + t noise, the same "
                 "for every model family (1 = pure noise, 0 = clean)")


def path_inputs():
    return [
        io.Int.Input("paths", default=2, min=1, max=1024, tooltip="N: paths kept after every round."),
        io.Int.Input("branches", default=2, min=1, max=1024, tooltip="M: fresh noises per path per round."),
        io.Float.Input("start", default=0.4, min=0.01, max=0.99, step=0.01,
                       tooltip="Level where the search starts, " + LEVEL_TOOLTIP + "."),
        io.Float.Input("forward", default=0.2, min=0.01, max=0.99, step=0.01,
                       tooltip="delta_f: how far each round re-noises, in the same level units."),
        io.Float.Input("backward", default=0.3, min=0.02, max=1.0, step=0.01,
                       tooltip="delta_b: how far each round denoises; must exceed forward."),
        io.Int.Input("interval_steps", default=4, min=1, max=1000,
                     tooltip="L: solver steps per backward interval."),
    ]


def particle_inputs():
    return [
        io.Int.Input("particles", default=4, min=1, max=MAX_ROWS,
                     tooltip="K: particles advanced together (the cost is K full samples)."),
        io.Combo.Input("potential", options=list(POTENTIALS), default="max",
                       tooltip="How a particle's weight follows the verifier's rewards of its x0-predictions: "
                               "max (best reward of its lineage), sum (of its lineage's rewards), difference "
                               "(the latest change)."),
        io.Float.Input("lmbda", default=10.0, min=0.0, max=10000.0, step=0.1, display_name="lambda",
                       tooltip="lambda in the potential exp(lambda x reward): 0 = plain sampling (no "
                               "steering); larger steers harder and keeps fewer distinct particles."),
        io.Int.Input("interval", default=1, min=1, max=10000,
                     tooltip="Schedule steps between resampling points, where particles are weighted."),
        io.Float.Input("ess_threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="Resample when the effective sample size falls below this fraction of K "
                               "(1 = whenever weights differ, 0 = never)."),
        io.Float.Input("renoise", default=0.1, min=0.0, max=0.99, step=0.01,
                       tooltip="For samplers without per-step noise (euler, dpmpp_2m, ...): how far, " +
                               LEVEL_TOOLTIP.replace("as a noise level", "in noise levels") + ", every "
                               "particle is re-noised before each interval, so copies part ways. Ancestral "
                               "and SDE samplers use their own per-step noise instead."),
    ]


def rejection_inputs():
    return [
        io.Int.Input("candidates", default=16, min=1, max=MAX_ROWS,
                     tooltip="N: candidates started (with a budget: as many as it pays for, at most N)."),
        io.Float.Input("keep", default=0.5, min=0.01, max=1.0, step=0.01,
                       tooltip="Fraction of candidates kept at every level (at least top_k)."),
        io.String.Input("levels", default="0.7, 0.4",
                        tooltip="Noise levels where candidates are judged by their x0-predictions and the rest "
                                "rejected, comma-separated, " + LEVEL_TOOLTIP + "; each is taken at the "
                                "schedule step nearest to it."),
    ]


def tree_inputs():
    return [
        io.Int.Input("rollouts", default=16, min=1, max=100000,
                     tooltip="Rollouts to a clean sample (with a budget: as many as it pays for). A rollout "
                             "that branches off deep in the tree pays only the steps below the branch."),
        io.Int.Input("branches", default=2, min=1, max=1024,
                     tooltip="Most children of a node (the root's children are the first initial noises)."),
        io.Float.Input("lmbda", default=1.0, min=0.0, max=10000.0, step=0.1, display_name="lambda",
                       tooltip="lambda of the soft values, v = 1/lambda log E[exp(lambda reward)] (0: the mean), "
                               "and of the descent's Boltzmann choice when greedy is off."),
        io.Boolean.Input("greedy", default=True,
                         tooltip="On: descend to the child of highest soft value (tree search, DTS*). Off: choose "
                                 "children in proportion to exp(lambda v) (tree sampling, DTS)."),
        io.Int.Input("wave", default=4, min=1, max=MAX_ROWS,
                     tooltip="Rollouts chosen together, whose model calls are batched (values are updated "
                             "between waves)."),
        io.Float.Input("renoise", default=0.1, min=0.0, max=0.99, step=0.01,
                       tooltip="For samplers without per-step noise: how far, in noise levels, a state is "
                               "re-noised before each step so children differ. Ancestral and SDE samplers use "
                               "their own per-step noise instead."),
    ]


def parse_levels(text) -> tuple[float, ...]:
    """The noise levels of a ``levels`` widget: numbers in (0, 1), comma- or space-separated."""
    valid = "give noise levels between 0 and 1 (exclusive), comma-separated, e.g. \"0.7, 0.4\""
    if not isinstance(text, str):
        raise ValueError(f"levels must be text; {valid}")
    items = [t for t in text.replace(",", " ").split() if t]
    try:
        levels = tuple(float(t) for t in items)
    except ValueError:
        raise ValueError(f"levels {quoted(text)} is not a list of numbers; {valid}") from None
    if not levels:
        raise ValueError(f"levels is empty; {valid}")
    if len(levels) > 64:
        raise ValueError(f"levels: {len(levels)} levels given, at most 64")
    bad = [t for t in levels if not 0.0 < t < 1.0]
    if bad:
        raise ValueError(f"levels: {bad[0]} is outside (0, 1); {valid}")
    return levels


# -- strategies ------------------------------------------------------------------------
def random_strategy(candidates) -> Strategy:
    return Strategy("random", random_search, candidates, "seed", rows=candidates,
                    settings={"candidates": candidates})


def zero_order_strategy(neighbours, iterations, angle, restart) -> Strategy:
    options = {"neighbours": neighbours, "iterations": iterations, "angle": angle, "restart": restart}
    return Strategy("zero_order", zero_order_search, 1, "noise", options, settings=options, rows=neighbours)


def path_strategy(paths, branches, start, forward, backward, interval_steps) -> Strategy:
    ok = validate_paths(start, forward, backward, paths, branches)
    if ok is not True:
        raise ValueError(ok)
    options = {"branches": branches, "start": start, "forward": forward, "backward": backward,
               "interval_steps": interval_steps}
    return Strategy("paths", path_search, paths, "none", options, settings={"paths": paths, **options},
                    rows=paths * branches, uses_search_schedule=False,
                    check=lambda backend: check_path_backend(backend, start, forward))


def particle_strategy(particles, potential, lmbda, interval, ess_threshold, renoise) -> Strategy:
    if potential not in POTENTIALS:
        raise ValueError(f"potential {quoted(potential)} is not one of: {', '.join(POTENTIALS)}")
    options = {"potential": potential, "lmbda": lmbda, "interval": interval, "ess_threshold": ess_threshold,
               "renoise": renoise}
    return Strategy("particles", particle_steering, particles, "none", options,
                    settings={"particles": particles, **options}, rows=particles, uses_search_schedule=False,
                    check=lambda backend: check_trajectory_backend(backend, "particle steering"))


def rejection_strategy(candidates, keep, levels) -> Strategy:
    parsed = parse_levels(levels)
    return Strategy("rejection", early_rejection, candidates, "seed", {"keep": keep, "levels": parsed},
                    settings={"candidates": candidates, "keep": keep, "levels": ", ".join(map(str, parsed))},
                    rows=candidates, uses_search_schedule=False,
                    check=lambda backend: check_trajectory_backend(backend, "early rejection"))


def tree_strategy(rollouts, branches, lmbda, greedy, wave, renoise) -> Strategy:
    options = {"rollouts": rollouts, "branches": branches, "lmbda": lmbda, "greedy": greedy, "wave": wave,
               "renoise": renoise}
    return Strategy("tree", tree_search, branches, "none", options, settings=options, rows=wave,
                    uses_search_schedule=False,
                    check=lambda backend: check_trajectory_backend(backend, "diffusion tree search"))


class Options(NamedTuple):
    inputs: Callable[[], list]
    strategy: Callable[..., Strategy]

    def build(self, values: dict) -> Strategy:
        return self.strategy(**{i.id: values[i.id] for i in self.inputs()})


RANDOM = Options(random_inputs, random_strategy)
ZERO_ORDER = Options(zero_order_inputs, zero_order_strategy)
PATHS = Options(path_inputs, path_strategy)
PARTICLES = Options(particle_inputs, particle_strategy)
REJECTION = Options(rejection_inputs, rejection_strategy)
TREE = Options(tree_inputs, tree_strategy)


def validate_paths(start, forward, backward, paths, branches) -> bool | str:
    """The rules that relate path search's inputs (each input's own range is the schema's)."""
    if paths * branches > MAX_ROWS:
        return (f"paths x branches ({paths} x {branches} = {paths * branches}) candidates per round exceeds "
                f"{MAX_ROWS}; lower paths or branches")
    if backward <= forward:
        return f"backward ({backward}) must be greater than forward ({forward}) so every round moves toward clean"
    if start + forward > 1.0:
        return (f"start + forward ({start} + {forward}) exceeds 1, the noisiest level; lower start or forward")
    return True


def check_trajectory_backend(backend, name: str) -> None:
    """What a search that judges and continues trajectories midway cannot run on."""
    if float(backend.sigmas[-1]) > 0:
        raise ValueError(f"sigmas: {name} runs to the end of the schedule (sigma 0); searching a segment "
                         "that hands leftover noise on works with random and zero-order search")
    if backend.mask is not None:
        raise ValueError(f"latent_image: {name} does not support noise masks (inpainting); "
                         "use RandomSearch or ZeroOrderSearch")
    if backend.scorer.early_level is not None:
        raise ValueError(f"verifier: this verifier compares against an early x0-prediction of a full "
                         f"trajectory, which {name} does not run; use it with RandomSearch or ZeroOrderSearch")


def check_path_backend(backend, start: float, forward: float) -> None:
    check_trajectory_backend(backend, "path search")
    top = float(backend.sigmas[0])
    if backend.level_sigma(start + forward) > top * (1 + 1e-4):
        raise ValueError(f"start + forward ({start + forward:.2f}) re-noises above where this run starts "
                         f"(sigma {top:.3g}, e.g. because denoise < 1); lower start or forward")


# -- outputs ---------------------------------------------------------------------------
# Output id -> (socket type, display name, tooltip). Ids and display names are those the first
# release saved, so links in saved workflows keep their meaning.
OUTPUTS = {
    "best": (io.Latent, "best", "The winning latent, fully denoised (a latent batch: one winner per latent)."),
    "top": (io.Latent, "top_k", "The best top_k latents, best first (a latent batch: each latent's top_k in "
                                "turn)."),
    "scores": (io.String, "scores", "JSON list of the returned top_k latents' scores, in their order."),
    "best_score": (io.Float, "best_score", "The returned winner's verifier score (a latent batch: latent 0's)."),
    "replay_noise": (io.Noise, "replay_noise",
                     "Regenerates the winner with SamplerCustomAdvanced (same guider, sampler, sigmas; batch "
                     "size 1), per-step noise of ancestral/SDE samplers included. A latent batch: every winner "
                     "on the same batch (deterministic samplers)."),
    "replay_seed": (io.Int, "seed", "Seed at which a stock KSampler (batch size 1, same settings) gives the "
                                    "winner: seed + the winner's candidate id. For a latent batch: the first "
                                    "latent's winner (every latent's seed is in the report)."),
    "replay_index": (io.Int, "batch_index", "Always 0: the winner is the first (only) element of a batch of one "
                                            "at `seed`. Kept so saved replay graphs (LatentFromBatch) still work."),
    "report": (io.String, "report",
               "JSON search report: every candidate's score, NFEs planned/measured, rounds, replay rule, "
               "timings, settings. Also embedded in images saved downstream when the client sends "
               "extra_pnginfo (the editor does)."),
}
EXECUTOR_OUTPUTS = ("best", "top", "scores", "best_score", "replay_noise", "replay_seed", "report")
HIDDEN = [io.Hidden.unique_id, io.Hidden.extra_pnginfo]


def outputs(*names):
    return [OUTPUTS[n][0].Output(n, display_name=OUTPUTS[n][1], tooltip=OUTPUTS[n][2]) for n in names]


# -- checks ----------------------------------------------------------------------------
def _check(name, value, lo, hi):
    if value is None:
        return None
    # `not (lo <= v <= hi)` is also true for NaN, which JSON (and so the API) can carry.
    if not (lo <= value <= hi):
        return f"{name} must be between {lo} and {hi}, got {value}"
    return None


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
                raise ValueError(f"{inp.id} must be a number between {lo} and {hi}, got {quoted(value)}")
            msg = _check(inp.id, value, lo, hi)
            if msg:
                raise ValueError(msg)
        elif isinstance(inp, io.Combo.Input) and inp.options and value not in inp.options:
            shown = ", ".join(map(str, inp.options[:12])) + (f", ... ({len(inp.options)} in all)"
                                                             if len(inp.options) > 12 else "")
            raise ValueError(f"{inp.id} {quoted(value)} is not one of: {shown}")


def check_rows(count: int, latent: dict) -> None:
    """Refuse a round whose noises alone would not fit in memory, before allocating (``count``:
    candidates of one round, over all problems of a latent batch)."""
    samples = latent["samples"]
    if getattr(samples, "is_nested", False):
        return
    need = count * samples[:1].numel() * 4  # float32 noise per candidate
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 (estimate only)
        return
    if need > available // 2:
        raise ValueError(f"search: {count} candidates per round of this latent need {need / 2**30:.1f} GiB for "
                         f"their noises alone, more than half the free memory ({available / 2**30:.1f} GiB); "
                         f"use fewer candidates or a smaller image")


# -- the core every search node runs -----------------------------------------------------
def search(cls, strategy: Strategy, values: dict, noise, guider, sampler, sigmas, search_sigmas=None,
           settings: dict | None = None) -> dict:
    """Run ``strategy`` with the node's values on every latent of the batch; returns every output
    by name, and the UI state. With a batch of B: ``best`` holds the B winners, ``top`` each
    problem's top k in turn (problem-major), ``scores`` their scores in that order; the scalar
    outputs (best_score, seed, batch_index) describe the first problem's winner."""
    latent = values["latent_image"]
    check_latent(latent)
    check_rows(strategy.rows * latent["samples"].shape[0], latent)
    backend = build_backend(strategy, noise, guider, sampler, sigmas, latent, values["vae"],
                            values["verifier"], values["condition"], values["batch_size"], search_sigmas)
    if strategy.check is not None:
        strategy.check(backend)
    results, report, reports, state, replay = run_search(
        strategy, backend, noise, budget=values["budget"], top_k=values["top_k"],
        settings={"seed": backend.seed, "top_k": values["top_k"], **(settings or {})},
        node_id=cls.hidden.unique_id, extra_pnginfo=cls.hidden.extra_pnginfo)
    best, top = latent_outputs(latent, results)
    return {"best": best, "top": top, "scores": json.dumps([s for r in results for s in r.top_scores]),
            "best_score": results[0].best_score,
            "replay_noise": replay if replay is not None else NoReplayNoise(),
            "replay_seed": reports[0]["replay"].get("seed", -1), "replay_index": 0, "report": report_json(report),
            "ui": {"noise_search": [state]}}


def respond(cls, found: dict) -> io.NodeOutput:
    names = [o.id for o in cls.define_schema().outputs]
    return io.NodeOutput(*[found[n] for n in names], ui=found["ui"])


def run_ksampler_style(cls, options: Options, values: dict) -> io.NodeOutput:
    check_values(cls, values)
    strategy = options.build(values)
    segment = {k: values[k] for k in ("start_at_step", "end_at_step") if values.get(k) is not None}
    parts = ksampler_parts(*(values[k] for k in ("model", "seed", "steps", "search_steps", "cfg", "sampler_name",
                                                 "scheduler", "positive", "negative", "denoise")), **segment)
    settings = {k: values[k] for k in ("steps", "search_steps", "cfg", "sampler_name", "scheduler", "denoise")}
    settings.update(segment)
    return respond(cls, search(cls, strategy, values, *parts, settings=settings))


def run_custom(cls, strategy: Strategy | Options, values: dict) -> io.NodeOutput:
    check_values(cls, values)
    if isinstance(strategy, Options):
        strategy = strategy.build(values)
    return respond(cls, search(cls, strategy, values, values["noise"], values["guider"], values["sampler"],
                               values["sigmas"], values.get("search_sigmas")))


class NoReplayNoise:
    """What NoiseSearch's replay_noise gives for a strategy whose winners cannot be replayed."""

    seed = 0

    def generate_noise(self, input_latent):
        raise ValueError("replay_noise: this search's winner cannot be replayed from one noise (path search "
                         "injects noise along the trajectory); use the search's best output instead")


# -- nodes -----------------------------------------------------------------------------
def schema(node_id, display_name, description, inputs, output_names, hidden=True):
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=inputs, outputs=outputs(*output_names), hidden=HIDDEN if hidden else [])


class NoiseCandidates(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NoiseCandidates", display_name="Noise Candidates", category=CATEGORY,
            description="Seeded candidate noises: noise i is the stock KSampler's noise at seed + i, so search "
                        "winners replay with a KSampler at that seed. With a batch-1 latent, "
                        "SamplerCustomAdvanced samples all `count` candidates at once.",
            inputs=[io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                                 tooltip="Candidate i is the stock noise at seed + i (batch size 1)."),
                    io.Int.Input("count", default=8, min=1, max=MAX_ROWS,
                                 tooltip="Noises given to SamplerCustomAdvanced on a batch-1 latent. A search "
                                         "node draws as many candidates as its SEARCH asks for.")],
            outputs=[io.Noise.Output(tooltip="The candidate noises.")],
        )

    @classmethod
    def execute(cls, seed, count) -> io.NodeOutput:
        check_values(cls, {"seed": seed, "count": count})
        return io.NodeOutput(CandidateNoise(seed, count))


def search_output():
    return SearchType.Output(display_name="search", tooltip="The strategy and its options: connect it to a "
                                                            "Noise Search (Custom) node.")


class _SearchOptionsNode(io.ComfyNode):
    """A node that builds a SEARCH from its widgets (as KSamplerSelect builds a SAMPLER)."""

    OPTIONS: Options
    NODE: tuple[str, str, str]  # node id, display name, description

    @classmethod
    def define_schema(cls):
        node_id, display_name, description = cls.NODE
        return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                         inputs=cls.OPTIONS.inputs(), outputs=[search_output()])

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        check_values(cls, values)
        return io.NodeOutput(cls.OPTIONS.build(values))


class SearchRandom(_SearchOptionsNode):
    OPTIONS = RANDOM
    NODE = ("SearchRandom", "Search: Random (best-of-N)", "Random search: N candidate noises, keep the best.")


class SearchZeroOrder(_SearchOptionsNode):
    OPTIONS = ZERO_ORDER
    NODE = ("SearchZeroOrder", "Search: Zero-Order",
            "Zero-order search: move a pivot noise to its best neighbour, K times.")


class SearchPaths(_SearchOptionsNode):
    OPTIONS = PATHS
    NODE = ("SearchPaths", "Search: Paths", "Search over paths: branch, re-noise, denoise, keep the best N.")


class SearchParticles(_SearchOptionsNode):
    OPTIONS = PARTICLES
    NODE = ("SearchParticles", "Search: Particle Steering (FK)",
            "Feynman-Kac steering: K particles sampled together, weighted by the verifier's rewards of their "
            "x0-predictions and resampled along the way; keep the best at the end.")


class SearchEarlyRejection(_SearchOptionsNode):
    OPTIONS = REJECTION
    NODE = ("SearchEarlyRejection", "Search: Early Rejection",
            "Successive halving: start N candidates, judge their x0-predictions at a few noise levels, keep "
            "the best fraction each time, finish only the survivors.")


class SearchTree(_SearchOptionsNode):
    OPTIONS = TREE
    NODE = ("SearchTree", "Search: Diffusion Tree",
            "Diffusion tree search: the denoising chain as a tree of stochastic steps; rollouts descend by "
            "soft values backed up from the verifier's rewards, branch, and finish to clean samples.")


class NoiseSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("NoiseSearch", "Noise Search (Custom)",
                      "Runs any SEARCH (random, zero-order, paths, particles, early rejection, tree) with SamplerCustomAdvanced's parts: "
                      "candidates are denoised by the host's guider and sampler and scored by the verifier.",
                      advanced_inputs() + [SearchType.Input("search", tooltip="What to search and how "
                                                                             "(Search: ... nodes)."),
                                           search_sigmas_input()] + verifier_inputs(),
                      EXECUTOR_OUTPUTS)

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return run_custom(cls, values["search"], values)


class RandomSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("RandomSearch", "Random Search (best-of-N)",
                      "Samples N candidate noises with the host's sampler, scores each decoded candidate with "
                      "the verifier, and keeps the best (the paper's random search).",
                      ksampler_inputs() + random_inputs() + verifier_inputs() + segment_inputs(),
                      ("best", "top", "scores", "best_score", "replay_noise", "replay_seed", "replay_index",
                       "report"))

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return run_ksampler_style(cls, RANDOM, values)


class ZeroOrderSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("ZeroOrderSearch", "Zero-Order Search",
                      "Moves a pivot noise to its best-scoring neighbour, K times (the paper's ZO-N).",
                      ksampler_inputs() + zero_order_inputs() + verifier_inputs() + segment_inputs(),
                      ("best", "top", "scores", "best_score", "replay_noise", "report"))

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return run_ksampler_style(cls, ZERO_ORDER, values)


PATH_SEARCH_STEPS = ("Not used by path search (it searches on the full schedule: noise is injected along the "
                     "way, so nothing can be regenerated); must be 0. Kept so saved workflows load.")
FULL_SCHEDULE_STEPS = "Must be 0: {name} searches on the full schedule (its trajectories are judged midway)."


class PathSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("PathSearch", "Path Search",
                      "Search over sampling paths: branch, re-noise, denoise, score x0-predictions, keep the best N.",
                      ksampler_inputs(PATH_SEARCH_STEPS) + path_inputs() + verifier_inputs(),
                      ("best", "top", "scores", "best_score", "report"))

    @classmethod
    def validate_inputs(cls, search_steps=None):
        # Only search_steps is named here: ComfyUI reports a validate_inputs failure under every
        # input it names, and skips its own range check for them. The rules that relate several
        # inputs (start, forward, backward, paths x branches) are checked when the node runs.
        if search_steps:
            return f"search_steps must be 0 for path search, got {search_steps}: " + PATH_SEARCH_STEPS
        return True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        if values["search_steps"]:
            raise ValueError(f"search_steps must be 0 for path search, got {values['search_steps']}")
        return run_ksampler_style(cls, PATHS, values)


def _full_schedule(node_id, display_name, name: str, description: str, options: Options, output_names):
    """A KSampler-style node for a strategy that searches on the full schedule only (its
    trajectories are judged midway): the drop-in's inputs, with search_steps held at 0."""

    class FullSchedule(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return schema(node_id, display_name, description,
                          ksampler_inputs(FULL_SCHEDULE_STEPS.format(name=name)) + options.inputs() + verifier_inputs(),
                          output_names)

        @classmethod
        def validate_inputs(cls, search_steps=None):
            return f"search_steps must be 0 for {name}, got {search_steps}" if search_steps else True

        @classmethod
        def execute(cls, **values) -> io.NodeOutput:
            if values["search_steps"]:
                raise ValueError(f"search_steps must be 0 for {name}, got {values['search_steps']}")
            return run_ksampler_style(cls, options, values)

    FullSchedule.__name__ = FullSchedule.__qualname__ = node_id
    return FullSchedule


ParticleSteering = _full_schedule(
    "ParticleSteering", "Particle Steering (FK)", "particle steering",
    "Feynman-Kac steering (Singhal et al. 2025): K particles sampled together with stochastic steps, weighted by "
    "the verifier's rewards of their x0-predictions (free: the sampler computes them) and resampled when the "
    "weights grow uneven; the best final particle wins.",
    PARTICLES, ("best", "top", "scores", "best_score", "report"))
EarlyRejectionSearch = _full_schedule(
    "EarlyRejectionSearch", "Early Rejection Search", "early rejection",
    "Successive halving: starts N candidate noises, judges their x0-predictions (free: the sampler computes them) "
    "at a few noise levels, keeps the best fraction each time and finishes only the survivors. The winner is the "
    "stock KSampler's sample at its seed.",
    REJECTION, ("best", "top", "scores", "best_score", "replay_noise", "replay_seed", "report"))
DiffusionTreeSearch = _full_schedule(
    "DiffusionTreeSearch", "Diffusion Tree Search", "diffusion tree search",
    "Diffusion tree sampling / search (Jain et al. 2025): rollouts through a tree of stochastic sampler steps, "
    "descending by soft values backed up from the verifier's rewards of finished samples; later rollouts branch "
    "off deep in the tree and pay only the steps below. The best finished sample wins.",
    TREE, ("best", "top", "scores", "best_score", "report"))


def _advanced(node_id, display_name, options: Options, output_names, with_search_sigmas=True):
    """A node of the first release's Advanced family, kept so saved workflows load and run:
    NoiseSearch's core with the options as widgets."""

    class Advanced(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            extra = [search_sigmas_input()] if with_search_sigmas else []
            return schema(node_id, display_name, f"{display_name} for custom-sampling graphs (NOISE, GUIDER, "
                          "SAMPLER, SIGMAS); the same as Noise Search (Custom) with its SEARCH node.",
                          advanced_inputs() + extra + options.inputs() + verifier_inputs(), output_names)

        @classmethod
        def execute(cls, **values) -> io.NodeOutput:
            return run_custom(cls, options, values)

    Advanced.__name__ = Advanced.__qualname__ = node_id
    return Advanced


RandomSearchAdvanced = _advanced("RandomSearchAdvanced", "Random Search (Advanced)", RANDOM,
                                 ("best", "top", "scores", "best_score", "replay_noise", "report"))
ZeroOrderSearchAdvanced = _advanced("ZeroOrderSearchAdvanced", "Zero-Order Search (Advanced)", ZERO_ORDER,
                                    ("best", "top", "scores", "best_score", "replay_noise", "report"))
PathSearchAdvanced = _advanced("PathSearchAdvanced", "Path Search (Advanced)", PATHS,
                               ("best", "top", "scores", "best_score", "report"), with_search_sigmas=False)

SEARCH_NODES = [NoiseCandidates, SearchRandom, SearchZeroOrder, SearchPaths, SearchParticles, SearchEarlyRejection,
                SearchTree, NoiseSearch, RandomSearch, RandomSearchAdvanced, ZeroOrderSearch, ZeroOrderSearchAdvanced,
                PathSearch, PathSearchAdvanced, ParticleSteering, EarlyRejectionSearch, DiffusionTreeSearch]
