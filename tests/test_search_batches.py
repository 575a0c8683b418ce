"""Latent batches: B problems searched in one pass on ComfyUI's real sampler (in-process).

Problem b of a batch is what that latent gives searched alone (LatentFromBatch: its noises are
the batch's element b, as with the stock KSampler): same winner, score and report, for every
strategy. Batch winners replay with a stock KSampler on their latent alone (LatentFromBatch(b)
at seed + id), ancestral and SDE samplers included; every model call carries rows of all problems."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch

from tests.harness.host import node_class, pack_module, run_node
from tests.helpers import (
    forward_rows,
    ks_args,
    out_of_memory_above,
    outputs,
    search,
    stock_ksampler,
)
from tests.toy_verifier import InterruptingVerifier, ProbeVerifier

B = 3
BATCH = {"samples": torch.randn(B, 4, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.5}
CONDITIONS = ["a", "bb", "ccc"]


class ConditionProbe(ProbeVerifier):
    """A probe whose weights depend on the condition, so each problem is judged its own way."""

    def _score(self, images, condition, early):
        self.seed = len(condition.text)
        return super()._score(images, condition, early)


def element(latent: dict, b: int) -> dict:
    return run_node("LatentFromBatch", samples=latent, batch_index=b, length=1)[0]


def prompts(parts) -> list:
    g = torch.Generator().manual_seed(9)
    return [[torch.randn(B, 77, 768, generator=g), {}]]


def close(a, b, path="report") -> list[str]:
    """Where two reports differ (floats to 1e-4)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        return [] if math.isclose(a, b, abs_tol=1e-4) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def comparable(report: dict) -> dict:
    """A problem's report without what describes the run rather than the problem: timings, and
    the replay rule's wording (a batch element is replayed on its batch, a latent alone alone)."""
    report = {k: v for k, v in report.items() if k not in ("timings", "problem")}
    report["replay"] = {k: v for k, v in report["replay"].items() if k in ("seed", "candidate")}
    return report


STRATEGIES = {
    "RandomSearch": dict(steps=3, search_steps=2, candidates=4, top_k=2, budget=10),
    "ZeroOrderSearch": dict(steps=3, neighbours=2, iterations=3, angle=40.0, restart=True, top_k=2),
    "PathSearch": dict(steps=6, paths=2, branches=2, start=0.4, forward=0.2, backward=0.3, interval_steps=1,
                       top_k=2),
}


@pytest.mark.parametrize("node", list(STRATEGIES))
def test_each_problem_of_a_batch_gets_what_it_gets_alone(parts, node):
    """The acceptance test: a batch of 3 (own latents, a conditioning batch of 3 prompts, a
    condition per latent) gives each problem the winner, score and report it gets alone."""
    verifier = ConditionProbe()
    positive = prompts(parts)
    common = dict(verifier=verifier, batch_size=4, **STRATEGIES[node])
    batch = search(node, **ks_args(parts, latent_image=BATCH, positive=positive,
                                   condition=json.dumps(CONDITIONS), **common))
    rep = batch["report"]
    assert rep["batch"] == B and len(rep["problems"]) == B
    assert batch["best"]["samples"].shape == (B, 4, 4, 4)
    for b in range(B):
        one = search(node, **ks_args(parts, latent_image=element(BATCH, b), positive=[[positive[0][0][b:b + 1], {}]],
                                     condition=CONDITIONS[b], **common))
        problem = rep["problems"][b]
        assert problem["problem"] == b and problem["condition"] == CONDITIONS[b]
        assert problem["best"]["id"] == one["report"]["best"]["id"], b
        assert problem["best"]["score"] == pytest.approx(one["best_score"], abs=1e-4), b
        assert torch.allclose(batch["best"]["samples"][b:b + 1], one["best"]["samples"], atol=1e-4), b
        k = len(problem["top"])
        assert torch.allclose(batch["top"]["samples"][b * k:(b + 1) * k], one["top"]["samples"], atol=1e-4), b
        differences = close(comparable(problem), comparable(one["report"]))
        assert not differences, (b, differences[:5])
    scores = [s for p in rep["problems"] for s in p["top_scores"]]
    assert json.loads(batch["scores"]) == pytest.approx(scores)
    assert batch["best_score"] == pytest.approx(rep["problems"][0]["best"]["score"])
    assert rep["nfe"]["search_total"] == sum(p["nfe"]["search_total"] for p in rep["problems"]) == \
        rep["nfe"]["measured"]


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde"])
def test_batch_winners_replay_with_a_stock_ksampler_on_their_latent(parts, sampler):
    """Problem b's candidate id is the stock KSampler's sample of LatentFromBatch(b) at seed + id,
    per-step noise of ancestral and SDE (Brownian tree) samplers included, whatever the chunk size."""
    empty = {"samples": torch.zeros(B, 4, 4, 4)}
    runs = {bs: search("RandomSearch", **ks_args(parts, latent_image=empty, sampler_name=sampler, candidates=3,
                                                 top_k=3, batch_size=bs)) for bs in (2, 9)}
    ref = runs[9]
    assert torch.allclose(runs[2]["top"]["samples"], ref["top"]["samples"], atol=1e-4)
    stock = {}
    for b, problem in enumerate(ref["report"]["problems"]):
        assert problem["replay"]["batch_index"] == b
        for rank, entry in enumerate(problem["top"]):
            seed = 5 + entry["id"]
            if (seed, b) not in stock:
                stock[seed, b] = stock_ksampler(parts, seed=seed, sampler_name=sampler, latent=element(empty, b))
            assert torch.allclose(ref["top"]["samples"][b * 3 + rank], stock[seed, b][0], atol=1e-4), (b, rank)
        assert problem["replay"]["seed"] == 5 + problem["best"]["id"]
    assert ref["replay_seed"] == ref["report"]["problems"][0]["replay"]["seed"]


