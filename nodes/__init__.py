"""V3 node schemas of the pack. Each module holds thin nodes delegating to search/ or verifiers/."""

from __future__ import annotations

from typing_extensions import override

from .host_compat import ComfyExtension, io


def node_list() -> list[type[io.ComfyNode]]:
    from .search_nodes import node_classes
    from .verifier_nodes import VERIFIER_NODES
    from .video_nodes import VIDEO_NODES

    return [*node_classes(), *VERIFIER_NODES, *VIDEO_NODES]


class NoiseSearchExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_list()


async def comfy_entrypoint() -> NoiseSearchExtension:
    return NoiseSearchExtension()
