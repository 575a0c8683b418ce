"""python -m sweep: bundled prompt sets, shards, the report, and a real sweep on a local Ray
with two live ComfyUI servers of tiny models (one killed mid-sweep, one run interrupted).

The live sweep runs the pack's SD1.5 example workflow (editor format) with the tiny
checkpoint; the verifiers are tiny test ones: a brightness classifier (search and
evaluation, class "bright") and CLIPScore on a random ViT-S-32 (evaluation, the prompt).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from sweep import prompts as ps
from sweep.config import ConfigError, load
from sweep.report import MISSING, bootstrap, collect, plot, write_tables
from sweep.results import read_attempts, read_rows
from sweep.scheduler import plan
from sweep.tasks import all_tasks, in_shard, parse_shard, shard_tasks
from tests.harness.host import PACK_NAME, REPO, comfyui_path
from tests.harness.server import ComfyServer
from tests.live_servers import VERIFIER_TABLES, brightness_servers, run_tables

EXAMPLE = REPO / "example_workflows" / "sd15_random_search_imagereward.json"
PROMPTS = ["a red cube on a table", "a blue sphere in the snow"]


SD15_SET = {"RandomSearchSampler.steps": 2, "EmptyLatentImage.width": 32, "EmptyLatentImage.height": 32}
# The first release's example (its RandomSearch node, with the judging inputs of its own).
SAVED_V1 = REPO / "tests" / "fixtures" / "saved_v1"
V1_SET = {"RandomSearch.steps": 2, "EmptyLatentImage.width": 32, "EmptyLatentImage.height": 32}
SD15_REPLACE = {"v1-5-pruned-emaonly.safetensors": "tiny_sd15.safetensors"}
ZERO_ORDER = "kind = \"zero_order\"\nneighbours = 2\niterations = 100"


def inline(table: dict) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()) + " }"


def config_text(workflow: Path, output: Path, urls=(), prompts=PROMPTS, seeds=(0,), budgets=(4, 8),
                baseline=False, extra="", node="RandomSearchSampler", edits_set=None, edits_replace=None,
                second_strategy=ZERO_ORDER) -> str:
    edits_set = SD15_SET if edits_set is None else edits_set
    edits_replace = SD15_REPLACE if edits_replace is None else edits_replace
    return f"""
workflow = {json.dumps(str(workflow))}
node = "{node}"
output = {json.dumps(str(output))}
budgets = {list(budgets)}
seeds = {list(seeds)}
baseline = {str(baseline).lower()}
search_verifiers = ["bright"]
eval_verifiers = ["bright", "clipscore"]

[prompts]
list = {json.dumps(list(prompts))}

[[strategies]]
kind = "random"
candidates = 64

[[strategies]]
{second_strategy}

{VERIFIER_TABLES}
[edits]
set = {inline(edits_set)}
replace = {inline(edits_replace)}

