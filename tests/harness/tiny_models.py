"""Tiny models in the real file formats, built with random weights and cached on disk.

No weights can be downloaded here, so tests build models that ComfyUI detects and loads
through its ordinary loaders: an SD1.5-shaped UNet (full channel widths, one level deep),
a TAESD-format VAE, and a checkpoint with a random full-size CLIP-L text encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .host import REPO, load_host

CACHE = REPO / ".cache" / "tiny_models"
# Bump when the recipe changes so stale caches are rebuilt.
RECIPE = 4


def _cached(name: str, build, metadata: dict | None = None, recipe: int = RECIPE) -> Path:
    """``name`` in the cache, built by ``build()`` (a state dict) unless the cached file was made by
    this ``recipe``; ``metadata`` goes into the safetensors header."""
    path = CACHE / name
    stamp = path.with_suffix(path.suffix + ".recipe")
    if path.is_file() and stamp.is_file() and stamp.read_text() == str(recipe):
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(build(), str(tmp), metadata={"noise_search_tiny": json.dumps({"recipe": recipe}), **(metadata or {})})
    tmp.replace(path)
    stamp.write_text(str(recipe))
    return path


def _randomize(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v.contiguous()
        elif "norm" in k and k.endswith("weight"):
            out[k] = torch.ones_like(v)
        elif k.endswith("bias"):
            out[k] = torch.zeros_like(v)
        else:
            out[k] = (torch.randn(v.shape, generator=g) * 0.02).to(v.dtype)
    return out


def unet_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    load_host()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    # SD1.5 detection needs model_channels 320 and context_dim 768; depth can be minimal.
    unet = UNetModel(
        image_size=32, in_channels=4, out_channels=4, model_channels=320,
        num_res_blocks=[1], channel_mult=[1],
        transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=-2,
        context_dim=768, num_head_channels=64, use_linear_in_transformer=False,
        use_spatial_transformer=True, use_checkpoint=False, legacy=False,
        dtype=torch.float32, device="cpu",
    )
    sd = _randomize(unet.state_dict(), seed)
    return {"model.diffusion_model." + k: v for k, v in sd.items()}


def taesd_state_dict(seed: int = 1, latent_channels: int = 4) -> dict[str, torch.Tensor]:
    load_host()
    from comfy.taesd.taesd import TAESD

    # ComfyUI builds TAESD with uninitialised weights (disable_weight_init): draw them here,
    # scaled by fan-in so activations stay finite through the decoder's depth.
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in TAESD(latent_channels=latent_channels).state_dict().items():
        if v.ndim > 1:
            fan_in = v[0].numel()
            sd[k] = torch.randn(v.shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            sd[k] = torch.zeros_like(v)
    sd["vae_scale"] = torch.tensor(1.0)
    sd["vae_shift"] = torch.tensor(0.0)
    return sd


def clip_l_state_dict(seed: int = 2) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                         num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                         hidden_act="quick_gelu", projection_dim=768)
    model = CLIPTextModel(cfg)
    sd = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()
          if not k.endswith("position_ids")}
    return {"cond_stage_model.transformer." + k: v for k, v in sd.items()}


def tiny_unet() -> Path:
    return _cached("tiny_sd15_unet.safetensors", unet_state_dict)


def tiny_taesd() -> Path:
    return _cached("tiny_taesd.safetensors", taesd_state_dict)


def tiny_taesd16() -> Path:
    """A TAESD with 16 latent channels (the SD3/FLUX latent shape)."""
    return _cached("tiny_taesd16.safetensors", lambda: taesd_state_dict(seed=3, latent_channels=16))


def tiny_checkpoint() -> Path:
    def build():
        sd = dict(unet_state_dict())
        sd.update({"first_stage_model." + k: v for k, v in taesd_state_dict().items()})
        sd.update(clip_l_state_dict())
        return sd
    return _cached("tiny_sd15_checkpoint.safetensors", build)