def test_replay_noise_regenerates_every_winner_of_a_batch(parts):
    """Zero-order winners (sphere neighbours) replay from their noises: on the batch, and one by
    one on LatentFromBatch elements (deterministic sampler)."""
    out = search("ZeroOrderSearch", **ks_args(parts, latent_image=BATCH, neighbours=2, iterations=2, angle=40.0,
                                              restart=False))
    guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"], negative=parts["negative"],
                      cfg=2.0)[0]
    euler = run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 3, 1.0)
    again = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider, sampler=euler, sigmas=sigmas,
                     latent_image=BATCH)[0]["samples"]
    assert torch.allclose(again, out["best"]["samples"], atol=1e-4)
    one = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider, sampler=euler, sigmas=sigmas,
                   latent_image=element(BATCH, 2))[0]["samples"]
    assert torch.allclose(one, out["best"]["samples"][2:], atol=1e-4)


def test_every_model_call_carries_rows_of_every_problem(parts):
    model = parts["model"]
    calls = []
    hook = model.model.diffusion_model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        out = search("RandomSearch", **ks_args(parts, latent_image={"samples": torch.zeros(B, 4, 4, 4)},
                                               candidates=2, batch_size=0))
    finally:
        hook.remove()
    # 3 steps, each one call of 3 problems x 2 candidates x (cond, uncond).
    assert calls == [B * 2 * 2] * 3
    assert [p["nfe"]["measured"] for p in out["report"]["problems"]] == [6] * B
    assert [p["nfe"]["forward_passes"] for p in out["report"]["problems"]] == [12] * B


def test_a_batch_of_one_keeps_the_single_problem_report(parts):
    out = search("RandomSearch", **ks_args(parts, candidates=2))
    rep = out["report"]
    assert "problems" not in rep and "batch" not in rep
    assert set(rep) >= {"algorithm", "settings", "best", "top", "top_scores", "replay", "nfe", "rounds",
                        "candidates", "timings", "verifier", "condition"}
    assert "batch_index" not in rep["replay"] and "latent of batch size 1" in rep["replay"]["how"]


