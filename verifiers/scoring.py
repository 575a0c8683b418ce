"""Checks of an image batch to score, scoring it with any verifier, and turning scores into a choice.

The nodes score through the search's ``Scorer`` (nodes/sampling_adapter.py), VerifierScore
included; ``score_in_chunks`` is the same rule for library use without ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Condition, Verifier, VerifierError


def score_in_chunks(verifier: Verifier, images: torch.Tensor, condition: Condition | str | None = None,
                    early: torch.Tensor | None = None,
                    on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Scores [B] of ``images``, in chunks of at most ``verifier.max_batch``.

    Verifiers whose scores are relative to the batch (``relative_scores``, the rank
    ensemble) are never chunked: they see the whole batch at once. ``on_chunk(done, total)``
    runs after each chunk (progress, interruption checks).
    """
    check_batch(images, early)
    total = images.shape[0]
    step = total if getattr(verifier, "relative_scores", False) else max(1, int(verifier.max_batch))
    parts = []
    for start in range(0, total, step):
        sl = slice(start, start + step)
        parts.append(verifier.score(images[sl], condition, None if early is None else early[sl]))
        if on_chunk is not None:
            on_chunk(min(start + step, total), total)
    return check_scores(verifier, torch.cat(parts))


def check_batch(images: torch.Tensor, early: torch.Tensor | None = None) -> None:
    """Refuse an empty batch, or early images that are not one per image."""
    total = images.shape[0]
    if total == 0:
        raise VerifierError("images: got an empty batch; connect an IMAGE batch with at least one image")
    if early is not None and early.shape[0] != total:
        raise VerifierError(f"early_images: {early.shape[0]} early images for {total} images; give one per image")


def check_scores(verifier, scores: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(scores).all():
        raise VerifierError(f"the {getattr(verifier, 'name', 'verifier')} verifier returned non-finite scores "
                            f"{scores.tolist()}")
    return scores


def ranking(scores: torch.Tensor) -> list[int]:
    """Indices from best to worst; equal scores keep their batch order (the first wins)."""
    order = torch.argsort(-scores.double(), stable=True)
    return [int(i) for i in order]
