#!/usr/bin/env python
"""Throughput of one distributed search (``python -m sweep search``) on K = 1, 2, 4 servers.

Run from the repository root: ``python bench/scaling.py`` (``--quick``: fewer candidates). For
every K it starts K local ComfyUI servers of the tiny test models (the CPU's cores split
between them: each server is pinned to its share of the cores and runs that many torch
threads; with more servers than cores, cores are shared round-robin), runs the same random
search of N candidates split into K candidate ranges, and stops them. With one GPU per server
(``--gpus``: server i sees GPU i through CUDA_VISIBLE_DEVICES) it is the scaling check of a
multi-GPU box.

The time of a search is taken from its attempts log: from the first shard dispatched to the
last shard's result (Ray's start, the servers' start and the winner's regeneration are not
in it; a warm-up search of one candidate per server runs first, so model loading is not
either). Scaling efficiency at K = T(1) / (K x T(K)): 1.0 is perfect. Every K finds the same
winner and seed, its score equal to 1e-4 (checked: the merged search is exact; servers with
other thread counts sum in other orders). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEED = 11
PROMPT = "a red cube on a table"


def log(*parts) -> None:
    print(*parts, flush=True)


def search_seconds(attempts: list[dict]) -> float:
    """Wall time of a distributed search from its attempts log: first dispatch to last result."""
    sent = [a["t"] for a in attempts if a["outcome"] == "dispatched"]
    done = [a["t"] for a in attempts if a["outcome"] == "ok"]
    if not sent or not done:
        raise ValueError("the attempts log holds no finished shard")
    return max(done) - min(sent)


def efficiency(times: dict[int, float]) -> dict[int, float]:
    """T(1) / (K x T(K)) for every K measured (K = 1 gives 1.0)."""
    return {k: times[1] / (k * t) for k, t in times.items()}


def core_shares(cores: list[int], servers: int) -> list[list[int]]:
    """Each server's cores: an equal share, or (more servers than cores) one core round-robin."""
    if servers >= len(cores):
        return [[cores[i % len(cores)]] for i in range(servers)]
    size = len(cores) // servers
    return [cores[i * size:(i + 1) * size] for i in range(servers)]


@contextmanager
def pinned(cpus: list[int], threads: int, gpu: int | None):
    """Children started inside inherit these cores, thread count and GPU."""
    before = os.sched_getaffinity(0)
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    os.sched_setaffinity(0, cpus)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_servers(base: Path, count: int, gpus: bool) -> list:
    from tests import verifier_fixtures as vf
    from tests.harness import tiny_models
    from tests.harness import workflow_convert as wc
    from tests.harness.server import ComfyServer

    cores = sorted(os.sched_getaffinity(0))
    servers = []
    for i, cpus in enumerate(core_shares(cores, count)):
        srv = ComfyServer(base / f"server{count}_{i}", extra_args=[] if gpus else ["--cpu"])
        srv.add_model("checkpoints", tiny_models.tiny_checkpoint(), "tiny_sd15.safetensors")
        vf.write_brightness_classifier(wc.place_test_verifiers(srv.dirs["models"]))
        servers.append((srv, cpus))
    threads = []
    for i, (srv, cpus) in enumerate(servers):
        with pinned(cpus, len(cpus), i if gpus else None):
            srv.proc = None
            t = threading.Thread(target=srv.start)
            t.start()
            while srv.proc is None and t.is_alive():  # the process starts inside the pinned context
                time.sleep(0.01)
            threads.append(t)
    for t in threads:
        t.join()
    for srv, _ in servers:
        if srv.proc is None or srv.proc.poll() is not None:
            raise RuntimeError(f"a server did not start:\n{srv.log()[-3000:]}")
    return [srv for srv, _ in servers]


