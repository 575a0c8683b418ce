"""Verifier loader nodes, the ensemble, and VerifierScore (best-of-batch without search).

Every node is a thin schema; the work happens in ``verifiers/`` (``verifiers.loaders`` for
files, caching and memory management); VerifierScore scores through the search's own
``Scorer`` (search/scoring.py), so a verifier judges a batch as it judges candidates.
Relative imports on purpose: they always reach this pack's own ``verifiers`` package,
whatever else the Python environment calls ``verifiers``.
"""

from __future__ import annotations

import json

import comfy.model_management
import comfy.utils
import torch

from ..search.scoring import ranking, score_images
from ..verifiers import comfy_runtime as rt
from ..verifiers import loaders
from ..verifiers.base import VerifierError
from ..verifiers.dinov2 import DEFAULT_EARLY_LEVEL
from ..verifiers.hub import DOWNLOAD_ENV, OFFLINE_ENV
from .host_compat import io
from .types import VerifierType

CATEGORY = "sampling/noise_search/verifiers"

rt.register_folder()


# -- shared inputs ------------------------------------------------------------------------
def clip_file_input():
    return io.Combo.Input(
        "clip_file", options=loaders.clip_choices(), default=loaders.DEFAULT_CLIP,
        tooltip="open_clip weights in models/verifiers/clip/. The default is OpenAI's CLIP ViT-L/14, "
                "taken from the Hugging Face cache if there, else downloaded (pinned SHA-256) on first use "
                "when allowed.")


def architecture_input():
    return io.Combo.Input(
        "architecture", options=loaders.clip_architectures(), default="auto",
        tooltip="open_clip architecture of the weights file. auto: read it from the file name "
                "(OpenAI weights get the QuickGELU variant they were trained with).")


def precision_input():
    return io.Combo.Input(
        "precision", options=loaders.PRECISIONS, default="auto",
        tooltip="Weights dtype. auto: fp16 where ComfyUI would use it on the GPU, fp32 on the CPU.")


def allow_download_input():
    return io.Boolean.Input(
        "allow_download", default=True,
        tooltip=f"Download missing official files from their official repositories (huggingface_hub: "
                f"resumable, with a progress bar). Files already in the Hugging Face cache or another tool's "
                f"folder are used without downloading. Every official file is checked against its pinned "
                f"SHA-256, or the one recorded on its first use (noise-search.lock.json beside it). "
                f"{DOWNLOAD_ENV}=0 or {OFFLINE_ENV}=1 switch downloads off whatever this says.")


def verifier_output():
    return VerifierType.Output(display_name="verifier",
                               tooltip="Scores images (higher is better); feed it to a search node or VerifierScore.")


def _stamp(*rels: str):
    """Fingerprint of the files behind a loader, so a replaced file re-runs the node."""
    out = []
    for rel in rels:
        try:
            path = rt.find_file_in_folders(rel)
        except VerifierError:
            path = None
        out.append(rt.file_stamp(path) if path is not None else (rel, None))
    return tuple(out)


# -- loaders ------------------------------------------------------------------------------
class _VerifierLoader(io.ComfyNode):
    """A loader node: its schema, fingerprint and execution follow from ``SPEC``.

    ``SPEC`` = (title, description, inputs, files, load): ``inputs()`` lists the inputs (their
    ids are the keyword arguments of ``load``), ``files(**inputs)`` the verifier files whose change
    re-runs the node, and ``load(**inputs, node_id=...)`` (a ``verifiers.loaders`` function)
    builds the verifier. Every loader is made by ``_loader`` from one such line of data.
    """

    SPEC: tuple = ()

    @classmethod
    def define_schema(cls):
        title, description, inputs, _, _ = cls.SPEC
        return io.Schema(node_id=cls.__name__, display_name=title, category=CATEGORY, description=description,
                         inputs=inputs(), outputs=[verifier_output()], hidden=[io.Hidden.unique_id])

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        check_names(inputs)
        return _stamp(*cls.SPEC[3](**inputs))

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:
        check_names(inputs)
        return io.NodeOutput(cls.SPEC[4](**inputs, node_id=cls.hidden.unique_id))


def check_names(inputs: dict) -> None:
    """File and folder names reach the file system: one with a NUL byte (possible through the
    API) would fail there with a bare "embedded null byte". Name the input instead."""
    for name, value in inputs.items():
        if isinstance(value, str) and "\x00" in value:
            raise VerifierError(f"{name}: {value.replace(chr(0), '<NUL>')!r} contains a NUL byte; give the name of "
                                "a file in models/verifiers/ (as listed in the node's choices)")


def _loader(name: str, title: str, description: str, inputs, files, load) -> type:
    return type(name, (_VerifierLoader,), {"SPEC": (title, description, inputs, files, staticmethod(load)),
                                           "__doc__": description, "__module__": __name__})


def combo(name: str, options: list[str], default: str, tooltip: str):
    return io.Combo.Input(name, options=options, default=default, tooltip=tooltip)


def clip_inputs():
    """The CLIP file and how to run it, shared by the CLIP-based loaders."""
    return [clip_file_input(), architecture_input(), precision_input(), allow_download_input()]


def aesthetic_inputs():
    head = combo("aesthetic_file", loaders.aesthetic_choices(), loaders.DEFAULT_AESTHETIC,
                 "Predictor head in models/verifiers/aesthetic/ (official: sac+logos+ava1-l14-linearMSE.pth).")
    return [head, *clip_inputs()]


def zero_shot_inputs():
    classes = io.String.Input("class_names", multiline=True, default="cat\ndog", tooltip="One class name per line.")
    templates = io.String.Input(
        "templates", multiline=True, default="a photo of a {}.",
        tooltip="One prompt template per line, {} marks the class name; a class's text embedding is the mean "
                "over its templates.")
    return [classes, templates, *clip_inputs()]


def dinov2_inputs():
    level = io.Float.Input("early_level", default=DEFAULT_EARLY_LEVEL, min=0.01, max=0.99, step=0.01,
                           tooltip="Where the early x0-prediction is taken, as a fraction of the noise schedule: "
                                   "1 = pure noise, 0 = clean (the paper: about 0.4).")
    folder = combo("dinov2_folder", loaders.dinov2_choices(), loaders.DEFAULT_DINOV2,
                   "A transformers DINOv2 folder in models/verifiers/ holding config.json and model.safetensors "
                   "(e.g. facebook/dinov2-small).")
    return [folder, level, precision_input(), allow_download_input()]


def imagereward_inputs():
    models, configs, tokenizers = loaders.imagereward_choices()
    return [
        combo("model_file", models, loaders.DEFAULT_IMAGEREWARD,
              "Official ImageReward.pt (THUDM/ImageReward) in models/verifiers/ImageReward/."),
        combo("med_config_file", configs, loaders.DEFAULT_MED_CONFIG, "med_config.json from THUDM/ImageReward."),
        combo("tokenizer_dir", tokenizers, loaders.DEFAULT_BERT_DIR, "Folder holding bert-base-uncased's vocab.txt."),
        precision_input(), allow_download_input(),
    ]


def pickscore_inputs():
    models, processors = loaders.pickscore_choices()
    model = combo("model_folder", models, loaders.DEFAULT_PICKSCORE,
                  "Folder in models/verifiers/ with yuvalkirstain/PickScore_v1's config.json and model.safetensors "
                  "(found in the Hugging Face cache, or downloaded when allowed).")
    processor = combo("processor_folder", processors, loaders.DEFAULT_PICKSCORE_PROCESSOR,
                      "Folder with the processor PickScore uses: the tokenizer files and preprocessor_config.json "
                      "of laion/CLIP-ViT-H-14-laion2B-s32B-b79K.")
    return [model, processor, precision_input(), allow_download_input()]


