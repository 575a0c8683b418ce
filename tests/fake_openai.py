"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 for the remote grader's tests.

The requested ``model`` picks the behaviour:

- ``logprobs``: VQAScore's answer with ``top_logprobs``: P("Yes") = the mean brightness of the
  image sent (decoded from its PNG data URL), P("No") = the rest;
- ``rubric``: a JSON rubric reply: accuracy_to_prompt = 10 x brightness, every other aspect 5;
- ``slow``: answers after ``slow_s`` seconds (or when the server stops);
- ``wrong``: HTTP 500 whose error message echoes the Authorization header (a careless server);
- ``malformed``: HTTP 200 with a body that is not JSON;
- ``prose``: a chat completion whose text is not the JSON the rubric asks for;
- ``out_of_range``: a JSON rubric with a rating of 12;
- ``refuse``: a chat completion carrying a refusal;
- ``nologprobs``: "Yes" without logprobs, whatever is asked.

VQAScore without logprobs (``b`` the brightness; asked for JSON means the question contains
``"confidence"``; the JSON answer is ``{"answer": "yes", "confidence": b}`` for ``b >= 0.5``,
else ``{"answer": "no", "confidence": 1 - b}``, i.e. P(yes) = b):

- ``ignores_logprobs``: ignores the parameter: "Yes" without logprobs, the JSON answer when asked;
- ``refuses_logprobs``: HTTP 400 naming ``logprobs`` in ``param`` (OpenAI's form), its message
  echoing the Authorization header (a careless server), to any request carrying logprobs;
  the JSON answer otherwise;
- ``caps_logprobs``: vLLM under ``--max-logprobs 5``: HTTP 400 "Requested sample logprobs of
  20, which is greater than max allowed: 5" (no ``param``) when ``top_logprobs`` > 5; the JSON
  answer otherwise;
- ``bad_request``: HTTP 400 that is not about logprobs ("image too large");
- ``json_prose``, ``json_out_of_range``, ``json_bad_answer``: no logprobs, and a JSON answer
  that is prose, has confidence 85, or answers "maybe";
- ``logprobs_if_bright``, ``refuses_if_dark``: the ``logprobs`` answer for images with
  b >= 0.5; for darker ones no logprobs, or the ``refuses_logprobs`` refusal.

Every request is recorded (model, Authorization header, arrival time) and the most requests
in flight at once is tracked.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def brightness_of(data_url: str) -> float:
    from PIL import Image

    raw = base64.b64decode(data_url.split(",", 1)[1])
    return float(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float64).mean() / 255.0)


def completion(content: str | None, logprobs=None, refusal=None, finish="stop") -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeOpenAI:
    def __init__(self, slow_s: float = 30.0):
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.slow_s = slow_s
        self.delay_s = 0.0  # added to every answer (concurrency checks)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "model": body.get("model"), "time": time.monotonic(),
                                          "authorization": self.headers.get("Authorization"), "body": body})
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    status, payload = fake.answer(body, self.headers.get("Authorization", ""))
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout, interrupt)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, body: dict, authorization: str):
        model = body.get("model")
        if self.delay_s:
            self._stop.wait(self.delay_s)
        parts = body["messages"][0]["content"]
        url = next((p["image_url"]["url"] for p in parts if p.get("type") == "image_url"), None)
        b = brightness_of(url) if url else 0.5
        if model == "logprobs":
            yes, no = max(b, 1e-9), max(1.0 - b, 1e-9)
            top = [{"token": "Yes", "logprob": math.log(yes), "bytes": None},
                   {"token": "No", "logprob": math.log(no), "bytes": None}]
            return 200, completion("Yes", logprobs={"content": [{"token": "Yes", "logprob": math.log(yes),
                                                                 "bytes": None, "top_logprobs": top}]})
        if model == "rubric":
            ratings = {"accuracy_to_prompt": round(10 * b, 6), "originality": 5, "visual_quality": 5,
                       "internal_consistency": 5, "emotional_resonance": 5}
            return 200, completion("Here you go:\n" + json.dumps(ratings))
        if model == "slow":
            self._stop.wait(self.slow_s)
            return 200, completion("{}")
        if model == "wrong":
            return 500, {"error": {"message": f"internal error while checking {authorization}", "type": "server"}}
        if model == "malformed":
            return 200, b"<html>this is not json"
        if model == "prose":
            return 200, completion("I would rate this image a solid seven out of ten.")
        if model == "out_of_range":
            return 200, completion(json.dumps({"accuracy_to_prompt": 12, "originality": 5, "visual_quality": 5,
                                               "internal_consistency": 5, "emotional_resonance": 5}))
        if model == "refuse":
            return 200, completion(None, refusal="I can't help with grading this image.")
        if model == "nologprobs":
            return 200, completion("Yes")
        return self.answer_without_logprobs(model, body, b, authorization)

    def answer_without_logprobs(self, model: str, body: dict, b: float, authorization: str):
        asks_json = '"confidence"' in body["messages"][0]["content"][0]["text"]
        wants_logprobs = bool(body.get("logprobs")) or "top_logprobs" in body
        if model in ("logprobs_if_bright", "refuses_if_dark") and b >= 0.5:
            return self.answer({**body, "model": "logprobs"}, authorization)
        if model in ("refuses_logprobs", "refuses_if_dark") and wants_logprobs:
            return 400, {"error": {"message": f"This model does not support the 'logprobs' parameter (caller "
                                              f"{authorization}).", "type": "invalid_request_error",
                                   "param": "logprobs", "code": None}}
        if model == "caps_logprobs" and body.get("top_logprobs", 0) > 5:
            return 400, {"object": "error", "message": f"Requested sample logprobs of {body['top_logprobs']}, which "
                                                       f"is greater than max allowed: 5", "type": "BadRequestError",
                         "param": None, "code": 400}
        if model == "bad_request":
            return 400, {"error": {"message": "image too large", "type": "invalid_request_error", "param": "messages",
                                   "code": None}}
        json_answers = {"ignores_logprobs": None, "refuses_logprobs": None, "caps_logprobs": None,
                        "logprobs_if_bright": None, "refuses_if_dark": None,
                        "json_prose": "The image shows a grey square, so yes.",
                        "json_out_of_range": json.dumps({"answer": "yes", "confidence": 85}),
                        "json_bad_answer": json.dumps({"answer": "maybe", "confidence": 0.5})}
        if model not in json_answers:
            return 404, {"error": {"message": f"model {model!r} not found", "type": "invalid_request_error"}}
        if not asks_json:
            return 200, completion("Yes")
        answer = {"answer": "yes", "confidence": b} if b >= 0.5 else {"answer": "no", "confidence": 1.0 - b}
        return 200, completion(json_answers[model] or json.dumps(answer))

    def count(self, model: str) -> int:
        return sum(r["model"] == model for r in self.requests)

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
