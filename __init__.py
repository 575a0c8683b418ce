"""noise-search: inference-time search over diffusion noises, as ComfyUI nodes.

ComfyUI imports this file as the pack's module. Registration goes through the V3 API:
``comfy_entrypoint`` returns the extension that lists every node; ``WEB_DIRECTORY`` serves
the frontend extension. NODE_CLASS_MAPPINGS is deliberately absent: its presence makes
ComfyUI ignore comfy_entrypoint. Imports of the host happen inside the entry point so the
pack's library (search/, verifiers/) stays importable without ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import NoiseSearchExtension

    return NoiseSearchExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
