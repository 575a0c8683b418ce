"""The strategy registry (search/registry.py): one spec per strategy, and everything made from it.

- every built-in spec is consistent: its options are keywords of its algorithm, its node ids
  its own, its rules refuse what they must, naming the option;
- the nodes are generated from the specs: option nodes and KSampler-style nodes carry the
  spec's options (names, defaults, ranges); the earlier releases' nodes keep their saved input
  order and outputs, marked deprecated; NoiseSearch has its seven inputs;
- the proof: a toy strategy registered from this file alone gets its option node and
  KSampler-style node, runs through NoiseSearch on the tiny models, and is a sweep kind.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from search import registry
from search.registry import MAX_ROWS, Option, StrategySpec
from tests.harness.host import load_host, node_class, pack_module, run_node
from tests.toy_verifier import ProbeVerifier

LATENT = {"samples": torch.zeros(1, 4, 4, 4)}


# -- the specs ---------------------------------------------------------------------------------------
def test_the_six_strategies_are_registered_in_order():
    assert registry.names() == ("random", "zero_order", "paths", "particles", "rejection", "tree")


@pytest.mark.parametrize("spec", registry.specs(), ids=registry.names())
def test_a_spec_is_consistent(spec):
    params = inspect.signature(spec.run).parameters
    for o in spec.options:
        assert o.keyword is None or o.keyword in params, (spec.name, o.name)
        assert o.tooltip and (o.kind != "choice" or o.default in o.choices)
    strategy = spec.configure({})  # every default is valid
    assert strategy.name == spec.name and strategy.display_name == spec.display_name
    assert strategy.noises >= 1 and strategy.rows >= 1
    assert set(strategy.settings) == {o.name for o in spec.options}
    assert strategy.full_schedule == spec.full_schedule and (strategy.search_sigmas is None)
    assert "Use it" in spec.description, spec.name  # says when to choose it
    ids = list(spec.node_ids().values())
    assert len(set(ids)) == len(ids)


def test_node_ids_are_unique_across_strategies():
    ids = [i for spec in registry.specs() for i in spec.node_ids().values()]
    assert len(ids) == len(set(ids))
    assert registry.find_node("PathSearchAdvanced") == (registry.get("paths"), "legacy_advanced")
    assert registry.find_node("SearchTree") == (registry.get("tree"), "options")
    assert registry.find_node("KSampler") is None


def test_configure_passes_the_options_the_algorithm_takes():
    paths = registry.get("paths").configure({"paths": 3, "branches": 4}, budget=50, top_k=2, batch_size=8)
    assert paths.noises == 3 and paths.rows == 12 and "paths" not in paths.options
    assert paths.options == {"branches": 4, "start": 0.4, "forward": 0.2, "backward": 0.3, "interval_steps": 4}
    assert (paths.budget, paths.top_k, paths.batch_size) == (50, 2, 8)
    assert registry.get("paths").configure({}, search_sigmas=torch.ones(3)).search_sigmas is None  # full schedule
    rejection = registry.get("rejection").configure({"levels": "0.8 0.3,0.1"})
    assert rejection.options["levels"] == (0.8, 0.3, 0.1) and rejection.settings["levels"] == "0.8, 0.3, 0.1"
    particles = registry.get("particles")
    point = particles.configure({"judge_at": "at the resampling point"})
    assert point.options["judge"] == "point" and point.settings["judge_at"] == "at the resampling point"
    cheap = particles.configure({"judge_at": "last step (cheaper, one step early)"})
    assert cheap.options["judge"] == "last" and cheap.settings["judge_at"] == "last step (cheaper, one step early)"
    default = inspect.signature(particles.run).parameters["judge"].default
    assert particles.configure({}).options["judge"] == default  # the node's default is the algorithm's


@pytest.mark.parametrize("name,values,needle", [
    ("paths", {"forward": 0.3, "backward": 0.3}, "backward (0.3) must be greater than forward (0.3)"),
    ("paths", {"start": 0.9, "forward": 0.2}, "start + forward (0.9 + 0.2) exceeds 1"),
    ("paths", {"paths": 100, "branches": 100}, f"paths x branches (100 x 100 = 10000) candidates per round exceeds "
                                               f"{MAX_ROWS}"),
    ("paths", {"paths": 10**7}, "paths must be between 1 and 1024, got 10000000"),
    ("random", {"candidates": float("nan")}, "candidates must be between 1 and 4096, got nan"),
    ("random", {"candidates": "8"}, "candidates must be a number between 1 and 4096, got '8'"),
    ("zero_order", {"restart": "yes"}, "restart must be true or false"),
    ("particles", {"potential": "mean"}, "potential 'mean' is not one of: max, sum, difference"),
    ("rejection", {"levels": "0.5, 1.0"}, "levels: 1.0 is outside (0, 1)"),
    ("rejection", {"levels": ""}, "levels is empty"),
])
def test_bad_options_are_refused_naming_them(name, values, needle):
    with pytest.raises(ValueError) as err:
        registry.get(name).configure(values)
    assert needle in str(err.value)


def test_a_spec_refuses_malformed_options_and_clashing_node_ids():
    with pytest.raises(ValueError, match="kind"):
        Option("x", "text", "", "tooltip")
    with pytest.raises(ValueError, match="default must be one of its choices"):
        Option("x", "choice", "c", "tooltip", choices=("a", "b"))
    clash = StrategySpec(name="clash", display_name="Clash", label="clash", run=lambda *a, **k: None, options=(),
                         noises=lambda o: 1, rows=lambda o: 1, description="Use it never.", cost="",
                         option_node="SearchRandom", sampler_node="ClashSampler")
    with pytest.raises(ValueError, match="node id SearchRandom belongs to strategy random"):
        registry.register(clash)
    assert "clash" not in registry.names()


# -- the nodes made from the specs ------------------------------------------------------------------
KSAMPLER = ["model", "seed", "steps", "search_steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
            "latent_image", "denoise"]
CUSTOM = ["noise", "guider", "sampler", "sigmas", "latent_image"]
JUDGING = ["vae", "verifier", "condition", "budget", "top_k", "batch_size"]
SEGMENT = ["start_at_step", "end_at_step"]
RANDOM = ["candidates"]
ZERO_ORDER = ["neighbours", "iterations", "angle", "restart"]
PATHS = ["paths", "branches", "start", "forward", "backward", "interval_steps"]
PARTICLES = ["particles", "potential", "lmbda", "interval", "ess_threshold", "renoise"]
REJECTION = ["candidates", "keep", "levels"]
TREE = ["rollouts", "branches", "lmbda", "greedy", "wave", "renoise"]
# The inputs of the earlier releases' nodes in their saved order (UI workflows assign widget
# values by position) and their outputs (links refer to outputs by position).
LEGACY = {
    "RandomSearch": (KSAMPLER + RANDOM + JUDGING + SEGMENT,
                     ["best", "top", "scores", "best_score", "replay_noise", "replay_seed", "replay_index", "report"]),
    "ZeroOrderSearch": (KSAMPLER + ZERO_ORDER + JUDGING + SEGMENT,
                        ["best", "top", "scores", "best_score", "replay_noise", "report"]),
    "PathSearch": (KSAMPLER + PATHS + JUDGING, ["best", "top", "scores", "best_score", "report"]),
    "RandomSearchAdvanced": (CUSTOM + ["search_sigmas"] + RANDOM + JUDGING,
                             ["best", "top", "scores", "best_score", "replay_noise", "report"]),
    "ZeroOrderSearchAdvanced": (CUSTOM + ["search_sigmas"] + ZERO_ORDER + JUDGING,
                                ["best", "top", "scores", "best_score", "replay_noise", "report"]),
    "PathSearchAdvanced": (CUSTOM + PATHS + JUDGING, ["best", "top", "scores", "best_score", "report"]),
    "ParticleSteering": (KSAMPLER + PARTICLES + JUDGING + ["judge_at"],
                         ["best", "top", "scores", "best_score", "report"]),
    "EarlyRejectionSearch": (KSAMPLER + REJECTION + JUDGING,
                             ["best", "top", "scores", "best_score", "replay_noise", "replay_seed", "report"]),
    "DiffusionTreeSearch": (KSAMPLER + TREE + JUDGING, ["best", "top", "scores", "best_score", "report"]),
}
SEARCH_OUTPUTS = ["best", "top", "scores", "best_score", "replay_noise", "replay_seed", "report", "judged"]


def inputs_of(node_id: str) -> list[str]:
    return [i.id for i in node_class(node_id).define_schema().inputs]


@pytest.mark.parametrize("node_id", list(LEGACY))
def test_earlier_nodes_keep_their_inputs_and_outputs_and_are_deprecated(comfy, node_id):
    inputs, outs = LEGACY[node_id]
    cls = node_class(node_id)
    schema = cls.define_schema()
    assert inputs_of(node_id) == inputs
    assert [o.id for o in schema.outputs] == outs
    assert cls.DEPRECATED is True and schema.description.startswith("Deprecated")
    later = [i.id for i in schema.inputs if i.optional]
    assert later == [n for n in ("search_sigmas", "start_at_step", "end_at_step", "judge_at") if n in inputs]


def required_of(node_id: str) -> list[str]:
    return [i.id for i in node_class(node_id).define_schema().inputs if not i.optional]


def test_noise_search_takes_seven_inputs(comfy):
    # Seven required; a draft model is optional.
    assert inputs_of("NoiseSearch") == CUSTOM[:4] + ["latent_image", "search", "judge", "draft"]
    assert required_of("NoiseSearch") == CUSTOM[:4] + ["latent_image", "search", "judge"]
    assert inputs_of("SearchJudge") == ["vae", "verifier", "condition", "held_out"]
    assert required_of("SearchJudge") == ["vae", "verifier", "condition"]
    described = node_class("NoiseSearch").define_schema().description
    assert all(spec.display_name in described for spec in registry.specs())


@pytest.mark.parametrize("spec", registry.specs(), ids=registry.names())
def test_nodes_of_a_strategy_carry_its_options(comfy, spec):
    options = [o.name for o in spec.options]
    settings = ["budget", "top_k", "batch_size"]
    schedule = [] if spec.full_schedule else ["search_sigmas"]
    assert inputs_of(spec.option_node) == options + settings + schedule + ["selection"]
    steps = [k for k in KSAMPLER if k != "search_steps" or not spec.full_schedule]
    assert inputs_of(spec.sampler_node) == steps + ["judge"] + options + settings + ["selection", "draft"]
    for node_id in (spec.option_node, spec.sampler_node):
        cls = node_class(node_id)
        assert not cls.DEPRECATED and "Use it" in cls.define_schema().description
        widgets = {i.id: i for i in cls.define_schema().inputs}
        for o in spec.options:
            w = widgets[o.name]
            assert getattr(w, "default", None) == o.default, (node_id, o.name)
            if o.kind in ("int", "float"):
                assert (w.min, w.max) == (o.min, o.max), (node_id, o.name)
    assert [o.id for o in node_class(spec.sampler_node).define_schema().outputs] == SEARCH_OUTPUTS


def test_every_search_node_says_when_to_use_it_and_every_input_has_a_tooltip(comfy):
    for cls in pack_module("nodes.search_nodes").node_classes():
        schema = cls.define_schema()
        assert len(schema.description) > 80, schema.node_id
        for i in schema.inputs:
            assert i.tooltip, (schema.node_id, i.id)


def test_a_search_node_that_is_no_drop_in_says_so(comfy):
    """The drop-ins of the strategies that search on the full schedule have no search_steps."""
    for spec in registry.specs():
        assert ("search_steps" in inputs_of(spec.sampler_node)) is not spec.full_schedule


# -- the proof: a strategy registered from here alone ------------------------------------------------
SEEN: list[dict] = []


def toy_search(model, noise, sigmas, *, generator, budget=None, top_k=1, callback=None, select=None,
               flavour="plain", levels=(0.5,)):
    """Best-of-N under another name, recording what it was given."""
    SEEN.append({"noises": noise.shape[0], "flavour": flavour, "levels": levels})
    algorithms = pack_module("search.algorithms")
    return algorithms.random_search(model, noise, sigmas, generator=generator, budget=budget, top_k=top_k,
                                    callback=callback, select=select)


def toy_spec(module) -> StrategySpec:
    """The toy's spec, made with the classes of ``module`` (the pack's registry as ComfyUI loaded it,
    or the one the sweep imports)."""
    return module.StrategySpec(
        name="toy", display_name="Toy Search", label="toy", run=toy_search,
        options=(module.Option("count", "int", 3, "Noises tried.", min=1, max=16, arg=None),
                 module.Option("flavour", "choice", "plain", "What it records.", choices=("plain", "spicy")),
                 module.Option("levels", "levels", "0.5", "Levels it records.")),
        noises=lambda o: o["count"], rows=lambda o: o["count"],
        description="Best-of-N under another name. Use it to prove the registry.", cost="count samples",
        option_node="SearchToy", sampler_node="ToySearchSampler")


@pytest.fixture
def toy(comfy, monkeypatch):
    """The toy registered in the pack (as ComfyUI loaded it) and in the registry the sweep reads,
    its nodes made and known to the host, as a pack registering it at load would have them."""
    pack_registry = pack_module("search.registry")
    spec = pack_registry.register(toy_spec(pack_registry))
    registry.register(toy_spec(registry))
    made = pack_module("nodes.search_nodes").nodes_for(spec)
    for cls in made:
        monkeypatch.setitem(load_host().NODE_CLASS_MAPPINGS, cls.__name__, cls)
    SEEN.clear()
    yield spec, made
    pack_registry.unregister("toy")
    registry.unregister("toy")


def judge(parts, verifier=None):
    return run_node("SearchJudge", vae=parts["vae"], verifier=verifier or ProbeVerifier(), condition="")[0]


def custom_parts(parts):
    guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"], negative=parts["negative"],
                      cfg=2.0)[0]
    sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 3, 1.0)
    return dict(noise=run_node("NoiseCandidates", seed=5, count=8)[0], guider=guider,
                sampler=run_node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas, latent_image=LATENT)


def test_a_registered_toy_strategy_gets_nodes_and_runs_through_noise_search(parts, toy):
    spec, made = toy
    assert [c.__name__ for c in made] == ["SearchToy", "ToySearchSampler"]
    assert inputs_of("SearchToy") == ["count", "flavour", "levels", "budget", "top_k", "batch_size", "search_sigmas",
                                      "selection"]
    assert "Toy Search" in node_class("NoiseSearch").define_schema().description
    search = run_node("SearchToy", count=4, flavour="spicy", levels="0.7, 0.2", top_k=2)[0]
    names = [o.id for o in node_class("NoiseSearch").define_schema().outputs]
    out = dict(zip(names, run_node("NoiseSearch", **custom_parts(parts), search=search, judge=judge(parts))))
    report = json.loads(out["report"])
    assert SEEN == [{"noises": 4, "flavour": "spicy", "levels": (0.7, 0.2)}]
    assert report["algorithm"] == "toy" and report["settings"]["flavour"] == "spicy"
    assert len(report["candidates"]) == 4 and len(report["top"]) == 2
    # Best-of-N under another name: the winner is random search's, and replays at seed + id.
    ref = dict(zip(names, run_node("NoiseSearch", **custom_parts(parts), judge=judge(parts),
                                   search=run_node("SearchRandom", candidates=4, top_k=2)[0])))
    assert report["best"] == json.loads(ref["report"])["best"]
    assert torch.allclose(out["best"]["samples"], ref["best"]["samples"])
    assert out["replay_seed"] == 5 + report["best"]["id"]
    with pytest.raises(ValueError, match="count must be between 1 and 16"):
        run_node("SearchToy", count=17)


def test_a_registered_toy_strategy_runs_as_a_ksampler_style_node(parts, toy):
    out = run_node("ToySearchSampler", model=parts["model"], seed=5, steps=3, search_steps=2, cfg=2.0,
                   sampler_name="euler", scheduler="normal", positive=parts["positive"], negative=parts["negative"],
                   latent_image=LATENT, denoise=1.0, judge=judge(parts), count=2, flavour="plain", levels="0.5")
    report = json.loads(out[6])
    assert report["algorithm"] == "toy" and report["settings"]["search_steps"] == 2
    assert SEEN == [{"noises": 2, "flavour": "plain", "levels": (0.5,)}]
    assert all("search_score" in t for t in report["top"])  # regenerated on the full schedule


SWEEP_PROMPT = {  # NoiseSearch fed by a search options node, judged by a Search Judge
    "5": {"class_type": "NoiseCandidates", "inputs": {"seed": 0, "count": 1}},
    "9": {"class_type": "SearchRandom", "inputs": {"candidates": 1, "budget": 0, "top_k": 1, "batch_size": 0}},
    "10": {"class_type": "ClassifierVerifierLoader", "inputs": {"classifier_file": "classifiers/x.safetensors"}},
    "11": {"class_type": "SearchJudge", "inputs": {"vae": ["1", 2], "verifier": ["10", 0], "condition": "x"}},
    "12": {"class_type": "NoiseSearch", "inputs": {
        "noise": ["5", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0],
        "search": ["9", 0], "judge": ["11", 0]}},
}
SWEEP_TOML = """workflow = "prompt.json"
node = "NoiseSearch"
budgets = [0, 12]
eval_verifiers = ["probe"]

