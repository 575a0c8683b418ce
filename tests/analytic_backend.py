"""A diffusion problem with an exact denoiser: a Gaussian mixture, noise-prediction convention.

x = x0 + sigma * eps, x0 ~ sum_k w_k N(mu_k, s^2 I). E[x0 | x] has a closed form, so the
search algorithms can be tested on the mathematics alone, with every call counted.
"""

from __future__ import annotations

import torch

from search.backend import Scores
from verifiers.ensemble import mean_rank


class GaussianMixtureBackend:
    def __init__(self, means: torch.Tensor, std: float = 0.3, sigma_max: float = 20.0,
                 steps: int = 12, search_steps: int | None = None, target: int = 0,
                 ensemble: bool = False, ancestral: bool = False, seed: int = 0):
        self.means, self.std, self.sigma_max = means.float(), std, sigma_max
        self.steps, self.search_steps, self.target = steps, search_steps or steps, target
        self.calls = 0          # denoiser calls (batches)
        self.rows = 0           # denoiser rows: the paper's NFEs summed over candidates
        self.scored = 0
        self.solved_ids: list[int] = []
        self.noise_of: dict[int, torch.Tensor] = {}   # initial noise of every fresh candidate
        # A rank ensemble of three verifiers (closeness to the target mode in x, in y, and in
        # both): compare() ranks exactly the rows it is given, as the pack's ensemble does.
        self.relative = ensemble
        # Euler-ancestral steps whose per-step noise row i draws from seed + ids[i] (as the
        # adapter draws a host sampler's), instead of deterministic Euler steps.
        self.stochastic, self.seed = ancestral, seed
        self.runs: list[tuple[list[int], float, float]] = []  # (ids, first sigma, last sigma) per call
        self.chunk = None

    # -- the exact model ----------------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        var = self.std**2 + sigma**2
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        resp = torch.softmax(-d2 / (2 * var), dim=1)
        comp = self.means[None] + (self.std**2 / var) * (x[:, None, :] - self.means[None])
        return (resp[..., None] * comp).sum(1)

    # -- SearchBackend ------------------------------------------------------------------
    def schedule(self, search: bool = False) -> torch.Tensor:
        n = self.search_steps if search else self.steps
        return torch.tensor([self.level_sigma(t) for t in torch.linspace(1, 0, n + 1).tolist()])

    def level_sigma(self, t: float) -> float:
        # Quadratic in t: more resolution at low noise, like practical schedules.
        return self.sigma_max * t * t

    def sigma_level(self, sigma: float) -> float:
        return (sigma / self.sigma_max) ** 0.5

    def nfe(self, sigmas: torch.Tensor) -> int:
        return len(sigmas) - 1

    def solve(self, state, noise, sigmas, ids):
        return self._run(state, noise, sigmas, ids)[0], None

    def advance(self, state, noise, sigmas, ids):
        return self._run(state, noise, sigmas, ids)

    def _run(self, state, noise, sigmas, ids):
        self.solved_ids += list(ids)
        self.runs.append((list(ids), float(sigmas[0]), float(sigmas[-1])))
        if state is None:
            self.noise_of.update({i: n for i, n in zip(ids, noise)})
        x = torch.zeros_like(noise) if state is None else state.clone()
        if noise is not None:
            x = x + float(sigmas[0]) * noise
        gens = [torch.Generator().manual_seed(self.seed + int(i)) for i in ids] if self.stochastic else []
        x0 = None
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x0 = self.denoise(x, s)
            if not self.stochastic or s_next == 0:
                x = x + (x - x0) / s * (s_next - s)
                continue
            # Euler ancestral (eta 1): step down to sigma_down, add noise of sigma_up.
            up = min(s_next, (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5)
            down = (s_next**2 - up**2) ** 0.5
            x = x + (x - x0) / s * (down - s)
            x = x + up * torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens])
        return x, x0

    def initial_noise(self, ids, problem=0):
        """The "stock" noise of candidate id: a generator seeded from the id alone (a problem's
        own start is added where it is solved, as for the given noises)."""
        return torch.stack([torch.randn(self.means.shape[1], generator=torch.Generator().manual_seed(
            self.seed + 104729 + int(i))) for i in ids])

    def resumable(self, sigmas, at):
        # Euler steps carry no history; ancestral ones draw fresh noise under fresh ids.
        return not self.stochastic or not at

    def predict_x0(self, state, sigma):
        return self.denoise(state, sigma)

    def renoise(self, state, sigma_from, sigma_to, generator):
        c = (1 - (sigma_from / sigma_to) ** 2) ** 0.5
        eps = torch.randn(state.shape, generator=generator)
        return state, c * eps

    def score(self, latents, early=None):
        self.scored += latents.shape[0]
        # Verifier: closeness to the target mode (higher is better).
        gap = (latents - self.means[self.target]) ** 2
        total = -gap.sum(-1, keepdim=True)
        values = torch.cat([-gap, total], dim=1) if self.relative else total
        return Scores(values, images=latents)

    def compare(self, values):
        return mean_rank(values.T) if self.relative else values[:, 0]
