"""Verifier weight files: where they come from, how they are fetched, and how they are read.

Everything here is free of ComfyUI so it can be tested and reused on its own; the folder
lookup through ``folder_paths`` lives in ``verifiers.comfy_runtime``.

Safety rules (the reason this module exists):
- weights are read only through safetensors or ``torch.load(weights_only=True)``; a pickle
  that carries code is refused, never executed;
- a file is downloaded only when its exact SHA-256 is pinned in ``OFFICIAL_FILES``; the
  bytes go to a temporary file in the target folder and are renamed into place only after
  the hash (and size, when known) match, so no partial file is ever left under the real name;
- downloads can be switched off with ``NOISE_SEARCH_ALLOW_DOWNLOADS=0`` (or the loader
  nodes' ``allow_download`` input); a missing file is then an error that names the file,
  the folder it was looked for in and where to get it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import VerifierError

DOWNLOAD_ENV = "NOISE_SEARCH_ALLOW_DOWNLOADS"
# Suffix of in-flight downloads; listings skip it so a half-written file is never offered.
PARTIAL_SUFFIX = ".partial"


class MissingWeightsError(VerifierError):
    """A verifier file is not on disk and will not (or may not) be downloaded."""


class WeightsFileError(VerifierError):
    """A verifier file exists but cannot be used: corrupt, truncated, unsafe or mismatched."""


@dataclass(frozen=True)
class OfficialFile:
    """Where a verifier file is published, and the hash its bytes must have.

    ``sha256`` is None where no hash could be confirmed: such a file is never downloaded
    (the user is told where to fetch it by hand instead).
    """

    url: str
    sha256: str | None
    size: int | None = None
    # Where the pinned hash was confirmed; kept next to the value so it can be re-checked.
    hash_source: str = ""


# Relative paths inside the `verifiers` model folder -> official source. The layout is the
# one the loader nodes expect (see verifiers/README.md).
OFFICIAL_FILES: dict[str, OfficialFile] = {
    # OpenAI CLIP ViT-L/14 as open_clip state dict (QuickGELU), the timm/open_clip release.
    "clip/ViT-L-14-openai.safetensors": OfficialFile(
        url="https://huggingface.co/timm/vit_large_patch14_clip_224.openai/resolve/main/"
            "open_clip_model.safetensors",
        sha256="9ce2e8a8ebfff3793d7d375ad6d3c35cb9aebf3de7ace0fc7308accab7cd207e",
        size=1_710_517_724,
        hash_source="HF LFS oid of timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors, "
                    "as recorded (with size) by two independent public projects",
    ),
    # LAION improved aesthetic predictor v2 (torch.save'd state dict).
    "aesthetic/sac+logos+ava1-l14-linearMSE.pth": OfficialFile(
        url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
            "sac+logos+ava1-l14-linearMSE.pth",
        sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
        size=3_714_759,
        hash_source="git-lfs pointer of a public mirror of the file (jewel/laion-aesthetics-predictor)",
    ),
    # ImageReward v1.0 (THUDM). No hash could be confirmed: manual placement only.
    "ImageReward/ImageReward.pt": OfficialFile(
        url="https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt", sha256=None),
    "ImageReward/med_config.json": OfficialFile(
        url="https://huggingface.co/THUDM/ImageReward/resolve/main/med_config.json", sha256=None),
    "ImageReward/bert-base-uncased/vocab.txt": OfficialFile(
        url="https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt", sha256=None),
    # DINOv2 (transformers layout). No hash could be confirmed: manual placement only.
    "dinov2-small/config.json": OfficialFile(
        url="https://huggingface.co/facebook/dinov2-small/resolve/main/config.json", sha256=None),
    "dinov2-small/model.safetensors": OfficialFile(
        url="https://huggingface.co/facebook/dinov2-small/resolve/main/model.safetensors", sha256=None),
    "dinov2-base/config.json": OfficialFile(
        url="https://huggingface.co/facebook/dinov2-base/resolve/main/config.json", sha256=None),
    "dinov2-base/model.safetensors": OfficialFile(
        url="https://huggingface.co/facebook/dinov2-base/resolve/main/model.safetensors", sha256=None),
}


def downloads_allowed(node_switch: bool = True) -> bool:
    """Downloads happen only when both the environment and the node allow them."""
    env = os.environ.get(DOWNLOAD_ENV, "1").strip().lower()
    return node_switch and env not in ("0", "false", "no", "off")


def normalize_rel(rel: str) -> str:
    """A relative path inside the verifiers folder, with forward slashes and no escapes."""
    rel = rel.replace("\\", "/").strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise VerifierError(f"invalid verifier file name {rel!r}")
    return "/".join(parts)


def find_file(rel: str, folders: list[str]) -> Path | None:
    rel = normalize_rel(rel)
    for folder in folders:
        path = Path(folder) / rel
        if path.is_file():
            return path
    return None


def ensure_file(rel: str, folders: list[str], allow_download: bool = True,
                progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Return the path of ``rel`` in the first folder that has it, downloading it if allowed.

    ``folders`` are the `verifiers` model folders in priority order; a download goes to the
    first one.
    """
    rel = normalize_rel(rel)
    found = find_file(rel, folders)
    if found is not None:
        return found
    if not folders:
        raise MissingWeightsError(f"no `verifiers` model folder is registered; cannot find {rel!r}")
    target = Path(folders[0]) / rel
    where = f"folder {folders[0]!r}" if len(folders) == 1 else \
        f"folders {', '.join(repr(f) for f in folders)}"
    official = OFFICIAL_FILES.get(rel)
    if official is None:
        raise MissingWeightsError(
            f"verifier file {rel!r} was not found in the `verifiers` {where}; place it at {target}")
    if not downloads_allowed(allow_download):
        raise MissingWeightsError(
            f"verifier file {rel!r} was not found in the `verifiers` {where}, and downloads are switched "
            f"off ({DOWNLOAD_ENV}=0 or allow_download=false). Download it from {official.url} "
            f"and place it at {target}")
    if official.sha256 is None:
        raise MissingWeightsError(
            f"verifier file {rel!r} was not found in the `verifiers` {where}. noise-search has no pinned "
            f"SHA-256 for it and will not download it unchecked: download it from {official.url} "
            f"and place it at {target}")
    download(official, target, progress=progress)
    return target


