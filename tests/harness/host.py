"""The in-process ComfyUI host for tests (devhost/, shared with the demo and the benchmarks)."""

from devhost import PACK_NAME, REPO, comfyui_path, load_host, node_class, pack_module, run_node

__all__ = ["PACK_NAME", "REPO", "comfyui_path", "load_host", "node_class", "pack_module", "run_node"]
