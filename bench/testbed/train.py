"""Train the testbed's denoiser and its two classifiers, deterministically, on 2 CPU cores.

    python -m bench.testbed.train            # writes bench/testbed/weights/*
    python -m bench.testbed.train --threads 1 --skip-classifiers   # the denoiser only

Measured for the shipped weights: classifiers 76 s wall (--threads 2), denoiser 130 s of CPU
on one thread (--threads 1; 138 s wall on the 2-core machine shared with other jobs; two runs
gave byte-identical files). Each JSON records the thread count it was trained with; results
are deterministic for a given thread count and torch build (float sums may differ in the last
bits between thread counts).

The denoiser is trained for 400 steps (the first release trained 1600): the demo runs the
paper's class-conditional setting, guidance 1.0, where the 1600-step model's 4-step samples
were already right 97.8% of the time (evaluator accuracy, 500 samples) and left search almost
nothing to gain; the 400-step model's are right 93.0% of the time, below real digits' 94.3%
(see bench/testbed/README.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .data import load_digits_16, splits
from .models import NULL_CLASS, NUM_CLASSES, SIGMAS, WEIGHTS_DIR, DigitsDenoiser, classifier_api

DENOISER = {"ch": 32, "ch_mult": 2, "emb_dim": 128, "dropout": 0.0}
DENOISER_TRAIN = {"steps": 400, "batch": 128, "lr": 2e-3, "warmup": 100, "ema": 0.999, "label_drop": 0.1, "seed": 0}
# The pack's own convnet classifier format (verifiers/classifier.py), so the verifier loads
# through the ClassifierVerifierLoader node exactly as a user's classifier would. Input: one
# channel, 16x16, pixels in [0, 1] (mean 0, std 1: no normalisation).
CLASSIFIER = {"architecture": "convnet", "num_classes": NUM_CLASSES,
              "class_names": [str(i) for i in range(NUM_CLASSES)], "in_channels": 1, "image_size": 16,
              "channels": [32, 64], "hidden": 64, "dropout": 0.3}
# Different seeds and disjoint data: the verifier (searched against) and the evaluator
# (reported) must be independent judges, or search would just overfit the metric.
CLASSIFIER_TRAIN = {
    "verifier_classifier": {"split": "verifier_clf", "seed": 1, "epochs": 40, "batch": 64, "lr": 2e-3},
    "evaluator_classifier": {"split": "evaluator_clf", "seed": 2, "epochs": 40, "batch": 64, "lr": 2e-3},
}


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image [B,1,H,W] by up to max_shift px in x and y, filling with zeros (no wrap)."""
    b, _, h, w = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [B,H,1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [B,1,W]
    return xp[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 5% of base (a low final LR sharpens the EMA)."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + torch.cos(torch.tensor(frac * torch.pi)).item()))


def train_denoiser(hp: dict = DENOISER_TRAIN, arch: dict = DENOISER, log_every: int = 100, snapshot=None):
    """Return the EMA model; snapshot(step, ema) is called every 400 steps if given."""
    torch.manual_seed(hp["seed"])
    gen = torch.Generator().manual_seed(hp["seed"])
    x_all, y_all = load_digits_16()
    idx = splits()["denoiser"]
    x0_all = (x_all[idx] * 2 - 1).unsqueeze(1)  # data space [-1,1]
    y_all = y_all[idx]
    model = DigitsDenoiser(**arch)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=0.0)
    n = len(idx)
    t0, c0, run = time.time(), time.process_time(), 0.0
    for step in range(hp["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, hp["steps"], hp["lr"], hp["warmup"])
        b = torch.randint(0, n, (hp["batch"],), generator=gen)
        x0, labels = x0_all[b], y_all[b].clone()
        labels[torch.rand(hp["batch"], generator=gen) < hp["label_drop"]] = NULL_CLASS  # CFG dropout
        # Uniform discrete timestep, exactly as SD-style DDPM training; covers sigma 0.029..14.6.
        sigma = SIGMAS[torch.randint(0, len(SIGMAS), (hp["batch"],), generator=gen)]
        eps = torch.randn(x0.shape, generator=gen)
        loss = F.mse_loss(model.predict_eps(x0 + sigma[:, None, None, None] * eps, sigma, labels), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # EMA with a warm-up so early (bad) weights do not linger.
        decay = min(hp["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        run = 0.98 * run + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"denoiser step {step + 1:5d}/{hp['steps']}  loss {run:.4f}  {time.time() - t0:6.1f}s", flush=True)
        if snapshot is not None and (step + 1) % 400 == 0:
            snapshot(step + 1, ema)
    # CPU time / threads is what the run costs on 2 otherwise idle cores; wall time includes
    # whatever else shares the machine.
    print(f"denoiser trained in {time.time() - t0:.1f}s wall, {time.process_time() - c0:.1f}s CPU", flush=True)
    return ema


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x.unsqueeze(1)).argmax(1) == y).float().mean().item()


def train_classifier(split: str, seed: int, epochs: int, batch: int, lr: float, arch: dict = CLASSIFIER):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = load_digits_16()
    idx = splits()[split]
    x, y = x_all[idx].unsqueeze(1), y_all[idx]
    model = classifier_api().build_classifier(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * ((len(idx) + batch - 1) // batch)
    step = 0
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(idx), generator=gen).split(batch):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr, 20)
            loss = F.cross_entropy(model(random_shift(x[b], gen)), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model.eval(), loss.item()


def save(model: torch.nn.Module, name: str, arch: dict, out: Path, extra: dict) -> None:
    """The denoiser's format: `<name>.safetensors` + `<name>.json` {"class", "kwargs", ...}."""
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / f"{name}.safetensors"))
    cfg = {"class": type(model).__name__, "kwargs": arch, **extra}
    (out / f"{name}.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--steps", type=int, default=DENOISER_TRAIN["steps"], help="denoiser steps")
    ap.add_argument("--threads", type=int, default=2, help="1 is far faster on a busy machine (no OpenMP spin)")
    ap.add_argument("--skip-denoiser", action="store_true")
    ap.add_argument("--skip-classifiers", action="store_true")
    ap.add_argument("--snapshots", action="store_true", help="also save denoiser_step<N> every 400 steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    x_all, y_all = load_digits_16()
    sp = splits()
    t0 = time.time()
    for name, hp in ({} if args.skip_classifiers else CLASSIFIER_TRAIN).items():
        model, last = train_classifier(**hp)
        accs = {s: round(accuracy(model, x_all[i], y_all[i]), 4) for s, i in sp.items()}
        print(f"{name}: final loss {last:.4f}  accuracy per split {accs}", flush=True)
        classifier_api().save_classifier(model, {**CLASSIFIER, "train": hp, "threads": args.threads,
                                                 "accuracy": accs}, args.out / f"{name}.safetensors")
    print(f"classifiers trained in {time.time() - t0:.1f}s", flush=True)

    if not args.skip_denoiser:
        hp = {**DENOISER_TRAIN, "steps": args.steps}
        t0 = time.time()
        snap = None
        if args.snapshots:
            def snap(step, ema):
                save(ema, f"denoiser_step{step}", DENOISER, args.out, {"train": {**hp, "steps": step}})
        ema = train_denoiser(hp, snapshot=snap)
        secs = round(time.time() - t0, 1)
        conv = {"data": "x0 = 2*pixel - 1", "input": "x/sqrt(sigma^2+1)", "output": "eps",
                "cond": "sigma (c_noise = log(sigma)/4)", "schedule": "scaled_linear 0.00085..0.012, 1000",
                "null_class": NULL_CLASS}  # fmt: skip
        save(ema, "denoiser", DENOISER, args.out, {"train": hp, "threads": args.threads, "train_seconds": secs, "conventions": conv})


if __name__ == "__main__":
    main()
