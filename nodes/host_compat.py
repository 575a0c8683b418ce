"""What the pack takes from ComfyUI where host versions differ, feature-detected in one place.

Tested on ComfyUI v0.3.75; the branches for newer hosts were read from the source of
ComfyUI 0.38.1 (see docs/hosts.md for the commits read).

**Node API.** The nodes are V3 nodes: ``io`` (ComfyNode, Schema, the socket types) and
``ComfyExtension``. ComfyUI ships them as ``comfy_api.latest`` (marked unstable: it follows
the host) and as pinned versions ``comfy_api.v0_0_X``. v0.3.75 ships v0_0_1 and v0_0_2; 0.38
adds v0_0_3 and still ships v0_0_2. The pack imports **the pinned ``comfy_api.v0_0_2``**, the
newest version both hosts ship, so both load the pack against the same named contract; a host
that drops it falls back to ``comfy_api.latest``. (Today every pinned version re-exports the
``io`` of ``latest``: the choice names a contract, it does not change objects.)

**Memory.** Newer hosts run NVIDIA GPUs with dynamic VRAM (comfy-aimdo): the diffusion model
stays partly resident and is paged on demand, ``comfy.model_management.get_free_memory``
under-reports what a batch may use, and the host's source says to ask the patcher
(``ModelPatcher.get_free_memory(device)``, which adds what aimdo can page out). Core nodes
make their auxiliary models' patchers with ``comfy.model_patcher.CoreModelPatcher`` (the host
rebinds that name to its dynamic patcher when dynamic VRAM is on) and load them with
``load_models_gpu``. A plain ``ModelPatcher`` in that call makes the memory manager take its
non-dynamic branch, which unloads the (dynamic) diffusion model to make room, on every call.
v0.3.75 has neither name: plain patchers and the module-level free memory.
"""

from __future__ import annotations

import importlib

import torch

# Newest first: the node API versions the pack accepts (see the module docstring).
API_VERSIONS = ("comfy_api.v0_0_2", "comfy_api.latest")


def _node_api():
    for name in API_VERSIONS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "io") and hasattr(module, "ComfyExtension"):
            return name, module
    raise ImportError(f"this ComfyUI has none of the node APIs the pack supports ({', '.join(API_VERSIONS)}): "
                      "it needs a ComfyUI with V3 nodes (v0.3.75 or newer)")


API_MODULE, _api = _node_api()
io = _api.io
ComfyExtension = _api.ComfyExtension


def free_memory(patcher_or_device, device=None) -> int:
    """Bytes a batch may use on a device, as the host counts them.

    ``patcher_or_device``: the ModelPatcher whose model will run (its ``load_device`` unless
    ``device`` is given), or a device. A patcher's own count includes what dynamic VRAM can
    page out of resident models on hosts that have it; otherwise (v0.3.75, or given only a
    device) it is ``comfy.model_management.get_free_memory``.
    """
    import comfy.model_management

    if hasattr(patcher_or_device, "load_device"):
        patcher = patcher_or_device
        device = patcher.load_device if device is None else device
        own = getattr(patcher, "get_free_memory", None)
        if callable(own):
            return own(device)
    else:
        device = patcher_or_device if device is None else device
    if isinstance(device, str):
        device = torch.device(device)
    return comfy.model_management.get_free_memory(device)


def patcher_class():
    """The class core nodes wrap auxiliary models in: ``CoreModelPatcher`` where the host has it
    (its dynamic patcher when dynamic VRAM is on, looked up at call time because the host sets
    it at start-up), else ``ModelPatcher``."""
    import comfy.model_patcher

    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def make_patcher(model: torch.nn.Module, load_device, offload_device):
    """A patcher for a verifier's module, as core nodes make one for an upscale or CLIP-vision model."""
    return patcher_class()(model, load_device=load_device, offload_device=offload_device)


def is_dynamic(patcher) -> bool:
    check = getattr(patcher, "is_dynamic", None)
    return bool(check()) if callable(check) else False


def load_verifier_models(patchers, memory_required: int = 0) -> None:
    """Load verifier patchers for a scoring call the way core nodes load auxiliary models.

    Plain torch modules (transformers, open_clip) cannot run partly offloaded (ComfyUI's lowvram
    mode patches only its own layers), so they are loaded whole (``force_full_load``), as the
    stock upscale-model node loads its plain spandrel modules. With patchers from
    ``make_patcher`` that is safe on a dynamic-VRAM host: every model in the call is dynamic, so
    the memory manager makes room on demand instead of unloading the diffusion model. Like that
    node, a dynamic patcher that left weights of a plain module off the load device gets the
    module moved there. ``memory_required``: what the call itself needs besides the weights.
    """
    import comfy.model_management

    patchers = list(patchers)
    if not patchers:
        return
    comfy.model_management.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
    for patcher in patchers:
        if not is_dynamic(patcher):
            continue
        device = torch.device(patcher.load_device)
        if not all(_on(p.device, device) for p in patcher.model.parameters()):
            patcher.model.to(device)


def _on(where: torch.device, device: torch.device) -> bool:
    return where.type == device.type and (device.index is None or where.index in (None, device.index))
