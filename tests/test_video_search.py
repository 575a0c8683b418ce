"""Search on video models, in-process on ComfyUI's real samplers, with tiny random-weight
models of every family loaded by the host's own loaders (tests/harness/video_models.py).

Each test runs the graph of the host's template for the family (package
comfyui_workflow_templates_media_video) with the stock sampler replaced by a search node, and
checks what the image tests check: the winner replays with the template's stock sampler
nodes, NFEs planned == measured (and the rows the model evaluates), results do not depend on
the number of candidates per model call, interruption propagates.

- Wan 2.1 t2v (text_to_video_wan): UNETLoader, ModelSamplingSD3 shift 8, EmptyHunyuanLatentVideo,
  KSampler (uni_pc, simple) -> RandomSearchSampler.
- Wan 2.2 14B t2v (video_wan2_2_14B_t2v): two experts, KSamplerAdvanced high (steps 0..h, leftover
  noise) then KSamplerAdvanced low (h..end): the first is replaced by Noise Search on the
  high-noise expert's segment (SplitSigmas at h), judged by the x0-prediction at the hand-over;
  the low-noise KSamplerAdvanced runs unchanged.
- Wan 2.2 5B (video_wan2_2_5B_ti2v): Wan22ImageToVideoLatent, KSampler -> RandomSearchSampler.
- Wan 2.1 i2v (image_to_video_wan): WanImageToVideo's concat latent and mask in the conditioning.
- LTX-Video (ltxv_text_to_video): CheckpointLoaderSimple, LTXVConditioning, LTXVScheduler,
  SamplerCustom -> CFGGuider + NoiseSearch (random search, early rejection).
- HunyuanVideo (hunyuan_video_text_to_video): FluxGuidance + BasicGuider, BasicScheduler,
  SamplerCustomAdvanced -> NoiseSearch.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.harness import video_models as vm
from tests.harness.host import load_host, pack_module, run_node
from tests.toy_verifier import InterruptingVerifier, ProbeVerifier

SEED = 7


def load(kind: str, path, name: str | None = None):
    """Load a file through the host's loader node, as the template's loader does."""
    load_host()
    import folder_paths

    folder = {"unet": "diffusion_models", "vae": "vae", "checkpoint": "checkpoints"}[kind]
    folder_paths.add_model_folder_path(folder, str(path.parent))
    if kind == "unet":
        return run_node("UNETLoader", unet_name=path.name, weight_dtype="default")[0]
    if kind == "vae":
        return run_node("VAELoader", vae_name=path.name)[0]
    return run_node("CheckpointLoaderSimple", ckpt_name=path.name)


def search(node_id: str, **inputs) -> dict:
    out = run_node(node_id, **inputs)
    names = [o.id for o in pack_module("nodes.search_nodes").__dict__[node_id].define_schema().outputs] \
        if node_id in pack_module("nodes.search_nodes").__dict__ else None
    if names is None:
        from tests.harness.host import node_class

        names = [o.id for o in node_class(node_id).define_schema().outputs]
    found = dict(zip(names, out))
    found["report"] = json.loads(found["report"])
    return found


def judge(vae, verifier=None):
    return run_node("SearchJudge", vae=vae, verifier=verifier or ProbeVerifier(), condition="")[0]


def same(a, b, atol=1e-4):
    return a.shape == b.shape and torch.allclose(a, b, atol=atol)


def forward_rows(model):
    counts = {"rows": 0}
    hook = model.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: counts.__setitem__("rows", counts["rows"] + args[0].shape[0]))
    return counts, hook


# -- Wan 2.1 -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wan(request):
    load_host()
    model = run_node("ModelSamplingSD3", model=load("unet", vm.wan21_unet()), shift=8.0)[0]
    vae = load("vae", vm.wan21_vae())
    pos, neg = vm.conditioning("wan")
    latent = run_node("EmptyHunyuanLatentVideo", width=16, height=16, length=5, batch_size=1)[0]
    return {"model": model, "vae": vae, "positive": pos, "negative": neg, "latent": latent}


def wan_args(wan, **kw):
    args = dict(model=wan["model"], seed=SEED, steps=3, cfg=3.0, sampler_name="uni_pc", scheduler="simple",
                positive=wan["positive"], negative=wan["negative"], latent_image=wan["latent"], denoise=1.0,
                judge=judge(wan["vae"]), candidates=3, budget=0, top_k=3, batch_size=0)
    args.update(kw)
    return args


def wan_stock(wan, seed, **kw):
    args = dict(model=wan["model"], seed=seed, steps=3, cfg=3.0, sampler_name="uni_pc", scheduler="simple",
                positive=wan["positive"], negative=wan["negative"], latent_image=wan["latent"], denoise=1.0)
    args.update(kw)
    return run_node("KSampler", **args)[0]["samples"]


@pytest.mark.parametrize("sampler", ["uni_pc", "euler_ancestral"])
def test_wan21_random_search_replays_with_the_stock_ksampler_whatever_the_chunk(wan, sampler):
    assert wan["latent"]["samples"].shape == (1, 16, 2, 2, 2)  # [B, C, T, H, W]: 5 frames
    counts, hook = forward_rows(wan["model"])
    try:
        runs = {bs: search("RandomSearchSampler", **wan_args(wan, sampler_name=sampler, batch_size=bs))
                for bs in (1, 3)}
    finally:
        hook.remove()
    one, three = runs[1], runs[3]
    assert [t["id"] for t in one["report"]["top"]] == [t["id"] for t in three["report"]["top"]]
    assert same(one["top"]["samples"], three["top"]["samples"])
    stock_counts, hook = forward_rows(wan["model"])
    try:
        for rank, entry in enumerate(three["report"]["top"]):
            stock = wan_stock(wan, SEED + entry["id"], sampler_name=sampler)
            assert same(three["top"]["samples"][rank: rank + 1], stock), (sampler, entry)
    finally:
        hook.remove()
    assert three["replay_seed"] == SEED + three["report"]["best"]["id"]
    nfe = three["report"]["nfe"]
    assert nfe["planned"] == nfe["measured"] == nfe["search_total"] >= stock_counts["rows"] // 2
    if sampler == "euler_ancestral":  # three candidates cost what three stock samples cost
        assert nfe["measured"] == stock_counts["rows"] // 2 == 9
    assert counts["rows"] == 2 * (one["report"]["nfe"]["measured"] + nfe["measured"])  # cfg: two rows per NFE
    # The score is the verifier's on the decoded winner (all its frames).
    video = wan["vae"].decode(three["best"]["samples"])
    assert video.shape[:2] == (1, 5)
    assert three["report"]["best"]["score"] == pytest.approx(
        ProbeVerifier().score(video[0]).mean().item(), abs=2e-3)  # decoded in a batch: ~1e-4 apart


def test_wan21_replay_noise_regenerates_the_winner_with_sampler_custom_advanced(wan):
    out = search("RandomSearchSampler", **wan_args(wan, candidates=2, top_k=1, sampler_name="euler"))
    guider = run_node("CFGGuider", model=wan["model"], positive=wan["positive"], negative=wan["negative"], cfg=3.0)[0]
    sigmas = run_node("BasicScheduler", model=wan["model"], scheduler="simple", steps=3, denoise=1.0)[0]
    replay = run_node("SamplerCustomAdvanced", noise=out["replay_noise"], guider=guider,
                      sampler=run_node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas,
                      latent_image=wan["latent"])[0]["samples"]
    assert same(out["best"]["samples"], replay)


def test_wan21_latent_batch_problem_equals_its_latent_alone(wan):
    batch = run_node("EmptyHunyuanLatentVideo", width=16, height=16, length=5, batch_size=2)[0]
    both = search("RandomSearchSampler", **wan_args(wan, latent_image=batch, sampler_name="euler", steps=2,
                                                    candidates=2, top_k=1))
    second = run_node("LatentFromBatch", samples=batch, batch_index=1, length=1)[0]
    alone = search("RandomSearchSampler", **wan_args(wan, latent_image=second, sampler_name="euler", steps=2,
                                                     candidates=2, top_k=1))
    assert same(both["best"]["samples"][1:], alone["best"]["samples"])
    rule = both["report"]["problems"][1]["replay"]
    stock = wan_stock(wan, rule["seed"], latent_image=second, sampler_name="euler", steps=2)
    assert same(both["best"]["samples"][1:], stock)


def test_wan21_interrupt_propagates(wan):
    import comfy.model_management as mm

    verifier = InterruptingVerifier()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node("RandomSearchSampler", **wan_args(wan, judge=judge(wan["vae"], verifier), batch_size=1))
    finally:
        mm.interrupt_current_processing(False)
    assert verifier.calls == 1


def test_candidates_per_model_call_shrink_as_frames_grow(wan, monkeypatch):
    """The chunker sizes model calls from the model's memory estimate of the whole video latent:
    three times the latent frames (9 and 33 frames: 3 and 9), a third of the candidates per call."""
    adapter = pack_module("nodes.sampling_adapter")
    monkeypatch.setattr(adapter, "free_memory", lambda patcher, device: 2**34)
    scorer = pack_module("search.scoring").Scorer(wan["vae"], ProbeVerifier())
    guider = run_node("CFGGuider", model=wan["model"], positive=wan["positive"], negative=wan["negative"], cfg=3.0)[0]
    sizes = {}
    for length in (9, 33):
        latent = run_node("EmptyHunyuanLatentVideo", width=64, height=64, length=length, batch_size=1)[0]
        backend = adapter.ComfyBackend(guider, run_node("KSamplerSelect", sampler_name="euler")[0],
                                       torch.tensor([1.0, 0.0]), latent, scorer, chunk=0)
        sizes[length] = backend.auto_chunk(cap=10**6)
    assert sizes[9] > 1 and 2.7 <= sizes[9] / sizes[33] <= 3.3, sizes


def test_a_video_verifier_judges_whole_videos_in_a_search(wan):
    motion = run_node("VideoMotionVerifier")[0]
    frames = run_node("VideoFramesVerifier", verifier=ProbeVerifier(), frames=3)[0]
    out = search("RandomSearchSampler", **wan_args(wan, judge=judge(wan["vae"], motion), candidates=3, top_k=3))
    videos = wan["vae"].decode(out["top"]["samples"])
    assert [t["score"] for t in out["report"]["top"]] == pytest.approx(motion.score(videos).tolist(), rel=2e-3)
    out = search("RandomSearchSampler", **wan_args(wan, judge=judge(wan["vae"], frames), candidates=2, top_k=1))
    video = wan["vae"].decode(out["best"]["samples"])
    sampled, every = (ProbeVerifier().score(video[0, idx]).mean().item() for idx in ([0, 2, 4], list(range(5))))
    assert abs(sampled - every) > 1e-2  # the frames read make a difference
    # (the search decodes candidates in one batch: the tiny Wan VAE differs by ~1e-4 from a batch of one)
    assert out["report"]["best"]["score"] == pytest.approx(sampled, abs=2e-3)
    # The report says which frames were scored.
    assert out["report"]["frames_scored"] == [0, 2, 4]


# -- Wan 2.2 14B: two experts ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def experts(wan):
    high, low = (run_node("ModelSamplingSD3", model=load("unet", p), shift=5.0)[0] for p in vm.wan22_experts())
    return {**wan, "high": high, "low": low}


def two_sampler_graph(e, seed, first=None, steps=4, handover=2):
    """The template's two KSamplerAdvanced; ``first``: a latent standing in for the first one's output."""
    common = dict(cfg=3.0, sampler_name="euler", scheduler="simple", positive=e["positive"], negative=e["negative"],
                  steps=steps)
    if first is None:
        first = run_node("KSamplerAdvanced", model=e["high"], add_noise="enable", noise_seed=seed,
                         latent_image=e["latent"], start_at_step=0, end_at_step=handover,
                         return_with_leftover_noise="enable", **common)[0]
    final = run_node("KSamplerAdvanced", model=e["low"], add_noise="disable", noise_seed=0, latent_image=first,
                     start_at_step=handover, end_at_step=10000, return_with_leftover_noise="disable", **common)[0]
    return first, final


def test_wan22_two_experts_search_the_high_noise_segment_and_replay_with_the_stock_graph(experts):
    """The first KSamplerAdvanced becomes Noise Search on the high-noise expert's segment (its
    CFGGuider, the sigmas split at the hand-over with SplitSigmas); the low-noise
    KSamplerAdvanced runs unchanged on the winner."""
    e = experts
    guider = run_node("CFGGuider", model=e["high"], positive=e["positive"], negative=e["negative"], cfg=3.0)[0]
    sigmas = run_node("BasicScheduler", model=e["high"], scheduler="simple", steps=4, denoise=1.0)[0]
    high_sigmas, _ = run_node("SplitSigmas", sigmas=sigmas, step=2)
    euler = run_node("KSamplerSelect", sampler_name="euler")[0]
    options = run_node("SearchRandom", candidates=3, budget=0, top_k=3, batch_size=2)[0]
    counts, hook = forward_rows(e["high"])
    try:
        out = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=SEED, count=3)[0], guider=guider,
                     sampler=euler, sigmas=high_sigmas, latent_image=e["latent"], search=options, judge=judge(e["vae"]))
    finally:
        hook.remove()
    nfe = out["report"]["nfe"]
    assert nfe["planned"] == nfe["measured"] == 3 * (2 + 1)  # two steps + the x0-prediction at the hand-over
    assert counts["rows"] == 2 * nfe["measured"]
    # Downstream, the low-noise expert's KSamplerAdvanced runs on the winner unchanged, and
    # the stock two-sampler graph at the seed output gives the same video.
    stock_first, stock_final = two_sampler_graph(e, out["replay_seed"])
    assert same(out["best"]["samples"], stock_first["samples"])
    _, searched_final = two_sampler_graph(e, None, first=out["best"])
    assert same(searched_final["samples"], stock_final["samples"])
    # Judged by the high-noise expert's x0-prediction at the hand-over sigma.
    for rank, entry in enumerate(out["report"]["top"]):
        x0 = run_node("SamplerCustom", model=e["high"], add_noise=False, noise_seed=0, cfg=3.0,
                      positive=e["positive"], negative=e["negative"], sampler=euler,
                      sigmas=torch.tensor([float(sigmas[2]), 0.0]),
                      latent_image={"samples": out["top"]["samples"][rank: rank + 1]})[0]["samples"]
        video = e["vae"].decode(x0)
        assert entry["score"] == pytest.approx(ProbeVerifier().score(video[0]).mean().item(), abs=2e-3)


# -- Wan 2.2 5B ----------------------------------------------------------------------------------
def test_wan22_5b_random_search_replays_with_the_stock_ksampler():
    model = run_node("ModelSamplingSD3", model=load("unet", vm.wan22_5b_unet()), shift=8.0)[0]
    vae = load("vae", vm.taew22_vae())
    pos, neg = vm.conditioning("wan")
    latent = run_node("Wan22ImageToVideoLatent", vae=vae, width=32, height=32, length=9, batch_size=1)[0]
    assert latent["samples"].shape[1] == 48
    common = dict(model=model, steps=2, cfg=3.0, sampler_name="uni_pc", scheduler="simple", positive=pos,
                  negative=neg, latent_image=latent, denoise=1.0)
    out = search("RandomSearchSampler", seed=SEED, judge=judge(vae), candidates=2, budget=0, top_k=2, batch_size=1,
                 **common)
    for rank, entry in enumerate(out["report"]["top"]):
        stock = run_node("KSampler", seed=SEED + entry["id"], **common)[0]["samples"]
        assert same(out["top"]["samples"][rank: rank + 1], stock)
    assert out["report"]["nfe"]["planned"] == out["report"]["nfe"]["measured"]
    # An empty latent of another family's channel count is fixed as the stock sampler fixes it
    # (fix_empty_latent_channels: 16 channels repeated to the model's 48).
    empty16 = run_node("EmptyHunyuanLatentVideo", width=16, height=16, length=5, batch_size=1)[0]
    common["latent_image"] = empty16
    out = search("RandomSearchSampler", seed=SEED, judge=judge(vae), candidates=2, budget=0, top_k=1, batch_size=2,
                 **common)
    assert out["best"]["samples"].shape[1] == 48
    assert same(out["best"]["samples"], run_node("KSampler", seed=out["replay_seed"], **common)[0]["samples"])


# -- LTX-Video -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ltxv():
    load_host()
    model, _clip, vae = load("checkpoint", vm.ltxv_checkpoint())[:3]
    latent = run_node("EmptyLTXVLatentVideo", width=64, height=64, length=9, batch_size=1)[0]
    pos, neg = vm.conditioning("ltxv")
    pos, neg = run_node("LTXVConditioning", positive=pos, negative=neg, frame_rate=25.0)
    sigmas = run_node("LTXVScheduler", steps=4, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1,
                      latent=latent)[0]
    return {"model": model, "vae": vae, "latent": latent, "positive": pos, "negative": neg, "sigmas": sigmas,
            "sampler": run_node("KSamplerSelect", sampler_name="euler")[0],
            "guider": run_node("CFGGuider", model=model, positive=pos, negative=neg, cfg=3.0)[0]}


def ltxv_stock(x, seed):
    """The template's SamplerCustom at ``seed``."""
    return run_node("SamplerCustom", model=x["model"], add_noise=True, noise_seed=seed, cfg=3.0, positive=x["positive"],
                    negative=x["negative"], sampler=x["sampler"], sigmas=x["sigmas"],
                    latent_image=x["latent"])[0]["samples"]


