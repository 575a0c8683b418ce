"""Run a batched function in chunks, halving the chunk when the device runs out of memory.

What counts as "out of memory":
- ``torch.OutOfMemoryError``. On CUDA builds ``torch.cuda.OutOfMemoryError`` is this very
  class (torch >= 2.5 aliases it), and it is what ComfyUI calls
  ``comfy.model_management.OOM_EXCEPTION``; ComfyUI's executor reacts to it by unloading
  every model and telling the user it ran out of GPU memory.
- a ``RuntimeError`` from an allocator that has no dedicated class: the CPU allocator
  ("DefaultCPUAllocator: can't allocate memory"), MPS ("MPS backend out of memory"),
  and DirectML/XPU variants ("not enough memory").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate memory")


class ChunkOOMError(torch.OutOfMemoryError):
    """Out of memory even with one candidate per chunk.

    A subclass of ``torch.OutOfMemoryError`` (itself a ``RuntimeError``), so ComfyUI's
    executor treats it as the out-of-memory error it is: it unloads its models and adds its
    out-of-memory tips to the message the user sees."""


def is_oom(err: BaseException) -> bool:
    """True for an allocation failure of any torch device (see the module docstring)."""
    if isinstance(err, OOM_ERRORS):
        return True
    if type(err) is RuntimeError:  # not subclasses: those carry their own meaning
        text = str(err).lower()
        return any(m in text for m in _OOM_MESSAGES)
    return False


def map_chunked(fn: Callable[..., torch.Tensor | tuple], arrays: Sequence[torch.Tensor | None],
                chunk: int, on_shrink: Callable[[int], None] | None = None) -> list:
    """Apply ``fn`` to consecutive row-chunks of ``arrays`` (None entries pass through) and
    concatenate each of its outputs. On OOM the same chunk is retried at half the size, and
    the smaller size is kept for the rest: results do not depend on the chunk size for
    row-independent ``fn``. ``on_shrink(new_chunk)`` is told each reduction, so a caller can
    start its next call at the size that fitted."""
    n = next(a.shape[0] for a in arrays if a is not None)
    chunk = max(1, min(chunk, n))
    outputs: list[list] = []
    start = 0
    while start < n:
        stop = min(n, start + chunk)
        try:
            out = fn(*[a[start:stop] if a is not None else None for a in arrays])
        except RuntimeError as err:
            if not is_oom(err) or isinstance(err, ChunkOOMError):
                raise
            if chunk == 1:
                raise ChunkOOMError(
                    "out of memory with a chunk of one candidate; free memory (smaller image, fewer "
                    f"models loaded) or use a smaller model. Detail: {_first_line(err)}") from err
            chunk = max(1, chunk // 2)
            del err  # drop the traceback's references to the failed chunk's tensors
            _release_cached_memory()
            if on_shrink is not None:
                on_shrink(chunk)
            continue
        out = out if isinstance(out, tuple) else (out,)
        if not outputs:
            outputs = [[] for _ in out]
        for acc, o in zip(outputs, out):
            acc.append(o)
        start = stop
    return [torch.cat(acc) if acc[0] is not None else None for acc in outputs]


def frames_chunk(chunk: int, frames_per_row: int) -> int:
    """Rows per chunk when every row (a video candidate) puts ``frames_per_row`` images through
    a model that takes ``chunk`` images at once: memory per candidate grows with its frames,
    so a chunk holds at most ``chunk`` frames in all (and at least one candidate)."""
    return max(1, int(chunk) // max(1, int(frames_per_row)))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
