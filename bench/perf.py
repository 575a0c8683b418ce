#!/usr/bin/env python
"""Batched noise search measured side by side against sequential sampling and the limit.

Run from the repository root: ``python bench/perf.py`` (or ``make bench``); ``--quick`` is a
tiny configuration for the tests. One process loads ComfyUI (CUDA when available, else
the CPU), the tiny SD1.5-shaped test checkpoint and a tiny verifier, then times:

  (a) sequential: N stock KSampler runs (seeds seed..seed+N-1), each decoded (VAEDecode)
      and scored on its own -- what users and other packs do today;
  (b) the pack's RandomSearch node with N candidates, plus VAEDecode of the winner (what a
      workflow needs to get its image);
  (c) the limit: one stock SamplerCustomAdvanced call on a batch of the same N noises
      (NoiseCandidates: candidate i is the noise of seed + i), one batched VAEDecode, one
      batched verifier pass.

Beside that ladder, latent batches: for each strategy, one search of a latent batch of B = 16
problems (64 px) against the same 16 problems searched one after another (LatentFromBatch
elements of the same batch, so both find the same winners, which is checked), each plus the
VAEDecode of its winners (``batch_speedup_<strategy>`` in the JSON line); the batched random
search against its own limit (one stock call on all its candidates, one decode, one verifier
pass: ``batch_overhead_random``); and the peak memory of RandomSearch with 16 problems against
one at the same batch size (``batch_mem_ratio``).

Everything runs under torch.inference_mode(), as in ComfyUI's executor. Repeats of a, b and c are
interleaved (the order rotates every repeat) so that load from
other processes hits all three alike, and medians are reported. A progress hook that does
what the server does with preview images (fit into 512 px, JPEG-encode) is installed, so
per-step UI costs are paid as in a real server (``--no-server-hook`` turns it off).

Ratios are reported two ways: the ratio of the medians, and the median of the ratios taken
within each repeat (a, b and c of one repeat run back to back, so they share the load of
the moment; on a shared machine that is the steadier figure and the one the targets use).

Peak memory per configuration (one extra, untimed run after all timings): on CUDA
``torch.cuda.max_memory_allocated`` growth; on the CPU, the kernel's peak-RSS mark (VmHWM,
reset through /proc/self/clear_refs) minus the RSS before the run. Before the memory runs
glibc is told (mallopt) to serve every block of 64 KiB or more with its own mmap and to
trim freed memory at once, so freed activations go back to the system and each
configuration starts clean (the timed runs keep the default allocator).

The last line printed is one JSON object (see ``summary`` below for its keys).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# (px, N, repeats): the ladder of the issue; sized for < 10 minutes on 2 CPU cores.
LADDER = [(64, 4, 3), (64, 16, 3), (64, 64, 2), (128, 4, 3), (128, 16, 2)]
QUICK_LADDER = [(32, 2, 1), (32, 4, 1)]
# On a GPU the second speed target is a/b >= 4 at 512 px: one more rung there.
GPU_RUNGS = [(512, 16, 3)]
STEPS, QUICK_STEPS = 4, 2
# The untimed memory runs sample fewer steps: every step has the same shapes, so the peak
# does not depend on the step count (it depends on N, the size and the batch size).
MEM_STEPS = 2
CFG = 5.0
SEED = 1000
PROMPT = "a photo of a cat"
NEGATIVE = "blurry, low quality"
# Memory: RandomSearch at this batch size, N=64 over N=16 (quick: N=4 over N=2 at 2).
MEM_BATCH, QUICK_MEM_BATCH = 16, 2
# Other algorithms at 64 px (quick: 32 px), compared with RandomSearch of RANDOM_N candidates.
ZO = {"neighbours": 4, "iterations": 3, "angle": 30.0, "restart": True}
PATHS = {"paths": 4, "branches": 4, "start": 0.4, "forward": 0.2, "backward": 0.3, "interval_steps": 2}
RANDOM_N = 16
# Latent batches at 64 px (quick: 32 px): B problems in one search against B searches one
# after another, per strategy (node, options); memory of RandomSearch at batch_size MEM_BATCH
# with B problems against one. The limit of the batched random search: one stock call on all
# its B x N candidates, one decode, one verifier pass.
BATCH_PROBLEMS, QUICK_BATCH_PROBLEMS = 16, 2
BATCH_STRATEGIES = {
    "random": ("RandomSearch", {"candidates": 8}),
    "zero_order": ("ZeroOrderSearch", {"neighbours": 4, "iterations": 3, "angle": 30.0, "restart": True}),
    "paths": ("PathSearch", {"paths": 2, "branches": 2, "start": 0.4, "forward": 0.2, "backward": 0.3,
                             "interval_steps": 2}),
}
TARGETS = {"overhead": 1.10, "speedup": 1.5, "mem_ratio": 1.2, "batch_speedup": {"random": 2.0, "zero_order": 3.0,
                                                                                 "paths": 3.0},
           "batch_mem_ratio": 1.3}


_T0 = time.perf_counter()


def log(*parts) -> None:
    print(*parts, flush=True)


def section(name: str) -> None:
    log(f"\n[{time.perf_counter() - _T0:6.1f} s] {name}")


# -- host ---------------------------------------------------------------------------------
def load_host(device: str):
    """ComfyUI in-process with the pack loaded (devhost), on ``device``."""
    # ComfyUI's root goes first on sys.path and has a `tests` package of its own: import
    # this repository's test helpers before it shadows them.
    import tests.harness.tiny_models  # noqa: F401
    import tests.toy_verifier  # noqa: F401
    try:
        import tests.verifier_fixtures  # noqa: F401
    except ImportError:  # open_clip missing: the ProbeVerifier stands in
        pass
    import devhost

    return devhost.load_host(device)


def server_like_progress_hook():
    """What the server does with a progress update: fit a preview into its max size and
    JPEG-encode it (main.py's hook -> PromptServer.send_image). Without a server the
    in-process run would skip this per-step cost."""
    from PIL import Image, ImageOps

    stats = {"calls": 0, "previews": 0, "preview_s": 0.0}

    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        stats["calls"] += 1
        if preview_image is None:
            return
        t0 = time.perf_counter()
        kind, image, max_size = preview_image[0], preview_image[1], preview_image[2]
        if isinstance(image, Image.Image):
            if max_size is not None:
                image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            image.save(buf, format="PNG" if kind == "PNG" else "JPEG", quality=95)
        stats["previews"] += 1
        stats["preview_s"] += time.perf_counter() - t0

    return hook, stats


class LoadCounter:
    """Counts weight-file reads, verifier model builds and weights moved onto the device."""

    def __init__(self):
        self.counts = {"files_read": 0, "verifier_builds": 0, "weights_moved": 0}

    def install(self) -> None:
        import comfy.model_patcher
        import comfy.utils
        import safetensors
        import safetensors.torch
        import torch

        from devhost import pack_module

        counts = self.counts

        def counting(fn, key):
            def wrapped(*a, **k):
                counts[key] += 1
                return fn(*a, **k)
            wrapped._noise_search_counted = True
            return wrapped

        for mod, name in ((comfy.utils, "load_torch_file"), (safetensors, "safe_open"),
                          (safetensors.torch, "load_file"), (torch, "load")):
            if not getattr(getattr(mod, name), "_noise_search_counted", False):
                setattr(mod, name, counting(getattr(mod, name), "files_read"))
        patcher = comfy.model_patcher.ModelPatcher
        if not getattr(patcher.load, "_noise_search_counted", False):
            patcher.load = counting(patcher.load, "weights_moved")
        rt = pack_module("verifiers.comfy_runtime")
        original = rt.cached
        if not getattr(original, "_noise_search_counted", False):
            def cached(slot, stamp, build):
                return original(slot, stamp, counting(build, "verifier_builds"))
            cached._noise_search_counted = True
            rt.cached = cached

    def snapshot(self) -> dict:
        return dict(self.counts)

    def since(self, before: dict) -> dict:
        return {k: self.counts[k] - before[k] for k in self.counts}


# -- memory -------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) if m else -1


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssSampler(threading.Thread):
    """Fallback where the peak-RSS mark cannot be reset: sample RSS every millisecond."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, _proc_status_kib("VmRSS"))
            time.sleep(0.001)


def _glibc():
    """glibc through ctypes, or None elsewhere (musl, macOS): memory figures stay approximate."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_freed_memory_to_os() -> bool:
    """glibc: serve blocks >= 64 KiB by mmap (unmapped on free) and trim the heap on every
    free, so the RSS before a run holds no memory left over from the previous one."""
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 65536) == 1 and libc.mallopt(m_trim_threshold, 0) == 1
    libc.malloc_trim(0)
    return ok


def _trim() -> None:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_growth_mib(fn, device: str) -> float:
    """Peak memory growth while ``fn`` runs, in MiB (see the module docstring)."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    _trim()
    base = _proc_status_kib("VmRSS")
    if _reset_peak_rss():
        fn()
        return max(0, _proc_status_kib("VmHWM") - base) / 1024
    sampler = _RssSampler()
    sampler.start()
    fn()
    sampler.stop.set()
    sampler.join()
    return max(0, sampler.peak - base) / 1024


# -- the benchmark ------------------------------------------------------------------------
class Bench:
    def __init__(self, device: str, steps: int, server_hook: bool = True):
        self.device, self.steps = device, steps
        load_host(device)
        import torch

        self.torch = torch
        self.loads = LoadCounter()
        self.loads.install()
        import comfy.utils

        # Stock sampler nodes print a console progress bar (tqdm); keep the output readable.
        comfy.utils.PROGRESS_BAR_ENABLED = False
        self.hook_stats = None
        if server_hook:
            import comfy.utils

            hook, self.hook_stats = server_like_progress_hook()
            comfy.utils.set_progress_bar_global_hook(hook)
        self._tmp = tempfile.TemporaryDirectory(prefix="noise_search_bench_")

    # models -------------------------------------------------------------------------------
    def load_models(self) -> dict:
        """The workflow's loader nodes; returns per-stage seconds."""
        import folder_paths

        from devhost import run_node
        from tests.harness import tiny_models

        times = {}
        ckpt = tiny_models.tiny_checkpoint()
        folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
        t0 = time.perf_counter()
        self.model, self.clip, self.vae = run_node("CheckpointLoaderSimple", ckpt_name=ckpt.name)[:3]
        times["checkpoint_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.verifier, self.verifier_name = self._verifier()
        times["verifier_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.positive = run_node("CLIPTextEncode", clip=self.clip, text=PROMPT)[0]
        self.negative = run_node("CLIPTextEncode", clip=self.clip, text=NEGATIVE)[0]
        times["text_encode_s"] = time.perf_counter() - t0
        return times

    def _verifier(self):
        """A tiny real verifier (CLIPScore on a 2-layer open_clip ViT) through its loader
        node; the ProbeVerifier where open_clip is unavailable."""
        try:
            import folder_paths

            from tests import verifier_fixtures as vf

            root = Path(self._tmp.name) / "verifiers"
            if not (root / "clip" / f"{vf.TINY_CLIP}.safetensors").is_file():
                vf.write_tiny_clip(root)
            paths = folder_paths.folder_names_and_paths["verifiers"][0]
            if str(root) not in paths:
                paths.insert(0, str(root))
            self.verifier_file = f"clip/{vf.TINY_CLIP}.safetensors"
            return self.load_verifier(), f"CLIPScore, tiny open_clip {vf.TINY_CLIP} (random weights)"
        except ImportError as err:
            from tests.toy_verifier import ProbeVerifier

            self.verifier_file = None
            return ProbeVerifier(), f"ProbeVerifier (tiny CLIP unavailable: {err})"

    def load_verifier(self):
        from devhost import run_node

        if self.verifier_file is None:
            return self.verifier
        return run_node("CLIPScoreVerifierLoader", clip_file=self.verifier_file, architecture="auto",
                        precision="auto", allow_download=False)[0]

    # the three ways ---------------------------------------------------------------------
    def latent(self, px: int, batch: int) -> dict:
        from devhost import run_node

        return run_node("EmptyLatentImage", width=px, height=px, batch_size=batch)[0]

    def _ksampler(self, seed: int, latent: dict) -> dict:
        from devhost import run_node

        return run_node("KSampler", model=self.model, seed=seed, steps=self.steps, cfg=CFG, sampler_name="euler",
                        scheduler="normal", positive=self.positive, negative=self.negative,
                        latent_image=latent, denoise=1.0)[0]

    def _decode(self, latent: dict):
        from devhost import run_node

        return run_node("VAEDecode", vae=self.vae, samples=latent)[0]

    def sequential(self, n: int, px: int, seed: int = SEED):
        latent = self.latent(px, 1)
        return self.torch.cat([self.verifier.score(self._decode(self._ksampler(seed + i, latent)), PROMPT)
                               for i in range(n)])

    def limit(self, n: int, px: int, seed: int = SEED):
        """One stock sampler call on a batch of the n candidates' noises (candidate i: seed + i),
        one batched decode, one verifier pass."""
        from devhost import run_node

        guider = run_node("CFGGuider", model=self.model, positive=self.positive, negative=self.negative, cfg=CFG)[0]
        sigmas = run_node("BasicScheduler", model=self.model, scheduler="normal", steps=self.steps, denoise=1.0)[0]
        latent = run_node("SamplerCustomAdvanced", noise=run_node("NoiseCandidates", seed=seed, count=n)[0],
                          guider=guider, sampler=run_node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas,
                          latent_image=self.latent(px, 1))[0]
        return self.verifier.score(self._decode(latent), PROMPT)

    def _search_args(self, px: int, seed: int, batch_size: int, latent: dict | None = None) -> dict:
        return dict(model=self.model, seed=seed, steps=self.steps, search_steps=0, cfg=CFG, sampler_name="euler",
                    scheduler="normal", positive=self.positive, negative=self.negative,
                    latent_image=latent or self.latent(px, 1), denoise=1.0, vae=self.vae, verifier=self.verifier,
                    condition=PROMPT, budget=0, top_k=1, batch_size=batch_size)

    def search(self, node: str, px: int, seed: int = SEED, batch_size: int = 0, decode: bool = True,
               latent: dict | None = None, **opts):
        """A search node (on ``latent``, default a batch-1 empty latent) and (by default) VAEDecode
        of its winners; returns the parsed report."""
        from devhost import run_node

        out = run_node(node, **self._search_args(px, seed, batch_size, latent), **opts)
        if decode:
            self._decode(out[0])
        return json.loads(out[-1])

    def batched(self, node: str, px: int, problems: int, batch_size: int = 0, **opts) -> list[dict]:
        """One search of a latent batch of ``problems`` (each latent its own problem) plus one
        VAEDecode of the winners; returns every problem's report."""
        report = self.search(node, px, batch_size=batch_size, latent=self.latent(px, problems), **opts)
        return report.get("problems", [report])

    def one_by_one(self, node: str, px: int, problems: int, batch_size: int = 0, **opts) -> list[dict]:
        """The same problems searched one after another: element b of the same batch (LatentFromBatch,
        so its noises are the batch's element b, as with a stock KSampler), each with its own
        VAEDecode; returns every problem's report."""
        from devhost import run_node

        batch = self.latent(px, problems)
        return [self.search(node, px, batch_size=batch_size, latent=run_node(
            "LatentFromBatch", samples=batch, batch_index=b, length=1)[0], **opts) for b in range(problems)]

    def random_search(self, n: int, px: int, seed: int = SEED, batch_size: int = 0, decode: bool = True):
        return self.search("RandomSearch", px, seed, batch_size, decode, candidates=n)

    # timing -------------------------------------------------------------------------------
    def timed(self, fn):
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    def interleaved(self, jobs: dict, repeats: int) -> dict:
        """Median seconds of each job; the order rotates every repeat. Also keeps outputs."""
        names = list(jobs)
        times: dict[str, list[float]] = {k: [] for k in names}
        outs = {}
        for r in range(repeats):
            for k in names[r % len(names):] + names[: r % len(names)]:
                dt, outs[k] = self.timed(jobs[k])
                times[k].append(dt)
        return {k: statistics.median(v) for k, v in times.items()}, times, outs


# -- sections -----------------------------------------------------------------------------
def second_run_check(bench: Bench, px: int, n: int) -> dict:
    """Run the workflow twice in one process, as a server would: the second run must load no
    weights (files, verifier models, or weights onto the device)."""
    before = bench.loads.snapshot()
    stages = bench.load_models()
    t_first, _ = bench.timed(lambda: bench.random_search(n, px, SEED))
    first = bench.loads.since(before)
    mid = bench.loads.snapshot()
    # The server re-runs only nodes whose inputs changed (a new seed: the search node); a
    # re-executed verifier loader must come from the cache as well.
    t_loader, again = bench.timed(bench.load_verifier)
    t_second, _ = bench.timed(lambda: bench.random_search(n, px, SEED + 1))
    second = bench.loads.since(mid)
    modules = getattr(bench.verifier, "torch_modules", lambda: [])
    same = again is bench.verifier or (
        [id(m) for m in getattr(again, "torch_modules", lambda: [])()] == [id(m) for m in modules()])
    return {"first_run": {"loaders": {k: round(v, 3) for k, v in stages.items()},
                          "random_search_s": round(t_first, 3), "loads": first},
            "second_run": {"verifier_loader_s": round(t_loader, 4), "random_search_s": round(t_second, 3),
                           "loads": second, "same_verifier_weights": same},
            "no_loads_on_second_run": all(v == 0 for v in second.values()) and same}


def warm_up(bench: Bench, pxs) -> None:
    for px in sorted(set(pxs)):
        bench.sequential(1, px)
        bench.random_search(2, px)
        bench.limit(2, px)


def ladder(bench: Bench, configs) -> list[dict]:
    rows = []
    log("\nWall time, median over repeats [s]; ratios as the median of per-repeat ratios "
        "(ratio of the medians in brackets)")
    log(f"{'px':>4} {'N':>3} {'rep':>3} | {'a seq':>8} {'b search':>8} {'c limit':>8} | "
        f"{'a/b':>12} {'b/c':>12} | scores b==c")
    for px, n, repeats in configs:
        med, all_times, outs = bench.interleaved({
            "a": lambda n=n, px=px: bench.sequential(n, px),
            "b": lambda n=n, px=px: bench.random_search(n, px),
            "c": lambda n=n, px=px: bench.limit(n, px),
        }, repeats)
        b_scores = [c["score"] for c in sorted(outs["b"]["candidates"], key=lambda c: c["id"])]
        diff = float((bench.torch.tensor(b_scores) - outs["c"]).abs().max())
        a_s, b_s, c_s = all_times["a"], all_times["b"], all_times["c"]
        row = {"px": px, "n": n, "repeats": repeats, "a_s": med["a"], "b_s": med["b"], "c_s": med["c"],
               "a_over_b": statistics.median(x / y for x, y in zip(a_s, b_s)),
               "b_over_c": statistics.median(x / y for x, y in zip(b_s, c_s)),
               "a_over_b_of_medians": med["a"] / med["b"], "b_over_c_of_medians": med["b"] / med["c"],
               "times": {k: [round(t, 4) for t in v] for k, v in all_times.items()},
               "b_report_timings": outs["b"]["timings"],
               "b_batch_size": min(n, outs["b"]["settings"]["batch_size"]),
               "scores_max_abs_diff_b_c": diff}
        rows.append(row)
        log(f"{px:>4} {n:>3} {repeats:>3} | {med['a']:>8.3f} {med['b']:>8.3f} {med['c']:>8.3f} | "
            f"{row['a_over_b']:>5.2f} ({row['a_over_b_of_medians']:>4.2f}) "
            f"{row['b_over_c']:>5.2f} ({row['b_over_c_of_medians']:>4.2f}) | "
            f"{'yes' if diff < 1e-3 else 'NO'} (max diff {diff:.1e})")
    log("every repeat [s] (in the order run; a shared machine shows here):")
    for r in rows:
        log(f"  {r['px']:>4} px N={r['n']:<3} " + "  ".join(
            f"{k}: {' '.join(f'{t:.2f}' for t in v)}" for k, v in r["times"].items()))
    return rows


def algorithms(bench: Bench, px: int, repeats: int, random_n: int, zo: dict, paths: dict) -> dict:
    med, _, outs = bench.interleaved({
        "random": lambda: bench.random_search(random_n, px),
        "zero_order": lambda: bench.search("ZeroOrderSearch", px, **zo),
        "paths": lambda: bench.search("PathSearch", px, **paths),
    }, repeats)
    res = {}
    for k in med:
        nfe = outs[k]["nfe"]["search_total"]
        res[k] = {"nfe": nfe, "median_s": med[k], "nfe_per_s": nfe / med[k]}
    for k in res:
        res[k]["relative_to_random"] = res[k]["nfe_per_s"] / res["random"]["nfe_per_s"]
    log(f"\nNFE throughput at {px} px (candidate-NFEs per second, each search plus VAEDecode of its winner):")
    for k, v in res.items():
        log(f"  {k:<10} {v['nfe']:>4} NFEs in {v['median_s']:.3f} s = {v['nfe_per_s']:7.1f} NFE/s "
            f"({v['relative_to_random']:.2f}x RandomSearch)")
    log(f"  settings: RandomSearch N={random_n}; ZeroOrderSearch {zo}; PathSearch {paths}")
    return res


def batches(bench: Bench, px: int, problems: int, repeats: int, strategies: dict) -> dict:
    """Per strategy: one search of a latent batch of ``problems`` against the same problems
    searched one by one (interleaved repeats, median of per-repeat ratios), and whether both
    found the same winners; for random search also the batched limit (c)."""
    jobs = {}
    for name, (node, opts) in strategies.items():
        jobs[f"{name} batch"] = lambda node=node, opts=opts: bench.batched(node, px, problems, **opts)
        jobs[f"{name} one by one"] = lambda node=node, opts=opts: bench.one_by_one(node, px, problems, **opts)
    n_random = strategies["random"][1]["candidates"] * problems
    jobs["random limit"] = lambda: bench.limit(n_random, px)
    _, times, outs = bench.interleaved(jobs, repeats)
    res = {}
    log(f"\nLatent batches at {px} px: {problems} problems in one search against {problems} searches one after "
        "another (each plus VAEDecode of its winners; median of per-repeat ratios):")
    for name, (node, opts) in strategies.items():
        batch, seq = times[f"{name} batch"], times[f"{name} one by one"]
        same = [(p["best"]["id"], round(p["best"]["score"], 3)) for p in outs[f"{name} batch"]] == \
            [(p["best"]["id"], round(p["best"]["score"], 3)) for p in outs[f"{name} one by one"]]
        res[name] = {"batch_s": statistics.median(batch), "one_by_one_s": statistics.median(seq),
                     "speedup": statistics.median(s / b for s, b in zip(seq, batch)), "same_winners": same,
                     "nfe_per_problem": outs[f"{name} batch"][0]["nfe"]["search_total"], "settings": opts}
        log(f"  {name:<10} batch {res[name]['batch_s']:7.3f} s, one by one {res[name]['one_by_one_s']:7.3f} s -> "
            f"speed-up {res[name]['speedup']:.2f} ({res[name]['nfe_per_problem']} NFEs per problem; same winners: "
            f"{'yes' if same else 'NO'}); {node} {opts}")
    limit = times["random limit"]
    res["random"]["limit_s"] = statistics.median(limit)
    res["random"]["over_limit"] = statistics.median(b / c for b, c in zip(times["random batch"], limit))
    log(f"  random batch over its limit (one stock call on all {n_random} candidates, one decode, one verifier "
        f"pass, {res['random']['limit_s']:.3f} s): b/c {res['random']['over_limit']:.2f}")
    log("  every repeat [s]: " + "  ".join(f"{k}: {' '.join(f'{t:.2f}' for t in v)}" for k, v in times.items()))
    return res


def batch_memory(bench: Bench, px: int, problems: int, mem_batch: int, candidates: int) -> dict:
    """Peak memory growth of RandomSearch at batch_size=mem_batch: ``problems`` latents against one.
    Each is measured twice, alternating, and the smaller growth kept (a first run of a new shape
    can grow the allocators' caches by tens of MiB, in either order)."""
    steps, bench.steps = bench.steps, min(bench.steps, MEM_STEPS)
    runs = {1: [], problems: []}
    try:
        for _ in range(2):
            for b in runs:
                runs[b].append(peak_growth_mib(
                    lambda b=b: bench.batched("RandomSearch", px, b, mem_batch, candidates=candidates), bench.device))
    finally:
        bench.steps = steps
    one, many = min(runs[1]), min(runs[problems])
    ratio = many / one if one else float("nan")
    log(f"RandomSearch ({candidates} candidates) at batch_size={mem_batch}, {px} px: {problems} problems "
        f"{many:.1f} MiB, 1 problem {one:.1f} MiB -> ratio {ratio:.2f} (runs: 1 problem "
        f"{' '.join(f'{m:.1f}' for m in runs[1])}, {problems} problems {' '.join(f'{m:.1f}' for m in runs[problems])})")
    return {"ratio": ratio, "one_mib": one, "batch_mib": many, "runs": {str(k): v for k, v in runs.items()}}


def memory_configs(configs, mem_batch: int, mem_pair: tuple[int, int], mem_px: int) -> list[dict]:
    """b and c at every rung; a (one candidate at a time, so its peak does not grow with N)
    at the smallest N of each size; RandomSearch at batch_size=mem_batch for mem_pair."""
    out, smallest = [], {}
    for px, n, _ in configs:
        smallest[px] = min(n, smallest.get(px, n))
    for px, n, _ in configs:
        modes = ("a", "b", "c") if n == smallest[px] else ("b", "c")
        out += [{"mode": mode, "px": px, "n": n, "batch_size": 0} for mode in modes]
    for n in mem_pair:
        out.append({"mode": "b", "px": mem_px, "n": n, "batch_size": mem_batch})
    return out


def run_memory(bench: Bench, configs: list[dict]) -> list[dict]:
    """Peak growth of each configuration, measured in this process after the timings."""
    if bench.device == "cpu" and not release_freed_memory_to_os():
        log("(could not set glibc's mmap threshold: CPU peak memory figures are approximate)")
    steps, bench.steps = bench.steps, min(bench.steps, MEM_STEPS)
    results = []
    for c in configs:
        if c["mode"] == "a":
            fn = lambda c=c: bench.sequential(c["n"], c["px"])  # noqa: E731
        elif c["mode"] == "b":
            fn = lambda c=c: bench.random_search(c["n"], c["px"], batch_size=c["batch_size"])  # noqa: E731
        else:
            fn = lambda c=c: bench.limit(c["n"], c["px"])  # noqa: E731
        peak = peak_growth_mib(fn, bench.device)
        results.append({**c, "peak_mib": peak})
    bench.steps = steps
    return results


def print_memory(rows: list[dict], mem: list[dict], mem_batch: int, mem_pair, mem_px: int) -> dict:
    def find(mode, px, n, bs=0):
        for m in mem:
            if (m["mode"], m["px"], m["n"], m["batch_size"]) == (mode, px, n, bs):
                return m["peak_mib"]
        return None

    def fmt(v):
        return f"{v:>8.1f}" if v is not None else f"{'-':>8}"

    log(f"\nPeak memory growth per configuration [MiB] (CPU: peak RSS over the RSS before the run; "
        f"CUDA: max_memory_allocated growth; one untimed run each, {MEM_STEPS} steps; a runs one "
        f"candidate at a time, measured at the smallest N):")
    log(f"{'px':>4} {'N':>3} | {'a seq':>8} {'b search':>8} {'c limit':>8} | {'b/c':>5}")
    for r in rows:
        r["mem_mib"] = {k: find(k, r["px"], r["n"]) for k in "abc"}
        b, c = r["mem_mib"]["b"], r["mem_mib"]["c"]
        ratio = f"{b / c:>5.2f}" if b and c else f"{'-':>5}"
        log(f"{r['px']:>4} {r['n']:>3} | {fmt(r['mem_mib']['a'])} {fmt(b)} {fmt(c)} | {ratio}")
    lo, hi = find("b", mem_px, mem_pair[0], mem_batch), find("b", mem_px, mem_pair[1], mem_batch)
    ratio = hi / lo if lo and hi is not None else float("nan")
    log(f"RandomSearch at batch_size={mem_batch}, {mem_px} px: N={mem_pair[1]} {hi:.1f} MiB, "
        f"N={mem_pair[0]} {lo:.1f} MiB -> ratio {ratio:.2f}")
    return {"ratio": ratio, "low_mib": lo, "high_mib": hi}


def profile_section(bench: Bench, px: int, n: int, top: int = 30) -> dict:
    """cProfile of b and c at one configuration (after a warm-up)."""
    warm_up(bench, [px])
    out = {}
    for name, fn in (("b", lambda: bench.random_search(n, px)), ("c", lambda: bench.limit(n, px))):
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(fn)
        out[name] = time.perf_counter() - t0
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(top)
        log(f"\n===== profile of {name} at {px} px, N={n}: {out[name]:.3f} s =====\n{s.getvalue()}")
    return out


# -- full-size models (--full-size; the default on CUDA) ------------------------------------
# The UNet configurations of ComfyUI's SD1.5 and SDXL (its model_detection), built with the host's
# own model classes (comfy.supported_models) and random weights at benchmark time; the SD VAE
# (AutoencoderKL, 83M parameters) through comfy.sd.VAE from a random state dict in the official
# key layout; the verifier is CLIPScore on a random open_clip ViT-L/14 (the backbone of
# CLIPScore, the LAION aesthetic predictor and PickScore-style verifiers).
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False}
# --quick: the same classes with fewer blocks (one level of one res block with one transformer
# block, and the middle block), so the CPU builds and runs them in seconds; at 32 px.
QUICK_UNET = {"sd15": {"num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1],
                       "transformer_depth_output": [1, 1]},
              "sdxl": {"num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1],
                       "transformer_depth_middle": 1, "transformer_depth_output": [1, 1]}}
# --quick's strategies: one zero-order iteration, one path with two branches.
QUICK_STRATEGY_OPTIONS = {"zero_order": {"iterations": 1},
                          "paths": {"paths": 1, "branches": 2, "start": 0.3, "forward": 0.2, "backward": 0.3,
                                    "interval_steps": 1}}
# model: (UNet config, supported_models class, context width, pooled width, px, N, steps, repeats,
# latent batch, dtype on CUDA); quick: 32 px, N=2, 2 steps, 1 repeat, batch of 2, float32.
FULL_MODELS = {
    "sd15": (SD15_UNET, "SD15", 768, None, 512, 8, 10, 2, 4, "float16"),
    "sdxl": (SDXL_UNET, "SDXL", 2048, 1280, 1024, 4, 8, 2, 2, "float16"),
}
FULL_STRATEGIES = {
    "random": ("RandomSearch", {"candidates": 4}),
    "zero_order": ("ZeroOrderSearch", {"neighbours": 2, "iterations": 2, "angle": 30.0, "restart": True}),
    "paths": ("PathSearch", {"paths": 2, "branches": 2, "start": 0.4, "forward": 0.2, "backward": 0.3,
                             "interval_steps": 2}),
}
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
CLIP_ARCH, QUICK_CLIP_ARCH = "ViT-L-14", "NSBench-ViT-L-14-2layers"


def randomize_(module, seed: int) -> int:
    """Random weights in place (fan-in scaled normals; norms 1, biases 0); returns the parameter count."""
    import torch

    g = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            count += p.numel()
            if p.ndim <= 1:
                p.fill_(1.0 if "norm" in name or name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
    return count


def build_unet(name: str, quick: bool, device: str):
    """A random-weight UNet as a ModelPatcher, built by the host's model class for ``name``."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config, cls_name = dict(FULL_MODELS[name][0]), FULL_MODELS[name][1]
    if quick:
        config.update(QUICK_UNET[name])
    dtype = getattr(torch, FULL_MODELS[name][9]) if device == "cuda" else torch.float32
    model_config = getattr(comfy.supported_models, cls_name)(config)
    load, offload = mm.get_torch_device(), mm.unet_offload_device()
    model_config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load, model_config.supported_inference_dtypes))
    model = model_config.get_model({}, "")
    params = randomize_(model.diffusion_model, 0)
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=load, offload_device=offload), params


def build_vae(quick: bool):
    """The SD VAE (as SD1.5 and SDXL ship it) with random weights, loaded by comfy.sd.VAE from a
    state dict in the official layout (quick: the same AutoencoderKL at a quarter of the width
    with one res block per level, given to comfy.sd.VAE as its config)."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {**SD_VAE, "ch": 32, "num_res_blocks": 1} if quick else SD_VAE
    model = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    params = randomize_(model, 1)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = {"params": {"ddconfig": ddconfig, "embed_dim": 4}} if quick else None
    return comfy.sd.VAE(sd=sd, config=config), params


def build_clip_verifier(quick: bool):
    """CLIPScore on a random open_clip ViT-L/14 (quick: its widths, patch and image size with 2 layers)."""
    import open_clip

    from devhost import pack_module

    arch = QUICK_CLIP_ARCH if quick else CLIP_ARCH
    if quick and arch not in open_clip.list_models():
        cfg = json.loads(json.dumps(open_clip.get_model_config(CLIP_ARCH)))
        cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"] = 2, 2
        folder = Path(tempfile.mkdtemp(prefix="noise_search_clip_cfg_"))
        (folder / f"{arch}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(str(folder))
    model = open_clip.create_model(arch, pretrained=None)
    params = sum(p.numel() for p in model.parameters())
    clip_mod = pack_module("verifiers.clip")
    clip = clip_mod.OpenCLIPModel(model, open_clip.get_tokenizer(arch), arch)
    return pack_module("verifiers.comfy_runtime").attach(clip_mod.CLIPScoreVerifier(clip)), arch, params


class FullSizeBench(Bench):
    """The same measurements on a full-size random model; models are set by ``use``."""

    def __init__(self, device: str, steps: int, server_hook: bool, quick: bool):
        super().__init__(device, steps, server_hook)
        self.quick = quick
        t0 = time.perf_counter()
        self.vae, self.vae_params = build_vae(quick)
        self.verifier, self.clip_arch, self.clip_params = build_clip_verifier(quick)
        self.verifier_name = f"CLIPScore, random open_clip {self.clip_arch}"
        self.verifier_file = None
        self.build_s = time.perf_counter() - t0

    def use(self, name: str) -> dict:
        import torch

        self.model = None
        gc.collect()
        t0 = time.perf_counter()
        self.model, params = build_unet(name, self.quick, self.device)
        context, pooled = FULL_MODELS[name][2], FULL_MODELS[name][3]
        g = torch.Generator().manual_seed(2)

        def cond(scale):
            extra = {"pooled_output": torch.randn(1, pooled, generator=g)} if pooled else {}
            return [[torch.randn(1, 77, context, generator=g) * scale, extra]]

        self.positive, self.negative = cond(1.0), cond(0.1)
        return {"unet_params": params, "build_s": time.perf_counter() - t0}


def full_size(bench: FullSizeBench, names: list[str], quick: bool) -> dict:
    """Per model: the a/b/c rung, batch speed-up per strategy, peak memory per strategy."""
    out = {}
    for name in names:
        _, _, _, _, px, n, steps, repeats, problems, dtype = FULL_MODELS[name]
        if quick:
            px, n, steps, repeats, problems = 32, 2, 2, 1, 2
        bench.steps = steps
        section(f"full-size {name}: {px} px, N={n}, {steps} steps" + (" (quick: fewer UNet blocks)" if quick else ""))
        info = bench.use(name)
        log(f"{name} UNet: {info['unet_params'] / 1e6:.0f}M parameters "
            f"({'float32' if bench.device == 'cpu' else dtype}), built in {info['build_s']:.1f} s; SD VAE "
            f"{bench.vae_params / 1e6:.0f}M; {bench.verifier_name} {bench.clip_params / 1e6:.0f}M")
        if not quick:  # quick makes no timing claims: no warm-up
            warm_up(bench, [px])
        row = ladder(bench, [(px, n, repeats)])[0]
        strategies = {k: (node, {**opts, "candidates": n} if k == "random" else dict(opts))
                      for k, (node, opts) in FULL_STRATEGIES.items()}
        if quick:
            for k, extra in QUICK_STRATEGY_OPTIONS.items():
                strategies[k][1].update(extra)
        # Quick: latent batches of random search only (the CPU check stays short; the tiny
        # ladder's --quick runs them for every strategy through the same function).
        batch = batches(bench, px, problems, repeats, {"random": strategies["random"]} if quick else strategies)
        peaks = {}
        for key, (node, opts) in strategies.items():
            peaks[key] = peak_growth_mib(lambda node=node, opts=opts, px=px: bench.search(node, px, **opts),
                                         bench.device)
        log("peak memory per strategy [MiB]: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()))
        out[name] = {"px": px, "n": n, "steps": steps, "repeats": repeats, "problems": problems,
                     "unet_params": info["unet_params"], "a_over_b": row["a_over_b"], "b_over_c": row["b_over_c"],
                     "a_s": row["a_s"], "b_s": row["b_s"], "c_s": row["c_s"],
                     "scores_max_abs_diff_b_c": row["scores_max_abs_diff_b_c"],
                     "batch_speedup": {k: v["speedup"] for k, v in batch.items()},
                     "batch_same_winners": all(v["same_winners"] for v in batch.values()),
                     "peak_mib": peaks}
        bench.model = None
    return out


def run_full_size(args, device: str) -> dict:
    bench = FullSizeBench(device, 2, args.server_hook, args.quick)
    log(f"full-size models (random weights, built now): SD VAE, {bench.verifier_name}; built in {bench.build_s:.1f} s")
    return full_size(bench, ["sd15", "sdxl"], args.quick)


# -- main ---------------------------------------------------------------------------------
def clean(x):
    """JSON-ready: floats rounded, non-finite ones as null."""
    if isinstance(x, float):
        return round(x, 5) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def main(argv=None) -> int:
    import torch

    # ComfyUI's executor runs every node under torch.inference_mode(); so does this process
    # (outside it, verifier activations would build autograd graphs a server never builds).
    with torch.inference_mode():
        return _main(argv)


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configuration (32 px, N=2/4, 2 steps, 1 repeat)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--steps", type=int, default=None, help=f"Euler steps (default {STEPS}; quick {QUICK_STEPS})")
    p.add_argument("--repeats", type=int, default=None, help="override the repeats of every ladder rung")
    p.add_argument("--no-server-hook", dest="server_hook", action="store_false",
                   help="do not install the server-like progress hook")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    p.add_argument("--profile", metavar="PX,N", help="only profile b and c at one configuration, e.g. 64,16")
    p.add_argument("--full-size", action="store_true",
                   help="only the full-size models (SD1.5 UNet at 512 px, SDXL UNet at 1024 px in fp16, the SD VAE, "
                        "CLIP ViT-L/14, random weights built now); with --quick: fewer UNet blocks and CLIP layers "
                        "at 32 px (the CPU check of that path). Default on CUDA: the tiny ladder, then these")
    p.add_argument("--tiny", action="store_true", help="only the tiny ladder (the default on the CPU)")
    args = p.parse_args(argv)
    if args.full_size and args.tiny:
        p.error("--full-size and --tiny exclude each other")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    args.steps = args.steps or (QUICK_STEPS if args.quick else STEPS)

    t_start = time.perf_counter()
    if args.full_size:
        log(f"noise-search performance benchmark, full-size models: device={device}, torch {torch.__version__}, "
            f"threads={torch.get_num_threads()}" + (f", GPU: {torch.cuda.get_device_name()}" if device == "cuda" else ""))
        full = run_full_size(args, device)
        print(json.dumps(clean({"device": device, "quick": args.quick, "full_size": full,
                                "total_s": time.perf_counter() - t_start})), flush=True)
        return 0
    configs = QUICK_LADDER if args.quick else LADDER + (GPU_RUNGS if device == "cuda" else [])
    if args.repeats:
        configs = [(px, n, args.repeats) for px, n, _ in configs]
    mem_batch = QUICK_MEM_BATCH if args.quick else MEM_BATCH
    mem_pair = (2, 4) if args.quick else (16, 64)
    small_px = configs[0][0]

    bench = Bench(device, args.steps, args.server_hook)
    log(f"noise-search performance benchmark: device={device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    if device == "cuda":
        log(f"GPU: {torch.cuda.get_device_name()}")

    section("loaders, and the same workflow run twice")
    check = second_run_check(bench, small_px, 4 if not args.quick else 2)
    log(f"verifier: {bench.verifier_name}")
    log(f"model: tiny SD1.5-shaped checkpoint (UNet 320 channels, 1 level; TAESD VAE; random CLIP-L), "
        f"euler, {args.steps} steps, cfg {CFG} (2 model rows per NFE), scheduler normal, seeds from {SEED}")
    log(f"progress hook: {'server-like (previews fitted to 512 px and JPEG-encoded)' if args.server_hook else 'none'}")
    f, s = check["first_run"], check["second_run"]
    log(f"\nSame workflow twice in one process (as in one server): first run loaders {f['loaders']}, "
        f"RandomSearch {f['random_search_s']:.3f} s, loads {f['loads']}; second run RandomSearch "
        f"{s['random_search_s']:.3f} s, re-executed verifier loader {s['verifier_loader_s'] * 1000:.1f} ms, "
        f"loads {s['loads']} -> {'no weights loaded on the second run' if check['no_loads_on_second_run'] else 'WEIGHTS RELOADED'}")

    if args.profile:
        px, n = (int(v) for v in args.profile.split(","))
        prof = profile_section(bench, px, n)
        print(json.dumps({"device": device, "profile": prof}))
        return 0

    section("warm-up")
    warm_up(bench, [c[0] for c in configs])
    section("ladder: a, b and c interleaved")
    rows = ladder(bench, configs)
    section("NFE throughput of the algorithms")
    algo = algorithms(bench, small_px, 1 if args.quick else 3, 4 if args.quick else RANDOM_N,
                      {**ZO, "iterations": 1} if args.quick else ZO,
                      {**PATHS, "paths": 2, "branches": 2} if args.quick else PATHS)

    section("latent batches: B problems in one search against B searches")
    problems = QUICK_BATCH_PROBLEMS if args.quick else BATCH_PROBLEMS
    strategies = BATCH_STRATEGIES
    if args.quick:
        strategies = {"random": ("RandomSearch", {"candidates": 2}),
                      "zero_order": ("ZeroOrderSearch", {**BATCH_STRATEGIES["zero_order"][1], "iterations": 1}),
                      "paths": BATCH_STRATEGIES["paths"]}
    batch = batches(bench, small_px, problems, 1 if args.quick else 2, strategies)

    mem_ratio, mem_pair_mib, batch_mem = float("nan"), {}, {"ratio": float("nan")}
    if not args.skip_memory:
        section("peak memory (untimed runs)")
        mem = run_memory(bench, memory_configs(configs, mem_batch, mem_pair, small_px))
        mem_pair_mib = print_memory(rows, mem, mem_batch, mem_pair, small_px)
        mem_ratio = mem_pair_mib["ratio"]
        batch_mem = batch_memory(bench, small_px, problems, mem_batch, mem_batch)

    overhead_max = max(r["b_over_c"] for r in rows)
    # --quick has no 64 px, N=16 rung: its largest rung stands in (named in the summary).
    speed_row = next((r for r in rows if (r["px"], r["n"]) == (64, 16)), rows[-1])
    speedup = speed_row["a_over_b"]
    gpu_row = next((r for r in rows if r["px"] == 512), None)
    section("targets (reported, not asserted)")
    log(f"  b/c <= {TARGETS['overhead']:.2f} at every N and resolution: max {overhead_max:.3f} -> "
        f"{'met' if overhead_max <= TARGETS['overhead'] else 'NOT met'}")
    log(f"  a/b >= {TARGETS['speedup']:.1f} at 64 px, N=16 (here {speed_row['px']} px, N={speed_row['n']}): "
        f"{speedup:.2f} -> "
        f"{'met' if speedup >= TARGETS['speedup'] else 'NOT met'}")
    if gpu_row:
        log(f"  a/b >= 4 at 512 px, N=16 on the GPU: {gpu_row['a_over_b']:.2f} -> "
            f"{'met' if gpu_row['a_over_b'] >= 4 else 'NOT met'}")
    log(f"  peak memory N={mem_pair[1]} within {TARGETS['mem_ratio']:.1f}x of N={mem_pair[0]} at batch_size="
        f"{mem_batch}: {mem_ratio:.2f} -> {'met' if mem_ratio <= TARGETS['mem_ratio'] else 'NOT met'}")
    for name, row in batch.items():
        target = TARGETS["batch_speedup"][name]
        log(f"  batch_speedup_{name} >= {target:.0f} ({problems} problems at {small_px} px): {row['speedup']:.2f} -> "
            f"{'met' if row['speedup'] >= target else 'NOT met'}")
    log(f"  batched random search over its limit <= {TARGETS['overhead']:.2f}: {batch['random']['over_limit']:.2f} -> "
        f"{'met' if batch['random']['over_limit'] <= TARGETS['overhead'] else 'NOT met'}")
    log(f"  peak memory of {problems} problems within {TARGETS['batch_mem_ratio']:.1f}x of one at batch_size="
        f"{mem_batch}: {batch_mem['ratio']:.2f} -> "
        f"{'met' if batch_mem['ratio'] <= TARGETS['batch_mem_ratio'] else 'NOT met'}")
    log(f"  second run of the workflow loads no weights: "
        f"{'met' if check['no_loads_on_second_run'] else 'NOT met'}")
    if bench.hook_stats is not None:
        h = bench.hook_stats
        log(f"progress hook: {h['calls']} updates, {h['previews']} previews encoded in {h['preview_s']:.3f} s")
    full = None
    if device == "cuda" and not args.tiny:  # what users run: full-size models after the tiny ladder
        full = run_full_size(args, device)
    log(f"total benchmark time {time.perf_counter() - t_start:.1f} s")

    summary = {
        "device": device, "quick": args.quick, "steps": args.steps, "cfg": CFG, "verifier": bench.verifier_name,
        "overhead_max": overhead_max, "speedup_64px_n16": speedup, "mem_ratio_n64_n16": mem_ratio,
        "overhead_max_of_medians": max(r["b_over_c_of_medians"] for r in rows),
        "speedup_config": [speed_row["px"], speed_row["n"]], "mem_pair": list(mem_pair),
        "mem_pair_mib": [mem_pair_mib.get("low_mib"), mem_pair_mib.get("high_mib")],
        "mem_batch_size": mem_batch, "no_loads_on_second_run": check["no_loads_on_second_run"],
        "second_run_speedup": check["first_run"]["random_search_s"] / max(check["second_run"]["random_search_s"], 1e-9),
        "zero_order_nfe_rel": algo["zero_order"]["relative_to_random"],
        "paths_nfe_rel": algo["paths"]["relative_to_random"],
        "speedup_512px_n16": gpu_row["a_over_b"] if gpu_row else None,
        **{f"batch_speedup_{k}": v["speedup"] for k, v in batch.items()},
        "batch_overhead_random": batch["random"]["over_limit"], "batch_mem_ratio": batch_mem["ratio"],
        "batch_same_winners": all(v["same_winners"] for v in batch.values()), "batch_problems": problems,
        "batch": batch, "batch_mem_mib": batch_mem,
        "ladder": [{k: v for k, v in r.items() if k != "times"} for r in rows],
        "full_size": full,
        "total_s": time.perf_counter() - t_start,
    }
    print(json.dumps(clean(summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
