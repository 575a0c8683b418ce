"""`make demo`: the paper's class-conditional scaling study, reproduced offline, with intervals.

A small class-conditional diffusion model of sklearn's digits runs through the pack's search
nodes and ComfyUI's sampler (in-process, exactly as a graph runs them), in the paper's
class-conditional setting: guidance 1.0 (no CFG; ComfyUI skips the unconditional pass). For a
ladder of total-NFE budgets it compares adding denoising steps with random search, zero-order
search, search over paths, particle steering (Feynman-Kac SMC), early rejection (successive
halving) and diffusion tree search (DTS*), all guided by one classifier (the verifier, loaded by the pack's
ClassifierVerifierLoader node) and judged by another, trained on disjoint data (the evaluator:
accuracy, Inception-Score-style IS, Frechet distance in its feature space against real digits
neither it nor the denoiser saw, per-class diversity).

Every metric comes with a 95% percentile-bootstrap interval (resampling samples within
classes), and every row is compared with NO SEARCH AT ALL (the first budget's row: the plain
sample of the same noises) by a paired bootstrap. After the tables the demo prints the issue's
targets, one line each, met or not met, with the numbers they rest on.

Outputs in demo_output/: results.json, table.txt, scaling.png, grid.png, samples.npz.

Conventions: the first budget of the ladder equals --search-steps, where every method is the
same plain sample (one noise, one solve: no search yet); search methods appear from the first
budget that pays for one round of them. All samples of a row are made in ONE call: the plain
samples are one stock batch (latent batch of 10 x per-class, a conditioning batch of their
classes) at seed 1000, and each search method x budget is one batched search node call on that
same latent and conditioning batch (a latent batch is searched as independent problems, one per
sample). Sample b starts from element b of the stock batch noise at seed 1000, so the methods
are compared on the same noises and classes, which is what makes the paired comparisons paired.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devhost import load_host, pack_module, run_node  # noqa: E402

METHODS = ("steps", "random", "zero_order", "paths", "particles", "rejection", "tree", "tempered", "threshold")
SEARCHES = METHODS[1:]
STRATEGIES = METHODS[1:7]  # the strategies, each with the best-of selection
# Random search with another selection rule (search/selection.py), on the same candidates.
SELECTIONS = ("tempered", "threshold")
LABELS = {"steps": "more denoising steps", "random": "random search", "zero_order": "zero-order search (ZO-2)",
          "paths": "search over paths", "particles": "particle steering (FK)", "rejection": "early rejection",
          "tree": "tree search (DTS*)", "tempered": "random, tempered (l=1)", "threshold": "random, threshold 10.5"}
METRICS = ("verifier_score", "inception_score", "accuracy", "frechet_distance", "diversity")
METRIC_NAMES = {"verifier_score": "verifier", "inception_score": "IS", "accuracy": "acc",
                "frechet_distance": "FD", "diversity": "divers."}
# Decimals each metric is printed with.
DIGITS = {"verifier_score": 2, "inception_score": 2, "accuracy": 3, "frechet_distance": 1, "diversity": 2}
WEIGHTS = Path(__file__).resolve().parent / "weights"

# Defaults of `make demo` (see bench/testbed/README.md for how they were chosen): the quick
# demo (12 samples per class, a few minutes on 2 cores) and, with --full (`make demo-full`),
# the full study (50 per class, about 8 minutes before the two selection-rule rows, roughly a third more with them).
BUDGETS = (4, 8, 16, 32, 64)
PER_CLASS = 12
FULL_PER_CLASS = 50
SEED = 1000
# Candidates per model call of the batched searches: the model is tiny, so large calls.
BATCH_SIZE = 1024
SEARCH_STEPS = 4
CFG = 1.0
ZERO_ORDER = {"neighbours": 2, "angle": 30.0, "restart": True}
PATHS = {"branches": 2, "start": 0.3, "forward": 0.2, "backward": 0.3, "interval_steps": 1}
# Particle steering: the node's defaults except lambda (see the README: chosen once, before the
# demo's runs, from the verifier's logit scale), on the same Euler sampler as every other row,
# re-noised `renoise` levels before each step so resampled copies part ways.
PARTICLES = {"potential": "max", "lmbda": 2.0, "interval": 1, "ess_threshold": 0.5, "renoise": 0.1,
             "sampler": "euler"}
# Early rejection: the node's defaults; a budget buys as many candidates as it pays for.
REJECTION = {"keep": 0.5, "levels": "0.7, 0.4"}
MAX_CANDIDATES = 4096  # the nodes' limit: the budget decides how many start
# Diffusion tree search: the node's defaults except lambda (the same logit scale as particle
# steering's); a budget buys as many rollouts as it pays for (deeper branches cost less).
TREE = {"branches": 2, "lmbda": 2.0, "greedy": True, "wave": 4, "renoise": 0.1}
# Selection rules, chosen before any run with them (bench/testbed/README.md): tempered at lambda 1 on
# the verifier's logit scale (candidates' logits spread by about one to two units, so the draw
# still favours better candidates without always taking the best); threshold at 10.5, the mean
# verifier score of random search's winners at 16 NFEs in the last published table (10.67),
# rounded down: "stop once a candidate is as good as a typical 4-candidate winner".
TEMPERED = {"rule": "tempered", "lambda_": 1.0, "threshold": 0.0}
THRESHOLD = {"rule": "threshold", "lambda_": 1.0, "threshold": 10.5}


def node_of(method: str) -> str:
    """The KSampler-style node of a search method, from the pack's strategy registry."""
    return pack_module("search.registry").get(method).sampler_node


