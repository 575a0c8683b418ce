"""The one place that touches ComfyUI's sampling internals.

``ComfyBackend`` implements :class:`search.backend.SearchBackend` on a GUIDER (CFGGuider for
KSampler-style graphs, BasicGuider for FLUX, ...), a SAMPLER, SIGMAS, the latent and a
``Scorer`` (VAE + verifier). Every model call goes through the host's ``guider.sample``, so
model patches, ControlNets, hooks, masks and every model family behave as in a stock
sampler node. ``ksampler_parts`` builds what the stock KSampler builds from its widgets.

States are ComfyUI's "leftover" latents (what a sampler returns when stopped at sigma > 0),
so a segment's output feeds the next segment as ``latent_image`` with zero noise.

Per-candidate randomness: candidate ``id`` of a search with seed ``S`` owns the seed
``S + id``. Its per-step noise (ancestral and SDE samplers) is drawn from that seed alone,
as the stock samplers draw it for a batch of one, so results do not depend on how
candidates are chunked, and a winner replays with a stock sampler on a batch of one.

Latent batches: a latent batch of B is B independent problems (search/lockstep.py batches
their calls). Row-wise calls take ``problems``, the problem of every row. Problem b's
candidate ``id`` is what that latent gives searched alone (``LatentFromBatch(b)``), i.e. the
stock KSampler's sample of ``LatentFromBatch(b)`` at seed ``S + id``: initial noise
``prepare_noise(batch, S + id, batch_index)[b]`` (element b of the batch's noise, as the stock
samplers select it), per-step noise the batch-of-one draw at that seed; its conditioning, noise
mask and verifier condition are the batch's element b (tiled as the stock samplers tile
shorter batches). So a problem's result never depends on B, for every sampler.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import re
import time

import comfy.k_diffusion.sampling as k_sampling
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import torch

from ..search.backend import Scores
from ..search.chunking import map_chunked
from ..search.scoring import Scorer
from .host_compat import free_memory

WRAPPER_KEY = "noise_search"
SEED_MOD = 2**64
# Keys newer hosts add to latents (EmptyLatentImage); stock samplers consume and drop them.
DOWNSCALE_KEYS = ("downscale_ratio_spacial", "downscale_ratio_temporal")


def step_seed(seed: int, candidate_id: int) -> int:
    return (int(seed) + int(candidate_id)) % SEED_MOD


# -- what the stock nodes build ---------------------------------------------------------
def fixed_latent(model_patcher, latent: dict) -> torch.Tensor:
    """The latent exactly as the stock samplers see it: an empty latent gets the model's
    channel count (SD3/FLUX: 16) and, on hosts that pass them, its downscale ratios."""
    fix = comfy.sample.fix_empty_latent_channels
    samples = latent["samples"]
    if any(k in inspect.signature(fix).parameters for k in DOWNSCALE_KEYS):
        return fix(model_patcher, samples, *(latent.get(k) for k in DOWNSCALE_KEYS))
    return fix(model_patcher, samples)


def check_parts_fit(model_patcher, latent: torch.Tensor, vae) -> None:
    """Refuse a latent or a VAE that does not fit the model, naming the input, before sampling."""
    channels = model_patcher.get_model_object("latent_format").latent_channels
    if not latent.is_nested and latent.shape[1] != channels:
        raise ValueError(f"latent_image: has {latent.shape[1]} channels, but this model works on {channels}-channel "
                         "latents; make it with the model's own empty-latent node (EmptySD3LatentImage for "
                         "SD3/FLUX) or VAEEncode with the model's VAE")
    vae_channels = getattr(vae, "latent_channels", None)
    # A pixel-space VAE (the latent is the image) hands any channel count through unchanged.
    pixel_space = type(getattr(vae, "first_stage_model", None)).__name__ == "PixelspaceConversionVAE"
    if isinstance(vae_channels, int) and vae_channels != channels and not pixel_space:
        raise ValueError(f"vae: decodes {vae_channels}-channel latents, but this model makes {channels}-channel "
                         "latents; connect the VAE that belongs to the model")


def ksampler_sigmas(model, sampler: str, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """Exactly the schedule the stock KSampler uses for these settings."""
    ks = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler,
                                 scheduler=scheduler, denoise=denoise)
    return ks.sigmas.cpu().float()


def ksampler_parts(model, seed, steps, search_steps, cfg, sampler_name, scheduler, positive, negative,
                   denoise, start_at_step=0, end_at_step=10000):
    """(noise, guider, sampler, sigmas, search_sigmas) as the stock KSampler builds them; with
    start/end steps, the segment KSamplerAdvanced samples (leftover noise returned)."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = ksampler_sigmas(model, sampler_name, scheduler, steps, denoise)
    if start_at_step or end_at_step < steps:
        if not start_at_step < min(end_at_step, steps):
            raise ValueError(f"start_at_step ({start_at_step}) must be below end_at_step ({end_at_step}) and "
                             f"steps ({steps}): the segment searched would have no step")
        if search_steps and search_steps != steps:
            raise ValueError("search_steps: a cheaper search schedule is not supported when searching a segment "
                             "(start_at_step / end_at_step); set search_steps to 0")
        sigmas = sigmas[start_at_step: end_at_step + 1]
    search_sigmas = (ksampler_sigmas(model, sampler_name, scheduler, search_steps, denoise)
                     if search_steps and search_steps != steps else None)
    return CandidateNoise(seed), guider, comfy.samplers.sampler_object(sampler_name), sigmas, search_sigmas


