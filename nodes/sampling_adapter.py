"""The one place that touches ComfyUI's sampling internals.

``ComfyBackend`` implements :class:`search.backend.SearchBackend` on a GUIDER (CFGGuider for
KSampler-style graphs, BasicGuider for FLUX, ...), a SAMPLER, SIGMAS, the latent, a VAE and
a verifier. Every model call goes through the host's ``guider.sample``, so model patches,
ControlNets, hooks, masks and every model family behave as in a stock sampler node.

States are ComfyUI's "leftover" latents (what a sampler returns when stopped at sigma > 0),
so a segment's output feeds the next segment as ``latent_image`` with zero noise.
"""

from __future__ import annotations

import copy
import math
import time

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import torch

from ..search.chunking import map_chunked
from ..verifiers.base import VerifierError

WRAPPER_KEY = "noise_search"

# Denoiser evaluations per step for samplers that are not first order. The last step to
# sigma 0 of these k-diffusion samplers is a plain Euler step (one evaluation).
_SECOND_ORDER = {"heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral",
                 "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "sa_solver_pece",
                 "seeds_2"}


def sampler_name(sampler) -> str | None:
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", "")
    return name.removeprefix("sample_") if name.startswith("sample_") else None


def nfe_per_run(name: str | None, steps: int, ends_at_zero: bool = True) -> int:
    """Closed-form denoiser evaluations per candidate for ``steps`` steps of sampler ``name``."""
    if name in _SECOND_ORDER:
        return 2 * steps - (1 if ends_at_zero else 0)
    return steps


def ksampler_sigmas(model, sampler: str, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """Exactly the schedule the stock KSampler uses for these settings."""
    ks = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler,
                                 scheduler=scheduler, denoise=denoise)
    return ks.sigmas.cpu().float()


