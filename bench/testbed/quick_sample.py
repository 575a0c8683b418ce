"""Sanity check of the trained denoiser: Euler + CFG sampling, judged by the evaluator classifier.

    python -m bench.testbed.quick_sample --steps 4 8 20 --cfg 3 --grid /tmp/testbed_grid.png

Prints, per step count, the evaluator's accuracy on the intended class, its mean max
probability, an Inception-Score-like number IS = exp(E_x[KL(p(y|x) || p(y))]) and a
Frechet distance (FD) of the evaluator's penultimate features to real digits that neither
the denoiser nor the evaluator was trained on (the 'verifier_clf' split). Accuracy alone
flatters few-step samples: blurry class averages are easy to classify; FD sees the blur.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from .data import load_digits_16, splits
from .models import (
    NUM_CLASSES,
    SIGMA_MAX,
    SIGMA_MIN,
    WEIGHTS_DIR,
    load_classifier,
    load_model,
    sigma_to_timestep,
    timestep_to_sigma,
)


def sigma_schedule(steps: int, kind: str = "normal") -> torch.Tensor:
    """steps+1 descending sigmas ending in 0.

    'normal': ComfyUI's normal scheduler (timesteps evenly spaced from 999 to 0, mapped to
    sigma); 'karras': Karras et al. rho=7 between SIGMA_MAX and SIGMA_MIN.
    """
    if kind == "normal":
        ts = torch.linspace(float(sigma_to_timestep(SIGMA_MAX)), float(sigma_to_timestep(SIGMA_MIN)), steps)
        s = timestep_to_sigma(ts)
    elif kind == "karras":
        ramp = torch.linspace(0, 1, steps)
        rho = 7.0
        s = (SIGMA_MAX ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
    else:
        raise ValueError(kind)
    return torch.cat([s, s.new_zeros(1)])


@torch.no_grad()
def euler_sample(model, noise: torch.Tensor, labels: torch.Tensor, sigmas: torch.Tensor, cfg: float) -> torch.Tensor:
    """Deterministic Euler ODE solve from unit Gaussian `noise` [B,1,16,16]; returns x0 in [-1,1] space.

    As in ComfyUI (EPS.noise_scaling with max_denoise), a start at the schedule's sigma_max uses
    noise * sqrt(1 + sigma^2): the discrete schedule's last step still holds some signal, so the
    marginal there has variance 1 + sigma^2, not sigma^2.
    """
    s0 = float(sigmas[0])
    x = noise * (math.sqrt(1 + s0**2) if math.isclose(s0, SIGMA_MAX, rel_tol=1e-4) else s0)
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        denoised = model.denoise(x, s, labels, cfg=cfg)
        x = x + (x - denoised) / s * (s_next - s)
    return x


@torch.no_grad()
def judge(clf, x0: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy on intended class, mean max prob and IS of samples in [-1,1] data space."""
    p = clf(((x0 + 1) / 2).clamp(0, 1)).softmax(1)
    py = p.mean(0, keepdim=True)
    kl = (p * (p.clamp_min(1e-12).log() - py.clamp_min(1e-12).log())).sum(1)
    return {
        "acc": (p.argmax(1) == labels).float().mean().item(),
        "maxprob": p.max(1).values.mean().item(),
        "IS": kl.mean().exp().item(),
    }


def _gauss(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = f.double()
    return f.mean(0), torch.cov(f.T)


def frechet(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets [N,F]."""
    (m1, s1), (m2, s2) = _gauss(f1), _gauss(f2)
    # tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))), all symmetric PSD: eigh is stable.
    w, v = torch.linalg.eigh(s1)
    r1 = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    tr_cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((m1 - m2).pow(2).sum() + s1.trace() + s2.trace() - 2 * tr_cross)


def real_reference_features(clf) -> torch.Tensor:
    """Evaluator features of real digits held out from both the denoiser and the evaluator."""
    x, _ = load_digits_16()
    with torch.no_grad():
        return clf.features(x[splits()["verifier_clf"]].unsqueeze(1))


def save_grid(x0: torch.Tensor, per_row: int, path: str | Path, zoom: int = 3) -> None:
    """Tile samples [B,1,16,16] (data space) into a PNG, one class per row, 1px gray gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = ((x0[:, 0] + 1) / 2).clamp(0, 1)
    img = torch.nn.functional.pad(img, (0, 1, 0, 1), value=0.5)  # gap right and below each cell
    rows = img.reshape(-1, per_row, 17, 17).permute(0, 2, 1, 3).reshape(-1, per_row * 17)
    rows = rows.repeat_interleave(zoom, 0).repeat_interleave(zoom, 1)
    plt.imsave(str(path), rows.numpy(), cmap="gray", vmin=0, vmax=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 20])
    ap.add_argument("--cfg", type=float, nargs="+", default=[3.0])
    ap.add_argument("--schedule", default="normal", choices=["normal", "karras"])
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", default="demo_output/testbed_grid.png", help="grid of the last setting")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    model = load_model("denoiser", args.weights)
    evaluator = load_classifier("evaluator_classifier", args.weights)
    verifier = load_classifier("verifier_classifier", args.weights)
    ref = real_reference_features(evaluator)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(args.per_class)
    # FD is biased upwards at small N: print the floor, real training digits at the same N.
    x_real, _ = load_digits_16()
    pick = splits()["denoiser"][torch.randperm(len(splits()["denoiser"]), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        floor = frechet(evaluator.features(x_real[pick[: len(labels)]].unsqueeze(1)), ref)
    print(f"FD floor (real digits, same N={len(labels)}): {floor:.2f}")
    noise = torch.randn(len(labels), 1, 16, 16, generator=torch.Generator().manual_seed(args.seed))
    for cfg in args.cfg:
        for steps in args.steps:
            x0 = euler_sample(model, noise, labels, sigma_schedule(steps, args.schedule), cfg)
            ev, ve = judge(evaluator, x0, labels), judge(verifier, x0, labels)
            with torch.no_grad():
                fd = frechet(evaluator.features(((x0 + 1) / 2).clamp(0, 1)), ref)
            print(f"cfg {cfg:4.1f} steps {steps:3d}  evaluator acc {ev['acc']:.3f} maxprob {ev['maxprob']:.3f} "
                  f"IS {ev['IS']:.2f} FD {fd:7.2f}  | verifier acc {ve['acc']:.3f}", flush=True)  # fmt: skip
    save_grid(x0, args.per_class, args.grid)
    print(f"grid ({args.schedule}, cfg {args.cfg[-1]}, {args.steps[-1]} steps) -> {args.grid}")


if __name__ == "__main__":
    main()
