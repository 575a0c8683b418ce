"""Helpers shared by the test files (test files import this module, never each other).

- The analytic problem: the Gaussian-mixture backend of tests/analytic_backend.py on four
  modes, its noises and generators, and two variants of it (every score tied; every model
  request recorded), plus path search's cost plan from its definition.
- The nodes on ComfyUI's real sampler (in-process, tests/harness/host.py): a small latent, the
  KSampler-style inputs, a stock KSampler to compare with, scores of latents, a count of the
  rows the diffusion model evaluates, and a model that runs out of memory above a size.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import torch

from search.backend import Scores
from tests.analytic_backend import GaussianMixtureBackend
from tests.harness.host import node_class, run_node
from tests.toy_verifier import ProbeVerifier

# -- the analytic problem ----------------------------------------------------------------------

MEANS = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])


def backend(**kw):
    return GaussianMixtureBackend(MEANS, **kw)


def noise(n, seed=0, dtype=torch.float32):
    return torch.randn((n, 2), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


class Flat(GaussianMixtureBackend):
    """Every candidate gets the same score: every comparison is a tie."""

    def score(self, latents, early=None):
        self.scored += latents.shape[0]
        return Scores(torch.zeros(latents.shape[0], 1), images=latents)


class Recording(GaussianMixtureBackend):
    """Records what the algorithms ask of the model; ``solve`` returns an early x0 of its own
    rows (the state + 100), and ``score`` records the early tensor it is given."""

    def __init__(self, *args, chunk=None, **kw):
        super().__init__(MEANS, *args, **kw)
        if chunk is not None:
            self.chunk = chunk
        self.solves, self.x0_sigmas, self.renoised, self.early_seen = [], [], [], []

    def solve(self, state, noise, sigmas, ids):
        self.solves.append({"fresh": state is None, "sigmas": sigmas.clone(), "ids": list(ids)})
        x, _ = super().solve(state, noise, sigmas, ids)
        return x, x + 100.0

    def predict_x0(self, state, sigma):
        self.x0_sigmas.append(sigma)
        return super().predict_x0(state, sigma)

    def renoise(self, state, sigma_from, sigma_to, generator):
        self.renoised.append((sigma_from, sigma_to))
        return super().renoise(state, sigma_from, sigma_to, generator)

    def score(self, latents, early=None):
        self.early_seen.append(None if early is None else early - latents)
        return super().score(latents)


def path_plan(m, n, branches, start, forward, backward, interval):
    """Path search costs, from its definition: the head (N paths down to the start level), each
    round (N*M children re-noised up by ``forward``, solved down by ``backward`` in
    ``interval`` steps, plus one NFE for the x0-prediction unless the round reaches 0), and the
    finish of the N survivors from a level along the full schedule."""
    sig = m.schedule()
    head = n * int((sig > m.level_sigma(start)).sum())
    rounds, t = [], start
    while t > 0:
        up = min(1.0, t + forward)
        down = up - backward
        down = 0.0 if down < 1e-6 else down
        rounds.append((t, up, down, n * branches * (interval + (1 if down > 0 else 0))))
        t = down

    def finish(level):
        return n * int((sig < m.level_sigma(level)).sum()) if level > 0 else 0

    return head, rounds, finish


# -- the nodes on ComfyUI's real sampler --------------------------------------------------------

LATENT = {"samples": torch.zeros(1, 4, 4, 4)}  # 32 px: keeps the CPU tests quick


@contextmanager
def forward_rows(model):
    """Counts the rows the diffusion model really evaluates while the block runs."""
    counts = {"rows": 0}

    def count(module, args):
        counts["rows"] += args[0].shape[0]

    hook = model.model.diffusion_model.register_forward_pre_hook(count)
    try:
        yield counts
    finally:
        hook.remove()


def ks_args(parts, **kw):
    args = dict(model=parts["model"], seed=5, steps=3, search_steps=0, cfg=2.0, sampler_name="euler",
                scheduler="normal", positive=parts["positive"], negative=parts["negative"],
                latent_image=LATENT, denoise=1.0, vae=parts["vae"], verifier=ProbeVerifier(),
                condition="", budget=0, top_k=1, batch_size=0)
    args.update(kw)
    return args


def outputs(node_id, out):
    names = [o.id for o in node_class(node_id).define_schema().outputs]
    d = dict(zip(names, out))
    d["report"] = json.loads(d["report"])
    return d


def search(node_id, **inputs):
    return outputs(node_id, run_node(node_id, **inputs))


def stock_ksampler(parts, model=None, latent=None, **kw):
    args = dict(model=model or parts["model"], seed=5, steps=3, cfg=2.0, sampler_name="euler",
                scheduler="normal", positive=parts["positive"], negative=parts["negative"],
                latent_image=latent or LATENT, denoise=1.0)
    args.update(kw)
    return run_node("KSampler", **args)[0]["samples"]


def scores_of(parts, latents, verifier=None, vae=None):
    images = (vae or parts["vae"]).decode(latents)
    return (verifier or ProbeVerifier()).score(images, "")


def out_of_memory_above(model, rows: int):
    """A clone of ``model`` that runs out of memory on calls of more than ``rows`` rows."""
    model = model.clone()

    def small_batches_only(apply_model, args):
        if args["input"].shape[0] > rows:
            raise torch.OutOfMemoryError("out of memory (test)")
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(small_batches_only)
    return model
