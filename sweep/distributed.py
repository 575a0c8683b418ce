"""One search over many ComfyUI servers: ``python -m sweep search CONFIG.toml``.

The config is a sweep config that names exactly one task (one prompt, one strategy, one seed,
one budget, one search verifier). The search is cut into shards, the shards run on the
servers (the sweep's Ray actors, one per server), the reports are merged, and the winner is
regenerated on one server with stock nodes and saved beside the merged report.

How a search is cut depends on whether its candidates are independent:

- **candidate ranges** (random search, early rejection): candidate i of a search at seed s is
  the stock sample of seed s + i (its noise is the stock KSampler's noise at seed s + i, for a
  latent batch element b of it), so the candidates [a, b) are exactly a search of b - a
  candidates at seed s + a. Random search is merged exactly: every candidate's score is in its
  shard's report, the global ranking is those scores (a rank ensemble: its members' scores of
  every candidate of every shard, ranked together), and the winner, its score and its seed are
  those of the same search on one server. Early rejection halves within each range (a shard's
  survivors are the best of its own range), then the finalists of every shard are ranked
  together by their final samples: the global winner is the best finalist, which is not always
  the one-server search's (that search halves over all candidates at once).
- **islands** (zero-order, path search, particle steering, tree search): their rounds depend on
  each other, so each shard runs the whole strategy as an independent island at seed
  s + island x 2**24 with the task's budget; the global winner is the best of the islands'
  winners. The stock noise of a seed depends only on its low 32 bits (torch's CPU generator
  keeps 32 bits of a seed: seeds s and s + 2**32 give the same noise), so the islands are
  2**24 apart: up to 256 islands whose candidate seeds never overlap while an island uses
  fewer than 2**24 candidate ids.

NFEs are summed over the shards. A shard goes to one server at a time and to another only when
its server was lost before the result came back; exactly one result per shard is merged, so no
candidate is lost or counted twice.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ConfigError
from .tasks import Task, all_tasks
from .workflow import ID, Template, ancestors, is_link, output_index

RANGE_KINDS = ("random", "rejection")
ISLAND_KINDS = ("zero_order", "paths", "particles", "tree")
# Islands' seeds: far apart within the 32 bits of a seed the noise depends on.
ISLAND_STRIDE = 1 << 24
MAX_ISLANDS = (1 << 32) // ISLAND_STRIDE
SEED_MOD = 1 << 64
# The stock nodes a winner is regenerated with, per search node family (see _regeneration).
STOCK_KSAMPLER_INPUTS = ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                         "latent_image", "denoise")


class SearchAborted(RuntimeError):
    pass


# -- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """A piece of the search: candidates [start, start + count) at ``seed`` = base seed + start
    (ranges), or island ``start`` at ``seed`` = base seed + start x 2**24 (islands, count 0)."""

    index: int
    start: int
    count: int
    seed: int
    island: bool = False

    def describe(self) -> dict:
        if self.island:
            return {"shard": self.index, "island": self.start, "seed": self.seed}
        return {"shard": self.index, "candidates": [self.start, self.start + self.count], "seed": self.seed}


def mode_of(kind: str) -> str:
    if kind in RANGE_KINDS:
        return "ranges"
    if kind in ISLAND_KINDS:
        return "islands"
    raise ConfigError(f"strategies[0].kind: {kind!r} has no distributed form (ranges: {RANGE_KINDS}; "
                      f"islands: {ISLAND_KINDS})")


def plan_shards(kind: str, seed: int, shards: int, candidates: int | None = None) -> list[Shard]:
    """``shards`` pieces of one search: contiguous candidate ranges as equal as they can be
    (ranges), or ``shards`` islands."""
    if shards < 1:
        raise ValueError(f"--shards must be at least 1, got {shards}")
    if mode_of(kind) == "islands":
        if shards > MAX_ISLANDS:
            raise ValueError(f"--shards {shards}: at most {MAX_ISLANDS} islands (their seeds must not overlap)")
        return [Shard(i, i, 0, (seed + i * ISLAND_STRIDE) % SEED_MOD, True) for i in range(shards)]
    if not candidates or candidates < 1:
        raise ValueError("candidates: a search split by candidate range needs at least one candidate")
    shards = min(shards, candidates)
    bounds = [candidates * i // shards for i in range(shards + 1)]
    return [Shard(i, a, b - a, (seed + a) % SEED_MOD) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def the_task(cfg: Config) -> Task:
    """The one task a distributed search runs, or a ConfigError that says what to cut."""
    tasks = [t for t in all_tasks(cfg) if not t.setting.baseline]
    if len(tasks) != 1:
        raise ConfigError(f"a distributed search runs one search: give one prompt, one [[strategies]], one seed, "
                          f"one budget and one search verifier (this config makes {len(tasks)} tasks)")
    task = tasks[0]
    if mode_of(task.setting.strategy.kind) == "ranges" and task.setting.budget:
        raise ConfigError(f"budgets = [{task.setting.budget}]: a search split by candidate range is sized by its "
                          "candidates (set candidates = N in [[strategies]]) and runs without a budget; set "
                          "budgets = [0]")
    return task


def candidates_of(task: Task) -> int:
    from .config import strategy_registry

    spec = strategy_registry().get(task.setting.strategy.kind)
    return int(task.setting.strategy.options.get("candidates", spec.defaults().get("candidates", 0)))


# -- prompts ------------------------------------------------------------------------------------
def shard_prompt(template: Template, task: Task, shard: Shard) -> tuple[dict, dict]:
    """The task's prompt cut down to the search and its report, run as this shard."""
    prompt, outputs = template.build(task)
    options = prompt[template.options_id]["inputs"]
    if not shard.island:
        options["candidates"] = shard.count
        noise = prompt[template.search_id]["inputs"].get("noise")
        if is_link(noise) and prompt.get(noise[0], {}).get("class_type") == "NoiseCandidates":
            prompt[noise[0]]["inputs"]["count"] = max(shard.count, 1)
    seed_node, seed_input = template.seed_target
    prompt[seed_node]["inputs"][seed_input] = shard.seed
    keep = ancestors(prompt, outputs["report"])
    return {k: v for k, v in prompt.items() if k in keep}, {"image": None, "report": outputs["report"], "eval": {}}


