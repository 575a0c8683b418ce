"""Search nodes, composed as ComfyUI's custom-sampling nodes are, every one made by ``make_node``.

- ``NoiseCandidates`` builds seeded candidate noises (a NOISE); ``SearchJudge`` builds a JUDGE
  (VAE, verifier, condition), as CFGGuider builds a GUIDER;
- one option node per strategy (``SearchRandom``, ...) builds a SEARCH: the strategy with its
  options, budget, top_k and batch size, as KSamplerSelect builds a SAMPLER;
- ``NoiseSearch`` runs any SEARCH with (noise, guider, sampler, sigmas, latent, judge), as
  SamplerCustomAdvanced runs a SAMPLER;
- one KSampler-style node per strategy (``RandomSearchSampler``, ...): the stock KSampler's
  inputs, the strategy's own, and a JUDGE;
- the nodes of earlier releases (``RandomSearch``, ``PathSearchAdvanced``, ...) are kept,
  deprecated, so saved workflows and API prompts load and run unchanged.

The per-strategy nodes are generated from search/registry.py: ``nodes_for(spec)`` makes a
strategy's nodes, so a strategy registered later gets its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import comfy.samplers

from ..search import registry
from ..search.registry import MAX_ROWS, LegacyNode, Option, StrategySpec, quoted
from ..search.selection import BEST, RULES, Selection
from .host_compat import io
from .sampling_adapter import CandidateNoise, ksampler_parts
from .search_runner import MAX_PROBLEMS, Draft, Judge, search
from .types import DraftType, JudgeType, SearchType, SelectionType, VerifierType

CATEGORY = "sampling/noise_search"
OPTIONS_CATEGORY = CATEGORY + "/searches"
DEPRECATED_CATEGORY = CATEGORY + "/deprecated"
MAX_SEED = 0xFFFFFFFFFFFFFFFF
HIDDEN = [io.Hidden.unique_id, io.Hidden.extra_pnginfo]


# -- inputs ----------------------------------------------------------------------------------------
LATENT_TOOLTIP = (f"A latent or a batch of up to {MAX_PROBLEMS}: each latent is searched as its own problem, all "
                  "in one pass (a conditioning batch gives latent b its prompt b, as with KSampler). Outputs "
                  "hold one winner per latent.")
SEARCH_STEPS_TOOLTIP = ("Steps while searching (the paper's NFEs/iter); 0 = same as steps. The kept candidates are "
                        "regenerated with the full steps and scored again.")


def ksampler_inputs(search_steps_tooltip: str | None = SEARCH_STEPS_TOOLTIP) -> list:
    """The stock KSampler's inputs, with search_steps after steps (None: without search_steps)."""
    search_steps = [] if search_steps_tooltip is None else [
        io.Int.Input("search_steps", default=0, min=0, max=10000, tooltip=search_steps_tooltip)]
    return [
        io.Model.Input("model", tooltip="The diffusion model whose noises are searched."),
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                     tooltip="Candidate i is the stock KSampler's sample at seed + i (batch size 1; for a latent "
                             "batch, latent b's candidate i is LatentFromBatch(b) sampled at seed + i), with any "
                             "sampler; later random draws of the search derive from it too."),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps of the final sample."),
        *search_steps,
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


def custom_sampling_inputs() -> list:
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


def judge_input():
    return JudgeType.Input("judge", tooltip="What judges the candidates: a Search Judge node (VAE, verifier, "
                                            "condition, optional held-out judge).")


def selection_input():
    return SelectionType.Input("selection", optional=True,
                               tooltip="Which final candidate is returned: a Search Selection node (tempered, "
                                       "threshold). Unconnected: the best.")


def draft_input():
    return DraftType.Input("draft", optional=True,
                           tooltip="A cheaper model to generate and judge the candidates with (a Search Draft "
                                   "node); the main model regenerates the draft's finalists from their noises and "
                                   "returns the best. Unconnected: the main model searches.")


