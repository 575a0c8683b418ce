"""A local stand-in for the Hugging Face Hub on 127.0.0.1, reached through ``HF_ENDPOINT``.

It serves files at the Hub's download URLs, ``/<org>/<repo>/resolve/<revision>/<path>``,
answering HEAD with the headers huggingface_hub reads (``X-Repo-Commit``, ``ETag`` = the
file's SHA-256 as for LFS files, ``Content-Length``) and GET with the bytes, honouring
``Range`` (206) so resumed downloads can be observed. Files published outside the Hub are
served under ``/raw/<name>``. Every request is logged (method, path, Range header) so tests
can assert what was fetched, and that nothing was.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo_id, filename) -> bytes
    raw: dict[str, bytes] = field(default_factory=dict)  # /raw/<name> -> bytes
    log: list[Request] = field(default_factory=list)
    # filename -> number of bytes after which the next GET of it drops the connection (once).
    cut_after: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, filename: str, data: bytes) -> None:
        self.files[(repo_id, filename)] = data

    def raw_url(self, name: str) -> str:
        return f"{self.endpoint}/raw/{name}"

    def gets(self) -> list[str]:
        return [r.path for r in self.log if r.method == "GET"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _lookup(self) -> tuple[bytes | None, str]:
            path = self.path.split("?", 1)[0]
            m = re.fullmatch(r"/raw/(.+)", path)
            if m:
                return hub.raw.get(m.group(1)), m.group(1)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                return hub.files.get((m.group(1), m.group(3))), m.group(3)
            return None, ""

        def _headers(self, data: bytes, status: int, start: int = 0) -> None:
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()

        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            hub.log.append(Request("HEAD", self.path, self.headers.get("Range")))
            data, _ = self._lookup()
            if data is None:
                self.send_error(404)
                return
            self._headers(data, 200)

        def do_GET(self):  # noqa: N802
            rng = self.headers.get("Range")
            hub.log.append(Request("GET", self.path, rng))
            data, name = self._lookup()
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng:
                m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
                start = int(m.group(1)) if m else 0
            self._headers(data, 206 if start else 200, start)
            body = data[start:]
            cut = hub.cut_after.pop(name, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler
