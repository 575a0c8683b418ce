"""Vision-language verifiers on local chat VLMs through transformers: VQAScore and the LLM grader.

Both read a transformers model folder (``config.json``, safetensors weights, the processor's
files) with the architecture named in ``config.json`` (``Qwen2_5_VLForConditionalGeneration``,
``Qwen3VLForConditionalGeneration`` where the installed transformers has it, or another
image-text-to-text model transformers ships), local files only, no remote code. Prompts go
through the checkpoint's own chat template and processor; no text is generated: every score
is read from the next-token distribution of one forward pass.

- **VQAScore** (Lin et al. 2024, arXiv 2404.01291): the probability that the model's answer to
  ``question_template.format(prompt)`` starts with "Yes". The default template is the one of
  the authors' ``t2v-metrics`` package: ``Does this figure show "{}"? Please answer yes or no.``
  Score in [0, 1].
- **LLM grader** (the paper's evaluation grader, Table 2's "LLM grader" column): the image is
  rated on five aspects (accuracy to prompt, originality, visual quality, internal consistency,
  emotional resonance), each with its own question of the rubric below and one forward pass
  per aspect. An aspect's score is the expectation of the rating under the model's next-token
  distribution over the answers "0".."10" (renormalised over those eleven answers, so it is
  deterministic and smooth, unlike a sampled number). Where the tokenizer writes "10" as "1"
  then "0" (Qwen's tokenizers split digits), the same forward pass also reads the token after
  a teacher-forced "1": P(10) = P("1") P("0" | "1") and P(1) = P("1") P(no further digit | "1").
  Overall score = 10 x the mean of the five aspects, on the paper's 0-100 scale.
  ``aspect_scores`` returns every aspect.

Images: the ComfyUI float batch is quantised to 8 bits (what the processor would see from a
saved PNG) and handed to the checkpoint's processor as PIL images, so the pack's scores are
the ones a plain ``processor(...) + model(...)`` gives. ``image_size`` > 0 first resizes each
image so its longer side is that many pixels (antialiased bicubic); 0 keeps the native size
(the processor still rounds it to its patch grid within its own pixel limits).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .base import Condition, VerifierError
from .common import TorchVerifier, module_device, resample, to_nchw
from .weights import WeightsFileError

log = logging.getLogger(__name__)

# The default question of t2v-metrics (linzhiqiu/t2v_metrics), VQAScore's reference code.
VQA_TEMPLATE = 'Does this figure show "{}"? Please answer yes or no.'
YES = "Yes"

# The paper's five aspects (Ma et al. 2025, the LLM grader of its Table 2), each rated 0-10.
ASPECTS = ("accuracy_to_prompt", "originality", "visual_quality", "internal_consistency", "emotional_resonance")
ASPECT_QUESTIONS = {
    "accuracy_to_prompt": "How accurately does the image show everything the prompt asks for (objects, counts, "
                          "attributes, relations, text)?",
    "originality": "How original and creative is the image's interpretation of the prompt?",
    "visual_quality": "How good is the image's visual quality (sharpness, lighting, composition, no artifacts)?",
    "internal_consistency": "How consistent is the image with itself (plausible anatomy, perspective, physics, "
                            "no contradictions between its parts)?",
    "emotional_resonance": "How strongly does the image convey a mood or emotion that fits the prompt?",
}
GRADER_TEMPLATE = ("You are grading an image generated for the prompt \"{prompt}\". {question} "
                   "Rate it on a scale from 0 (worst) to 10 (best). Answer with the number only.")
RATINGS = tuple(str(k) for k in range(11))

MODEL_WEIGHTS = ("model.safetensors.index.json", "model.safetensors")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.json")


# -- pure tensor functions: scores from next-token logits ---------------------------------------

def yes_probability(last_logits: torch.Tensor, yes_id: int) -> torch.Tensor:
    """P("Yes") from next-token logits [B, V]: softmax over the whole vocabulary."""
    return torch.softmax(last_logits.float(), dim=-1)[:, yes_id]


def rating_distribution(first_logits: torch.Tensor, rating_ids: list[int], after_one: torch.Tensor | None = None,
                        digit_ids: list[int] | None = None) -> torch.Tensor:
    """[B, 11] probabilities of the answers 0..10, renormalised over those answers.

    ``rating_ids``: the single-token ids of "0".."10" (all eleven), or of "0".."9" when "10" is
    written "1" "0"; then ``after_one`` are the logits after a teacher-forced "1" and
    ``digit_ids`` the ids of "0".."9": P(10) = P("1") P("0"|"1"), P(1) = P("1") (1 - P(digit|"1")).
    """
    p = torch.softmax(first_logits.float(), dim=-1)[:, rating_ids]
    if len(rating_ids) == 10:
        if after_one is None or digit_ids is None:
            raise ValueError("a tokenizer without a single '10' token needs the logits after '1'")
        q = torch.softmax(after_one.float(), dim=-1)
        p_ten = p[:, 1] * q[:, digit_ids[0]]
        p_one = p[:, 1] * (1.0 - q[:, digit_ids].sum(-1)).clamp_min(0.0)
        p = torch.cat([p[:, :1], p_one[:, None], p[:, 2:], p_ten[:, None]], dim=1)
    return p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


def expected_rating(dist: torch.Tensor) -> torch.Tensor:
    """Expectation of the rating 0..10 under [B, 11] probabilities."""
    return dist @ torch.arange(11, dtype=dist.dtype, device=dist.device)


# -- loading ------------------------------------------------------------------------------------

def architecture_of(folder: Path) -> str:
    """The model class named in ``config.json``, checked to exist in the installed transformers."""
    import transformers

    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsFileError(f"could not read {path}: {e}") from None
    archs = config.get("architectures") or []
    if not archs:
        raise WeightsFileError(f"{path} names no architecture (its 'architectures' list is empty)")
    arch = archs[0]
    if not arch.endswith("ForConditionalGeneration") or getattr(transformers, arch, None) is None:
        raise WeightsFileError(
            f"{path} describes a {arch!r} model, which the installed transformers {transformers.__version__} does "
            f"not provide as a vision-language chat model; use a folder of Qwen2.5-VL "
            f"(Qwen2_5_VLForConditionalGeneration){', Qwen3-VL' if hasattr(transformers, 'Qwen3VLForConditionalGeneration') else ''} "
            f"or another image-text-to-text model of transformers (or upgrade transformers)")
    return arch


def checkpoint_dtype(folder: Path) -> torch.dtype:
    """The dtype the checkpoint was saved in (config's ``dtype``/``torch_dtype``), float32 if unknown."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name), torch.float32)


def load_vlm(folder: str | os.PathLike, dtype: torch.dtype | None = None):
    """(model, processor) from a local transformers folder; weights read with safetensors only."""
    import transformers

    folder = Path(folder)
    arch = architecture_of(folder)
    if not any((folder / n).is_file() for n in MODEL_WEIGHTS):
        raise WeightsFileError(f"{folder} has no {' or '.join(MODEL_WEIGHTS)} (the model's safetensors weights)")
    dtype = dtype or checkpoint_dtype(folder)
    try:
        model, info = getattr(transformers, arch).from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype,
            output_loading_info=True)
    except Exception as e:  # transformers wraps safetensors errors in several types
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise WeightsFileError(f"could not read the weights in {folder}: a file is corrupt, truncated or missing "
                               f"({type(e).__name__}: {text})") from None
    missing, unexpected = list(info.get("missing_keys", ())), list(info.get("unexpected_keys", ()))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        raise WeightsFileError(f"the weights in {folder} do not fit its config.json: missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}, mismatched {mismatched[:3]}")
    try:
        processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True,
                                                               trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        raise WeightsFileError(f"could not read the processor files in {folder} ({', '.join(PROCESSOR_FILES)}): "
                               f"{str(e).splitlines()[0][:300]}") from None
    if getattr(processor, "chat_template", None) is None:
        raise WeightsFileError(f"{folder} has no chat template (chat_template.json or tokenizer_config.json's "
                               "chat_template): the model's prompt format is unknown")
    return model.eval().requires_grad_(False), processor