def judging_inputs() -> list:
    """The JUDGE's parts as inputs of their own (the Search Judge node; earlier releases' nodes)."""
    return [
        io.Vae.Input("vae", tooltip="Decodes candidates for the verifier."),
        VerifierType.Input("verifier", tooltip="Scores decoded candidates; higher is better."),
        io.String.Input("condition", default="", multiline=True,
                        tooltip="What the verifier judges against: the prompt text for CLIPScore / "
                                "ImageReward, a class name or index for classifier verifiers. For a latent "
                                "batch, a JSON list gives each latent its own: [\"a cat\", \"a dog\"]."),
    ]


def search_settings_inputs() -> list:
    """What every SEARCH carries besides its strategy's options."""
    return [
        io.Int.Input("budget", default=0, min=0, max=10**9,
                     tooltip="Total NFEs (search + final denoising, per candidate summed), measured "
                             "for the sampler in use; a round that would exceed it is not started. "
                             "0 = no limit."),
        io.Int.Input("top_k", default=1, min=1, max=4096, tooltip="How many best candidates to return."),
        io.Int.Input("batch_size", default=0, min=0, max=4096,
                     tooltip="Candidates per model call; 0 = as many as free memory allows. Halved "
                             "for the rest of the search when memory runs out; results do not depend on it."),
    ]


def segment_inputs() -> list:
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


def option_input(o: Option, optional: bool = False):
    """The widget of one strategy option."""
    common = dict(display_name=o.display_name, optional=optional, tooltip=o.tooltip)
    if o.kind == "int":
        return io.Int.Input(o.name, default=o.default, min=o.min, max=o.max, **common)
    if o.kind == "float":
        return io.Float.Input(o.name, default=o.default, min=o.min, max=o.max, step=o.step, **common)
    if o.kind == "bool":
        return io.Boolean.Input(o.name, default=o.default, **common)
    if o.kind == "choice":
        return io.Combo.Input(o.name, options=list(o.choices), default=o.default, **common)
    return io.String.Input(o.name, default=o.default, **common)  # "levels": text


def option_inputs(spec: StrategySpec, legacy: LegacyNode | None = None) -> tuple[list, list]:
    """(the options' inputs, options added after ``legacy`` was saved: optional, to go last)."""
    if legacy is None or legacy.options is None:
        return [option_input(o) for o in spec.options], []
    return ([option_input(spec.option(n)) for n in legacy.options],
            [option_input(o, optional=True) for o in spec.options if o.name not in legacy.options])


# -- outputs ---------------------------------------------------------------------------------------
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
                     "on the same batch (deterministic samplers). Fails, saying why, for a winner that is not "
                     "one noise's sample."),
    "replay_seed": (io.Int, "seed", "Seed at which a stock KSampler (batch size 1, same settings) gives the "
                                    "winner: seed + the winner's candidate id (-1: not replayable from one "
                                    "noise). For a latent batch: the first latent's winner, sampled on "
                                    "LatentFromBatch(0) (every latent's seed is in the report)."),
    "replay_index": (io.Int, "batch_index", "Always 0: the winner is the first (only) element of a batch of one "
                                            "at `seed`. Kept so saved replay graphs (LatentFromBatch) still work."),
    "report": (io.String, "report",
               "JSON search report: every candidate's score, NFEs planned/measured, rounds, replay rule, "
               "timings, settings. Also embedded in images saved downstream when the client sends "
               "extra_pnginfo (the editor does)."),
    "judged": (io.String, "judged",
               "JSON: the searched verifier's score of the winner and, with a held-out judge (Search Judge's "
               "held_out), both verifiers' scores of the winner and of the unsearched sample at the seed, side by "
               "side: did search improve what the judge measures, or only what it searched on?"),
}
SEARCH_OUTPUTS = ("best", "top", "scores", "best_score", "replay_noise", "replay_seed", "report", "judged")


def outputs(names) -> list:
    return [OUTPUTS[n][0].Output(n, display_name=OUTPUTS[n][1], tooltip=OUTPUTS[n][2]) for n in names]


def respond(cls, found: dict) -> io.NodeOutput:
    names = [o.id for o in cls.define_schema().outputs]
    return io.NodeOutput(*[found[n] for n in names], ui=found["ui"])


