"""`make demo`: the paper's class-conditional scaling findings, reproduced offline.

A small class-conditional diffusion model of sklearn's digits runs through the pack's search
nodes and ComfyUI's sampler (in-process, exactly as a graph runs them). For a ladder of
total-NFE budgets it compares the baseline of adding denoising steps with random search,
zero-order search and path search, all guided by one classifier (the verifier) and judged by
another, trained on disjoint data (the evaluator: Inception-Score-style IS, Frechet distance
in its feature space against real digits, per-class diversity).

Outputs in demo_output/: results.json, scaling.png, grid.png, samples.npz (and a table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.comfy_host import load_host, pack_module, run_node  # noqa: E402

METHODS = ("steps", "random", "zero_order", "paths")
LABELS = {"steps": "more denoising steps", "random": "random search", "zero_order": "zero-order search (ZO-2)",
          "paths": "search over paths"}
WEIGHTS = Path(__file__).resolve().parent / "weights"


class Testbed:
    """The model, VAE and verifier as a user's graph would load them, plus the evaluator."""

    def __init__(self, search_steps: int, cfg: float):
        load_host()
        import folder_paths

        from bench.testbed.comfy_model import class_conditioning, load_digits_model, pixel_vae

        folder_paths.add_model_folder_path("verifiers", str(WEIGHTS))
        self.model, self.vae = load_digits_model(WEIGHTS), pixel_vae()
        self.verifier = run_node("ClassifierVerifierLoader", classifier_file="verifier_classifier.safetensors")[0]
        classifier = pack_module("verifiers.classifier")
        module, config = classifier.load_classifier(WEIGHTS / "evaluator_classifier.safetensors")
        self.evaluator = classifier.ClassifierVerifier(module, config)
        self.cond, self.null = class_conditioning, class_conditioning(None)
        self.search_steps, self.cfg = search_steps, cfg

    def common(self, label: int, seed: int) -> dict:
        return dict(model=self.model, seed=seed, cfg=self.cfg, sampler_name="euler", scheduler="normal",
                    positive=self.cond(label), negative=self.null, latent_image={"samples": torch.zeros(1, 1, 16, 16)},
                    denoise=1.0)

    def search(self, method: str, budget: int, label: int, seed: int) -> tuple[torch.Tensor, int]:
        """One sample of ``label`` at ``budget`` total NFEs; returns (latent [1,1,16,16], NFEs spent)."""
        s = self.search_steps
        args = dict(self.common(label, seed), steps=s, search_steps=0, vae=self.vae, verifier=self.verifier,
                    condition=str(label), budget=budget, top_k=1, batch_size=0)
        if method == "random":
            out = run_node("RandomSearch", **args, candidates=max(1, budget // s))
        elif method == "zero_order":
            out = run_node("ZeroOrderSearch", **args, neighbours=2, iterations=10_000, angle=45.0, restart=True)
        else:
            out = run_node("PathSearch", **args, paths=max(1, budget // 48), branches=2, start=0.35,
                           forward=0.25, backward=0.35, interval_steps=2)
        return out[0]["samples"], json.loads(out[-1])["nfe"]["search_total"]

    def steps_batch(self, steps: int, label: int, seeds: list[int]) -> torch.Tensor:
        """Plain sampling with ``steps`` steps: candidate 0 of each seed (the same first noise
        random search starts from)."""
        outs = [run_node("KSampler", **self.common(label, seed), steps=steps)[0]["samples"] for seed in seeds]
        return torch.cat(outs)

    def images(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)  # [N, 16, 16, C] in [0, 1]

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, real_features: torch.Tensor) -> dict:
        from bench.testbed.metrics import class_diversity, frechet_distance, inception_score

        with torch.no_grad():
            logits = self.evaluator.logits(images)
            feats = self.evaluator.module.features(self.evaluator.preprocess(images))
        probs = logits.softmax(-1)
        # The verifier scores one condition per call: one call per class.
        verifier_logits = torch.cat([self.verifier.score(images[labels == c], str(int(c))) for c in labels.unique()])
        return {"verifier_score": float(verifier_logits.mean()),
                "inception_score": inception_score(probs),
                "accuracy": float((probs.argmax(-1) == labels).float().mean()),
                "frechet_distance": frechet_distance(feats, real_features),
                "diversity": class_diversity(feats, labels)}


def real_features(bed: Testbed) -> torch.Tensor:
    from bench.testbed.data import load_digits_16, splits

    x, _ = load_digits_16()
    real = x[splits()["evaluator_clf"]].unsqueeze(-1)  # IMAGE [N, 16, 16, 1]
    with torch.no_grad():
        return bed.evaluator.module.features(bed.evaluator.preprocess(real))


def run(budgets: list[int], per_class: int, out_dir: Path, search_steps: int = 8, cfg: float = 2.0,
        methods=METHODS, log=print) -> dict:
    torch.set_num_threads(2)
    bed = Testbed(search_steps, cfg)
    real = real_features(bed)
    labels = torch.arange(10).repeat_interleave(per_class)
    seeds = [1000 * int(c) + j for c in range(10) for j in range(per_class)]
    results, samples = {"settings": {"budgets": budgets, "per_class": per_class, "search_steps": search_steps,
                                     "cfg": cfg, "sampler": "euler", "scheduler": "normal"}, "rows": []}, []
    for budget in budgets:
        for method in methods:
            if budget == budgets[0] and method != "steps":
                continue  # the first budget is the common starting point: no search yet
            t0 = time.perf_counter()
            if method == "steps":
                lat = torch.cat([bed.steps_batch(budget, c, seeds[c * per_class:(c + 1) * per_class])
                                 for c in range(10)])
                nfes = [budget] * len(seeds)
            else:
                outs = [bed.search(method, budget, int(lab), seed) for lab, seed in zip(labels, seeds)]
                lat, nfes = torch.cat([o[0] for o in outs]), [o[1] for o in outs]
            images = bed.images(lat)
            row = {"method": method, "budget": budget, "nfe_mean": float(np.mean(nfes)),
                   **bed.evaluate(images, labels, real), "seconds": round(time.perf_counter() - t0, 2)}
            results["rows"].append(row)
            samples.append((images[..., 0].float().numpy(), labels.numpy(), method, np.array(nfes)))
            log(f"[demo] {method:>10} @ {budget:>4} NFEs: IS {row['inception_score']:.3f}  acc {row['accuracy']:.3f}  "
                f"verifier {row['verifier_score']:.2f}  FD {row['frechet_distance']:.2f}  "
                f"diversity {row['diversity']:.3f}  ({row['seconds']} s)")
    results["findings"] = findings(results["rows"], budgets)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    np.savez_compressed(out_dir / "samples.npz",
                        images=np.concatenate([s[0] for s in samples]).astype(np.float32),
                        labels=np.concatenate([s[1] for s in samples]).astype(np.int64),
                        method=np.concatenate([[s[2]] * len(s[1]) for s in samples]).astype(str),
                        nfe=np.concatenate([s[3] for s in samples]).astype(np.int64))
    return results


def cell(rows, method, budget):
    for r in rows:
        if r["budget"] == budget and (r["method"] == method or (budget == rows[0]["budget"])):
            return r
    return None


def findings(rows: list[dict], budgets: list[int]) -> dict:
    """The claims the demo checks, computed from its own table."""
    out = {"search_beats_steps_on_is": {}, "verifier_monotone": {}, "diversity_change_random_largest": None}
    for method in ("random", "zero_order", "paths"):
        if not any(r["method"] == method for r in rows):
            continue
        beats = {b: cell(rows, method, b)["inception_score"] > cell(rows, "steps", b)["inception_score"]
                 for b in budgets[1:]}
        out["search_beats_steps_on_is"][method] = beats
        scores = [cell(rows, method, b)["verifier_score"] for b in budgets]
        out["verifier_monotone"][method] = all(b >= a for a, b in zip(scores, scores[1:]))
    base, top = cell(rows, "steps", budgets[0]), cell(rows, "random", budgets[-1])
    if top is not None:
        out["diversity_change_random_largest"] = {"from": base["diversity"], "to": top["diversity"],
                                                  "relative": top["diversity"] / base["diversity"] - 1}
    return out


def table(results: dict) -> str:
    head = f"{'method':<28}{'NFEs':>6}{'spent':>8}{'verifier':>10}{'IS':>8}{'acc':>7}{'FD':>8}{'divers.':>9}"
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        lines.append(f"{LABELS[r['method']]:<28}{r['budget']:>6}{r['nfe_mean']:>8.1f}{r['verifier_score']:>10.2f}"
                     f"{r['inception_score']:>8.3f}{r['accuracy']:>7.3f}{r['frechet_distance']:>8.2f}{r['diversity']:>9.3f}")
    return "\n".join(lines)


def plot(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, budgets = results["rows"], results["settings"]["budgets"]
    panels = [("verifier_score", "verifier score (logit of the class)"), ("inception_score", "evaluator IS"),
              ("frechet_distance", "Frechet distance (lower is better)"), ("diversity", "per-class diversity")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, (key, title) in zip(axes, panels):
        for method in METHODS:
            pts = [(b, cell(rows, method, b)[key]) for b in budgets if cell(rows, method, b)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=LABELS[method])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("total NFEs per sample")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Inference-time scaling on digits: search vs. more denoising steps (CPU, through ComfyUI)")
    fig.tight_layout()
    fig.savefig(out_dir / "scaling.png", dpi=110)
    plt.close(fig)


def grid(out_dir: Path, budgets: list[int], per_class: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(out_dir / "samples.npz")
    images, method = data["images"], data["method"]
    k = min(6, per_class)
    plain = images[(method == "steps")][: 10 * per_class]
    searched = images[method == "random"][-10 * per_class:] if (method == "random").any() else plain
    fig, axes = plt.subplots(10, 2 * k + 1, figsize=(2 * k + 1, 10))
    for c in range(10):
        for j in range(k):
            axes[c, j].imshow(plain[c * per_class + j], cmap="gray", vmin=0, vmax=1)
            axes[c, k + 1 + j].imshow(searched[c * per_class + j], cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, k // 2].set_title(f"plain ({budgets[0]} steps)", fontsize=9)
    axes[0, k + 1 + k // 2].set_title(f"random search ({budgets[-1]} NFEs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "grid.png", dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="8,16,32,64,128", help="ladder of total NFEs per sample")
    ap.add_argument("--per-class", type=int, default=10, help="samples per class and budget")
    ap.add_argument("--search-steps", type=int, default=8, help="NFEs per search iteration (Euler steps)")
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "demo_output"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    budgets = [int(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    results = run(budgets, args.per_class, out, args.search_steps, args.cfg)
    plot(results, out)
    grid(out, budgets, args.per_class)
    text = table(results)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    print(json.dumps(results["findings"], indent=1))
    print(f"[demo] wrote {out}/results.json, scaling.png, grid.png, samples.npz in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
