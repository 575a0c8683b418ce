"""ComfyUI glue for verifiers: the `verifiers` model folder, the cache, memory management.

Kept apart from the verifier classes so those import and test without ComfyUI.

- Model files live in ComfyUI's model folder `verifiers` (``models/verifiers`` by default;
  ``extra_model_paths.yaml`` entries named ``verifiers`` add more folders, and a folder
  marked ``is_default`` there comes first and receives downloads). Official files a user
  already has in the Hugging Face cache or another tool's folder are used in place, and
  downloads go through huggingface_hub with a ComfyUI progress bar (``verifiers.hub``).
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

from . import hub

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
        # Staged downloads (.downloads/), lock files and other hidden entries are never offered.
        if any(part.startswith(".") for part in rel.split("/")) or rel.endswith(("/" + hub.LOCK_NAME, ".incomplete")):
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


def model_roots() -> dict[str, str]:
    """Templates' roots for other tools' layouts (``{models}`` = ComfyUI's models directory)."""
    import folder_paths

    return {"models": folder_paths.models_dir}


def resolve(rel: str, allow_download: bool = True, node_id: str | None = None) -> Path:
    """The path of ``rel``: found (verifiers folders, HF cache, other tools' folders) or
    downloaded if allowed, and checked against its pinned or recorded SHA-256."""
    rel = hub.normalize_rel(rel)
    return hub.ensure_file(rel, folders(), allow_download, model_roots(), progress_bar_class(rel, node_id))


def resolve_group(rels: list[str], allow_download: bool = True, node_id: str | None = None) -> dict[str, Path]:
    """Like ``resolve`` for files that must sit in one folder (transformers model folders)."""
    rels = [hub.normalize_rel(r) for r in rels]
    return hub.ensure_group(rels, folders(), allow_download, model_roots(), progress_bar_class(rels[0], node_id))


def find_file_in_folders(rel: str) -> Path | None:
    """Where ``rel`` already is (verifiers folders, HF cache, other tools' folders); never downloads."""
    found = hub.locate(hub.normalize_rel(rel), folders(), model_roots())
    return None if found is None else found.path


def find_in_verifier_folders(rel: str) -> Path | None:
    """The path of ``rel`` in the verifiers folders only; never downloads."""
    return hub.find_in_folders(hub.normalize_rel(rel), folders())


def progress_bar_class(rel: str, node_id: str | None):
    """A tqdm class for huggingface_hub that also drives ComfyUI's progress bar and stops the
    download when the user interrupts the prompt (the partial file stays for resuming)."""
    import comfy.model_management
    import comfy.utils
    from huggingface_hub.utils import tqdm as hf_tqdm

    class ComfyDownloadBar(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["desc"] = f"noise-search {rel}"
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)
            self._total = int(kwargs.get("total") or 0)
            self._comfy = comfy.utils.ProgressBar(max(self._total, 1), node_id)
            if self._total:
                self._comfy.update_absolute(min(self._done, self._total), self._total)

        def update(self, n=1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            out = super().update(n)
            self._done += int(n or 0)
            if self._total:
                self._comfy.update_absolute(min(self._done, self._total), self._total)
            return out

    return ComfyDownloadBar


def file_stamp(*paths: str | os.PathLike) -> tuple:
    """Identity of files on disk: resolved path, mtime and size of each."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(file_stamp(*(sorted(c for c in p.iterdir() if c.is_file() and c.name != hub.LOCK_NAME))))
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
    from ..nodes.host_compat import make_patcher

    with _lock:
        hit = _PATCHERS.get(id(module))
        if hit is not None and hit[0] is module:
            return hit[1]
        # The patcher stores its bookkeeping as attributes of the model it manages; a box
        # keeps those off our modules (transformers models even forbid some, e.g. `device`).
        # The host's patcher class for auxiliary models (dynamic VRAM on newer hosts).
        patcher = make_patcher(ModuleBox(module), load_device(), offload_device())
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
    from ..nodes.host_compat import load_verifier_models
    from .common import TorchVerifier

    if modules is None:
        modules = verifier.torch_modules() if hasattr(verifier, "torch_modules") else [
            v for v in vars(verifier).values() if isinstance(v, torch.nn.Module)]
    patchers = [patcher_for(m) for m in modules]
    # Keep the patchers reachable from the verifier too (strong references).
    verifier.patchers = patchers

    def prepare() -> None:
        # Whole, as core nodes load auxiliary models (see nodes/host_compat.py).
        load_verifier_models(patchers)

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
