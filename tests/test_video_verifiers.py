"""Video verifiers (verifiers/temporal.py) against their definitions, on synthetic clips, with
the tiny random-weight DINOv2 and CLIP models the verifier tests build; and how the Scorer and
the rank ensemble hand videos to them. Host-free and fast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tests.verifier_fixtures as vf
from search.chunking import frames_chunk
from search.scoring import Scorer
from tests.toy_verifier import ProbeVerifier
from verifiers.base import VerifierError
from verifiers.clip import CLIPScoreVerifier, build_open_clip
from verifiers.dinov2 import DINOv2SelfSupervisedVerifier, load_dinov2
from verifiers.ensemble import EnsembleVerifier, mean_rank
from verifiers.temporal import (
    ConsistencyVerifier,
    FrameVerifier,
    MotionVerifier,
    background_consistency,
    frame_indices,
    subject_consistency,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_verifiers")
    vf.write_tiny_clip(root)
    vf.write_tiny_dinov2(root)
    dino = DINOv2SelfSupervisedVerifier(load_dinov2(root / "dinov2-small"))
    clip = CLIPScoreVerifier(build_open_clip(vf.TINY_CLIP, root / "clip" / f"{vf.TINY_CLIP}.safetensors"))
    return {"dino": dino, "clip": clip}


def clip_of(frames: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(frames).unsqueeze(0)  # [1, T, H, W, C]


def moving_square(frames: int = 6, size: int = 32, step: int = 3) -> torch.Tensor:
    """A bright square crossing a dark frame, ``step`` pixels per frame: [1, T, H, W, 3]."""
    video = torch.full((frames, size, size, 3), 0.1)
    for t in range(frames):
        video[t, 8:16, 2 + step * t: 10 + step * t] = 0.9
    return video.unsqueeze(0)


def vbench_by_hand(features: torch.Tensor) -> float:
    """VBench's loop (subject_consistency / background_consistency), written as the reference
    code runs it: frame by frame, the clamped cosines with the first and the previous frame."""
    total, count = 0.0, 0
    first = former = None
    for i, f in enumerate(features):
        f = F.normalize(f.unsqueeze(0), dim=-1)
        if i == 0:
            first = f
        else:
            sim_pre = max(0.0, F.cosine_similarity(former, f).item())
            sim_fir = max(0.0, F.cosine_similarity(first, f).item())
            total += (sim_pre + sim_fir) / 2
            count += 1
        former = f
    return total / count


# -- consistency -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["subject", "background"])
def test_a_repeated_frame_scores_one_and_the_score_is_vbench_s_definition(models, kind):
    verifier = subject_consistency(models["dino"]) if kind == "subject" else background_consistency(models["clip"])
    embed = models["dino"].features if kind == "subject" else models["clip"].clip.image_embeddings
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(32, 32, 3, generator=g)
    repeated = clip_of([frame] * 5)
    assert verifier.score(repeated).item() == pytest.approx(1.0, abs=1e-5)
    varied = torch.cat([repeated, moving_square(5), torch.rand(1, 5, 32, 32, 3, generator=g)])
    scores = verifier.score(varied)
    with torch.inference_mode():
        expected = [vbench_by_hand(embed(v)) for v in varied]
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
    assert scores[2] < 1.0 - 1e-3  # unrelated frames are not consistent


def test_unrelated_frames_score_low_and_a_repeated_frame_one():
    """With features that are the frames' centred pixels, independent noise frames are nearly
    orthogonal: their consistency is near 0, a repeated frame's exactly 1."""
    def embed(images):
        flat = images.reshape(images.shape[0], -1)
        return flat - flat.mean(1, keepdim=True)

    verifier = ConsistencyVerifier(embed, "pixels")
    g = torch.Generator().manual_seed(1)
    unrelated = torch.rand(1, 8, 16, 16, 3, generator=g)
    repeated = unrelated[:, :1].expand(1, 8, 16, 16, 3)
    scores = verifier.score(torch.cat([unrelated, repeated]))
    assert scores[0] < 0.1
    assert scores[1].item() == pytest.approx(1.0, abs=1e-6)
    assert scores[0].item() == pytest.approx(vbench_by_hand(embed(unrelated[0])), abs=1e-6)


def test_consistency_refuses_verifiers_without_the_features_it_reads(models):
    with pytest.raises(VerifierError, match="DINO"):
        subject_consistency(models["clip"])
    with pytest.raises(VerifierError, match="CLIP"):
        background_consistency(models["dino"])


# -- motion ----------------------------------------------------------------------------------
def test_a_frozen_video_scores_worse_on_motion_than_a_moving_one():
    moving = moving_square()
    frozen = moving[:, :1].expand_as(moving)
    scores = MotionVerifier().score(torch.cat([frozen, moving]))
    assert scores[0].item() == 0.0
    assert scores[1] > scores[0]
    # Faster motion moves more pixels per frame pair: it scores higher still.
    assert MotionVerifier().score(moving_square(step=4)) > scores[1]


