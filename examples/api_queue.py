"""Queue a workflow on a running ComfyUI, follow the search live, and download the results.

    python examples/api_queue.py example_workflows/sd15_random_search_imagereward.json \\
        --server http://127.0.0.1:8188 --set RandomSearchSampler.candidates=32 --out results/

The workflow may be in the editor's format (converted with the server's /object_info, see
workflow_convert.py) or in the API format ("Export (API)"). Then:

- ``--set NODE.input=value`` changes an input (NODE: node id, node title, or a class_type
  used by one node only; value: JSON if it parses, else text), e.g. ``--set 6.seed=7``;
- ``--replace OLD=NEW`` replaces every input value OLD, e.g. a model file saved under
  another name: ``--replace v1-5-pruned-emaonly.safetensors=sd15.safetensors``;
- progress is printed from the WebSocket: each scored search round, node by node;
- into ``--out``: every output image (via /view), ``best.png`` (the image made from a
  search's or VerifierScore's best output), ``report.json`` (the search report that
  SaveImage embedded in that PNG) and ``search_state_<node>.json`` (each search node's
  final state from /history: every candidate's score, the score-vs-NFE curve).

Needs only the standard library and websocket-client (``pip install websocket-client``).
Keep JSON files out of this folder: ComfyUI lists JSON files in a pack's ``examples/`` as
workflow templates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from pathlib import Path

import websocket

# This file runs as a script, so its own folder is on sys.path.
from workflow_convert import ConversionError, apply_override, is_api_prompt, is_ui_workflow, ui_to_api

PACK_CATEGORY = "sampling/noise_search"
REPORT_KEY = "noise_search_report"
PROGRESS_EVENT = "noise-search.progress"


class Client:
    def __init__(self, server: str, timeout: float = 60):
        self.base = server.rstrip("/")
        if "://" not in self.base:
            self.base = "http://" + self.base
        if urllib.parse.urlsplit(self.base).scheme not in ("http", "https"):
            raise SystemExit(f"--server must be an http(s) address, got {server!r}")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _open(self, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        # Only http(s) reaches here (checked in __init__): the user's own server.
        req = urllib.request.Request(self.base + path, data=data,  # noqa: S310
                                     headers={"Content-Type": "application/json"} if data else {})
        return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310

    def get_json(self, path: str):
        with self._open(path) as r:
            return json.load(r)

    def get_bytes(self, path: str) -> bytes:
        with self._open(path) as r:
            return r.read()

    def queue(self, prompt: dict, extra_pnginfo: dict) -> str:
        body = {"prompt": prompt, "client_id": self.client_id, "extra_data": {"extra_pnginfo": extra_pnginfo}}
        try:
            with self._open("/prompt", body) as r:
                return json.load(r)["prompt_id"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise SystemExit(f"the server refused the prompt (HTTP {e.code}):\n{pretty_refusal(detail)}") from None

    def websocket(self):
        ws_url = self.base.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        return websocket.create_connection(ws_url, timeout=self.timeout)


def pretty_refusal(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    lines = [data.get("error", {}).get("message", "")]
    for node_id, err in (data.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            lines.append(f"  node {node_id} ({err.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "\n".join(line for line in lines if line)


# -- following a run -------------------------------------------------------------------------
def describe_progress(state: dict) -> str:
    best = state.get("best_score")
    best_text = "-" if best is None else f"{best:.4f} (candidate {state.get('best_id')})"
    done = "finished" if state.get("finished") else "running"
    return (f"[node {state.get('node')}] {state.get('algorithm')}: {len(state.get('candidates', []))} scored, "
            f"best {best_text}, {state.get('nfe')} NFE, {done}")


def follow(ws, prompt_id: str, timeout: float, log=print) -> dict:
    """Print progress until the prompt ends; returns the last message's data."""
    deadline = time.time() + timeout
    last_node = None
    while time.time() < deadline:
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if isinstance(raw, bytes):  # binary preview images
            continue
        msg = json.loads(raw)
        kind, data = msg.get("type"), msg.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == PROGRESS_EVENT:
            log(describe_progress(data))
        elif kind == "executing" and data.get("node") not in (None, last_node):
            last_node = data["node"]
            log(f"executing node {last_node}")
        elif kind == "execution_error":
            raise SystemExit(f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                             f"{data.get('exception_type')}: {data.get('exception_message')}")
        elif kind == "execution_interrupted":
            raise SystemExit("the prompt was interrupted")
        elif kind == "execution_success":
            return data
    raise SystemExit(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


# -- results ------------------------------------------------------------------------------
def png_text_chunks(data: bytes) -> dict[str, str]:
    """tEXt/zTXt/iTXt chunks of a PNG (SaveImage writes the prompt, the workflow and the report)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return {}
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            out[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            out[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        elif kind == b"IEND":
            break
    return out


def best_output_nodes(prompt: dict, object_info: dict) -> list[str]:
    """Output nodes whose images come from a pack node's first output (best / best_image)."""
    pack = {k for k, v in object_info.items() if str(v.get("category", "")).startswith(PACK_CATEGORY)}
    found = []
    for node_id, node in prompt.items():
        if "images" not in node["inputs"]:
            continue
        stack, seen = [node["inputs"]["images"]], set()
        while stack:
            link = stack.pop()
            if not (isinstance(link, list) and len(link) == 2) or tuple(link) in seen:
                continue
            seen.add(tuple(link))
            src = prompt.get(str(link[0]))
            if src is None:
                continue
            if src["class_type"] in pack:
                if link[1] == 0:
                    found.append(node_id)
                    stack.clear()
                continue  # another output of a pack node (top_k, sorted images): not the best
            stack.extend(v for v in src["inputs"].values() if isinstance(v, list))
    return found


def download(client: Client, history: dict, prompt: dict, object_info: dict, out: Path, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    outputs = history.get("outputs", {})
    saved: dict[str, list[Path]] = {}
    for node_id, node_out in outputs.items():
        for state in node_out.get("noise_search", []):
            path = out / f"search_state_{node_id}.json"
            path.write_text(json.dumps(state, indent=1))
            log(f"search state of node {node_id}: {path}")
        for image in node_out.get("images", []):
            query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                            "type": image.get("type", "output")})
            path = out / f"{node_id}_{Path(image['filename']).name}"
            path.write_bytes(client.get_bytes(f"/view?{query}"))
            saved.setdefault(node_id, []).append(path)
    result = {"images": [str(p) for paths in saved.values() for p in paths]}
    best_nodes = [n for n in best_output_nodes(prompt, object_info) if saved.get(n)]
    if best_nodes:
        best = out / "best.png"
        shutil.copyfile(saved[best_nodes[0]][0], best)
        result["best"] = str(best)
        log(f"best image: {best}")
        report = png_text_chunks(best.read_bytes()).get(REPORT_KEY)
        if report:
            (out / "report.json").write_text(json.dumps(json.loads(report), indent=1))
            result["report"] = str(out / "report.json")
            log(f"search report: {out / 'report.json'}")
    return result