class Counter:
    """Counts denoiser evaluations (rows per guider call) and model forward rows, and checks
    for interruption before every denoiser call."""

    def __init__(self, on_call=None):
        self.nfe = 0
        self.forward = 0
        self.calls = 0
        self.on_call = on_call

    def predict_noise(self, executor, x, *args, **kwargs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.calls += 1
        self.nfe += x.shape[0]
        if self.on_call:
            self.on_call(x.shape[0])
        return executor(x, *args, **kwargs)

    def apply_model(self, executor, x, *args, **kwargs):
        self.forward += x.shape[0]
        return executor(x, *args, **kwargs)


class ComfyBackend:
    def __init__(self, guider, sampler, sigmas: torch.Tensor, latent: dict, vae, verifier,
                 condition: str = "", *, search_sigmas: torch.Tensor | None = None,
                 seed: int = 0, chunk: int = 0, on_call=None):
        # Duck-typed: any object with score(images, condition_text, early) is a verifier.
        if not callable(getattr(verifier, "score", None)):
            raise VerifierError("verifier: connect a VERIFIER (e.g. from a verifier loader node)")
        samples = latent["samples"]
        if samples.is_nested or samples.shape[0] != 1:
            raise ValueError(f"latent_image: search works on one latent at a time, got a batch of "
                             f"{samples.shape[0] if not samples.is_nested else 'nested latents'}; "
                             "use a latent with batch size 1 (candidates are made by the search)")
        if not torch.isfinite(samples).all():
            raise ValueError("latent_image contains NaN or infinite values")
        if len(sigmas) < 2:
            raise ValueError("sigmas: need at least one step (two sigma values)")
        self.counter = Counter(on_call)
        self.guider = copy.copy(guider)
        self.guider.model_options = comfy.model_patcher.create_model_options_clone(guider.model_options)
        for kind, fn in ((comfy.patcher_extension.WrappersMP.PREDICT_NOISE, self.counter.predict_noise),
                         (comfy.patcher_extension.WrappersMP.APPLY_MODEL, self.counter.apply_model)):
            comfy.patcher_extension.add_wrapper_with_key(kind, WRAPPER_KEY, fn, self.guider.model_options,
                                                         is_model_options=True)
        self.patcher = guider.model_patcher
        self.model_sampling = self.patcher.get_model_object("model_sampling")
        self.sampler, self.seed, self.vae, self.verifier = sampler, seed, vae, verifier
        self.condition = condition or ""
        self.sigmas = sigmas.cpu().float()
        self.search_sigmas = self.sigmas if search_sigmas is None else search_sigmas.cpu().float()
        self.latent = comfy.sample.fix_empty_latent_channels(self.patcher, samples)
        self.mask = latent.get("noise_mask")
        self.chunk = chunk if chunk > 0 else self.auto_chunk()
        self.euler = comfy.samplers.sampler_object("euler")
        self.sigma_max = float(self.model_sampling.sigma_max)
        self._measured: dict[tuple, int] = {}
        self.last_images: torch.Tensor | None = None
        self.timings = {"denoise": 0.0, "decode": 0.0, "score": 0.0}

    # -- sizes ------------------------------------------------------------------------------
    def auto_chunk(self, cap: int = 64) -> int:
        """Candidates per model call: as many as the free memory holds, at most ``cap``."""
        device = self.patcher.load_device
        shape = list(self.latent.shape)
        try:
            need = self.patcher.model.memory_required([2] + shape[1:])  # cond + uncond rows
        except Exception:  # noqa: BLE001 (estimate only: some models cannot size themselves)
            return 8
        free = comfy.model_management.get_free_memory(device)
        if not math.isfinite(need) or need <= 0:
            return 8
        return int(max(1, min(cap, free * 0.6 // need)))

    # -- SearchBackend ----------------------------------------------------------------------
    def schedule(self, search: bool = False) -> torch.Tensor:
        return self.search_sigmas if search else self.sigmas

    def level_sigma(self, t: float) -> float:
        if t <= 0:
            return 0.0
        sigma = float(self.model_sampling.percent_to_sigma(1.0 - min(t, 1.0)))
        # At sigma_max, EPS models switch to max-denoise noise scaling; stay just below.
        return min(sigma, self.sigma_max * (1 - 1e-4))

    def nfe(self, sigmas: torch.Tensor) -> int:
        steps = len(sigmas) - 1
        key = (steps, float(sigmas[-1]) == 0.0)
        if key in self._measured:
            return self._measured[key]
        return nfe_per_run(sampler_name(self.sampler), steps, key[1])

    def solve(self, state, noise, sigmas):
        rows = (noise if noise is not None else state).shape[0]
        start = state if state is not None else self.latent.expand(rows, *self.latent.shape[1:])
        noise = noise if noise is not None else torch.zeros_like(start)
        early_sigma = self._early_sigma(sigmas)
        before, t0 = self.counter.nfe, time.perf_counter()
        out, early = map_chunked(lambda s, n: self._solve_chunk(s, n, sigmas, early_sigma),
                                 [start, noise.to(start.dtype)], self.chunk)
        self.timings["denoise"] += time.perf_counter() - t0
        self._measured[(len(sigmas) - 1, float(sigmas[-1]) == 0.0)] = (self.counter.nfe - before) // rows
        return out, early

    def _early_sigma(self, sigmas):
        level = getattr(self.verifier, "early_level", None)
        if level is None or float(sigmas[-1]) != 0.0:
            return None
        return self.level_sigma(level)

    def _solve_chunk(self, start, noise, sigmas, early_sigma, sampler=None):
        captured = {}

        def callback(step, x0, x, total):
            # The sampler reports the x0-prediction at sigmas[step]; keep the first one at or
            # below the verifier's early level.
            if early_sigma is not None and "x0" not in captured and float(sigmas[step]) <= early_sigma:
                captured["x0"] = self.patcher.model.process_latent_out(x0.float()).cpu()

        out = self.guider.sample(noise, start, sampler or self.sampler, sigmas, denoise_mask=self.mask,
                                 callback=callback, disable_pbar=True, seed=self.seed)
        out = out.to(comfy.model_management.intermediate_device()).float()
        early = captured.get("x0")
        if early_sigma is not None and early is None:
            early = out
        return out, early

    def predict_x0(self, state, sigma):
        sigmas = torch.tensor([sigma, 0.0])
        out, _ = map_chunked(lambda s, n: self._solve_chunk(s, n, sigmas, None, self.euler),
                             [state, torch.zeros_like(state)], self.chunk)
        return out

    def renoise(self, state, sigma_from, sigma_to, generator):
        def alpha_scale(s):
            s = torch.tensor([s])
            ms = self.model_sampling
            return float(ms.noise_scaling(s, torch.zeros(1), torch.ones(1))), \
                float(ms.noise_scaling(s, torch.ones(1), torch.zeros(1)))
        a_j, s_j = alpha_scale(sigma_from)
        a_k, s_k = alpha_scale(sigma_to)
        ratio = (a_k * s_j) / (a_j * s_k)
        c = math.sqrt(max(0.0, 1.0 - ratio * ratio))
        eps = torch.randn(state.shape, generator=generator, dtype=torch.float32)
        return state, (c * eps).to(state.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        images = self.vae.decode(latents)
        self.timings["decode"] += time.perf_counter() - t0
        return images

    @torch.no_grad()
    def score(self, latents, early=None):
        # No autograd graph even outside ComfyUI's inference mode (scripts, tests): the pool
        # keeps scores across rounds, and a graph behind them would keep every round's
        # decoder and verifier activations alive.
        chunk = max(1, min(self.chunk, getattr(self.verifier, "max_batch", 64)))

        def score_chunk(lat, ear):
            images = self.decode(lat)
            early_images = self.decode(ear) if ear is not None else None
            t0 = time.perf_counter()
            scores = frame_scores(self.verifier, images, self.condition, early_images)
            self.timings["score"] += time.perf_counter() - t0
            return scores, images

        if callable(getattr(self.verifier, "component_scores", None)) and \
                getattr(self.verifier, "relative_scores", False):
            return self._relative_score(latents, early, chunk)
        scores, images = map_chunked(score_chunk, [latents, early], chunk)
        self.last_images = images
        return scores

    def _relative_score(self, latents, early, chunk):
        """Rank ensembles only compare candidates scored together. Their members' raw scores
        are absolute, so keep every candidate's member scores for the whole search and rank
        each new candidate against all seen so far, as a fraction of the pool (comparable
        across rounds; exact for a single round, as in the paper's best-of-N)."""
        def components(lat, ear):
            images = self.decode(lat)
            early_images = self.decode(ear) if ear is not None else None
            flat, flat_early = images, early_images
            if images.ndim == 5:  # video: member scores are frame means, as in frame_scores
                b, t = images.shape[:2]
                flat = images.reshape(b * t, *images.shape[2:])
                flat_early = early_images.reshape(b * t, *early_images.shape[2:]) if early is not None else None
            comp = self.verifier.component_scores(flat, self.condition, flat_early)
            if images.ndim == 5:
                comp = comp.reshape(comp.shape[0], b, t).mean(2)
            return comp.T, images

        comps, images = map_chunked(components, [latents, early], chunk)
        self.last_images = images
        seen = getattr(self, "_components", None)
        self._components = comps if seen is None else torch.cat([seen, comps])
        ranks = self.verifier.combine(self._components.T)
        return (ranks[-comps.shape[0]:] / self._components.shape[0]).float()


def frame_scores(verifier, images, condition, early=None) -> torch.Tensor:
    """Score decoded images; a video candidate ([B, T, H, W, C]) scores the mean over its frames."""
    if images.ndim == 5:
        b, t = images.shape[:2]
        flat_early = early.reshape(b * t, *early.shape[2:]) if early is not None else None
        s = verifier.score(images.reshape(b * t, *images.shape[2:]), condition, flat_early)
        out = s.reshape(b, t).mean(1)
    else:
        out = verifier.score(images, condition, early)
    return out
