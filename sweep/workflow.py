"""One API prompt per task, built from the user's workflow.

The workflow (editor or API format) is converted once with the server's /object_info, edited
(``[edits]``), and then, for every task:

- the search node gets the task's strategy: its class is swapped within its family (the
  KSampler-style nodes, the search options nodes that feed NoiseSearch, or an earlier
  release's family; node ids from the strategy registry, search/registry.py) and the
  strategy's options are set; inputs the new class does not have are dropped and missing ones
  take their defaults;
- the judge's ``verifier`` input (the Search Judge node's, or an earlier release's search
  node's own) is linked to the setting's verifier nodes (``[verifiers]``), the SEARCH's
  ``budget`` is the setting's budget, the prompt text goes into every prompt target and the
  seed into the seed target (both found in the graph unless ``[targets]`` names them);
- nodes are added: VAEDecode of the search's best latent, SaveImage (prefix
  ``noise_search_sweep/<task id>``), PreviewAny of the report, and for every evaluation
  verifier its loader nodes, a VerifierScore of the decoded image and a PreviewAny of its
  best_score;
- everything that does not feed those added nodes is dropped (the workflow's own SaveImage,
  previews and replay branches do not run).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

from .config import WORKFLOW_VERIFIER, Config, ConfigError, VerifierSpec, strategy_registry
from .tasks import Task

PACK = Path(__file__).resolve().parents[1]
EXECUTOR = "NoiseSearch"
# The families of search nodes a task's strategy is swapped within (node ids: StrategySpec.node_ids).
FAMILY_NAMES = {"ksampler": "KSampler-style", "options": "search options (feeding NoiseSearch)",
                "legacy_ksampler": "earlier releases' KSampler-style", "legacy_advanced": "first release's Advanced"}


def node_for(family: str, kind: str) -> str | None:
    """The node id of strategy ``kind`` in ``family``, or None when it has none there."""
    return strategy_registry().get(kind).node_ids().get(family)


PROMPT_INPUTS = ("text", "clip_l", "t5xxl", "prompt")
TEXT_ENCODER_MARK = "TextEncode"
SEED_INPUTS = ("seed", "noise_seed")
STRING_PRIMITIVES = ("PrimitiveStringMultiline", "PrimitiveString", "String", "StringMultiline")
INT_PRIMITIVES = ("PrimitiveInt", "Int")
IMAGE_PREFIX = "noise_search_sweep"
# Ids of the nodes the sweep adds (any string is a valid node id in the API format).
ID = "ns_sweep"


def _workflow_convert():
    """examples/workflow_convert.py (standard library only), loaded by path so that no other
    package called ``examples`` can shadow it."""
    name = "noise_search_sweep_workflow_convert"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACK / "examples" / "workflow_convert.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wc = _workflow_convert()


class WorkflowError(ConfigError):
    pass


def load_api_prompt(path: Path, object_info: dict | None) -> dict:
    data = json.loads(Path(path).read_text())
    if wc.is_ui_workflow(data):
        if object_info is None:
            raise WorkflowError(f"{path} is an editor (UI) workflow: converting it needs a server's /object_info")
        try:
            return wc.ui_to_api(data, object_info)
        except wc.ConversionError as e:
            raise WorkflowError(f"{path}: {e}") from None
    if isinstance(data, dict) and wc.is_api_prompt(data.get("prompt")):
        return data["prompt"]
    if wc.is_api_prompt(data):
        return data
    raise WorkflowError(f"{path} is neither an editor workflow nor an API-format prompt")


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def input_specs(object_info: dict, class_type: str) -> dict[str, list]:
    node_def = object_info.get(class_type)
    if node_def is None:
        raise WorkflowError(f"the server has no node {class_type!r} (is the pack installed and up to date?)")
    sections = node_def.get("input", {})
    return {**sections.get("required", {}), **sections.get("optional", {})}


def required_inputs(object_info: dict, class_type: str) -> dict[str, list]:
    return dict(object_info[class_type].get("input", {}).get("required", {}))


def default_of(spec: list):
    """The default a widget input takes, or KeyError when it has none (a link input)."""
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    options = kind if isinstance(kind, list) else (opts.get("options") if kind == "COMBO" else None)
    if options:
        return options[0]
    if kind == "BOOLEAN":
        return False
    raise KeyError("no default")


def output_index(object_info: dict, class_type: str, name: str) -> int:
    node_def = object_info[class_type]
    for key in ("output_name", "output"):
        names = list(node_def.get(key) or [])
        if name in names:
            return names.index(name)
    raise WorkflowError(f"{class_type} has no output {name!r}")


class Template:
    """The edited workflow and where a task's values go."""

    def __init__(self, cfg: Config, object_info: dict):
        self.cfg = cfg
        self.info = object_info
        base = load_api_prompt(cfg.workflow, object_info)
        for node in base.values():
            node["inputs"] = {k: (cfg.edits_replace.get(v, v) if isinstance(v, str) else v)
                              for k, v in node["inputs"].items()}
        try:
            for key, value in cfg.edits_set.items():
                wc.apply_override(base, f"{key}={json.dumps(value)}")
            self.search_id = wc.find_node(base, cfg.node)
        except wc.ConversionError as e:
            raise WorkflowError(f"edits/node: {e}") from None
        self.base = base
        cls = base[self.search_id]["class_type"]
        found = strategy_registry().find_node(cls)
        if found is not None and found[1] != "options":
            self.family, self.options_id = found[1], self.search_id
        elif cls == EXECUTOR:
            link = base[self.search_id]["inputs"].get("search")
            source = strategy_registry().find_node(base.get(link[0], {}).get("class_type")) if is_link(link) else None
            if source is None or source[1] != "options":
                raise WorkflowError(f"node {self.search_id} (NoiseSearch): its search input must come from a "
                                    "search options node (Random Search Options, ...)")
            self.family, self.options_id = "options", link[0]
        else:
            raise WorkflowError(f"node {cfg.node!r} is a {cls}, not a search node (a KSampler-style search node, "
                                "one of an earlier release, or NoiseSearch)")
        # Where the judging inputs (vae, verifier, condition) are: the node feeding the search's
        # JUDGE input, or (earlier releases' nodes) the search node itself.
        judge = base[self.search_id]["inputs"].get("judge")
        self.judge_id = judge[0] if is_link(judge) else self.search_id
        if "verifier" not in input_specs(object_info, base[self.judge_id]["class_type"]):
            raise WorkflowError(f"node {self.search_id}: its judge input must come from a Search Judge node")
        self.prompt_targets = self._targets(cfg.prompt_targets) if cfg.prompt_targets else self._find_prompt_targets()
        self.seed_target = self._targets([cfg.seed_target])[0] if cfg.seed_target else self._find_seed_target()
        if not self.prompt_targets:
            raise WorkflowError("no prompt target found: name the inputs under [targets] prompt = [\"NODE.input\"]")

    # -- where the prompt and the seed go --------------------------------------------------
    def _targets(self, keys: list[str]) -> list[tuple[str, str]]:
        out = []
        for key in keys:
            node_key, dot, name = key.rpartition(".")
            try:
                node_id = wc.find_node(self.base, node_key)
            except wc.ConversionError as e:
                raise WorkflowError(f"targets: {e}") from None
            if not dot or name not in self.base[node_id]["inputs"]:
                raise WorkflowError(f"targets: node {node_id} has no input {name!r}")
            out.append((node_id, name))
        return out

    def _follow_value(self, node_id: str, name: str, primitives) -> tuple[str, str]:
        """Where a value really lives: a primitive node's value, if the input links one."""
        value = self.base[node_id]["inputs"].get(name)
        if is_link(value):
            src = self.base.get(value[0])
            if src is not None and src["class_type"] in primitives and "value" in src["inputs"]:
                return value[0], "value"
            if src is not None:
                raise WorkflowError(f"input {name} of node {node_id} comes from node {value[0]} "
                                    f"({src['class_type']}): name the value to vary under [targets]")
        return node_id, name

    def _upstream(self, start: str, skip=("negative",)) -> list[str]:
        seen, order, stack = set(), [], [start]
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in self.base:
                continue
            seen.add(node_id)
            order.append(node_id)
            for name, value in self.base[node_id]["inputs"].items():
                if is_link(value) and name not in skip:
                    stack.append(value[0])
        return order

    def _find_prompt_targets(self) -> list[tuple[str, str]]:
        found = []
        if "condition" in self.base[self.judge_id]["inputs"]:
            found.append(self._follow_value(self.judge_id, "condition", STRING_PRIMITIVES))
        # Text encoders on the positive side (through guiders and conditioning nodes).
        for node_id in self._upstream(self.search_id, skip=("negative", "verifier", "vae", "latent_image",
                                                            "noise", "sampler", "sigmas", "search", "judge")):
            node = self.base[node_id]
            if TEXT_ENCODER_MARK not in node["class_type"]:
                continue
            for name in PROMPT_INPUTS:
                if name in node["inputs"]:
                    found.append(self._follow_value(node_id, name, STRING_PRIMITIVES))
        return sorted(set(found))

    def _find_seed_target(self) -> tuple[str, str]:
        search = self.base[self.search_id]
        if "seed" in search["inputs"]:
            return self._follow_value(self.search_id, "seed", INT_PRIMITIVES)
        link = search["inputs"].get("noise")
        if is_link(link) and link[0] in self.base:
            for name in SEED_INPUTS:
                if name in self.base[link[0]]["inputs"]:
                    return self._follow_value(link[0], name, INT_PRIMITIVES)
        raise WorkflowError("no seed found (the search node's seed, or its noise node's seed/noise_seed): "
                            "name it under [targets] seed = \"NODE.input\"")

    # -- one task ------------------------------------------------------------------------
    def _fill(self, class_type: str, inputs: dict, where: str) -> dict:
        """Keep the inputs the class declares, add defaults for missing required widgets."""
        specs = input_specs(self.info, class_type)
        out = {k: v for k, v in inputs.items() if k in specs}
        for name, spec in required_inputs(self.info, class_type).items():
            if name not in out:
                try:
                    out[name] = default_of(spec)
                except KeyError:
                    raise WorkflowError(f"{where}: {class_type} needs input {name!r}, which has no default") from None
        return out

    def _set_strategy(self, prompt: dict, task: Task) -> None:
        strategy = task.setting.strategy
        spec = strategy_registry().get(strategy.kind)
        new_class = node_for(self.family, strategy.kind)
        if new_class is None:
            raise WorkflowError(f"strategy {strategy.name}: {spec.display_name} has no node of the "
                                f"{FAMILY_NAMES[self.family]} family; search with NoiseSearch and its search options "
                                f"node, or its KSampler-style node ({spec.sampler_node})")
        opt_node = prompt[self.options_id]
        opt_node["class_type"] = new_class
        opt_node["inputs"] = self._fill(new_class, opt_node["inputs"], f"strategy {strategy.name}")
        specs_opt = input_specs(self.info, new_class)
        search = prompt[self.search_id]
        specs_search = input_specs(self.info, search["class_type"])
        for name, value in strategy.options.items():
            if name in specs_opt:
                opt_node["inputs"][name] = value
            elif name in specs_search:
                search["inputs"][name] = value
            else:
                raise WorkflowError(f"strategy {strategy.name}: neither {new_class} nor {search['class_type']} "
                                    f"has an input {name!r}")
        if spec.full_schedule and "search_steps" in opt_node["inputs"]:
            opt_node["inputs"]["search_steps"] = 0  # an earlier release's node keeps it, held at 0
        # A NoiseCandidates node must supply the noises the strategy starts from (NoiseSearch
        # refuses a smaller count): raise its count to what this strategy needs.
        noise = search["inputs"].get("noise")
        if is_link(noise) and prompt.get(noise[0], {}).get("class_type") == "NoiseCandidates":
            chosen = {k: v for k, v in opt_node["inputs"].items() if not is_link(v)}
            try:
                need = spec.noises(spec.parse(chosen))
            except ValueError:
                need = 1  # the server refuses the options, naming them
            count = prompt[noise[0]]["inputs"].get("count")
            if isinstance(count, int) and count < need:
                prompt[noise[0]]["inputs"]["count"] = need

    def _add_verifier(self, prompt: dict, name: str, made: dict) -> list:
        if name in made:
            return made[name]
        spec: VerifierSpec = self.cfg.verifiers[name]
        node_id = f"{ID}_verifier_{name}"
        inputs = {}
        for key, value in spec.inputs.items():
            if isinstance(value, str) and value.startswith("@"):
                inputs[key] = self._add_verifier(prompt, value[1:], made)
            else:
                inputs[key] = value
        prompt[node_id] = {"class_type": spec.class_type,
                           "inputs": self._fill(spec.class_type, inputs, f"verifier {name}"),
                           "_meta": {"title": f"sweep verifier {name}"}}
        made[name] = [node_id, 0]
        return made[name]

    def build(self, task: Task) -> tuple[dict, dict]:
        """The API prompt of one task and where its results will be: {"image", "report", "eval"}."""
        prompt = copy.deepcopy(self.base)
        self._set_strategy(prompt, task)
        search, judge = prompt[self.search_id], prompt[self.judge_id]
        made: dict = {}
        verifier = task.setting.verifier
        search_condition = None
        if verifier != WORKFLOW_VERIFIER:
            judge["inputs"]["verifier"] = self._add_verifier(prompt, verifier, made)
            search_condition = self.cfg.verifiers[verifier].condition
        prompt[self.options_id]["inputs"]["budget"] = task.setting.budget  # the SEARCH's (or the node's) budget
        for node_id, name in self.prompt_targets:
            prompt[node_id]["inputs"][name] = task.prompt.text
        if search_condition is not None:  # a class-conditional verifier judges a fixed class
            judge["inputs"]["condition"] = search_condition
        seed_node, seed_input = self.seed_target
        prompt[seed_node]["inputs"][seed_input] = task.seed

        search_class = search["class_type"]
        decode, save, report = f"{ID}_decode", f"{ID}_save", f"{ID}_report"
        prompt[decode] = {"class_type": "VAEDecode", "inputs": {"samples": [self.search_id, 0],
                                                                "vae": judge["inputs"]["vae"]}}
        prompt[save] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0],
                                                              "filename_prefix": f"{IMAGE_PREFIX}/{task.id}"}}
        prompt[report] = {"class_type": "PreviewAny",
                          "inputs": {"source": [self.search_id, output_index(self.info, search_class, "report")]}}
        outputs = {"image": save, "report": report, "eval": {}}
        score_slot = output_index(self.info, "VerifierScore", "best_score")
        for name in self.cfg.eval_verifiers:
            link = self._add_verifier(prompt, name, made)
            spec = self.cfg.verifiers[name]
            score, show = f"{ID}_eval_{name}", f"{ID}_eval_{name}_value"
            prompt[score] = {"class_type": "VerifierScore",
                             "inputs": {"images": [decode, 0], "verifier": link,
                                        "condition": task.prompt.text if spec.condition is None else spec.condition}}
            prompt[show] = {"class_type": "PreviewAny", "inputs": {"source": [score, score_slot]}}
            outputs["eval"][name] = show
        keep = set()
        for node_id in [save, report, *outputs["eval"].values()]:
            keep.update(ancestors(prompt, node_id))
        return {k: v for k, v in prompt.items() if k in keep}, outputs


def ancestors(prompt: dict, start: str) -> set[str]:
    """The ids of ``start`` and of every node it depends on in ``prompt`` (API format)."""
    seen, stack = set(), [start]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        stack += [v[0] for v in prompt[node_id]["inputs"].values() if is_link(v)]
    return seen
