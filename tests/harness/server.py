"""A real ComfyUI server (main.py) with only this pack enabled, driven over HTTP and /ws."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import websocket

from .host import PACK_NAME, REPO, comfyui_path


def offline_flag(host: Path) -> str:
    """The flag that keeps the server and its frontend off the internet, on any host.

    v0.3.75 has ``--disable-api-nodes`` (no API nodes, and a Content-Security-Policy that keeps
    the frontend on this server). Newer hosts split it: ``--offline`` does both and
    ``--disable-api-nodes`` is its deprecated alias, while ``--offline`` is an unknown argument
    that stops v0.3.75. So: ``--offline`` where the host's argument parser defines it.
    """
    try:
        source = (Path(host) / "comfy" / "cli_args.py").read_text(errors="replace")
    except OSError:
        return "--disable-api-nodes"
    return "--offline" if re.search(r"""add_argument\(\s*["']--offline["']""", source) else "--disable-api-nodes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """main.py on 127.0.0.1 with its own temporary input/output/model folders."""

    def __init__(self, base: Path, extra_args: list[str] | None = None, front_end_root: Path | None = None):
        self.base = Path(base)
        # A frontend folder (the `static` folder of a comfyui-frontend-package) served instead
        # of the one the host pins.
        self.front_end_root = Path(front_end_root) if front_end_root is not None else None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dirs = {name: self.base / name for name in ("input", "output", "temp", "models", "user")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "server.log"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None

    # -- models -----------------------------------------------------------------------
    def add_model(self, folder: str, src: Path, name: str | None = None) -> str:
        """Link a model file into the server's own models/<folder>/ and return its name."""
        dest = self.dirs["models"] / folder / (name or Path(src).name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.symlink(os.path.abspath(src), dest)
        return dest.name

    def _write_model_paths(self) -> Path:
        # extra_model_paths.yaml makes the server look in our temporary models folder.
        models = self.dirs["models"]
        folders = ["checkpoints", "vae", "diffusion_models", "unet", "clip", "text_encoders",
                   "verifiers", "loras"]
        lines = ["noise_search_tests:", f"  base_path: {models}"]
        lines += [f"  {f}: {f}/" for f in folders]
        path = self.base / "extra_model_paths.yaml"
        path.write_text("\n".join(lines) + "\n")
        for f in folders:
            (models / f).mkdir(exist_ok=True)
        return path

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ComfyServer:
        host = comfyui_path()
        cmd = [
            sys.executable, str(host / "main.py"), "--cpu", "--listen", "127.0.0.1",
            "--port", str(self.port), "--disable-all-custom-nodes",
            "--whitelist-custom-nodes", PACK_NAME,
            "--input-directory", str(self.dirs["input"]),
            "--output-directory", str(self.dirs["output"]),
            "--temp-directory", str(self.dirs["temp"]),
            "--user-directory", str(self.dirs["user"]),
            "--extra-model-paths-config", str(self._write_model_paths()),
            offline_flag(host), "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch", *self.extra_args,
        ]
        if self.front_end_root is not None:
            cmd += ["--front-end-root", str(self.front_end_root)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", NOISE_SEARCH_ALLOW_DOWNLOADS="0")
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=str(host), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    # -- HTTP ---------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 60):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw and raw[:1] in b"[{" else raw)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw

    def get(self, path: str):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body}")
        return body

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict, client_id: str | None = None, extra_data: dict | None = None):
        body = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if extra_data is not None:
            body["extra_data"] = extra_data
        return self.request("POST", "/prompt", body)

    def run(self, prompt: dict, timeout: float = 300, extra_data: dict | None = None,
            on_message=None) -> dict:
        """Queue a prompt, follow /ws until it ends, and return a summary of what happened."""
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}",
                                         timeout=timeout)
        try:
            status, body = self.queue(prompt, client_id, extra_data)
            if status != 200:
                return {"status": "rejected", "http": status, "body": body}
            prompt_id = body["prompt_id"]
            messages = []
            deadline = time.time() + timeout
            while time.time() < deadline:
                raw = ws.recv()
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                messages.append(msg)
                if on_message:
                    on_message(msg)
                kind = msg["type"]
                if kind in ("execution_success", "execution_error", "execution_interrupted"):
                    return {"status": kind.removeprefix("execution_"), "prompt_id": prompt_id,
                            "messages": messages, "history": self.history(prompt_id),
                            "data": data}
            raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")
        finally:
            ws.close()

    def history(self, prompt_id: str) -> dict:
        for _ in range(50):
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                return h[prompt_id]
            time.sleep(0.1)
        return {}


def copy_into(server: ComfyServer, folder: str, src: Path) -> str:
    dest = server.dirs["models"] / folder / Path(src).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest.name


REPO_ROOT = REPO
