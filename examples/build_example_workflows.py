"""Regenerate the UI-format workflows in example_workflows/ from readable descriptions.

    python examples/build_example_workflows.py --server http://127.0.0.1:8188 [--thumbnails]

Widget values are given by input name here and written in the order the editor expects,
read from the server's /object_info (so a node that gains an input only needs a rebuild).
Run it against a ComfyUI that has this pack loaded; model names need not exist there.
--thumbnails also renders <name>.jpg beside each workflow (the template browser shows it),
by loading the workflow into the editor in headless Chromium (needs the playwright package
and /usr/bin/chromium, as tests/test_web_ui.py does).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import urllib.request
import uuid
from pathlib import Path

# Run as a script: this folder is on sys.path (the converter sits beside this file).
from workflow_convert import extra_widget_values, input_specs, is_widget

OUT = Path(__file__).resolve().parents[1] / "example_workflows"

# Download links shown by the editor's missing-models dialog (official repositories).
MODELS = {
    "v1-5-pruned-emaonly.safetensors": (
        "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors",
        "checkpoints"),
    "sd_xl_base_1.0.safetensors": (
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        "checkpoints"),
    "flux1-dev.safetensors": (
        "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
        "diffusion_models"),
    "ae.safetensors": ("https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors", "vae"),
    "clip_l.safetensors": (
        "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "text_encoders"),
    "t5xxl_fp16.safetensors": (
        "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "text_encoders"),
}

NEGATIVE = "blurry, low quality, deformed, watermark, text"
VERIFIER_NOTE = (
    "Verifier files live in ComfyUI/models/verifiers/ (official names):\n"
    "  clip/ViT-L-14-openai.safetensors\n"
    "  aesthetic/sac+logos+ava1-l14-linearMSE.pth\n"
    "  ImageReward/ImageReward.pt, ImageReward/med_config.json,\n"
    "  ImageReward/bert-base-uncased/vocab.txt\n"
    "With allow_download on, missing official files are downloaded on first use (SHA-256 checked).")


class Workflow:
    def __init__(self, info: dict, name: str):
        self.info, self.name = info, name
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def node(self, kind, pos, size=(320, 0), title=None, **widgets):
        """Add a node; widget values by input name, defaults from /object_info otherwise."""
        node_def = self.info[kind]
        values, inputs = [], []
        known = set()
        for name, spec in input_specs(node_def):
            known.add(name)
            if not is_widget(spec):
                inputs.append({"name": name, "type": spec[0], "link": None})
                continue
            values.append(widgets.pop(name) if name in widgets else default_value(spec))
            values += ["fixed"] * extra_widget_values(name, spec)  # seeds stay fixed: replayable
        if widgets:
            raise KeyError(f"{kind} has no widget inputs {sorted(widgets)} (inputs: {sorted(known)})")
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (t, n) in enumerate(zip(node_def["output"], node_def["output_name"]))]
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": kind}, "widgets_values": values}
        if size[1] == 0:
            node["size"][1] = estimate_height(node_def, values)
        if title:
            node["title"] = title
        models = [{"name": v, "url": MODELS[v][0], "directory": MODELS[v][1]}
                  for v in values if isinstance(v, str) and v in MODELS]
        if models:
            node["properties"]["models"] = models
        self.nodes.append(node)
        return node

    def note(self, pos, size, text, title="Note"):
        node = {"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "title": title,
                "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
        self.nodes.append(node)
        return node

    def link(self, src, output, dst, input_name):
        """Connect src's output (name or index) to dst's input (socket or widget input)."""
        slot = output if isinstance(output, int) else [o["name"] for o in src["outputs"]].index(output)
        out = src["outputs"][slot]
        link_id = len(self.links) + 1
        target = next((i for i in dst["inputs"] if i["name"] == input_name), None)
        if target is None:  # a widget converted to an input socket
            specs = dict(input_specs(self.info[dst["type"]]))
            if input_name not in specs:
                raise KeyError(f"{dst['type']} has no input {input_name!r}")
            target = {"name": input_name, "type": out["type"], "widget": {"name": input_name}, "link": None}
            dst["inputs"].append(target)
        if target["link"] is not None:
            raise ValueError(f"{dst['type']}.{input_name} is already connected")
        target["link"] = link_id
        out["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], dst["inputs"].index(target), out["type"]])

    def to_json(self) -> dict:
        return {
            # A stable id per example, so rebuilding does not change the files needlessly.
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"noise-search/{self.name}")),
            "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}}, "version": 0.4,
        }


def default_value(spec):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if "default" in opts:
        return opts["default"]
    options = kind if isinstance(kind, list) else opts.get("options")
    if options:
        return options[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def estimate_height(node_def, values) -> int:
    # Title + socket rows + widget rows; multiline text boxes need room to be usable.
    specs = input_specs(node_def)
    sockets = sum(not is_widget(s) for _, s in specs)
    rows = max(sockets, len(node_def["output"]))
    multiline = sum(1 for _, s in specs if is_widget(s) and len(s) > 1 and s[1].get("multiline"))
    return 30 + rows * 22 + len(values) * 24 + multiline * 60


# -- shared pieces ------------------------------------------------------------------------
def sd_text(wf: Workflow, clip_src, clip_slot, prompt: str, x: int, y: int):
    """A prompt node feeding CLIPTextEncode and (via the returned node) the verifier's condition."""
    text = wf.node("PrimitiveStringMultiline", (x, y), (360, 130), title="Prompt (also the verifier's condition)",
                   value=prompt)
    wf.prompt = prompt  # linked widgets keep the same value, shown if the link is removed
    pos = wf.node("CLIPTextEncode", (x, y + 170), (360, 100), title="Positive", text=prompt)
    wf.link(text, 0, pos, "text")
    wf.link(clip_src, clip_slot, pos, "clip")
    return text, pos


