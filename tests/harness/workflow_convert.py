"""The example workflows on the test server: UI -> API conversion (examples/workflow_convert.py),
tiny stand-ins for the standard model files, tiny settings, and tiny verifier files.

What is substituted, and why (no real weights exist here):

- ``v1-5-pruned-emaonly.safetensors``, ``sd_xl_base_1.0.safetensors`` -> the tiny SD1.5-shaped
  checkpoint. The SDXL graph is the same node graph (CheckpointLoaderSimple, CLIPTextEncode);
  only the architecture behind it differs, which the pack's nodes do not depend on.
- FLUX: ``flux1-dev.safetensors`` (UNETLoader) -> the tiny UNet, ``ae.safetensors`` (VAELoader)
  -> the tiny TAESD. DualCLIPLoader (CLIP-L + T5-XXL) has no tiny stand-in, so the node is
  replaced by CheckpointLoaderSimple(tiny) and its CLIP output is taken from slot 1.
  EmptySD3LatentImage (16 channels) becomes EmptyLatentImage (4 channels, what the tiny
  UNet takes) with the same inputs.
- ``clip/ViT-L-14-openai.safetensors`` -> an open_clip ViT-S-32-alt with random weights (the
  smallest architecture open_clip ships a config for: the server process knows only
  open_clip's own configs). The aesthetic head and the ImageReward files are tiny files in
  the official formats, placed under their official names.

Every pack node of every example still runs for real; only the weights behind it are tiny.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from examples.workflow_convert import (  # noqa: F401  (re-exported for the tests)
    ConversionError,
    apply_override,
    extra_widget_values,
    input_specs,
    is_widget,
    set_widget_value,
    substitute_values,
    ui_to_api,
    widget_slots,
    widget_values_by_name,
)

from .host import REPO

EXAMPLES_DIR = REPO / "example_workflows"
CACHE = REPO / ".cache" / "example_verifiers"
CLIP_ARCH = "ViT-S-32-alt"
CLIP_EMBED = 256
TEST_CLIP = f"clip/{CLIP_ARCH}-random-test.safetensors"
RECIPE = 1

MODEL_SUBSTITUTES = {
    "v1-5-pruned-emaonly.safetensors": "tiny_sd15.safetensors",
    "sd_xl_base_1.0.safetensors": "tiny_sd15.safetensors",
    "flux1-dev.safetensors": "tiny_sd15_unet.safetensors",
    "ae.safetensors": "tiny_taesd.safetensors",
    "clip/ViT-L-14-openai.safetensors": TEST_CLIP,
}
# class_type -> (new class_type, inputs (None: keep), {old output slot: new output slot})
NODE_SUBSTITUTES = {
    "DualCLIPLoader": ("CheckpointLoaderSimple", {"ckpt_name": "tiny_sd15.safetensors"}, {0: 1}),
    "EmptySD3LatentImage": ("EmptyLatentImage", None, {0: 0}),
}

# Small enough for two CPU cores: a handful of candidates, two steps, 32x32 pixels.
# Zero-order iterations stay as shipped: the ensemble example must show its pivot moving.
TINY = {"steps": 2, "width": 32, "height": 32, "candidates": 3, "neighbours": 2,
        "paths": 2, "branches": 2, "interval_steps": 1}


def example_paths() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.json"))


def load_example(name: str) -> dict:
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


def tiny_value(class_type: str, title: str | None, name: str, value):
    """The tiny replacement of one widget value, or ``value`` unchanged."""
    if isinstance(value, list):  # a link
        return value
    if name in TINY:
        return TINY[name]
    if name == "search_steps" and value:
        return 1  # keep exercising the cheaper-search path
    if name == "batch_size" and class_type.startswith("Empty") and "Latent" in class_type and value > 1:
        return TINY["candidates"]  # a KSampler batch / the replay batch of the candidate count
    if name == "value" and title in TINY:  # a PrimitiveInt titled "steps" shares the step count
        return TINY[title]
    return value


def shrink_api(prompt: dict) -> dict:
    for node in prompt.values():
        title = node.get("_meta", {}).get("title")
        for name, value in list(node["inputs"].items()):
            node["inputs"][name] = tiny_value(node["class_type"], title, name, value)
    return prompt


def substitute_nodes(prompt: dict) -> list[str]:
    """Replace nodes without a tiny stand-in (NODE_SUBSTITUTES) and remap links to them."""
    changed, slot_maps = [], {}
    for node_id, node in prompt.items():
        sub = NODE_SUBSTITUTES.get(node["class_type"])
        if sub is None:
            continue
        new_type, inputs, slot_map = sub
        changed.append(f"{node_id}: {node['class_type']} -> {new_type}")
        node["class_type"] = new_type
        if inputs is not None:
            node["inputs"] = dict(inputs)
        slot_maps[node_id] = slot_map
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in slot_maps:
                node["inputs"][name] = [value[0], slot_maps[value[0]][value[1]]]
    return changed


def tiny_prompt(workflow: dict, object_info: dict, overrides: dict | None = None) -> dict:
    """The API prompt of a UI workflow with tiny models and settings, plus ``{"ID.input": v}``."""
    prompt = ui_to_api(workflow, object_info)
    substitute_values(prompt, MODEL_SUBSTITUTES)
    substitute_nodes(prompt)
    shrink_api(prompt)
    for key, value in (overrides or {}).items():
        apply_override(prompt, f"{key}={json.dumps(value)}")
    return prompt


def tiny_ui_workflow(workflow: dict, object_info: dict) -> dict:
    """A UI workflow with tiny model names and settings, for loading into the editor.

    Only name substitutions are possible at this level; examples that need NODE_SUBSTITUTES
    are refused."""
    wf = copy.deepcopy(workflow)
    for node in wf["nodes"]:
        node_def = object_info.get(node["type"])
        if node_def is None:
            continue
        if node["type"] in NODE_SUBSTITUTES:
            raise ConversionError(f"{node['type']} needs a node substitution; use tiny_prompt()")
        for name, value in widget_values_by_name(node, node_def).items():
            new = MODEL_SUBSTITUTES.get(value, value) if isinstance(value, str) else value
            new = tiny_value(node["type"], node.get("title"), name, new)
            if new != value:
                set_widget_value(node, node_def, name, new)
    return wf


# -- verifier files ------------------------------------------------------------------------
def _tiny_clip_file() -> Path:
    """A random open_clip ViT-S-32-alt (fp16, 84 MB), built once and cached."""
    path = CACHE / Path(TEST_CLIP).name
    stamp = path.with_suffix(".recipe")
    if path.is_file() and stamp.is_file() and stamp.read_text() == str(RECIPE):
        return path
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_ARCH, pretrained=None)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    stamp.write_text(str(RECIPE))
    return path


def place_test_verifiers(models_dir: Path) -> Path:
    """Fill ``models_dir/verifiers`` with the files the examples name (see the module docstring)."""
    from tests import verifier_fixtures as vf

    root = Path(models_dir) / "verifiers"
    clip = root / TEST_CLIP
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_tiny_clip_file(), clip)
    if not (root / vf.AESTHETIC_NAME).exists():
        vf.write_aesthetic(root, in_dim=CLIP_EMBED)
    if not (root / "ImageReward" / "ImageReward.pt").exists():
        vf.write_imagereward(root)
    return root
