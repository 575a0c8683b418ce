"""Prompt sets: the bundled GenEval and T2I-CompBench prompts, DrawBench from a CSV the user
supplies, and plain files.

Names a config may use in ``[prompts] sets``:

- ``geneval`` (553 prompts) or ``geneval/<tag>`` (single_object, two_object, counting, colors,
  position, color_attr);
- ``t2i-compbench`` (all eight validation sets, 300 prompts each) or ``t2i-compbench/<category>``
  (color, shape, texture, spatial, non_spatial, complex, numeracy, 3d_spatial);
- ``drawbench:<file.csv>``: DrawBench is not bundled (no license is stated for it); export the
  sheet as CSV (columns ``Prompts`` and ``Category``) and name the file;
- ``file:<file.txt>`` (one prompt a line) or ``file:<file.jsonl>`` (a ``prompt`` key a line).

Licenses and sources: sweep/prompts/README.md.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "prompts"
GENEVAL_FILE = DATA / "geneval" / "evaluation_metadata.jsonl"
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COMPBENCH_DIR = DATA / "t2i_compbench"
COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy", "3d_spatial")


class PromptSetError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    id: str  # "<set>/<index in the set's file>", stable across runs
    set: str
    text: str
    category: str = ""


def geneval(tag: str | None = None) -> list[Prompt]:
    if tag is not None and tag not in GENEVAL_TAGS:
        raise PromptSetError(f"geneval/{tag}: tags are {', '.join(GENEVAL_TAGS)}")
    out = []
    with open(GENEVAL_FILE, encoding="utf-8") as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            if tag is None or row["tag"] == tag:
                out.append(Prompt(f"geneval/{i:04d}", "geneval", row["prompt"], row["tag"]))
    return out


def t2i_compbench(category: str | None = None) -> list[Prompt]:
    cats = COMPBENCH_CATEGORIES if category is None else (category,)
    if category is not None and category not in COMPBENCH_CATEGORIES:
        raise PromptSetError(f"t2i-compbench/{category}: categories are {', '.join(COMPBENCH_CATEGORIES)}")
    out = []
    for cat in cats:
        lines = (COMPBENCH_DIR / f"{cat}_val.txt").read_text(encoding="utf-8").splitlines()
        out += [Prompt(f"t2i-compbench/{cat}/{i:03d}", "t2i-compbench", text.strip(), cat)
                for i, text in enumerate(lines) if text.strip()]
    return out


def drawbench(csv_path: str | Path) -> list[Prompt]:
    """DrawBench from a CSV export of its sheet (a prompt column, optionally a category one)."""
    path = Path(csv_path)
    if not path.is_file():
        raise PromptSetError(f"drawbench: no file {path} (DrawBench is not bundled: export its sheet as CSV)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        text_col = next((fields[k] for k in ("prompts", "prompt", "text") if k in fields), None)
        if text_col is None:
            raise PromptSetError(f"drawbench: {path} has no Prompts/Prompt/Text column (columns: "
                                 f"{reader.fieldnames})")
        cat_col = next((fields[k] for k in ("category", "categories") if k in fields), None)
        out = []
        for i, row in enumerate(reader):
            text = (row.get(text_col) or "").strip()
            if text:
                out.append(Prompt(f"drawbench/{i:03d}", "drawbench", text,
                                  (row.get(cat_col) or "").strip() if cat_col else ""))
    if not out:
        raise PromptSetError(f"drawbench: {path} holds no prompts")
    return out


def from_file(path: str | Path) -> list[Prompt]:
    path = Path(path)
    if not path.is_file():
        raise PromptSetError(f"file: no file {path}")
    name = path.stem
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                row = json.loads(line)
                out.append(Prompt(f"{name}/{i:04d}", name, str(row["prompt"]).strip(),
                                  str(row.get("category", row.get("tag", "")))))
            else:
                out.append(Prompt(f"{name}/{i:04d}", name, line.strip()))
    return out


def load_set(name: str) -> list[Prompt]:
    if name.startswith("drawbench:"):
        return drawbench(name[len("drawbench:"):])
    if name.startswith("file:"):
        return from_file(name[len("file:"):])
    base, _, sub = name.partition("/")
    if base == "geneval":
        return geneval(sub or None)
    if base == "t2i-compbench":
        return t2i_compbench(sub or None)
    raise PromptSetError(f"unknown prompt set {name!r}: use geneval[/<tag>], t2i-compbench[/<category>], "
                         "drawbench:<file.csv> or file:<file>")


def select(cfg) -> list[Prompt]:
    """Every prompt the config asks for, in a fixed order, each id once."""
    out: list[Prompt] = []
    for name in cfg.prompt_sets:
        prompts = load_set(name)
        if cfg.prompt_limit:
            prompts = prompts[: cfg.prompt_limit]
        elif cfg.prompt_sample:
            # Not for security: a reproducible subset of a benchmark.
            rng = random.Random(f"{cfg.prompt_sample_seed}:{name}")  # noqa: S311
            keep = sorted(rng.sample(range(len(prompts)), min(cfg.prompt_sample, len(prompts))))
            prompts = [prompts[i] for i in keep]
        out += prompts
    out += [Prompt(f"list/{i:04d}", "list", text) for i, text in enumerate(cfg.prompt_list)]
    seen, unique = set(), []
    for p in out:
        if p.id not in seen:
            seen.add(p.id)
            unique.append(p)
    return unique
