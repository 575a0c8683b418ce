"""One worker per ComfyUI server: queues a task's prompt, waits for it, fetches the results.

The scheduler runs each worker as a Ray actor (one task at a time: a ComfyUI server executes
one prompt at a time anyway). A worker either talks to a server that is already running (a
URL) or starts its own ``main.py`` (``[servers] launch``), e.g. one per GPU of a Ray cluster:
Ray gives the actor its GPU through CUDA_VISIBLE_DEVICES, which the server inherits.

``run`` never raises for a server problem; it answers with a status:
- ``ok``: the image, the search report, the evaluation scores and timings;
- ``lost``: the server stopped answering (the task can be given to another server);
- ``error``: the server refused or failed the prompt (the same prompt would fail again);
- ``timeout``: the task ran past ``[run] task_timeout`` and was cancelled on the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import Client, PromptRejected, ServerLost, execution_error, execution_seconds

MAX_RESTARTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerWorker:
    def __init__(self, name: str, url: str | None = None, launch: dict | None = None):
        self.name = name
        self.launch = launch
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.log_path: str | None = None
        self.client = Client(url) if url else None
        self.current: str | None = None
        self.cancelled: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> dict:
        """Start the server (launch mode) or check that it answers; returns where it is."""
        if self.launch is not None:
            self._launch()
        elif not self.client.alive():
            raise ServerLost(f"{self.client.url} does not answer")
        return self.describe()

    def describe(self) -> dict:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        return {"name": self.name, "url": self.client.url if self.client else None, "log": self.log_path,
                "host": socket.gethostname(), "gpus": gpus, "pid": self.proc.pid if self.proc else None}

    def _launch(self) -> None:
        root = Path(self.launch["comfyui"])
        main = root / "main.py"
        if not main.is_file():
            raise FileNotFoundError(f"servers.launch.comfyui: no main.py in {root}")
        port = free_port()
        log_dir = Path(tempfile.mkdtemp(prefix="noise_search_sweep_"))
        self.log_path = str(log_dir / "server.log")
        python = self.launch.get("python") or sys.executable
        cmd = [python, str(main), "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
               *[str(a) for a in self.launch.get("args", [])]]
        log = open(self.log_path, "w")  # noqa: SIM115 (owned by the server process's lifetime)
        # The user's own ComfyUI, with arguments from their config.
        self.proc = subprocess.Popen(cmd, cwd=str(root), stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        self.client = Client(f"http://127.0.0.1:{port}")
        try:
            self.client.wait_ready(float(self.launch.get("start_timeout", 600)), proc=self.proc)
        except ServerLost as e:
            raise ServerLost(f"{e}; log: {self.log_path}:\n{self.tail_log()}") from None

    def tail_log(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def object_info(self) -> dict:
        return self.client.object_info()

    def recover(self, wait_s: float) -> dict | None:
        """After a loss: restart an own server, or wait for an external one to answer again.
        Returns where the server is (as ``start``), or None when it is gone for good."""
        if self.launch is not None:
            if self.restarts >= MAX_RESTARTS:
                return None
            self.restarts += 1
            self.stop()
            try:
                self._launch()
                return self.describe()
            except (ServerLost, OSError):
                return None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.client.alive(timeout=5):
                return self.describe()
            time.sleep(1.0)
        return None

    def cancel(self, task_id: str | None = None) -> None:
        """Cancel a task: drop or interrupt its prompt if queued, or never queue it (``run``
        may not have reached the server yet: it checks this set before and after queueing)."""
        if task_id is not None:
            self.cancelled.add(task_id)
        if self.current is not None and self.client is not None:
            self.client.cancel(self.current)

    # -- one task ---------------------------------------------------------------------------
    def _down(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def run(self, payload: dict) -> dict:
        t0 = time.time()
        out = {"server": self.name, "task": payload["task"]}
        if self._down():
            return {**out, "status": "lost", "error": f"server process exited ({self.proc.returncode})"}
        if payload["task"] in self.cancelled:
            return {**out, "status": "cancelled", "error": "cancelled before it was queued"}
        try:
            prompt_id = self.client.queue(payload["prompt"], payload.get("extra_data"))
        except ServerLost as e:
            return {**out, "status": "lost", "error": str(e)}
        except PromptRejected as e:
            return {**out, "status": "error", "error": f"the server refused the prompt: {e}"}
        self.current = prompt_id
        if payload["task"] in self.cancelled:
            self.client.cancel(prompt_id)
            self.current = None
            return {**out, "status": "cancelled", "error": "cancelled as it was queued"}
        try:
            return {**out, **self._wait(prompt_id, payload, t0)}
        finally:
            self.current = None

    def _wait(self, prompt_id: str, payload: dict, t0: float) -> dict:
        deadline = t0 + float(payload.get("timeout") or 1e12)
        failures, polls, delay = 0, 0, 0.1
        while True:
            if self._down():
                return {"status": "lost", "error": f"server process exited ({self.proc.returncode})"}
            if time.time() > deadline:
                self.client.cancel(prompt_id)
                return {"status": "timeout", "error": f"no result after {payload.get('timeout')} s"}
            try:
                entry = self.client.history(prompt_id)
                polls += 1
                if entry is None and polls % 25 == 0 and not self.client.in_queue(prompt_id):
                    entry = self.client.history(prompt_id)  # it may have just finished
                    if entry is None:
                        return {"status": "lost", "error": "the prompt vanished from the server's queue "
                                                           "(the server restarted?)"}
                failures = 0
            except ServerLost as e:
                failures += 1
                if failures >= 3:
                    return {"status": "lost", "error": str(e)}
                time.sleep(0.5)
                continue
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return self._collect(prompt_id, entry, payload, t0)
            time.sleep(delay)
            delay = min(1.0, delay * 1.25)

    def _collect(self, prompt_id: str, entry: dict, payload: dict, t0: float) -> dict:
        if entry["status"].get("status_str") != "success":
            return {"status": "error", "error": execution_error(entry), "prompt_id": prompt_id}
        t_done = time.time()
        outputs, want = entry.get("outputs", {}), payload["outputs"]
        # A distributed search's shard wants only the report; its regeneration no report.
        try:
            images = outputs[want["image"]]["images"] if want.get("image") else None
            report = json.loads(outputs[want["report"]]["text"][0]) if want.get("report") else None
            scores = {name: float(outputs[node]["text"][0]) for name, node in want["eval"].items()}
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return {"status": "error", "prompt_id": prompt_id,
                    "error": f"the server's history lacks an expected output ({type(e).__name__}: {e})"}
        try:
            png = self.client.image(images[0]) if images else None
        except ServerLost as e:
            return {"status": "lost", "error": f"could not download the image: {e}"}
        t_end = time.time()
        return {"status": "ok", "prompt_id": prompt_id, "png": png,
                "image_name": images[0]["filename"] if images else None,
                "report": report, "eval": scores,
                "timings": {"wall_s": round(t_end - t0, 4), "execution_s": execution_seconds(entry),
                            "download_s": round(t_end - t_done, 4)}}
