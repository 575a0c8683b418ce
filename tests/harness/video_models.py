"""Tiny video models in the files layouts the host's loaders detect, random weights, cached.

No weights can be downloaded here, so the video tests build one tiny model per family, in the
layout of the files users put in their model folders, and load them through the host's own
loaders (UNETLoader, CheckpointLoaderSimple, VAELoader), which detect each family from the keys
and shapes:

- Wan 2.1 text-to-video (and each expert of Wan 2.2 14B, the same architecture): a WanModel
  with ``head.modulation`` (dim 128 = one 128-wide head, one block), 16-channel latents;
  VAE: the Wan 2.1 VAE layout (``decoder.middle.0.residual.0.gamma``) at width 8.
- Wan 2.2 5B: the same layout with 48 input and output channels (WAN22_T2V, the Wan 2.2
  latent format); VAE: the taew2_2 layout (TAEHV, ``decoder.22.bias``, 48 channels).
- LTX-Video: a checkpoint (CheckpointLoaderSimple) of an LTXV transformer (``adaln_single``,
  32 heads of width 4, one block) and an LTXV VAE whose configuration travels in the file's
  ``config`` metadata as the official 0.9.x checkpoints carry it (three compressions and one residual layer; the decoder reads them in reverse, so its first block is the residual one the host detects).
- HunyuanVideo: a transformer with ``txt_in.individual_token_refiner`` (one 128-wide head, one
  double and one single block, guidance embedding as the t2v model has); VAE: the taehv layout
  (16 channels, stored in float16, which the host reads as HunyuanVideo's).

The text encoders of these families (umT5-XXL, T5-XXL, LLaVA-Llama-3) cannot be made small for
their loaders, so the tests make conditioning in-process with each family's embedding width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .host import load_host
from .tiny_models import (
    CACHE,  # noqa: F401 (tests put the video models folder on ComfyUI's paths)
    _randomize,
)
from .tiny_models import _cached as cached_file

RECIPE = 2
# Embedding widths of each family's text encoder (what its conditioning carries).
TEXT_WIDTH = {"wan": 4096, "ltxv": 4096, "hunyuan": 4096}


def _cached(name: str, build, metadata: dict | None = None) -> Path:
    return cached_file(name, build, metadata, recipe=RECIPE)


def _ops():
    import comfy.ops

    return comfy.ops.manual_cast


def wan_state_dict(channels: int = 16, seed: int = 10, model_type: str = "t2v") -> dict[str, torch.Tensor]:
    load_host()
    from comfy.ldm.wan.model import WanModel

    # i2v: the noise, a 4-channel mask and the start image's latent are concatenated (36 channels in).
    in_dim = channels + 20 if model_type == "i2v" else channels
    model = WanModel(model_type=model_type, in_dim=in_dim, out_dim=channels, dim=128, ffn_dim=256, num_heads=1,
                     num_layers=1, text_dim=TEXT_WIDTH["wan"], operations=_ops(), device="cpu", dtype=torch.float32)
    # The host builds with uninitialised weights: draw every one (norms 1, biases 0).
    return _randomize(model.state_dict(), seed)


def wan21_vae_state_dict(seed: int = 11) -> dict[str, torch.Tensor]:
    load_host()
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    return _fan_in(vae.state_dict(), seed)


def taehv_state_dict(channels: int, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    load_host()
    from comfy.taesd.taehv import TAEHV

    return {k: v.to(dtype) for k, v in _fan_in(TAEHV(latent_channels=channels).state_dict(), seed).items()}


def _fan_in(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random weights scaled by fan-in (activations stay finite through a decoder's depth);
    vectors (biases, norm gains) as the host's modules start them: gains 1, the rest 0."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v.contiguous()
        elif v.ndim > 1:
            out[k] = torch.randn(v.shape, generator=g) * (1.0 / v[0].numel()) ** 0.5
        elif k.endswith("gamma") or ("norm" in k and k.endswith("weight")):
            out[k] = torch.ones_like(v)
        else:
            out[k] = torch.zeros_like(v)
    return out


LTXV_VAE_CONFIG = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "blocks": [["compress_all", 1], ["compress_all", 1], ["compress_all", 1], ["res_x", 1]],
    "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
    "use_quant_conv": False, "causal_decoder": False,
}


def ltxv_checkpoint_state_dict(seed: int = 12) -> dict[str, torch.Tensor]:
    load_host()
    from comfy.ldm.lightricks.model import LTXVModel
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE

    # Detection: 32 heads of attention_head_dim = to_k rows // 32; cross_attention_dim = to_k columns.
    dit = LTXVModel(in_channels=128, cross_attention_dim=128, attention_head_dim=4, num_attention_heads=32,
                    caption_channels=TEXT_WIDTH["ltxv"], num_layers=1, operations=_ops(), device="cpu",
                    dtype=torch.float32)
    sd = {"model.diffusion_model." + k: v for k, v in _randomize(dit.state_dict(), seed).items()}
    vae = VideoVAE(config=LTXV_VAE_CONFIG)
    vae_sd = _fan_in(vae.state_dict(), seed + 1)
    # The per-channel statistics un-normalise latents: mean 0, std 1.
    for k in vae_sd:
        if k.startswith("per_channel_statistics.std"):
            vae_sd[k] = torch.ones_like(vae_sd[k])
    sd.update({"vae." + k: v for k, v in vae_sd.items()})
    return sd


def hunyuan_state_dict(seed: int = 13) -> dict[str, torch.Tensor]:
    load_host()
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768,
                         context_in_dim=TEXT_WIDTH["hunyuan"], hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1,
                         depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2],
                         qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
                         use_cond_type_embedding=False, vision_in_dim=None, operations=_ops(), device="cpu", dtype=torch.float32)
    return _randomize(model.state_dict(), seed)


def wan21_unet() -> Path:
    return _cached("tiny_wan2.1_t2v.safetensors", wan_state_dict)


def wan21_i2v_unet() -> Path:
    return _cached("tiny_wan2.1_i2v.safetensors", lambda: wan_state_dict(seed=14, model_type="i2v"))


def wan22_experts() -> tuple[Path, Path]:
    """(high-noise expert, low-noise expert) of the Wan 2.2 14B layout: two Wan 2.1-architecture models."""
    return (_cached("tiny_wan2.2_t2v_high_noise.safetensors", lambda: wan_state_dict(seed=20)),
            _cached("tiny_wan2.2_t2v_low_noise.safetensors", lambda: wan_state_dict(seed=21)))


def wan22_5b_unet() -> Path:
    return _cached("tiny_wan2.2_ti2v_5B.safetensors", lambda: wan_state_dict(channels=48, seed=22))


def wan21_vae() -> Path:
    return _cached("tiny_wan_2.1_vae.safetensors", wan21_vae_state_dict)


def taew22_vae() -> Path:
    return _cached("tiny_taew2_2.safetensors", lambda: taehv_state_dict(48, 23))


def taehv_vae() -> Path:
    return _cached("tiny_taehv.safetensors", lambda: taehv_state_dict(16, 24, torch.float16))


def ltxv_checkpoint() -> Path:
    return _cached("tiny_ltx-video.safetensors", ltxv_checkpoint_state_dict,
                   metadata={"config": json.dumps({"vae": LTXV_VAE_CONFIG})})


def hunyuan_unet() -> Path:
    return _cached("tiny_hunyuan_video_t2v.safetensors", hunyuan_state_dict)


def conditioning(family: str, seed: int = 1, tokens: int = 8, pooled: bool = False):
    """(positive, negative) conditioning of the family's text-embedding width, made in-process."""
    g = torch.Generator().manual_seed(seed)
    width = TEXT_WIDTH[family]
    def extra():
        # HunyuanVideo's guidance graph carries CLIP-L's pooled output; LTX-Video's T5 its attention mask.
        out = {"pooled_output": torch.randn(1, 768, generator=g)} if pooled else {}
        if family == "ltxv":
            out["attention_mask"] = torch.ones(1, tokens, dtype=torch.long)
        return out
    pos = [[torch.randn(1, tokens, width, generator=g), extra()]]
    neg = [[torch.randn(1, tokens, width, generator=g) * 0.1, extra()]]
    return pos, neg