def test_latent_batch_size_is_validated_naming_latent_image(parts):
    limit = pack_module("nodes.search_runner").MAX_PROBLEMS
    too_many = {"samples": torch.zeros(limit + 1, 4, 1, 1)}
    for node, extra in (("RandomSearch", dict(candidates=2)),
                        ("PathSearch", dict(paths=1, branches=1, start=0.4, forward=0.2, backward=0.3,
                                            interval_steps=1))):
        with forward_rows(parts["model"]) as counts, pytest.raises(ValueError) as err:
            run_node(node, **ks_args(parts, latent_image=too_many, **extra))
        text = str(err.value)
        assert text.startswith("latent_image:") and f"batch of {limit + 1}" in text, text
        assert f"supported: a latent batch of 1 to {limit}" in text, text
        assert counts["rows"] == 0
    with pytest.raises(ValueError, match=r"condition: a JSON list of 2 conditions for a latent batch of 3"):
        run_node("RandomSearch", **ks_args(parts, latent_image=BATCH, candidates=2, condition='["a", "b"]'))


def test_interrupt_in_a_batch_propagates_and_leaves_no_thread(parts):
    import comfy.model_management as mm

    verifier = InterruptingVerifier()

    before = threading.active_count()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node("ZeroOrderSearch", **ks_args(parts, latent_image=BATCH, verifier=verifier,
                                                  neighbours=2, iterations=3, angle=30.0, restart=True))
    finally:
        mm.interrupt_current_processing(False)
    assert verifier.calls == 1
    assert threading.active_count() == before


def test_out_of_memory_halving_in_a_batch_keeps_results(parts):
    model = out_of_memory_above(parts["model"], 4)  # CFG: two rows per candidate
    out = search("RandomSearch", **ks_args(parts, model=model, latent_image=BATCH, candidates=3, top_k=3,
                                           batch_size=9))
    ref = search("RandomSearch", **ks_args(parts, latent_image=BATCH, candidates=3, top_k=3, batch_size=2))
    assert out["report"]["settings"]["batch_size"] == 2
    assert torch.allclose(out["top"]["samples"], ref["top"]["samples"], atol=1e-4)


def test_outputs_describe_the_batch(parts):
    out = outputs("PathSearch", run_node("PathSearch", **ks_args(
        parts, latent_image=BATCH, steps=6, paths=2, branches=2, start=0.4, forward=0.2, backward=0.3,
        interval_steps=1, top_k=2)))
    assert out["best"]["samples"].shape == (B, 4, 4, 4) and out["top"]["samples"].shape == (2 * B, 4, 4, 4)
    assert "batch_index" not in out["best"]
    rep = out["report"]
    assert rep["settings"]["problems"] == B and rep["algorithm"] == "paths"
    assert all("not replayable" in p["replay"]["how"] for p in rep["problems"])
    assert [o.id for o in node_class("PathSearch").define_schema().outputs] == \
        ["best", "top", "scores", "best_score", "report"]


def test_random_noise_into_noise_search_gives_candidate_zero_the_stock_batch(parts):
    """A NOISE without per-candidate seeds is asked for N x B rows (the batch repeated once per
    candidate): candidate 0 of every problem is the stock batch at that seed."""
    guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"], negative=parts["negative"],
                      cfg=2.0)[0]
    euler = run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 3, 1.0)
    noise = run_node("RandomNoise", noise_seed=21)[0]
    judge = run_node("SearchJudge", vae=parts["vae"], verifier=ProbeVerifier(), condition="")[0]
    out = search("NoiseSearch", noise=noise, guider=guider, sampler=euler, sigmas=sigmas, latent_image=BATCH,
                 search=run_node("SearchRandom", candidates=2, top_k=2)[0], judge=judge)
    stock = run_node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=euler, sigmas=sigmas,
                     latent_image=BATCH)[0]["samples"]
    for b, problem in enumerate(out["report"]["problems"]):
        rank = [t["id"] for t in problem["top"]].index(0)
        assert torch.allclose(out["top"]["samples"][2 * b + rank], stock[b], atol=1e-4), b


def test_problem_generators_differ_by_index_and_keep_the_single_latent_seed(comfy):
    runner = pack_module("nodes.search_runner")
    step_seed = pack_module("nodes.sampling_adapter").step_seed
    assert runner.problem_seed(5, 0) == step_seed(5, 1 << 63)  # what a batch of one always used
    seeds = {runner.problem_seed(5, b) for b in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**64 for s in seeds)
