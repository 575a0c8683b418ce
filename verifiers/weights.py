"""Reading verifier weight files safely, and the errors about missing or unusable files.

Weights are read only through safetensors or ``torch.load(weights_only=True)``; a pickle
that carries code is refused, never executed. Where files come from, how they are fetched
and how their bytes are checked (pinned or recorded SHA-256): ``verifiers.hub``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .base import VerifierError


class MissingWeightsError(VerifierError):
    """A verifier file is not on disk and will not (or may not) be downloaded."""


class WeightsFileError(VerifierError):
    """A verifier file exists but cannot be used: corrupt, truncated, unsafe, changed or mismatched."""


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
