"""Models of the offline testbed: an epsilon-prediction denoiser (here) and two small classifiers.

Conventions (kept identical to ComfyUI's discrete EPS models so the denoiser can later be
wrapped by ComfyUI's ModelSamplingDiscrete without any conversion):

* Data space: a pixel p in [0,1] is the clean sample x0 = 2p - 1 in [-1,1], shape [B,1,16,16].
* Noising is variance exploding: x = x0 + sigma * eps, eps ~ N(0, I).
* The network sees the pre-scaled input c_in * x with c_in = 1/sqrt(sigma^2 + sigma_data^2),
  sigma_data = 1 (ComfyUI's EPS.calculate_input), and predicts eps; the denoised estimate is
  x0_hat = x - sigma * eps_hat (ComfyUI's EPS.calculate_denoised).
* Noise levels follow SD's discrete "scaled_linear" schedule: 1000 steps, betas =
  linspace(sqrt(0.00085), sqrt(0.012), 1000)^2, sigma_t = sqrt((1 - abar_t) / abar_t), so
  sigma runs from ~0.0292 (t=0) to ~14.61 (t=999).
* The denoiser is conditioned on SIGMA itself (float tensor [B]); inside it embeds
  c_noise = log(sigma) / 4 (a continuous, roughly unit-range coordinate, so sigmas between
  the 1000 discrete ones - e.g. a Karras schedule - are handled naturally). A ComfyUI
  wrapper that is handed timesteps converts them with `timestep_to_sigma` first.
* Class labels are 0..9; label NULL_CLASS = 10 is the unconditional ("dropped") label used
  for classifier-free guidance.
* The classifiers are the pack's convnet (verifiers/classifier.py, saved with its
  `save_classifier`), in PIXEL space: input [B,1,16,16] in [0,1]; `features()` is the
  penultimate layer (used for the Frechet distance).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
NULL_CLASS = 10  # the extra class-embedding row used for the unconditional branch of CFG
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# ---------------------------------------------------------------- noise schedule


def discrete_sigmas(linear_start: float = 0.00085, linear_end: float = 0.012, steps: int = 1000):
    """sigma_t for t = 0..steps-1 of SD's 'scaled_linear' DDPM schedule (ascending), float32.

    Computed in float64 like ComfyUI does, then cast, so values match its ModelSamplingDiscrete.
    """
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, steps, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - ac) / ac).sqrt().float()


SIGMAS = discrete_sigmas()
SIGMA_MIN = float(SIGMAS[0])
SIGMA_MAX = float(SIGMAS[-1])


def sigmas() -> torch.Tensor:
    """The 1000 discrete training sigmas, ascending (index = timestep)."""
    return SIGMAS.clone()


def timestep_to_sigma(t: torch.Tensor | float) -> torch.Tensor:
    """Continuous timestep in [0, 999] -> sigma, interpolating log-sigma like ComfyUI."""
    t = torch.as_tensor(t, dtype=torch.float32).clamp(0, len(SIGMAS) - 1)
    lo = t.floor().long()
    hi = t.ceil().long()
    w = t - lo
    log_s = SIGMAS.log()
    return ((1 - w) * log_s[lo] + w * log_s[hi]).exp()


def sigma_to_timestep(sigma: torch.Tensor | float) -> torch.Tensor:
    """Inverse of `timestep_to_sigma` (piecewise linear in log-sigma), clamped to [0, 999]."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    log_s = SIGMAS.log()
    ls = sigma.clamp(SIGMA_MIN, SIGMA_MAX).log()
    hi = torch.searchsorted(log_s, ls.contiguous()).clamp(1, len(log_s) - 1)
    lo = hi - 1
    w = (ls - log_s[lo]) / (log_s[hi] - log_s[lo])
    return lo.float() + w.clamp(0, 1)


# ---------------------------------------------------------------- denoiser