@pytest.mark.parametrize("strategy", ["random", "rejection"])
def test_ltxv_search_winners_replay_with_the_template_s_sampler_custom(ltxv, strategy):
    x = ltxv
    assert x["vae"].latent_channels == 128 and x["latent"]["samples"].shape[1] == 128
    if strategy == "random":
        options = run_node("SearchRandom", candidates=3, budget=0, top_k=2, batch_size=2)[0]
    else:
        options = run_node("SearchEarlyRejection", candidates=4, keep=0.5, levels="0.6", budget=0, top_k=1,
                           batch_size=0)[0]
    counts, hook = forward_rows(x["model"])
    try:
        out = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=SEED, count=4)[0], guider=x["guider"],
                     sampler=x["sampler"], sigmas=x["sigmas"], latent_image=x["latent"], search=options,
                     judge=judge(x["vae"]))
    finally:
        hook.remove()
    nfe = out["report"]["nfe"]
    assert nfe["planned"] == nfe["measured"] == nfe["search_total"]
    assert counts["rows"] == 2 * nfe["measured"]
    assert same(out["best"]["samples"], ltxv_stock(x, out["replay_seed"]))
    if strategy == "rejection":
        # 4 candidates to the level, 2 survivors finish: fewer NFEs than 4 full samples.
        assert nfe["measured"] < 4 * 4