def negative(wf: Workflow, clip_src, clip_slot, x: int, y: int):
    neg = wf.node("CLIPTextEncode", (x, y), (360, 130), title="Negative", text=NEGATIVE)
    wf.link(clip_src, clip_slot, neg, "clip")
    return neg


def decode_and_save(wf, latent_src, output, vae_src, vae_slot, x, y, prefix, preview=False):
    dec = wf.node("VAEDecode", (x, y), (220, 50))
    wf.link(latent_src, output, dec, "samples")
    wf.link(vae_src, vae_slot, dec, "vae")
    if preview:
        out = wf.node("PreviewImage", (x + 250, y), (320, 300))
    else:
        out = wf.node("SaveImage", (x + 250, y), (320, 340), filename_prefix=prefix)
    wf.link(dec, 0, out, "images")
    return out


def save_and_report(wf: Workflow, search, ckpt, prefix: str):
    """The search's best image saved, and its report shown."""
    decode_and_save(wf, search, "best", ckpt, 2, 1260, 0, prefix)
    report = wf.node("PreviewAny", (1260, 400), (420, 400), title="Search report")
    wf.link(search, "report", report, "source")


# -- the examples --------------------------------------------------------------------------
SD15 = "v1-5-pruned-emaonly.safetensors"


def sd_start(info, name: str, ckpt_name: str, prompt: str, latent_at=(0, 180), size=512, batch=1, title=None):
    """A workflow that starts as the stock text-to-image graph: checkpoint, prompt (also the
    verifier's condition), negative prompt and (``latent_at`` not None) an empty latent."""
    wf = Workflow(info, name)
    ckpt = wf.node("CheckpointLoaderSimple", (0, 0), (320, 100), ckpt_name=ckpt_name)
    text, pos = sd_text(wf, ckpt, 1, prompt, 380, 0)
    neg = negative(wf, ckpt, 1, 380, 320)
    latent = None if latent_at is None else wf.node("EmptyLatentImage", latent_at, (320, 110), title=title,
                                                    width=size, height=size, batch_size=batch)
    return wf, ckpt, text, pos, neg, latent


def judge_node(wf: Workflow, vae_src, vae_slot, verifier, text, pos, title="Search Judge"):
    """A Search Judge: the VAE that decodes candidates, the verifier, the prompt as its condition."""
    judge = wf.node("SearchJudge", pos, (360, 170), title=title, condition=wf.prompt)
    wf.link(vae_src, vae_slot, judge, "vae")
    wf.link(verifier, 0, judge, "verifier")
    wf.link(text, 0, judge, "condition")
    return judge


