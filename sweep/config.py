"""The sweep's TOML configuration (see sweep/example.toml for every key)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

BASELINE = "no search"
WORKFLOW_VERIFIER = "workflow"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


def strategy_registry():
    """The strategy registry (search/registry.py): a strategy kind is a registered strategy's name."""
    from search import registry

    return registry


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict:
        return {"kind": self.kind, "options": dict(sorted(self.options.items()))}


@dataclass(frozen=True)
class VerifierSpec:
    """A verifier as nodes: a loader class with inputs; "@name" inputs link other verifiers.

    ``condition``: what the verifier judges against; None = the prompt text (CLIPScore,
    ImageReward, ...); a fixed string for class-conditional verifiers (a class name)."""

    name: str
    class_type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    condition: str | None = None

    def identity(self, specs: dict[str, VerifierSpec]) -> dict:
        out = {"class_type": self.class_type, "condition": self.condition, "inputs": {}}
        for key, value in sorted(self.inputs.items()):
            if isinstance(value, str) and value.startswith("@"):
                value = specs[value[1:]].identity(specs)
            out["inputs"][key] = value
        return out


@dataclass
class Config:
    path: Path
    root: Path  # relative paths in the config are relative to the config file's folder
    workflow: Path
    node: str
    output: Path
    prompt_sets: list[str]
    prompt_list: list[str]
    prompt_limit: int | None
    prompt_sample: int | None
    prompt_sample_seed: int
    strategies: list[Strategy]
    verifiers: dict[str, VerifierSpec]
    search_verifiers: list[str]
    eval_verifiers: list[str]
    budgets: list[int]
    seeds: list[int]
    baseline: bool
    edits_set: dict[str, Any]
    edits_replace: dict[str, str]
    prompt_targets: list[str] | None
    seed_target: str | None
    urls: list[str]
    launch: dict | None
    ray: dict
    retries: int
    task_timeout: float
    recover_wait: float
    bootstrap: int
    confidence: float
    raw: dict = field(repr=False, default_factory=dict)

    def workflow_digest(self) -> str:
        """What makes two runs the same experiment apart from the varied settings: the
        workflow file's bytes, the edits, and where the prompt and seed go."""
        h = hashlib.sha256(self.workflow.read_bytes())
        h.update(json.dumps({"node": self.node, "set": self.edits_set, "replace": self.edits_replace,
                             "prompt_targets": self.prompt_targets, "seed_target": self.seed_target},
                            sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _int_list(value, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    _need(isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
          f"{key} must be a non-empty list of integers, got {value!r}")
    _need(len(set(value)) == len(value), f"{key} lists a value twice: {value}")
    return list(value)


def _str_list(value, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    _need(isinstance(value, list) and all(isinstance(v, str) and v for v in value),
          f"{key} must be a list of names, got {value!r}")
    _need(len(set(value)) == len(value), f"{key} lists a name twice: {value}")
    return list(value)


def parse(data: dict, path: Path, require_eval: bool = True) -> Config:
    """``require_eval``: a sweep needs evaluation verifiers for its table; a distributed search
    (``python -m sweep search``) may have none."""
    path = Path(path).resolve()
    root = path.parent
    known = {"workflow", "node", "output", "prompts", "strategies", "verifiers", "search_verifiers",
             "eval_verifiers", "budgets", "seeds", "baseline", "edits", "targets", "servers", "ray", "run",
             "report"}
    unknown = set(data) - known
    _need(not unknown, f"unknown top-level keys: {sorted(unknown)} (known: {sorted(known)})")

    _need(isinstance(data.get("workflow"), str), "workflow: the path of a workflow JSON file (UI or API format)")
    workflow = (root / data["workflow"]).resolve()
    _need(workflow.is_file(), f"workflow: no file {workflow}")
    _need(isinstance(data.get("node"), str) and data["node"],
          "node: the search node to vary (node id, title, or a class_type used once)")

    prompts = data.get("prompts", {})
    _need(isinstance(prompts, dict), "[prompts] must be a table")
    sets = _str_list(prompts.get("sets", []), "prompts.sets") if prompts.get("sets") else []
    plist = prompts.get("list", [])
    _need(isinstance(plist, list) and all(isinstance(p, str) and p.strip() for p in plist),
          "prompts.list must be a list of prompt texts")
    _need(sets or plist, "[prompts]: give sets (bundled sets, drawbench:<csv>, file:<txt|jsonl>) and/or list")
    sets = [_resolve_set(s, root) for s in sets]
    limit, sample = prompts.get("limit"), prompts.get("sample")
    _need(limit is None or sample is None, "prompts: give limit (the first N of each set) or sample, not both")
    for key, value in (("limit", limit), ("sample", sample)):
        _need(value is None or (isinstance(value, int) and value > 0), f"prompts.{key} must be a positive integer")

    verifiers = {}
    for name, spec in (data.get("verifiers") or {}).items():
        _need(name != WORKFLOW_VERIFIER, f"[verifiers.{WORKFLOW_VERIFIER}] is reserved: it means the "
                                         "workflow's own verifier")
        _need(isinstance(spec, dict) and isinstance(spec.get("class_type"), str),
              f"[verifiers.{name}] needs class_type (e.g. CLIPScoreVerifierLoader)")
        extra = set(spec) - {"class_type", "inputs", "condition"}
        _need(not extra, f"[verifiers.{name}]: unknown keys {sorted(extra)}")
        inputs = spec.get("inputs", {})
        _need(isinstance(inputs, dict), f"verifiers.{name}.inputs must be a table")
        cond = spec.get("condition")
        _need(cond is None or isinstance(cond, str), f"verifiers.{name}.condition must be a string")
        verifiers[name] = VerifierSpec(name, spec["class_type"], dict(inputs), cond)
    for spec in verifiers.values():
        for key, value in spec.inputs.items():
            if isinstance(value, str) and value.startswith("@"):
                _need(value[1:] in verifiers, f"verifiers.{spec.name}.inputs.{key} = {value!r}: no "
                                              f"[verifiers.{value[1:]}]")
    _check_cycles(verifiers)

    search_verifiers = _str_list(data.get("search_verifiers", [WORKFLOW_VERIFIER]), "search_verifiers")
    for name in search_verifiers:
        _need(name == WORKFLOW_VERIFIER or name in verifiers,
              f"search_verifiers: {name!r} is not defined under [verifiers] (or use {WORKFLOW_VERIFIER!r})")
    eval_verifiers = _str_list(data.get("eval_verifiers", []), "eval_verifiers")
    _need(eval_verifiers or not require_eval,
          "eval_verifiers: name at least one verifier from [verifiers] to judge the images")
    for name in eval_verifiers:
        _need(name in verifiers, f"eval_verifiers: {name!r} is not defined under [verifiers]")

    chosen = []
    raw_strategies = data.get("strategies")
    _need(isinstance(raw_strategies, list) and raw_strategies,
          "[[strategies]]: give at least one, e.g. kind = \"random\"")
    kinds = strategy_registry().names()
    for i, s in enumerate(raw_strategies):
        _need(isinstance(s, dict) and s.get("kind") in kinds,
              f"strategies[{i}].kind must be one of {kinds}, got {s.get('kind') if isinstance(s, dict) else s!r}")
        options = {k: v for k, v in s.items() if k not in ("kind", "name")}
        # Named in tables by the strategy's label when the config gives no name.
        name = s.get("name") or strategy_registry().get(s["kind"]).label
        _need(isinstance(name, str) and name != BASELINE, f"strategies[{i}].name must be a string, not {BASELINE!r}")
        chosen.append(Strategy(name, s["kind"], options))
    names = [s.name for s in chosen]
    _need(len(set(names)) == len(names), f"strategy names must differ (set name = ...): {names}")

    budgets = _int_list(data.get("budgets"), "budgets")
    _need(all(b >= 0 for b in budgets), "budgets must be >= 0 (0 = no limit)")
    seeds = _int_list(data.get("seeds", [0]), "seeds")
    _need(all(0 <= s < 2**63 for s in seeds), "seeds must be between 0 and 2**63")

    edits = data.get("edits", {})
    _need(isinstance(edits, dict) and set(edits) <= {"set", "replace"}, "[edits] takes set = {...} and replace = {...}")
    edits_set = dict(edits.get("set", {}))
    edits_replace = dict(edits.get("replace", {}))
    _need(all(isinstance(v, str) for v in edits_replace.values()), "edits.replace maps old values to new strings")

    targets = data.get("targets", {})
    _need(isinstance(targets, dict) and set(targets) <= {"prompt", "seed"},
          "[targets] takes prompt = [\"NODE.input\", ...] and seed = \"NODE.input\"")
    prompt_targets = targets.get("prompt")
    if prompt_targets is not None:
        prompt_targets = _str_list(prompt_targets, "targets.prompt")
    seed_target = targets.get("seed")
    _need(seed_target is None or isinstance(seed_target, str), "targets.seed must be \"NODE.input\"")

    servers = data.get("servers", {})
    _need(isinstance(servers, dict), "[servers] must be a table")
    urls = _str_list(servers.get("urls", []), "servers.urls") if servers.get("urls") else []
    launch = servers.get("launch")
    _need(launch is None or isinstance(launch, dict), "servers.launch must be a table")
    if launch is not None:
        _need(isinstance(launch.get("comfyui"), str), "servers.launch.comfyui: the folder holding ComfyUI's main.py")
        launch = dict(launch)
        launch["comfyui"] = str((root / launch["comfyui"]).resolve()) if not Path(launch["comfyui"]).is_absolute() \
            else launch["comfyui"]
        extra = set(launch) - {"comfyui", "python", "per_gpu", "count", "args", "start_timeout"}
        _need(not extra, f"servers.launch: unknown keys {sorted(extra)}")

    ray_cfg = dict(data.get("ray", {}))
    run = data.get("run", {})
    report = data.get("report", {})
    output = (root / data.get("output", "sweep_output")).resolve()

    return Config(
        path=path, root=root, workflow=workflow, node=data["node"], output=output,
        prompt_sets=sets, prompt_list=[p.strip() for p in plist], prompt_limit=limit, prompt_sample=sample,
        prompt_sample_seed=int(prompts.get("sample_seed", 0)),
        strategies=chosen, verifiers=verifiers, search_verifiers=search_verifiers,
        eval_verifiers=eval_verifiers, budgets=budgets, seeds=seeds, baseline=bool(data.get("baseline", False)),
        edits_set=edits_set, edits_replace=edits_replace, prompt_targets=prompt_targets, seed_target=seed_target,
        urls=urls, launch=launch, ray=ray_cfg,
        retries=int(run.get("retries", 3)), task_timeout=float(run.get("task_timeout", 3600)),
        recover_wait=float(run.get("recover_wait", 60)),
        bootstrap=int(report.get("bootstrap", 1000)), confidence=float(report.get("confidence", 0.95)),
        raw=data,
    )


def _resolve_set(name: str, root: Path) -> str:
    for prefix in ("drawbench:", "file:"):
        if name.startswith(prefix):
            p = Path(name[len(prefix):])
            return prefix + str(p if p.is_absolute() else (root / p).resolve())
    return name


def _check_cycles(specs: dict[str, VerifierSpec]) -> None:
    def visit(name, stack):
        _need(name not in stack, f"verifiers: a cycle of @references: {' -> '.join([*stack, name])}")
        for value in specs[name].inputs.values():
            if isinstance(value, str) and value.startswith("@"):
                visit(value[1:], [*stack, name])
    for name in specs:
        visit(name, [])


def load(path, require_eval: bool = True) -> Config:
    path = Path(path)
    if tomllib is None:  # pragma: no cover
        raise ConfigError("reading TOML needs Python 3.11+ or `pip install tomli`")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config file {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse(data, path, require_eval)
