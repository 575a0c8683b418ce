"""Video verifiers: they score whole candidates [B, T, H, W, C] (T frames), not single images.

A verifier with ``scores_videos = True`` receives every candidate's frames together (the
search's Scorer hands a video verifier the decoded video as it is; an image verifier gets
every frame and the mean of their scores). ``frames_read(T)`` says which frames of a T-frame
video a verifier reads, so reports can say what was scored.

- ``FrameVerifier``: any image verifier over sampled frames: ``frames`` evenly spaced frames
  from the first to the last (``frame_indices``); the score is the mean over them.
- ``ConsistencyVerifier``: VBench's subject consistency (DINO features) and background
  consistency (CLIP features). With f_t the L2-normalised features of frame t, a video's
  score is the mean over t = 1..T-1 of (max(0, cos(f_0, f_t)) + max(0, cos(f_{t-1}, f_t))) / 2
  (Huang et al., "VBench", CVPR 2024, section 3.1; the clamp at 0 is the reference code's).
  A video of one repeated frame scores 1; one frame alone scores 1.
- ``MotionVerifier``: how much a video moves, so that a search judged by consistency cannot
  win with a still video: the mean absolute difference of consecutive frames' luma, on frames
  shrunk to at most 64 px (0 for a frozen video). It is model-free and not VBench's dynamic
  degree (which thresholds RAFT optical flow).

Every one of them can join a ``VerifierEnsemble`` with image verifiers (the ensemble gives
image members the frames and averages, as the Scorer does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .base import Condition, Verifier, VerifierError, check_images
from .common import LUMA

MOTION_PX = 64


def frame_indices(frames: int, count: int) -> list[int]:
    """``count`` frame indices evenly spaced from the first frame to the last (rounded to the
    nearest frame); every frame when ``count`` is 0 or at least ``frames``; the middle frame
    when ``count`` is 1."""
    if frames < 1:
        raise VerifierError("a video needs at least one frame")
    if count <= 0 or count >= frames:
        return list(range(frames))
    if count == 1:
        return [(frames - 1) // 2]
    return sorted({round(i * (frames - 1) / (count - 1)) for i in range(count)})


def as_videos(videos: torch.Tensor, what: str = "videos") -> torch.Tensor:
    """[B, T, H, W, 3] in [0, 1] from a video batch, or from an image batch (each image a
    one-frame video); checked as image batches are."""
    if not isinstance(videos, torch.Tensor):
        raise VerifierError(f"{what} must be a video tensor [B, T, H, W, C], got {type(videos).__name__}")
    if videos.ndim == 4:
        videos = videos.unsqueeze(1)
    if videos.ndim != 5:
        raise VerifierError(f"{what} must be a video batch [B, T, H, W, C] (or an IMAGE batch), got shape "
                            f"{tuple(videos.shape)}")
    b, t = videos.shape[:2]
    if b == 0 or t == 0:
        raise VerifierError(f"{what} is empty (shape {tuple(videos.shape)}): there is nothing to score")
    flat = check_images(videos.reshape(b * t, *videos.shape[2:]), what)
    return flat.reshape(b, t, *flat.shape[1:])


class VideoVerifier(Verifier):
    """Base of the verifiers that read whole videos: subclasses implement ``_score_videos``."""

    scores_videos = True

    def frames_read(self, frames: int) -> list[int]:
        return list(range(frames))

    def score(self, videos, condition=None, early=None):
        videos = as_videos(videos)
        if early is not None:
            early = as_videos(early, "early")
            if early.shape != videos.shape:
                raise VerifierError(f"early videos have shape {tuple(early.shape)}, expected the videos' shape "
                                    f"{tuple(videos.shape)}")
        elif self.early_level is not None:
            raise VerifierError(f"the {self.name} verifier needs the early x0-prediction (at level "
                                f"{self.early_level}) of every video")
        if not isinstance(condition, Condition):
            condition = Condition(condition or "")
        with torch.inference_mode():
            scores = self._score_videos(videos, condition, early)
        return scores.detach().float().cpu().reshape(videos.shape[0])

    def _score_videos(self, videos: torch.Tensor, condition: Condition, early) -> torch.Tensor:
        raise NotImplementedError


class FrameVerifier(VideoVerifier):
    """An image verifier over ``frames`` evenly spaced frames of each video (0: every frame):
    the mean of its scores of those frames (early frames at the same indices)."""

    def __init__(self, verifier, frames: int = 4):
        if not callable(getattr(verifier, "score", None)):
            raise VerifierError("verifier: connect an image VERIFIER to score the frames with")
        if getattr(verifier, "scores_videos", False):
            raise VerifierError(f"verifier: {verifier.name} already scores whole videos; connect an image verifier")
        if getattr(verifier, "relative_scores", False):
            raise VerifierError("verifier: a rank ensemble ranks within one call, so its frame scores cannot be "
                                "averaged; sample frames for each member and put those in the ensemble")
        if frames < 0:
            raise VerifierError(f"frames must be 0 (every frame) or more, got {frames}")
        self.verifier, self.frames = verifier, int(frames)
        self.early_level = getattr(verifier, "early_level", None)
        self.max_batch = max(1, int(getattr(verifier, "max_batch", 64)))
        which = "every frame" if self.frames == 0 else f"{self.frames} frames"
        self.name = f"{getattr(verifier, 'name', 'verifier')} over {which}"

    def frames_read(self, frames: int) -> list[int]:
        return frame_indices(frames, self.frames)

    def _score_videos(self, videos, condition, early):
        idx = self.frames_read(videos.shape[1])
        picked = videos[:, idx].reshape(-1, *videos.shape[2:])
        picked_early = early[:, idx].reshape(-1, *early.shape[2:]) if early is not None else None
        scores = torch.cat([self.verifier.score(picked[s: s + self.max_batch], condition,
                                                None if picked_early is None else picked_early[s: s + self.max_batch])
                            for s in range(0, picked.shape[0], self.max_batch)])
        return scores.reshape(videos.shape[0], len(idx)).mean(1)


def vbench_consistency(features: torch.Tensor) -> torch.Tensor:
    """VBench's consistency of one video from its frames' features [T, D]: the mean over
    frames t >= 1 of (max(0, cos(f_0, f_t)) + max(0, cos(f_{t-1}, f_t))) / 2; 1 for one frame."""
    f = F.normalize(features.float(), dim=-1)
    if f.shape[0] < 2:
        return torch.ones((), dtype=torch.float32)
    to_first = (f[1:] @ f[0]).clamp(min=0)
    to_previous = (f[1:] * f[:-1]).sum(-1).clamp(min=0)
    return ((to_first + to_previous) / 2).mean()


class ConsistencyVerifier(VideoVerifier):
    """VBench's subject (DINO features) or background (CLIP features) consistency: see the
    module docstring. ``embed`` maps an image batch [N, H, W, 3] to features [N, D]."""

    max_batch = 8

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], name: str, prepare=None, frame_batch: int = 32):
        self.embed, self.name, self.prepare, self.frame_batch = embed, name, prepare, max(1, frame_batch)

    def _score_videos(self, videos, condition, early):
        if self.prepare is not None:
            self.prepare()
        b, t = videos.shape[:2]
        flat = videos.reshape(b * t, *videos.shape[2:])
        feats = torch.cat([self.embed(flat[s: s + self.frame_batch]).float().cpu()
                           for s in range(0, flat.shape[0], self.frame_batch)])
        return torch.stack([vbench_consistency(v) for v in feats.reshape(b, t, -1)])


def subject_consistency(dino_verifier) -> ConsistencyVerifier:
    """Subject consistency with the DINO features of a loaded DINOv2 verifier (its CLS
    features, the reference's ``dino_transform`` replaced by DINOv2's own preprocessing)."""
    if not callable(getattr(dino_verifier, "features", None)):
        raise VerifierError("dinov2_verifier: subject consistency reads DINO features; connect the VERIFIER of "
                            "Load DINOv2 Verifier")
    return ConsistencyVerifier(dino_verifier.features, "subject consistency (DINO)",
                               prepare=getattr(dino_verifier, "prepare", None))


def background_consistency(clip_verifier) -> ConsistencyVerifier:
    """Background consistency with the CLIP image features of a loaded CLIP-based verifier
    (CLIPScore, aesthetic, zero-shot: their CLIP image tower and its preprocessing)."""
    clip = getattr(clip_verifier, "clip", None)
    if not callable(getattr(clip, "image_embeddings", None)):
        raise VerifierError("clip_verifier: background consistency reads CLIP image features; connect the VERIFIER "
                            "of Load CLIPScore Verifier (or another CLIP-based verifier loader)")
    return ConsistencyVerifier(clip.image_embeddings, "background consistency (CLIP)",
                               prepare=getattr(clip_verifier, "prepare", None))


def frame_motion(video: torch.Tensor, max_px: int = MOTION_PX) -> torch.Tensor:
    """Mean absolute difference of consecutive frames' luma (0..1) of one video [T, H, W, 3],
    on frames shrunk by area averaging to at most ``max_px`` a side; 0 for one frame."""
    if video.shape[0] < 2:
        return torch.zeros((), dtype=torch.float32)
    luma = (video.float()[..., :3] * torch.tensor(LUMA, dtype=torch.float32)).sum(-1, keepdim=True)
    x = luma.movedim(-1, 1)
    scale = max_px / max(x.shape[-2:])
    if scale < 1:
        x = F.interpolate(x, size=(max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale))),
                          mode="area")
    return (x[1:] - x[:-1]).abs().mean()


class MotionVerifier(VideoVerifier):
    """How much a video moves (``frame_motion``): higher for more motion, 0 for a still video."""

    name = "motion"

    def _score_videos(self, videos, condition, early):
        return torch.stack([frame_motion(v) for v in videos])