[prompts]
list = ["a red cube"]

[verifiers.probe]
class_type = "ClassifierVerifierLoader"
inputs = {{ classifier_file = "classifiers/x.safetensors" }}

[[strategies]]
kind = "toy"
{options}
"""


def test_a_registered_toy_strategy_is_a_sweep_kind(parts, toy, tmp_path):
    from sweep.config import load
    from sweep.tasks import all_tasks
    from sweep.workflow import Template, node_for

    (tmp_path / "prompt.json").write_text(json.dumps(SWEEP_PROMPT))
    (tmp_path / "sweep.toml").write_text(SWEEP_TOML.format(options="count = 5\nflavour = \"spicy\""))
    cfg = load(tmp_path / "sweep.toml")
    assert [(s.name, s.kind) for s in cfg.strategies] == [("toy", "toy")]  # named by its label
    info = {c: node_class(c).GET_NODE_INFO_V1() for c in ("NoiseCandidates", "SearchRandom", "SearchToy",
                                                          "ClassifierVerifierLoader", "SearchJudge", "NoiseSearch",
                                                          "VerifierScore")}
    template = Template(cfg, info)
    assert (template.family, template.options_id, template.judge_id) == ("options", "9", "11")
    assert node_for("options", "toy") == "SearchToy" and node_for("legacy_advanced", "toy") is None
    tasks = all_tasks(cfg)
    assert len(tasks) == 2
    for task in tasks:
        prompt, _ = template.build(task)
        varied = prompt["9"]
        assert varied["class_type"] == "SearchToy"
        assert varied["inputs"] == {"count": 5, "flavour": "spicy", "levels": "0.5", "budget": task.setting.budget,
                                    "top_k": 1, "batch_size": 0}
        assert prompt["5"]["inputs"]["count"] == 5  # NoiseCandidates supplies what the toy starts from
        assert prompt["11"]["inputs"]["condition"] == "a red cube"
        # The node the sweep varied takes exactly those inputs and runs.
        search = run_node("SearchToy", **varied["inputs"])[0]
        out = run_node("NoiseSearch", **{**custom_parts(parts), "noise": run_node("NoiseCandidates", seed=0,
                                                                                  count=5)[0]},
                       search=search, judge=judge(parts))
        report = json.loads(out[6])
        assert report["algorithm"] == "toy" and report["nfe"]["budget"] == (task.setting.budget or None)
    (tmp_path / "sweep.toml").write_text(SWEEP_TOML.format(options="").replace('kind = "toy"', 'kind = "toys"'))
    with pytest.raises(ValueError, match="kind must be one of .*'toy'"):
        load(tmp_path / "sweep.toml")
