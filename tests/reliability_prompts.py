"""API prompts and helpers for the reliability tests (bad input, interrupts, soak, determinism).

Every prompt is tiny on purpose (32 px latents, 2 steps, a few candidates): the tests run
on a shared 2-core CPU. The verifier is the brightness classifier from
``tests.verifier_fixtures`` (a one-layer convnet: loading and scoring cost nothing), placed
in the live server's own ``models/verifiers`` folder by :func:`install_verifiers`.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import tests.verifier_fixtures as vf

CKPT = "tiny_sd15.safetensors"
CLASSIFIER = "classifiers/rel_brightness.safetensors"
IMAGEREWARD = "ImageReward/ImageReward.pt"

# Node ids of the shared graph (the JUDGE and the SEARCH options node: the current nodes only).
CKPT_ID, POS_ID, NEG_ID, LATENT_ID, VERIFIER_ID, SEARCH_ID, DECODE_ID, SAVE_ID, JUDGE_ID, OPTIONS_ID = (
    "1", "2", "3", "4", "5", "10", "11", "12", "13", "14")
JUDGING = ("vae", "verifier", "condition")

SEARCH_NODES = ("RandomSearch", "ZeroOrderSearch", "PathSearch",
                "RandomSearchAdvanced", "ZeroOrderSearchAdvanced", "PathSearchAdvanced")


def install_verifiers(live, tmp: Path) -> dict[str, str]:
    """Put the tiny verifier files into the live server's `verifiers` folder (idempotent)."""
    root = live.dirs["models"] / "verifiers"
    dest = root / CLASSIFIER
    if not dest.is_file():
        src = vf.write_brightness_classifier(Path(tmp), name="rel_brightness")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.with_suffix(".json"), dest.with_suffix(".json"))
        shutil.copyfile(src, dest)
    if vf.IMAGEREWARD_FIXTURE.is_dir() and not (root / IMAGEREWARD).is_file():
        vf.write_imagereward(root)
    return {"classifier": CLASSIFIER, "imagereward": IMAGEREWARD}