def draft_guider(guider, draft_model):
    """The guider with ``draft_model`` in place of its model: the same conditioning, cfg and guider
    kind (CFGGuider, BasicGuider, ...), so a draft samples exactly as the main model would. Refuses a
    draft whose latents are not the main model's (its samples could not be judged alike, nor its
    noises regenerated by the main model)."""
    if not hasattr(draft_model, "get_model_object"):
        raise ValueError("draft: connect a MODEL (e.g. the main model through EasyCache or LazyCache, or a "
                         "distilled LoRA of it)")
    main_format = type(guider.model_patcher.get_model_object("latent_format"))
    draft_format = type(draft_model.get_model_object("latent_format"))
    if main_format is not draft_format:
        raise ValueError(f"draft: the draft model works on {draft_format.__name__} latents, the main model on "
                         f"{main_format.__name__}; a draft must be of the main model's family (the same latents)")
    draft = copy.copy(guider)
    draft.model_patcher = draft_model
    draft.model_options = draft_model.model_options
    return draft


class CandidateNoise:
    """A NOISE whose row i is the stock KSampler's noise for seed ``seed + i`` on a batch of one,
    so candidate i replays with a stock KSampler at that seed. Given a latent batch of one it
    yields ``count`` rows (SamplerCustomAdvanced then samples every candidate at once)."""

    per_candidate_seed = True

    def __init__(self, seed: int, count: int | None = None):
        self.seed, self.count = int(seed), count  # None: as many rows as the latent batch has

    def generate_noise(self, input_latent):
        samples = input_latent["samples"]
        rows = self.count if samples.shape[0] == 1 and self.count else samples.shape[0]
        return torch.cat([comfy.sample.prepare_noise(samples[:1], step_seed(self.seed, i)) for i in range(rows)])

    def candidates(self, latent: torch.Tensor, count: int, batch_index=None) -> torch.Tensor:
        """[B, count, ...]: problem b's candidate i is element b of the stock KSampler's noise for
        the whole batch at seed ``seed + i`` (a ``batch_index`` tag selects elements as stock does)."""
        return torch.stack([comfy.sample.prepare_noise(latent, step_seed(self.seed, i), batch_index)
                            for i in range(count)], dim=1)


class ReplayNoise:
    """A NOISE that regenerates search winners with SamplerCustomAdvanced: their initial noises
    (one per problem) and (``seed``) the seed of the first one's per-step noise. On the latent
    batch the search ran on it gives every winner's noise; on a batch of one it gives the
    winner of the problem its ``batch_index`` tag names (LatentFromBatch), else the first."""

    def __init__(self, noise: torch.Tensor, seed: int):
        self.noise, self.seed = noise.cpu(), int(seed)

    def generate_noise(self, input_latent):
        samples = input_latent["samples"]
        winners = self.noise.shape[0]
        if samples.shape[0] == winners:
            noise = self.noise
        elif samples.shape[0] == 1:
            tag = (input_latent.get("batch_index") or [0])[0]
            noise = self.noise[tag: tag + 1] if 0 <= tag < winners else None
            if noise is None:
                raise ValueError(f"latent_image: its batch_index {tag} names no winner of this search "
                                 f"({winners} problems)")
        else:
            raise ValueError(f"latent_image: this replay noise holds {winners} search winner(s); use the latent "
                             f"the search ran on (batch size {winners}) or one element of it, got a batch of "
                             f"{samples.shape[0]}")
        if samples[:1].numel() != noise[:1].numel():
            raise ValueError(f"latent_image: shape {tuple(samples.shape)} does not fit the winner's noise "
                             f"{tuple(self.noise.shape[1:])}; replay on the latent the search ran on")
        return noise.reshape(samples.shape).to(samples.dtype)


