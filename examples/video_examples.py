"""The video example workflows (built with build_example_workflows.py's Workflow, listed in its
EXAMPLES): each starts as the host's template for its family (package
comfyui_workflow_templates_media_video) with the stock sampler replaced by a search.

- video_wan21_random_search: text_to_video_wan, KSampler -> Random Search judged by CLIPScore
  over 4 frames and Motion (a rank ensemble).
- video_wan22_14b_high_noise_search: video_wan2_2_14B_t2v, the high-noise KSamplerAdvanced ->
  Noise Search on the high-noise expert's segment (SplitSigmas at the hand-over), the low-noise
  KSamplerAdvanced unchanged, and the winner replayed with the stock two-sampler graph.
- video_ltxv_early_rejection: ltxv_text_to_video, SamplerCustom -> Noise Search with Early
  Rejection Options, judged by CLIPScore over 4 frames.
"""

from __future__ import annotations

WAN_TE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN21 = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
WAN22_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
LTXV = "ltx-video-2b-v0.9.safetensors"
LTXV_TE = "t5xxl_fp16.safetensors"
WAN_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
WAN22_REPO = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
# Download links shown by the editor's missing-models dialog (the templates' own links).
VIDEO_MODELS = {
    WAN_TE: (WAN_REPO + "text_encoders/" + WAN_TE, "text_encoders"),
    WAN21: (WAN_REPO + "diffusion_models/" + WAN21, "diffusion_models"),
    WAN_VAE: (WAN_REPO + "vae/" + WAN_VAE, "vae"),
    WAN22_HIGH: (WAN22_REPO + "diffusion_models/" + WAN22_HIGH, "diffusion_models"),
    WAN22_LOW: (WAN22_REPO + "diffusion_models/" + WAN22_LOW, "diffusion_models"),
    LTXV: ("https://huggingface.co/Lightricks/LTX-Video/resolve/main/" + LTXV, "checkpoints"),
}
WAN_NEGATIVE = "static, still picture, blurry details, subtitles, worst quality, low quality, JPEG artifacts"
VIDEO_VERIFIER_NOTE = ("Video verifiers score whole videos: Image Verifier over Frames scores `frames` evenly spaced "
                       "frames (first and last included) and averages; Motion is 0 for a still video (pair it with "
                       "any verifier that a still video could please). See docs/video.md.")


def _b():
    import build_example_workflows as b  # the builder imports this module: import it back lazily

    return b


def _prompts(wf, clip, prompt: str, negative: str, x=380):
    text = wf.node("PrimitiveStringMultiline", (x, 0), (360, 130), title="Prompt (also the verifier's condition)",
                   value=prompt)
    wf.prompt = prompt
    pos = wf.node("CLIPTextEncode", (x, 170), (360, 100), title="Positive", text=prompt)
    wf.link(text, 0, pos, "text")
    wf.link(clip, 0, pos, "clip")
    neg = wf.node("CLIPTextEncode", (x, 310), (360, 120), title="Negative", text=negative)
    wf.link(clip, 0, neg, "clip")
    return text, pos, neg


def _clip_over_frames(wf, pos, frames=4):
    clip = wf.node("CLIPScoreVerifierLoader", (pos[0], pos[1]), (360, 160))
    over = wf.node("VideoFramesVerifier", (pos[0], pos[1] + 200), (360, 80), frames=frames)
    wf.link(clip, 0, over, "verifier")
    return over


def _save_video(wf, latent_src, output, vae, x, y, prefix, fps, vae_slot=0):
    dec = wf.node("VAEDecode", (x, y), (220, 50))
    wf.link(latent_src, output, dec, "samples")
    wf.link(vae, vae_slot, dec, "vae")
    video = wf.node("CreateVideo", (x + 250, y), (270, 80), fps=fps)
    wf.link(dec, 0, video, "images")
    save = wf.node("SaveVideo", (x + 550, y), (320, 300), filename_prefix=prefix)
    wf.link(video, 0, save, "video")
    return save


def _report(wf, search, x, y):
    report = wf.node("PreviewAny", (x, y), (420, 300), title="Search report")
    wf.link(search, "report", report, "source")