# -- the verifiers ------------------------------------------------------------------------------

class ChatVLMVerifier(TorchVerifier):
    """Shared by VQAScore and the grader: prompts, images and one forward pass per prompt."""

    max_batch = 8

    def __init__(self, model, processor, image_size: int = 0):
        super().__init__()
        if int(image_size) < 0:
            raise VerifierError(f"image_size must be 0 (native) or a positive number of pixels, got {image_size}")
        self.model, self.processor, self.image_size = model, processor, int(image_size)
        self.tokenizer = processor.tokenizer
        # Set by the ComfyUI loader: raises when the user interrupts (checked between forward passes).
        self.check_interrupt: Callable[[], None] | None = None
        self.forward_passes = 0  # counted for the benchmark
        self.last_image_tokens = 0  # image tokens of one sequence of the last forward pass
        self.last_tokens = 0  # its whole length (image, prompt, template and any teacher-forced token)

    def torch_modules(self):
        return [self.model]

    def single_token(self, text: str) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    def prompt_text(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def pil_images(self, images: torch.Tensor) -> list:
        """IMAGE [B, H, W, 3] in [0, 1] -> 8-bit PIL images (resized when image_size > 0)."""
        from PIL import Image

        x = images
        if self.image_size > 0:
            h, w = x.shape[1:3]
            s = self.image_size / max(h, w)
            x = resample(to_nchw(x, "cpu"), (max(1, round(h * s)), max(1, round(w * s))), "bicubic").movedim(1, -1)
        arrays = (x.float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        return [Image.fromarray(a) for a in arrays]

    def next_token_logits(self, pil_images: list, question: str, extra_ids: list[int] = ()) -> torch.Tensor:
        """Logits [B, 1 + len(extra_ids), V] after the prompt (and after each teacher-forced extra token)."""
        if self.check_interrupt is not None:
            self.check_interrupt()
        text = self.prompt_text(question)
        inputs = self.processor(text=[text] * len(pil_images), images=pil_images, return_tensors="pt", padding=True)
        if extra_ids:
            extra = torch.tensor([list(extra_ids)] * len(pil_images), dtype=inputs["input_ids"].dtype)
            shape = inputs["input_ids"].shape
            for key, value in list(inputs.items()):
                # Per-token tensors (attention mask, token types) grow with the teacher-forced tokens.
                if key != "input_ids" and isinstance(value, torch.Tensor) and value.shape == shape:
                    fill = torch.ones_like(extra) if key == "attention_mask" else torch.zeros_like(extra)
                    inputs[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
        image_token = getattr(self.processor, "image_token", "<|image_pad|>")
        self.last_image_tokens = int((inputs["input_ids"][0] == self.tokenizer.convert_tokens_to_ids(image_token)).sum())
        self.last_tokens = int(inputs["input_ids"].shape[1])
        device = module_device(self.model)
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        out = self.model(**inputs, logits_to_keep=1 + len(extra_ids), use_cache=False)
        self.forward_passes += 1
        return out.logits.float()

    @staticmethod
    def prompt_of(condition: Condition, what: str) -> str:
        if not condition.text.strip():
            raise VerifierError(f"{what} needs the prompt text: it judges how well an image fits its prompt "
                                "(the condition text is empty)")
        return condition.text.strip()


class VQAScoreVerifier(ChatVLMVerifier):
    """VQAScore: P("Yes" | image, question_template.format(prompt)), in [0, 1]."""

    name = "VQAScore"

    def __init__(self, model, processor, question_template: str = VQA_TEMPLATE, image_size: int = 0):
        super().__init__(model, processor, image_size)
        if question_template.count("{}") != 1:
            raise VerifierError(f"question_template must contain exactly one {{}} where the prompt goes, got "
                                f"{question_template!r} (default: {VQA_TEMPLATE!r})")
        self.question_template = question_template
        yes = self.single_token(YES)
        if yes is None:
            raise WeightsFileError(f"the tokenizer writes {YES!r} as several tokens; VQAScore reads the probability "
                                   "of one answer token")
        self.yes_id = yes

    def _score(self, images, condition: Condition, early):
        question = self.question_template.format(self.prompt_of(condition, self.name))
        return yes_probability(self.next_token_logits(self.pil_images(images), question)[:, -1], self.yes_id)


class LLMGraderVerifier(ChatVLMVerifier):
    """The paper's LLM grader on a local VLM: 10 x mean of five expected 0-10 ratings (0-100)."""

    name = "LLM grader"

    def __init__(self, model, processor, image_size: int = 0):
        super().__init__(model, processor, image_size)
        ids = [self.single_token(r) for r in RATINGS]
        if any(i is None for i in ids[:10]):
            raise WeightsFileError("the tokenizer does not write each digit 0-9 as one token; the grader reads "
                                   "the rating from one next-token distribution")
        self.digit_ids = ids[:10]
        self.rating_ids = ids if ids[10] is not None else ids[:10]
        self.last_aspects: torch.Tensor | None = None

    def aspect_scores(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        """[B, 5] expected ratings 0-10, in the order of ``ASPECTS``."""
        pil = self.pil_images(images)
        columns = []
        for aspect in ASPECTS:
            question = GRADER_TEMPLATE.format(prompt=prompt, question=ASPECT_QUESTIONS[aspect])
            if len(self.rating_ids) == 11:
                logits = self.next_token_logits(pil, question)
                dist = rating_distribution(logits[:, -1], self.rating_ids)
            else:
                logits = self.next_token_logits(pil, question, extra_ids=[self.digit_ids[1]])
                dist = rating_distribution(logits[:, -2], self.rating_ids, logits[:, -1], self.digit_ids)
            columns.append(expected_rating(dist))
        return torch.stack(columns, dim=1)

    def _score(self, images, condition: Condition, early):
        aspects = self.aspect_scores(images, self.prompt_of(condition, self.name))
        self.last_aspects = aspects.detach().cpu()
        return overall(aspects)

    def aspects_of(self, images: torch.Tensor, condition: str) -> list[dict[str, float]]:
        """Every image's five ratings (0-10) by aspect and the overall score, for a search report."""
        aspects = self.aspect_scores(images, self.prompt_of(Condition(condition or ""), self.name)).float()
        return [{**dict(zip(ASPECTS, row.tolist())), "overall": float(total)}
                for row, total in zip(aspects, overall(aspects))]


def overall(aspects: torch.Tensor) -> torch.Tensor:
    """The paper's 0-100 scale: 10 x the mean of the 0-10 aspect ratings."""
    return aspects.mean(dim=-1) * 10.0


def aspects_dict(aspects: torch.Tensor) -> list[dict[str, float]]:
    """[B, 5] -> one {aspect: rating, "overall": 0-100} per image (for reports)."""
    return [{**{a: round(float(v), 4) for a, v in zip(ASPECTS, row)}, "overall": round(float(overall(row)), 4)}
            for row in aspects]