def download(official: OfficialFile, target: Path,
             progress: Callable[[int, int | None], None] | None = None,
             opener: Callable[..., object] | None = None, chunk_size: int = 1 << 20) -> Path:
    """Fetch ``official.url`` into ``target``, verified against the pinned SHA-256.

    The bytes land in a temporary file beside the target (same filesystem, so the final
    rename is atomic) and the temporary file is removed on any failure, including an
    interruption raised from ``progress``.
    """
    if official.sha256 is None:
        raise MissingWeightsError(f"refusing to download {official.url} without a pinned SHA-256")
    if not official.url.startswith("https://"):
        raise MissingWeightsError(f"refusing to download from a non-https URL: {official.url}")
    # https only (checked above), URLs from the pinned table.
    request = urllib.request.Request(official.url, headers={"User-Agent": "noise-search"})  # noqa: S310
    open_url = opener or urllib.request.urlopen
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=PARTIAL_SUFFIX, dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out, open_url(request, timeout=60) as response:
            total = official.size or _content_length(response)
            if progress:
                progress(0, total)
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if official.size is not None and done != official.size:
            raise WeightsFileError(f"download of {official.url} is incomplete or wrong: got {done} bytes, "
                                   f"expected {official.size}; nothing was written to {target}")
        got = digest.hexdigest()
        if got != official.sha256:
            raise WeightsFileError(f"download of {official.url} has SHA-256 {got}, expected {official.sha256}; "
                                   f"the file was discarded and nothing was written to {target}")
        os.replace(tmp, target)
        return target
    finally:
        if tmp.exists():
            tmp.unlink()


def _content_length(response) -> int | None:
    try:
        value = response.headers.get("Content-Length")
        return int(value) if value else None
    except (AttributeError, ValueError):
        return None


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Reading weights
# ---------------------------------------------------------------------------------------

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a weights-only torch pickle, on the CPU.

    Raises WeightsFileError with an actionable message for corrupt or truncated files and
    for pickles that hold anything but tensors and plain containers (code is never run).
    """
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return load_safetensors(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names the global it refused; garbage bytes fail on an
        # unknown opcode instead and are reported as a damaged file.
        if "unsupported global" in str(e).lower() or "unsupported class" in str(e).lower():
            raise WeightsFileError(
                f"refused to load {path}: it is a pickle that holds more than tensors (objects or code), "
                f"which noise-search never unpickles. Use the official file, or convert it to safetensors. "
                f"Detail: {_weights_only_detail(e)}") from None
        raise _corrupt(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise _corrupt(path, e) from None
    return _as_state_dict(data, path)


def load_safetensors(path: str | os.PathLike, with_metadata: bool = False):
    from safetensors import safe_open

    path = Path(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensors[key] = f.get_tensor(key)
    except Exception as e:  # safetensors raises its own SafetensorError and OSError/ValueError
        raise _corrupt(path, e) from None
    return (tensors, metadata) if with_metadata else tensors


def _as_state_dict(data, path: Path) -> dict[str, torch.Tensor]:
    # Some checkpoints wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            inner = data.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                data = inner
                break
    if not isinstance(data, dict) or not data:
        raise WeightsFileError(f"{path} does not hold a state dict (got {type(data).__name__})")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsFileError(f"{path} holds no tensors")
    return tensors


def _corrupt(path: Path, e: BaseException) -> WeightsFileError:
    return WeightsFileError(f"could not read {path}: the file is corrupt or truncated "
                            f"({type(e).__name__}: {_weights_only_detail(e)}). Delete it and download or copy it again.")


def _weights_only_detail(e: BaseException) -> str:
    for line in str(e).splitlines():
        if "WeightsUnpickler error" in line:
            return line.strip()[:300]
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