def regeneration_prompt(template: Template, task: Task, seed: int, problem: int, problems: int) -> tuple[dict, dict]:
    """The winner of problem ``problem`` regenerated with stock nodes (the report's replay rule):
    a KSampler (KSampler-style search nodes) or RandomNoise + SamplerCustomAdvanced (NoiseSearch)
    at the winner's seed, on the latent (element ``problem`` of a latent batch: LatentFromBatch),
    decoded, saved, and scored by the search verifier and the evaluation verifiers."""
    prompt, outputs = template.build(task)
    search = prompt[template.search_id]
    latent = search["inputs"]["latent_image"]
    if problems > 1:
        prompt[f"{ID}_regen_latent"] = {"class_type": "LatentFromBatch",
                                        "inputs": {"samples": latent, "batch_index": problem, "length": 1}}
        latent = [f"{ID}_regen_latent", 0]
    if template.family == "ksampler":
        stock = {k: search["inputs"][k] for k in STOCK_KSAMPLER_INPUTS if k in search["inputs"]}
        prompt[template.search_id] = {"class_type": "KSampler", "inputs": {**stock, "seed": seed,
                                                                           "latent_image": latent}}
    elif template.family == "options":
        prompt[f"{ID}_regen_noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}}
        prompt[template.search_id] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": [f"{ID}_regen_noise", 0], "latent_image": latent,
            **{k: search["inputs"][k] for k in ("guider", "sampler", "sigmas")}}}
    else:
        raise ConfigError(f"node {template.search_id}: a distributed search regenerates its winner with stock "
                          "nodes from a KSampler-style search node or NoiseSearch; an earlier release's node "
                          "cannot be used here (replace it with its current node)")
    prompt[outputs["image"]]["inputs"]["filename_prefix"] += f"_regenerated_{problem}"
    judge = prompt[template.judge_id]["inputs"]
    condition = judge.get("condition", "")
    if isinstance(condition, str):
        condition = problem_condition(condition, problem, problems)
    score, show = f"{ID}_regen_score", f"{ID}_regen_score_value"
    prompt[score] = {"class_type": "VerifierScore", "inputs": {
        "images": [f"{ID}_decode", 0], "verifier": judge["verifier"], "condition": condition}}
    prompt[show] = {"class_type": "PreviewAny", "inputs": {
        "source": [score, output_index(template.info, "VerifierScore", "best_score")]}}
    outputs = {"image": outputs["image"], "report": None, "eval": {**outputs["eval"], "search_verifier": show}}
    keep = set()
    for node_id in [outputs["image"], *outputs["eval"].values()]:
        keep |= ancestors(prompt, node_id)
    return {k: v for k, v in prompt.items() if k in keep}, outputs


def problem_condition(condition, problem: int, problems: int) -> str:
    """The search verifier's condition of one problem (a JSON list gives one per latent)."""
    text = str(condition or "").strip()
    if problems > 1 and text.startswith("[") and text.endswith("]"):
        try:
            items = json.loads(text)
            return str(items[problem % len(items)])
        except (ValueError, IndexError, ZeroDivisionError):
            pass
    return str(condition or "")


