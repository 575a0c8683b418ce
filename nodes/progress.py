"""Progress of a running search: ComfyUI's progress bar, and live messages for the web view.

The message stream and the node's final UI payload share one shape (``state``), so the
frontend draws the same view live, at the end, and when a workflow or history is reopened.
"""

from __future__ import annotations

import base64
import io as _io
import sys

import comfy.utils
import torch
import torch.nn.functional as F
from PIL import Image

EVENT = "noise-search.progress"
THUMB_PX = 64
MAX_THUMBS = 256
# Video candidates: the live view plays each one's frames as a small animation. The whole state
# travels with every round, so only the first candidates carry frames, few and small.
ANIMATED = 32
ANIMATION_FRAMES = 8
FRAME_PX = 48
# The server fits previews into this size anyway; shrinking first keeps the conversion cheap.
PREVIEW_PX = 512


def prompt_server():
    """The running server, or None in-process (importing `server` there would break)."""
    srv = sys.modules.get("server")
    cls = getattr(srv, "PromptServer", None)
    return getattr(cls, "instance", None)


def thumbnail(image: torch.Tensor) -> str:
    """A small JPEG data URL of one IMAGE [H, W, C] (first frame of a video)."""
    return thumbnails(image.unsqueeze(0))[0]


def thumbnails(images: torch.Tensor) -> list[str]:
    """Small JPEG data URLs of a batch of IMAGEs [B, H, W, C] (first frame of videos).

    The batch is shrunk in torch in one call before anything is converted, so the cost per
    candidate stays that of a 64 px image whatever the image size (converting a full-size
    image to PIL first cost ~60 ms per 1024 px candidate)."""
    out = []
    for arr in _to_uint8(_fit(images, THUMB_PX)):
        buf = _io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=80)
        out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


class SearchProgress:
    """ComfyUI's progress bar (in NFEs, sized by the plan the algorithm reports each round)
    and the live view's state, fed by the algorithm's round callbacks."""

    def __init__(self, node_id: str | None, algorithm: str):
        self.node_id = node_id
        self.total = 1
        self.done = 0
        self.sized = False  # the first round reports the plan the bar is sized by
        self.bar = comfy.utils.ProgressBar(self.total, node_id=node_id)
        self.state = {"node": node_id, "algorithm": algorithm, "candidates": [], "curve": [],
                      "best_id": None, "best_score": None, "nfe": 0, "finished": False}
        self.best_preview = None
        # Which frames of a T-frame video candidate the verifier scores (the Scorer's frames_read),
        # recorded per candidate when set.
        self.frames_read = None
        # The preview goes to the server only when the best candidate changed: the server
        # fits and encodes every preview it is handed (per denoiser call, that was one
        # 512 px JPEG per step), and the UI keeps showing the last one it got.
        self._preview_pending = False

    def _new_preview(self):
        if not self._preview_pending:
            return None
        self._preview_pending = False
        return self.best_preview

    def _update(self) -> None:
        if not self.sized:
            return  # no plan yet: a total guessed from the calls so far would read as done
        self.total = max(self.total, self.done)
        self.bar.update_absolute(self.done, self.total, self._new_preview())

    def on_call(self, rows: int) -> None:
        self.done += rows
        self._update()

    def on_round(self, info: dict) -> None:
        images = info.get("images")
        # The bound the search can spend (its plan, or the budget where lower), never above it.
        self.total = max(self.done, int(info.get("bound") or info.get("planned") or 0), 1)
        self.sized = True
        count = len(info["ids"]) if images is None else min(len(info["ids"]), images.shape[0])
        n_thumbs = max(0, min(MAX_THUMBS - len(self.state["candidates"]), count))
        thumbs = thumbnails(images[:n_thumbs]) if images is not None and n_thumbs else []
        videos = images is not None and images.ndim == 5
        n_animated = max(0, min(ANIMATED - len(self.state["candidates"]), count)) if videos else 0
        animated = [video_frames(v) for v in images[:n_animated]] if n_animated else []
        scored = self.frames_read(images.shape[1]) if videos and self.frames_read is not None else None
        for j, (cid, score) in enumerate(zip(info["ids"], info["scores"])):
            entry = {"id": cid, "score": score, "round": info["round"]}
            if j < len(thumbs):
                entry["thumb"] = thumbs[j]
            if j < len(animated):
                entry["frames"], entry["frame_index"] = animated[j]
            if scored is not None:
                entry["frames_scored"] = scored
            self.state["candidates"].append(entry)
            if cid == info["best_id"] and images is not None and j < images.shape[0]:
                self.best_preview = ("JPEG", _to_pil(images[j]), PREVIEW_PX)
                self._preview_pending = True
        self.state.update(best_id=info["best_id"], best_score=info["best_score"], nfe=info["nfe"])
        self.state["curve"].append([info["nfe"], info["best_score"]])
        self._update()
        self.send()

    def finish(self, report: dict) -> dict:
        self.state.update(finished=True, nfe=report["nfe"]["search_total"],
                          best_id=report["best"]["id"], best_score=report["best"]["score"])
        # The bar closes at what was spent.
        self.total = self.done = max(self.done, 1)
        self.sized = True
        self._update()
        self.send()
        return self.state

    def send(self) -> None:
        server = prompt_server()
        if server is not None:
            server.send_sync(EVENT, self.state, server.client_id)


def video_frames(video: torch.Tensor, count: int = ANIMATION_FRAMES) -> tuple[list[str], list[int]]:
    """(small JPEG data URLs, their frame indices) of ``count`` evenly spaced frames of one video
    [T, H, W, C], first and last included, for the live view's animation."""
    frames = video.shape[0]
    index = sorted({round(i * (frames - 1) / (count - 1)) for i in range(count)}) if 1 < count < frames \
        else list(range(frames))
    out = []
    for arr in _to_uint8(_fit(video[index], FRAME_PX)):
        buf = _io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=75)
        out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    return out, index


def _fit(images: torch.Tensor, max_px: int) -> torch.Tensor:
    """IMAGE batch [B, H, W, C] (or video [B, T, H, W, C]: first frames) as RGB, shrunk by
    area averaging so that its longer side is at most ``max_px``."""
    if images.ndim == 5:
        images = images[:, 0]
    images = images[..., :3]
    if images.shape[-1] == 1:
        images = images.expand(*images.shape[:-1], 3)
    h, w = images.shape[1:3]
    scale = max_px / max(h, w)
    if scale >= 1:
        return images
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(images.movedim(-1, 1).float(), size=size, mode="area").movedim(1, -1)


def _to_uint8(images: torch.Tensor):
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _to_pil(image: torch.Tensor) -> Image.Image:
    """One IMAGE [H, W, C] (or a video's frames [T, H, W, C]) as a PIL image of at most
    PREVIEW_PX a side."""
    if image.ndim == 4:
        image = image[:1]
    else:
        image = image.unsqueeze(0)
    return Image.fromarray(_to_uint8(_fit(image, PREVIEW_PX))[0])
