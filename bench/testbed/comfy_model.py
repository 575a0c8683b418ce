"""The digits denoiser as a ComfyUI MODEL, so the pack's nodes drive it like any checkpoint.

A ComfyUI ``BaseModel`` with noise-prediction sampling (ComfyUI's ModelSamplingDiscrete, whose
default schedule is the one the denoiser was trained on) and a one-channel pixel-space latent
format, wrapped in a ``ModelPatcher``. The class label arrives as CONDITIONING: a one-hot
[1, 1, 11] "cross-attention" tensor (index 10 = the null class used as the negative for CFG).
The VAE is ComfyUI's pixel-space VAE (latents in [-1, 1] are the image).
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base
import torch

from .models import NULL_CLASS, NUM_CLASSES, load_model, timestep_to_sigma


class DigitsLatent(comfy.latent_formats.LatentFormat):
    latent_channels = 1
    scale_factor = 1.0


class DigitsConfig(comfy.supported_models_base.BASE):
    unet_config = {}
    latent_format = DigitsLatent
    supported_inference_dtypes = [torch.float32]
    memory_usage_factor = 0.01


class DigitsUNet(torch.nn.Module):
    """The call signature ComfyUI's BaseModel uses for its diffusion model, around the denoiser."""

    dtype = torch.float32  # BaseModel reports the diffusion model's dtype

    def __init__(self, denoiser: torch.nn.Module):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x, timesteps, context=None, **kwargs):
        # ComfyUI hands the discrete timestep; the denoiser is conditioned on sigma.
        sigma = timestep_to_sigma(timesteps.float().cpu()).to(x.device)
        labels = context[:, 0, : NUM_CLASSES + 1].argmax(-1)
        return self.denoiser(x, sigma, labels)


def load_digits_model(weights_dir=None) -> comfy.model_patcher.ModelPatcher:
    denoiser = load_model("denoiser", weights_dir) if weights_dir else load_model("denoiser")
    config = DigitsConfig({})
    base = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.EPS, device="cpu",
                                      unet_model=lambda **_: DigitsUNet(denoiser))
    base.eval()
    return comfy.model_patcher.ModelPatcher(base, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def class_conditioning(label: int | None) -> list:
    """CONDITIONING for a digit class (None = the null class, the CFG negative)."""
    onehot = torch.zeros(1, 1, NUM_CLASSES + 1)
    onehot[0, 0, NULL_CLASS if label is None else int(label)] = 1.0
    return [[onehot, {}]]


def pixel_vae() -> comfy.sd.VAE:
    return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