# -- merging ------------------------------------------------------------------------------------
class MergeError(ValueError):
    """The shards' reports cannot be merged exactly (the message says what is missing)."""


def problems_of(report: dict) -> list[dict]:
    return report.get("problems") or [report]


def _is_final(entry: dict) -> bool:
    return entry.get("sample", "final") == "final"


def _members(entry: dict, where: str):
    members = entry.get("members")
    if members is None:
        raise MergeError(f"{where}: the verifier ranks candidates relative to each other (a rank ensemble) and the "
                         "report does not store each candidate's member scores ('members'), so the shards cannot "
                         "be ranked together; update the pack on every server")
    return members


def rank_values(entries: list[dict], relative: bool, weights, where: str) -> list[float]:
    """Orderable values of ``entries`` ranked together: their scores (an absolute verifier), or
    their members' scores ranked over all of them (a rank ensemble, as one search would)."""
    if not relative:
        return [float(e["score"]) for e in entries]
    import torch

    from verifiers.ensemble import mean_rank

    members = torch.tensor([_members(e, where) for e in entries], dtype=torch.float64)  # [N, V]
    finite = torch.isfinite(members).all(dim=1)
    out = [-math.inf] * len(entries)
    if finite.any():
        ranked = mean_rank(members[finite].T, weights).tolist()
        for i, v in zip([i for i, f in enumerate(finite.tolist()) if f], ranked):
            out[i] = float(v)
    return out


def _best_first(values: list[float]) -> list[int]:
    # Stable on equal values: the earlier entry (lower global id, lower island) wins, as in one search.
    return sorted(range(len(values)), key=lambda i: -values[i])


def merge_problem(mode: str, parts: list[tuple[Shard, dict, str]], top_k: int, b: int = 0) -> dict:
    """Merge problem ``b``'s reports of every shard: ``parts`` is (shard, that problem's report,
    server) in shard order. Returns the merged problem report."""
    first = parts[0][1]
    relative = bool(first.get("relative", False)) or str(first.get("verifier", "")).startswith("ensemble(")
    weights = first.get("weights")
    where = f"problem {b}"
    candidates, ranked = [], []
    for shard, rep, server in parts:
        for e in rep["candidates"]:
            gid = e["id"] + shard.start if not shard.island else e["id"]
            entry = {**e, "id": gid, "local_id": e["id"], "shard": shard.index, "server": server}
            if shard.island:
                entry["island"] = shard.start
            else:  # candidate i of the search is the stock sample at seed + i
                entry["seed"] = (shard.seed + e["id"]) % SEED_MOD
            candidates.append(entry)
        if mode == "islands":
            # The island's winner, as the island ranked it: its last entry of the winning id.
            winner = [e for e in candidates if e["shard"] == shard.index and e["local_id"] == rep["best"]["id"]]
            ranked.append({**(winner[-1] if winner else {}), "score": rep["best"]["score"],
                           "id": rep["best"]["id"], "shard": shard.index, "island": shard.start, "server": server,
                           "seed": rep["replay"].get("seed"), "replay": rep["replay"]})
    regenerated = mode == "ranges" and any(e.get("sample") == "search schedule" for e in candidates)
    if regenerated:  # random search on a cheaper schedule: ranked by its search samples
        ranked = [e for e in candidates if e.get("sample") == "search schedule"]
    elif mode == "ranges":  # random search: every candidate; early rejection: every shard's finalists
        ranked = [e for e in candidates if _is_final(e)]
    values = rank_values(ranked, relative, weights, where)
    order = _best_first(values)
    top = [{**ranked[i], "merged_score": values[i]} for i in order[:max(1, top_k)]]
    best, score = top[0], values[order[0]]
    if regenerated and not relative:  # the score of its regenerated (final) sample, as one search reports
        final = [e for e in candidates if e["id"] == best["id"] and e.get("sample") == "final"]
        score = float(final[-1]["score"]) if final else score
    ids = sorted({e["id"] for e in candidates}) if mode == "ranges" else None
    return {
        "best": {"id": best["id"], "score": score, "seed": best.get("seed"), "shard": best["shard"],
                 "server": best["server"], **({"island": best["island"]} if mode == "islands" else {})},
        "top": [{k: e[k] for k in ("id", "seed", "shard", "server", "merged_score") if k in e} for e in top],
        "candidates": candidates,
        "candidate_ids": ids,
        "relative": relative,
        "nfe": {"search_total": sum(int(r["nfe"]["search_total"]) for _, r, _ in parts),
                "measured": sum(int(r["nfe"].get("measured") or 0) for _, r, _ in parts),
                "by_shard": [int(r["nfe"]["search_total"]) for _, r, _ in parts]},
        "replay": _replay(mode, best, parts),
    }