# -- checks ----------------------------------------------------------------------------------------
def check_values(cls, values: dict, skip=()) -> None:
    """Check every number and choice of the node's own inputs again when the node runs (a
    strategy's options are its spec's to check: ``skip`` them).

    ComfyUI range-checks widget values at validation, but a value linked from another node
    (a primitive, a math node) arrives unchecked, and validation sees it only as None: a
    linked candidates=10**9 would otherwise be allocated. Raises ValueError naming the input
    and its valid range."""
    for inp in cls.define_schema().inputs:
        value = values.get(inp.id)
        if value is None or inp.id in skip:
            continue
        if isinstance(inp, (io.Int.Input, io.Float.Input)):
            lo = inp.min if inp.min is not None else -math.inf
            hi = inp.max if inp.max is not None else math.inf
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{inp.id} must be a number between {lo} and {hi}, got {quoted(value)}")
            if not lo <= value <= hi:  # also true for NaN, which JSON (and so the API) can carry
                raise ValueError(f"{inp.id} must be between {lo} and {hi}, got {value}")
        elif isinstance(inp, io.Combo.Input) and inp.options and value not in inp.options:
            shown = ", ".join(map(str, inp.options[:12])) + (f", ... ({len(inp.options)} in all)"
                                                             if len(inp.options) > 12 else "")
            raise ValueError(f"{inp.id} {quoted(value)} is not one of: {shown}")


def options_of(spec: StrategySpec) -> set[str]:
    return {o.name for o in spec.options}


def configured(spec: StrategySpec, values: dict, search_sigmas=None):
    """The SEARCH a node's values describe (its options checked by the spec; search settings not
    given take their defaults)."""
    selection = values.get("selection")
    if selection is not None and not isinstance(selection, Selection):
        raise ValueError("selection: connect a SEARCH_SELECTION from a Search Selection node, or leave it unconnected")
    return spec.configure(values, budget=values.get("budget") or 0, top_k=values.get("top_k") or 1,
                          batch_size=values.get("batch_size") or 0, search_sigmas=search_sigmas,
                          selection=selection or BEST)


def draft_of(values: dict) -> Draft | None:
    draft = values.get("draft")
    if draft is not None and not isinstance(draft, Draft):
        raise ValueError("draft: connect a SEARCH_DRAFT from a Search Draft node, or leave it unconnected")
    return draft


# -- the one node factory ----------------------------------------------------------------------------
def make_node(node_id: str, schema: Callable[[], io.Schema], run: Callable[[type, dict], io.NodeOutput],
              validate: Callable | None = None) -> type[io.ComfyNode]:
    """A V3 node class: ``schema()`` its schema, ``run(cls, values)`` its execution, and an optional
    ``validate(cls, **named inputs)`` (ComfyUI reports a failure under every input it names and
    skips its own range checks for them: name only what it checks)."""
    attrs = {"__module__": __name__, "__doc__": None,
             "define_schema": classmethod(lambda cls: schema()),
             "execute": classmethod(lambda cls, **values: run(cls, values))}
    if validate is not None:
        attrs["validate_inputs"] = classmethod(validate)
    return type(node_id, (io.ComfyNode,), attrs)


def node_schema(node_id, display_name, description, inputs, output_names=SEARCH_OUTPUTS, category=CATEGORY,
                deprecated=False) -> io.Schema:
    """A search node's schema: its outputs by name, the hidden inputs the report needs."""
    return io.Schema(node_id=node_id, display_name=display_name, category=category, description=description,
                     inputs=inputs, outputs=outputs(output_names), hidden=HIDDEN, is_deprecated=deprecated)


def part_schema(node_id, display_name, description, inputs, output, category=CATEGORY) -> io.Schema:
    """The schema of a node that builds one part of a search (a NOISE, a JUDGE, a SEARCH)."""
    return io.Schema(node_id=node_id, display_name=display_name, category=category, description=description,
                     inputs=inputs, outputs=[output])


