"""Verifier loader nodes, the ensemble, and VerifierScore (best-of-batch without search).

Every node is a thin schema; the work happens in ``verifiers/`` (``verifiers.loaders`` for
files, caching and memory management, ``verifiers.scoring`` for chunked scoring).
Relative imports on purpose: they always reach this pack's own ``verifiers`` package,
whatever else the Python environment calls ``verifiers``.
"""

from __future__ import annotations

import json

import comfy.model_management
import comfy.utils
import torch

from ..verifiers import comfy_runtime as rt
from ..verifiers import loaders
from ..verifiers.base import VerifierError
from ..verifiers.dinov2 import DEFAULT_EARLY_LEVEL
from ..verifiers.hub import DOWNLOAD_ENV, OFFLINE_ENV
from ..verifiers.scoring import ranking, score_in_chunks
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
class CLIPScoreVerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CLIPScoreVerifierLoader",
            display_name="Load CLIPScore Verifier",
            category=CATEGORY,
            description="CLIPScore as CLIP-S = 2.5 x max(cosine(image, prompt), 0), in [0, 2.5]: the scale "
                        "of the paper's tables (about 0.7-0.8 for good FLUX images; a raw cosine is about "
                        "0.25-0.35). open_clip; prompts past 77 tokens are truncated.",
            inputs=[clip_file_input(), architecture_input(), precision_input(), allow_download_input()],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, clip_file, **kwargs):
        return _stamp(clip_file)

    @classmethod
    def execute(cls, clip_file, architecture, precision, allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_clipscore(clip_file, architecture, precision, allow_download,
                                                    cls.hidden.unique_id))


class AestheticVerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AestheticVerifierLoader",
            display_name="Load Aesthetic Verifier",
            category=CATEGORY,
            description="LAION aesthetic predictor v2: predicted rating (about 1-10) from CLIP ViT-L/14 "
                        "image embeddings. Needs no prompt. Shares the CLIP model with CLIPScore.",
            inputs=[
                io.Combo.Input("aesthetic_file", options=loaders.aesthetic_choices(),
                               default=loaders.DEFAULT_AESTHETIC,
                               tooltip="Predictor head in models/verifiers/aesthetic/ (official: "
                                       "sac+logos+ava1-l14-linearMSE.pth)."),
                clip_file_input(), architecture_input(), precision_input(), allow_download_input(),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, aesthetic_file, clip_file, **kwargs):
        return _stamp(aesthetic_file, clip_file)

    @classmethod
    def execute(cls, aesthetic_file, clip_file, architecture, precision, allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_aesthetic(aesthetic_file, clip_file, architecture, precision,
                                                    allow_download, cls.hidden.unique_id))


class CLIPZeroShotVerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CLIPZeroShotVerifierLoader",
            display_name="Load CLIP Zero-Shot Verifier",
            category=CATEGORY,
            description="CLIP zero-shot classifier: the score is the logit (100 x cosine) of the class "
                        "named by the condition (a class name or its 0-based index).",
            inputs=[
                io.String.Input("class_names", multiline=True, default="cat\ndog",
                                tooltip="One class name per line."),
                io.String.Input("templates", multiline=True, default="a photo of a {}.",
                                tooltip="One prompt template per line, {} marks the class name; a class's "
                                        "text embedding is the mean over its templates."),
                clip_file_input(), architecture_input(), precision_input(), allow_download_input(),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, clip_file, **kwargs):
        return _stamp(clip_file)

    @classmethod
    def execute(cls, class_names, templates, clip_file, architecture, precision,
                allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_zero_shot(class_names, templates, clip_file, architecture, precision,
                                                    allow_download, cls.hidden.unique_id))


class DINOv2VerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DINOv2VerifierLoader",
            display_name="Load DINOv2 Self-Supervised Verifier",
            category=CATEGORY,
            description="The paper's self-supervised verifier: cosine similarity of DINOv2 CLS features of "
                        "the early x0-prediction and of the final image. Needs no prompt.",
            inputs=[
                io.Combo.Input("dinov2_folder", options=loaders.dinov2_choices(), default=loaders.DEFAULT_DINOV2,
                               tooltip="A transformers DINOv2 folder in models/verifiers/ holding config.json "
                                       "and model.safetensors (e.g. facebook/dinov2-small)."),
                io.Float.Input("early_level", default=DEFAULT_EARLY_LEVEL, min=0.01, max=0.99, step=0.01,
                               tooltip="Where the early x0-prediction is taken, as a fraction of the noise "
                                       "schedule: 1 = pure noise, 0 = clean (the paper: about 0.4)."),
                precision_input(), allow_download_input(),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, dinov2_folder, **kwargs):
        return _stamp(f"{dinov2_folder}/config.json", f"{dinov2_folder}/model.safetensors")

    @classmethod
    def execute(cls, dinov2_folder, early_level, precision, allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_dinov2_verifier(dinov2_folder, early_level, precision, allow_download,
                                                          cls.hidden.unique_id))


class ImageRewardVerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        models, configs, tokenizers = loaders.imagereward_choices()
        return io.Schema(
            node_id="ImageRewardVerifierLoader",
            display_name="Load ImageReward Verifier",
            category=CATEGORY,
            description="ImageReward v1.0: human-preference reward of an image for the prompt "
                        "(about -2..2; prompts past 35 tokens are truncated).",
            inputs=[
                io.Combo.Input("model_file", options=models, default=loaders.DEFAULT_IMAGEREWARD,
                               tooltip="Official ImageReward.pt (THUDM/ImageReward) in models/verifiers/ImageReward/."),
                io.Combo.Input("med_config_file", options=configs, default=loaders.DEFAULT_MED_CONFIG,
                               tooltip="med_config.json from THUDM/ImageReward."),
                io.Combo.Input("tokenizer_dir", options=tokenizers, default=loaders.DEFAULT_BERT_DIR,
                               tooltip="Folder holding bert-base-uncased's vocab.txt."),
                precision_input(), allow_download_input(),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, model_file, med_config_file, tokenizer_dir, **kwargs):
        return _stamp(model_file, med_config_file, f"{tokenizer_dir}/vocab.txt")

    @classmethod
    def execute(cls, model_file, med_config_file, tokenizer_dir, precision, allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_imagereward(model_file, med_config_file, tokenizer_dir, precision,
                                                      allow_download, cls.hidden.unique_id))


class PickScoreVerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        models, processors = loaders.pickscore_choices()
        return io.Schema(
            node_id="PickScoreVerifierLoader",
            display_name="Load PickScore Verifier",
            category=CATEGORY,
            description="PickScore v1 (Pick-a-Pic): human-preference score of an image for the prompt, "
                        "logit_scale.exp() x cosine of a CLIP ViT-H/14 fine-tuned on user choices "
                        "(prompts past 77 tokens are truncated). Higher is better.",
            inputs=[
                io.Combo.Input("model_folder", options=models, default=loaders.DEFAULT_PICKSCORE,
                               tooltip="Folder in models/verifiers/ with yuvalkirstain/PickScore_v1's config.json "
                                       "and model.safetensors (found in the Hugging Face cache, or downloaded "
                                       "when allowed)."),
                io.Combo.Input("processor_folder", options=processors, default=loaders.DEFAULT_PICKSCORE_PROCESSOR,
                               tooltip="Folder with the processor PickScore uses: the tokenizer files and "
                                       "preprocessor_config.json of laion/CLIP-ViT-H-14-laion2B-s32B-b79K."),
                precision_input(), allow_download_input(),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, model_folder, processor_folder, **kwargs):
        return _stamp(f"{model_folder}/config.json", f"{model_folder}/model.safetensors",
                      f"{processor_folder}/preprocessor_config.json", f"{processor_folder}/tokenizer.json")

    @classmethod
    def execute(cls, model_folder, processor_folder, precision, allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_pickscore(model_folder, processor_folder, precision, allow_download,
                                                    cls.hidden.unique_id))


class HPSv2VerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="HPSv2VerifierLoader",
            display_name="Load HPSv2.1 Verifier",
            category=CATEGORY,
            description="HPS v2.1 (Human Preference Score v2.1): cosine of the image and prompt embeddings of an "
                        "open_clip ViT-H-14 fine-tuned on human preferences (prompts past 77 tokens are "
                        "truncated). Higher is better.",
            inputs=[
                io.Combo.Input("model_file", options=loaders.hps_choices(), default=loaders.DEFAULT_HPS,
                               tooltip="HPS_v2.1_compressed.pt from xswu/HPSv2 in models/verifiers/HPSv2/ (also "
                                       "found in the Hugging Face cache or the hpsv2 package's ~/.cache/hpsv2)."),
                io.Combo.Input("architecture", options=loaders.clip_architectures()[1:],
                               default=loaders.DEFAULT_HPS_ARCH,
                               tooltip="open_clip architecture of the checkpoint (HPS v2.1 is ViT-H-14)."),
                precision_input(), allow_download_input(),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, model_file, **kwargs):
        return _stamp(model_file)

    @classmethod
    def execute(cls, model_file, architecture, precision, allow_download) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_hpsv2(model_file, architecture, precision, allow_download,
                                                cls.hidden.unique_id))


class ClassifierVerifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ClassifierVerifierLoader",
            display_name="Load Classifier Verifier",
            category=CATEGORY,
            description="Any image classifier (safetensors + JSON config): the score is the logit of the "
                        "class named by the condition (a class name or its 0-based index).",
            inputs=[
                io.Combo.Input("classifier_file", options=loaders.classifier_choices(),
                               tooltip="A classifier in models/verifiers/classifiers/: <name>.safetensors with "
                                       "<name>.json beside it (architecture, classes, input size, mean/std)."),
            ],
            outputs=[verifier_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, classifier_file, **kwargs):
        json_rel = classifier_file.rsplit(".", 1)[0] + ".json"
        return _stamp(classifier_file, json_rel)

    @classmethod
    def execute(cls, classifier_file) -> io.NodeOutput:
        return io.NodeOutput(loaders.load_classifier_verifier(classifier_file, cls.hidden.unique_id))


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
        if not hasattr(verifier, "score"):
            raise VerifierError("verifier: connect a VERIFIER from a verifier loader node")
        bar = comfy.utils.ProgressBar(images.shape[0], cls.hidden.unique_id)

        def on_chunk(done: int, total: int) -> None:
            bar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        scores = score_in_chunks(verifier, images, condition, early_images, on_chunk)
        order = ranking(scores)
        best = order[0]
        return io.NodeOutput(
            images[best:best + 1], best, float(scores[best]),
            json.dumps([float(s) for s in scores]), json.dumps(order),
            images[torch.tensor(order, dtype=torch.long)],
        )


VERIFIER_NODES = [
    CLIPScoreVerifierLoader,
    ImageRewardVerifierLoader,
    PickScoreVerifierLoader,
    HPSv2VerifierLoader,
    AestheticVerifierLoader,
    CLIPZeroShotVerifierLoader,
    DINOv2VerifierLoader,
    ClassifierVerifierLoader,
    VerifierEnsemble,
    VerifierScore,
]