def video_wan21_random_search(info):
    b = _b()
    wf = b.Workflow(info, "video_wan21_random_search")
    unet = wf.node("UNETLoader", (0, 0), (320, 90), unet_name=WAN21, weight_dtype="default")
    shift = wf.node("ModelSamplingSD3", (0, 130), (320, 60), shift=8.0)
    wf.link(unet, 0, shift, "model")
    clip = wf.node("CLIPLoader", (0, 230), (320, 110), clip_name=WAN_TE, type="wan", device="default")
    vae = wf.node("VAELoader", (0, 380), (320, 60), vae_name=WAN_VAE)
    text, pos, neg = _prompts(wf, clip, "a fox running through a snowy forest, tracking shot", WAN_NEGATIVE)
    latent = wf.node("EmptyHunyuanLatentVideo", (0, 480), (320, 130), width=832, height=480, length=33, batch_size=1)
    frames = _clip_over_frames(wf, (380, 470))
    motion = wf.node("VideoMotionVerifier", (380, 760), (360, 50))
    ensemble = wf.node("VerifierEnsemble", (380, 850), (360, 150))
    wf.link(frames, 0, ensemble, "verifier_1")
    wf.link(motion, 0, ensemble, "verifier_2")
    judge = b.judge_node(wf, vae, 0, ensemble, text, (380, 1040))
    search = b.ksampler_style(wf, "RandomSearchSampler", (800, 0), (400, 760), shift, pos, neg, latent, judge,
                              seed=42, steps=30, search_steps=0, cfg=6.0, sampler_name="uni_pc", scheduler="simple",
                              candidates=8, top_k=1)
    _save_video(wf, search, "best", vae, 1260, 0, "noise_search/video_wan21_random_search", 16)
    _report(wf, search, 1260, 360)
    wf.note((0, 660), (360, 420), "Random search on Wan 2.1 text-to-video (the text_to_video_wan template with its "
            "KSampler replaced).\n\n8 candidate videos are sampled (in as many per model call as memory allows; "
            "each call's candidates shrink as frames grow) and judged by a rank ensemble of CLIPScore over 4 frames "
            "and Motion, so a still video does not win. The node plays every candidate as a small animation while "
            "it runs. The seed output replays the winner with the template's stock KSampler.\n\n"
            + VIDEO_VERIFIER_NOTE)
    return wf