def ksampler_style(wf: Workflow, kind, pos, size, ckpt, positive, negative, latent, judge, **widgets):
    """A KSampler-style search node wired as a stock KSampler is, plus its judge."""
    search = wf.node(kind, pos, size, **widgets)
    for src, slot, name in ((ckpt, 0, "model"), (positive, 0, "positive"), (negative, 0, "negative"),
                            (latent, 0, "latent_image"), (judge, 0, "judge")):
        wf.link(src, slot, search, name)
    return search


def sd15_random_search_imagereward(info):
    wf, ckpt, text, pos, neg, latent = sd_start(
        info, "sd15_random_search_imagereward", SD15, "a photo of an astronaut riding a horse on the moon, highly detailed")
    verifier = wf.node("ImageRewardVerifierLoader", (0, 340), (320, 160))
    judge = judge_node(wf, ckpt, 2, verifier, text, (380, 490))
    search = ksampler_style(wf, "RandomSearchSampler", (800, 0), (400, 760), ckpt, pos, neg, latent, judge,
                            seed=42, steps=25, search_steps=0, cfg=7.0, sampler_name="euler", scheduler="normal",
                            candidates=16, top_k=4)
    decode_and_save(wf, search, "best", ckpt, 2, 1260, 0, "noise_search/sd15_random_imagereward")
    decode_and_save(wf, search, "top_k", ckpt, 2, 1260, 400, "", preview=True)
    scores = wf.node("PreviewAny", (1260, 760), (400, 160), title="Top scores")
    wf.link(search, "scores", scores, "source")
    wf.note((0, 560), (360, 330), "Random search (best-of-N), the paper's simplest search.\n\n"
            "Random Search samples `candidates` noises with the sampler, decodes each, scores it with "
            "ImageReward against the prompt (the Search Judge) and keeps the best. The node shows every "
            "candidate with its score while it runs, and the best score against NFEs.\n\n"
            "search_steps < steps makes the search cheaper (the kept candidates are regenerated with the "
            "full steps and scored again). Candidate i is the stock KSampler's sample at seed + i: the seed "
            "output replays the winner with a stock KSampler on a batch of 1 (see the replay example).\n\n"
            + VERIFIER_NOTE)
    return wf


def sdxl_zero_order_ensemble(info):
    wf, ckpt, text, pos, neg, latent = sd_start(
        info, "sdxl_zero_order_ensemble", "sd_xl_base_1.0.safetensors",
        "a cozy cabin in a snowy forest at dusk, warm light in the windows, cinematic", size=1024)
    aesthetic = wf.node("AestheticVerifierLoader", (0, 500), (360, 180))
    clip = wf.node("CLIPScoreVerifierLoader", (0, 720), (360, 160))
    reward = wf.node("ImageRewardVerifierLoader", (0, 920), (360, 160))
    ensemble = wf.node("VerifierEnsemble", (400, 560), (320, 240))
    for i, v in enumerate((aesthetic, clip, reward), start=1):
        wf.link(v, 0, ensemble, f"verifier_{i}")
    judge = judge_node(wf, ckpt, 2, ensemble, text, (400, 840))
    search = ksampler_style(wf, "ZeroOrderSearchSampler", (800, 0), (400, 820), ckpt, pos, neg, latent, judge,
                            seed=7, steps=30, search_steps=10, cfg=7.0, sampler_name="euler", scheduler="normal",
                            neighbours=2, iterations=8, angle=30.0, restart=True, top_k=1)
    save_and_report(wf, search, ckpt, "noise_search/sdxl_zero_order_ensemble")
    wf.note((800, 860), (400, 300), "Zero-order search (ZO-2) with the verifier ensemble.\n\n"
            "Each iteration draws 2 neighbours of the pivot noise at the given angle, scores them and "
            "moves the pivot to the best; 8 iterations. search_steps=10 keeps each candidate cheap; the "
            "winner is regenerated with 30 steps.\n\n"
            "The ensemble ranks the pivot together with its neighbours under Aesthetic, CLIPScore and "
            "ImageReward; a neighbour with a better mean rank becomes the pivot (the paper's ensemble). The "
            "report shows every round's pivot and whether it moved.\n\n" + VERIFIER_NOTE)
    return wf