def wait_for_history(client: Client, prompt_id: str, timeout: float = 30) -> dict:
    # The server announces success just before it files the prompt into /history.
    deadline = time.time() + timeout
    while True:
        history = client.get_json(f"/history/{prompt_id}")
        if prompt_id in history or time.time() > deadline:
            return history.get(prompt_id, {})
        time.sleep(0.2)


# -- main ---------------------------------------------------------------------------------
def load_prompt(path: Path, object_info_fn) -> tuple[dict, dict | None]:
    data = json.loads(path.read_text())
    if is_ui_workflow(data):
        return ui_to_api(data, object_info_fn()), data
    if isinstance(data, dict) and is_api_prompt(data.get("prompt")):
        return data["prompt"], None  # a saved POST /prompt body
    if is_api_prompt(data):
        return data, None
    raise SystemExit(f"{path} is neither a UI workflow nor an API-format prompt")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Queue a (noise search) workflow on ComfyUI and fetch the results.")
    parser.add_argument("workflow", type=Path, help="workflow JSON (editor or API format)")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value",
                        help="change an input; repeatable")
    parser.add_argument("--replace", action="append", default=[], metavar="OLD=NEW",
                        help="replace every input value OLD by NEW (e.g. model file names); repeatable")
    parser.add_argument("--out", type=Path, default=Path("noise_search_output"), help="folder for the results")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the prompt")
    args = parser.parse_args(argv)

    client = Client(args.server)
    info_cache: dict = {}

    def object_info():
        if not info_cache:
            info_cache.update(client.get_json("/object_info"))
        return info_cache

    try:
        prompt, ui_workflow = load_prompt(args.workflow, object_info)
        for pair in args.replace:
            old, sep, new = pair.partition("=")
            if not sep:
                raise ConversionError(f"--replace {pair!r} is not OLD=NEW")
            for node in prompt.values():
                node["inputs"] = {k: (new if v == old else v) for k, v in node["inputs"].items()}
        for assignment in args.overrides:
            apply_override(prompt, assignment)
    except ConversionError as e:
        raise SystemExit(f"error: {e}") from None

    # The search node embeds its report into extra_pnginfo, which SaveImage writes into the PNG;
    # the workflow goes along so the image opens in the editor like one made there.
    extra_pnginfo = {"workflow": ui_workflow} if ui_workflow else {}
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt, extra_pnginfo)
        print(f"queued prompt {prompt_id}")
        follow(ws, prompt_id, args.timeout)
    finally:
        ws.close()
    history = wait_for_history(client, prompt_id)
    result = download(client, history, prompt, object_info(), args.out)
    print(f"done: {len(result['images'])} image(s) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
