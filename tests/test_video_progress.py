"""The live view's state for video candidates (nodes/progress.py): each of the first candidates
carries a few small frames to play, evenly spaced from the first to the last, and every
candidate says which frames its verifier scored."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from tests.harness.host import pack_module
from tests.toy_verifier import ProbeVerifier


def decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_video_candidates_carry_frames_to_play_and_the_frames_scored(comfy):
    progress = pack_module("nodes.progress")
    temporal = pack_module("verifiers.temporal")
    view = progress.SearchProgress(None, "random")
    view.frames_read = temporal.FrameVerifier(ProbeVerifier(), 3).frames_read
    # Candidate 1's frames go from black to white: its animation must too.
    videos = torch.zeros(2, 17, 96, 64, 3)
    videos[1] = torch.linspace(0, 1, 17).view(17, 1, 1, 1)
    view.on_round({"ids": [0, 1], "scores": [0.5, 0.7], "round": 0, "best_id": 1, "best_score": 0.7, "nfe": 6,
                   "planned": 6, "images": videos})
    first, second = view.state["candidates"]
    assert second["frame_index"] == [0, 2, 5, 7, 9, 11, 14, 16] and len(second["frames"]) == 8
    grey = [decode(u).convert("L").getpixel((0, 0)) for u in second["frames"]]
    assert grey == sorted(grey) and grey[0] < 10 and grey[-1] > 245
    assert max(decode(second["frames"][0]).size) == progress.FRAME_PX
    assert first["frames_scored"] == second["frames_scored"] == [0, 8, 16]
    assert "thumb" in first  # the still (first frame) stays for views that do not animate


def test_only_the_first_candidates_are_animated_and_images_are_not(comfy):
    progress = pack_module("nodes.progress")
    view = progress.SearchProgress(None, "random")
    n = progress.ANIMATED + 3
    view.on_round({"ids": list(range(n)), "scores": [0.0] * n, "round": 0, "best_id": 0, "best_score": 0.0,
                   "nfe": n, "planned": n, "images": torch.rand(n, 3, 8, 8, 3)})
    animated = [c for c in view.state["candidates"] if "frames" in c]
    assert len(animated) == progress.ANIMATED and animated[0]["frame_index"] == [0, 1, 2]
    still = progress.SearchProgress(None, "random")
    still.on_round({"ids": [0], "scores": [0.0], "round": 0, "best_id": 0, "best_score": 0.0, "nfe": 1,
                    "planned": 1, "images": torch.rand(1, 8, 8, 3)})
    assert "frames" not in still.state["candidates"][0] and "frames_scored" not in still.state["candidates"][0]