{run_tables(urls)}
{extra}
"""


def write_config(path: Path, **kw) -> Path:
    path.write_text(config_text(**kw))
    return path


def sweep_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "sweep", *map(str, args)]


def start_sweep(logs: Path, *args) -> subprocess.Popen:
    """The command in the background, its output in files (a full pipe would stall it)."""
    with open(f"{logs}.out", "w") as out, open(f"{logs}.err", "w") as err:
        return subprocess.Popen(sweep_cmd(*args), cwd=str(REPO), stdout=out, stderr=err, text=True)


def run_sweep(*args, timeout=600) -> subprocess.CompletedProcess:
    """The documented command, from the pack folder."""
    return subprocess.run(sweep_cmd(*args), cwd=str(REPO), capture_output=True, text=True, timeout=timeout)


# -- prompt sets ------------------------------------------------------------------------------
def test_bundled_prompt_sets_match_their_sources():
    geneval = ps.geneval()
    assert len(geneval) == 553
    assert Counter(p.category for p in geneval) == {"single_object": 80, "two_object": 99, "counting": 80,
                                                    "colors": 94, "position": 100, "color_attr": 100}
    # Lines of the upstream file quoted in public copies (see sweep/prompts/README.md).
    assert [p.text for p in geneval[:3]] == ["a photo of a bench", "a photo of a cow", "a photo of a bicycle"]
    assert geneval[86].text == "a photo of a hair drier and a cake"
    assert geneval[457].text == "a photo of a pink oven and a green motorcycle"
    assert geneval[530].text == "a photo of a purple suitcase and an orange pizza"
    assert len(ps.geneval("counting")) == 80 and ps.geneval("counting")[0].id.startswith("geneval/")

    comp = ps.t2i_compbench()
    assert Counter(p.category for p in comp) == {c: 300 for c in ps.COMPBENCH_CATEGORIES}
    color = ps.t2i_compbench("color")
    assert color[0].text == "a green bench and a blue bowl"
    assert color[-1].text == "a black bathroom with a black and white shower curtain"
    assert ps.load_set("t2i-compbench/numeracy")[1].text == "six airplanes"
    for prompts in (geneval, comp):
        assert len({p.id for p in prompts}) == len(prompts)
        assert all(p.text and p.text == p.text.strip() and "\r" not in p.text for p in prompts)
    notes = (REPO / "sweep" / "prompts" / "README.md").read_text()
    assert notes.count("MIT") >= 3 and "DrawBench" in notes and "not bundled" in notes
    with pytest.raises(ps.PromptSetError, match="tags are"):
        ps.load_set("geneval/nope")


def test_drawbench_csv_and_prompt_files(tmp_path):
    csv_path = tmp_path / "drawbench.csv"
    csv_path.write_text("\ufeffPrompts,Category\nA red colored car.,Colors\n,\n"
                        "\"A storefront with \"\"Text to Image\"\" written on it.\",Text\n", encoding="utf-8")
    prompts = ps.load_set(f"drawbench:{csv_path}")
    assert [(p.text, p.category) for p in prompts] == [
        ("A red colored car.", "Colors"), ('A storefront with "Text to Image" written on it.', "Text")]
    assert [p.id for p in prompts] == ["drawbench/000", "drawbench/002"]
    bad = tmp_path / "bad.csv"
    bad.write_text("caption\nx\n")
    with pytest.raises(ps.PromptSetError, match="no Prompts/Prompt/Text column"):
        ps.load_set(f"drawbench:{bad}")
    with pytest.raises(ps.PromptSetError, match="not bundled"):
        ps.load_set(f"drawbench:{tmp_path / 'missing.csv'}")
    txt = tmp_path / "mine.txt"
    txt.write_text("one\n\n two \n")
    assert [p.text for p in ps.load_set(f"file:{txt}")] == ["one", "two"]


# -- config and shards (no servers) ------------------------------------------------------------
@pytest.fixture
def api_workflow(tmp_path) -> Path:
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps({"1": {"class_type": "RandomSearch", "inputs": {"seed": 0}}}))
    return path


def test_config_errors_name_the_key(tmp_path, api_workflow):
    good = config_text(workflow=api_workflow, output=tmp_path / "out")
    for broken, message in [
        (good.replace('kind = "zero_order"', 'kind = "greedy"'), "strategies\\[1\\].kind"),
        (good.replace('eval_verifiers = ["bright", "clipscore"]', 'eval_verifiers = ["nope"]'), "eval_verifiers"),
        (good.replace("budgets = [4, 8]", "budgets = [4, 4]"), "budgets lists a value twice"),
        (good.replace('"classifiers/brightness.safetensors"', '"@nope"'), "no \\[verifiers.nope\\]"),
        (good + "\n[surprise]\nx = 1\n", "unknown top-level keys"),
    ]:
        path = tmp_path / "broken.toml"
        path.write_text(broken)
        with pytest.raises(ConfigError, match=message):
            load(path)


def test_shards_partition_the_sweep(tmp_path, api_workflow):
    cfg_path = write_config(tmp_path / "sweep.toml", workflow=api_workflow, output=tmp_path / "out",
                            prompts=[f"prompt {i}" for i in range(7)], seeds=(0, 1), baseline=True)
    cfg = load(cfg_path)
    everything = all_tasks(cfg)
    assert len(everything) == (1 + 2 * 2) * 7 * 2  # (baseline + 2 strategies x 2 budgets) x prompts x seeds
    ids = [t.id for t in everything]
    assert len(set(ids)) == len(ids)
    assert all_tasks(load(cfg_path))[5].id == ids[5]  # ids are stable across loads

    for n in (1, 2, 3, 5):
        shards = [shard_tasks(everything, (i, n)) for i in range(n)]
        seen = [t.id for shard in shards for t in shard]
        assert sorted(seen) == sorted(ids), f"n={n}: the shards do not cover the sweep exactly once"
        assert sum(map(len, shards)) == len(ids)
    # The command Slurm array jobs run: `tasks --shard i/n` lists what `run --shard i/n` would run.
    listed = []
    for i in range(3):
        proc = run_sweep("tasks", cfg_path, "--shard", f"{i}/3", "--json")
        assert proc.returncode == 0, proc.stderr
        listed.append([json.loads(line)["task"] for line in proc.stdout.splitlines()])
    assert sorted(sum(listed, [])) == sorted(ids)
    assert all(not (set(a) & set(b)) for a in listed for b in listed if a is not b)
    assert all(listed), "a shard is empty: the hash split is degenerate"
    for bad in ("3/3", "1/0", "x/2", "2"):
        with pytest.raises(ValueError):
            parse_shard(bad)

    # Each shard writes its own rows file; every run reads them all. With shard 1's rows on
    # disk, `run --shard 1/3` has nothing to do (it returns before starting Ray or any server),
    # while shard 0 still has all its tasks.
    cfg.output.mkdir(parents=True)
    with open(cfg.output / "results.shard-1-of-3.jsonl", "w") as f:
        for t in everything:
            if in_shard(t, (1, 3)):
                f.write(json.dumps({**t.describe(), "scores": {"eval": {}}}) + "\n")
    assert len(plan(cfg, (1, 3))[1]) == 0 and len(plan(cfg, (0, 3))[1]) == len(listed[0])
    proc = run_sweep("run", cfg_path, "--shard", "1/3")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(listed[1])} already done, 0 to run" in proc.stdout and "nothing to run" in proc.stdout


# -- the report (synthetic rows, no servers) --------------------------------------------------
def test_bootstrap_interval():
    assert bootstrap([]) == (None, None, None)
    assert bootstrap([2.0]) == (2.0, 2.0, 2.0)
    assert bootstrap([3.0] * 5) == (3.0, 3.0, 3.0)
    values = [0.0, 1.0] * 50
    mean, low, high = bootstrap(values, 2000, 0.95)
    assert mean == 0.5 and low < 0.5 < high
    # The interval of a mean of 100 fair coin flips: about +-0.1 (1.96 x 0.05).
    assert 0.08 < high - 0.5 < 0.12 and 0.08 < 0.5 - low < 0.12
    assert bootstrap(values, 2000, 0.5)[2] - bootstrap(values, 2000, 0.5)[1] < high - low


def test_table_and_plot_hold_every_cell(tmp_path, api_workflow):
    cfg = load(write_config(tmp_path / "sweep.toml", workflow=api_workflow, output=tmp_path / "out",
                            prompts=["p0", "p1", "p2"], seeds=(0, 1), baseline=True))
    tasks = all_tasks(cfg)
    cfg.output.mkdir(parents=True)
    skip = next(t for t in tasks if t.setting.budget == 8 and t.setting.strategy.kind == "zero_order")

    def score(t):
        return 0.5 if t.setting.baseline else 1.0 + t.setting.budget / 10 + (t.setting.strategy.kind == "random")

    with open(cfg.output / "results.jsonl", "w") as f:
        for t in tasks:
            f.write(json.dumps({**t.describe(), "nfe": {"search_total": t.setting.budget or 2},
                                "scores": {"eval": {"bright": score(t), "clipscore": -score(t)}}}) + "\n")
        f.write('{"task": "torn')  # a half-written last line is ignored
    cells = collect(cfg, tasks)
    md_path, csv_path = write_tables(cfg, cells, cfg.output)
    md = md_path.read_text()
    assert not [line for line in md.splitlines() if line.startswith("|") and MISSING in line]
    for budget in (4, 8):
        assert f"## Budget {budget} NFEs" in md
    # Mean over 3 prompts x 2 seeds of a constant: a degenerate interval at that value.
    assert "| bright | random | 2.400 [2.400, 2.400] | -2.400 [-2.400, -2.400] | 4.0 | 6/6 |" in md
    assert md.count("| - | no search | 0.500 [0.500, 0.500]") == 2
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    # (baseline + 2 strategies) x 2 budgets x 2 evaluation verifiers, every one with 6 tasks.
    assert len(rows) == 12 and all(r["n"] == "6" and r["mean"] for r in rows)
    png = plot(cfg, cells, cfg.output)
    assert Image.open(png).size[0] > 400
    data = json.loads((cfg.output / "scaling.json").read_text())
    assert len(data["curves"]) == 4 and all(len(c["points"]) == 2 for c in data["curves"])
    assert [p["nfe"] for p in data["curves"][0]["points"]] == [4, 8]

    # A setting with a task missing: its cell is computed from the rest; an empty cell shows as missing.
    rows_now = [line for line in (cfg.output / "results.jsonl").read_text().splitlines()
                if skip.id not in line and skip.setting.key not in line]
    (cfg.output / "results.jsonl").write_text("\n".join(rows_now) + "\n")
    md = write_tables(cfg, collect(cfg, tasks), cfg.output)[0].read_text()
    assert f"| bright | zero-order | {MISSING} | {MISSING} | {MISSING} | 0/6 |" in md


# -- a real sweep: two servers, local Ray -----------------------------------------------------
@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, tiny_checkpoint_path):
    with brightness_servers(tmp_path_factory, tiny_checkpoint_path, "sweep_server") as servers:
        yield servers


def name_of(srv: ComfyServer) -> str:
    return srv.url.split("://", 1)[1]


def successes_on(srv: ComfyServer) -> Counter:
    """Task ids of the prompts a live server executed successfully (from its /history)."""
    with urllib.request.urlopen(srv.url + "/history?max_items=10000", timeout=30) as r:
        history = json.load(r)
    out = Counter()
    for entry in history.values():
        extra = entry["prompt"][3].get("extra_pnginfo", {}).get("noise_search_sweep")
        if extra and entry.get("status", {}).get("status_str") == "success":
            out[extra["task"]] += 1
    return out


def images_on(srv: ComfyServer) -> Counter:
    """Task ids of the images a server's SaveImage wrote (works for a dead server too)."""
    folder = srv.dirs["output"] / "noise_search_sweep"
    return Counter(p.name.split("_")[0] for p in folder.glob("*.png")) if folder.is_dir() else Counter()