def candidate_noise(noise_source, latent: torch.Tensor, count: int, batch_index=None) -> torch.Tensor:
    """[B, count, ...] candidate noises of every problem (latent element) from any NOISE object,
    for the latent as the model will see it. NoiseCandidates (and the KSampler-style nodes):
    problem b's candidate i is element b of the stock noise of the batch at seed + i. Any other
    NOISE is asked for ``count`` x B rows, the batch repeated once per candidate: problem b's
    candidate i is its row i·B + b (with B = 1, row i)."""
    problems = latent.shape[0]
    if callable(getattr(noise_source, "candidates", None)) and getattr(noise_source, "per_candidate_seed", False):
        return noise_source.candidates(latent, count, batch_index).float()
    rows = latent[:1].expand(count, *latent.shape[1:]) if problems == 1 else latent.repeat(count, *[1] * (latent.ndim - 1))
    out = noise_source.generate_noise({"samples": rows})
    if out.shape[0] < count * problems or out.shape[1:] != latent.shape[1:]:
        raise ValueError(f"noise: produced shape {tuple(out.shape)}, expected {count * problems} noises of shape "
                         f"{tuple(latent.shape[1:])}")
    return out[: count * problems].reshape(count, problems, *latent.shape[1:]).transpose(0, 1).float()


# -- cost measurement and per-candidate noise --------------------------------------------
def sampler_name(sampler) -> str | None:
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", "")
    for prefix, suffix in (("sample_", ""), ("", "_function")):
        if name.startswith(prefix) and name.endswith(suffix) and (prefix or suffix):
            return name[len(prefix): len(name) - len(suffix)]
    return name or type(sampler).__name__


def sampler_functions(fn, _seen=None):
    """``fn`` and the k-diffusion sampler functions it calls (wrappers such as
    dpmpp_2m_sde_heun or the host's dpm_adaptive_function delegate to them)."""
    seen = _seen if _seen is not None else set()
    if fn is None or id(fn) in seen:
        return
    seen.add(id(fn))
    yield fn
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return
    for name in re.findall(r"\b(sample_\w+)\(", source):
        yield from sampler_functions(getattr(k_sampling, name, None), seen)