def flux_path_search_clipscore(info):
    wf = Workflow(info, "flux_path_search_clipscore")
    unet = wf.node("UNETLoader", (0, 0), (320, 90), unet_name="flux1-dev.safetensors", weight_dtype="default")
    clips = wf.node("DualCLIPLoader", (0, 130), (320, 140), clip_name1="clip_l.safetensors",
                    clip_name2="t5xxl_fp16.safetensors", type="flux")
    vae = wf.node("VAELoader", (0, 310), (320, 60), vae_name="ae.safetensors")
    text, pos = sd_text(wf, clips, 0, "a red fox reading a newspaper in a Paris cafe, film photograph", 380, 0)
    guidance = wf.node("FluxGuidance", (380, 320), (360, 60), guidance=3.5)
    wf.link(pos, 0, guidance, "conditioning")
    guider = wf.node("BasicGuider", (380, 420), (240, 50))
    wf.link(unet, 0, guider, "model")
    wf.link(guidance, 0, guider, "conditioning")
    noise = wf.node("RandomNoise", (0, 410), (320, 90), noise_seed=11)
    sampler = wf.node("KSamplerSelect", (0, 540), (320, 60), sampler_name="euler")
    sigmas = wf.node("BasicScheduler", (0, 640), (320, 110), scheduler="simple", steps=30, denoise=1.0)
    wf.link(unet, 0, sigmas, "model")
    latent = wf.node("EmptySD3LatentImage", (0, 790), (320, 110), width=1024, height=1024, batch_size=1)
    verifier = wf.node("CLIPScoreVerifierLoader", (380, 510), (360, 160))
    judge = judge_node(wf, vae, 0, verifier, text, (380, 710))
    paths = wf.node("SearchPaths", (380, 920), (360, 300), paths=2, branches=2, start=0.4, forward=0.2,
                    backward=0.3, interval_steps=4, top_k=1)
    search = wf.node("NoiseSearch", (800, 0), (400, 600))
    for src, slot, name in ((noise, 0, "noise"), (guider, 0, "guider"), (sampler, 0, "sampler"),
                            (sigmas, 0, "sigmas"), (latent, 0, "latent_image"), (paths, 0, "search"),
                            (judge, 0, "judge")):
        wf.link(src, slot, search, name)
    decode_and_save(wf, search, "best", vae, 0, 1260, 0, "noise_search/flux_path_search_clipscore")
    wf.note((800, 640), (400, 360), "Search over paths (Paths-2) on FLUX.1-dev with CLIPScore.\n\n"
            "Path Search Options builds the SEARCH; Noise Search runs it with the custom-sampling parts (any "
            "search options node plugs in there) and judges with the Search Judge. 2 paths are denoised to "
            "`start` (a noise level: t has the signal-to-noise ratio of (1 - t) x0 + t noise; on FLUX sigma = "
            "t); each round re-noises every path with 2 fresh noises by `forward`, denoises by `backward` in "
            "interval_steps steps, scores the x0-prediction and keeps the best 2, until the image is clean.\n\n"
            "FLUX files: flux1-dev.safetensors in models/diffusion_models, clip_l.safetensors and "
            "t5xxl_fp16.safetensors in models/text_encoders, ae.safetensors in models/vae.\n\n"
            + VERIFIER_NOTE)
    return wf


