"""python -m sweep search: one search split over two live ComfyUI servers under a local Ray.

Random search split by candidate range returns the winner, score and seed of the same search on
one server, with every candidate once in the merged report; a server killed mid-search has its
range finished on the other; island search's global winner is the best island winner; a shard
of candidates [a, b) is exactly a search of b - a candidates at seed + a (latent batches too).
The servers run the pack's SD1.5 example workflow with the tiny checkpoint and the tiny
brightness classifier as the search verifier (as tests/test_sweep.py does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from sweep import distributed as dist
from sweep.config import ConfigError, load
from sweep.workflow import Template
from tests.harness.host import REPO
from tests.live_servers import VERIFIER_TABLES, brightness_servers, run_tables

EXAMPLE = REPO / "example_workflows" / "sd15_random_search_imagereward.json"
PROMPT = "a red cube on a table"
SEED = 7


def config_text(output: Path, urls, strategy: str, budget: int = 0, batch: int = 1, extra: str = "",
                verifier: str = "bright", workflow: Path = EXAMPLE, node: str = "RandomSearchSampler") -> str:
    edits = {"EmptyLatentImage.width": 32, "EmptyLatentImage.height": 32, "EmptyLatentImage.batch_size": batch}
    if node == "RandomSearchSampler":
        edits["RandomSearchSampler.steps"] = 2
    return f"""
workflow = {json.dumps(str(workflow))}
node = "{node}"
output = {json.dumps(str(output))}
budgets = [{budget}]
seeds = [{SEED}]
search_verifiers = ["{verifier}"]
eval_verifiers = ["bright"]

[prompts]
list = [{json.dumps(PROMPT)}]

[[strategies]]
{strategy}

{VERIFIER_TABLES}
[verifiers.both]
class_type = "VerifierEnsemble"
inputs = {{ verifier_1 = "@bright", verifier_2 = "@clipscore" }}

[edits]
set = {{ {", ".join(f'"{k}" = {v}' for k, v in edits.items())} }}
replace = {{ "v1-5-pruned-emaonly.safetensors" = "tiny_sd15.safetensors" }}