# -- the nodes every strategy shares ------------------------------------------------------------------
def _noise_candidates_schema():
    seed = io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                        tooltip="Candidate i is the stock noise at seed + i (batch size 1).")
    count = io.Int.Input("count", default=8, min=1, max=MAX_ROWS,
                         tooltip="Noises given to SamplerCustomAdvanced on a batch-1 latent. A search node draws "
                                 "as many candidates as its SEARCH asks for.")
    return part_schema(
        "NoiseCandidates", "Noise Candidates",
        "Seeded candidate noises: noise i is the stock KSampler's noise at seed + i, so search winners replay with a "
        "KSampler at that seed. Use it as Noise Search's noise (instead of RandomNoise) when winners should replay "
        "with stock nodes. With a batch-1 latent, SamplerCustomAdvanced samples all `count` candidates at once.",
        [seed, count], io.Noise.Output(tooltip="The candidate noises."))


def _noise_candidates(cls, values):
    check_values(cls, values)
    return io.NodeOutput(CandidateNoise(values["seed"], values["count"]))


def _judge_schema():
    return part_schema(
        "SearchJudge", "Search Judge",
        "What judges a search's candidates, as one JUDGE: the VAE that decodes them, the verifier that scores them "
        "(higher is better) and what it judges against, as a GUIDER bundles model and conditioning. Use one for "
        "every search node's judge input; one judge can serve several searches.",
        [*judging_inputs(),
         VerifierType.Input("held_out", optional=True,
                            tooltip="Optional held-out judge: a second verifier that is never searched on. It "
                                    "scores the winner and the unsearched sample at the seed (one extra sample "
                                    "where the search did not make it, counted), shown beside the searched "
                                    "verifier's scores in the report, the judged output and the live view.")],
        JudgeType.Output(display_name="judge", tooltip="Connect it to a search node's judge input."))


def _judge(cls, values):
    return io.NodeOutput(Judge(values["vae"], values["verifier"], values["condition"], values.get("held_out")))


def _selection_schema():
    return part_schema(
        "SearchSelection", "Search Selection",
        "Which final candidate a search returns. best: the highest score (the default when unconnected). tempered: "
        "drawn in proportion to exp(lambda x score) among the final candidates (seeded): a sample of the "
        "reward-tilted distribution, trading verifier score for fidelity and variety (lambda 0: no search; very "
        "large: best). threshold: stop at the first candidate scoring at least `threshold` (saves NFEs; Random, "
        "Zero-Order and Tree search). Connect it to a search options node or a search sampler node.",
        [io.Combo.Input("rule", options=list(RULES), default="best", tooltip="best, tempered or threshold."),
         io.Float.Input("lambda_", display_name="lambda", default=1.0, min=0.0, max=1e6, step=0.01,
                        tooltip="tempered: inverse temperature on the verifier's score scale (0 = uniform among "
                                "the final candidates)."),
         io.Float.Input("threshold", default=0.0, min=-1e9, max=1e9, step=0.01,
                        tooltip="threshold: the verifier score at which the search stops.")],
        SelectionType.Output(display_name="selection", tooltip="Connect it to a search node's selection input."))


def _selection(cls, values):
    check_values(cls, values)
    rule = values["rule"]
    return io.NodeOutput(Selection(rule, lmbda=values["lambda_"] if rule == "tempered" else Selection.lmbda,
                                   threshold=values["threshold"] if rule == "threshold" else None))


def _draft_schema():
    return part_schema(
        "SearchDraft", "Search Draft",
        "A cheaper model to search with: candidates are generated and judged with it, and its `rescored` best are "
        "regenerated by the main model from the same noises and ranked by the main model's samples (the report "
        "gives the draft's rank agreement with the main model on them, Spearman). Use the main model through "
        "EasyCache or LazyCache, or a distilled LoRA of it; for the same model at fewer steps, use search_steps "
        "instead. For Random, Zero-Order and Early Rejection search (their winners are one noise's samples).",
        [io.Model.Input("model", tooltip="The draft model: of the main model's family (the same latents)."),
         io.Int.Input("rescored", default=4, min=1, max=MAX_ROWS,
                      tooltip="Finalists of the draft search the main model regenerates and ranks (at least "
                              "top_k); each costs one full sample of the main model.")],
        DraftType.Output(display_name="draft", tooltip="Connect it to a search node's draft input."))


