"""The strategies: one spec each, the one place a strategy is described.

A :class:`StrategySpec` holds a strategy's algorithm (the shared signature of
search/algorithms.py), its options as data (type, default, range, tooltip), what it starts
from (initial noises) and how large its rounds grow, whether it searches on the full schedule
only, the rules that relate its options, the checks of the sampling parts it needs, its names
(report, tables, nodes) and when to use it. Everything else looks it up: the option nodes and
KSampler-style nodes (nodes/search_nodes.py builds them from the spec), the node that runs any
SEARCH, the sweep's strategy kinds (sweep/) and the demo's method table. A new strategy is
one ``register(StrategySpec(...))``.

Nothing here imports ComfyUI.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import algorithms
from .selection import BEST, Selection
from .smc import POTENTIALS
from .strategy import Strategy

# Most candidates (rows of one batch) a single round may hold: bounded before anything is allocated.
MAX_ROWS = 4096
OPTION_KINDS = ("int", "float", "bool", "choice", "levels")
LEVEL_TOOLTIP = ("as a noise level: t has the signal-to-noise ratio of (1 - t) x0 + t noise, the same "
                 "for every model family (1 = pure noise, 0 = clean)")


def quoted(text, limit: int = 80) -> str:
    """``repr`` of a user's text, cut to ``limit`` characters: errors quote, never echo."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def parse_levels(text, name: str = "levels") -> tuple[float, ...]:
    """Noise levels written as text: numbers in (0, 1), comma- or space-separated."""
    valid = "give noise levels between 0 and 1 (exclusive), comma-separated, e.g. \"0.7, 0.4\""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text; {valid}")
    try:
        levels = tuple(float(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise ValueError(f"{name} {quoted(text)} is not a list of numbers; {valid}") from None
    if not levels:
        raise ValueError(f"{name} is empty; {valid}")
    if len(levels) > 64:
        raise ValueError(f"{name}: {len(levels)} levels given, at most 64")
    bad = [t for t in levels if not 0.0 < t < 1.0]
    if bad:
        raise ValueError(f"{name}: {bad[0]} is outside (0, 1); {valid}")
    return levels


# -- options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One option of a strategy, as data: nodes make a widget of it, the sweep sets it by name.

    ``kind``: "int", "float", "bool", "choice" (``choices``: the labels a user picks from;
    ``values``: what the algorithm receives for each, default the label itself) or "levels"
    (text holding noise levels, parsed to a tuple). ``arg``: the keyword the algorithm receives
    it as ("" = its name; None = not passed: an option that only sets how many initial noises
    the search starts from)."""

    name: str
    kind: str
    default: Any
    tooltip: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    values: tuple[Any, ...] = ()
    display_name: str | None = None
    arg: str | None = ""

    def __post_init__(self):
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"option {self.name}: kind {self.kind!r} is not one of {', '.join(OPTION_KINDS)}")
        if self.kind == "choice" and (self.default not in self.choices or
                                      (self.values and len(self.values) != len(self.choices))):
            raise ValueError(f"option {self.name}: the default must be one of its choices, and values "
                             "(if given) one per choice")

    @property
    def keyword(self) -> str | None:
        return self.name if self.arg == "" else self.arg

    def check(self, value) -> None:
        """Refuse a value outside the option's type or range (a value linked from another node
        arrives unchecked by the host), naming the option."""
        if self.kind in ("int", "float"):
            lo = self.min if self.min is not None else -math.inf
            hi = self.max if self.max is not None else math.inf
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.name} must be a number between {lo} and {hi}, got {quoted(value)}")
            if not lo <= value <= hi:  # also true for NaN, which JSON (so the API) can carry
                raise ValueError(f"{self.name} must be between {lo} and {hi}, got {value}")
        elif self.kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{self.name} must be true or false, got {quoted(value)}")
        elif self.kind == "choice" and value not in self.choices:
            raise ValueError(f"{self.name} {quoted(value)} is not one of: {', '.join(self.choices)}")

    def parse(self, value):
        """What the algorithm receives for a checked value."""
        if self.kind == "choice" and self.values:
            return self.values[self.choices.index(value)]
        if self.kind == "levels":
            return parse_levels(value, self.name)
        return value

    def shown(self, parsed):
        """How a report shows the parsed value."""
        if self.kind == "levels":
            return ", ".join(map(str, parsed))
        if self.kind == "choice" and self.values:
            return self.choices[self.values.index(parsed)]
        return parsed


# -- specs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LegacyNode:
    """A node of an earlier release, kept (deprecated) so saved workflows load and run.

    ``family``: "ksampler" (the KSampler-style node with vae, verifier, condition, budget,
    top_k and batch_size as inputs of its own) or "advanced" (the custom-sampling node with the
    same). ``outputs``: the output ids it had, in order (saved links refer to them by
    position). ``options``: its options in saved widget order (None: all, in the spec's
    order); options added later follow them, optional, so saved widget values keep their
    places."""

    node_id: str
    display_name: str
    family: str
    outputs: tuple[str, ...]
    options: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StrategySpec:
    name: str                   # the report's name and the sweep's kind: "random"
    display_name: str           # nodes and messages: "Random Search"
    label: str                  # short, for tables: "random"
    run: Callable               # the algorithm: fn(model, noise, sigmas, *, generator, budget, top_k, callback, **options)
    options: tuple[Option, ...]
    noises: Callable[[Mapping[str, Any]], int]  # initial noises it starts from, of the parsed option values
    rows: Callable[[Mapping[str, Any]], int]    # most candidates one round holds (memory checks)
    description: str            # what it does and when to use it
    cost: str                   # what it costs, in samples or NFEs
    option_node: str            # node id of its option node (builds a SEARCH)
    sampler_node: str           # node id of its KSampler-style node
    full_schedule: bool = False  # True: searches on the full schedule only (its trajectories are judged midway)
    validate: Callable[[Mapping[str, Any]], None] | None = None   # rules relating parsed options
    check: Callable[[Any, StrategySpec, Mapping[str, Any]], None] | None = None  # (backend, spec, options)
    legacy: tuple[LegacyNode, ...] = ()
    # Selection rules beyond "best" it offers, and why it refuses the others (rule -> reason).
    refuses: Mapping[str, str] | None = None
    # Why it cannot search with a draft model ("" = it can: its winners are one noise's samples,
    # regenerated with the main model from that noise).
    no_draft: str = ""

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(f"{self.display_name} has no option {name!r} (options: "
                       f"{', '.join(o.name for o in self.options)})")

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def parse(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parsed option values of a user's choice (missing options take their defaults):
        every option checked against its range, then the rules that relate them."""
        parsed = {}
        for o in self.options:
            value = values.get(o.name)
            value = o.default if value is None else value
            o.check(value)
            parsed[o.name] = o.parse(value)
        if self.validate is not None:
            self.validate(parsed)
        return parsed

    def check_selection(self, selection: Selection) -> None:
        reason = (self.refuses or {}).get(selection.rule)
        if reason:
            offered = [r for r in ("best", "tempered", "threshold") if r not in (self.refuses or {})]
            raise ValueError(f"selection: {self.display_name} cannot use {selection.rule} selection: {reason}. "
                             f"It offers: {', '.join(offered)}")

    def configure(self, values: Mapping[str, Any], *, budget: int = 0, top_k: int = 1, batch_size: int = 0,
                  search_sigmas=None, selection: Selection = BEST) -> Strategy:
        """The SEARCH of these option values and search settings (refuses bad values, naming them)."""
        parsed = self.parse(values)
        self.check_selection(selection)
        return Strategy(
            name=self.name, run=self.run, noises=int(self.noises(parsed)),
            options={o.keyword: parsed[o.name] for o in self.options if o.keyword},
            settings={o.name: o.shown(parsed[o.name]) for o in self.options}, rows=int(self.rows(parsed)),
            full_schedule=self.full_schedule,
            check=functools.partial(self.check, spec=self, options=parsed) if self.check else None,
            display_name=self.display_name, budget=int(budget or 0), top_k=int(top_k), batch_size=int(batch_size or 0),
            search_sigmas=None if self.full_schedule else search_sigmas, selection=selection, no_draft=self.no_draft)

    def node_ids(self) -> dict[str, str]:
        """Node id by family: "options", "ksampler", and the legacy families it has ("legacy_ksampler",
        "legacy_advanced")."""
        return {"options": self.option_node, "ksampler": self.sampler_node,
                **{f"legacy_{n.family}": n.node_id for n in self.legacy}}


_SPECS: dict[str, StrategySpec] = {}


def register(spec: StrategySpec) -> StrategySpec:
    """Add a strategy (or replace the one of that name). Its node ids must be its own."""
    taken = {node_id: other.name for other in _SPECS.values() if other.name != spec.name
             for node_id in other.node_ids().values()}
    clash = [n for n in spec.node_ids().values() if n in taken]
    if clash:
        raise ValueError(f"strategy {spec.name}: node id {clash[0]} belongs to strategy {taken[clash[0]]}")
    names = [o.name for o in spec.options]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy {spec.name}: an option name is used twice: {names}")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> StrategySpec | None:
    """Remove a strategy (nodes already made for it stay where they were put)."""
    return _SPECS.pop(name, None)


def get(name: str) -> StrategySpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise KeyError(f"no strategy {name!r}; known: {', '.join(_SPECS)}") from None


def specs() -> list[StrategySpec]:
    """Every registered strategy, in registration order."""
    return list(_SPECS.values())


def names() -> tuple[str, ...]:
    return tuple(_SPECS)


def find_node(node_id: str) -> tuple[StrategySpec, str] | None:
    """(spec, family) of a node id (see ``StrategySpec.node_ids``), or None."""
    for spec in _SPECS.values():
        for family, own in spec.node_ids().items():
            if own == node_id:
                return spec, family
    return None


# -- checks of the sampling parts ------------------------------------------------------------------
def whole_sample_strategies() -> str:
    """The strategies that search whole samples (any schedule, masks, early verifiers): "A, B or C"."""
    names = [s.display_name for s in _SPECS.values() if not s.full_schedule]
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def check_trajectory(backend, spec: StrategySpec, options: Mapping[str, Any]) -> None:
    """What a search that judges and continues trajectories midway cannot run on."""
    name = spec.display_name
    if float(backend.sigmas[-1]) > 0:
        raise ValueError(f"sigmas: {name} runs to the end of the schedule (sigma 0); searching a segment "
                         f"that hands leftover noise on works with {whole_sample_strategies()}")
    if backend.mask is not None:
        raise ValueError(f"latent_image: {name} does not support noise masks (inpainting); "
                         f"use {whole_sample_strategies()}")
    if backend.scorer.early_level is not None:
        raise ValueError(f"verifier: this verifier compares against an early x0-prediction of a full "
                         f"trajectory, which {name} does not run; use it with {whole_sample_strategies()}")


def check_paths(backend, spec: StrategySpec, options: Mapping[str, Any]) -> None:
    check_trajectory(backend, spec, options)
    start, forward = options["start"], options["forward"]
    top = float(backend.sigmas[0])
    if backend.level_sigma(start + forward) > top * (1 + 1e-4):
        raise ValueError(f"start + forward ({start + forward:.2f}) re-noises above where this run starts "
                         f"(sigma {top:.3g}, e.g. because denoise < 1); lower start or forward")


def validate_paths(o: Mapping[str, Any]) -> None:
    paths, branches, start, forward, backward = (o[k] for k in ("paths", "branches", "start", "forward", "backward"))
    if paths * branches > MAX_ROWS:
        raise ValueError(f"paths x branches ({paths} x {branches} = {paths * branches}) candidates per round "
                         f"exceeds {MAX_ROWS}; lower paths or branches")
    if backward <= forward:
        raise ValueError(f"backward ({backward}) must be greater than forward ({forward}) so every round moves "
                         "toward clean")
    if start + forward > 1.0:
        raise ValueError(f"start + forward ({start} + {forward}) exceeds 1, the noisiest level; lower start or "
                         "forward")


# -- the strategies of the pack -------------------------------------------------------------------
def _text(prose: str) -> str:
    """Prose written as a block, as one line."""
    return " ".join(prose.split())


def _level(name, default, tooltip, lo=0.01, hi=0.99):
    return Option(name, "float", default, tooltip, min=lo, max=hi, step=0.01)


RENOISE_TOOLTIP = ("For samplers without per-step noise (euler, dpmpp_2m, ...): how far, in noise levels, {what} "
                   "re-noised before each {where}, so {why}. Ancestral and SDE samplers use their own per-step "
                   "noise instead.")
LAMBDA = "lambda"
# The outputs the earlier releases' nodes had (saved links refer to them by position).
LATENTS = ("best", "top", "scores", "best_score")
REPORT = ("report",)


def judged_midway(**fields) -> StrategySpec:
    """A strategy that judges and continues trajectories midway: it searches the full schedule
    only, and needs a run to sigma 0 without a noise mask or an early-x0 verifier."""
    return StrategySpec(**{"full_schedule": True, "check": check_trajectory, **fields})


# Why the strategies whose candidates finish together refuse threshold selection.
FINISH_TOGETHER = ("its candidates all finish together, at the end of the search, so stopping at the first to reach "
                   "the value would save nothing; use Random Search, Zero-Order Search or Diffusion Tree Search")
NOT_ONE_NOISE = ("its winner is not the sample of one initial noise (noise is injected along its trajectory), so the "
                 "main model cannot regenerate it from the draft's noise; use Random Search, Zero-Order Search or "
                 "Early Rejection Search with a draft")


def earlier_ksampler(node_id: str, display_name: str, outputs: tuple, options=None) -> LegacyNode:
    return LegacyNode(node_id, display_name, "ksampler", LATENTS + outputs + REPORT, options)

RANDOM = StrategySpec(
    name="random", display_name="Random Search", label="random", run=algorithms.random_search,
    options=(Option("candidates", "int", 8, "N: candidate noises to try.", min=1, max=MAX_ROWS, arg=None),),
    noises=lambda o: o["candidates"], rows=lambda o: o["candidates"],
    description=_text("""
        Best-of-N (the paper's random search): N candidate noises, each denoised and scored; the best is
        kept. Use it first: it is the baseline every other search must beat, its winner replays with a stock
        KSampler at seed + its id, and search_steps below steps makes each candidate cheaper.
    """),
    cost="N samples (on the search schedule) + top_k regenerated",
    option_node="SearchRandom", sampler_node="RandomSearchSampler",
    legacy=(earlier_ksampler("RandomSearch", "Random Search (best-of-N)",
                             ("replay_noise", "replay_seed", "replay_index")),
            LegacyNode("RandomSearchAdvanced", "Random Search (Advanced)", "advanced",
                       LATENTS + ("replay_noise",) + REPORT)),
)

ZERO_ORDER = StrategySpec(
    name="zero_order", display_name="Zero-Order Search", label="zero-order", run=algorithms.zero_order_search,
    options=(
        Option("neighbours", "int", 2, "N: neighbours drawn around the pivot per iteration.", min=1, max=1024),
        Option("iterations", "int", 8, "K: iterations.", min=1, max=10000),
        Option("angle", "float", 30.0, "Step size as the angle in degrees between pivot and neighbour on the pivot's "
               "sphere (neighbours keep the pivot's norm). The paper's lambda corresponds to cos(angle); small "
               "angles stay local.", min=0.01, max=179.99, step=0.01),
        Option("restart", "bool", True, "When no neighbour beats the pivot, restart from a fresh noise."),
    ),
    noises=lambda o: 1, rows=lambda o: o["neighbours"],
    description=_text("""
        Moves a pivot noise to its best-scoring neighbour, K times (the paper's ZO-N). Use it to refine one
        good noise locally rather than draw new ones: with a smooth verifier it climbs further than random
        search for the same NFEs; with a noisy one, random search is safer.
    """),
    cost="(1 + K x N) samples (on the search schedule) + top_k regenerated",
    option_node="SearchZeroOrder", sampler_node="ZeroOrderSearchSampler",
    legacy=(earlier_ksampler("ZeroOrderSearch", "Zero-Order Search", ("replay_noise",)),
            LegacyNode("ZeroOrderSearchAdvanced", "Zero-Order Search (Advanced)", "advanced",
                       LATENTS + ("replay_noise",) + REPORT)),
)

PATHS = judged_midway(
    name="paths", display_name="Path Search", label="paths", run=algorithms.path_search,
    options=(
        Option("paths", "int", 2, "N: paths kept after every round.", min=1, max=1024, arg=None),
        Option("branches", "int", 2, "M: fresh noises per path per round.", min=1, max=1024),
        _level("start", 0.4, "Level where the search starts, " + LEVEL_TOOLTIP + "."),
        _level("forward", 0.2, "delta_f: how far each round re-noises, in the same level units."),
        _level("backward", 0.3, "delta_b: how far each round denoises; must exceed forward.", lo=0.02, hi=1.0),
        Option("interval_steps", "int", 4, "L: solver steps per backward interval.", min=1, max=1000),
    ),
    noises=lambda o: o["paths"], rows=lambda o: o["paths"] * o["branches"],
    description=_text("""
        Search over sampling paths: N paths denoised to a noise level; every round re-noises each with M
        fresh noises, denoises them, scores their x0-predictions and keeps the best N, until clean. Use it
        when the early layout decides the result and good beginnings should be kept and varied; the winner
        is not replayable from one noise.
    """),
    cost="N x M candidates per round, each a short segment + one x0-prediction",
    refuses={"threshold": FINISH_TOGETHER}, no_draft=NOT_ONE_NOISE,
    option_node="SearchPaths", sampler_node="PathSearchSampler", validate=validate_paths, check=check_paths,
    legacy=(earlier_ksampler("PathSearch", "Path Search", ()),
            LegacyNode("PathSearchAdvanced", "Path Search (Advanced)", "advanced", LATENTS + REPORT)),
)

PARTICLES = judged_midway(
    name="particles", display_name="Particle Steering", label="particles (FK)", run=algorithms.particle_steering,
    options=(
        Option("particles", "int", 4, "K: particles advanced together (the cost is K full samples).", min=1,
               max=MAX_ROWS, arg=None),
        Option("potential", "choice", "max", "How a particle's weight follows the verifier's rewards of its "
               "x0-predictions: max (best reward of its lineage), sum (of its lineage's rewards), difference (the "
               "latest change).", choices=tuple(POTENTIALS)),
        Option("lmbda", "float", 10.0, "lambda in the potential exp(lambda x reward): 0 = plain sampling (no "
               "steering); larger steers harder and keeps fewer distinct particles.", min=0.0, max=10000.0, step=0.1,
               display_name=LAMBDA),
        Option("interval", "int", 1, "Schedule steps between resampling points, where particles are weighted.",
               min=1, max=10000),
        Option("ess_threshold", "float", 0.5, "Resample when the effective sample size falls below this fraction "
               "of K (1 = whenever weights differ, 0 = never).", min=0.0, max=1.0, step=0.01),
        _level("renoise", 0.1, RENOISE_TOOLTIP.format(what="every particle is", where="interval",
                                                      why="resampled copies part ways"), lo=0.0),
        Option("judge_at", "choice", "last step (cheaper, one step early)",
               "Which x0-prediction a reward judges: the one at the resampling point (the paper's definition, one "
               "extra NFE per particle per resampling point), or the sampler's last one, one step early (free).",
               choices=("at the resampling point", "last step (cheaper, one step early)"), values=("point", "last"),
               display_name="judged at", arg="judge"),
    ),
    noises=lambda o: o["particles"], rows=lambda o: o["particles"],
    description=_text("""
        Feynman-Kac steering (Singhal et al. 2025): K particles sampled together with stochastic steps,
        weighted by the verifier's rewards of their x0-predictions and resampled when the weights grow
        uneven; the best final particle wins. Use it to steer sampling itself toward the verifier at about
        the cost of K samples, with a verifier that judges x0-predictions well; the winner is not replayable
        from one noise.
    """),
    cost="K samples + one x0-prediction per particle per resampling point",
    refuses={"threshold": FINISH_TOGETHER}, no_draft=NOT_ONE_NOISE,
    option_node="SearchParticles", sampler_node="ParticleSteeringSampler",
    legacy=(earlier_ksampler("ParticleSteering", "Particle Steering (FK)", (),
                             options=("particles", "potential", "lmbda", "interval", "ess_threshold", "renoise")),),
)

REJECTION = judged_midway(
    name="rejection", display_name="Early Rejection Search", label="early rejection", run=algorithms.early_rejection,
    options=(
        Option("candidates", "int", 16, "N: candidates started (with a budget: as many as it pays for, at most N).",
               min=1, max=MAX_ROWS, arg=None),
        Option("keep", "float", 0.5, "Fraction of candidates kept at every level (at least top_k).", min=0.01,
               max=1.0, step=0.01),
        Option("levels", "levels", "0.7, 0.4", "Noise levels where candidates are judged by their x0-predictions "
               "and the rest rejected, comma-separated, " + LEVEL_TOOLTIP + "; each is taken at the schedule step "
               "nearest to it."),
    ),
    noises=lambda o: o["candidates"], rows=lambda o: o["candidates"],
    description=_text("""
        Successive halving: starts N candidate noises, judges their x0-predictions (free: the sampler
        computes them) at a few noise levels, keeps the best fraction each time and finishes only the
        survivors. Use it to try many more noises than full samples would pay for, when early x0-predictions
        already tell good from bad; the winner replays with a stock KSampler at its seed.
    """),
    cost="N x (steps to the first level) + the survivors' remaining steps",
    refuses={"threshold": FINISH_TOGETHER},
    option_node="SearchEarlyRejection", sampler_node="EarlyRejectionSampler",
    legacy=(earlier_ksampler("EarlyRejectionSearch", "Early Rejection Search", ("replay_noise", "replay_seed")),),
)

TREE = judged_midway(
    name="tree", display_name="Diffusion Tree Search", label="tree", run=algorithms.tree_search,
    options=(
        Option("rollouts", "int", 16, "Rollouts to a clean sample (with a budget: as many as it pays for). A rollout "
               "that branches off deep in the tree pays only the steps below the branch.", min=1, max=100000),
        Option("branches", "int", 2, "Most children of a node (the root's children are the first initial noises).",
               min=1, max=1024),
        Option("lmbda", "float", 1.0, "lambda of the soft values, v = 1/lambda log E[exp(lambda reward)] (0: the "
               "mean), and of the descent's Boltzmann choice when greedy is off.", min=0.0, max=10000.0, step=0.1,
               display_name=LAMBDA),
        Option("greedy", "bool", True, "On: descend to the child of highest soft value (tree search, DTS*). Off: "
               "choose children in proportion to exp(lambda v) (tree sampling, DTS)."),
        Option("wave", "int", 4, "Rollouts chosen together, whose model calls are batched (values are updated "
               "between waves).", min=1, max=MAX_ROWS),
        _level("renoise", 0.1, RENOISE_TOOLTIP.format(what="a state is", where="step", why="children differ"),
               lo=0.0),
    ),
    noises=lambda o: o["branches"], rows=lambda o: o["wave"],
    description=_text("""
        Diffusion tree sampling / search (Jain et al. 2025): rollouts through a tree of stochastic sampler
        steps, descending by soft values backed up from the verifier's rewards of finished samples; later
        rollouts branch off deep in the tree and pay only the steps below. Use it with large budgets, where
        reusing good partial trajectories beats independent samples; the winner is not replayable from one
        noise.
    """),
    cost="one full sample for the first rollouts, then only the steps below each branch",
    no_draft=NOT_ONE_NOISE,
    option_node="SearchTree", sampler_node="DiffusionTreeSampler",
    legacy=(earlier_ksampler("DiffusionTreeSearch", "Diffusion Tree Search", ()),),
)

for _spec in (RANDOM, ZERO_ORDER, PATHS, PARTICLES, REJECTION, TREE):
    register(_spec)
