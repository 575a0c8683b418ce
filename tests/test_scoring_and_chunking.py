"""Scoring and chunking: a rank ensemble's ranks, weights and the condition and early images
it hands its members; scoring in chunks of a verifier's max batch (never a relative verifier);
and running a model function in chunks that halve on out-of-memory errors, and only on those."""

from __future__ import annotations

import math

import pytest
import torch

from search.chunking import ChunkOOMError, is_oom, map_chunked
from search.scoring import Scorer, ScoringError, score_images
from verifiers.base import Verifier, VerifierError
from verifiers.ensemble import EnsembleVerifier, fractional_ranks, mean_rank

# -- rank ensemble verifier -----------------------------------------------------------------------

def test_ranks_are_taken_in_float64():
    assert fractional_ranks([1.0, 1.0 + 1e-9]).tolist() == [1.0, 2.0]
    assert mean_rank([[1.0, 1.0 + 1e-9]]).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("weights", [[0.0, 0.0], [2.0, -1.0], [math.inf, 1.0], [math.nan, 1.0]])
def test_bad_ensemble_weights_are_refused(weights):
    with pytest.raises(VerifierError, match="finite, non-negative and not all zero"):
        mean_rank([[1, 2], [2, 1]], weights=weights)


def test_mean_rank_needs_scores():
    with pytest.raises(VerifierError, match="at least one list of scores"):
        mean_rank([])


class ByCondition(Verifier):
    """Brightness when the condition says 'bright', darkness otherwise; records its calls."""

    def __init__(self, name="cond", max_batch=64, relative=False):
        self.name, self.max_batch, self.relative_scores = name, max_batch, relative
        self.calls = []

    def _score(self, images, condition, early):
        self.calls.append((images.shape[0], condition.text, early))
        mean = images.mean(dim=(1, 2, 3))
        return mean if condition.text == "bright" else -mean


class ByEarly(Verifier):
    """How close each image is to its early image (the self-supervised verifier's shape)."""

    name = "early"
    early_level = 0.4

    def _score(self, images, condition, early):
        return -(images - early).abs().mean(dim=(1, 2, 3))


def images(levels, h=3, w=5):
    return torch.stack([torch.full((h, w, 3), float(v)) for v in levels])


def test_ensemble_passes_condition_and_early_to_its_members():
    imgs, early = images([0.1, 0.5, 0.9]), images([0.8, 0.5, 0.0])
    cond, near = ByCondition(), ByEarly()
    ens = EnsembleVerifier([cond, near])
    assert ens.name == "ensemble(cond, early)" and ens.early_level == 0.4
    comps = ens.component_scores(imgs, "bright", early)
    assert torch.equal(comps, torch.stack([cond.score(imgs, "bright"), near.score(imgs, "", early)]))
    # bright: ranks 1, 2, 3; near its early image: 0.5 best, then 0.1 (0.7 off), then 0.9 (0.9 off).
    assert ens.score(imgs, "bright", early).tolist() == pytest.approx([1.5, 2.5, 2.0])


def test_ensemble_weights_are_checked_when_it_is_built():
    a, b = ByCondition("a"), ByCondition("b")
    with pytest.raises(VerifierError, match="non-negative"):
        EnsembleVerifier([a, b], weights=[1.0, -1.0])
    with pytest.raises(VerifierError, match="1 weights for 2 verifiers"):
        EnsembleVerifier([a, b], weights=[1.0])


# -- chunked scoring: the one Scorer of the search and VerifierScore --------------------------------

def test_scorer_chunks_by_max_batch_in_order():
    imgs = images([0.1, 0.2, 0.3, 0.4, 0.5])  # 5 images of 3 x 5: the batch is the first axis
    whole = ByCondition().score(imgs, "bright")
    for max_batch, sizes in ((2, [2, 2, 1]), (1, [1] * 5), (0, [1] * 5), (64, [5])):
        v, progress = ByCondition(max_batch=max_batch), []
        out = score_images(v, imgs, "bright", on_chunk=lambda done, total, seen=progress: seen.append((done, total)))
        assert torch.equal(out, whole), max_batch
        assert [c[0] for c in v.calls] == sizes and {c[1] for c in v.calls} == {"bright"}, max_batch
        ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        assert progress == [(e, 5) for e in ends], max_batch
    single = score_images(ByCondition(), imgs[:1], "bright")
    assert single.tolist() == pytest.approx([0.1])


def test_scorer_never_chunks_a_relative_verifier_without_components():
    v = ByCondition(max_batch=1, relative=True)
    score_images(v, images([0.1, 0.2, 0.3]), "bright")
    assert [c[0] for c in v.calls] == [3]


