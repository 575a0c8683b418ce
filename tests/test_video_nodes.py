"""The video verifier nodes (nodes/video_nodes.py) build the verifiers they describe, and refuse
a verifier of the wrong kind naming their input."""

from __future__ import annotations

import pytest
import torch

import tests.verifier_fixtures as vf
from tests.harness.host import run_node
from tests.toy_verifier import ProbeVerifier
from verifiers.clip import CLIPScoreVerifier, build_open_clip
from verifiers.dinov2 import DINOv2SelfSupervisedVerifier, load_dinov2


@pytest.fixture(scope="module")
def loaded(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("video_nodes")
    vf.write_tiny_clip(root)
    vf.write_tiny_dinov2(root)
    return {"dino": DINOv2SelfSupervisedVerifier(load_dinov2(root / "dinov2-small")),
            "clip": CLIPScoreVerifier(build_open_clip(vf.TINY_CLIP, root / "clip" / f"{vf.TINY_CLIP}.safetensors"))}


def test_the_nodes_build_video_verifiers_that_score_whole_videos(loaded):
    g = torch.Generator().manual_seed(0)
    repeated = torch.rand(1, 32, 32, 3, generator=g).expand(4, 32, 32, 3).unsqueeze(0)
    unrelated = torch.rand(1, 4, 32, 32, 3, generator=g)
    videos = torch.cat([repeated, unrelated])
    subject = run_node("SubjectConsistencyVerifier", dinov2_verifier=loaded["dino"])[0]
    background = run_node("BackgroundConsistencyVerifier", clip_verifier=loaded["clip"])[0]
    for verifier in (subject, background):
        assert verifier.scores_videos
        scores = verifier.score(videos)
        assert scores[0].item() == pytest.approx(1.0, abs=1e-5) and scores[1] < scores[0]
    motion = run_node("VideoMotionVerifier")[0]
    assert motion.score(videos).tolist()[0] == 0.0
    frames = run_node("VideoFramesVerifier", verifier=ProbeVerifier(), frames=2)[0]
    assert frames.frames_read(4) == [0, 3]
    expected = ProbeVerifier().score(unrelated[0, [0, 3]]).mean()
    assert frames.score(unrelated).item() == pytest.approx(expected.item(), abs=1e-6)


def test_a_verifier_of_the_wrong_kind_is_refused_naming_the_input(loaded):
    with pytest.raises(ValueError, match="dinov2_verifier: .*DINO"):
        run_node("SubjectConsistencyVerifier", dinov2_verifier=loaded["clip"])
    with pytest.raises(ValueError, match="clip_verifier: .*CLIP"):
        run_node("BackgroundConsistencyVerifier", clip_verifier=loaded["dino"])
    with pytest.raises(ValueError, match="verifier: .*already scores whole videos"):
        run_node("VideoFramesVerifier", verifier=run_node("VideoMotionVerifier")[0], frames=2)