def wait_for_rows(rows_file: Path, proc: subprocess.Popen, until, timeout=300) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the sweep exited early ({proc.returncode})"
        if rows_file.exists():
            rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.endswith("}")]
            if until(rows):
                return rows
        time.sleep(0.1)
    raise TimeoutError("the sweep made no progress")


def check_attempt_log(attempts: list[dict], tasks: set[str]) -> dict[str, list[str]]:
    """No task is ever on two servers at once, none is dispatched again once finished, and each
    finishes exactly once. Returns each task's outcomes."""
    by_task = defaultdict(list)
    for a in attempts:
        by_task[a["task"]].append(a)
    assert set(by_task) == tasks
    outcomes = {}
    for task, events in by_task.items():
        kinds = [e["outcome"] for e in events]
        assert kinds[0::2] == ["dispatched"] * len(kinds[0::2]), (task, kinds)
        assert "dispatched" not in kinds[1::2] and len(kinds) % 2 == 0, (task, kinds)
        assert kinds.count("ok") == 1 and kinds[-1] == "ok", (task, kinds)
        for sent, outcome in zip(events[0::2], events[1::2]):
            assert sent["server"] == outcome["server"]
        outcomes[task] = kinds[1::2]
    return outcomes


def test_sweep_on_two_servers_survives_a_kill_and_an_interrupt_and_resumes(two_servers, tmp_path):
    a, b = two_servers
    out = tmp_path / "out"
    cfg_path = write_config(tmp_path / "sweep.toml", workflow=EXAMPLE, output=out, urls=[a.url, b.url])
    cfg = load(cfg_path)
    tasks = {t.id: t for t in all_tasks(cfg)}
    assert len(tasks) == 2 * 2 * 2  # 2 prompts x 2 strategies x 2 budgets (1 seed, 1 search verifier)
    rows_file = out / "results.jsonl"
    t0 = time.time()

    # 1. Stopped (SIGTERM, as Slurm stops a job; Ctrl-C is the same) after two finished tasks.
    proc = start_sweep(tmp_path / "run1", "run", cfg_path, "--no-progress")
    wait_for_rows(rows_file, proc, lambda rows: len(rows) >= 2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    log1 = (tmp_path / "run1.out").read_text() + (tmp_path / "run1.err").read_text()
    assert proc.returncode == 130, log1
    assert "interrupted" in log1 and "run the same command again to resume" in log1, log1
    kept = rows_file.read_text()
    rows1, skipped = read_rows(out)
    assert len(rows1) >= 2 and skipped == 0
    for row in rows1.values():
        assert (out / row["image"]).is_file()
    cancelled = [x for x in read_attempts(out) if x["outcome"] == "cancelled"]
    t1 = time.time()

    # 2. Resumed; server b is killed right after its first task of this run.
    proc = start_sweep(tmp_path / "run2", "run", cfg_path)
    wait_for_rows(rows_file, proc, lambda rows: any(r["server"] == name_of(b) for r in rows[len(rows1):]))
    b.proc.kill()
    proc.wait(timeout=600)
    stdout, stderr = (tmp_path / "run2.out").read_text(), (tmp_path / "run2.err").read_text()
    assert proc.returncode == 0, stdout + stderr
    t2 = time.time()
    assert f"{len(rows1)} already done, {8 - len(rows1)} to run" in stdout
    assert f"server {name_of(b)}: lost" in stdout, stdout

    # Nothing finished was lost or rewritten, every task has exactly one row and its image.
    assert rows_file.read_text().startswith(kept)
    rows, skipped = read_rows(out)
    assert set(rows) == set(tasks) and skipped == 0
    assert len(rows_file.read_text().splitlines()) == len(tasks)
    for task_id, row in rows.items():
        assert row["setting"]["key"] == tasks[task_id].setting.key
        assert row["prompt"]["text"] == tasks[task_id].prompt.text and row["seed"] == 0
        with Image.open(out / row["image"]) as im:
            assert im.size == (32, 32)
            assert json.loads(im.info["noise_search_sweep"])["task"] == task_id  # extra_pnginfo
        report = row["report"]
        assert report["algorithm"] == tasks[task_id].setting.strategy.kind
        assert 0 < report["nfe"]["search_total"] <= tasks[task_id].setting.budget
        assert report["best"]["score"] == pytest.approx(row["scores"]["eval"]["bright"], abs=1e-4)
        assert set(row["scores"]["eval"]) == {"bright", "clipscore"}
        assert row["timings"]["wall_s"] > 0 and row["server"] in (name_of(a), name_of(b))

    # Progress bars: the whole sweep and one per server.
    assert "sweep: 100%" in stderr and f"{name_of(a)} " in stderr and f"{name_of(b)} " in stderr, stderr[-2000:]

    # No task on two servers at once or run again once finished (the driver's log) ...
    outcomes = check_attempt_log(read_attempts(out), set(tasks))
    lost = [t for t, kinds in outcomes.items() if "lost" in kinds]
    assert lost, "server b was killed with a task in flight: that task should have been lost and redone"
    for task_id in lost:
        assert rows[task_id]["server"] == name_of(a)
    # ... and the servers agree: each task was executed successfully once, except where an
    # execution's result never came back (b killed, or the interrupted run's cancellations).
    executed = successes_on(a) + images_on(b)
    unreturned = Counter(x["task"] for x in read_attempts(out) if x["outcome"] in ("lost", "cancelled"))
    for task_id in tasks:
        assert 1 <= executed[task_id] <= 1 + unreturned[task_id], (task_id, executed[task_id])
    assert {x["task"] for x in cancelled} <= set(unreturned)

    # 3. A second run does no work: no Ray, no server call, the rows file untouched.
    before = sum(successes_on(a).values())
    snapshot = rows_file.read_bytes()
    proc3 = run_sweep("run", cfg_path)
    assert proc3.returncode == 0, proc3.stdout + proc3.stderr
    assert "8 already done, 0 to run" in proc3.stdout and "nothing to run" in proc3.stdout
    assert sum(successes_on(a).values()) == before and rows_file.read_bytes() == snapshot

    # The table (every cell filled) and the scaling plot (every point) were written.
    md = (out / "table.md").read_text()
    assert not [line for line in md.splitlines() if line.startswith("|") and MISSING in line], md
    for strategy in ("random", "zero-order"):
        assert md.count(f"| bright | {strategy} | ") == 2  # one row per budget
    with open(out / "table.csv") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 2 * 2 * 2 and all(c["n"] == "2" and c["mean"] for c in cells)
    data = json.loads((out / "scaling.json").read_text())
    assert {(c["eval_verifier"], c["strategy"]) for c in data["curves"]} == {
        (e, s) for e in ("bright", "clipscore") for s in ("random", "zero-order")}
    assert all([p["budget"] for p in c["points"]] == [4, 8] for c in data["curves"])
    with Image.open(out / "scaling.png") as im:
        assert im.size[0] > 400
    print(f"\nsweep timings: interrupted run {t1 - t0:.0f} s, resumed run with a kill {t2 - t1:.0f} s, "
          f"no-op run {time.time() - t2:.0f} s; lost {len(lost)}, cancelled {len(cancelled)}")



def test_launch_mode_starts_and_restarts_its_own_server(two_servers, tmp_path):
    """[servers] launch: the actor starts its own ComfyUI (as on each GPU of a cluster) and,
    when that server dies mid-task, starts it again and the task is redone there."""
    a = two_servers[0]
    dirs = {name: tmp_path / "server" / name for name in ("output", "input", "temp", "user")}
    for d in dirs.values():
        d.mkdir(parents=True)
    args = ["--cpu", "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME,
            "--extra-model-paths-config", str(a.base / "extra_model_paths.yaml"),  # a's tiny models
            "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
            *[x for name, d in dirs.items() for x in (f"--{name}-directory", str(d))]]
    launch = f"\n[servers.launch]\ncomfyui = {json.dumps(str(comfyui_path()))}\ncount = 1\nargs = {json.dumps(args)}\n"
    cfg_path = write_config(tmp_path / "sweep.toml", workflow=EXAMPLE, output=tmp_path / "out",
                            prompts=PROMPTS[:1], budgets=(4,), extra=launch)
    proc = start_sweep(tmp_path / "run", "run", cfg_path, "--no-progress", "--no-report")
    attempts = tmp_path / "out" / "attempts.jsonl"
    deadline = time.time() + 300
    while not (attempts.exists() and attempts.read_text()):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "run.out").read_text()
        time.sleep(0.1)
    out = (tmp_path / "run.out").read_text()
    pid = int(out.split("started by the sweep: pid ", 1)[1].split(",", 1)[0])
    os.kill(pid, signal.SIGKILL)  # the server the actor started, with the first task on it
    proc.wait(timeout=600)
    out = (tmp_path / "run.out").read_text()
    assert proc.returncode == 0, out + (tmp_path / "run.err").read_text()
    assert "server server0: lost" in out and "server server0: back (restarted: pid " in out, out
    restarted = int(out.split("restarted: pid ", 1)[1].split(")", 1)[0])
    rows, _ = read_rows(tmp_path / "out")
    assert len(rows) == 2 and {r["server"] for r in rows.values()} == {"server0"}
    outcomes = check_attempt_log(read_attempts(tmp_path / "out"), set(rows))
    assert sorted(map(tuple, outcomes.values())) == [("lost", "ok"), ("ok",)]
    # The restarted server saved both images; the sweep stopped it at the end.
    assert sorted(images_on_folder(dirs["output"])) == sorted(rows)
    with pytest.raises(ProcessLookupError):
        os.kill(restarted, 0)