def _replay(mode: str, best: dict, parts) -> dict:
    """The winner's replay rule: its shard's rule with the global candidate id (ranges)."""
    rep = next(r for s, r, _ in parts if s.index == best["shard"])
    rule = dict(rep.get("replay") or {})
    if mode == "ranges":
        rule.update(seed=best["seed"], candidate=best["id"])
        for key in ("how", "with_seed"):
            if key in rule:
                rule[key] = rule[key].replace(f"seed {(rep.get('replay') or {}).get('seed')}", f"seed {best['seed']}")
    return rule


def merge(task: Task, plan: list[Shard], results: dict[int, dict], top_k: int) -> dict:
    """The merged report of a search from exactly one result per shard."""
    missing = [s.index for s in plan if s.index not in results]
    if missing:
        raise MergeError(f"shards {missing} have no result")
    mode = "islands" if plan[0].island else "ranges"
    reports = [(s, results[s.index]["report"], results[s.index]["server"]) for s in plan]
    rules = {str((problems_of(r)[0].get("selection") or {}).get("rule", "best")) for _, r, _ in reports}
    if mode == "ranges" and rules != {"best"}:
        # A tempered draw or a threshold stop depends on every candidate the search saw at once.
        raise MergeError(f"selection: the shards ran with {sorted(rules)} selection; a search split by candidate "
                         "range merges the best candidates only. Use best selection (no selection input), or run "
                         "the search on one server")
    batch = len(problems_of(reports[0][1]))
    merged = [merge_problem(mode, [(s, problems_of(r)[b], srv) for s, r, srv in reports], top_k, b)
              for b in range(batch)]
    base = reports[0][1]
    out = {
        "algorithm": base.get("algorithm"),
        "distributed": {
            "mode": mode, "seed": task.seed, "shards": [
                {**s.describe(), "server": results[s.index]["server"], "attempt": results[s.index]["attempt"],
                 "nfe": int(results[s.index]["report"]["nfe"]["search_total"]),
                 "wall_s": results[s.index].get("wall_s")} for s in plan],
            "servers": sorted({results[s.index]["server"] for s in plan})},
        "settings": {**base.get("settings", {}), "seed": task.seed},
        "verifier": base.get("verifier"),
        "nfe": {"search_total": sum(m["nfe"]["search_total"] for m in merged),
                "measured": sum(m["nfe"]["measured"] for m in merged),
                "by_shard": [sum(m["nfe"]["by_shard"][i] for m in merged) for i in range(len(plan))]},
    }
    if batch == 1:
        return {**out, **{k: v for k, v in merged[0].items() if k != "nfe"}}
    return {**out, "batch": batch, "problems": [{"problem": b, **m} for b, m in enumerate(merged)]}


# -- running ------------------------------------------------------------------------------------
def output_dir(cfg: Config, task: Task) -> Path:
    return Path(cfg.output) / f"search-{task.id}"


def _log_attempt(path: Path, **row) -> None:
    row["t"] = round(time.time(), 3)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_attempts(folder: Path) -> list[dict]:
    path = Path(folder) / "attempts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def run(cfg: Config, shards: int | None = None, address: str | None = None, progress: bool = True,
        log=print) -> int:
    from .scheduler import init_ray, make_workers, stop_workers

    task = the_task(cfg)
    kind = task.setting.strategy.kind
    out = output_dir(cfg, task)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    ray, owned = init_ray(cfg, address)
    workers = []
    try:
        workers = make_workers(ray, cfg)
        count = shards or len(workers)
        plan = plan_shards(kind, task.seed, count, candidates_of(task) if mode_of(kind) == "ranges" else None)
        log(f"search {task.id}: {task.setting.strategy.name} ({mode_of(kind)}), {len(plan)} shards over "
            f"{len(workers)} servers -> {out}")
        return _drive(ray, cfg, task, plan, workers, out, progress, log)
    finally:
        stop_workers(ray, workers)
        if owned:
            ray.shutdown()


