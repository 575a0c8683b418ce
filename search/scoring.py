"""The one scoring path: decode (if needed) and verify in chunks, for the search's ComfyUI
backend and for VerifierScore alike; checks of an image batch to score, and turning scores
into a choice.

Host-free (torch only, no verifier imports): ``Scorer`` takes any VAE with ``decode`` (None for
images that are decoded already) and any verifier with ``score`` (duck-typed, as verifiers/
defines them). Bad input raises ``ScoringError``, a ValueError naming the input.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .backend import Scores
from .chunking import frames_chunk, map_chunked


class ScoringError(ValueError):
    """Bad input to scoring, with a message that names the input and what is valid."""


class Scorer:
    """Decodes latents and verifies them in chunks: [N, V] component scores (V = 1 for a plain
    verifier, one per member for a rank ensemble) and the decoded images."""

    def __init__(self, vae, verifier, condition: str | list[str] = ""):
        # Duck-typed: any object with score(images, condition_text, early) is a verifier.
        if not callable(getattr(verifier, "score", None)):
            raise ScoringError("verifier: connect a VERIFIER (e.g. from a verifier loader node)")
        # One condition for every problem, or one per problem (element b of a latent batch).
        self.conditions = [c or "" for c in condition] if isinstance(condition, list) else [condition or ""]
        self.vae, self.verifier, self.condition = vae, verifier, self.conditions[0]
        self.relative = bool(getattr(verifier, "relative_scores", False)) and \
            callable(getattr(verifier, "component_scores", None))
        # A verifier whose scores depend on the batch but that cannot give per-member components
        # must see the whole batch at once.
        self.whole_batch = bool(getattr(verifier, "relative_scores", False)) and not self.relative
        self.early_level = getattr(verifier, "early_level", None)
        self.timings = {"decode": 0.0, "score": 0.0}

    @property
    def max_batch(self) -> int:
        return max(1, int(getattr(self.verifier, "max_batch", 64)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents  # decoded already (VerifierScore's images)
        t0 = time.perf_counter()
        images = self.vae.decode(latents)
        self.timings["decode"] += time.perf_counter() - t0
        return images

    def condition_of(self, problem: int) -> str:
        return self.conditions[problem % len(self.conditions)]

    def frames_read(self, frames: int) -> list[int]:
        """The frames of a ``frames``-frame video candidate the verifier scores (a video
        verifier says which; an image verifier scores every frame)."""
        read = getattr(self.verifier, "frames_read", None)
        return list(read(frames)) if callable(read) else list(range(frames))

    def verify(self, images: torch.Tensor, early: torch.Tensor | None, condition: str | None = None) -> torch.Tensor:
        """[B, V] scores of decoded images; a video candidate ([B, T, H, W, C]) goes whole to a
        video verifier (``scores_videos``), else it scores the mean over its frames."""
        t0 = time.perf_counter()
        condition = self.condition if condition is None else condition
        if getattr(self.verifier, "scores_videos", False):
            score = self.verifier.component_scores if self.relative else self.verifier.score
            values = score(images, condition, early)
            values = values.T if self.relative else values.reshape(-1, 1)
            self.timings["score"] += time.perf_counter() - t0
            return values.float()
        frames = images.shape[1] if images.ndim == 5 else 1
        flat = images.reshape(-1, *images.shape[-3:])
        flat_early = early.reshape(-1, *early.shape[-3:]) if early is not None else None
        if self.relative:
            values = self.verifier.component_scores(flat, condition, flat_early).T
        else:
            values = self.verifier.score(flat, condition, flat_early).reshape(-1, 1)
        self.timings["score"] += time.perf_counter() - t0
        return values.float().reshape(images.shape[0], frames, -1).mean(1)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, early: torch.Tensor | None, chunk: int, problems=None,
                 on_chunk: Callable[[int, int], None] | None = None) -> Scores:
        """Scores of ``latents`` (row j belongs to problem ``problems[j]``): rows are verified in
        chunks, one verifier call per condition, so problems with other conditions share no call.
        ``on_chunk(done, total)`` runs after each chunk (progress, interruption checks)."""
        # No autograd graph even outside ComfyUI's inference mode (scripts, tests): the pool
        # keeps scores across rounds, and a graph behind them would keep every round's
        # decoder and verifier activations alive.
        total = latents.shape[0]
        chunk = total if self.whole_batch else frames_chunk(min(chunk, self.max_batch), self.frames_per_row(latents))
        conditions = [self.condition] * total if problems is None else [self.condition_of(int(p)) for p in problems]
        groups: dict[str, list[int]] = {}
        for j, c in enumerate(conditions):
            groups.setdefault(c, []).append(j)
        done = [0]
        parts = []
        for condition, rows in groups.items():
            def score_chunk(lat, ear, condition=condition):
                images = self.decode(lat)
                values = self.verify(images, self.decode(ear) if ear is not None else None, condition)
                done[0] += lat.shape[0]
                if on_chunk is not None:
                    on_chunk(done[0], total)
                return values, images

            if len(groups) == 1:
                return Scores(*map_chunked(score_chunk, [latents, early], chunk))
            idx = torch.tensor(rows)
            parts.append((idx, *map_chunked(score_chunk, [latents[idx], early[idx] if early is not None else None],
                                            chunk)))
        order = torch.argsort(torch.cat([p[0] for p in parts]))
        return Scores(torch.cat([p[1] for p in parts])[order], torch.cat([p[2] for p in parts])[order])

    def compare(self, values: torch.Tensor) -> torch.Tensor:
        return self.verifier.combine(values.T).float() if self.relative else values[:, 0]

    def frames_per_row(self, latents: torch.Tensor) -> int:
        """Images one candidate puts through an image verifier at once: a video latent
        [B, C, T, H, W] decodes to about T x the VAE's time ratio frames (a video verifier
        batches its frames itself: 1)."""
        if latents.ndim != 5 or getattr(self.verifier, "scores_videos", False):
            return 1
        return self.decoded_frames(latents)

    def decoded_frames(self, latents: torch.Tensor) -> int:
        """Frames a video latent [B, C, T, H, W] decodes to (T x the VAE's time ratio)."""
        ratio = getattr(self.vae, "upscale_ratio", None) if self.vae is not None else None
        time_ratio = ratio[0] if isinstance(ratio, (tuple, list)) and ratio else None
        return int(time_ratio(latents.shape[2])) if callable(time_ratio) else latents.shape[2]


def check_batch(images: torch.Tensor, early: torch.Tensor | None = None) -> None:
    """Refuse an empty batch, or early images that are not one per image."""
    total = images.shape[0]
    if total == 0:
        raise ScoringError("images: got an empty batch; connect an IMAGE batch with at least one image")
    if early is not None and early.shape[0] != total:
        raise ScoringError(f"early_images: {early.shape[0]} early images for {total} images; give one per image")


def check_scores(verifier, scores: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(scores).all():
        raise ScoringError(f"the {getattr(verifier, 'name', 'verifier')} verifier returned non-finite scores "
                            f"{scores.tolist()}")
    return scores


def score_images(verifier, images: torch.Tensor, condition: str = "", early: torch.Tensor | None = None,
                 on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """[B] orderable scores of decoded ``images`` through the ``Scorer``, in chunks of the
    verifier's max_batch (a rank ensemble: its members' scores chunked, ranked over the whole
    batch); checked for an empty batch, mismatched early images and non-finite scores."""
    check_batch(images, early)
    scorer = Scorer(None, verifier, condition)
    return check_scores(verifier, scorer.compare(scorer(images, early, scorer.max_batch, on_chunk=on_chunk).values))


def ranking(scores: torch.Tensor) -> list[int]:
    """Indices from best to worst; equal scores keep their batch order (the first wins)."""
    order = torch.argsort(-scores.double(), stable=True)
    return [int(i) for i in order]