def images_on_folder(folder: Path) -> Counter:
    folder = folder / "noise_search_sweep"
    return Counter(p.name.split("_")[0] for p in folder.glob("*.png"))


NOISE_SEARCH_API = {  # the composable form: a search options node feeding NoiseSearch, judged by a Search Judge
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "placeholder"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
    "5": {"class_type": "NoiseCandidates", "inputs": {"seed": 0, "count": 1}},
    "6": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                "cfg": 5.0}},
    "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "8": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 2,
                                                     "denoise": 1.0}},
    "9": {"class_type": "SearchRandom", "inputs": {"candidates": 4, "budget": 0, "top_k": 1, "batch_size": 0}},
    "10": {"class_type": "ClassifierVerifierLoader",
           "inputs": {"classifier_file": "classifiers/brightness.safetensors"}},
    "14": {"class_type": "SearchJudge", "inputs": {"vae": ["1", 2], "verifier": ["10", 0],
                                                   "condition": "placeholder"}},
    "11": {"class_type": "NoiseSearch", "inputs": {
        "noise": ["5", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0],
        "search": ["9", 0], "judge": ["14", 0]}},
    "12": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "not_in_the_sweep"}},
    "13": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}},
}


PATHS = "kind = \"paths\"\npaths = 2\nbranches = 2\nstart = 0.5\nforward = 0.2\nbackward = 0.5\ninterval_steps = 1"


