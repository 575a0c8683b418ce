"""The one verifier interface every search node consumes.

A verifier maps a batch of ComfyUI images (BHWC, float in [0, 1]) and an optional condition
(prompt text, or a class label given as an index or a name) to one float per image; higher
is better. Verifiers that judge a sample against an earlier point of its own trajectory
(the paper's self-supervised verifier) set ``early_level`` and receive the decoded
x0-prediction at that level through ``early``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class VerifierError(ValueError):
    """Bad input to a verifier, with a message a user can act on."""


@dataclass(frozen=True)
class Condition:
    """What the verifier judges against. Either field may be empty."""

    text: str = ""

    @property
    def label(self) -> str:
        return self.text.strip()


class Verifier:
    """Base class. Subclasses implement ``_score`` on a validated batch."""

    name: str = "verifier"
    # Fraction of the noise schedule (1 = pure noise, 0 = clean) at which the search
    # must capture the x0-prediction for this verifier; None when it needs none.
    early_level: float | None = None
    # Largest batch the verifier scores at once; the caller chunks above it.
    max_batch: int = 64
    # True when scores only compare within one call (rank ensembles); such verifiers also
    # offer component_scores(images, condition, early) -> [V, B] and combine([V, N]) -> [N].
    relative_scores: bool = False

    def score(self, images: torch.Tensor, condition: Condition | str | None = None,
              early: torch.Tensor | None = None) -> torch.Tensor:
        images = check_images(images, "images")
        if early is not None:
            early = check_images(early, "early")
            if early.shape != images.shape:
                raise VerifierError(f"early images have shape {tuple(early.shape)}, "
                                    f"expected the images' shape {tuple(images.shape)}")
        elif self.early_level is not None:
            raise VerifierError(f"the {self.name} verifier needs the early x0-prediction "
                                f"(at level {self.early_level}) of every image")
        if not isinstance(condition, Condition):
            condition = Condition(condition or "")
        scores = self._score(images, condition, early)
        return scores.detach().float().cpu().reshape(images.shape[0])

    def _score(self, images: torch.Tensor, condition: Condition,
               early: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def quoted(text: str, limit: int = 80) -> str:
    """``repr`` of a user's text, cut to ``limit`` characters: errors quote, never echo."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def check_images(images: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise VerifierError(f"{what} must be an IMAGE tensor, got {type(images).__name__}")
    if images.ndim == 5:
        # Video latents decode to [B, T, H, W, C]: every frame is scored, see score_frames.
        raise VerifierError(f"{what} has 5 dimensions; flatten frames before scoring")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise VerifierError(f"{what} must be an IMAGE batch [B, H, W, C] with C in 1, 3 or 4, "
                            f"got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise VerifierError(f"{what} is an empty batch: there is nothing to score")
    if not torch.isfinite(images).all():
        raise VerifierError(f"{what} contains NaN or infinite values; the sampler or decoder "
                            "diverged (try fewer steps, a lower cfg, or another sampler)")
    if images.shape[-1] == 1:
        images = images.expand(*images.shape[:-1], 3)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    return images.clamp(0.0, 1.0)