{run_tables(urls)}
{extra}
"""


def write_config(tmp_path: Path, urls, strategy: str, **kw) -> Path:
    path = tmp_path / "search.toml"
    path.write_text(config_text(tmp_path / "out", urls, strategy, **kw))
    return path


def search_cmd(cfg_path: Path, *args) -> list[str]:
    return [sys.executable, "-m", "sweep", "search", str(cfg_path), *map(str, args)]


def run_search(cfg_path: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(search_cmd(cfg_path, *args), cwd=str(REPO), capture_output=True, text=True,
                          timeout=timeout)


# -- the plan (no servers) ------------------------------------------------------------------------
def test_ranges_cover_the_candidates_once_and_islands_never_share_a_seed():
    for n, k in ((8, 2), (7, 3), (3, 5), (64, 4)):
        plan = dist.plan_shards("random", 10, k, n)
        ids = [i for s in plan for i in range(s.start, s.start + s.count)]
        assert ids == list(range(n)) and len(plan) == min(n, k)
        assert all(s.seed == 10 + s.start and s.count >= 1 for s in plan)
    # Seeds wrap as the nodes' seeds do (the stock noise of seed + i modulo 2**64).
    assert dist.plan_shards("rejection", 2**64 - 1, 2, 4)[1].seed == 1
    islands = dist.plan_shards("zero_order", 5, 3)
    assert [s.seed for s in islands] == [5, 5 + 2**24, 5 + 2**25] and all(s.island for s in islands)
    # Island i's candidate j is the noise of seed + i * 2**24 + j, and a noise depends on the low 32
    # bits of its seed (torch's CPU generator): no two islands share one.
    assert torch.equal(torch.randn(4, generator=torch.Generator().manual_seed(5)),
                       torch.randn(4, generator=torch.Generator().manual_seed(5 + 2**32)))
    used = [{(s.seed + j) % 2**32 for j in range(1000)} for s in dist.plan_shards("paths", 2**32 - 3, 256)]
    assert len(set().union(*used)) == 256 * 1000
    with pytest.raises(ValueError, match="at most 256 islands"):
        dist.plan_shards("tree", 0, 257)
    with pytest.raises(ConfigError, match="no distributed form"):
        dist.plan_shards("greedy", 0, 2, 4)
    with pytest.raises(ValueError, match="--shards"):
        dist.plan_shards("random", 0, 0, 4)


def test_a_config_names_one_search(tmp_path):
    cfg = load(write_config(tmp_path, [], 'kind = "random"\ncandidates = 8', budget=16), require_eval=False)
    with pytest.raises(ConfigError, match="budgets = \\[0\\]"):
        dist.the_task(cfg)
    text = config_text(tmp_path / "out", [], 'kind = "random"').replace("seeds = [7]", "seeds = [7, 8]")
    (tmp_path / "two.toml").write_text(text)
    with pytest.raises(ConfigError, match="makes 2 tasks"):
        dist.the_task(load(tmp_path / "two.toml", require_eval=False))
    # Islands keep the budget: every island runs the whole strategy within it.
    task = dist.the_task(load(write_config(tmp_path, [], 'kind = "zero_order"', budget=16), require_eval=False))
    assert task.setting.budget == 16


def entry(i, score, members=None, **extra):
    return {"id": i, "round": 0, "score": score, **({"members": members} if members else {}), **extra}


def report(candidates, best, nfe, replay_seed=None, verifier="bright"):
    return {"algorithm": "random", "verifier": verifier, "settings": {}, "candidates": candidates,
            "best": {"id": best[0], "score": best[1]}, "nfe": {"search_total": nfe, "measured": nfe},
            "replay": {"seed": replay_seed, "candidate": best[0], "how": f"KSampler with seed {replay_seed}"}}


def test_rank_ensemble_shards_are_ranked_together_from_their_members(tmp_path):
    """Two shards of a rank ensemble: each shard's own ranks name a different winner than the
    ranking of all candidates; the merge re-ranks every candidate's member scores."""
    from verifiers.ensemble import mean_rank

    # Candidates 0..5, two members each; shards [0, 3) and [3, 6). Within its shard candidate 2
    # has the best mean rank of all (2.75); ranked with everyone, candidate 5 wins.
    members = [[0.4, 1], [0.5, 8], [0.6, 8], [0.3, 4], [0.4, 9], [0.7, 8]]
    everyone = mean_rank(torch.tensor(members, dtype=torch.float64).T).tolist()
    assert max(range(6), key=lambda i: everyone[i]) == 5
    plan = dist.plan_shards("random", 100, 2, 6)
    results, local_best = {}, []
    for s in plan:
        local = members[s.start:s.start + s.count]
        ranks = mean_rank(torch.tensor(local, dtype=torch.float64).T).tolist()
        best = max(range(len(local)), key=lambda j: (ranks[j], -j))
        local_best.append((ranks[best], s.start + best))
        results[s.index] = {"report": report([entry(j, ranks[j], m) for j, m in enumerate(local)], (best, ranks[best]),
                                             2 * s.count, s.seed + best, "ensemble(bright, clip)"),
                            "server": f"s{s.index}", "attempt": 1}
    assert max(local_best)[1] == 2  # the shards' own scores would pick the wrong winner
    task = dist.the_task(load(write_config(tmp_path, [], 'kind = "random"'), require_eval=False))
    merged = dist.merge(task, plan, results, top_k=2)
    assert merged["best"]["id"] == 5 and merged["best"]["score"] == pytest.approx(everyone[5])
    assert merged["best"]["seed"] == 105 and merged["replay"]["seed"] == 105
    assert "seed 105" in merged["replay"]["how"]
    assert [t["id"] for t in merged["top"]] == [5, 2]
    assert merged["candidate_ids"] == list(range(6)) and merged["nfe"]["search_total"] == 12
    for r in results.values():
        for e in r["report"]["candidates"]:
            e.pop("members")
    with pytest.raises(dist.MergeError, match="members"):
        dist.merge(task, plan, results, top_k=1)


# -- live servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, tiny_checkpoint_path):
    with brightness_servers(tmp_path_factory, tiny_checkpoint_path, "search_server") as servers:
        yield servers


def one_server_search(server, cfg, shard: dist.Shard) -> dict:
    """The task's search (or one shard of it) on one server through the worker, no Ray."""
    from sweep.worker import ServerWorker

    task = dist.the_task(cfg)
    template = Template(cfg, server.object_info())
    prompt, outputs = dist.shard_prompt(template, task, shard)
    result = ServerWorker("one", url=server.url).run({"task": "t", "prompt": prompt, "outputs": outputs,
                                                      "timeout": 300})
    assert result["status"] == "ok", result.get("error")
    return result["report"]


def scores_by_id(report: dict) -> list[dict[int, float]]:
    return [{e["id"]: e["score"] for e in p["candidates"]} for p in dist.problems_of(report)]