def _drive(ray, cfg: Config, task: Task, plan: list[Shard], workers, out: Path, progress: bool, log) -> int:
    from .scheduler import Bars, Servers

    servers = Servers(ray, workers, cfg.recover_wait, log)
    servers.start()
    if not servers.idle:
        raise SearchAborted("no ComfyUI server answers: " + ", ".join(servers.names))
    template = Template(cfg, ray.get(servers.actors[servers.idle[0]].object_info.remote()))
    attempts_path = out / "attempts.jsonl"
    pending, attempts, results = deque(plan), {}, {}
    bars = Bars(len(plan), 0, servers.names, progress, what="search", unit="shard", counts="candidates")
    servers.show_on(bars)

    def send(shard: Shard, name: str) -> dict:
        prompt, outputs = shard_prompt(template, task, shard)
        attempts[shard.index] = attempts.get(shard.index, 0) + 1
        _log_attempt(attempts_path, shard=shard.index, server=name, outcome="dispatched",
                     attempt=attempts[shard.index])
        bars.status(name, "running " + json.dumps(shard.describe()))
        return {"task": f"{task.id}-{shard.index}", "prompt": prompt, "outputs": outputs,
                "timeout": cfg.task_timeout}

    def on_result(shard: Shard, name: str, t0: float, result: dict) -> None:
        status = result["status"]
        _log_attempt(attempts_path, shard=shard.index, server=name, outcome=status,
                     attempt=attempts[shard.index], error=result.get("error"))
        if status == "ok":
            # Exactly one result per shard: a shard is sent again only after its server was lost.
            results[shard.index] = {"report": result["report"], "server": name,
                                    "attempt": attempts[shard.index], "wall_s": round(time.time() - t0, 3)}
            _write_json(out / "shards" / f"shard-{shard.index}.json", {**shard.describe(), **results[shard.index]})
            bars.finished(name, shard.count or len(problems_of(result["report"])[0]["candidates"]))
            servers.release(name)
        elif status == "lost":
            log(f"server {name}: lost ({result.get('error')}); shard {shard.index} goes back to the queue")
            if attempts[shard.index] >= cfg.retries:
                raise SearchAborted(f"shard {shard.index} was lost on {attempts[shard.index]} servers")
            pending.appendleft(shard)
            servers.lost(name)
        else:
            raise SearchAborted(f"shard {shard.index} failed on {name}: {result.get('error')}")

    def on_return(name: str, info: dict | None) -> None:
        if info:
            log(f"server {name}: back")

    try:
        servers.run(pending, send, on_result, on_return=on_return,
                    aborted=lambda: SearchAborted(f"every server is lost; shards {[s.index for s in pending]} "
                                                  "did not run"))
    finally:
        bars.close()
    top_k = int(task.setting.strategy.options.get("top_k", 1))
    merged = merge(task, plan, results, top_k)
    _regenerate(ray, cfg, task, template, merged, servers.idle, servers.actors, out, log)
    merged["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _write_json(out / "report.json", merged)
    best = problems_of(merged)[0]["best"]
    log(f"winner: candidate {best['id']} (seed {best['seed']}, shard {best['shard']} on {best['server']}), "
        f"score {best['score']:.6g}; {merged['nfe']['search_total']} NFEs over {len(plan)} shards -> "
        f"{out / 'report.json'}")
    return 0


def _regenerate(ray, cfg, task, template, merged: dict, idle, actors, out: Path, log) -> None:
    """Every problem's winner regenerated with stock nodes on one idle server, saved with its
    scores; the report says where (a winner with no one-noise replay is not regenerated)."""
    problems = problems_of(merged)
    for b, problem in enumerate(problems):
        seed = problem["replay"].get("seed")
        if "with_seed" not in problem["replay"] or not idle:
            # A winner that is not the stock sample of a seed (a zero-order neighbour, a path
            # or particle) replays only from its noise, which stays on its server.
            problem["regenerated"] = {"skipped": "no server left" if not idle else
                                      "the winner is not the stock sample of a seed; its replay rule: "
                                      + str(problem["replay"].get("how"))}
            continue
        prompt, outputs = regeneration_prompt(template, task, int(seed), b, len(problems))
        name = idle[0]
        result = ray.get(actors[name].run.remote({"task": f"{task.id}-regenerate-{b}", "prompt": prompt,
                                                  "outputs": outputs, "timeout": cfg.task_timeout}))
        if result["status"] != "ok":
            raise SearchAborted(f"regenerating the winner on {name} failed: {result.get('error')}")
        image = out / ("winner.png" if len(problems) == 1 else f"winner-{b}.png")
        image.write_bytes(result["png"])
        scores = dict(result["eval"])
        problem["regenerated"] = {"server": name, "image": image.name, "seed": int(seed),
                                  "search_verifier_score": scores.pop("search_verifier"), "eval": scores,
                                  "nodes": "KSampler" if template.family == "ksampler"
                                  else "RandomNoise + SamplerCustomAdvanced"}
        log(f"winner regenerated on {name} with stock nodes: {image}")
