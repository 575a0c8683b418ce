"""A ComfyUI server's HTTP API, as much as the sweep needs (standard library only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class ServerLost(ConnectionError):
    """The server does not answer (process gone, port closed, connection reset)."""


class PromptRejected(RuntimeError):
    """The server refused the prompt (HTTP 400: validation errors)."""


class Client:
    def __init__(self, url: str, timeout: float = 30.0):
        base = url.rstrip("/")
        if "://" not in base:
            base = "http://" + base
        if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
            raise ValueError(f"a ComfyUI address must be http(s)://..., got {url!r}")
        self.url = base
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _open(self, path: str, body=None, timeout: float | None = None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        # Only http(s) reaches here (checked in __init__): the user's own ComfyUI servers.
        req = urllib.request.Request(self.url + path, data=data, headers=headers)  # noqa: S310
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)  # noqa: S310
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            raise ServerLost(f"{self.url}: {e}") from e

    def get_json(self, path: str, timeout: float | None = None):
        with self._open(path, timeout=timeout) as r:
            try:
                return json.load(r)
            except (ConnectionError, OSError) as e:
                raise ServerLost(f"{self.url}: {e}") from e

    def get_bytes(self, path: str) -> bytes:
        with self._open(path) as r:
            try:
                return r.read()
            except (ConnectionError, OSError) as e:
                raise ServerLost(f"{self.url}: {e}") from e

    def post_json(self, path: str, body):
        try:
            with self._open(path, body) as r:
                raw = r.read()
                return json.loads(raw) if raw[:1] in (b"{", b"[") else raw
        except (ConnectionError, OSError) as e:
            if isinstance(e, ServerLost):
                raise
            raise ServerLost(f"{self.url}: {e}") from e

    # -- the calls the sweep makes -----------------------------------------------------------
    def alive(self, timeout: float = 5.0) -> bool:
        try:
            self.get_json("/system_stats", timeout=timeout)
            return True
        except (ServerLost, urllib.error.HTTPError, ValueError):
            return False

    def wait_ready(self, timeout: float, poll: float = 0.5, proc=None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ServerLost(f"{self.url}: the server exited with code {proc.returncode} while starting")
            if self.alive(timeout=min(5.0, timeout)):
                return
            time.sleep(poll)
        raise ServerLost(f"{self.url} did not answer within {timeout:.0f} s")

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=max(self.timeout, 120))

    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            return self.post_json("/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise PromptRejected(f"HTTP {e.code}: {describe_refusal(detail)}") from None

    def history(self, prompt_id: str) -> dict | None:
        try:
            return self.get_json(f"/history/{prompt_id}").get(prompt_id)
        except urllib.error.HTTPError as e:
            raise ServerLost(f"{self.url}: GET /history -> HTTP {e.code}") from e

    def in_queue(self, prompt_id: str) -> bool:
        try:
            q = self.get_json("/queue")
        except urllib.error.HTTPError as e:
            raise ServerLost(f"{self.url}: GET /queue -> HTTP {e.code}") from e
        return any(item[1] == prompt_id for key in ("queue_running", "queue_pending") for item in q.get(key, []))

    def image(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                        "type": image.get("type", "output")})
        return self.get_bytes(f"/view?{query}")

    def cancel(self, prompt_id: str) -> None:
        """Drop a queued prompt, and interrupt it if it is the one running (best effort)."""
        try:
            self.post_json("/queue", {"delete": [prompt_id]})
            q = self.get_json("/queue", timeout=5)
            if any(item[1] == prompt_id for item in q.get("queue_running", [])):
                self.post_json("/interrupt", {})
        except (ServerLost, urllib.error.HTTPError, ValueError, KeyError):
            pass


def describe_refusal(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:2000]
    lines = [data.get("error", {}).get("message", "")]
    for node_id, err in (data.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            lines.append(f"node {node_id} ({err.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "; ".join(line for line in lines if line)


def execution_error(history_entry: dict) -> str:
    for kind, data in history_entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type')}: {data.get('exception_message')}")
        if kind == "execution_interrupted":
            return "the prompt was interrupted on the server"
    return "the prompt failed (no error message in the server's history)"


def execution_seconds(history_entry: dict) -> float | None:
    """Server-side time from execution_start to execution_success (ms timestamps)."""
    stamps = {kind: data.get("timestamp") for kind, data in history_entry.get("status", {}).get("messages", [])}
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if start is None or end is None:
        return None
    return round((end - start) / 1000.0, 4)