def test_a_shard_is_that_slice_of_the_search_on_a_latent_batch(two_servers, tmp_path):
    """Candidates [a, b) of a search at seed s, for every problem of a latent batch of 2, are the
    candidates of a search of b - a at seed s + a (the same noises, so the same scores)."""
    a = two_servers[0]
    cfg = load(write_config(tmp_path, [a.url], 'kind = "random"\ncandidates = 5', batch=2), require_eval=False)
    whole = one_server_search(a, cfg, dist.Shard(0, 0, 5, SEED))
    parts = [one_server_search(a, cfg, s) for s in dist.plan_shards("random", SEED, 2, 5)]
    assert len(dist.problems_of(whole)) == 2
    for b, scores in enumerate(scores_by_id(whole)):
        assert sorted(scores) == list(range(5))
        sliced = {}
        for shard, part in zip(dist.plan_shards("random", SEED, 2, 5), parts):
            sliced.update({shard.start + i: v for i, v in scores_by_id(part)[b].items()})
        assert sliced == pytest.approx(scores, abs=1e-5), f"problem {b}"


def read_report(cfg) -> tuple[dict, Path]:
    out = dist.output_dir(cfg, dist.the_task(cfg))
    return json.loads((out / "report.json").read_text()), out


def test_random_search_over_two_servers_is_the_one_server_search(two_servers, tmp_path):
    a, b = two_servers
    cfg_path = write_config(tmp_path, [a.url, b.url], 'kind = "random"\ncandidates = 12')
    cfg = load(cfg_path, require_eval=False)
    alone = one_server_search(a, cfg, dist.Shard(0, 0, 12, SEED))
    proc = run_search(cfg_path, "--shards", 4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged, out = read_report(cfg)
    # The same winner, score and seed as the search on one server.
    assert merged["best"]["id"] == alone["best"]["id"]
    assert merged["best"]["score"] == pytest.approx(alone["best"]["score"], abs=1e-5)
    assert merged["best"]["seed"] == alone["replay"]["seed"] == SEED + alone["best"]["id"]
    assert merged["replay"]["seed"] == alone["replay"]["seed"]
    # Every candidate once, with the score it has in the one-server search; NFEs summed.
    ids = [e["id"] for e in merged["candidates"]]
    assert sorted(ids) == list(range(12)) and len(ids) == 12
    assert {e["id"]: e["score"] for e in merged["candidates"]} == pytest.approx(scores_by_id(alone)[0], abs=1e-5)
    assert all(e["seed"] == SEED + e["id"] for e in merged["candidates"])
    assert merged["nfe"]["search_total"] == alone["nfe"]["search_total"] == sum(merged["nfe"]["by_shard"])
    shards = merged["distributed"]["shards"]
    assert [s["candidates"] for s in shards] == [[0, 3], [3, 6], [6, 9], [9, 12]]
    assert {s["server"] for s in shards} == {a.url.split("://")[1], b.url.split("://")[1]}, "one server did all"
    # The winner regenerated with a stock KSampler at its seed scores what the search said.
    regen = merged["regenerated"]
    assert regen["nodes"] == "KSampler" and regen["seed"] == merged["best"]["seed"]
    assert regen["search_verifier_score"] == pytest.approx(merged["best"]["score"], abs=1e-4)
    assert regen["eval"]["bright"] == pytest.approx(merged["best"]["score"], abs=1e-4)
    with Image.open(out / "winner.png") as im:
        assert im.size == (32, 32)
    # Progress: shards done, and a bar per server counting the candidates it searched.
    for srv in (a, b):
        assert f"{srv.url.split('://')[1]} " in proc.stderr and "candidates" in proc.stderr, proc.stderr[-2000:]
    assert "search: 100%" in proc.stderr, proc.stderr[-2000:]


def test_island_search_winner_is_the_best_island_winner(two_servers, tmp_path):
    a, b = two_servers
    cfg_path = write_config(tmp_path, [a.url, b.url], 'kind = "zero_order"\nneighbours = 2\niterations = 2')
    cfg = load(cfg_path, require_eval=False)
    proc = run_search(cfg_path, "--shards", 3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged, out = read_report(cfg)
    islands = [json.loads((out / "shards" / f"shard-{i}.json").read_text()) for i in range(3)]
    assert [i["seed"] for i in islands] == [SEED, SEED + 2**24, SEED + 2**25]
    bests = [i["report"]["best"]["score"] for i in islands]
    best = max(range(3), key=lambda i: (bests[i], -i))
    assert merged["best"]["island"] == best and merged["best"]["score"] == bests[best]
    assert merged["best"]["id"] == islands[best]["report"]["best"]["id"]
    assert merged["best"]["seed"] == islands[best]["report"]["replay"]["seed"]
    assert merged["nfe"]["search_total"] == sum(i["report"]["nfe"]["search_total"] for i in islands)
    # Islands search different noises: their first candidates' scores differ.
    firsts = {i["report"]["candidates"][0]["score"] for i in islands}
    assert len(firsts) == 3
    # A seeded winner (an initial pivot, a restart) is regenerated with a stock KSampler; a
    # neighbour replays only from its noise (on its island's server): the report says so.
    if "with_seed" in merged["replay"]:
        assert merged["regenerated"]["search_verifier_score"] == pytest.approx(merged["best"]["score"], abs=1e-4)
    else:
        assert "not the stock sample of a seed" in merged["regenerated"]["skipped"]
        assert not (out / "winner.png").exists()


def test_noise_search_workflow_is_split_and_its_winner_regenerated_with_sampler_custom_advanced(two_servers,
                                                                                               tmp_path):
    """The composable form (a search options node feeding NoiseSearch, noises from NoiseCandidates):
    shards set NoiseCandidates' seed and count; the winner is regenerated with RandomNoise +
    SamplerCustomAdvanced at its seed."""
    from tests.test_sweep import NOISE_SEARCH_API

    a, b = two_servers
    workflow = tmp_path / "noise_search_api.json"
    workflow.write_text(json.dumps(NOISE_SEARCH_API))
    path = tmp_path / "search.toml"
    path.write_text(config_text(tmp_path / "out", [a.url, b.url], 'kind = "random"\ncandidates = 6',
                                workflow=workflow, node="NoiseSearch"))
    cfg = load(path, require_eval=False)
    alone = one_server_search(a, cfg, dist.Shard(0, 0, 6, SEED))
    prompt, _ = dist.shard_prompt(Template(cfg, a.object_info()), dist.the_task(cfg), dist.Shard(1, 4, 2, SEED + 4))
    assert prompt["5"]["inputs"] == {"seed": SEED + 4, "count": 2}
    proc = run_search(path, "--shards", 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged, out = read_report(cfg)
    assert (merged["best"]["id"], merged["best"]["seed"]) == (alone["best"]["id"], alone["replay"]["seed"])
    assert merged["best"]["score"] == pytest.approx(alone["best"]["score"], abs=1e-5)
    regen = merged["regenerated"]
    assert regen["nodes"] == "RandomNoise + SamplerCustomAdvanced"
    assert regen["search_verifier_score"] == pytest.approx(merged["best"]["score"], abs=1e-4)
    assert (out / "winner.png").is_file()


def test_a_server_killed_mid_search_has_its_range_finished_elsewhere(two_servers, tmp_path):
    """Runs last: it kills server b."""
    a, b = two_servers
    # Shards of 16 candidates (about 2 s each on 2 cores): long enough to be killed in flight.
    cfg_path = write_config(tmp_path, [a.url, b.url], 'kind = "random"\ncandidates = 64')
    cfg = load(cfg_path, require_eval=False)
    alone = one_server_search(a, cfg, dist.Shard(0, 0, 64, SEED))
    out = dist.output_dir(cfg, dist.the_task(cfg))
    logs = tmp_path / "run"
    with open(f"{logs}.out", "w") as o, open(f"{logs}.err", "w") as e:
        proc = subprocess.Popen(search_cmd(cfg_path, "--shards", 4), cwd=str(REPO), stdout=o, stderr=e, text=True)
    name_b = b.url.split("://")[1]
    deadline = time.time() + 300
    while not any(x["server"] == name_b and x["outcome"] == "dispatched" for x in dist.read_attempts(out)):
        assert proc.poll() is None and time.time() < deadline, (Path(f"{logs}.out").read_text()
                                                                 + Path(f"{logs}.err").read_text())
        time.sleep(0.05)
    b.proc.kill()
    proc.wait(timeout=600)
    stdout = Path(f"{logs}.out").read_text()
    assert proc.returncode == 0, stdout + Path(f"{logs}.err").read_text()
    assert f"server {name_b}: lost" in stdout, stdout
    attempts = dist.read_attempts(out)
    outcomes = Counter((x["shard"], x["outcome"]) for x in attempts)
    assert all(outcomes[(i, "ok")] == 1 for i in range(4)), outcomes  # each shard merged exactly once
    lost = [x["shard"] for x in attempts if x["outcome"] == "lost"]
    assert lost, "server b was killed with a shard in flight"
    merged, _ = read_report(cfg)
    for s in merged["distributed"]["shards"]:
        if s["shard"] in lost:
            assert s["server"] == a.url.split("://")[1] and s["attempt"] == 2
    ids = [e["id"] for e in merged["candidates"]]
    assert sorted(ids) == list(range(64)), "a candidate lost or counted twice"
    assert merged["nfe"]["search_total"] == alone["nfe"]["search_total"]
    assert (merged["best"]["id"], merged["best"]["seed"]) == (alone["best"]["id"], alone["replay"]["seed"])
    assert merged["best"]["score"] == pytest.approx(alone["best"]["score"], abs=1e-5)


def test_scaling_bench_arithmetic():
    """bench/scaling.py: a search's time is first dispatch to last result, efficiency T(1) / (K T(K)),
    and the cores are split between the servers."""
    from bench import scaling

    attempts = [{"t": 10.0, "outcome": "dispatched"}, {"t": 10.5, "outcome": "dispatched"},
                {"t": 12.0, "outcome": "lost"}, {"t": 12.1, "outcome": "dispatched"}, {"t": 14.0, "outcome": "ok"},
                {"t": 13.0, "outcome": "ok"}]
    assert scaling.search_seconds(attempts) == 4.0
    with pytest.raises(ValueError, match="no finished shard"):
        scaling.search_seconds(attempts[:3])
    assert scaling.efficiency({1: 8.0, 2: 5.0, 4: 4.0}) == {1: 1.0, 2: 0.8, 4: 0.5}
    assert scaling.core_shares([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert scaling.core_shares([0, 1], 4) == [[0], [1], [0], [1]]
    assert scaling.core_shares([0, 1, 2], 1) == [[0, 1, 2]]


def test_early_rejection_and_cheaper_schedules_merge_from_the_right_samples(tmp_path):
    """Early rejection: the winner is the best of every shard's finalists by their final samples
    (entries of earlier levels never win). Random search on a cheaper search schedule: ranked by
    the search-schedule entries, the score reported is the winner's regenerated (final) sample's."""
    task = dist.the_task(load(write_config(tmp_path, [], 'kind = "rejection"\ncandidates = 8'), require_eval=False))
    plan = dist.plan_shards("rejection", 50, 2, 8)
    shard0 = [entry(i, 0.9, level=0.7, sample="split run") for i in range(4)] + \
        [entry(1, 0.2, level=0.0, sample="final"), entry(3, 0.4, level=0.0, sample="final")]
    shard1 = [entry(i, 0.1, level=0.7, sample="split run") for i in range(4)] + \
        [entry(0, 0.3, level=0.0, sample="final"), entry(2, 0.5, level=0.0, sample="final")]
    results = {0: {"report": report(shard0, (3, 0.4), 20, 53), "server": "a", "attempt": 1},
               1: {"report": report(shard1, (2, 0.5), 20, 56), "server": "b", "attempt": 1}}
    merged = dist.merge(task, plan, results, top_k=3)
    assert (merged["best"]["id"], merged["best"]["score"], merged["best"]["seed"]) == (6, 0.5, 56)
    assert [t["id"] for t in merged["top"]] == [6, 3, 4]  # finalists only: 0.9 at level 0.7 never counts
    assert merged["candidate_ids"] == list(range(8)) and merged["nfe"]["search_total"] == 40
    assert merged["distributed"]["shards"][1] == {"shard": 1, "candidates": [4, 8], "seed": 54, "server": "b",
                                                  "attempt": 1, "nfe": 20, "wall_s": None}

    cheap = [entry(0, 0.6, sample="search schedule"), entry(1, 0.7, sample="search schedule"),
             entry(1, 0.65, level=0.0, sample="final")]
    other = [entry(0, 0.5, sample="search schedule"), entry(1, 0.2, sample="search schedule"),
             entry(0, 0.55, level=0.0, sample="final")]
    results = {0: {"report": report(cheap, (1, 0.65), 10, 51), "server": "a", "attempt": 1},
               1: {"report": report(other, (0, 0.55), 10, 52), "server": "b", "attempt": 1}}
    plan = dist.plan_shards("random", 50, 2, 4)
    merged = dist.merge(task, plan, results, top_k=1)
    assert (merged["best"]["id"], merged["best"]["score"], merged["best"]["seed"]) == (1, 0.65, 51)
    # A tempered draw or a threshold stop cannot be merged from ranges: refused, naming the input.
    results[1]["report"]["selection"] = {"rule": "tempered", "lmbda": 1.0}
    with pytest.raises(dist.MergeError, match="selection: the shards ran with \\['best', 'tempered'\\]"):
        dist.merge(task, plan, results, top_k=1)
