"""A small verifier built by the tests: scores images by a fixed random linear probe.

Deterministic, row-independent and cheap, so search results can be compared exactly."""

from __future__ import annotations

import torch

from verifiers.base import Verifier


class ProbeVerifier(Verifier):
    name = "probe"

    def __init__(self, seed: int = 0, early_level: float | None = None):
        self.seed = seed
        self.early_level = early_level
        self.calls = 0

    def _score(self, images, condition, early):
        self.calls += 1
        g = torch.Generator().manual_seed(self.seed)
        x = torch.nn.functional.adaptive_avg_pool2d(images.permute(0, 3, 1, 2), 4).flatten(1)
        w = torch.randn(x.shape[1], generator=g)
        score = x @ w
        if early is not None:
            e = torch.nn.functional.adaptive_avg_pool2d(early.permute(0, 3, 1, 2), 4).flatten(1)
            score = score + torch.nn.functional.cosine_similarity(x, e, dim=1)
        return score


class InterruptingVerifier(ProbeVerifier):
    """Asks ComfyUI to interrupt the prompt whenever it scores (``calls`` counts its scorings)."""

    def _score(self, images, condition, early):
        import comfy.model_management as mm

        mm.interrupt_current_processing(True)
        return super()._score(images, condition, early)