class Testbed:
    """The model, VAE and verifier as a user's graph would load them, plus the evaluator."""

    def __init__(self, search_steps: int = SEARCH_STEPS, cfg: float = CFG, weights: Path = WEIGHTS,
                 zero_order: dict | None = None, paths: dict | None = None, particles: dict | None = None,
                 rejection: dict | None = None, tree: dict | None = None):
        load_host()
        import comfy.utils
        import folder_paths

        from bench.testbed.comfy_model import class_conditioning, load_digits_model, pixel_vae

        comfy.utils.PROGRESS_BAR_ENABLED = False  # the demo draws its own bars, one per method x budget
        folder_paths.add_model_folder_path("verifiers", str(weights))
        self.model, self.vae = load_digits_model(weights), pixel_vae()
        self.verifier = run_node("ClassifierVerifierLoader", classifier_file="verifier_classifier.safetensors")[0]
        classifier = pack_module("verifiers.classifier")
        module, config = classifier.load_classifier(Path(weights) / "evaluator_classifier.safetensors")
        self.evaluator = classifier.ClassifierVerifier(module, config)
        self.cond, self.null = class_conditioning, class_conditioning(None)
        self.search_steps, self.cfg = search_steps, cfg
        self.zero_order = {**ZERO_ORDER, **(zero_order or {})}
        self.paths = {**PATHS, **(paths or {})}
        self.particles = {**PARTICLES, **(particles or {})}
        self.rejection = {**REJECTION, **(rejection or {})}
        self.tree = {**TREE, **(tree or {})}

    def conditioning(self, labels: list[int]) -> list:
        """One CONDITIONING batch: element b is the class of sample b (as stock nodes batch prompts)."""
        return [[torch.cat([self.cond(int(c))[0][0] for c in labels]), {}]]

    def common(self, labels: list[int], seed: int) -> dict:
        return dict(model=self.model, seed=seed, cfg=self.cfg, sampler_name="euler", scheduler="normal",
                    positive=self.conditioning(labels), negative=self.null,
                    latent_image={"samples": torch.zeros(len(labels), 1, 16, 16)}, denoise=1.0)

    def _search_args(self, labels: list[int], seed: int, budget: int) -> dict:
        # One verifier condition per sample: its class.
        condition = json.dumps([str(int(c)) for c in labels]) if len(labels) > 1 else str(int(labels[0]))
        judge = run_node("SearchJudge", vae=self.vae, verifier=self.verifier, condition=condition)[0]
        return dict(self.common(labels, seed), steps=self.search_steps, judge=judge, budget=budget, top_k=1,
                    batch_size=BATCH_SIZE)

    @functools.cached_property
    def path_cost(self) -> int:
        """NFEs of path search with one path (the cost grows linearly with the paths kept)."""
        out = run_node(node_of("paths"), **self._search_args([0], 0, 0), paths=1, **self.paths)
        return int(json.loads(out[6])["nfe"]["search_total"])

    def min_budget(self, method: str) -> int:
        """The smallest budget at which ``method`` searches at all (one round beyond the plain sample)."""
        s = self.search_steps
        return {"steps": s, "random": 2 * s, "zero_order": s * (1 + self.zero_order["neighbours"]),
                "paths": self.path_cost, "particles": 2 * s, "rejection": 2 * s, "tree": 2 * s,
                "tempered": 2 * s, "threshold": 2 * s}[method]

    def search(self, method: str, budget: int, labels: list[int], seed: int) -> tuple[torch.Tensor, list[int]]:
        """Every sample of ``labels`` at ``budget`` total NFEs each, in one batched search (sample b is
        problem b); returns (latents [n,1,16,16], NFEs each sample spent)."""
        args = self._search_args(labels, seed, budget)
        if method in SELECTIONS:
            args["selection"] = run_node("SearchSelection", **(TEMPERED if method == "tempered" else THRESHOLD))[0]
            method, options = "random", {"candidates": max(1, budget // self.search_steps)}
        elif method == "random":
            options = {"candidates": max(1, budget // self.search_steps)}
        elif method == "zero_order":
            options = {"iterations": 10_000, **self.zero_order}
        elif method == "paths":
            options = {"paths": max(1, budget // self.path_cost), **self.paths}
        elif method == "particles":
            options = {"particles": max(1, budget // self.search_steps), **self.particles}
            args["sampler_name"] = options.pop("sampler")
        elif method == "rejection":
            # Every candidate costs at least one NFE, so `budget` candidates are more than any
            # budget pays for: the node starts as many as it does (asking for the nodes' limit
            # instead costs ~20 s of noise for 4096 candidates per sample at 500 samples).
            options = {"candidates": min(MAX_CANDIDATES, budget), **self.rejection}
        elif method == "tree":
            # A rollout costs at least one NFE: `budget` rollouts are more than the budget pays for.
            options = {"rollouts": budget, **self.tree}
        else:
            raise ValueError(method)
        out = run_node(node_of(method), **args, **options)
        report = json.loads(out[6])
        return out[0]["samples"], [int(p["nfe"]["search_total"]) for p in report.get("problems", [report])]

    def plain(self, steps: int, labels: list[int], seed: int) -> torch.Tensor:
        """Plain sampling with ``steps`` Euler steps: one stock batch of every sample (element b at
        seed ``seed``), with the stock custom-sampling nodes (CFGGuider, KSamplerSelect,
        BasicScheduler, RandomNoise, SamplerCustomAdvanced)."""
        guider = run_node("CFGGuider", model=self.model, positive=self.conditioning(labels), negative=self.null,
                          cfg=self.cfg)[0]
        sampler = run_node("KSamplerSelect", sampler_name="euler")[0]
        sigmas = run_node("BasicScheduler", model=self.model, scheduler="normal", steps=steps, denoise=1.0)[0]
        latent = {"samples": torch.zeros(len(labels), 1, 16, 16)}
        return run_node("SamplerCustomAdvanced", noise=run_node("RandomNoise", noise_seed=seed)[0], guider=guider,
                        sampler=sampler, sigmas=sigmas, latent_image=latent)[0]["samples"]

    def images(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)  # IMAGE [N, 16, 16, 3] in [0, 1]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.evaluator.module.features(self.evaluator.preprocess(images))

    def judge(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Per-sample judgements, in sample order: the verifier's score of the intended class [N],
        the evaluator's class probabilities [N, 10] and its features [N, 64]."""
        with torch.no_grad():
            probs = self.evaluator.logits(images).softmax(-1)
        verifier = torch.empty(len(labels))
        for c in labels.unique():  # the verifier scores one condition per call: one call per class
            verifier[labels == c] = self.verifier.score(images[labels == c], str(int(c))).float()
        return {"verifier": verifier, "probs": probs, "features": self.features(images)}


def real_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits of one split as an IMAGE batch [N, 16, 16, 3] and their labels."""
    from bench.testbed.data import load_digits_16, splits

    x, y = load_digits_16()
    idx = splits()[split]
    return x[idx].unsqueeze(-1).expand(-1, -1, -1, 3).contiguous(), y[idx]


def reference_rows(bed: Testbed, reference: torch.Tensor, per_class: int, draws: int = 5) -> dict:
    """What real digits score at the demo's sample size: per_class digits of each class from
    the denoiser's training split, against the reference set (which neither the denoiser nor
    the evaluator saw), averaged over ``draws`` fixed random draws. The Frechet distance of
    500 samples in 64 features is noisy and biased upwards: read the table against this row."""
    from bench.testbed.metrics import class_diversity, frechet_distance, inception_score

    x, y = real_images("denoiser")
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(draws):
        pick = torch.cat([(idx := torch.nonzero(y == c).flatten())[torch.randperm(len(idx), generator=gen)[:per_class]]
                          for c in range(10)])
        with torch.no_grad():
            probs = bed.evaluator.logits(x[pick]).softmax(-1)
        feats = bed.features(x[pick])
        out.append({"inception_score": inception_score(probs),
                    "accuracy": float((probs.argmax(-1) == y[pick]).float().mean()),
                    "frechet_distance": frechet_distance(feats, reference),
                    "diversity": class_diversity(feats, y[pick])})
    return {**{k: float(np.mean([o[k] for o in out])) for k in out[0]}, "n": 10 * per_class, "draws": draws}


def run(budgets=BUDGETS, per_class: int = PER_CLASS, out_dir: Path = ROOT / "demo_output",
        search_steps: int = SEARCH_STEPS, cfg: float = CFG, methods=METHODS, zero_order: dict | None = None,
        paths: dict | None = None, particles: dict | None = None, rejection: dict | None = None,
        tree: dict | None = None, weights: Path = WEIGHTS, resamples: int | None = None, log=print, progress: bool = True) -> dict:
    """Generate every method x budget (one batched call each), evaluate with bootstrap intervals,
    compare with no search, check the targets, and write results.json and samples.npz."""
    from bench.testbed import metrics

    budgets = [int(b) for b in budgets]
    if budgets[0] != search_steps or budgets != sorted(set(budgets)):
        raise ValueError("budgets must ascend and start at search_steps (the common no-search point)")
    resamples = metrics.BOOTSTRAP_RESAMPLES if resamples is None else int(resamples)
    t_start = time.perf_counter()
    # One thread: the model is tiny and its batches small, so a second thread gains little,
    # and on shared cores OpenMP's spin-waiting made runs 10-40x slower in our measurements.
    torch.set_num_threads(1)
    log(f"[demo] loading the testbed through ComfyUI ({len(budgets)} budgets x {len(methods)} methods, "
        f"{per_class} samples per class, cfg {cfg})")
    bed = Testbed(search_steps, cfg, weights, zero_order, paths, particles, rejection, tree)
    ref_x, _ = real_images("verifier_clf")
    reference = bed.features(ref_x)
    labels = torch.arange(10).repeat_interleave(per_class)
    resample_idx = metrics.stratified_resamples(labels, resamples)
    identity = torch.arange(len(labels))[None]
    settings = {"budgets": budgets, "per_class": per_class, "search_steps": search_steps, "cfg": cfg,
                "sampler": "euler", "scheduler": "normal", "seed": SEED, "batch_size": BATCH_SIZE,
                "noises": f"sample b is element b of the stock batch of all samples at seed {SEED}; a search's "
                          f"candidate i of sample b: element b at seed {SEED} + i",
                "random": {"candidates": "budget // search_steps"},
                "zero_order": bed.zero_order, "paths": {**bed.paths, "paths": "budget // path_cost"},
                "particles": {**bed.particles, "particles": "budget // search_steps"},
                "rejection": {**bed.rejection, "candidates": "as many as the budget pays for (asked: budget)"},
                "tree": {**bed.tree, "rollouts": "as many as the budget pays for (asked: budget)"},
                "tempered": {"candidates": "budget // search_steps", "lambda": TEMPERED["lambda_"]},
                "threshold": {"candidates": "budget // search_steps", "threshold": THRESHOLD["threshold"]},
                "bootstrap": {"resamples": resamples, "seed": metrics.BOOTSTRAP_SEED,
                              "confidence": metrics.CONFIDENCE,
                              "method": "percentile; samples resampled with replacement within each class "
                                        "(per-class counts kept); the same resamples for every row, so "
                                        "differences between rows are paired; Frechet distance intervals "
                                        "shifted by the bootstrap's bias estimate (point - mean of resamples)"}}
    if "paths" in methods:
        settings["paths"]["path_cost"] = bed.path_cost
    settings["min_budget"] = {m: bed.min_budget(m) for m in methods}
    results = {"settings": settings, "real_digits": reference_rows(bed, reference, per_class), "rows": []}
    samples, boots = [], {}
    for budget in budgets:
        for method in methods:
            if budget == budgets[0] and method != "steps":
                continue  # the first budget is the common starting point: no search yet
            if budget < bed.min_budget(method):
                continue  # the budget does not pay for one round of this search
            t0 = time.perf_counter()
            desc = f"{method:>10} @ {budget:>3} NFEs"
            with progress_bar(desc, progress):
                if method == "steps":
                    lat, nfes = bed.plain(budget, labels.tolist(), SEED), [budget] * len(labels)
                else:
                    lat, nfes = bed.search(method, budget, labels.tolist(), SEED)
            seconds = round(time.perf_counter() - t0, 2)
            images = bed.images(lat)
            judged = bed.judge(images, labels)
            point = metrics.resampled_metrics(judged, labels, reference, identity)
            boot = metrics.resampled_metrics(judged, labels, reference, resample_idx)
            boots[(method, budget)] = boot
            row = {"method": method, "budget": budget, "nfe_mean": float(np.mean(nfes)), "nfe_max": int(max(nfes)),
                   **{k: float(point[k][0]) for k in METRICS},
                   "ci": {k: metrics.interval(k, boot[k], float(point[k][0])) for k in METRICS}, "seconds": seconds}
            results["rows"].append(row)
            samples.append((images[..., 0].float().numpy(), labels.numpy(), method, np.array(nfes)))
            log(f"[demo] {desc}: verifier {row['verifier_score']:6.2f}  IS {row['inception_score']:.3f}  "
                f"acc {row['accuracy']:.3f}  FD {row['frechet_distance']:6.2f}  diversity {row['diversity']:.3f}  "
                f"spent {row['nfe_mean']:.1f}  ({seconds:.1f} s)")
    base = (METHODS[0], budgets[0])
    for row in results["rows"]:
        if (row["method"], row["budget"]) != base:
            row["vs_no_search"] = {k: paired(results["rows"], boots, (row["method"], row["budget"]), base, k)
                                   for k in METRICS}
    results["findings"] = findings(results["rows"], budgets)
    results["targets"] = targets(results["rows"], boots, budgets)
    results["targets"].update(selection_targets(results["rows"], boots, budgets))
    results["pareto"] = pareto(results["rows"])
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    np.savez_compressed(out_dir / "samples.npz",
                        images=np.concatenate([s[0] for s in samples]).astype(np.float32),
                        labels=np.concatenate([s[1] for s in samples]).astype(np.int64),
                        method=np.concatenate([[s[2]] * len(s[1]) for s in samples]).astype(str),
                        nfe=np.concatenate([s[3] for s in samples]).astype(np.int64))
    return results


@contextlib.contextmanager
def progress_bar(desc: str, enabled: bool):
    """A console bar fed by ComfyUI's progress hook (the search nodes report NFEs done)."""
    import comfy.utils
    from tqdm import tqdm

    if not enabled:
        yield
        return
    bar, before = tqdm(desc=desc, total=1, leave=False), comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview=None, node_id=None, **_):
        bar.total = max(int(total), 1)
        bar.n = min(int(value), bar.total)
        bar.refresh()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(before)
        bar.close()


# ---------------------------------------------------------------- comparisons, findings, targets


def _row(rows: list[dict], method: str, budget: int) -> dict | None:
    for r in rows:
        if r["method"] == method and r["budget"] == budget:
            return r
    return None


def cell(rows: list[dict], method: str, budget: int) -> dict | None:
    """The row of ``method`` at ``budget``; at the first budget every method is the plain sample."""
    first = min(r["budget"] for r in rows)
    return _row(rows, "steps" if budget == first else method, budget)


def paired(rows: list[dict], boots: dict, a: tuple[str, int], b: tuple[str, int], metric: str) -> dict:
    """Row a minus row b on ``metric``: the point difference and its paired percentile-bootstrap
    interval (the same resampled sample indices for both rows: sample b is the same noise and
    class in every row)."""
    from bench.testbed.metrics import interval

    diff = _row(rows, *a)[metric] - _row(rows, *b)[metric]
    lo, hi = interval(metric, boots[a][metric] - boots[b][metric], diff)
    return {"diff": float(diff), "ci": [lo, hi], "excludes_zero": bool(lo > 0 or hi < 0)}


def findings(rows: list[dict], budgets: list[int]) -> dict:
    """The paper's claims, computed from the demo's own table (point estimates; nothing here is asserted)."""
    out = {"search_beats_steps_on_is": {}, "verifier_by_budget": {}, "verifier_monotone": {}}
    for method in STRATEGIES:
        present = [b for b in budgets if cell(rows, method, b) is not None]
        if len(present) < 2:
            continue
        out["search_beats_steps_on_is"][method] = {
            str(b): cell(rows, method, b)["inception_score"] > cell(rows, "steps", b)["inception_score"]
            for b in present[1:]}
        scores = [cell(rows, method, b)["verifier_score"] for b in present]
        out["verifier_by_budget"][method] = dict(zip(map(str, present), scores))
        out["verifier_monotone"][method] = all(b >= a for a, b in zip(scores, scores[1:]))
    top, plain_top, start = (cell(rows, "random", budgets[-1]), cell(rows, "steps", budgets[-1]),
                             cell(rows, "steps", budgets[0]))
    if top is not None and top["method"] == "random":
        for key in ("diversity", "frechet_distance"):
            out[f"{key}_random_largest"] = {
                "budget": budgets[-1], "random": top[key], "steps_same_budget": plain_top[key],
                "no_search_start": start[key],
                "relative_vs_steps_same_budget": _relative(top[key], plain_top[key]),
                "relative_vs_no_search_start": _relative(top[key], start[key])}
    out["all_claims_hold"] = bool(all(all(v.values()) for v in out["search_beats_steps_on_is"].values())
                                  and all(out["verifier_monotone"].values()))
    return out


def targets(rows: list[dict], boots: dict, budgets: list[int]) -> dict:
    """The issue's three targets, each {"met": bool, "rule": str, ...the comparisons it rests on}.

    (a) particle steering reaches random search's verifier score at the two largest budgets with
        at most half of random search's NFEs, and keeps per-class diversity at least as high as
        random search at equal NFEs (every budget both ran);
    (b) early rejection beats random search's verifier score at equal NFEs (every budget both ran);
    (c) at the largest budget, every search strategy raises the evaluator's accuracy over no
        search with a 95% interval that excludes zero.
    (a) and (b) are judged on the point estimates (their paired intervals are reported beside
    them); (c) on the interval."""
    def present(method):
        return [b for b in budgets[1:] if _row(rows, method, b) is not None]

    out = {}
    # (a)
    half, equal = [], []
    for b in present("random")[-2:]:
        spent = _row(rows, "random", b)["nfe_mean"]
        cheaper = [p for p in present("particles") if _row(rows, "particles", p)["nfe_mean"] <= spent / 2]
        if not cheaper:
            half.append({"random_budget": b, "particles_budget": None, "reaches": False})
            continue
        p = cheaper[-1]
        d = paired(rows, boots, ("particles", p), ("random", b), "verifier_score")
        half.append({"random_budget": b, "random_nfe": spent, "particles_budget": p,
                     "particles_nfe": _row(rows, "particles", p)["nfe_mean"],
                     "random": _row(rows, "random", b)["verifier_score"],
                     "particles": _row(rows, "particles", p)["verifier_score"], **d, "reaches": d["diff"] >= 0})
    for b in (x for x in present("particles") if x in present("random")):
        d = paired(rows, boots, ("particles", b), ("random", b), "diversity")
        equal.append({"budget": b, "random": _row(rows, "random", b)["diversity"],
                      "particles": _row(rows, "particles", b)["diversity"], **d, "at_least": d["diff"] >= 0})
    out["a"] = {"rule": "particle steering's verifier score at <= half of random search's NFEs >= random "
                        "search's, at random search's two largest budgets; and particle steering's per-class "
                        "diversity >= random search's at every budget both ran (point estimates)",
                "verifier_at_half_nfe": half, "diversity_equal_nfe": equal,
                "met": bool(len(half) == 2 and all(h["reaches"] for h in half) and equal
                            and all(e["at_least"] for e in equal))}
    # (b)
    beats = []
    for b in (x for x in present("rejection") if x in present("random")):
        d = paired(rows, boots, ("rejection", b), ("random", b), "verifier_score")
        beats.append({"budget": b, "random": _row(rows, "random", b)["verifier_score"],
                      "rejection": _row(rows, "rejection", b)["verifier_score"],
                      "rejection_nfe": _row(rows, "rejection", b)["nfe_mean"], **d, "beats": d["diff"] > 0})
    out["b"] = {"rule": "early rejection's verifier score > random search's at every budget both ran "
                        "(point estimates)", "comparisons": beats,
                "met": bool(beats and all(x["beats"] for x in beats))}
    # (c)
    top, base = budgets[-1], (METHODS[0], budgets[0])
    gains = []
    for method in STRATEGIES:
        if _row(rows, method, top) is None:
            continue
        d = paired(rows, boots, (method, top), base, "accuracy")
        gains.append({"method": method, "budget": top, "accuracy": _row(rows, method, top)["accuracy"],
                      "no_search": _row(rows, *base)["accuracy"], **d, "raises": d["ci"][0] > 0})
    out["c"] = {"rule": f"at the largest budget ({top} NFEs) every search strategy's accuracy gain over no "
                        f"search has a 95% paired-bootstrap interval above zero", "gains": gains,
                "met": bool(gains and all(g["raises"] for g in gains))}
    return out


# -------------------------------------------------- the trade-off: reward against fidelity and variety
FIDELITY = {"frechet_distance": -1, "diversity": 1}  # +1: higher is better


def pareto(rows: list[dict]) -> dict:
    """The settings (method x budget) on the frontier of the verifier's score against the evaluator's
    Frechet distance and against per-class diversity: no other row is at least as good on both and
    better on one (point estimates; each with its 95% interval)."""
    def dominated(r, key, sign):
        return any(o["verifier_score"] >= r["verifier_score"] and sign * o[key] >= sign * r[key]
                   and (o["verifier_score"] > r["verifier_score"] or sign * o[key] > sign * r[key]) for o in rows)

    out = {}
    for key, sign in FIDELITY.items():
        front = sorted((r for r in rows if not dominated(r, key, sign)), key=lambda r: r["verifier_score"])
        out[key] = [{"method": r["method"], "budget": r["budget"], "nfe_mean": r["nfe_mean"],
                     "verifier_score": r["verifier_score"], key: r[key],
                     "ci": {"verifier_score": r["ci"]["verifier_score"], key: r["ci"][key]}} for r in front]
    return out


def selection_targets(rows: list[dict], boots: dict, budgets: list[int]) -> dict:
    """The selection rules' targets at the largest budget (findings, not tests):
    tempered: the evaluator's Frechet distance within 1.2x of no search's, with at least three
    quarters of random search's accuracy gain over no search; threshold: random search's accuracy
    with at least 30% fewer NFEs spent. Point estimates, paired intervals beside them."""
    top, base = budgets[-1], (METHODS[0], budgets[0])
    out = {}
    rnd, tem, thr, plain = _row(rows, "random", top), _row(rows, "tempered", top), _row(rows, "threshold", top), \
        _row(rows, *base)
    if rnd and tem:
        gain, kept = rnd["accuracy"] - plain["accuracy"], tem["accuracy"] - plain["accuracy"]
        fd_ratio = tem["frechet_distance"] / plain["frechet_distance"]
        out["tempered"] = {"rule": f"tempered selection at {top} NFEs: evaluator FD <= 1.2 x no search's and accuracy "
                                   "gain >= 3/4 of random search's (point estimates)",
                           "fd": tem["frechet_distance"], "fd_no_search": plain["frechet_distance"], "fd_ratio": fd_ratio,
                           "gain": kept, "random_gain": gain, "gain_share": kept / gain if gain else float("nan"),
                           "vs_random_fd": paired(rows, boots, ("tempered", top), ("random", top), "frechet_distance"),
                           "vs_random_accuracy": paired(rows, boots, ("tempered", top), ("random", top), "accuracy"),
                           "met": bool(fd_ratio <= 1.2 and gain > 0 and kept >= 0.75 * gain)}
    if rnd and thr:
        saved = 1 - thr["nfe_mean"] / rnd["nfe_mean"]
        out["threshold"] = {"rule": f"threshold selection at a {top}-NFE cap: random search's accuracy at {top} NFEs "
                                    "with >= 30% fewer NFEs spent (point estimates)",
                            "accuracy": thr["accuracy"], "random_accuracy": rnd["accuracy"], "spent": thr["nfe_mean"],
                            "random_spent": rnd["nfe_mean"], "saved": saved,
                            "vs_random_accuracy": paired(rows, boots, ("threshold", top), ("random", top), "accuracy"),
                            "met": bool(thr["accuracy"] >= rnd["accuracy"] and saved >= 0.3)}
    return out


STUDY_RESULTS = Path(__file__).resolve().parent / "study_results.json"


def long_chain_line() -> str:
    """The long-chain study's target, from its last committed run (`make study` writes it)."""
    if not STUDY_RESULTS.exists():
        return "(f) long chain: not run yet: `make study` runs it and writes bench/testbed/study_results.json"
    t = json.loads(STUDY_RESULTS.read_text())["target"]
    return f"(f) {'met' if t['met'] else 'NOT met'} (from `make study`, {t['per_class']} per class, " \
           f"{t['steps']}-step chains): {t['line']}"


def pareto_lines(results: dict) -> list[str]:
    lines = []
    for key, front in results["pareto"].items():
        name = METRIC_NAMES[key]
        shown = "; ".join(f"{LABELS[p['method']]} @{p['budget']}: verifier {_value_ci(p, 'verifier_score')}, "
                          f"{name} {_value_ci(p, key)}" for p in front)
        lines.append(f"frontier of verifier vs {name} ({'lower' if FIDELITY[key] < 0 else 'higher'} is better): {shown}")
    return lines


def selection_target_lines(results: dict) -> list[str]:
    t, word = results["targets"], {True: "met", False: "NOT met"}
    lines = []
    if "tempered" in t:
        x = t["tempered"]
        lines.append(f"(d) {word[x['met']]}: tempered @{results['settings']['budgets'][-1]}: FD {x['fd']:.1f} = "
                     f"{x['fd_ratio']:.2f} x no search's {x['fd_no_search']:.1f} (<= 1.2); accuracy gain {x['gain']:+.3f} "
                     f"= {100 * x['gain_share']:.0f}% of random search's {x['random_gain']:+.3f} (>= 75%); vs random: "
                     f"FD {_ci(x['vs_random_fd'], 1)}, accuracy {_ci(x['vs_random_accuracy'], 3)}")
    if "threshold" in t:
        x = t["threshold"]
        lines.append(f"(e) {word[x['met']]}: threshold @{results['settings']['budgets'][-1]}-NFE cap: accuracy "
                     f"{x['accuracy']:.3f} vs random search's {x['random_accuracy']:.3f} "
                     f"({_ci(x['vs_random_accuracy'], 3)}), spent {x['spent']:.1f} vs {x['random_spent']:.1f} NFEs "
                     f"({100 * x['saved']:.0f}% fewer; >= 30% wanted)")
    return lines + [long_chain_line()]


def _relative(a: float, b: float) -> float:
    return a / b - 1 if b else float("nan")


def _ci(d: dict, digits: int = 2) -> str:
    lo, hi = d["ci"]
    return f"{d['diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def target_lines(results: dict) -> list[str]:
    """One line per target: met / NOT met, with the numbers and paired intervals it rests on."""
    t = results["targets"]
    word = {True: "met", False: "NOT met"}

    def excl(d):
        return "CI excludes 0" if d["excludes_zero"] else "CI includes 0"

    a = t["a"]
    parts = []
    for h in a["verifier_at_half_nfe"]:
        if h["particles_budget"] is None:
            parts.append(f"no particle-steering row at <= half of random search's {h['random_budget']} NFEs")
            continue
        parts.append(f"particles@{h['particles_nfe']:.0f} NFEs {h['particles']:.2f} vs random@{h['random_nfe']:.0f} "
                     f"{h['random']:.2f} (diff {_ci(h)}, {excl(h)})")
    div = ", ".join(f"@{e['budget']}: {e['particles']:.2f} vs {e['random']:.2f} ({_ci(e)})"
                    for e in a["diversity_equal_nfe"])
    lines = [f"(a) {word[a['met']]}: particle steering vs random search, verifier at half the NFEs: "
             + "; ".join(parts) + f" | diversity at equal NFEs, particles vs random: {div or 'no common budget'}"]
    b = t["b"]
    lines.append(f"(b) {word[b['met']]}: early rejection vs random search, verifier at equal budgets: "
                 + "; ".join(f"@{x['budget']}: {x['rejection']:.2f} vs {x['random']:.2f} (diff {_ci(x)}, {excl(x)})"
                             for x in b["comparisons"]))
    c = t["c"]
    lines.append(f"(c) {word[c['met']]}: accuracy gain over no search at {results['settings']['budgets'][-1]} NFEs "
                 f"(95% paired CI): "
                 + "; ".join(f"{g['method']} {_ci(g, 3)}{'' if g['raises'] else ' (CI not above 0)'}"
                             for g in c["gains"]))
    return lines


def describe(results: dict) -> list[str]:
    """The findings as sentences for the console and the README."""
    f = results["findings"]
    lines = []
    for method, beats in f["search_beats_steps_on_is"].items():
        won = [b for b, ok in beats.items() if ok]
        lost = [b for b, ok in beats.items() if not ok]
        lines.append(f"{LABELS[method]} beats more steps on evaluator IS at "
                     f"{'every budget it ran (' + ', '.join(won) + ')' if not lost else 'budgets ' + (', '.join(won) or 'none')}"
                     + (f"; NOT at {', '.join(lost)}" if lost else ""))
    for method, ok in f["verifier_monotone"].items():
        scores = ", ".join(f"{s:.2f}" for s in f["verifier_by_budget"][method].values())
        lines.append(f"{LABELS[method]}: verifier score {'rises monotonically' if ok else 'does NOT rise monotonically'}"
                     f" with budget ({scores})")
    for key, name in (("diversity", "diversity"), ("frechet_distance", "Frechet distance")):
        d = f.get(f"{key}_random_largest")
        if d:
            lines.append(f"random search at {d['budget']} NFEs: {name} {d['random']:.3f} vs {d['steps_same_budget']:.3f} "
                         f"for more steps ({100 * d['relative_vs_steps_same_budget']:+.1f}%) and "
                         f"{d['no_search_start']:.3f} without search ({100 * d['relative_vs_no_search_start']:+.1f}%)")
    lines.append("all checked claims hold" if f["all_claims_hold"] else "SOME CHECKED CLAIMS DO NOT HOLD")
    return lines


def _value_ci(row: dict, key: str) -> str:
    d = DIGITS[key]
    lo, hi = row["ci"][key]
    return f"{row[key]:.{d}f} [{lo:.{d}f},{hi:.{d}f}]"


def table(results: dict) -> str:
    """The absolute table (each metric with its 95% interval) and the table of differences to no
    search (paired intervals; '*' where the interval excludes zero)."""
    rows, conf = results["rows"], int(round(100 * results["settings"]["bootstrap"]["confidence"]))
    width = {k: max(len(_value_ci(r, k)) for r in rows) + 2 for k in METRICS}
    head = f"{'method':<26}{'budget':>7}{'spent':>7}" + "".join(f"{METRIC_NAMES[k]:>{width[k]}}" for k in METRICS)
    lines = [f"each metric with its {conf}% bootstrap interval (samples resampled within classes)", head,
             "-" * (len(head) + 7)]
    lines[1] += f"{'sec':>7}"
    for r in rows:
        lines.append(f"{LABELS[r['method']]:<26}{r['budget']:>7}{r['nfe_mean']:>7.1f}"
                     + "".join(f"{_value_ci(r, k):>{width[k]}}" for k in METRICS) + f"{r['seconds']:>7.1f}")
    real = results["real_digits"]
    lines.append(f"{'real digits (reference)':<26}{'':>7}{'':>7}{'':>{width['verifier_score']}}"
                 + "".join(f"{real[k]:>{width[k]}.{DIGITS[k]}f}" for k in METRICS[1:]))
    base = rows[0]
    diff = {k: max(len(_ci(r['vs_no_search'][k], DIGITS[k])) for r in rows[1:]) + 3 for k in METRICS} if rows[1:] else {}
    lines += ["", f"difference to NO SEARCH ({LABELS[base['method']]}, {base['budget']} NFEs: the same noises, "
                  f"unsearched), paired {conf}% bootstrap interval; * = the interval excludes zero",
              f"{'method':<26}{'budget':>7}{'spent':>7}" + "".join(f"{'d ' + METRIC_NAMES[k]:>{diff[k]}}" for k in diff)]
    lines.append("-" * len(lines[-1]))
    for r in rows[1:]:
        lines.append(f"{LABELS[r['method']]:<26}{r['budget']:>7}{r['nfe_mean']:>7.1f}" + "".join(
            f"{_ci(r['vs_no_search'][k], DIGITS[k]) + (' *' if r['vs_no_search'][k]['excludes_zero'] else '  '):>{diff[k]}}"
            for k in diff))
    return "\n".join(lines)


def plot(results: dict, out_dir: Path) -> dict:
    """scaling.png: every metric against total NFEs per sample, one curve per strategy, with its
    95% bootstrap band (the first point of every curve is the common no-search sample). Returns
    what was drawn: {metric: {method: [(nfe, value, low, high), ...]}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, budgets, real = results["rows"], results["settings"]["budgets"], results["real_digits"]
    panels = [("verifier_score", "verifier score (class logit)"), ("accuracy", "evaluator accuracy"),
              ("inception_score", "evaluator IS (higher is better)"),
              ("frechet_distance", "Frechet distance (lower is better)"), ("diversity", "per-class diversity")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8))
    drawn = {key: {} for key, _ in panels}
    for ax, (key, title) in zip(axes, panels):
        for i, method in enumerate(METHODS):
            pts = [cell(rows, method, b) for b in budgets]
            pts = [p for p in pts if p is not None]
            if len(pts) < 2:
                continue
            x = [p["nfe_mean"] for p in pts]
            lo, hi = zip(*(p["ci"][key] for p in pts))
            color = f"C{i}"
            ax.plot(x, [p[key] for p in pts], marker="o", ms=3.5, color=color, label=LABELS[method])
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
            drawn[key][method] = [(xi, p[key], a, b) for xi, p, a, b in zip(x, pts, lo, hi)]
        if key in real:
            ax.axhline(real[key], color="gray", ls="--", lw=1, label="real digits")
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("total NFEs per sample")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    cfg = results["settings"]["cfg"]
    fig.suptitle(f"Search vs. more denoising steps on a small digits model (cfg {cfg:g}, CPU, through ComfyUI's "
                 f"sampler); bands: 95% bootstrap intervals; dashed: real digits", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out_dir / "scaling.png", dpi=80)
    plt.close(fig)
    return drawn


def pareto_plot(results: dict, out_dir: Path) -> dict:
    """pareto.png: the verifier's score against the evaluator's Frechet distance and against
    per-class diversity, every method x budget a point with its 95% intervals, the frontier
    joined. Returns the frontier drawn per panel: {metric: [(method, budget), ...]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    drawn = {}
    for ax, key in zip(axes, FIDELITY):
        for i, method in enumerate(METHODS):
            pts = [r for r in rows if r["method"] == method]
            if not pts:
                continue
            x, y = [p[key] for p in pts], [p["verifier_score"] for p in pts]
            # Frechet distance intervals are bias-shifted, so a point may lie outside its own.
            xerr = [[max(0.0, p[key] - p["ci"][key][0]) for p in pts], [max(0.0, p["ci"][key][1] - p[key]) for p in pts]]
            yerr = [[max(0.0, p["verifier_score"] - p["ci"]["verifier_score"][0]) for p in pts],
                    [max(0.0, p["ci"]["verifier_score"][1] - p["verifier_score"]) for p in pts]]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=3.5, color=f"C{i}", alpha=0.8, lw=0.8,
                        label=LABELS[method])
            for p in pts:
                ax.annotate(str(p["budget"]), (p[key], p["verifier_score"]), fontsize=6, xytext=(2, 2),
                            textcoords="offset points")
        front = results["pareto"][key]
        ax.plot([p[key] for p in front], [p["verifier_score"] for p in front], color="black", lw=1, ls="--",
                label="frontier")
        drawn[key] = [(p["method"], p["budget"]) for p in front]
        ax.set_xlabel(f"{'Frechet distance (lower is better)' if key == 'frechet_distance' else 'per-class diversity'}")
        ax.set_ylabel("verifier score (searched on)")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle("What search buys on the verifier against what it costs in fidelity and variety (labels: NFEs)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out_dir / "pareto.png", dpi=80)
    plt.close(fig)
    return drawn


def grid(out_dir: Path, budgets: list[int], per_class: int, k: int = 4) -> None:
    """One row per class: k plain samples (more steps) beside each search method's samples of
    the same seeds, all at the largest budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(out_dir / "samples.npz")
    images, method, nfe = data["images"], data["method"], data["nfe"]
    k = min(k, per_class)
    groups = [("no search", images[:10 * per_class])]  # the first row: the plain sample at the first budget
    for m in METHODS:
        sel = method == m
        if m == "steps":
            sel = sel & (nfe == budgets[-1])
            title = f"plain, {budgets[-1]} steps"
        else:
            title = f"{LABELS[m].split(' (')[0]}, {budgets[-1]}"
        if sel.any():
            groups.append((title, images[sel][-10 * per_class:]))  # the last block: the largest budget
    cell_px = 17
    canvas = np.full((10 * cell_px, len(groups) * (k * cell_px + 6)), 0.5, dtype=np.float32)
    for g, (_, imgs) in enumerate(groups):
        for c in range(10):
            for j in range(k):
                y, x = c * cell_px, g * (k * cell_px + 6) + j * cell_px
                canvas[y:y + 16, x:x + 16] = imgs[c * per_class + j]
    fig, ax = plt.subplots(figsize=(len(groups) * 2.3, 5.2))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for g, (title, _) in enumerate(groups):
        ax.text(g * (k * cell_px + 6) + k * cell_px / 2, -4, title, ha="center", fontsize=7)
    ax.set_yticks([c * cell_px + 8 for c in range(10)], [str(c) for c in range(10)])
    ax.set_xticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    fig.tight_layout()
    fig.savefig(out_dir / "grid.png", dpi=80)
    plt.close(fig)


def reuse_freed_memory() -> None:
    """glibc: keep freed memory in the heap instead of returning every large block to the system.
    The batched calls allocate activations of tens of MB per layer; with glibc's default
    thresholds each is a fresh mmap whose pages fault in again on every call (measured on the
    denoiser alone, 1024 rows: 1.7 ms per row by default, 0.8 ms with this). No-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 31)


def report(results: dict) -> str:
    """Everything the console shows after the runs: the tables, the findings, the targets."""
    lines = [table(results), "", "findings:"] + [f"  - {line}" for line in describe(results)]
    lines += ["", "targets:"] + [f"  {line}" for line in target_lines(results) + selection_target_lines(results)]
    lines += ["", "the trade-off (Pareto frontier over every method x budget, 95% intervals):"]
    lines += [f"  {line}" for line in pareto_lines(results)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)),
                    help="ladder of total NFEs per sample; the first equals --search-steps")
    ap.add_argument("--per-class", type=int, default=None,
                    help=f"samples per class and budget (default {PER_CLASS}; {FULL_PER_CLASS} with --full)")
    ap.add_argument("--full", action="store_true",
                    help=f"the full study: {FULL_PER_CLASS} samples per class (make demo-full, about 10 minutes)")
    ap.add_argument("--search-steps", type=int, default=SEARCH_STEPS,
                    help="Euler steps of every search candidate (the paper's NFEs/iter)")
    ap.add_argument("--cfg", type=float, default=CFG)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000)")
    ap.add_argument("--weights", default=str(WEIGHTS), help="folder of the denoiser and the two classifiers")
    ap.add_argument("--out", default=str(ROOT / "demo_output"))
    ap.add_argument("--no-progress", action="store_true", help="log lines only, no progress bars")
    args = ap.parse_args(argv)
    if args.per_class is None:
        args.per_class = FULL_PER_CLASS if args.full else PER_CLASS
    reuse_freed_memory()
    t0 = time.perf_counter()
    out = Path(args.out)
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if methods[0] != "steps" or set(methods) - set(METHODS):
        ap.error(f"--methods must start with steps and name only {', '.join(METHODS)}")
    results = run(budgets, args.per_class, out, args.search_steps, args.cfg, methods=methods,
                  weights=Path(args.weights), resamples=args.resamples, progress=not args.no_progress)
    plot(results, out)
    pareto_plot(results, out)
    grid(out, budgets, args.per_class)
    text = report(results)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    print(f"[demo] wrote {out}/results.json, table.txt, scaling.png, pareto.png, grid.png, samples.npz in "
          f"{time.perf_counter() - t0:.0f} s")
    if not args.full and args.per_class < FULL_PER_CLASS:
        print(f"[demo] a quick run ({args.per_class} samples per class); `make demo-full` runs the full study "
              f"({FULL_PER_CLASS} per class, narrower intervals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