# -- HunyuanVideo ----------------------------------------------------------------------------------
def test_hunyuan_video_search_replays_with_sampler_custom_advanced():
    model = run_node("ModelSamplingSD3", model=load("unet", vm.hunyuan_unet()), shift=7.0)[0]
    vae = load("vae", vm.taehv_vae())
    pos, _ = vm.conditioning("hunyuan", pooled=True)
    pos = run_node("FluxGuidance", conditioning=pos, guidance=6.0)[0]
    guider = run_node("BasicGuider", model=model, conditioning=pos)[0]
    sampler = run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = run_node("BasicScheduler", model=model, scheduler="simple", steps=3, denoise=1.0)[0]
    latent = run_node("EmptyHunyuanLatentVideo", width=16, height=16, length=5, batch_size=1)[0]
    options = run_node("SearchRandom", candidates=3, budget=0, top_k=1, batch_size=2)[0]
    counts, hook = forward_rows(model)
    try:
        out = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=SEED, count=3)[0], guider=guider,
                     sampler=sampler, sigmas=sigmas, latent_image=latent, search=options, judge=judge(vae))
    finally:
        hook.remove()
    nfe = out["report"]["nfe"]
    assert nfe["planned"] == nfe["measured"] == 3 * 3 == counts["rows"]  # no CFG: one row per NFE
    stock = run_node("SamplerCustomAdvanced", noise=run_node("RandomNoise", noise_seed=out["replay_seed"])[0],
                     guider=guider, sampler=sampler, sigmas=sigmas, latent_image=latent)[0]["samples"]
    assert same(out["best"]["samples"], stock)