def _draft(cls, values):
    check_values(cls, values)
    return io.NodeOutput(Draft(values["model"], values["rescored"]))


def _noise_search_schema():
    searches = ", ".join(s.display_name for s in registry.specs())
    return node_schema(
        "NoiseSearch", "Noise Search (Custom)",
        "Runs any SEARCH with SamplerCustomAdvanced's parts: candidates are denoised by the host's guider and "
        "sampler and judged by the JUDGE. Use it for custom-sampling graphs (FLUX's BasicGuider, SplitSigmas "
        f"segments, any NOISE) or to switch strategies by swapping one node. Searches: {searches}.",
        [*custom_sampling_inputs(),
         SearchType.Input("search", tooltip="What to search and how: a search options node (Random Search "
                                            "Options, ...)."),
         judge_input(), draft_input()])


def _noise_search(cls, values):
    strategy, judge = values["search"], values["judge"]
    if not callable(getattr(strategy, "run", None)):
        raise ValueError("search: connect a SEARCH from a search options node")
    if not (hasattr(judge, "vae") and hasattr(judge, "verifier")):
        raise ValueError("judge: connect a JUDGE from a Search Judge node")
    return respond(cls, search(strategy, judge, *(values[k] for k in ("noise", "guider", "sampler", "sigmas",
                                                                      "latent_image")),
                               draft=draft_of(values), node_id=cls.hidden.unique_id,
                               extra_pnginfo=cls.hidden.extra_pnginfo))


NoiseCandidates = make_node("NoiseCandidates", _noise_candidates_schema, _noise_candidates)
SearchJudge = make_node("SearchJudge", _judge_schema, _judge)
SearchSelection = make_node("SearchSelection", _selection_schema, _selection)
SearchDraft = make_node("SearchDraft", _draft_schema, _draft)
NoiseSearch = make_node("NoiseSearch", _noise_search_schema, _noise_search)


# -- the nodes of one strategy -------------------------------------------------------------------------
KSAMPLER_SETTINGS = ("steps", "search_steps", "cfg", "sampler_name", "scheduler", "denoise")


def run_ksampler_style(cls, spec: StrategySpec, values: dict, judge: Judge) -> io.NodeOutput:
    """The KSampler-style core: what the stock KSampler builds from its widgets, searched."""
    check_values(cls, values, skip=options_of(spec))
    segment = {k: values[k] for k in ("start_at_step", "end_at_step") if values.get(k) is not None}
    noise, guider, sampler, sigmas, search_sigmas = ksampler_parts(
        values["model"], values["seed"], values["steps"], values.get("search_steps") or 0, values["cfg"],
        values["sampler_name"], values["scheduler"], values["positive"], values["negative"], values["denoise"],
        **segment)
    strategy = configured(spec, values, search_sigmas)
    settings = {k: values[k] for k in KSAMPLER_SETTINGS if k in values}
    settings.update(segment)
    return respond(cls, search(strategy, judge, noise, guider, sampler, sigmas, values["latent_image"],
                               draft=draft_of(values), settings=settings, node_id=cls.hidden.unique_id,
                               extra_pnginfo=cls.hidden.extra_pnginfo))


def option_node(spec: StrategySpec) -> type[io.ComfyNode]:
    """The node that builds the strategy's SEARCH (for Noise Search)."""
    schedule = [] if spec.full_schedule else [search_sigmas_input()]

    def schema():
        return part_schema(
            spec.option_node, f"{spec.display_name} Options",
            f"{spec.display_name} as a SEARCH for Noise Search, with its budget, top_k and batch size. "
            f"{spec.description}",
            [*[option_input(o) for o in spec.options], *search_settings_inputs(), *schedule, selection_input()],
            SearchType.Output(display_name="search", tooltip="The strategy and its settings: connect it to a Noise "
                                                             "Search node."), category=OPTIONS_CATEGORY)

    def run(cls, values):
        check_values(cls, values, skip=options_of(spec))
        return io.NodeOutput(configured(spec, values, values.get("search_sigmas")))

    return make_node(spec.option_node, schema, run)


