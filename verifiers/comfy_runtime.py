"""ComfyUI glue for verifiers: the `verifiers` model folder, the cache, memory management.

Kept apart from the verifier classes so those import and test without ComfyUI.

- Model files live in ComfyUI's model folder `verifiers` (``models/verifiers`` by default;
  ``extra_model_paths.yaml`` entries named ``verifiers`` add more folders, and a folder
  marked ``is_default`` there comes first and receives downloads).
- Loaded models stay cached across prompts, keyed by the files they came from (path,
  mtime, size), the device and the dtype; replacing a file on disk loads it afresh.
- Every torch module is wrapped in a ``comfy.model_patcher.ModelPatcher`` and loaded with
  ``comfy.model_management.load_models_gpu`` before each scoring call, so ComfyUI's memory
  manager may evict it to the offload device between uses. The cache keeps strong
  references (the manager only holds weak ones).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from .weights import PARTIAL_SUFFIX, ensure_file, find_file, normalize_rel

log = logging.getLogger(__name__)

FOLDER = "verifiers"

_lock = threading.RLock()
# slot -> (stamp, value): a slot names "what" is loaded (kind, arguments, device, dtype)
# and the stamp "which bytes" (file path, mtime, size); a new stamp replaces the old entry.
_CACHE: dict[tuple, tuple[tuple, object]] = {}
# id(module) -> (module, patcher); strong references on purpose.
_PATCHERS: dict[int, tuple[torch.nn.Module, object]] = {}


# ---------------------------------------------------------------------------------------
# Folders and files
# ---------------------------------------------------------------------------------------

def register_folder() -> None:
    """Add ``models/verifiers`` to folder_paths (idempotent; keeps yaml-added folders)."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER)
    # add_model_folder_path appends to an existing entry (one made by extra_model_paths.yaml
    # keeps its place and its is_default priority) or creates the entry.
    folder_paths.add_model_folder_path(FOLDER, default)


def folders() -> list[str]:
    import folder_paths

    register_folder()
    return folder_paths.get_folder_paths(FOLDER)


def list_files(prefix: str = "", suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files under the verifiers folders (relative, '/'-separated) in ``prefix`` with a suffix."""
    import folder_paths

    register_folder()
    out = []
    for name in folder_paths.get_filename_list(FOLDER):
        rel = name.replace(os.sep, "/")
        if rel.endswith(PARTIAL_SUFFIX):
            continue
        if prefix and not rel.lower().startswith(prefix.lower()):
            continue
        if suffixes and not rel.lower().endswith(tuple(s.lower() for s in suffixes)):
            continue
        out.append(rel)
    return out


def list_dirs_with(file_name: str) -> list[str]:
    """Sub-folders of the verifiers folders that hold ``file_name`` (e.g. HF model folders)."""
    return sorted({rel.rsplit("/", 1)[0] for rel in list_files(suffixes=("/" + file_name,))})


def combo_options(found: list[str], defaults: list[str]) -> list[str]:
    """What a file picker offers: the files present plus the official defaults.

    Defaults are listed even when absent so a first run can fetch them.
    """
    return sorted(set(found) | set(defaults), key=lambda s: (s not in defaults, s.lower()))


def resolve(rel: str, allow_download: bool = True, node_id: str | None = None) -> Path:
    """The path of ``rel`` in the verifiers folders, downloaded first if needed and allowed."""
    return ensure_file(normalize_rel(rel), folders(), allow_download, progress=_progress(rel, node_id))


def find_file_in_folders(rel: str) -> Path | None:
    """The path of ``rel`` if some verifiers folder has it; never downloads."""
    return find_file(normalize_rel(rel), folders())


def _progress(rel: str, node_id: str | None) -> Callable[[int, int | None], None]:
    import comfy.model_management
    import comfy.utils

    state: dict = {}

    def update(done: int, total: int | None) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if "bar" not in state:
            log.info("noise-search: downloading verifier file %s (%s bytes)", rel, total or "unknown")
            state["bar"] = comfy.utils.ProgressBar(total or 1, node_id)
            state["tqdm"] = _tqdm(total, rel)
        if total:
            state["bar"].update_absolute(min(done, total), total)
        if state["tqdm"] is not None:
            state["tqdm"].update(done - state["tqdm"].n)
            if total and done >= total:
                state["tqdm"].close()

    return update


def _tqdm(total, rel):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with ComfyUI
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"noise-search {rel}")


def file_stamp(*paths: str | os.PathLike) -> tuple:
    """Identity of files on disk: resolved path, mtime and size of each."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(file_stamp(*(sorted(c for c in p.iterdir() if c.is_file()))))
            continue
        st = p.stat()
        out.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Devices, cache and memory management
# ---------------------------------------------------------------------------------------

def load_device() -> torch.device:
    import comfy.model_management

    return comfy.model_management.text_encoder_device()


def offload_device() -> torch.device:
    import comfy.model_management

    return comfy.model_management.text_encoder_offload_device()


def pick_dtype(precision: str, device: torch.device | None = None) -> torch.dtype:
    """"auto": fp16 where ComfyUI would run fp16 on the load device, else fp32."""
    import comfy.model_management

    device = device if device is not None else load_device()
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}")
    if torch.device(device).type == "cpu":
        return torch.float32
    return torch.float16 if comfy.model_management.should_use_fp16(device) else torch.float32


