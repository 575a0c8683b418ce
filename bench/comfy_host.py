"""Importing the real ComfyUI host in-process, on the CPU, with the pack loaded as ComfyUI does.

Used by the tests, the demo and the benchmarks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "noise-search"


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI")
    if not (path / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {path}: run `make setup` (or set COMFYUI_PATH)")
    return path


_loaded = None


def load_host():
    """Import ComfyUI once per process and load this pack through nodes.load_custom_node."""
    global _loaded
    if _loaded is not None:
        return _loaded
    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    # Must be set before anything imports comfy.model_management.
    args.cpu = True
    args.disable_all_custom_nodes = True
    import nodes  # noqa: I001  (ComfyUI's own top-level module)

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    pack_dir = Path(root) / "custom_nodes" / PACK_NAME
    ok = asyncio.run(nodes.load_custom_node(str(pack_dir), module_parent="custom_nodes"))
    if not ok:
        raise RuntimeError(f"ComfyUI failed to load the pack from {pack_dir}; see the log above")
    _loaded = nodes
    return nodes


def node_class(node_id: str):
    nodes = load_host()
    return nodes.NODE_CLASS_MAPPINGS[node_id]


def run_node(node_id: str, **inputs):
    """Execute one node (V1 or V3) the way the executor does and return its output tuple."""
    cls = node_class(node_id)
    if hasattr(cls, "PREPARE_CLASS_CLONE"):
        clone = cls.PREPARE_CLASS_CLONE({})
        out = clone.EXECUTE_NORMALIZED(**inputs)
        if asyncio.iscoroutine(out):
            out = asyncio.run(out)
        return tuple(out.args) if hasattr(out, "args") else out
    obj = cls()
    return getattr(obj, cls.FUNCTION)(**inputs)


def pack_module(name: str):
    """A submodule of the pack as ComfyUI loaded it (e.g. "nodes.sampling_adapter").

    ComfyUI names the package after its folder path, so the pack's classes are only the
    same objects the nodes use when imported through that name."""
    import importlib

    load_host()
    init = (comfyui_path() / "custom_nodes" / PACK_NAME / "__init__.py").resolve()
    for key, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve() == init and key.endswith(PACK_NAME):
            return importlib.import_module(f"{key}.{name}")
    raise RuntimeError("the pack is not loaded")
