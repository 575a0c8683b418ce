"""Loading verifiers from ComfyUI's `verifiers` model folder: what the loader nodes call.

Official files are also found in the Hugging Face cache and in other tools' folders, and
missing ones are downloaded through huggingface_hub when allowed; every official file is
checked against its pinned or first-use SHA-256 (``verifiers.hub``).

File layout inside a `verifiers` folder (official names; downloads land there):

    clip/ViT-L-14-openai.safetensors              open_clip CLIP (OpenAI ViT-L/14)
    aesthetic/sac+logos+ava1-l14-linearMSE.pth    LAION aesthetic predictor v2 head
    ImageReward/ImageReward.pt                    ImageReward v1.0
    ImageReward/med_config.json
    ImageReward/bert-base-uncased/vocab.txt       BERT tokenizer vocabulary
    dinov2-small/config.json                      a transformers DINOv2 folder
    dinov2-small/model.safetensors
    PickScore_v1/config.json                      yuvalkirstain/PickScore_v1 (transformers CLIPModel)
    PickScore_v1/model.safetensors
    CLIP-ViT-H-14-laion2B-s32B-b79K/...           its processor: preprocessor_config.json, tokenizer.json,
                                                  tokenizer_config.json, special_tokens_map.json, vocab.json,
                                                  merges.txt (from laion/CLIP-ViT-H-14-laion2B-s32B-b79K)
    HPSv2/HPS_v2.1_compressed.pt                  xswu/HPSv2 (open_clip ViT-H-14 state dict)
    classifiers/<name>.safetensors (+ <name>.json) image classifiers (see verifiers/classifier.py)

Other CLIP files can sit in ``clip/``; their open_clip architecture is read from the file
name (``ViT-B-32-laion2b_s34b_b79k.safetensors`` -> ViT-B-32) or chosen on the node.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import comfy_runtime as rt
from . import hub
from .aesthetic import AestheticVerifier, load_aesthetic_mlp
from .base import VerifierError
from .classifier import ClassifierVerifier, load_classifier
from .clip import (
    DEFAULT_TEMPLATES,
    CLIPScoreVerifier,
    CLIPZeroShotVerifier,
    OpenCLIPModel,
    build_open_clip,
    infer_arch,
)
from .dinov2 import DEFAULT_EARLY_LEVEL, DINOv2SelfSupervisedVerifier, load_dinov2
from .ensemble import EnsembleVerifier

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")

DEFAULT_CLIP = "clip/ViT-L-14-openai.safetensors"
DEFAULT_AESTHETIC = "aesthetic/sac+logos+ava1-l14-linearMSE.pth"
DEFAULT_IMAGEREWARD = "ImageReward/ImageReward.pt"
DEFAULT_MED_CONFIG = "ImageReward/med_config.json"
DEFAULT_BERT_DIR = "ImageReward/bert-base-uncased"
DEFAULT_DINOV2 = "dinov2-small"
DEFAULT_CLASSIFIER = "classifiers/classifier.safetensors"
DEFAULT_PICKSCORE = "PickScore_v1"
DEFAULT_PICKSCORE_PROCESSOR = "CLIP-ViT-H-14-laion2B-s32B-b79K"
DEFAULT_HPS = "HPSv2/HPS_v2.1_compressed.pt"
DEFAULT_HPS_ARCH = "ViT-H-14"
PRECISIONS = ["auto", "fp32", "fp16", "bf16"]

# Architectures of the official files whose names alone would be ambiguous.
KNOWN_CLIP_ARCH = {DEFAULT_CLIP: "ViT-L-14-quickgelu"}


# ---- pickers ---------------------------------------------------------------------------

def clip_choices() -> list[str]:
    return rt.combo_options(rt.list_files("clip/", WEIGHT_SUFFIXES), [DEFAULT_CLIP])


def aesthetic_choices() -> list[str]:
    return rt.combo_options(rt.list_files("aesthetic/", WEIGHT_SUFFIXES), [DEFAULT_AESTHETIC])


def imagereward_choices() -> tuple[list[str], list[str], list[str]]:
    models = rt.combo_options(rt.list_files("ImageReward/", (".pt", ".pth", ".safetensors")), [DEFAULT_IMAGEREWARD])
    configs = rt.combo_options(rt.list_files("ImageReward/", (".json",)), [DEFAULT_MED_CONFIG])
    tokenizers = rt.combo_options(rt.list_dirs_with("vocab.txt"), [DEFAULT_BERT_DIR])
    return models, configs, tokenizers


def dinov2_choices() -> list[str]:
    found = [d for d in rt.list_dirs_with("config.json") if "dino" in d.lower()]
    return rt.combo_options(found, [DEFAULT_DINOV2])


def pickscore_choices() -> tuple[list[str], list[str]]:
    files = set(rt.list_files())
    models = [d for d in rt.list_dirs_with("config.json") if f"{d}/model.safetensors" in files
              and "dino" not in d.lower()]
    processors = rt.list_dirs_with("preprocessor_config.json")
    return (rt.combo_options(models, [DEFAULT_PICKSCORE]),
            rt.combo_options(processors, [DEFAULT_PICKSCORE_PROCESSOR]))


def hps_choices() -> list[str]:
    return rt.combo_options(rt.list_files("HPSv2/", (".pt", ".pth", ".safetensors")), [DEFAULT_HPS])


def classifier_choices() -> list[str]:
    found = rt.list_files("classifiers/", (".safetensors", ".sft"))
    return found or [DEFAULT_CLASSIFIER]


def clip_architectures() -> list[str]:
    import open_clip

    return ["auto", *sorted(open_clip.list_models(), key=str.lower)]


# ---- loaders ---------------------------------------------------------------------------

def load_open_clip(clip_file: str, architecture: str = "auto", precision: str = "auto",
                   allow_download: bool = True, node_id: str | None = None) -> OpenCLIPModel:
    """The cached CLIP model for ``clip_file``, shared by every CLIP-based verifier."""
    arch = infer_arch(clip_file, KNOWN_CLIP_ARCH) if architecture == "auto" else architecture
    path = rt.resolve(clip_file, allow_download, node_id)
    dtype = rt.pick_dtype(precision)
    slot = ("open_clip", str(Path(path).resolve()), arch, str(dtype), str(rt.load_device()))
    return rt.cached(slot, rt.file_stamp(path), lambda: build_open_clip(arch, path, dtype=dtype))


def load_clipscore(clip_file: str = DEFAULT_CLIP, architecture: str = "auto", precision: str = "auto",
                   allow_download: bool = True, node_id: str | None = None) -> CLIPScoreVerifier:
    clip = load_open_clip(clip_file, architecture, precision, allow_download, node_id)
    return rt.attach(CLIPScoreVerifier(clip))


def load_aesthetic(aesthetic_file: str = DEFAULT_AESTHETIC, clip_file: str = DEFAULT_CLIP,
                   architecture: str = "auto", precision: str = "auto", allow_download: bool = True,
                   node_id: str | None = None) -> AestheticVerifier:
    mlp_path = rt.resolve(aesthetic_file, allow_download, node_id)
    mlp = rt.cached(("aesthetic_mlp", str(Path(mlp_path).resolve())), rt.file_stamp(mlp_path),
                    lambda: load_aesthetic_mlp(mlp_path))
    clip = load_open_clip(clip_file, architecture, precision, allow_download, node_id)
    return rt.attach(AestheticVerifier(clip, mlp))


def load_zero_shot(class_names: str | list[str], templates: str | list[str] = DEFAULT_TEMPLATES,
                   clip_file: str = DEFAULT_CLIP, architecture: str = "auto", precision: str = "auto",
                   allow_download: bool = True, node_id: str | None = None) -> CLIPZeroShotVerifier:
    clip = load_open_clip(clip_file, architecture, precision, allow_download, node_id)
    return rt.attach(CLIPZeroShotVerifier(clip, split_lines(class_names), split_lines(templates)))


def load_dinov2_verifier(dinov2_folder: str = DEFAULT_DINOV2, early_level: float = DEFAULT_EARLY_LEVEL,
                         precision: str = "auto", allow_download: bool = True,
                         node_id: str | None = None) -> DINOv2SelfSupervisedVerifier:
    folder = dinov2_folder
    config_rel = f"{folder}/config.json"
    local = rt.find_in_verifier_folders(config_rel)
    if local is not None and any((local.parent / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        # A folder the user placed (model.safetensors, or an older pytorch_model.bin export).
        base = rt.resolve(config_rel, allow_download=False, node_id=node_id).parent
        if (base / "model.safetensors").is_file():
            rt.resolve(f"{folder}/model.safetensors", allow_download=False, node_id=node_id)
    else:
        paths = rt.resolve_group([config_rel, f"{folder}/model.safetensors"], allow_download, node_id)
        base = paths[config_rel].parent
    dtype = rt.pick_dtype(precision)
    slot = ("dinov2", str(base.resolve()), str(dtype), str(rt.load_device()))
    model = rt.cached(slot, rt.file_stamp(base), lambda: load_dinov2(base, dtype=dtype))
    return rt.attach(DINOv2SelfSupervisedVerifier(model, early_level=early_level))


def load_classifier_verifier(classifier_file: str, node_id: str | None = None) -> ClassifierVerifier:
    # Classifiers are the user's own files: nothing to download.
    path = rt.resolve(classifier_file, allow_download=False, node_id=node_id)
    paths = [path] + ([path.with_suffix(".json")] if path.with_suffix(".json").is_file() else [])
    module, config = rt.cached(("classifier", str(path.resolve())), rt.file_stamp(*paths),
                               lambda: load_classifier(path))
    return rt.attach(ClassifierVerifier(module, config))


def load_imagereward(model_file: str = DEFAULT_IMAGEREWARD, med_config_file: str = DEFAULT_MED_CONFIG,
                     tokenizer_dir: str = DEFAULT_BERT_DIR, precision: str = "auto",
                     allow_download: bool = True, node_id: str | None = None):
    try:
        # Imported here so the pack loads even where this optional module is absent.
        from .imagereward import ImageRewardVerifier
    except ImportError as e:
        raise VerifierError(f"ImageReward support is not available in this install: {e}") from None
    model_path = rt.resolve(model_file, allow_download, node_id)
    med_path = rt.resolve(med_config_file, allow_download, node_id)
    vocab = rt.resolve(f"{tokenizer_dir}/vocab.txt", allow_download, node_id)
    device = rt.load_device()
    dtype = rt.pick_dtype(precision, device)
    slot = ("imagereward", str(model_path.resolve()), str(med_path.resolve()), str(vocab.parent.resolve()),
            str(dtype), str(device))
    verifier = rt.cached(slot, rt.file_stamp(model_path, med_path, vocab),
                         lambda: ImageRewardVerifier.from_files(model_path, med_path, vocab.parent,
                                                                device=device, dtype=dtype))
    return rt.attach(verifier)


def _group(folder: str, names: tuple[str, ...], needed: tuple[str, ...]) -> list[str]:
    """The files to resolve for a model folder: every official file of an official folder, else
    the ones the loader cannot do without (the user's own folder)."""
    official = [f"{folder}/{n}" for n in names if f"{folder}/{n}" in hub.OFFICIAL_FILES]
    return official or [f"{folder}/{n}" for n in needed]


def load_pickscore(model_folder: str = DEFAULT_PICKSCORE, processor_folder: str = DEFAULT_PICKSCORE_PROCESSOR,
                   precision: str = "auto", allow_download: bool = True, node_id: str | None = None):
    from .pickscore import MODEL_FILES, PROCESSOR_FILES, PickScoreVerifier

    model_paths = rt.resolve_group(_group(model_folder, MODEL_FILES, MODEL_FILES), allow_download, node_id)
    proc_paths = rt.resolve_group(_group(processor_folder, PROCESSOR_FILES,
                                         ("preprocessor_config.json", "tokenizer_config.json")),
                                  allow_download, node_id)
    model_dir = next(iter(model_paths.values())).parent
    proc_dir = next(iter(proc_paths.values())).parent
    device = rt.load_device()
    dtype = rt.pick_dtype(precision, device)
    slot = ("pickscore", str(model_dir.resolve()), str(proc_dir.resolve()), str(dtype), str(device))
    verifier = rt.cached(slot, rt.file_stamp(*model_paths.values(), *proc_paths.values()),
                         lambda: PickScoreVerifier.from_folders(model_dir, proc_dir, device=device, dtype=dtype))
    return rt.attach(verifier)


def load_hpsv2(model_file: str = DEFAULT_HPS, architecture: str = DEFAULT_HPS_ARCH, precision: str = "auto",
               allow_download: bool = True, node_id: str | None = None):
    from .hpsv2 import HPSv2Verifier

    path = rt.resolve(model_file, allow_download, node_id)
    device = rt.load_device()
    dtype = rt.pick_dtype(precision, device)
    slot = ("hpsv2", str(path.resolve()), architecture, str(dtype), str(device))
    verifier = rt.cached(slot, rt.file_stamp(path),
                         lambda: HPSv2Verifier.from_file(path, architecture, device=device, dtype=dtype))
    return rt.attach(verifier)


# ---- chat VLMs (verifiers/vlm.py) ----------------------------------------------------------

DEFAULT_VLM = "Qwen2.5-VL-3B-Instruct"


def vlm_choices() -> list[str]:
    """Folders holding a transformers model with a processor (config.json, preprocessor_config.json, tokenizer)."""
    with_config = set(rt.list_dirs_with("config.json"))
    found = [d for d in rt.list_dirs_with("preprocessor_config.json")
             if d in with_config and d in set(rt.list_dirs_with("tokenizer_config.json"))]
    return rt.combo_options(found, [DEFAULT_VLM, *sorted(hub.VLM_REPOS)])


def resolve_vlm_folder(folder: str, allow_download: bool = True, node_id: str | None = None) -> Path:
    """The folder of a chat VLM with every file it needs: the processor files and config first,
    then the weights its model.safetensors.index.json names (or one model.safetensors)."""
    from .vlm import PROCESSOR_FILES

    folder = hub.normalize_rel(folder)
    official = folder in hub.VLM_REPOS
    local = rt.find_in_verifier_folders(f"{folder}/config.json")
    single = local is not None and (local.parent / "model.safetensors").is_file() and \
        not (local.parent / "model.safetensors.index.json").is_file()
    head = ["config.json", *PROCESSOR_FILES] if official else \
        ["config.json", "preprocessor_config.json", "tokenizer_config.json"]
    head += [] if single else ["model.safetensors.index.json"]
    paths = rt.resolve_group([f"{folder}/{n}" for n in head], allow_download, node_id)
    if single:
        weights = ["model.safetensors"]
    else:
        index = paths[f"{folder}/model.safetensors.index.json"]
        weights = _index_shards(index)
        if official:
            hub.official_shards(folder, weights)
    paths = rt.resolve_group([f"{folder}/{n}" for n in (*head, *weights)], allow_download, node_id)
    return next(iter(paths.values())).parent


def _index_shards(index: Path) -> list[str]:
    import json

    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise VerifierError(f"could not read the weight map of {index}: {e}") from None
    bad = [n for n in names if not isinstance(n, str) or "/" in n or "\\" in n or not n.endswith(".safetensors")]
    if bad or not names:
        raise VerifierError(f"{index} names no safetensors shards beside it (got {bad[:3] or names[:3]})")
    return names


def _load_chat_vlm(folder: str, precision: str, allow_download: bool, node_id: str | None, make):
    from .vlm import checkpoint_dtype, load_vlm

    base = resolve_vlm_folder(folder, allow_download, node_id)
    device = rt.load_device()
    # "auto": the checkpoint's own dtype on an accelerator, float32 on the CPU (no fast bf16 there).
    dtype = rt.pick_dtype(precision, device) if precision != "auto" or torch.device(device).type == "cpu" \
        else checkpoint_dtype(base)
    slot = ("chat_vlm", str(base.resolve()), str(dtype), str(device))
    model, processor = rt.cached(slot, rt.file_stamp(base), lambda: load_vlm(base, dtype))
    verifier = make(model, processor)
    verifier.check_interrupt = _interrupt_check()
    return rt.attach(verifier)


def _interrupt_check():
    import comfy.model_management

    return comfy.model_management.throw_exception_if_processing_interrupted


def load_vqascore(model_folder: str = DEFAULT_VLM, question_template: str | None = None, image_size: int = 0,
                  precision: str = "auto", allow_download: bool = True, node_id: str | None = None):
    from .vlm import VQA_TEMPLATE, VQAScoreVerifier

    template = question_template or VQA_TEMPLATE
    return _load_chat_vlm(model_folder, precision, allow_download, node_id,
                          lambda m, p: VQAScoreVerifier(m, p, template, image_size))


def load_llm_grader(model_folder: str = DEFAULT_VLM, image_size: int = 0, precision: str = "auto",
                    allow_download: bool = True, node_id: str | None = None):
    from .vlm import LLMGraderVerifier

    return _load_chat_vlm(model_folder, precision, allow_download, node_id,
                          lambda m, p: LLMGraderVerifier(m, p, image_size))


def load_remote_grader(base_url: str, model: str, mode: str = "grader", api_key_env: str = "OPENAI_API_KEY",
                       question_template: str | None = None, timeout_s: float = 60.0, max_retries: int = 2,
                       concurrency: int = 4, node_id: str | None = None):
    """An OpenAI-compatible server as a verifier (verifiers/remote_grader.py); the key stays in the environment."""
    from .remote_grader import RemoteGraderVerifier
    from .vlm import VQA_TEMPLATE

    verifier = RemoteGraderVerifier(base_url, model, mode, (api_key_env or "").strip(),
                                    question_template or VQA_TEMPLATE, timeout_s, max_retries, concurrency)
    verifier.check_interrupt = _interrupt_check()
    return verifier


def make_ensemble(verifiers, weights: list[float] | None = None) -> EnsembleVerifier:
    return EnsembleVerifier(verifiers, weights)


def split_lines(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """Multiline node text -> non-empty stripped lines (lists pass through)."""
    lines = value.splitlines() if isinstance(value, str) else list(value)
    return [line.strip() for line in lines if line.strip()]