def verifier_score_best_of_batch(info):
    wf, ckpt, text, pos, neg, latent = sd_start(
        info, "verifier_score_best_of_batch", SD15, "a watercolor painting of a lighthouse on a cliff at sunrise", batch=8)
    sampler = wf.node("KSampler", (800, 0), (320, 270), seed=42, steps=25, cfg=7.0, sampler_name="euler",
                      scheduler="normal", denoise=1.0)
    for src, slot, name in ((ckpt, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                            (latent, 0, "latent_image")):
        wf.link(src, slot, sampler, name)
    dec = wf.node("VAEDecode", (800, 320), (220, 50))
    wf.link(sampler, 0, dec, "samples")
    wf.link(ckpt, 2, dec, "vae")
    verifier = wf.node("CLIPScoreVerifierLoader", (0, 340), (360, 160))
    score = wf.node("VerifierScore", (1160, 0), (340, 260), condition=wf.prompt)
    wf.link(dec, 0, score, "images")
    wf.link(verifier, 0, score, "verifier")
    wf.link(text, 0, score, "condition")
    save = wf.node("SaveImage", (1540, 0), (320, 340), filename_prefix="noise_search/best_of_batch")
    wf.link(score, "best_image", save, "images")
    ranked = wf.node("PreviewImage", (1540, 380), (320, 300), title="All images, best first")
    wf.link(score, "sorted_images", ranked, "images")
    scores = wf.node("PreviewAny", (1160, 320), (340, 160), title="Scores (batch order)")
    wf.link(score, "scores", scores, "source")
    wf.note((0, 560), (360, 250), "Best-of-N without a search node.\n\n"
            "A plain KSampler makes a batch of 8; VerifierScore scores every image with CLIPScore against the "
            "prompt and returns the best one, its index and score, every score, and the batch sorted best "
            "first.\n\n" + VERIFIER_NOTE)
    return wf


def replay_winner_stock_nodes(info):
    wf, ckpt, text, pos, neg, _ = sd_start(
        info, "replay_winner_stock_nodes", SD15, "a bowl of ramen on a wooden table, studio lighting", latent_at=None)
    steps = wf.node("PrimitiveInt", (0, 150), (320, 90), title="steps", value=20)
    cfg = wf.node("PrimitiveFloat", (0, 280), (320, 60), title="cfg", value=7.0)
    latent = wf.node("EmptyLatentImage", (0, 380), (320, 110), width=512, height=512, batch_size=1)
    verifier = wf.node("CLIPScoreVerifierLoader", (0, 530), (360, 160))
    judge = judge_node(wf, ckpt, 2, verifier, text, (380, 490))
    search = ksampler_style(wf, "RandomSearchSampler", (800, 0), (400, 760), ckpt, pos, neg, latent, judge,
                            seed=42, steps=20, search_steps=0, cfg=7.0, sampler_name="euler_ancestral",
                            scheduler="normal", candidates=8, top_k=1)
    wf.link(steps, 0, search, "steps")
    wf.link(cfg, 0, search, "cfg")
    decode_and_save(wf, search, "best", ckpt, 2, 1260, 0, "noise_search/replay_search_best")

    # 1) Stock KSampler: candidate i is the stock sample at seed + i on a batch of 1.
    ks = wf.node("KSampler", (1260, 400), (320, 270), seed=42, steps=20, cfg=7.0, sampler_name="euler_ancestral",
                 scheduler="normal", denoise=1.0)
    for src, slot, name in ((ckpt, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                            (latent, 0, "latent_image"), (search, "seed", "seed"), (steps, 0, "steps"),
                            (cfg, 0, "cfg")):
        wf.link(src, slot, ks, name)
    decode_and_save(wf, ks, 0, ckpt, 2, 1620, 400, "noise_search/replay_ksampler")

    # 2) The winner's noise with SamplerCustomAdvanced (works for zero-order winners too).
    guider = wf.node("CFGGuider", (1260, 940), (320, 100), cfg=7.0)
    for src, slot, name in ((ckpt, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"), (cfg, 0, "cfg")):
        wf.link(src, slot, guider, name)
    ksel = wf.node("KSamplerSelect", (1260, 1080), (320, 60), sampler_name="euler_ancestral")
    sched = wf.node("BasicScheduler", (1260, 1180), (320, 110), scheduler="normal", steps=20, denoise=1.0)
    wf.link(ckpt, 0, sched, "model")
    wf.link(steps, 0, sched, "steps")
    custom = wf.node("SamplerCustomAdvanced", (1620, 940), (320, 130))
    for src, slot, name in ((search, "replay_noise", "noise"), (guider, 0, "guider"), (ksel, 0, "sampler"),
                            (sched, 0, "sigmas"), (latent, 0, "latent_image")):
        wf.link(src, slot, custom, name)
    decode_and_save(wf, custom, "output", ckpt, 2, 1980, 940, "noise_search/replay_custom")
    wf.note((0, 730), (360, 330), "Replaying a search winner with stock nodes.\n\n"
            "Candidate i of Random Search is exactly the stock KSampler's sample at seed + i on a latent of "
            "batch size 1, for every sampler (the per-step noise of ancestral and SDE samplers comes from "
            "that seed too; this example uses euler_ancestral). The seed output is that seed: feed it to a "
            "KSampler with the same model, prompts, steps, cfg, sampler and scheduler (steps and cfg are "
            "shared here).\n\n"
            "replay_noise -> SamplerCustomAdvanced does the same from the winner's noise, and also works for "
            "zero-order winners. All three saved images are the same picture.")
    return wf


def report_example(info, name: str, prompt: str, verifier_kind: str, verifier_size, kind: str, size, prefix: str,
                   note: str, **widgets):
    """A KSampler-style search judged by one verifier, its best image saved and its report shown."""
    wf, ckpt, text, pos, neg, latent = sd_start(info, name, SD15, prompt)
    verifier = wf.node(verifier_kind, (0, 340), verifier_size)
    judge = judge_node(wf, ckpt, 2, verifier, text, (380, 490))
    search = ksampler_style(wf, kind, (800, 0), size, ckpt, pos, neg, latent, judge, **widgets)
    save_and_report(wf, search, ckpt, prefix)
    wf.note((0, 560), (360, 360), note + VERIFIER_NOTE)
    return wf


def sd15_particle_steering_clipscore(info):
    return report_example(
        info, "sd15_particle_steering_clipscore", "a red apple and a green pear on a white plate, studio photograph",
        "CLIPScoreVerifierLoader", (360, 160), "ParticleSteeringSampler", (400, 860),
        "noise_search/sd15_particle_steering",
        "Particle steering (Feynman-Kac steering).\n\n"
        "4 particles are sampled together; every 5 steps each is weighted by CLIPScore's reward of its "
        "x0-prediction (potential max: the best reward of its lineage, lambda 10) and, when the weights "
        "grow uneven, the particles are resampled: good ones are copied, poor ones dropped. "
        "euler_ancestral's own per-step noise makes copies part ways. The best final particle wins.\n\n"
        "judged at: the sampler's last x0-prediction, one step before the resampling point, costs nothing; "
        "'at the resampling point' (the paper's definition) costs one model call per particle there.\n\n"
        "Choose it to steer sampling itself toward the verifier for about the cost of 4 samples. Its winner "
        "is not one noise's sample: the best output is the result.\n\n",
        seed=3, steps=25, cfg=7.0, sampler_name="euler_ancestral", scheduler="normal", particles=4, potential="max",
        lmbda=10.0, interval=5, ess_threshold=0.5, judge_at="last step (cheaper, one step early)", top_k=1)


def sd15_early_rejection_imagereward(info):
    return report_example(
        info, "sd15_early_rejection_imagereward", "a knight in ornate silver armor in a misty forest, oil painting",
        "ImageRewardVerifierLoader", (320, 160), "EarlyRejectionSampler", (400, 720),
        "noise_search/sd15_early_rejection",
        "Early rejection (successive halving).\n\n"
        "32 candidate noises start together; at noise levels 0.7 and 0.4 ImageReward judges their "
        "x0-predictions (free: the sampler computes them), the better half goes on and the rest stop. "
        "Only the 8 survivors are denoised to the end, and the best wins.\n\n"
        "Choose it to try many more noises than full samples would pay for, when early x0-predictions "
        "already tell good from bad. The winner is the stock KSampler's sample at the seed output, like "
        "random search's.\n\n",
        seed=21, steps=25, cfg=7.0, sampler_name="euler", scheduler="normal", candidates=32, keep=0.5,
        levels="0.7, 0.4", top_k=1)


def sd15_tree_search_custom(info):
    wf, ckpt, text, pos, neg, _ = sd_start(
        info, "sd15_tree_search_custom", SD15, "a tiny house on a floating island above the clouds, concept art",
        latent_at=None)
    guider = wf.node("CFGGuider", (0, 150), (320, 100), cfg=7.0)
    for src, slot, name in ((ckpt, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative")):
        wf.link(src, slot, guider, name)
    noise = wf.node("NoiseCandidates", (0, 290), (320, 110), seed=5, count=2)
    sampler = wf.node("KSamplerSelect", (0, 440), (320, 60), sampler_name="euler_ancestral")
    sigmas = wf.node("BasicScheduler", (0, 540), (320, 110), scheduler="normal", steps=20, denoise=1.0)
    wf.link(ckpt, 0, sigmas, "model")
    latent = wf.node("EmptyLatentImage", (0, 690), (320, 110), width=512, height=512, batch_size=1)
    verifier = wf.node("CLIPScoreVerifierLoader", (0, 840), (360, 160))
    judge = judge_node(wf, ckpt, 2, verifier, text, (380, 490))
    tree = wf.node("SearchTree", (380, 700), (360, 330), rollouts=16, branches=2, lmbda=1.0, greedy=True, wave=4,
                   renoise=0.1, top_k=1)
    search = wf.node("NoiseSearch", (800, 0), (400, 600))
    for src, slot, name in ((noise, 0, "noise"), (guider, 0, "guider"), (sampler, 0, "sampler"),
                            (sigmas, 0, "sigmas"), (latent, 0, "latent_image"), (tree, 0, "search"),
                            (judge, 0, "judge")):
        wf.link(src, slot, search, name)
    save_and_report(wf, search, ckpt, "noise_search/sd15_tree_search")
    wf.note((800, 640), (400, 380), "Diffusion tree search (DTS*), with the custom-sampling nodes.\n\n"
            "Diffusion Tree Search Options builds the SEARCH: 16 rollouts through a tree of euler_ancestral "
            "steps, 2 children per node, waves of 4 rollouts sharing model calls. Each rollout descends to the "
            "child of highest soft value (backed up from CLIPScore's rewards of finished samples) and branches "
            "off where the tree is not grown out; it pays only the steps below its branch.\n\n"
            "Noise Search runs any SEARCH with a GUIDER, SAMPLER and SIGMAS; Noise Candidates gives the tree "
            "its first noises (noise i is the stock noise at seed + i).\n\n"
            "Choose it for large budgets, where reusing good partial trajectories beats independent samples. "
            "Its winner is not one noise's sample: the best output is the result.\n\n" + VERIFIER_NOTE)
    return wf


def sd15_latent_batch_random_search(info):
    wf, ckpt, text, pos, neg, latent = sd_start(
        info, "sd15_latent_batch_random_search", SD15,
        "a portrait of a smiling old fisherman, golden hour, 85mm photograph", batch=4,
        title="Latent batch (each searched alone)")
    verifier = wf.node("ImageRewardVerifierLoader", (0, 340), (320, 160))
    judge = judge_node(wf, ckpt, 2, verifier, text, (380, 490))
    search = ksampler_style(wf, "RandomSearchSampler", (800, 0), (400, 760), ckpt, pos, neg, latent, judge,
                            seed=100, steps=25, search_steps=0, cfg=7.0, sampler_name="euler_ancestral",
                            scheduler="normal", candidates=8, top_k=1)
    decode_and_save(wf, search, "best", ckpt, 2, 1260, 0, "noise_search/latent_batch_winners")

    # Latent 0's winner replayed alone: LatentFromBatch(0) + a stock KSampler at the seed output.
    first = wf.node("LatentFromBatch", (1260, 400), (320, 90), batch_index=0, length=1)
    wf.link(latent, 0, first, "samples")
    ks = wf.node("KSampler", (1260, 530), (320, 270), seed=100, steps=25, cfg=7.0, sampler_name="euler_ancestral",
                 scheduler="normal", denoise=1.0)
    for src, slot, name in ((ckpt, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                            (first, 0, "latent_image"), (search, "seed", "seed")):
        wf.link(src, slot, ks, name)
    decode_and_save(wf, ks, 0, ckpt, 2, 1620, 530, "noise_search/latent_batch_replay_0")
    report = wf.node("PreviewAny", (1260, 860), (420, 300), title="Search report (one entry per latent)")
    wf.link(search, "report", report, "source")
    wf.note((0, 560), (360, 380), "A latent batch: every latent is its own search, all in one pass.\n\n"
            "The 4 latents of the batch are 4 problems: each gets 8 candidates, its own winner and its own "
            "entry in the report (problems); model calls carry the rows of all of them. best holds the 4 "
            "winners; latent b's winner is what that latent gives searched alone.\n\n"
            "Replay: latent b's winner is LatentFromBatch(b) sampled by a stock KSampler at the seed the "
            "report gives for it, for every sampler (here latent 0's, whose seed is the seed output). For "
            "deterministic samplers it is also element b of a stock KSampler run on the whole batch at that "
            "seed.\n\nFor a condition per latent, write a JSON list in the judge's condition: "
            "[\"a cat\", \"a dog\", ...].\n\n" + VERIFIER_NOTE)
    return wf


EXAMPLES = [sd15_random_search_imagereward, sdxl_zero_order_ensemble, flux_path_search_clipscore,
            verifier_score_best_of_batch, replay_winner_stock_nodes, sd15_particle_steering_clipscore,
            sd15_early_rejection_imagereward, sd15_tree_search_custom, sd15_latent_batch_random_search]

# The video examples (examples/video_examples.py): their models' download links, then their builders.
from video_examples import VIDEO_EXAMPLES, VIDEO_MODELS  # noqa: E402

MODELS.update(VIDEO_MODELS)
EXAMPLES += VIDEO_EXAMPLES


def build_all(object_info: dict) -> dict[str, dict]:
    return {fn.__name__: fn(object_info).to_json() for fn in EXAMPLES}


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render_thumbnails(server: str, workflows: dict[str, dict], out: Path, chromium="/usr/bin/chromium") -> None:
    """Screenshot each workflow's graph in the editor, as the template browser's thumbnail."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    # A fresh user's first visit opens the template browser over the graph: mark it seen.
    seen = urllib.request.Request(server.rstrip("/") + "/settings/Comfy.TutorialCompleted",  # noqa: S310
                                  data=b"true", method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(seen, timeout=60).close()  # noqa: S310 (the given server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1200})
        page.goto(server)
        page.wait_for_function("window.app?.graph && window.app.extensionManager?.command", timeout=120_000)
        # Focus mode hides the menus and panels; the rest goes with the canvas info.
        page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        page.add_style_tag(content=".comfy-menu-hamburger, .p-buttongroup { display: none !important; }")
        # Full detail at any zoom, for this page only (the user's settings stay as they are).
        page.evaluate("() => { app.canvas.show_info = false; app.canvas.min_font_size_for_lod = 0; }")
        for name, workflow in workflows.items():
            page.evaluate("""async wf => {
                await app.loadGraphData(wf);
                const nodes = app.graph.nodes;
                const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 30));
                const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
                const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
                app.canvas.ds.fitToBounds([x0 - 20, y0 - 20, x1 - x0 + 40, y1 - y0 + 40], {zoom: 1});
                app.canvas.setDirty(true, true); }""", workflow)
            page.keyboard.press("Escape")  # a missing-models dialog, if any
            page.wait_for_timeout(800)
            path = out / f"{name}.jpg"
            shot = Image.open(io.BytesIO(page.screenshot(type="png")))
            shot.thumbnail((900, 600))
            shot.convert("RGB").save(path, quality=85)
            print(f"wrote {path}")
        browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI with this pack loaded")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--thumbnails", action="store_true", help="also render <name>.jpg (headless Chromium)")
    args = parser.parse_args(argv)
    with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=60) as r:  # noqa: S310
        info = json.load(r)
    args.out.mkdir(parents=True, exist_ok=True)
    workflows = build_all(info)
    for name, workflow in workflows.items():
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(workflow, indent=2) + "\n")
        print(f"wrote {path}")
    if args.thumbnails:
        render_thumbnails(args.server, workflows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
