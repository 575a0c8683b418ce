"""Verifiers: models that score images (higher is better) for the noise search.

The classes here import without ComfyUI; ``verifiers.loaders`` and
``verifiers.comfy_runtime`` hold the ComfyUI side (model folders, cache, memory manager).
How a search calls a verifier: ``verifier.score(images_BHWC_0_1, condition_text, early=None)``
-> float tensor [B] on the CPU; see verifiers/base.py.
"""

from .base import Condition, Verifier, VerifierError, check_images

__all__ = ["Condition", "Verifier", "VerifierError", "check_images"]