def sinusoidal(c: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style features of a scalar per sample; c of order 1, so frequencies go up to ~100."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(100.0), half, device=c.device))
    ang = c.float()[:, None] * freqs[None, :] * math.pi
    return torch.cat([ang.sin(), ang.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the embedding enters as a per-channel scale and shift."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class DigitsDenoiser(nn.Module):
    """Class-conditional eps-prediction UNet for 1x16x16 digits (one 16->8 downsample).

    forward(x_in, sigma, labels) -> eps_hat, where
      x_in   [B,1,16,16]: the PRE-SCALED noisy sample (x0 + sigma*eps) / sqrt(sigma^2 + 1),
      sigma  [B] float  : the noise level (not a timestep; see module docstring),
      labels [B] int64  : 0..9, or NULL_CLASS (10) for the unconditional prediction.
    `predict_eps` / `denoise` take the raw noisy x and do the scaling themselves.
    """

    def __init__(self, ch: int = 32, ch_mult: int = 2, emb_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        c1, c2 = ch, ch * ch_mult
        self.emb_dim = emb_dim
        self.sigma_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(NUM_CLASSES + 1, emb_dim)
        self.conv_in = nn.Conv2d(1, c1, 3, padding=1)
        self.enc16 = ResBlock(c1, c1, emb_dim, dropout)
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 16x16 -> 8x8
        self.mid = nn.ModuleList([ResBlock(c2, c2, emb_dim, dropout) for _ in range(3)])
        self.up = nn.Conv2d(c2, c1, 3, padding=1)  # after nearest 8x8 -> 16x16
        self.dec16 = ResBlock(2 * c1, c1, emb_dim, dropout)  # takes [up, skip from enc16]
        self.norm_out = nn.GroupNorm(8, c1)
        self.conv_out = nn.Conv2d(c1, 1, 3, padding=1)
        # Start from a zero eps prediction: keeps early training stable.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_in: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x_in.dtype, device=x_in.device).reshape(-1).expand(x_in.shape[0])
        c_noise = sigma.log() / 4
        emb = self.sigma_mlp(sinusoidal(c_noise, self.emb_dim)) + self.class_emb(labels)
        emb = F.silu(emb)
        h16 = self.enc16(self.conv_in(x_in), emb)
        h = self.down(h16)
        for blk in self.mid:
            h = blk(h, emb)
        h = self.up(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.dec16(torch.cat([h, h16], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def predict_eps(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """eps_hat from the raw (unscaled) noisy sample x = x0 + sigma*eps."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        c_in = (sigma**2 + 1).rsqrt()[:, None, None, None]
        return self(x * c_in, sigma, labels)

    def denoise(self, x: torch.Tensor, sigma, labels: torch.Tensor, cfg: float = 1.0) -> torch.Tensor:
        """x0_hat = x - sigma*eps_hat, with classifier-free guidance scale `cfg` (1 = none)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        if cfg == 1.0:
            eps = self.predict_eps(x, sigma, labels)
        else:
            # One batched call for both branches, like ComfyUI does.
            null = torch.full_like(labels, NULL_CLASS)
            both = self.predict_eps(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([labels, null]))
            cond, uncond = both.chunk(2)
            eps = uncond + cfg * (cond - uncond)
        return x - sigma[:, None, None, None] * eps


# ---------------------------------------------------------------- configs and loading

_CLASSES = {"DigitsDenoiser": DigitsDenoiser}


def config_from_json(path: str | Path) -> dict:
    """Read a model config: {"class": <name>, "kwargs": {...}, ...extra info...}."""
    return json.loads(Path(path).read_text())


def build_from_config(cfg: dict) -> nn.Module:
    """Instantiate the (untrained) architecture a config describes."""
    return _CLASSES[cfg["class"]](**cfg["kwargs"])


def load_model(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> nn.Module:
    """Load the denoiser's `<name>.json` + `<name>.safetensors` strictly, in eval mode.

    The classifiers are in the pack's own format instead: see `load_classifier`.
    """
    from safetensors.torch import load_file

    weights_dir = Path(weights_dir)
    model = build_from_config(config_from_json(weights_dir / f"{name}.json"))
    model.load_state_dict(load_file(str(weights_dir / f"{name}.safetensors")), strict=True)
    return model.eval().requires_grad_(False)


def classifier_api():
    """The pack's `verifiers.classifier` module (build_classifier, save_classifier, load_classifier).

    Imported as a top-level package from the repository root; it needs no ComfyUI."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("verifiers.classifier")


def load_classifier(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> nn.Module:
    """'verifier_classifier' or 'evaluator_classifier' through the pack's loader, in eval mode."""
    module, _ = classifier_api().load_classifier(Path(weights_dir) / f"{name}.safetensors")
    return module