def config(base: Path, urls: list[str], candidates: int, steps: int, px: int, name: str) -> Path:
    from tests.harness import workflow_convert as wc  # noqa: F401 (the tiny verifiers' names)

    workflow = REPO / "example_workflows" / "sd15_random_search_imagereward.json"
    path = base / f"{name}.toml"
    path.write_text(f"""
workflow = {json.dumps(str(workflow))}
node = "RandomSearchSampler"
output = {json.dumps(str(base / name))}
budgets = [0]
seeds = [{SEED}]
search_verifiers = ["bright"]

[prompts]
list = [{json.dumps(PROMPT)}]

[[strategies]]
kind = "random"
candidates = {candidates}

[verifiers.bright]
class_type = "ClassifierVerifierLoader"
inputs = {{ classifier_file = "classifiers/brightness.safetensors" }}
condition = "bright"

[edits]
set = {{ "RandomSearchSampler.steps" = {steps}, "EmptyLatentImage.width" = {px}, "EmptyLatentImage.height" = {px} }}
replace = {{ "v1-5-pruned-emaonly.safetensors" = "tiny_sd15.safetensors" }}

[servers]
urls = {json.dumps(urls)}

[ray]
num_cpus = 1
object_store_mb = 100
log_to_driver = false
""")
    return path


def run_search(cfg_path: Path, shards: int) -> tuple[float, dict]:
    """The documented command; returns (search seconds from its attempts log, merged report)."""
    import subprocess

    from sweep import distributed as dist
    from sweep.config import load

    proc = subprocess.run([sys.executable, "-m", "sweep", "search", str(cfg_path), "--shards", str(shards),
                           "--no-progress"], cwd=str(REPO), capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m sweep search failed:\n{proc.stdout}\n{proc.stderr}")
    cfg = load(cfg_path, require_eval=False)
    out = dist.output_dir(cfg, dist.the_task(cfg))
    return search_seconds(dist.read_attempts(out)), json.loads((out / "report.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="1,2,4", help="the K to measure (default 1,2,4)")
    p.add_argument("--candidates", type=int, default=None, help="N, the same for every K (default 64; quick 8)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 4; quick 2)")
    p.add_argument("--px", type=int, default=None, help="image size (default 64; quick 32)")
    p.add_argument("--quick", action="store_true", help="8 candidates of 32 px, 2 steps")
    p.add_argument("--gpus", action="store_true", help="one GPU per server (server i: CUDA_VISIBLE_DEVICES=i)")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.servers.split(",")]
    if 1 not in ks:
        ks = [1, *ks]
    n = args.candidates or (8 if args.quick else 64)
    steps = args.steps or (2 if args.quick else 4)
    px = args.px or (32 if args.quick else 64)
    cores = sorted(os.sched_getaffinity(0))
    log(f"distributed search throughput: random search of {n} candidates, {px} px, {steps} Euler steps, tiny "
        f"SD1.5-shaped checkpoint, brightness classifier; {len(cores)} cores; K = {ks}"
        + (" (one GPU per server)" if args.gpus else " (CPU servers)"))
    times, winners, shares = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="noise_search_scaling_") as tmp:
        base = Path(tmp)
        for k in ks:
            servers = start_servers(base, k, args.gpus)
            try:
                urls = [s.url for s in servers]
                run_search(config(base, urls, k, steps, px, f"warmup{k}"), k)  # loads the models on every server
                times[k], report = run_search(config(base, urls, n, steps, px, f"k{k}"), k)
                winners[k] = (report["best"]["id"], report["best"]["score"], report["best"]["seed"])
                shares[k] = [len(c) for c in core_shares(cores, k)]
                log(f"K={k}: {times[k]:.2f} s ({n / times[k]:.2f} candidates/s), cores per server {shares[k]}, "
                    f"winner {winners[k][0]} (seed {winners[k][2]}, score {winners[k][1]:.5f})")
            finally:
                for s in servers:
                    s.stop()
    eff = efficiency(times)
    # The same candidate and seed; its score to float noise (servers with other thread counts
    # sum in other orders).
    same = len({(w[0], w[2]) for w in winners.values()}) == 1 and \
        max(w[1] for w in winners.values()) - min(w[1] for w in winners.values()) < 1e-4
    log("\n  K | search s | candidates/s | speed-up | efficiency")
    for k in ks:
        log(f"{k:>3} | {times[k]:>8.2f} | {n / times[k]:>12.2f} | {times[1] / times[k]:>8.2f} | {eff[k]:>10.2f}")
    log(f"same winner, score and seed for every K: {'yes' if same else 'NO'}")
    print(json.dumps({"candidates": n, "px": px, "steps": steps, "cores": len(cores), "gpus": args.gpus,
                      "seconds": {str(k): round(v, 4) for k, v in times.items()},
                      "efficiency": {str(k): round(v, 4) for k, v in eff.items()},
                      "cores_per_server": {str(k): v for k, v in shares.items()}, "same_winner": same}), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