FLUX_SET = {"BasicScheduler.steps": 2, "EmptySD3LatentImage.width": 32, "EmptySD3LatentImage.height": 32}
# The FLUX workflows with the tiny SD1.5 parts' names (see tests/harness/workflow_convert.py).
FLUX_REPLACE = {"flux1-dev.safetensors": "tiny_sd15_unet.safetensors", "ae.safetensors": "tiny_taesd.safetensors"}
FAMILY_CASES = {  # family, workflow, node, edits, run a task (FLUX's DualCLIPLoader has no tiny stand-in)
    "ksampler": ("ksampler", EXAMPLE, "RandomSearchSampler", SD15_SET, SD15_REPLACE, True),
    "legacy": ("legacy_ksampler", SAVED_V1 / "sd15_random_search_imagereward.json", "RandomSearch", V1_SET,
               SD15_REPLACE, False),
    "advanced": ("legacy_advanced", SAVED_V1 / "flux_path_search_clipscore.json",
                 "PathSearchAdvanced", FLUX_SET, FLUX_REPLACE, False),
    "options-flux": ("options", REPO / "example_workflows" / "flux_path_search_clipscore.json", "NoiseSearch",
                     FLUX_SET, FLUX_REPLACE, False),
    "options-api": ("options", "noise_search_api.json", "NoiseSearch", {}, {}, True),
}


