"""Video verifier nodes: thin schemas over verifiers/temporal.py.

Each builds a VERIFIER that scores whole video candidates (see verifiers/temporal.py for the
definitions): an image verifier over sampled frames, VBench's subject and background
consistency (reusing the features of a loaded DINOv2 or CLIP verifier), and a motion measure.
They join a Verifier Ensemble like any verifier.
"""

from __future__ import annotations

from ..verifiers import temporal
from .host_compat import io
from .types import VerifierType

CATEGORY = "sampling/noise_search/verifiers/video"


def _verifier_output():
    return VerifierType.Output(display_name="verifier", tooltip="Scores whole videos; higher is better.")


def _node(node_id: str, display_name: str, description: str, inputs: list, build) -> type[io.ComfyNode]:
    attrs = {
        "__module__": __name__,
        "define_schema": classmethod(lambda cls: io.Schema(
            node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
            inputs=inputs, outputs=[_verifier_output()])),
        "execute": classmethod(lambda cls, **values: io.NodeOutput(build(**values))),
    }
    return type(node_id, (io.ComfyNode,), attrs)


VideoFramesVerifier = _node(
    "VideoFramesVerifier", "Video Verifier: Image Verifier over Frames",
    "Scores a video with an image verifier (CLIPScore, ImageReward, ...) on a few frames: `frames` evenly spaced "
    "frames from the first to the last (rounded to the nearest frame; 1 = the middle frame; 0 = every frame), and "
    "the mean of their scores. Fewer frames cost less verifier time.",
    [VerifierType.Input("verifier", tooltip="An image verifier (not an ensemble: put each member over frames)."),
     io.Int.Input("frames", default=4, min=0, max=4096,
                  tooltip="How many evenly spaced frames are scored, first and last included; 0 = every frame.")],
    lambda verifier, frames: temporal.FrameVerifier(verifier, frames))

SubjectConsistencyVerifier = _node(
    "SubjectConsistencyVerifier", "Video Verifier: Subject Consistency (DINO)",
    "VBench's subject consistency: the mean over frames of the clamped cosine similarities of each frame's DINO "
    "features with the first frame's and the previous frame's (1 = the subject never changes). Uses the features "
    "of the DINOv2 verifier connected. Reward it together with Motion, or search can win with a still video.",
    [VerifierType.Input("dinov2_verifier", tooltip="A VERIFIER from Load DINOv2 Verifier: its features are used.")],
    lambda dinov2_verifier: temporal.subject_consistency(dinov2_verifier))

BackgroundConsistencyVerifier = _node(
    "BackgroundConsistencyVerifier", "Video Verifier: Background Consistency (CLIP)",
    "VBench's background consistency: as subject consistency, with CLIP image features (of the CLIP-based "
    "verifier connected: CLIPScore, aesthetic or zero-shot). Reward it together with Motion, or search can win "
    "with a still video.",
    [VerifierType.Input("clip_verifier", tooltip="A CLIP-based VERIFIER (Load CLIPScore Verifier, ...): its image "
                                                 "features are used.")],
    lambda clip_verifier: temporal.background_consistency(clip_verifier))

MotionVerifier = _node(
    "VideoMotionVerifier", "Video Verifier: Motion",
    "How much a video moves: the mean absolute difference of consecutive frames' luma (0 for a still video), on "
    "frames shrunk to 64 px. No model. Combine it with a consistency verifier in a Verifier Ensemble so that a "
    "frozen video does not win.",
    [], lambda: temporal.MotionVerifier())

VIDEO_NODES = [VideoFramesVerifier, SubjectConsistencyVerifier, BackgroundConsistencyVerifier, MotionVerifier]