def test_motion_in_an_ensemble_with_consistency_keeps_the_frozen_video_from_winning(models):
    """Consistency alone prefers the frozen video; the ensemble with motion ties it with the
    moving one at best, so adding motion (with more weight) makes the moving one win."""
    moving = moving_square()
    frozen = moving[:, :1].expand_as(moving).clone()
    both = torch.cat([frozen, moving])
    consistency = subject_consistency(models["dino"])
    assert consistency.score(both)[0] >= consistency.score(both)[1]
    ensemble = EnsembleVerifier([consistency, MotionVerifier()], weights=[1.0, 2.0])
    combined = ensemble.combine(ensemble.component_scores(both))
    assert combined[1] > combined[0]


# -- frames ----------------------------------------------------------------------------------
def test_frame_indices_are_evenly_spaced_first_to_last():
    assert frame_indices(9, 3) == [0, 4, 8]
    assert frame_indices(33, 4) == [0, 11, 21, 32]
    assert frame_indices(5, 0) == [0, 1, 2, 3, 4] == frame_indices(5, 9)
    assert frame_indices(9, 1) == [4]


class Recording(ProbeVerifier):
    def __init__(self, max_batch=64):
        super().__init__()
        self.max_batch = max_batch
        self.batches = []

    def _score(self, images, condition, early):
        self.batches.append(images.clone())
        return super()._score(images, condition, early)


def test_frame_verifier_scores_only_its_frames_with_their_mean():
    inner = Recording()
    video = torch.rand(2, 9, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    verifier = FrameVerifier(inner, frames=3)
    scores = verifier.score(video)
    seen = torch.cat(inner.batches)
    assert torch.equal(seen, video[:, [0, 4, 8]].reshape(6, 16, 16, 3))
    expected = ProbeVerifier().score(video[:, [0, 4, 8]].reshape(6, 16, 16, 3)).reshape(2, 3).mean(1)
    assert torch.allclose(scores, expected)
    assert verifier.frames_read(9) == [0, 4, 8]
    with pytest.raises(VerifierError, match="ensemble"):
        FrameVerifier(EnsembleVerifier([ProbeVerifier(), ProbeVerifier(1)]))


# -- the Scorer and the ensemble -------------------------------------------------------------
def test_the_scorer_gives_a_video_verifier_whole_videos_and_says_which_frames_it_read():
    inner = Recording()
    scorer = Scorer(None, FrameVerifier(inner, frames=2))
    video = torch.rand(3, 5, 8, 8, 3, generator=torch.Generator().manual_seed(3))
    values = scorer.verify(video, None)
    assert values.shape == (3, 1)
    assert scorer.frames_read(video.shape[1]) == [0, 4]
    plain = Scorer(None, ProbeVerifier())
    plain.verify(video, None)
    assert plain.frames_read(video.shape[1]) == [0, 1, 2, 3, 4]


def test_image_verifiers_see_at_most_their_batch_of_frames_per_call():
    """Memory per video candidate grows with its frames: an image verifier taking 8 images per
    call gets two 4-frame candidates per chunk, not 8 candidates (32 frames)."""
    assert frames_chunk(8, 4) == 2 and frames_chunk(8, 9) == 1 and frames_chunk(8, 1) == 8
    inner = Recording(max_batch=8)

    class FourFrameVAE:
        upscale_ratio = (lambda a: max(0, a * 4 - 3), 8, 8)

        def decode(self, latents):
            frames = 4 * latents.shape[2] - 3
            return latents.mean(1)[:, :1, :, :, None].expand(-1, frames, -1, -1, 3).sigmoid()

    scorer = Scorer(FourFrameVAE(), inner)
    latents = torch.randn(6, 4, 2, 8, 8)  # 5 frames each
    scorer(latents, None, chunk=64)
    assert max(b.shape[0] for b in inner.batches) <= 8
    assert sum(b.shape[0] for b in inner.batches) == 6 * 5


def test_an_ensemble_ranks_video_and_image_members_together():
    video = torch.rand(4, 5, 8, 8, 3, generator=torch.Generator().manual_seed(4))
    video[0] = video[0, :1]  # a frozen candidate
    ensemble = EnsembleVerifier([ProbeVerifier(), MotionVerifier()])
    assert ensemble.scores_videos
    components = ensemble.component_scores(video)
    per_frame = ProbeVerifier().score(video.reshape(20, 8, 8, 3)).reshape(4, 5).mean(1)
    assert torch.allclose(components[0], per_frame)
    assert torch.allclose(components[1], MotionVerifier().score(video))
    assert components[1, 0] == 0
    scorer = Scorer(None, ensemble)
    values = scorer.verify(video, None)
    assert torch.allclose(scorer.compare(values), mean_rank(components).float())