def hps_inputs():
    arch = combo("architecture", loaders.clip_architectures()[1:], loaders.DEFAULT_HPS_ARCH,
                 "open_clip architecture of the checkpoint (HPS v2.1 is ViT-H-14).")
    return [combo("model_file", loaders.hps_choices(), loaders.DEFAULT_HPS,
                  "HPS_v2.1_compressed.pt from xswu/HPSv2 in models/verifiers/HPSv2/ (also found in the Hugging "
                  "Face cache or the hpsv2 package's ~/.cache/hpsv2)."),
            arch, precision_input(), allow_download_input()]


def classifier_inputs():
    return [io.Combo.Input("classifier_file", options=loaders.classifier_choices(),
                           tooltip="A classifier in models/verifiers/classifiers/: <name>.safetensors with "
                                   "<name>.json beside it (architecture, classes, input size, mean/std).")]


def vlm_inputs(*extra):
    """A chat VLM folder and how to run it (VQAScore, the LLM grader)."""
    folder = combo("model_folder", loaders.vlm_choices(), loaders.DEFAULT_VLM,
                   "A transformers chat VLM folder in models/verifiers/ (config.json, safetensors weights, processor "
                   "and tokenizer files): Qwen2.5-VL or Qwen3-VL, named like its repository (Qwen2.5-VL-3B-Instruct "
                   "is non-commercial; the 7B and the Qwen3-VL folders are Apache-2.0). Found in the Hugging Face "
                   "cache, or downloaded when allowed.")
    size = io.Int.Input("image_size", default=0, min=0, max=4096, step=14,
                        tooltip="0: the image at its own resolution (the processor rounds it to its patch grid). N: "
                                "resized first so its longer side is N pixels (fewer image tokens, faster).")
    return [folder, *extra, size, precision_input(), allow_download_input()]


def vqascore_inputs():
    from ..verifiers.vlm import VQA_TEMPLATE

    template = io.String.Input("question_template", default=VQA_TEMPLATE,
                               tooltip="The question asked about each image; {} is replaced by the prompt. Default: "
                                       "the template of VQAScore's t2v-metrics package.")
    return vlm_inputs(template)


def remote_grader_inputs():
    from ..verifiers.remote_grader import DEFAULT_KEY_ENV, MODES
    from ..verifiers.vlm import VQA_TEMPLATE

    return [
        io.String.Input("base_url", default="http://127.0.0.1:8000/v1",
                        tooltip="Base URL of an OpenAI-compatible chat-completions API (vLLM, Ollama "
                                "http://127.0.0.1:11434/v1, LM Studio, a hosted API)."),
        io.String.Input("model", default="Qwen/Qwen2.5-VL-7B-Instruct", tooltip="The model name the server serves."),
        io.Combo.Input("mode", options=list(MODES), default="grader",
                       tooltip="grader: the paper's five-aspect LLM grader from a JSON reply, 0-100. vqascore: "
                               "P(\"Yes\") from the logprobs of the first answer token, 0-1; where the server returns no "
                               "logprobs or refuses them, from a validated JSON answer (yes/no and a confidence), "
                               "decided once per verifier and named in the report's verifier."),
        io.String.Input("api_key_env", default=DEFAULT_KEY_ENV,
                        tooltip="The NAME of the environment variable that holds the API key (read when scoring; "
                                "the key itself never enters the workflow, the report or the image). Empty: no key."),
        io.String.Input("question_template", default=VQA_TEMPLATE,
                        tooltip="vqascore mode: the question asked about each image, {} = the prompt."),
        io.Float.Input("timeout_s", default=60.0, min=0.1, max=3600.0, step=0.1,
                       tooltip="Seconds one request may take before it is retried or fails."),
        io.Int.Input("max_retries", default=2, min=0, max=10,
                     tooltip="Retries of a request that timed out, lost its connection or got HTTP 408/409/429/5xx."),
        io.Int.Input("concurrency", default=4, min=1, max=64, tooltip="Requests in flight at once."),
    ]