def sampler_node(spec: StrategySpec) -> type[io.ComfyNode]:
    """The strategy's KSampler-style node: the stock KSampler's inputs, its own, and a JUDGE."""
    def schema():
        return node_schema(
            spec.sampler_node, spec.display_name,
            f"{spec.description} A drop-in for KSampler: its inputs, the strategy's own and the search settings; "
            "judging comes in as one JUDGE (Search Judge).",
            [*ksampler_inputs(None if spec.full_schedule else SEARCH_STEPS_TOOLTIP), judge_input(),
             *[option_input(o) for o in spec.options], *search_settings_inputs(), selection_input(), draft_input()])

    def run(cls, values):
        return run_ksampler_style(cls, spec, values, values["judge"])

    return make_node(spec.sampler_node, schema, run)


def legacy_node(spec: StrategySpec, legacy: LegacyNode) -> type[io.ComfyNode]:
    """A node of an earlier release, deprecated: its inputs in their saved order (options added
    since go last, optional), judging as inputs of its own, its outputs as saved."""
    description = (f"Deprecated: {legacy.display_name} of an earlier release, kept so saved workflows load and "
                   f"run. Use {spec.display_name} (judging as one Search Judge input), or Noise Search with "
                   f"{spec.display_name} Options.")
    options, later = option_inputs(spec, legacy)
    judging = [*judging_inputs(), *search_settings_inputs()]
    if legacy.family == "advanced":
        schedule = [] if spec.full_schedule else [search_sigmas_input()]
        inputs = [*custom_sampling_inputs(), *schedule, *options, *judging, *later]
    else:
        steps = (f"Must be 0: {spec.display_name} searches on the full schedule (its trajectories are judged "
                 "midway). Kept so saved workflows load.") if spec.full_schedule else SEARCH_STEPS_TOOLTIP
        segment = [] if spec.full_schedule else segment_inputs()
        inputs = [*ksampler_inputs(steps), *options, *judging, *segment, *later]

    def schema():
        return node_schema(legacy.node_id, legacy.display_name, description, inputs, legacy.outputs,
                           category=DEPRECATED_CATEGORY, deprecated=True)

    def run(cls, values):
        judge = Judge(values["vae"], values["verifier"], values["condition"])
        if legacy.family == "ksampler":
            if spec.full_schedule and values["search_steps"]:
                raise ValueError(f"search_steps must be 0 for {spec.display_name}, got {values['search_steps']}")
            return run_ksampler_style(cls, spec, values, judge)
        check_values(cls, values, skip=options_of(spec))
        strategy = configured(spec, values, values.get("search_sigmas"))
        return respond(cls, search(strategy, judge, *(values[k] for k in ("noise", "guider", "sampler", "sigmas",
                                                                          "latent_image")),
                                   node_id=cls.hidden.unique_id, extra_pnginfo=cls.hidden.extra_pnginfo))

    def validate(cls, search_steps=None):
        # Only search_steps is named: the rules that relate several inputs are checked when the node runs.
        return f"search_steps must be 0 for {spec.display_name}, got {search_steps}" if search_steps else True

    full_schedule_ksampler = legacy.family == "ksampler" and spec.full_schedule
    return make_node(legacy.node_id, schema, run, validate if full_schedule_ksampler else None)


_BUILT: dict[int, tuple[StrategySpec, list]] = {}  # the spec is kept so its id stays its own


def nodes_for(spec: StrategySpec) -> list[type[io.ComfyNode]]:
    """A strategy's nodes: its option node, its KSampler-style node and its earlier releases'
    nodes (made once per spec)."""
    if id(spec) not in _BUILT:
        _BUILT[id(spec)] = (spec, [option_node(spec), sampler_node(spec),
                                   *[legacy_node(spec, legacy) for legacy in spec.legacy]])
    return _BUILT[id(spec)][1]


def node_classes() -> list[type[io.ComfyNode]]:
    """Every search node of the registered strategies, the shared ones first."""
    per_spec = [nodes_for(spec) for spec in registry.specs()]
    return [NoiseCandidates, SearchJudge, SearchSelection, SearchDraft, NoiseSearch, *[n[1] for n in per_spec],
            *[n[0] for n in per_spec],
            *[c for n in per_spec for c in n[2:]]]