def test_scorer_decodes_latents_when_given_a_vae():
    class Halve:
        def decode(self, latents):
            return latents / 2

    scorer = Scorer(Halve(), ByCondition(max_batch=2), "bright")
    scored = scorer(images([0.2, 0.4, 0.6]), None, 64)
    assert scored.values[:, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert torch.allclose(scored.images, images([0.1, 0.2, 0.3]))


def test_scorer_passes_each_chunk_its_early_images():
    imgs, early = images([0.1, 0.5, 0.9, 0.3], h=2), images([0.8, 0.5, 0.0, 0.3], h=2)
    v = ByEarly()
    v.max_batch = 3
    assert torch.equal(score_images(v, imgs, "", early), ByEarly().score(imgs, None, early))
    with pytest.raises(ScoringError, match="3 early images for 4 images"):
        score_images(v, imgs, "", early[:3])


def test_scorer_errors():
    with pytest.raises(ScoringError, match="empty batch"):
        score_images(ByCondition(), torch.zeros((0, 3, 5, 3)))
    with pytest.raises(ScoringError, match="verifier: connect a VERIFIER"):
        Scorer(None, object())

    class NaN(ByCondition):
        def _score(self, images, condition, early):
            return torch.full((images.shape[0],), float("nan"))

    with pytest.raises(ScoringError, match="the cond verifier returned non-finite scores"):
        score_images(NaN(), images([0.1, 0.2]))


# -- chunking and out-of-memory halving -------------------------------------------------------------

def test_map_chunked_chunks_passes_none_and_concatenates_each_output():
    x, y = torch.arange(7.0), torch.arange(7.0) * 10
    sizes = []

    def fn(a, none, b):
        assert none is None
        sizes.append(a.shape[0])
        return a + b, None, a * 2

    total, nothing, doubled = map_chunked(fn, [x, None, y], 3)
    assert sizes == [3, 3, 1] and nothing is None
    assert torch.equal(total, x + y) and torch.equal(doubled, x * 2)
    for chunk, expected in ((0, [1] * 7), (100, [7])):
        sizes.clear()
        map_chunked(fn, [x, None, y], chunk)
        assert sizes == expected


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried")])
def test_map_chunked_halves_on_out_of_memory_and_keeps_the_smaller_chunk(error):
    sizes, shrinks = [], []

    def fn(a):
        sizes.append(a.shape[0])
        if a.shape[0] > 2:
            raise error
        return a * 3

    out = map_chunked(fn, [torch.arange(9.0)], 8, on_shrink=shrinks.append)
    assert torch.equal(out[0], torch.arange(9.0) * 3)
    assert shrinks == [4, 2] and sizes == [8, 4, 2, 2, 2, 2, 1]


def test_map_chunked_out_of_memory_with_one_row():
    def fn(a):
        raise torch.OutOfMemoryError("CUDA out of memory.\nsecond line" + "x" * 300)

    with pytest.raises(ChunkOOMError, match=r"chunk of one candidate.*Detail: CUDA out of memory\.$") as info:
        map_chunked(fn, [torch.arange(4.0)], 1)
    assert isinstance(info.value, torch.OutOfMemoryError) and isinstance(info.value.__cause__, torch.OutOfMemoryError)

    def silent(a):
        raise torch.OutOfMemoryError()

    with pytest.raises(ChunkOOMError, match="Detail: OutOfMemoryError$"):
        map_chunked(silent, [torch.arange(4.0)], 2)

    def long(a):
        raise torch.OutOfMemoryError("y" * 300)

    with pytest.raises(ChunkOOMError) as info:
        map_chunked(long, [torch.arange(2.0)], 1)
    assert str(info.value).endswith("Detail: " + "y" * 200)


def test_map_chunked_does_not_retry_other_errors():
    for error in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ChunkOOMError("inner"),
                  NotImplementedError("out of memory"), ValueError("out of memory")):
        calls = []

        def fn(a, error=error, calls=calls):
            calls.append(a.shape[0])
            raise error

        with pytest.raises(type(error)) as info:
            map_chunked(fn, [torch.arange(8.0)], 8)
        assert info.value is error and calls == [8], error


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("anything"))
    for text in ("CUDA out of memory", "DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory",
                 "not enough memory: you tried", "Failed to allocate memory for tensor", "OUT OF MEMORY"):
        assert is_oom(RuntimeError(text)), text
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_oom(NotImplementedError("out of memory"))  # a RuntimeError subclass: its own meaning
    assert not is_oom(ValueError("out of memory"))