def _folder_files(*names: str):
    """files() of a loader whose first input is a folder holding ``names``."""
    return lambda **kw: [f"{next(iter(kw.values()))}/{n}" for n in names]


CLIPScoreVerifierLoader = _loader(
    "CLIPScoreVerifierLoader", "Load CLIPScore Verifier",
    "CLIPScore as CLIP-S = 2.5 x max(cosine(image, prompt), 0), in [0, 2.5]: the scale of the paper's tables (about "
    "0.7-0.8 for good FLUX images; a raw cosine is about 0.25-0.35). open_clip; prompts past 77 tokens are truncated.",
    clip_inputs, lambda clip_file, **_: [clip_file], loaders.load_clipscore)
AestheticVerifierLoader = _loader(
    "AestheticVerifierLoader", "Load Aesthetic Verifier",
    "LAION aesthetic predictor v2: predicted rating (about 1-10) from CLIP ViT-L/14 image embeddings. Needs no "
    "prompt. Shares the CLIP model with CLIPScore.",
    aesthetic_inputs, lambda aesthetic_file, clip_file, **_: [aesthetic_file, clip_file], loaders.load_aesthetic)
CLIPZeroShotVerifierLoader = _loader(
    "CLIPZeroShotVerifierLoader", "Load CLIP Zero-Shot Verifier",
    "CLIP zero-shot classifier: the score is the logit (100 x cosine) of the class named by the condition (a class "
    "name or its 0-based index).", zero_shot_inputs, lambda clip_file, **_: [clip_file], loaders.load_zero_shot)
DINOv2VerifierLoader = _loader(
    "DINOv2VerifierLoader", "Load DINOv2 Self-Supervised Verifier",
    "The paper's self-supervised verifier: cosine similarity of DINOv2 CLS features of the early x0-prediction and "
    "of the final image. Needs no prompt.",
    dinov2_inputs, _folder_files("config.json", "model.safetensors"), loaders.load_dinov2_verifier)
ImageRewardVerifierLoader = _loader(
    "ImageRewardVerifierLoader", "Load ImageReward Verifier",
    "ImageReward v1.0: human-preference reward of an image for the prompt (about -2..2; prompts past 35 tokens are "
    "truncated).", imagereward_inputs,
    lambda model_file, med_config_file, tokenizer_dir, **_: [model_file, med_config_file, f"{tokenizer_dir}/vocab.txt"],
    loaders.load_imagereward)
PickScoreVerifierLoader = _loader(
    "PickScoreVerifierLoader", "Load PickScore Verifier",
    "PickScore v1 (Pick-a-Pic): human-preference score of an image for the prompt, logit_scale.exp() x cosine of a "
    "CLIP ViT-H/14 fine-tuned on user choices (prompts past 77 tokens are truncated). Higher is better.",
    pickscore_inputs,
    lambda model_folder, processor_folder, **_: [f"{model_folder}/config.json", f"{model_folder}/model.safetensors",
                                                 f"{processor_folder}/preprocessor_config.json",
                                                 f"{processor_folder}/tokenizer.json"],
    loaders.load_pickscore)
HPSv2VerifierLoader = _loader(
    "HPSv2VerifierLoader", "Load HPSv2.1 Verifier",
    "HPS v2.1 (Human Preference Score v2.1): cosine of the image and prompt embeddings of an open_clip ViT-H-14 "
    "fine-tuned on human preferences (prompts past 77 tokens are truncated). Higher is better.",
    hps_inputs, lambda **inputs: [inputs["model_file"]], loaders.load_hpsv2)
VQAScoreVerifierLoader = _loader(
    "VQAScoreVerifierLoader", "Load VQAScore Verifier (VLM)",
    "VQAScore (Lin et al. 2024): the probability, in [0, 1], that a vision-language model answers \"Yes\" to "
    "\"Does this figure show '<prompt>'?\", from one forward pass (no generation). Tracks counts, attributes and "
    "relations in the prompt better than CLIPScore. Higher is better.",
    vqascore_inputs, _folder_files("config.json", "model.safetensors.index.json", "model.safetensors"),
    loaders.load_vqascore)
