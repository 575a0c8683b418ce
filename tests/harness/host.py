"""The in-process ComfyUI host for tests (shared with the demo and benchmarks: bench/comfy_host.py)."""

from bench.comfy_host import PACK_NAME, REPO, comfyui_path, load_host, node_class, pack_module, run_node

__all__ = ["PACK_NAME", "REPO", "comfyui_path", "load_host", "node_class", "pack_module", "run_node"]