# -- image-to-video --------------------------------------------------------------------------------
def test_wan21_image_to_video_concat_conditioning_replays_with_the_stock_ksampler(wan):
    """image_to_video_wan: WanImageToVideo puts the start image's latent and a mask in the
    conditioning (concat); the search hands them to the model as the stock KSampler does."""
    model = run_node("ModelSamplingSD3", model=load("unet", vm.wan21_i2v_unet()), shift=8.0)[0]
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    pos, neg, latent = run_node("WanImageToVideo", positive=wan["positive"], negative=wan["negative"], vae=wan["vae"],
                                width=16, height=16, length=5, batch_size=1, start_image=image)
    assert "concat_latent_image" in pos[0][1]
    common = dict(model=model, steps=2, cfg=3.0, sampler_name="euler", scheduler="simple", positive=pos,
                  negative=neg, latent_image=latent, denoise=1.0)
    out = search("RandomSearchSampler", seed=SEED, judge=judge(wan["vae"]), candidates=2, budget=0, top_k=1,
                 batch_size=1, **common)
    assert same(out["best"]["samples"], run_node("KSampler", seed=out["replay_seed"], **common)[0]["samples"])
    nfe = out["report"]["nfe"]
    assert nfe["planned"] == nfe["measured"] == 2 * 2