LLMGraderVerifierLoader = _loader(
    "LLMGraderVerifierLoader", "Load LLM Grader Verifier (VLM)",
    "The paper's LLM grader on a local vision-language model: accuracy to prompt, originality, visual quality, "
    "internal consistency and emotional resonance, each the expected 0-10 rating under the model's next-token "
    "distribution (one forward pass per aspect); the score is 10 x their mean, on the paper's 0-100 scale.",
    vlm_inputs, _folder_files("config.json", "model.safetensors.index.json", "model.safetensors"),
    loaders.load_llm_grader)
RemoteGraderVerifierLoader = _loader(
    "RemoteGraderVerifierLoader", "Load Remote Grader Verifier (OpenAI-compatible API)",
    "A vision-language model behind any OpenAI-compatible chat-completions endpoint as a verifier: the paper's LLM "
    "grader (five aspects, JSON reply, 0-100) or VQAScore from logprobs (0-1; a validated JSON answer where the "
    "server gives no logprobs). One request per image; the API key "
    "is read from an environment variable.", remote_grader_inputs, lambda **_: [], loaders.load_remote_grader)
ClassifierVerifierLoader = _loader(
    "ClassifierVerifierLoader", "Load Classifier Verifier",
    "Any image classifier (safetensors + JSON config): the score is the logit of the class named by the condition "
    "(a class name or its 0-based index).", classifier_inputs,
    lambda classifier_file, **_: [classifier_file, classifier_file.rsplit(".", 1)[0] + ".json"],
    loaders.load_classifier_verifier)


