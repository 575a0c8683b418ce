#!/usr/bin/env python
"""Video rows of ``make bench``: random search on a tiny Wan 2.1 model against its limit, and
peak memory against the number of candidates.

Run from the repository root: ``python bench/video.py`` (``--quick``: the tests' tiny setting).
One process loads ComfyUI in-process (CUDA when available, else the CPU) with the tiny
random-weight Wan 2.1 text-to-video model and Wan 2.1 VAE of the tests
(tests/harness/video_models.py, loaded by the host's UNETLoader and VAELoader), shift 8 as the
template, Euler, cfg 3, and a verifier that scores every frame (the tests' ProbeVerifier):

- overhead: the RandomSearchSampler node with N candidates (plus the VAEDecode of its winner)
  against the limit: one stock SamplerCustomAdvanced call on all N noises (NoiseCandidates),
  one batched VAE decode of the N videos and one batched verifier pass over their frames.
  Repeats are interleaved; the figure is the median of the per-repeat ratios.
- memory: the peak memory growth of one search (``bench/perf.py``'s measure: CUDA's peak
  allocation, or the CPU's peak-RSS mark) for N candidates in one model call (batch_size N),
  and with the chunker holding calls to 2 candidates (batch_size 2).

The last line printed is one JSON object: {"video_overhead": {N: ratio}, "video_peak_mib":
{N: MiB}, "video_peak_mib_chunk2": {N: MiB}, "frames": T, "px": size, ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEED, CFG, SHIFT = 3, 3.0, 8.0


def log(*parts) -> None:
    print(*parts, flush=True)


class VideoBench:
    def __init__(self, px: int, frames: int, steps: int):
        # ComfyUI's root has a `tests` package of its own: import this repository's first.
        import tests.harness.video_models as vm
        import tests.toy_verifier as toy
        from bench.perf import load_host

        self.torch = __import__("torch")
        self.device = "cuda" if self.torch.cuda.is_available() else "cpu"
        load_host(self.device)
        import folder_paths

        from devhost import run_node

        self.run = run_node
        unet, vae = vm.wan21_unet(), vm.wan21_vae()
        folder_paths.add_model_folder_path("diffusion_models", str(unet.parent))
        folder_paths.add_model_folder_path("vae", str(vae.parent))
        model = run_node("UNETLoader", unet_name=unet.name, weight_dtype="default")[0]
        self.model = run_node("ModelSamplingSD3", model=model, shift=SHIFT)[0]
        self.vae = run_node("VAELoader", vae_name=vae.name)[0]
        self.positive, self.negative = vm.conditioning("wan")
        self.verifier = toy.ProbeVerifier()
        self.latent = run_node("EmptyHunyuanLatentVideo", width=px, height=px, length=frames, batch_size=1)[0]
        self.steps, self.px, self.frames = steps, px, frames

    def search(self, n: int, batch_size: int = 0):
        judge = self.run("SearchJudge", vae=self.vae, verifier=self.verifier, condition="")[0]
        out = self.run("RandomSearchSampler", model=self.model, seed=SEED, steps=self.steps, cfg=CFG,
                       sampler_name="euler", scheduler="simple", positive=self.positive, negative=self.negative,
                       latent_image=self.latent, denoise=1.0, judge=judge, candidates=n, budget=0, top_k=1,
                       batch_size=batch_size)
        return self.run("VAEDecode", samples=out[0], vae=self.vae)[0]

    def limit(self, n: int):
        guider = self.run("CFGGuider", model=self.model, positive=self.positive, negative=self.negative, cfg=CFG)[0]
        sigmas = self.run("BasicScheduler", model=self.model, scheduler="simple", steps=self.steps, denoise=1.0)[0]
        latent = self.run("SamplerCustomAdvanced", noise=self.run("NoiseCandidates", seed=SEED, count=n)[0],
                          guider=guider, sampler=self.run("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas,
                          latent_image=self.latent)[0]
        videos = self.vae.decode(latent["samples"])  # [N, T, H, W, C]
        return self.verifier.score(videos.reshape(-1, *videos.shape[2:]), "")

    def timed(self, fn) -> float:
        with self.torch.inference_mode():
            t0 = time.perf_counter()
            fn()
            if self.device == "cuda":
                self.torch.cuda.synchronize()
            return time.perf_counter() - t0


def overhead(bench: VideoBench, counts, repeats: int) -> dict:
    log(f"\nVideo search over its limit: Wan 2.1 (tiny), {bench.px} px x {bench.frames} frames, {bench.steps} Euler "
        "steps; search = RandomSearchSampler + VAEDecode of the winner, limit = one stock call on all N + one "
        "batched decode + one batched verifier pass [s, median]")
    log(f"{'N':>3} | {'search':>8} {'limit':>8} | {'ratio':>6}")
    bench.timed(lambda: bench.search(1))  # warm-up: model loading and first-call costs
    out = {}
    for n in counts:
        times = {"search": [], "limit": []}
        for r in range(repeats):
            order = ["search", "limit"] if r % 2 == 0 else ["limit", "search"]
            for key in order:
                times[key].append(bench.timed(lambda key=key, n=n: bench.search(n) if key == "search" else bench.limit(n)))
        ratio = statistics.median(s / lim for s, lim in zip(times["search"], times["limit"]))
        out[n] = round(ratio, 3)
        log(f"{n:>3} | {statistics.median(times['search']):>8.3f} {statistics.median(times['limit']):>8.3f} | "
            f"{ratio:>6.2f}x")
    return out


def memory(bench: VideoBench, counts) -> tuple[dict, dict]:
    from bench.perf import peak_growth_mib, release_freed_memory_to_os

    release_freed_memory_to_os()
    log(f"\nPeak memory of one video search against the candidates ({bench.px} px x {bench.frames} frames) [MiB]")
    log(f"{'N':>3} | {'one call':>9} {'chunks of 2':>12}")
    whole, chunked = {}, {}
    for n in counts:
        with bench.torch.inference_mode():
            whole[n] = round(peak_growth_mib(lambda n=n: bench.search(n, batch_size=n), bench.device), 1)
            chunked[n] = round(peak_growth_mib(lambda n=n: bench.search(n, batch_size=2), bench.device), 1)
        log(f"{n:>3} | {whole[n]:>9.1f} {chunked[n]:>12.1f}")
    return whole, chunked


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny setting (16 px, 5 frames, N=1/2, 1 repeat)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    px, frames, steps = (16, 5, 2) if args.quick else (32, 9, 4)
    counts = (1, 2) if args.quick else (1, 2, 4, 8)
    repeats = 1 if args.quick else args.repeats
    bench = VideoBench(px, frames, steps)
    log(f"device: {bench.device}; model: tiny Wan 2.1 t2v (dim 128, 1 block; random weights), tiny Wan 2.1 VAE")
    ratios = overhead(bench, counts, repeats)
    whole, chunked = memory(bench, counts)
    summary = {"video_overhead": ratios, "video_peak_mib": whole, "video_peak_mib_chunk2": chunked,
               "px": px, "frames": frames, "steps": steps, "device": bench.device}
    log(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