def test_ltxv_image_to_video_noise_masks_are_handled_as_stock(ltxv):
    """ltxv_image_to_video: LTXVImgToVideo's latent carries a 5-d noise mask [B, 1, T, 1, 1] that
    keeps the image's frames; in a latent batch each latent keeps its own mask, as the stock
    sampler treats that latent alone (LatentFromBatch)."""
    x = ltxv
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(6))
    raw_pos, raw_neg = vm.conditioning("ltxv")
    masks = []
    for strength in (1.0, 0.4):
        p, n, latent = run_node("LTXVImgToVideo", positive=raw_pos, negative=raw_neg, vae=x["vae"], image=image,
                                width=64, height=64, length=9, batch_size=2, strength=strength)
        masks.append(latent["noise_mask"][:1])
    batch = {**latent, "noise_mask": torch.cat(masks)}  # latent 0 keeps the image fully, latent 1 partly
    assert batch["noise_mask"].shape == (2, 1, 2, 1, 1) and not torch.equal(masks[0], masks[1])
    pos, neg = run_node("LTXVConditioning", positive=p, negative=n, frame_rate=25.0)
    guider = run_node("CFGGuider", model=x["model"], positive=pos, negative=neg, cfg=3.0)[0]
    options = run_node("SearchRandom", candidates=2, budget=0, top_k=1, batch_size=3)[0]
    out = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=SEED, count=2)[0], guider=guider,
                 sampler=x["sampler"], sigmas=x["sigmas"], latent_image=batch, search=options, judge=judge(x["vae"]))
    for b in (0, 1):
        alone = run_node("LatentFromBatch", samples=batch, batch_index=b, length=1)[0]
        seed = out["report"]["problems"][b]["replay"]["seed"]
        stock = run_node("SamplerCustom", model=x["model"], add_noise=True, noise_seed=seed, cfg=3.0, positive=pos,
                         negative=neg, sampler=x["sampler"], sigmas=x["sigmas"], latent_image=alone)[0]["samples"]
        assert same(out["best"]["samples"][b: b + 1], stock), b
    # Mask 0 on the first latent frame of latent 0: the image's latent comes out unchanged.
    assert torch.allclose(out["best"]["samples"][0, :, 0], batch["samples"][0, :, 0], atol=1e-5)
    assert not torch.allclose(out["best"]["samples"][1, :, 0], batch["samples"][1, :, 0], atol=1e-3)