class VerifierEnsemble(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        inputs = []
        for i in range(1, 5):
            optional = i > 2
            inputs.append(VerifierType.Input(
                f"verifier_{i}", optional=optional,
                tooltip="A verifier to combine." + (" Optional." if optional else "")))
            inputs.append(io.Float.Input(
                f"weight_{i}", default=1.0, min=0.0, max=100.0, step=0.1, optional=optional,
                tooltip=f"Weight of verifier_{i}'s rank in the weighted mean (all 1 = the paper's unweighted mean)."))
        return io.Schema(
            node_id="VerifierEnsemble",
            display_name="Verifier Ensemble (mean rank)",
            category=CATEGORY,
            description="The paper's ensemble: each candidate's score is the (weighted) mean of its ranks "
                        "under the verifiers, ranks 1 = worst .. N = best within the batch, ties averaged.",
            inputs=inputs,
            outputs=[verifier_output()],
        )

    @classmethod
    def execute(cls, verifier_1, verifier_2, weight_1=1.0, weight_2=1.0, verifier_3=None, weight_3=1.0,
                verifier_4=None, weight_4=1.0) -> io.NodeOutput:
        pairs = [(v, w) for v, w in ((verifier_1, weight_1), (verifier_2, weight_2),
                                     (verifier_3, weight_3), (verifier_4, weight_4)) if v is not None]
        weights = [float(w) for _, w in pairs]
        return io.NodeOutput(loaders.make_ensemble([v for v, _ in pairs],
                                                   None if all(w == 1.0 for w in weights) else weights))


class VerifierScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VerifierScore",
            display_name="Verifier Score (best of batch)",
            category=CATEGORY,
            description="Scores every image of a batch with a verifier and picks the best: "
                        "best-of-N without search.",
            inputs=[
                io.Image.Input("images", tooltip="The candidates, as one IMAGE batch."),
                VerifierType.Input("verifier", tooltip="What judges the images (higher is better)."),
                io.String.Input("condition", multiline=True, default="",
                                tooltip="The prompt (CLIPScore, ImageReward, PickScore, HPSv2) or the class name/index "
                                        "(classifiers, zero-shot); ignored by aesthetic and DINOv2."),
                io.Image.Input("early_images", optional=True,
                               tooltip="For verifiers that need it (DINOv2): the decoded early x0-prediction "
                                       "of every image, in the same order."),
            ],
            outputs=[
                io.Image.Output(display_name="best_image", tooltip="The highest-scoring image."),
                io.Int.Output(display_name="best_index", tooltip="Its 0-based index in the batch."),
                io.Float.Output(display_name="best_score", tooltip="Its score."),
                io.String.Output(display_name="scores", tooltip="JSON list: the score of every image, in batch order."),
                io.String.Output(display_name="ranking",
                                 tooltip="JSON list of batch indices from best to worst (ties keep batch order)."),
                io.Image.Output(display_name="sorted_images", tooltip="The whole batch sorted best first."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, images, verifier, condition, early_images=None) -> io.NodeOutput:
        bar = comfy.utils.ProgressBar(max(1, images.shape[0]), cls.hidden.unique_id)

        def on_chunk(done: int, total: int) -> None:
            bar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        # The search's scoring path: chunks of the verifier's max_batch, halved when memory runs
        # out; a rank ensemble's component scores are ranked over the whole batch.
        scores = score_images(verifier, images, condition, early_images, on_chunk)
        order = ranking(scores)
        best = order[0]
        return io.NodeOutput(
            images[best:best + 1], best, float(scores[best]),
            json.dumps([float(s) for s in scores]), json.dumps(order),
            images[torch.tensor(order, dtype=torch.long)],
        )


class LLMGraderAspects(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LLMGraderAspects",
            display_name="LLM Grader Aspects",
            category=CATEGORY,
            description="The LLM grader's five ratings of every image (accuracy to prompt, originality, visual quality, "
                        "internal consistency, emotional resonance; 0-10 each) and its overall 0-100 score.",
            inputs=[
                io.Image.Input("images", tooltip="The images to grade, as one IMAGE batch."),
                VerifierType.Input("verifier", tooltip="An LLM grader: LLMGraderVerifierLoader, or "
                                                       "RemoteGraderVerifierLoader in grader mode."),
                io.String.Input("condition", multiline=True, default="", tooltip="The prompt the images were made for."),
            ],
            outputs=[io.String.Output(display_name="aspects",
                                      tooltip="JSON list, in batch order: each image's five ratings and overall score.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, images, verifier, condition) -> io.NodeOutput:
        from ..verifiers.vlm import aspects_dict

        if not hasattr(verifier, "last_aspects") or getattr(verifier, "mode", "grader") != "grader":
            raise VerifierError(f"verifier: {getattr(verifier, 'name', type(verifier).__name__)} rates no aspects; "
                                "connect an LLM grader (LLMGraderVerifierLoader, or RemoteGraderVerifierLoader in "
                                "grader mode)")
        bar = comfy.utils.ProgressBar(max(1, images.shape[0]), cls.hidden.unique_id)
        step, rows = max(1, int(getattr(verifier, "max_batch", 8))), []
        for start in range(0, images.shape[0], step):
            comfy.model_management.throw_exception_if_processing_interrupted()
            verifier.score(images[start:start + step], condition)
            rows.append(verifier.last_aspects)
            bar.update_absolute(min(start + step, images.shape[0]), images.shape[0])
        return io.NodeOutput(json.dumps(aspects_dict(torch.cat(rows))))


VERIFIER_NODES = [
    CLIPScoreVerifierLoader,
    ImageRewardVerifierLoader,
    PickScoreVerifierLoader,
    HPSv2VerifierLoader,
    AestheticVerifierLoader,
    CLIPZeroShotVerifierLoader,
    DINOv2VerifierLoader,
    ClassifierVerifierLoader,
    VQAScoreVerifierLoader,
    LLMGraderVerifierLoader,
    RemoteGraderVerifierLoader,
    VerifierEnsemble,
    VerifierScore,
    LLMGraderAspects,
]