def family_config(tmp_path, case: str, budgets, second_strategy: str):
    """The sweep config of one FAMILY_CASES case: one prompt, random search and ``second_strategy``."""
    _, workflow, node, edits_set, edits_replace, _ = FAMILY_CASES[case]
    if workflow == "noise_search_api.json":
        workflow = tmp_path / workflow
        workflow.write_text(json.dumps(NOISE_SEARCH_API))
    cfg_path = tmp_path / "sweep.toml"
    cfg_path.write_text(config_text(workflow=workflow, output=tmp_path / "out", prompts=PROMPTS[:1], budgets=budgets,
                                    node=node, edits_set=edits_set, edits_replace=edits_replace,
                                    second_strategy=second_strategy))
    return load(cfg_path)


def run_one(server, template, tasks, kind: str) -> dict:
    """The first task of strategy ``kind`` through the worker (no Ray); asserts it ran."""
    from sweep.worker import ServerWorker

    task = next(t for t in tasks if t.setting.strategy.kind == kind)
    prompt, outputs = template.build(task)
    result = ServerWorker("a", url=server.url).run({"task": task.id, "prompt": prompt, "outputs": outputs,
                                                    "timeout": 300})
    assert result["status"] == "ok", result.get("error")
    return result


@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_every_search_node_family_builds_and_runs(two_servers, tmp_path, case):
    """Each family of search node (KSampler-style, a search options node feeding NoiseSearch, the
    earlier releases' KSampler-style and Advanced nodes) is varied over random and path search;
    where the server has the models, a path-search task runs through the worker (no Ray): a class
    swap the server accepts, results that parse."""
    from sweep.workflow import Template, node_for

    family, _, _, _, _, runs = FAMILY_CASES[case]
    a = two_servers[0]
    info = a.object_info()
    cfg = family_config(tmp_path, case, budgets=(6,), second_strategy=PATHS)
    template = Template(cfg, info)
    tasks = all_tasks(cfg)
    assert {t.setting.strategy.kind for t in tasks} == {"random", "paths"}
    for task in tasks:
        prompt, outputs = template.build(task)
        varied = prompt[template.options_id]
        assert varied["class_type"] == node_for(family, task.setting.strategy.kind)
        spec = info[varied["class_type"]]["input"]
        assert set(varied["inputs"]) <= {*spec["required"], *spec.get("optional", {})}
        assert "not_in_the_sweep" not in json.dumps(prompt)  # the workflow's own outputs are dropped
        # The SEARCH holds the budget, the judge the verifier's condition (one node for the
        # earlier releases' nodes).
        assert varied["inputs"]["budget"] == 6 and prompt[template.judge_id]["inputs"]["condition"] == "bright"
        assert (template.judge_id == template.search_id) is family.startswith("legacy")
        assert [prompt[n]["inputs"][k] for n, k in template.prompt_targets if k != "condition"] == [PROMPTS[0]]
        assert prompt[template.seed_target[0]]["inputs"][template.seed_target[1]] == 0
        if case == "options-api":  # NoiseCandidates supplies what the strategy starts from
            assert prompt["5"]["inputs"]["count"] == {"random": 64, "paths": 2}[task.setting.strategy.kind]
    if not runs:
        return
    result = run_one(a, template, tasks, "paths")
    assert result["report"]["algorithm"] == "paths" and set(result["eval"]) == {"bright", "clipscore"}
    assert Image.open(io.BytesIO(result["png"])).size == (32, 32)


