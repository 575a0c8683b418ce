"""The real ComfyUI host imported in-process, with the pack loaded as ComfyUI loads it.

A development tool shared by the tests (tests/harness/host.py), the scaling demo and the
benchmarks (bench/); it depends on none of them, and it does not ship with the pack
(.comfyignore).

The host is imported the way its own main.py does: ComfyUI's ``utils`` package first, since
importing ``nodes`` puts ComfyUI's ``comfy/`` folder at the front of ``sys.path``, where
``comfy/utils.py`` would otherwise be found as a top-level ``utils`` module (and everything that
imports ``utils.install_util`` (``server``, hence ``comfy_extras/nodes_images.py``) fails).

While it loads, the host logs each optional module it cannot import (its audio nodes need
torchaudio, which has no build for the pinned torch). A real server's log keeps those lines;
here they are kept in ``HOST_LOG`` instead of printed, because nothing run in-process uses those
modules: errors are still printed, a pack that fails to load raises with the log, and a node
that is missing says which host modules failed to import. ``NOISE_SEARCH_HOST_LOG=1`` prints
the host's whole log as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "noise-search"
SHOW_LOG_ENV = "NOISE_SEARCH_HOST_LOG"

# The host's log records (WARNING and above) from loading it, unless SHOW_LOG_ENV is set.
HOST_LOG: list[logging.LogRecord] = []

_loaded = None


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI")
    if not (path / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {path}: run `make setup` (or set COMFYUI_PATH)")
    return path


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        HOST_LOG.append(record)


@contextlib.contextmanager
def _host_log_kept():
    """Root-logger records go to HOST_LOG while the block runs; errors are printed after it."""
    if os.environ.get(SHOW_LOG_ENV):
        yield
        return
    root = logging.getLogger()
    handlers, start = root.handlers[:], len(HOST_LOG)
    root.handlers = [_Keep()]
    try:
        yield
    finally:
        root.handlers = handlers
        for record in HOST_LOG[start:]:
            if record.levelno >= logging.ERROR:
                root.handle(record)


def _log_text(records) -> str:
    return "\n".join(r.getMessage() for r in records)


def failed_imports() -> list[str]:
    """The host modules that logged an import failure while loading (e.g. "nodes_audio.py")."""
    return [r.getMessage().split("IMPORT FAILED: ", 1)[1].strip() for r in HOST_LOG
            if "IMPORT FAILED: " in r.getMessage()]


def _import_comfy_utils(root: str) -> None:
    if "utils" not in sys.modules:
        importlib.import_module("utils.extra_config")
    where = Path(getattr(sys.modules["utils"], "__file__", None) or "").resolve()
    if where != (Path(root) / "utils" / "__init__.py").resolve():
        raise RuntimeError(f"a module named `utils` ({where}) shadows ComfyUI's utils package; "
                           "import the host before it")


def load_host(device: str = "cpu"):
    """Import ComfyUI once per process and load this pack through nodes.load_custom_node.

    ``device``: "cpu" forces the CPU (the tests, the demo); anything else lets ComfyUI's model
    manager pick (the benchmarks). Only the first call's device counts."""
    global _loaded
    if _loaded is not None:
        return _loaded
    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    with _host_log_kept():
        from comfy.cli_args import args

        # Must be set before anything imports comfy.model_management.
        args.cpu = device == "cpu"
        args.disable_all_custom_nodes = True
        _import_comfy_utils(root)  # before `nodes` puts comfy/ first on sys.path (as main.py)
        nodes = importlib.import_module("nodes")  # ComfyUI's own top-level module
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        pack_dir = Path(root) / "custom_nodes" / PACK_NAME
        start = len(HOST_LOG)
        ok = asyncio.run(nodes.load_custom_node(str(pack_dir), module_parent="custom_nodes"))
    if not ok:
        raise RuntimeError(f"ComfyUI failed to load the pack from {pack_dir}:\n{_log_text(HOST_LOG[start:])}")
    _loaded = nodes
    return nodes


def node_class(node_id: str):
    nodes = load_host()
    try:
        return nodes.NODE_CLASS_MAPPINGS[node_id]
    except KeyError:
        failed = failed_imports()
        why = f"; host modules that failed to import: {', '.join(failed)}" if failed else ""
        raise KeyError(f"no node {node_id!r} in the host{why}") from None


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
    load_host()
    init = (comfyui_path() / "custom_nodes" / PACK_NAME / "__init__.py").resolve()
    for key, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve() == init and key.endswith(PACK_NAME):
            return importlib.import_module(f"{key}.{name}")
    raise RuntimeError("the pack is not loaded")
