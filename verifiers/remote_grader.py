"""A verifier served by any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, LM Studio,
hosted APIs), through the official ``openai`` client.

Two modes, one request per image (PNG, as a base64 data URL in an ``image_url`` part):

- ``vqascore``: VQAScore (P("Yes") to ``question_template.format(prompt)``) from the
  ``logprobs`` of the first answer token (``max_tokens=1``, ``temperature=0``,
  ``top_logprobs=20``): the summed probability of the listed tokens that read "Yes". When
  "Yes" is not among the listed tokens its probability is below all of them and the score is
  0. Where the server returns no logprobs (it ignores the parameter: Anthropic's compatibility
  layer, Ollama before 0.12.11) or refuses them (HTTP 400/422 naming logprobs: OpenAI models
  without logprobs, Gemini, vLLM under a lower ``--max-logprobs``), the model is asked for a
  JSON answer instead (``JSON_ANSWER``: ``{"answer": "yes"|"no", "confidence": 0..1}``, read
  as P(yes) = confidence for "yes", 1 - confidence for "no"), validated like the rubric. The
  way is decided once per verifier, by the reply to its first request, and kept: the scores
  of one verifier never mix the two (a server that stops returning logprobs later is an
  error); ``vqa_source`` ("logprobs" or "json") and the verifier's name say which it is.
- ``grader``: the paper's LLM grader. The reply must be one JSON object with the five aspects
  (``verifiers.vlm.ASPECTS``) rated 0-10; it is validated (every aspect, numbers in range) and
  a reply that does not parse is an error quoting its start. Score = 10 x the mean of the
  aspects (0-100); ``last_aspects`` keeps them.

The API key is read from an environment variable whose *name* is the node's input (default
``OPENAI_API_KEY``; empty: no key, for local servers), at scoring time: it is never an input,
so it never reaches the workflow, the report or the PNG's metadata, and it is scrubbed from
every error text. Requests run ``concurrency`` at a time, each with ``timeout_s`` and up to
``max_retries`` retries (the client's own: connection errors, 408, 409, 429 and 5xx, with
backoff). The caller's thread waits in short slices and checks ``check_interrupt`` between
them, so an interrupt returns at once even while a request is in flight (the request's thread
is abandoned and its client closed).
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable

import torch

from .base import Condition, Verifier, VerifierError
from .vlm import ASPECT_QUESTIONS, ASPECTS, VQA_TEMPLATE, overall

log = logging.getLogger(__name__)

MODES = ("vqascore", "grader")
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
TOP_LOGPROBS = 20
RUBRIC = ("You are grading an image generated for the prompt \"{prompt}\". Rate it on five aspects, each an integer "
          "from 0 (worst) to 10 (best):\n" + "\n".join(f"- {a}: {ASPECT_QUESTIONS[a]}" for a in ASPECTS) +
          "\nReply with one JSON object and nothing else, with exactly these keys: " + ", ".join(ASPECTS) + ".")
# VQAScore's question when the server gives no logprobs; appended to question_template.format(prompt).
JSON_ANSWER = ("\nReply with one JSON object and nothing else: {\"answer\": \"yes\" or \"no\", \"confidence\": the "
               "probability from 0 to 1 that your answer is right}.")
VQA_SOURCES = {"logprobs": "P(Yes) from logprobs", "json": "P(yes) from a JSON answer"}


class RemoteGraderError(VerifierError):
    """A request or a reply of the remote grader failed; the message says which and why."""


class LogprobsRefused(RemoteGraderError):
    """The server answered a request carrying ``logprobs`` with HTTP 400/422 naming them."""


class RemoteGraderVerifier(Verifier):
    max_batch = 16

    def __init__(self, base_url: str, model: str, mode: str = "grader", api_key_env: str = DEFAULT_KEY_ENV,
                 question_template: str = VQA_TEMPLATE, timeout_s: float = 60.0, max_retries: int = 2,
                 concurrency: int = 4, client_factory: Callable | None = None):
        if mode not in MODES:
            raise VerifierError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not re.match(r"^https?://[^\s/]+", base_url or ""):
            raise VerifierError(f"base_url must be an http(s) URL of an OpenAI-compatible API (e.g. "
                                f"http://127.0.0.1:8000/v1), got {base_url!r}")
        if not (model or "").strip():
            raise VerifierError("model: give the model name the server serves (e.g. Qwen/Qwen2.5-VL-7B-Instruct)")
        if api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            raise VerifierError(f"api_key_env must be the NAME of an environment variable (e.g. {DEFAULT_KEY_ENV}), "
                                f"not a key; got {len(api_key_env)} characters that are not a variable name")
        if mode == "vqascore" and question_template.count("{}") != 1:
            raise VerifierError(f"question_template must contain exactly one {{}} where the prompt goes, got "
                                f"{question_template!r}")
        for name, value, low in (("timeout_s", timeout_s, 0.001), ("max_retries", max_retries, 0),
                                 ("concurrency", concurrency, 1)):
            if not (isinstance(value, (int, float)) and value >= low):
                raise VerifierError(f"{name} must be at least {low}, got {value!r}")
        self.base_url, self.model, self.mode = base_url.rstrip("/"), model.strip(), mode
        self.api_key_env, self.question_template = api_key_env, question_template
        self.timeout_s, self.max_retries, self.concurrency = float(timeout_s), int(max_retries), int(concurrency)
        self.client_factory = client_factory
        self.check_interrupt: Callable[[], None] | None = None
        self.last_aspects: torch.Tensor | None = None
        # vqascore: "logprobs" or "json", set by the first reply and kept (see the module docstring).
        self.vqa_source: str | None = None
        self.vqa_source_reason = ""

    @property
    def name(self) -> str:
        # Read by reports after scoring, so a VQAScore's name says how its scores were obtained.
        if self.mode == "grader":
            return f"remote LLM grader ({self.model})"
        how = f", {VQA_SOURCES[self.vqa_source]}" if self.vqa_source else ""
        return f"remote VQAScore ({self.model}{how})"

    # -- the key and the client --------------------------------------------------------------
    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RemoteGraderError(f"the environment variable {self.api_key_env} (api_key_env) is not set: set it to "
                                    f"the API key before starting ComfyUI, or clear api_key_env for a server that "
                                    f"needs no key")
        return key

    def _client(self, key: str | None):
        if self.client_factory is not None:
            return self.client_factory(key)
        try:
            import openai
        except ImportError:
            raise VerifierError("the remote grader needs the `openai` package (pip install openai)") from None
        # A local server without authentication still gets a (meaningless) bearer token: the client requires one.
        return openai.OpenAI(base_url=self.base_url, api_key=key or "no-key", timeout=self.timeout_s,
                             max_retries=self.max_retries)

    # -- scoring -------------------------------------------------------------------------------
    def _score(self, images, condition: Condition, early):
        prompt = condition.text.strip()
        if not prompt:
            raise VerifierError(f"the {self.name} verifier needs the prompt text (the condition text is empty)")
        key = self._key()
        urls = [png_data_url(img) for img in images]
        client = self._client(key)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="remote-grader")
        try:
            results = []
            if self.mode == "vqascore" and self.vqa_source is None:
                # The first image alone decides how this verifier reads VQAScore, for every image after it.
                results = self._wait([pool.submit(self._decide_vqa_source, client, urls[0], prompt, key)], key)
            futures = [pool.submit(self._ask, client, urls[i], prompt, i) for i in range(len(results), len(urls))]
            results += self._wait(futures, key)
        finally:
            # Returns at once: an interrupted or failed batch does not wait for requests in flight.
            pool.shutdown(wait=False, cancel_futures=True)
            _close(client)
        if self.mode == "vqascore":
            return torch.tensor(results, dtype=torch.float64)
        aspects = torch.tensor(results, dtype=torch.float64)
        self.last_aspects = aspects
        return overall(aspects)

    def _wait(self, futures, key):
        pending = set(futures)
        while pending:
            if self.check_interrupt is not None:
                self.check_interrupt()
            done, pending = concurrent.futures.wait(pending, timeout=0.1,
                                                    return_when=concurrent.futures.FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    raise _scrubbed(f.exception(), key) from None
        return [f.result() for f in futures]

    def _ask(self, client, url: str, prompt: str, index: int):
        if self.mode == "grader":
            return parse_rubric(_content(self._request(client, url, RUBRIC.format(prompt=prompt), index)), index,
                                self.name)
        question = self.question_template.format(prompt)
        if self.vqa_source == "json":
            return self._json_answer(client, url, question, index)
        try:
            choice = self._request(client, url, question, index, logprobs=True)
            missing = "" if _has_logprobs(choice) else "returned no logprobs"
        except LogprobsRefused as e:
            missing = str(e).removeprefix("the server ")
        if missing:
            raise RemoteGraderError(f"{self.name}: for image {index} the server {missing}, though its first reply "
                                    f"had them; this verifier's scores came from logprobs and are not mixed with JSON "
                                    f"answers: check the server, or reload the verifier (change an input) to score "
                                    f"from JSON answers throughout")
        return yes_probability_from_logprobs(choice, index, self.name)

    def _decide_vqa_source(self, client, url: str, prompt: str, key: str | None) -> float:
        """Image 0's VQAScore, and how this verifier reads VQAScore from now on."""
        question = self.question_template.format(prompt)
        try:
            choice = self._request(client, url, question, 0, logprobs=True)
            reason = "" if _has_logprobs(choice) else "the server returned no logprobs"
        except LogprobsRefused as e:
            choice, reason = None, str(e)
        if not reason:
            self.vqa_source = "logprobs"
            return yes_probability_from_logprobs(choice, 0, self.name)
        self.vqa_source, self.vqa_source_reason = "json", str(_scrubbed(RemoteGraderError(reason), key))
        log.warning("%s: %s; VQAScore is read from the model's JSON answers (yes/no and a confidence) instead, "
                    "for every image this verifier scores", self.name, self.vqa_source_reason)
        return self._json_answer(client, url, question, 0)

    def _json_answer(self, client, url: str, question: str, index: int) -> float:
        text = _content(self._request(client, url, question + JSON_ANSWER, index))
        return yes_probability_from_json(text, index, f"{self.name} ({self.vqa_source_reason})")

    def _request(self, client, url: str, text: str, index: int, logprobs: bool = False):
        """One chat completion for one image; its first choice, refusals turned into errors."""
        extra = {"max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS} if logprobs else {"max_tokens": 200}
        messages = [{"role": "user", "content": [{"type": "text", "text": text},
                                                 {"type": "image_url", "image_url": {"url": url}}]}]
        try:
            reply = client.chat.completions.create(model=self.model, messages=messages, temperature=0, **extra)
        except Exception as e:  # the client's errors: timeouts, HTTP status, connection, unparsable bodies
            if logprobs and refuses_logprobs(e):
                raise LogprobsRefused(f"the server refused the logprobs parameter ({describe(e, self.timeout_s)})"
                                      ) from None
            raise RemoteGraderError(f"{self.name}: the request for image {index} to {self.base_url} failed "
                                    f"after {self.max_retries} retries: {describe(e, self.timeout_s)}") from None
        return _first_choice(reply, index, self.name)


# -- replies -------------------------------------------------------------------------------------

def _first_choice(reply, index: int, what: str):
    choices = getattr(reply, "choices", None)
    if not choices:
        raise RemoteGraderError(f"{what}: the reply for image {index} has no choices (not a chat completion): "
                                f"{str(reply)[:200]!r}")
    choice = choices[0]
    message = getattr(choice, "message", None)
    refusal = getattr(message, "refusal", None)
    if refusal or getattr(choice, "finish_reason", None) == "content_filter":
        raise RemoteGraderError(f"{what}: the server refused to grade image {index}: "
                                f"{str(refusal or 'finish_reason content_filter')[:200]!r}")
    return choice


def _content(choice) -> str:
    return str(getattr(getattr(choice, "message", None), "content", None) or "")


def refuses_logprobs(e: BaseException) -> bool:
    """An HTTP 400/422 whose error names logprobs (OpenAI's ``param``, or the message: vLLM, Gemini)."""
    if getattr(e, "status_code", None) not in (400, 422):
        return False
    return "logprob" in f"{getattr(e, 'param', None)} {e}".lower()


def _has_logprobs(choice) -> bool:
    logprobs = getattr(choice, "logprobs", None)
    return bool(getattr(logprobs, "content", None)) if logprobs is not None else False


def yes_probability_from_logprobs(choice, index: int, what: str) -> float:
    """P("Yes") from the first token's top logprobs: the summed probability of the entries reading "Yes"."""
    if not _has_logprobs(choice):
        raise RemoteGraderError(f"{what}: the server returned no logprobs for image {index}")
    content = choice.logprobs.content
    total = 0.0
    for entry in getattr(content[0], "top_logprobs", None) or [content[0]]:
        token, logprob = getattr(entry, "token", None), getattr(entry, "logprob", None)
        if not isinstance(logprob, (int, float)) or not math.isfinite(logprob) or logprob > 1e-6:
            raise RemoteGraderError(f"{what}: the logprobs for image {index} are not log-probabilities: {entry!r}"[:300])
        if isinstance(token, str) and token.strip() == "Yes":
            total += math.exp(logprob)
    return min(total, 1.0)


def _json_object(text: str) -> dict | None:
    match = re.search(r"\{.*\}", text, flags=re.S)
    try:
        data = json.loads(match.group(0)) if match else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def yes_probability_from_json(text: str, index: int, what: str) -> float:
    """P(yes) of a validated ``{"answer": "yes"|"no", "confidence": 0..1}`` reply (``JSON_ANSWER``)."""
    data = _json_object(text)
    if data is None:
        raise RemoteGraderError(f"{what}: the reply for image {index} is not the JSON object VQAScore asks for "
                                f"({{\"answer\": \"yes\" or \"no\", \"confidence\": 0 to 1}}): {text[:200]!r}")
    answer, confidence = data.get("answer"), data.get("confidence")
    if not (isinstance(answer, str) and answer.strip().lower() in ("yes", "no")):
        raise RemoteGraderError(f"{what}: the reply for image {index} gives answer = {answer!r}; it must be \"yes\" "
                                f"or \"no\". Reply: {text[:200]!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        raise RemoteGraderError(f"{what}: the reply for image {index} gives confidence = {confidence!r}; it must be "
                                f"a number from 0 to 1. Reply: {text[:200]!r}")
    return float(confidence) if answer.strip().lower() == "yes" else 1.0 - float(confidence)


def parse_rubric(text: str, index: int, what: str) -> list[float]:
    """The five aspect ratings of a JSON reply, validated."""
    data = _json_object(text)
    if data is None:
        raise RemoteGraderError(f"{what}: the reply for image {index} is not the JSON object the rubric asks for: "
                                f"{text[:200]!r}")
    out = []
    for aspect in ASPECTS:
        value = data.get(aspect)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
            raise RemoteGraderError(f"{what}: the reply for image {index} gives {aspect} = {value!r}; every aspect "
                                    f"({', '.join(ASPECTS)}) must be a number from 0 to 10. Reply: {text[:200]!r}")
        out.append(float(value))
    return out


def png_data_url(image: torch.Tensor) -> str:
    """One IMAGE [H, W, 3] in [0, 1] as an 8-bit PNG data URL."""
    from PIL import Image

    array = (image.float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def describe(e: BaseException, timeout_s: float) -> str:
    kind = type(e).__name__
    if "Timeout" in kind:
        return f"no answer within timeout_s={timeout_s:g} s ({kind})"
    status = getattr(e, "status_code", None)
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else kind
    return f"HTTP {status}: {text}" if status else f"{kind}: {text}"


def _scrubbed(e: BaseException, key: str | None) -> BaseException:
    """The error with the key (if any) cut out of its message."""
    if key and key in str(e):
        return RemoteGraderError(str(e).replace(key, "***"))
    return e


def _close(client) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        # Closing may wait for the connection pool's lock held by a request in flight: do it aside.
        threading.Thread(target=close, daemon=True).start()