# -- graph pieces -------------------------------------------------------------------------------
def base_graph(text: str = "a red cube", size: int = 32, batch: int = 1, verifier_node: dict | None = None) -> dict:
    return {
        CKPT_ID: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        POS_ID: {"class_type": "CLIPTextEncode", "inputs": {"clip": [CKPT_ID, 1], "text": text}},
        NEG_ID: {"class_type": "CLIPTextEncode", "inputs": {"clip": [CKPT_ID, 1], "text": ""}},
        LATENT_ID: {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        VERIFIER_ID: verifier_node or classifier_verifier(),
    }


def classifier_verifier(name: str = CLASSIFIER) -> dict:
    return {"class_type": "ClassifierVerifierLoader", "inputs": {"classifier_file": name}}


def imagereward_verifier(model_file: str = IMAGEREWARD) -> dict:
    return {"class_type": "ImageRewardVerifierLoader",
            "inputs": {"model_file": model_file, "med_config_file": "ImageReward/med_config.json",
                       "tokenizer_dir": "ImageReward/bert-base-uncased", "precision": "fp32",
                       "allow_download": False}}


def verifier_common(**kw) -> dict:
    out = {"vae": [CKPT_ID, 2], "verifier": [VERIFIER_ID, 0], "condition": "bright", "budget": 0, "top_k": 1,
           "batch_size": 0}
    out.update(kw)
    return out


def ksampler_common(**kw) -> dict:
    out = {"model": [CKPT_ID, 0], "seed": 7, "steps": 2, "search_steps": 0, "cfg": 2.0, "sampler_name": "euler",
           "scheduler": "normal", "positive": [POS_ID, 0], "negative": [NEG_ID, 0],
           "latent_image": [LATENT_ID, 0], "denoise": 1.0}
    out.update(kw)
    return out


ALGORITHM_INPUTS = {
    "RandomSearch": {"candidates": 2},
    "ZeroOrderSearch": {"neighbours": 2, "iterations": 1, "angle": 30.0, "restart": False},
    # start 0.5, one round 0.5 -> 0.7 -> 0: two steps to the start, 2 in the round.
    "PathSearch": {"paths": 2, "branches": 2, "start": 0.5, "forward": 0.2, "backward": 0.7,
                   "interval_steps": 2},
}
# The current nodes: the KSampler-style node and the search options node of each strategy above
# (judged by a Search Judge), and NoiseSearch (fed by the random search's options node).
CURRENT = {"RandomSearchSampler": "RandomSearch", "ZeroOrderSearchSampler": "ZeroOrderSearch",
           "PathSearchSampler": "PathSearch", "NoiseSearch": "RandomSearch"}


def current_prompt(prompt: dict, node: str, inputs: dict) -> dict:
    """``node`` (one of CURRENT) in the shared graph: judging through a Search Judge; for
    NoiseSearch, the strategy's options and search settings in a search options node.
    ``inputs`` go where they belong (a value of ``None`` removes the input)."""
    judge = {"vae": [CKPT_ID, 2], "verifier": [VERIFIER_ID, 0], "condition": "bright"}
    settings = {"budget": 0, "top_k": 1, "batch_size": 0}
    if node == "NoiseSearch":
        prompt.update(advanced_parts())
        own = {"noise": ["20", 0], "guider": ["21", 0], "sampler": ["22", 0], "sigmas": ["23", 0],
               "latent_image": [LATENT_ID, 0], "search": [OPTIONS_ID, 0], "judge": [JUDGE_ID, 0]}
        options = {**ALGORITHM_INPUTS[CURRENT[node]], **settings}
    else:
        own = {**ksampler_common(), **ALGORITHM_INPUTS[CURRENT[node]], **settings, "judge": [JUDGE_ID, 0]}
        if node == "PathSearchSampler":
            own.pop("search_steps")  # it searches on the full schedule only
        options = None
    for k, v in inputs.items():
        where = judge if k in JUDGING else own if options is None or k in own else options
        if v is None:
            where.pop(k, None)
        else:
            where[k] = v
    prompt[JUDGE_ID] = {"class_type": "SearchJudge", "inputs": judge}
    if options is not None:
        prompt[OPTIONS_ID] = {"class_type": "SearchRandom", "inputs": options}
        if isinstance(options.get("candidates"), int):  # NoiseCandidates supplies what the search starts from
            prompt["20"]["inputs"]["count"] = max(prompt["20"]["inputs"]["count"], options["candidates"])
    prompt[SEARCH_ID] = {"class_type": node, "inputs": own}
    return prompt


def search_prompt(node: str = "RandomSearch", *, save: bool = True, text: str = "a red cube",
                  size: int = 32, batch: int = 1, verifier_node: dict | None = None, **inputs) -> dict:
    """A whole prompt: tiny checkpoint -> search node -> VAEDecode -> SaveImage.

    ``inputs`` override the search node's inputs (a value of ``None`` removes the input).
    """
    prompt = base_graph(text, size, batch, verifier_node)
    if node in CURRENT:
        current_prompt(prompt, node, inputs)
    else:
        prompt[SEARCH_ID] = {"class_type": node, "inputs": earlier_inputs(prompt, node, inputs)}
    if save:
        prompt[DECODE_ID] = {"class_type": "VAEDecode", "inputs": {"samples": [SEARCH_ID, 0], "vae": [CKPT_ID, 2]}}
        prompt[SAVE_ID] = {"class_type": "SaveImage", "inputs": {"images": [DECODE_ID, 0],
                                                                 "filename_prefix": "reliability"}}
    else:
        # PreviewAny makes the report string an output without writing an image.
        prompt[SAVE_ID] = {"class_type": "PreviewAny", "inputs": {"source": [SEARCH_ID, len_outputs(node) - 1]}}
    return prompt


def earlier_inputs(prompt: dict, node: str, inputs: dict) -> dict:
    """The inputs of an earlier release's node (judging inputs of its own); the Advanced ones get
    their custom-sampling parts added to ``prompt``."""
    if node.endswith("Advanced"):
        base = node.removesuffix("Advanced")
        prompt.update(advanced_parts())
        node_inputs = {"noise": ["20", 0], "guider": ["21", 0], "sampler": ["22", 0], "sigmas": ["23", 0],
                       "latent_image": [LATENT_ID, 0]}
    else:
        base = node
        node_inputs = ksampler_common()
    node_inputs.update(ALGORITHM_INPUTS[base])
    if base == "RandomSearch" and node.endswith("Advanced"):
        node_inputs["candidates"] = 2
    node_inputs.update(verifier_common())
    for k, v in inputs.items():
        if v is None:
            node_inputs.pop(k, None)
        else:
            node_inputs[k] = v
    return node_inputs


def len_outputs(node: str) -> int:
    if node in CURRENT:
        return 7  # best, top, scores, best_score, replay_noise, seed, report
    return {"RandomSearch": 8, "RandomSearchAdvanced": 6}.get(node, 6 if "ZeroOrder" in node else 5)


def advanced_parts(steps: int = 2, seed: int = 7) -> dict:
    return {
        "20": {"class_type": "NoiseCandidates", "inputs": {"seed": seed, "count": 2}},
        "21": {"class_type": "CFGGuider", "inputs": {"model": [CKPT_ID, 0], "positive": [POS_ID, 0],
                                                     "negative": [NEG_ID, 0], "cfg": 2.0}},
        "22": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "23": {"class_type": "BasicScheduler", "inputs": {"model": [CKPT_ID, 0], "scheduler": "normal",
                                                          "steps": steps, "denoise": 1.0}},
    }


def with_nodes(prompt: dict, **extra) -> dict:
    """A copy of ``prompt`` with extra nodes (id -> node) added or replaced."""
    out = copy.deepcopy(prompt)
    out.update(extra)
    return out


def renumbered(prompt: dict, offset: int = 100) -> dict:
    """The same graph under different node ids (ComfyUI's cache keys on ids and inputs)."""
    mapping = {k: str(int(k) + offset) for k in prompt}
    out = {}
    for k, node in prompt.items():
        node = copy.deepcopy(node)
        for name, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in mapping:
                node["inputs"][name] = [mapping[v[0]], v[1]]
        out[mapping[k]] = node
    return out


# -- reading results ----------------------------------------------------------------------------
def error_text(result: dict) -> str:
    """Everything a user would read about a failed prompt, as one lower-case string."""
    parts: list[str] = []
    if result["status"] == "rejected":
        body = result.get("body")
        if isinstance(body, dict):
            err = body.get("error") or {}
            parts += [str(err.get("message", "")), str(err.get("details", ""))]
            for nid, ne in (body.get("node_errors") or {}).items():
                parts.append(f"node {nid} {ne.get('class_type', '')}")
                for e in ne.get("errors", []):
                    extra = e.get("extra_info") or {}
                    parts += [str(e.get("type", "")), str(e.get("message", "")), str(e.get("details", "")),
                              str(extra.get("input_name", ""))]
        else:
            parts.append(str(body))
    elif result["status"] == "error":
        data = result.get("data") or {}
        parts += [str(data.get("node_type", "")), str(data.get("exception_type", "")),
                  str(data.get("exception_message", ""))]
    return "\n".join(parts).lower()


def rejected_inputs(result: dict) -> set[str]:
    """Input names named by the node_errors of a rejected prompt."""
    names = set()
    body = result.get("body") or {}
    for ne in (body.get("node_errors") or {}).values() if isinstance(body, dict) else []:
        for e in ne.get("errors", []):
            name = (e.get("extra_info") or {}).get("input_name")
            if name:
                names.add(name)
    return names


def progress_messages(result: dict, node_id: str = SEARCH_ID) -> list[dict]:
    return [m for m in result.get("messages", []) if m["type"] == "progress"
            and str(m["data"].get("node")) == node_id]
