"""Tasks: one (setting, prompt, seed) each, with an id that names exactly what it computes.

A setting is a search verifier x a strategy x a budget (or the "no search" baseline). A task's
id hashes the setting's full identity (strategy options, the verifier's nodes, the budget),
the prompt, the seed and the workflow digest, so a re-run recognises finished work, and a
changed option or workflow makes new tasks instead of reusing stale rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .config import BASELINE, WORKFLOW_VERIFIER, Config, Strategy
from .prompts import Prompt, select


@dataclass(frozen=True)
class Setting:
    verifier: str  # a [verifiers] name or "workflow"
    strategy: Strategy
    budget: int
    baseline: bool = False

    @property
    def key(self) -> str:
        if self.baseline:
            return BASELINE
        return f"{self.verifier} / {self.strategy.name} / {self.budget}"

    @property
    def row_label(self) -> tuple[str, str]:
        return ("-", BASELINE) if self.baseline else (self.verifier, self.strategy.name)

    def identity(self, cfg: Config) -> dict:
        if self.baseline:
            return {"baseline": True}
        verifier = (WORKFLOW_VERIFIER if self.verifier == WORKFLOW_VERIFIER
                    else cfg.verifiers[self.verifier].identity(cfg.verifiers))
        return {"verifier": verifier, "strategy": self.strategy.identity(), "budget": self.budget}

    def describe(self) -> dict:
        return {"key": self.key, "verifier": "-" if self.baseline else self.verifier,
                "strategy": BASELINE if self.baseline else self.strategy.name,
                "kind": self.strategy.kind, "options": self.strategy.options,
                "budget": self.budget, "baseline": self.baseline}


@dataclass(frozen=True)
class Task:
    id: str
    setting: Setting
    prompt: Prompt
    seed: int

    def describe(self) -> dict:
        return {"task": self.id, "setting": self.setting.describe(),
                "prompt": {"id": self.prompt.id, "set": self.prompt.set, "text": self.prompt.text,
                           "category": self.prompt.category},
                "seed": self.seed}


# The baseline is random search over one candidate: the stock sample at the seed.
BASELINE_STRATEGY = Strategy(BASELINE, "random", {"candidates": 1})


def settings(cfg: Config) -> list[Setting]:
    out = []
    if cfg.baseline:
        out.append(Setting(cfg.search_verifiers[0], BASELINE_STRATEGY, 0, baseline=True))
    for verifier in cfg.search_verifiers:
        for strategy in cfg.strategies:
            for budget in cfg.budgets:
                out.append(Setting(verifier, strategy, budget))
    return out


def task_id(cfg: Config, setting: Setting, prompt: Prompt, seed: int, digest: str) -> str:
    blob = json.dumps({"workflow": digest, "setting": setting.identity(cfg), "prompt": prompt.text,
                       "prompt_id": prompt.id, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def all_tasks(cfg: Config, prompts: list[Prompt] | None = None) -> list[Task]:
    prompts = select(cfg) if prompts is None else prompts
    digest = cfg.workflow_digest()
    out = []
    for setting in settings(cfg):
        for prompt in prompts:
            for seed in cfg.seeds:
                out.append(Task(task_id(cfg, setting, prompt, seed, digest), setting, prompt, seed))
    ids = [t.id for t in out]
    assert len(set(ids)) == len(ids), "task ids collide"
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def in_shard(task: Task, shard: tuple[int, int] | None) -> bool:
    """Shard by the task id's hash: every task in exactly one of n shards, whatever the order
    tasks are listed in (a Slurm array of n jobs, job i running ``--shard i/n``)."""
    if shard is None:
        return True
    i, n = shard
    return int(task.id, 16) % n == i


def shard_tasks(tasks: list[Task], shard: tuple[int, int] | None) -> list[Task]:
    return [t for t in tasks if in_shard(t, shard)]