def cached(slot: tuple, stamp: tuple, build: Callable[[], object]):
    """The cached value for ``slot`` if it was built from the same files, else a fresh build."""
    with _lock:
        hit = _CACHE.get(slot)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        if hit is not None:
            _forget(hit[1])
        value = build()
        _CACHE[slot] = (stamp, value)
        return value


def _forget(value) -> None:
    if isinstance(value, torch.nn.Module):
        modules = [value]
    elif isinstance(value, tuple):
        modules = [m for m in value if isinstance(m, torch.nn.Module)]
    else:
        modules = value.torch_modules() if hasattr(value, "torch_modules") else []
    for m in modules:
        _PATCHERS.pop(id(m), None)


def clear_cache() -> None:
    """Drop every cached verifier model (tests; or to free memory by hand)."""
    with _lock:
        _CACHE.clear()
        _PATCHERS.clear()


def patcher_for(module: torch.nn.Module):
    """The one ModelPatcher of ``module`` (shared modules share their patcher)."""
    import comfy.model_patcher

    with _lock:
        hit = _PATCHERS.get(id(module))
        if hit is not None and hit[0] is module:
            return hit[1]
        # The patcher stores its bookkeeping as attributes of the model it manages; a box
        # keeps those off our modules (transformers models even forbid some, e.g. `device`).
        patcher = comfy.model_patcher.ModelPatcher(ModuleBox(module), load_device=load_device(),
                                                   offload_device=offload_device())
        _PATCHERS[id(module)] = (module, patcher)
        return patcher


class ModuleBox(torch.nn.Module):
    """A container whose only child is the managed module (moved with it by ``.to``)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


def attach(verifier, modules: list[torch.nn.Module] | None = None):
    """Make ``verifier`` load its modules through ComfyUI's memory manager before scoring.

    Our own verifiers (``TorchVerifier``) call ``prepare`` at the start of ``score``; any
    other verifier gets its ``score`` wrapped to do the same.
    """
    import comfy.model_management

    from .common import TorchVerifier

    if modules is None:
        modules = verifier.torch_modules() if hasattr(verifier, "torch_modules") else [
            v for v in vars(verifier).values() if isinstance(v, torch.nn.Module)]
    patchers = [patcher_for(m) for m in modules]
    # Keep the patchers reachable from the verifier too (strong references).
    verifier.patchers = patchers

    def prepare() -> None:
        # force_full_load: plain torch modules cannot run partially offloaded (lowvram).
        comfy.model_management.load_models_gpu(patchers, force_full_load=True)

    if isinstance(verifier, TorchVerifier):
        verifier.prepare = prepare
    elif not getattr(verifier, "_noise_search_wrapped", False):
        original = verifier.score

        def score(*args, **kwargs):
            prepare()
            return original(*args, **kwargs)

        verifier.score = score
        verifier.prepare = prepare
        verifier._noise_search_wrapped = True
    return verifier