def video_wan22_14b_high_noise_search(info):
    b = _b()
    wf = b.Workflow(info, "video_wan22_14b_high_noise_search")
    high = wf.node("UNETLoader", (0, 0), (320, 90), title="High-noise expert", unet_name=WAN22_HIGH,
                   weight_dtype="default")
    low = wf.node("UNETLoader", (0, 130), (320, 90), title="Low-noise expert", unet_name=WAN22_LOW,
                  weight_dtype="default")
    high_shift = wf.node("ModelSamplingSD3", (0, 260), (320, 60), shift=8.0)
    low_shift = wf.node("ModelSamplingSD3", (0, 360), (320, 60), shift=8.0)
    wf.link(high, 0, high_shift, "model")
    wf.link(low, 0, low_shift, "model")
    clip = wf.node("CLIPLoader", (0, 460), (320, 110), clip_name=WAN_TE, type="wan", device="default")
    vae = wf.node("VAELoader", (0, 610), (320, 60), vae_name=WAN_VAE)
    text, pos, neg = _prompts(wf, clip, "a paper boat drifting down a rain-soaked street, cinematic", WAN_NEGATIVE)
    latent = wf.node("EmptyHunyuanLatentVideo", (0, 710), (320, 130), width=640, height=640, length=81, batch_size=1)
    guider = wf.node("CFGGuider", (380, 470), (320, 100), cfg=3.5)
    for src, name in ((high_shift, "model"), (pos, "positive"), (neg, "negative")):
        wf.link(src, 0, guider, name)
    sigmas = wf.node("BasicScheduler", (380, 610), (320, 110), scheduler="simple", steps=20, denoise=1.0)
    wf.link(high_shift, 0, sigmas, "model")
    split = wf.node("SplitSigmas", (380, 760), (320, 80), title="Hand-over at step 10", step=10)
    wf.link(sigmas, 0, split, "sigmas")
    noise = wf.node("NoiseCandidates", (380, 880), (320, 90), seed=7, count=8)
    sampler = wf.node("KSamplerSelect", (380, 1010), (320, 60), sampler_name="euler")
    verifier = _clip_over_frames(wf, (0, 880))
    judge = b.judge_node(wf, vae, 0, verifier, text, (0, 1170))
    options = wf.node("SearchRandom", (380, 1110), (320, 200), candidates=8, top_k=1)
    search = wf.node("NoiseSearch", (800, 0), (400, 600), title="Noise Search (high-noise expert)")
    for src, slot, name in ((noise, 0, "noise"), (guider, 0, "guider"), (sampler, 0, "sampler"), (split, 0, "sigmas"),
                            (latent, 0, "latent_image"), (options, 0, "search"), (judge, 0, "judge")):
        wf.link(src, slot, search, name)
    low_sampler = wf.node("KSamplerAdvanced", (1260, 0), (320, 340), title="Low-noise expert (stock)",
                          add_noise="disable", noise_seed=0, steps=20, cfg=3.5, sampler_name="euler",
                          scheduler="simple", start_at_step=10, end_at_step=10000,
                          return_with_leftover_noise="disable")
    for src, slot, name in ((low_shift, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                            (search, "best", "latent_image")):
        wf.link(src, slot, low_sampler, name)
    _save_video(wf, low_sampler, 0, vae, 1620, 0, "noise_search/video_wan22_14b_high_noise_search", 16)
    # The winner replayed with the template's two stock samplers at the search's seed output.
    replay_high = wf.node("KSamplerAdvanced", (1260, 400), (320, 340), title="Replay: high-noise expert (stock)",
                          add_noise="enable", noise_seed=7, steps=20, cfg=3.5, sampler_name="euler",
                          scheduler="simple", start_at_step=0, end_at_step=10, return_with_leftover_noise="enable")
    for src, slot, name in ((high_shift, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                            (latent, 0, "latent_image"), (search, "seed", "noise_seed")):
        wf.link(src, slot, replay_high, name)
    replay_low = wf.node("KSamplerAdvanced", (1260, 780), (320, 340), title="Replay: low-noise expert (stock)",
                         add_noise="disable", noise_seed=0, steps=20, cfg=3.5, sampler_name="euler",
                         scheduler="simple", start_at_step=10, end_at_step=10000, return_with_leftover_noise="disable")
    for src, slot, name in ((low_shift, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                            (replay_high, 0, "latent_image")):
        wf.link(src, slot, replay_low, name)
    _save_video(wf, replay_low, 0, vae, 1620, 400, "noise_search/video_wan22_14b_replay", 16)
    _report(wf, search, 1620, 780)
    wf.note((800, 640), (400, 420), "Search on the high-noise expert of Wan 2.2 14B (the video_wan2_2_14B_t2v "
            "template).\n\nNoise Search takes the first KSamplerAdvanced's place: 8 candidates are sampled with the "
            "high-noise expert on the first 10 of 20 steps only (SplitSigmas at the hand-over) and judged by the "
            "expert's x0-prediction there (one model call each), by CLIPScore over 4 frames. The winner, with its "
            "leftover noise, goes to the template's low-noise KSamplerAdvanced unchanged.\n\nThe replay branch runs "
            "the template's two stock samplers with the search's seed output: the same video.\n\n"
            + VIDEO_VERIFIER_NOTE)
    return wf


def video_ltxv_early_rejection(info):
    b = _b()
    wf = b.Workflow(info, "video_ltxv_early_rejection")
    ckpt = wf.node("CheckpointLoaderSimple", (0, 0), (320, 100), ckpt_name=LTXV)
    clip = wf.node("CLIPLoader", (0, 140), (320, 110), clip_name=LTXV_TE, type="ltxv", device="default")
    text, pos, neg = _prompts(wf, clip, "a lighthouse on a cliff at sunset, waves crashing, slow aerial shot",
                              "low quality, worst quality, deformed, distorted, motion smear")
    cond = wf.node("LTXVConditioning", (380, 470), (320, 80), frame_rate=25.0)
    wf.link(pos, 0, cond, "positive")
    wf.link(neg, 0, cond, "negative")
    latent = wf.node("EmptyLTXVLatentVideo", (0, 290), (320, 130), width=768, height=512, length=97, batch_size=1)
    guider = wf.node("CFGGuider", (380, 590), (320, 100), cfg=3.0)
    wf.link(ckpt, 0, guider, "model")
    wf.link(cond, 0, guider, "positive")
    wf.link(cond, 1, guider, "negative")
    sigmas = wf.node("LTXVScheduler", (380, 730), (320, 170), steps=30, max_shift=2.05, base_shift=0.95, stretch=True,
                     terminal=0.1)
    wf.link(latent, 0, sigmas, "latent")
    noise = wf.node("NoiseCandidates", (0, 460), (320, 90), seed=5, count=16)
    sampler = wf.node("KSamplerSelect", (0, 590), (320, 60), sampler_name="euler")
    verifier = _clip_over_frames(wf, (0, 690))
    judge = b.judge_node(wf, ckpt, 2, verifier, text, (0, 980))
    options = wf.node("SearchEarlyRejection", (380, 940), (320, 220), candidates=16, keep=0.5, levels="0.7, 0.4",
                      top_k=1)
    search = wf.node("NoiseSearch", (800, 0), (400, 600))
    for src, slot, name in ((noise, 0, "noise"), (guider, 0, "guider"), (sampler, 0, "sampler"), (sigmas, 0, "sigmas"),
                            (latent, 0, "latent_image"), (options, 0, "search"), (judge, 0, "judge")):
        wf.link(src, slot, search, name)
    _save_video(wf, search, "best", ckpt, 1260, 0, "noise_search/video_ltxv_early_rejection", 24, vae_slot=2)
    _report(wf, search, 1260, 360)
    wf.note((800, 640), (400, 380), "Early rejection on LTX-Video (the ltxv_text_to_video template with SamplerCustom "
            "replaced by CFGGuider + Noise Search).\n\n16 candidate videos start; at noise levels 0.7 and 0.4 "
            "CLIPScore over 4 frames judges their x0-predictions (the sampler computes them anyway), the better "
            "half goes on. Only 4 are denoised to the end. The winner is the template's SamplerCustom at the seed "
            "output (add_noise on).\n\n" + VIDEO_VERIFIER_NOTE)
    return wf


VIDEO_EXAMPLES = [video_wan21_random_search, video_wan22_14b_high_noise_search, video_ltxv_early_rejection]