NEWER = ("kind = \"particles\"\nparticles = 2\nlmbda = 5.0\n\n[[strategies]]\nkind = \"rejection\"\n"
         "candidates = 4\nlevels = \"0.6\"\n\n[[strategies]]\nkind = \"tree\"\nrollouts = 3\nbranches = 2")


@pytest.mark.parametrize("case", ["ksampler", "options-api", "legacy", "advanced"])
def test_particle_rejection_and_tree_strategies_are_swept(two_servers, tmp_path, case):
    """The three newer strategies vary a KSampler-style node, a search options node feeding
    NoiseSearch and an earlier release's KSampler-style node (its search_steps held at 0); an
    Advanced node has no such version: the sweep says so. A particle-steering task runs through
    the worker."""
    from sweep.workflow import Template, WorkflowError, node_for

    family, _, _, _, _, runs = FAMILY_CASES[case]
    a = two_servers[0]
    info = a.object_info()
    cfg = family_config(tmp_path, case, budgets=(0,), second_strategy=NEWER)
    template = Template(cfg, info)
    tasks = [t for t in all_tasks(cfg) if t.setting.strategy.kind != "random"]
    assert {t.setting.strategy.kind for t in tasks} == {"particles", "rejection", "tree"}
    for task in tasks:
        if family == "legacy_advanced":
            with pytest.raises(WorkflowError, match="no node of the first release's Advanced family"):
                template.build(task)
            continue
        prompt, _ = template.build(task)
        varied = prompt[template.options_id]
        assert varied["class_type"] == node_for(family, task.setting.strategy.kind)
        spec = info[varied["class_type"]]["input"]
        assert set(varied["inputs"]) <= {*spec["required"], *spec.get("optional", {})}
        if family == "ksampler":  # these search the full schedule: their nodes have no search_steps
            assert "search_steps" not in prompt[template.search_id]["inputs"]
        if family == "legacy_ksampler":
            assert prompt[template.search_id]["inputs"]["search_steps"] == 0
        if case == "options-api":
            need = {"particles": 2, "rejection": 4, "tree": 2}[task.setting.strategy.kind]
            assert prompt["5"]["inputs"]["count"] >= need
    if not runs or family != "ksampler":
        return
    assert run_one(a, template, tasks, "particles")["report"]["algorithm"] == "particles"
