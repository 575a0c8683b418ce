"""Tiny random-weight Qwen2.5-VL and Qwen3-VL checkpoints in the official file layout.

Nothing can be downloaded here, so the tests build what a Hugging Face model folder holds:
``config.json``, ``generation_config.json``, sharded ``model-0000k-of-0000n.safetensors`` with
``model.safetensors.index.json``, and the processor files (``preprocessor_config.json``,
``tokenizer.json``, ``tokenizer_config.json``, ``vocab.json``, ``merges.txt``,
``chat_template.json``). The tokenizer is a byte-level BPE trained here on a few sentences, with
Qwen's special tokens; "Yes", "No" and the digits are single tokens as in Qwen's vocabulary
(and, as there, "10" is two tokens). The chat template is a short one written here that renders
Qwen's chat format (``<|im_start|>role ... <|im_end|>`` with a vision block for the image).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# Qwen's chat format, written for these tests: system turn, then each message; an image part
# becomes the vision block the processor expands into the image's tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CORPUS = [
    "Does this figure show \"a red cube on a blue sphere\"? Please answer yes or no.",
    "Yes No Yes No yes no 0 1 2 3 4 5 6 7 8 9 10",
    "You are a helpful assistant. Rate the image for accuracy to the prompt, originality, visual quality, "
    "internal consistency and emotional resonance on a scale from 0 to 10. Answer with one number.",
    "a photo of a cat, two dogs, a green apple and a yellow banana on a wooden table",
    "system user assistant",
]


def build_tokenizer(folder: Path):
    """A byte-level BPE (Qwen2TokenizerFast) with Qwen's special tokens, saved into ``folder``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    # Qwen2's split: digits one by one, words, punctuation, whitespace; then bytes.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+| ?\p{L}+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    roles = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}  # Qwen's, as in its tokenizer_config.json
    fast = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None, **roles)
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    fast.add_tokens(["<|endoftext|>"], special_tokens=True)
    for word in ("Yes", "No", *[str(d) for d in range(10)]):
        assert len(fast(word, add_special_tokens=False)["input_ids"]) == 1, word
    return fast


def _ids(tok) -> dict:
    return {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}


def qwen25_config(tok):
    from transformers import Qwen2_5_VLConfig

    ids = _ids(tok)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 2, 2]},
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, architectures=["Qwen2_5_VLForConditionalGeneration"],
                            **ids)


def qwen3_config(tok):
    from transformers import Qwen3VLConfig

    ids = _ids(tok)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2],
                                 "mrope_interleaved": True},
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                  deepstack_visual_indexes=[0])
    return Qwen3VLConfig(text_config=text, vision_config=vision, architectures=["Qwen3VLForConditionalGeneration"],
                         **ids)


def write_checkpoint(folder: Path, kind: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A tiny random ``kind`` ("qwen2_5_vl" or "qwen3_vl") checkpoint folder in the official layout."""
    import transformers
    from transformers import AutoProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder)
    if kind == "qwen2_5_vl":
        config, cls = qwen25_config(tok), transformers.Qwen2_5_VLForConditionalGeneration
        from transformers import Qwen2_5_VLProcessor as Proc
        from transformers import Qwen2VLImageProcessor as ImageProc
        image_proc = ImageProc(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    else:
        config, cls = qwen3_config(tok), transformers.Qwen3VLForConditionalGeneration
        from transformers import Qwen2VLImageProcessor as ImageProc
        from transformers import Qwen3VLProcessor as Proc
        image_proc = ImageProc(patch_size=16, merge_size=2, min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 64,
                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        # Larger random logits than the default init gives: P("Yes") and the digit
        # distributions then differ visibly between images.
        model.lm_head.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder, max_shard_size="200KB", safe_serialization=True)
    video = _video_processor(kind)
    processor = Proc(image_processor=image_proc, tokenizer=tok, video_processor=video, chat_template=CHAT_TEMPLATE)
    # The official repositories' processor files (transformers 5 would write processor_config.json
    # and chat_template.jinja instead): preprocessor_config.json, the tokenizer files, chat_template.json.
    image_proc.save_pretrained(folder)
    tok.save_pretrained(folder)
    tok.backend_tokenizer.model.save(str(folder))  # vocab.json and merges.txt
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))
    del processor
    # The reloaded processor must be the one saved (the tests compare against it).
    AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    return folder


def _video_processor(kind):
    if kind == "qwen2_5_vl":
        from transformers import Qwen2VLVideoProcessor

        return Qwen2VLVideoProcessor()
    from transformers import Qwen3VLVideoProcessor

    return Qwen3VLVideoProcessor(patch_size=16)