def step_noise_kind(fn) -> tuple[str, bool] | None:
    """How a sampler function draws per-step noise when given none: ("gaussian", _) for
    k-diffusion's default sampler, ("brownian", on_cpu) for a Brownian tree, None when it
    takes no noise sampler (deterministic, or not a k-diffusion function)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if not any(p.name == "noise_sampler" or p.kind is p.VAR_KEYWORD for p in params):
        return None
    for f in sampler_functions(fn):
        try:
            source = inspect.getsource(f)
        except (OSError, TypeError):
            continue
        if "BrownianTreeNoiseSampler(" in source:
            return ("brownian", "cpu=False" not in source)
    return ("gaussian", True)


def adaptive(fn) -> bool:
    """Whether the sampler chooses its own steps (an error-controlled solver has tolerances)."""
    for f in sampler_functions(fn):
        try:
            if "rtol" in inspect.signature(f).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def rows_noise_sampler(kind: tuple[str, bool], x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]):
    """Per-step noise whose row j is what the stock sampler draws for seed ``seeds[j]`` on a batch
    of one. Each distinct seed draws once per step, as the stock sampler does."""
    distinct = list(dict.fromkeys(seeds))
    like = x[:1]  # shape, dtype and device of the stock sampler's batch of one
    if kind[0] == "brownian":
        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        trees = {s: k_sampling.BrownianTreeNoiseSampler(like, sigma_min, sigma_max, seed=s, cpu=kind[1])
                 for s in distinct}

        def draw(sigma, sigma_next):
            full = {s: tree(sigma, sigma_next) for s, tree in trees.items()}
            return torch.cat([full[s] for s in seeds])
        return draw
    gens = {s: torch.Generator(device=x.device).manual_seed(s) for s in distinct}

    def draw(sigma, sigma_next):
        full = {s: torch.randn(like.shape, dtype=x.dtype, layout=x.layout, device=x.device, generator=g)
                for s, g in gens.items()}
        return torch.cat([full[s] for s in seeds])
    return draw


class Counter:
    """Counts denoiser evaluations (rows per guider call) and model forward rows, in all and per
    problem, and checks for interruption before every denoiser call. While ``stub`` is set, the
    conditioned predictions are answered by it (a cost probe): guidance, post-CFG hooks and the
    sampler run as usual, the model does not, and nothing is counted as spent."""

    def __init__(self, on_call=None, problems: int = 1):
        self.nfe = 0
        self.forward = 0
        self.calls = 0
        self.nfe_by_problem = [0] * problems
        self.forward_by_problem = [0] * problems
        self.rows: torch.Tensor | None = None  # the problem of every row of the running call
        self.on_call = on_call
        self.stub = None

    def _share(self, counts: list[int], n: int) -> None:
        rows = self.rows
        if rows is None or len(rows) == 0 or n % len(rows):
            counts[0] += n
            return
        for p, c in enumerate(torch.bincount(rows, minlength=len(counts)).tolist()):
            counts[p] += c * (n // len(rows))

    def predict_noise(self, executor, x, *args, **kwargs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.calls += 1
        if self.stub is None:
            self.nfe += x.shape[0]
            self._share(self.nfe_by_problem, x.shape[0])
            if self.on_call:
                self.on_call(x.shape[0])
        return executor(x, *args, **kwargs)

    def calc_cond_batch(self, executor, model, conds, x, *args, **kwargs):
        # The probe answers here, below guidance (so CFG++ samplers' post-CFG hooks run) and
        # above the model (so no model wrapper, ControlNet or forward pass runs).
        if self.stub is not None:
            return [self.stub(x) for _ in conds]
        return executor(model, conds, x, *args, **kwargs)

    def apply_model(self, executor, x, *args, **kwargs):
        self.forward += x.shape[0]
        self._share(self.forward_by_problem, x.shape[0])
        return executor(x, *args, **kwargs)


# -- conditioning batches ----------------------------------------------------------------
def _batched(value) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] > 1


def _cond_has_batch(cond: dict) -> bool:
    """Whether one converted cond (guider.original_conds entry) carries a batch of tensors."""
    return any(_batched(v) for v in cond.values()) or \
        any(_batched(getattr(c, "cond", None)) for c in (cond.get("model_conds") or {}).values())


def _cond_rows(cond: dict, problems: torch.Tensor) -> dict:
    """One converted cond for rows of these problems: every tensor with a batch (the prompt's
    embedding, pooled output, masks, concat latents, and model conds made before sampling)
    gives row j its element problems[j], tiled as repeat_to_batch_size tiles a shorter batch."""
    def rows(x: torch.Tensor) -> torch.Tensor:
        return x[(problems % x.shape[0]).to(x.device)]

    out = {}
    for key, value in cond.items():
        if key == "model_conds" and isinstance(value, dict):
            value = {name: c._copy_with(rows(c.cond)) if _batched(getattr(c, "cond", None)) else c
                     for name, c in value.items()}
        elif _batched(value):
            value = rows(value)
        out[key] = value
    return out


# -- the backend -------------------------------------------------------------------------
class ComfyBackend:
    def __init__(self, guider, sampler, sigmas: torch.Tensor, latent: dict, scorer: Scorer, *,
                 search_sigmas: torch.Tensor | None = None, seed: int = 0, chunk: int = 0, on_call=None):
        if len(sigmas) < 2:
            raise ValueError("sigmas: need at least one step (two sigma values)")
        self.patcher = guider.model_patcher
        self.latent = fixed_latent(self.patcher, latent)
        self.problems = 1 if self.latent.is_nested else self.latent.shape[0]
        tags = latent.get("batch_index")
        # A batch_index tag (LatentFromBatch) selects noises as the stock samplers do.
        self.batch_index = list(tags) if tags is not None and len(tags) == self.problems else None
        self.counter = Counter(on_call, self.problems)
        self.guider = copy.copy(guider)
        self.guider.model_options = comfy.model_patcher.create_model_options_clone(guider.model_options)
        wrappers = comfy.patcher_extension.WrappersMP
        for kind, fn in ((wrappers.PREDICT_NOISE, self.counter.predict_noise),
                         (wrappers.CALC_COND_BATCH, self.counter.calc_cond_batch),
                         (wrappers.APPLY_MODEL, self.counter.apply_model)):
            comfy.patcher_extension.add_wrapper_with_key(kind, WRAPPER_KEY, fn, self.guider.model_options,
                                                         is_model_options=True)
        # Conditioning with a batch (one prompt per latent): each row gets its problem's element.
        self.cond_batched = any(_cond_has_batch(c) for conds in getattr(self.guider, "original_conds", {}).values()
                                for c in conds or [])
        self.model_sampling = self.patcher.get_model_object("model_sampling")
        self.sampler, self.seed, self.scorer = sampler, int(seed), scorer
        self.relative = scorer.relative
        self.noise_kind = step_noise_kind(getattr(sampler, "sampler_function", None))
        self.sigmas = sigmas.cpu().float()
        self.search_sigmas = self.sigmas if search_sigmas is None else search_sigmas.cpu().float()
        self.mask = latent.get("noise_mask")
        self.chunk = chunk if chunk > 0 else self.auto_chunk()
        if adaptive(getattr(sampler, "sampler_function", None)):
            # An adaptive solver sizes its steps from the error of the whole batch: one
            # candidate per call keeps each candidate's result its own.
            self.chunk = 1
        self.euler = comfy.samplers.sampler_object("euler")
        self.sigma_max = float(self.model_sampling.sigma_max)
        self.sigma_min = float(self.model_sampling.sigma_min)
        self._costs: dict[tuple, tuple[int, bool]] = {}
        self._resumable: dict[tuple, bool] = {}
        self._stochastic: bool | None = None
        self._levels: dict[float, float] = {}
        self._noise_draws: dict[int, torch.Tensor] = {}
        self.timings = {"denoise": 0.0}

    # -- sizes ------------------------------------------------------------------------------
    def auto_chunk(self, cap: int = 64) -> int:
        """Candidates per model call: as many as the free memory holds, at most ``cap``."""
        device = self.patcher.load_device
        shape = list(self.latent.shape)
        try:
            need = self.patcher.model.memory_required([2] + shape[1:])  # cond + uncond rows
        except Exception:  # noqa: BLE001 (estimate only: some models cannot size themselves)
            return 8
        free = free_memory(self.patcher, device)
        if not math.isfinite(need) or need <= 0:
            return 8
        return int(max(1, min(cap, free * 0.6 // need)))

    def keep_chunk(self, chunk: int) -> None:
        """An out-of-memory halving sticks for the rest of the search."""
        self.chunk = chunk

    # -- levels ----------------------------------------------------------------------------
    def _alpha_scale(self, sigma: float) -> tuple[float, float]:
        s = torch.tensor([float(sigma)])
        ms = self.model_sampling
        return (float(ms.noise_scaling(s, torch.zeros(1), torch.ones(1))),
                float(ms.noise_scaling(s, torch.ones(1), torch.zeros(1))))

    def level_sigma(self, t: float) -> float:
        """Sigma whose noise-to-signal ratio is t / (1 - t) (see search/backend.py): sigma = t
        on flow models, t / (1 - t) on noise-prediction models, clamped to the model's range."""
        t = float(t)
        if t not in self._levels:
            self._levels[t] = self._level_sigma(t)
        return self._levels[t]

    def _level_sigma(self, t: float) -> float:
        if t <= 0:
            return 0.0
        top = self.sigma_max * (1 - 1e-4)  # at sigma_max EPS models switch to max-denoise scaling
        alpha, scale = self._alpha_scale(top)
        if not scale > 0 or not alpha > 0:
            raise ValueError(f"model: its sampling ({type(self.model_sampling).__name__}) adds no noise at "
                             "sigma_max; noise levels cannot be searched on it")
        if t >= 1:
            return top
        target = t / (1 - t)
        lo, hi = self.sigma_min, top
        for _ in range(60):  # bisection: the ratio grows with sigma for every family
            mid = 0.5 * (lo + hi)
            a, s = self._alpha_scale(mid)
            lo, hi = (mid, hi) if s / a < target else (lo, mid)
        return min(max(0.5 * (lo + hi), self.sigma_min), top)

    def sigma_level(self, sigma: float) -> float:
        """The noise level of ``sigma`` (the inverse of level_sigma): its noise-to-signal ratio
        s / a is t / (1 - t), so t = s / (a + s)."""
        if sigma <= 0:
            return 0.0
        alpha, scale = self._alpha_scale(sigma)
        return scale / (alpha + scale)

    def early_sigma(self, sigmas: torch.Tensor) -> float | None:
        """Where the verifier's early x0 is captured on a run along ``sigmas``, if anywhere."""
        level = self.scorer.early_level
        if level is None or float(sigmas[-1]) != 0.0:
            return None
        return self.level_sigma(level)

    # -- SearchBackend ----------------------------------------------------------------------
    def schedule(self, search: bool = False) -> torch.Tensor:
        return self.search_sigmas if search else self.sigmas

    def nfe(self, sigmas: torch.Tensor) -> int:
        """Denoiser evaluations per candidate along ``sigmas``, measured by running the sampler
        on one row with the denoiser answered by a stub (no model evaluation): exact for every
        sampler whose step count does not depend on the model's output."""
        cost, _ = self.cost(sigmas)
        early = self.early_sigma(sigmas)
        return cost + (1 if early is not None and early < float(sigmas[0]) else 0)

    def cost(self, sigmas: torch.Tensor) -> tuple[int, bool]:
        """(denoiser calls per row, whether that count is fixed by the schedule)."""
        key = tuple(sigmas.tolist())
        if key not in self._costs:
            counts = [self._probe(sigmas, stub) for stub in (torch.zeros_like, lambda x: x * 0.5)]
            fixed = counts[0] == counts[1] and not adaptive(getattr(self.sampler, "sampler_function", None))
            self._costs[key] = (max(counts), fixed)
        return self._costs[key]

    def _probe(self, sigmas: torch.Tensor, stub) -> int:
        calls = self.counter.calls
        one = self.latent[:1]
        self._stub_run(sigmas, stub, one, torch.zeros_like(one), 0)
        return self.counter.calls - calls

    def _stub_run(self, sigmas, stub, start, noise, candidate: int) -> torch.Tensor:
        """One row sampled along ``sigmas`` with the denoiser answered by ``stub``."""
        self.counter.stub = stub
        try:
            first = torch.zeros(1, dtype=torch.long)
            with self._rows(first):
                out = self._guider(first).sample(noise, start, self._sampler([candidate]), sigmas,
                                                 denoise_mask=self._mask(first), disable_pbar=True, seed=self.seed)
        finally:
            self.counter.stub = None
        return out.float().cpu()

    @staticmethod
    def _probe_stub(x):
        # Depends on its input non-linearly, so a multistep sampler's history shows.
        return torch.tanh(x) * 0.5

    @property
    def stochastic(self) -> bool:
        """Whether the sampler injects per-step noise: two candidate ids of one initial noise
        part ways (measured on a stub denoiser; a sampler that takes a noise sampler but is set
        to eta 0 is deterministic)."""
        if self._stochastic is None:
            start, noise = self._probe_inputs()
            runs = [self._stub_run(self.sigmas, self._probe_stub, start, noise, c) for c in (0, 1)]
            self._stochastic = not torch.equal(runs[0], runs[1])
        return self._stochastic

    def _probe_inputs(self):
        one = self.latent[:1]
        noise = torch.randn(one.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
        return one, noise.to(one.dtype)

    def resumable(self, sigmas: torch.Tensor, at: list[int]) -> bool:
        """Whether solving along ``sigmas`` in pieces split at steps ``at`` (each continuing the
        last one's state, under fresh ids) gives the run in one piece: measured on a stub
        denoiser. False for samplers with per-step noise or a multistep history."""
        if not at:
            return True
        key = (tuple(sigmas.tolist()), tuple(at))
        if key not in self._resumable:
            start, noise = self._probe_inputs()
            whole = self._stub_run(sigmas, self._probe_stub, start, noise, 0)
            bounds, state = [0, *at, len(sigmas) - 1], None
            for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                state = self._stub_run(sigmas[a : b + 1], self._probe_stub, start if state is None else state,
                                       noise if state is None else torch.zeros_like(noise), r)
            self._resumable[key] = bool(torch.allclose(whole, state, rtol=1e-4, atol=1e-5))
        return self._resumable[key]

    # -- rows of several problems ------------------------------------------------------------
    def _problems(self, problems, rows: int) -> torch.Tensor:
        """The problem of every row as a tensor (all 0 when not given)."""
        if problems is None:
            return torch.zeros(rows, dtype=torch.long)
        return torch.as_tensor(problems, dtype=torch.long).reshape(-1)

    @contextlib.contextmanager
    def _rows(self, problems: torch.Tensor):
        """Tell the counter whose rows the model call inside the block evaluates."""
        before, self.counter.rows = self.counter.rows, problems
        try:
            yield
        finally:
            self.counter.rows = before

    def _guider(self, problems: torch.Tensor):
        """The guider for rows of these problems: with a conditioning batch, each row gets its
        problem's element (as the stock samplers give element b of a batch its element b)."""
        if not self.cond_batched:
            return self.guider
        guider = copy.copy(self.guider)
        guider.original_conds = {k: [_cond_rows(c, problems) for c in conds or []]
                                 for k, conds in self.guider.original_conds.items()}
        return guider

    def _mask(self, problems: torch.Tensor):
        """The noise mask for rows of these problems (a mask batch: each row its problem's mask)."""
        mask = self.mask
        if mask is not None and self.latent.ndim == 5:
            # Video: the host reads a 5-d mask [B, 1, T, H, W] as one mask per latent (an image-video
            # node's, e.g. Wan22ImageToVideoLatent, LTXVImgToVideo) and anything smaller as one mask
            # for all (its leading dims as frames).
            return mask[(problems % mask.shape[0]).to(mask.device)] if mask.ndim == 5 and mask.shape[0] > 1 else mask
        if mask is None or self.latent.ndim != 4:
            return mask
        flat = mask.reshape(-1, 1, *mask.shape[-2:])
        return flat[problems % flat.shape[0]] if flat.shape[0] > 1 else mask

    def _sampler(self, ids):
        """The sampler with each row's per-step noise drawn from its candidate's own seed, as the
        stock sampler draws it for a batch of one (whatever problem of a batch the row is of:
        a problem gets what its latent gets searched alone)."""
        fn = getattr(self.sampler, "sampler_function", None)
        if self.noise_kind is None:
            return self.sampler
        seeds, kind = [step_seed(self.seed, i) for i in ids], self.noise_kind

        def sampler_function(model, x, sigmas, *args, **kwargs):
            kwargs["noise_sampler"] = rows_noise_sampler(kind, x, sigmas, seeds)
            return fn(model, x, sigmas, *args, **kwargs)

        rows = copy.copy(self.sampler)
        rows.sampler_function = sampler_function
        return rows

    def solve(self, state, noise, sigmas, ids, problems=None):
        return self._run(state, noise, sigmas, ids, problems, self.early_sigma(sigmas))

    def advance(self, state, noise, sigmas, ids, problems=None):
        """``solve`` returning the x0-prediction of the sampler's last denoiser call (its
        ``denoised``, as the sampler's callback reports it): no model call of its own."""
        return self._run(state, noise, sigmas, ids, problems, "last")

    def _run(self, state, noise, sigmas, ids, problems, capture):
        rows = len(ids)
        problems = self._problems(problems, rows)
        if state is not None:
            start = state
        elif self.problems == 1:
            start = self.latent.expand(rows, *self.latent.shape[1:])
        else:
            start = self.latent[problems]
        noise = noise if noise is not None else torch.zeros_like(start)
        ids = torch.tensor(ids, dtype=torch.long)
        t0 = time.perf_counter()
        out, extra = map_chunked(lambda s, n, i, p: self._solve_chunk(s, n, sigmas, i.tolist(), p, capture),
                                 [start, noise.to(start.dtype), ids, problems], self.chunk,
                                 on_shrink=self.keep_chunk)
        self.timings["denoise"] += time.perf_counter() - t0
        return out, extra

    def _solve_chunk(self, start, noise, sigmas, ids, problems, capture):
        """One model-call chunk; ``capture``: "last" for the last x0-prediction, a sigma for the
        early x0 at that level, None for nothing."""
        at = {}

        def callback(step, x0, x, total):
            # "last": every step's prediction, the last one stays. A level: the last point of
            # the trajectory above it (or the first one when the schedule starts below it).
            if capture == "last" or (capture is not None and (float(sigmas[step]) > capture or step == 0)):
                at.update(step=step, x0=x0, x=x)

        with self._rows(problems):
            out = self._guider(problems).sample(noise, start, self._sampler(ids), sigmas,
                                                denoise_mask=self._mask(problems), callback=callback,
                                                disable_pbar=True, seed=self.seed)
        out = out.to(comfy.model_management.intermediate_device()).float()
        if capture is None:
            return out, None
        if capture == "last":
            if "x0" not in at:
                raise ValueError(f"sampler: {sampler_name(self.sampler)} does not report its x0-predictions "
                                 "(no step callback); this search judges them mid-trajectory. Choose another "
                                 "sampler (euler, euler_ancestral, dpmpp_2m, ...)")
            x0 = self.patcher.model.process_latent_out(at["x0"].float())
            return out, x0.to(comfy.model_management.intermediate_device())
        return out, self._early_x0(at, sigmas, capture, problems)

    def _early_x0(self, at: dict, sigmas, level: float, problems: torch.Tensor) -> torch.Tensor:
        """The x0-prediction at exactly sigma ``level``: an Euler step from the last trajectory
        point above it to ``level`` (exact on the straight line through that point's x0), then
        one denoiser call there. The trajectory itself is not changed."""
        sigma = float(sigmas[at["step"]])
        inner = self.patcher.model
        if sigma <= level:  # the run starts below the level: its first prediction is the earliest
            return inner.process_latent_out(at["x0"].float()).to(comfy.model_management.intermediate_device())
        x0 = at["x0"].float()
        x_level = x0 + (level / sigma) * (at["x"].float() - x0)
        state = inner.process_latent_out(self.model_sampling.inverse_noise_scaling(torch.tensor(level), x_level))
        return self.predict_x0(state.to(comfy.model_management.intermediate_device()), level, problems)

    def predict_x0(self, state, sigma, problems=None):
        sigmas = torch.tensor([sigma, 0.0])

        def one_step(s, n, p):
            with self._rows(p):
                out = self._guider(p).sample(n, s, self.euler, sigmas, denoise_mask=self._mask(p), disable_pbar=True,
                                             seed=self.seed)
            return out.to(comfy.model_management.intermediate_device()).float()

        return map_chunked(one_step, [state, torch.zeros_like(state), self._problems(problems, state.shape[0])],
                           self.chunk, on_shrink=self.keep_chunk)[0]

    def initial_noise(self, ids, problem: int = 0) -> torch.Tensor:
        """The stock KSampler's initial noise at seed + id for problem ``problem`` (element
        ``problem`` of the batch's noise, as NoiseCandidates gives a search its first ones)."""
        return torch.stack([self._batch_noise(int(i))[problem] for i in ids]).float()

    def _batch_noise(self, candidate: int) -> torch.Tensor:
        """The stock noise of the whole latent batch at seed + ``candidate``, drawn once for every
        problem that asks for it (problems of a batch run in step, so they ask for the same ids
        about the same time; the last few draws are kept)."""
        if candidate not in self._noise_draws:
            if len(self._noise_draws) >= 8:
                self._noise_draws.pop(next(iter(self._noise_draws)))
            self._noise_draws[candidate] = comfy.sample.prepare_noise(self.latent, step_seed(self.seed, candidate),
                                                                      self.batch_index)
        return self._noise_draws[candidate]

    def renoise(self, state, sigma_from, sigma_to, generator):
        a_j, s_j = self._alpha_scale(sigma_from)
        a_k, s_k = self._alpha_scale(sigma_to)
        ratio = (a_k * s_j) / (a_j * s_k)
        c = math.sqrt(max(0.0, 1.0 - ratio * ratio))
        eps = torch.randn(state.shape, generator=generator, dtype=torch.float32)
        return state, (c * eps).to(state.dtype)

    def score(self, latents, early=None, problems=None) -> Scores:
        return self.scorer(latents, early, self.chunk, problems)

    def compare(self, values: torch.Tensor) -> torch.Tensor:
        return self.scorer.compare(values)
