"""The remote grader (verifiers/remote_grader.py) against a fake OpenAI-compatible server on
127.0.0.1 (tests/fake_openai.py): scores from logprobs and from JSON rubrics, every failure
case with a clear error in bounded time, the concurrency limit, interrupts within one request,
and, through a live ComfyUI server, a search judged by it whose report, saved PNG and server
log never contain the API key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import urllib.parse

import numpy as np
import pytest
import torch

from tests.fake_openai import FakeOpenAI
from verifiers import remote_grader as rg
from verifiers.base import VerifierError

KEY_ENV = "NOISE_SEARCH_TEST_GRADER_KEY"
# Set while pytest collects, i.e. before the session's live ComfyUI server starts: the server
# inherits it as a user's server inherits the key from its shell.
KEY = os.environ.setdefault(KEY_ENV, "sk-test-" + secrets.token_hex(16))


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.stop()


def grader(fake, model, mode="grader", **kw):
    kw = {"api_key_env": KEY_ENV, "timeout_s": 5.0, "max_retries": 0, "concurrency": 4, **kw}
    return rg.RemoteGraderVerifier(fake.url, model, mode, **kw)


def images(values) -> torch.Tensor:
    """Flat grey images of the given 8-bit levels, 16 x 24."""
    return torch.stack([torch.full((16, 24, 3), v / 255.0) for v in values])


LEVELS = [40, 200, 120]


def test_vqascore_from_logprobs_and_grader_from_the_json_rubric(fake):
    before = len(fake.requests)
    vqa = grader(fake, "logprobs", "vqascore")
    assert vqa.vqa_source is None and vqa.name == "remote VQAScore (logprobs)"
    got = vqa.score(images(LEVELS), "a grey square")
    torch.testing.assert_close(got, torch.tensor([v / 255 for v in LEVELS]), atol=1e-6, rtol=0)
    # The first reply had logprobs: the verifier keeps reading them, and its name says so.
    assert vqa.vqa_source == "logprobs" and vqa.name == "remote VQAScore (logprobs, P(Yes) from logprobs)"
    g = grader(fake, "rubric")
    overall = g.score(images(LEVELS), "a grey square")
    want = torch.tensor([(10 * v / 255 + 20) / 5 * 10 for v in LEVELS])
    torch.testing.assert_close(overall, want, atol=1e-4, rtol=0)
    assert g.last_aspects.shape == (3, 5) and float(g.last_aspects[1, 1]) == 5.0
    sent = fake.requests[before:]
    assert len(sent) == 6 and all(r["authorization"] == f"Bearer {KEY}" for r in sent)
    assert all(r["path"] == "/v1/chat/completions" for r in sent)
    asked = [r["body"] for r in sent if r["model"] == "logprobs"]
    assert len(asked) == 3 and all(b["logprobs"] is True and b["top_logprobs"] == 20 for b in asked)
    vqa = asked[0]
    assert vqa["max_tokens"] == 1 and vqa["temperature"] == 0
    assert vqa["messages"][0]["content"][0]["text"] == 'Does this figure show "a grey square"? Please answer yes or no.'
    assert "a grey square" in next(r["body"] for r in sent if r["model"] == "rubric")["messages"][0]["content"][0]["text"]


def test_grader_aspects_node_reads_the_remote_ratings(fake, comfy):
    from tests.harness.host import run_node

    (aspects,) = run_node("LLMGraderAspects", images=images(LEVELS), verifier=grader(fake, "rubric"), condition="x")
    rows = json.loads(aspects)
    assert [r["accuracy_to_prompt"] for r in rows] == pytest.approx([10 * v / 255 for v in LEVELS], abs=1e-4)
    assert all(r["originality"] == 5 for r in rows) and rows[0]["overall"] == pytest.approx(
        (10 * LEVELS[0] / 255 + 20) * 2, abs=1e-3)
    with pytest.raises(Exception, match="rates no aspects"):
        run_node("LLMGraderAspects", images=images([1]), verifier=grader(fake, "logprobs", "vqascore"), condition="x")


def test_concurrency_limit(fake):
    fake.delay_s = 0.3
    fake.max_in_flight = 0
    try:
        grader(fake, "rubric", concurrency=2).score(images([10] * 6), "x")
        assert fake.max_in_flight == 2
        fake.max_in_flight = 0
        grader(fake, "rubric", concurrency=6).score(images([10] * 6), "x")
        assert fake.max_in_flight == 6
    finally:
        fake.delay_s = 0.0


@pytest.mark.parametrize("model, mode, match", [
    ("wrong", "grader", "HTTP 500"),
    ("malformed", "grader", "failed after 0 retries"),
    ("prose", "grader", "not the JSON object the rubric asks for: 'I would rate"),
    ("out_of_range", "grader", "accuracy_to_prompt = 12; every aspect"),
    ("refuse", "grader", "refused to grade image 0: \"I can't help"),
    ("nologprobs", "vqascore", r"returned no logprobs\): the reply for image 0 is not the JSON object VQAScore "
                               r"asks for .*: 'Yes'"),
    ("json_prose", "vqascore", "not the JSON object VQAScore asks for .*: 'The image shows"),
    ("json_out_of_range", "vqascore", "confidence = 85; it must be a number from 0 to 1"),
    ("json_bad_answer", "vqascore", "answer = 'maybe'; it must be \"yes\" or \"no\""),
    ("bad_request", "vqascore", "HTTP 400: .*image too large"),
    ("unknown-model", "grader", "HTTP 404"),
])
def test_failures_give_clear_errors_without_the_key(fake, model, mode, match):
    t0 = time.monotonic()
    verifier = grader(fake, model, mode)
    with pytest.raises(rg.RemoteGraderError, match=match) as e:
        verifier.score(images([100]), "a cat")
    assert time.monotonic() - t0 < 5
    assert KEY not in str(e.value) and fake.url in str(e.value) or model in ("prose", "out_of_range", "refuse",
                                                                             "nologprobs") or "json" in model
    assert KEY not in str(e.value)
    # Only a missing or refused logprobs decides the JSON way; any other failure decides nothing.
    assert verifier.vqa_source == ("json" if model == "nologprobs" or "json" in model else None)


# -- VQAScore without logprobs: JSON answers ----------------------------------------------------

JSON_QUESTION = ('Does this figure show "a grey square"? Please answer yes or no.\nReply with one JSON object and '
                 'nothing else: {"answer": "yes" or "no", "confidence": the probability from 0 to 1 that your answer '
                 'is right}.')


@pytest.mark.parametrize("model, reason", [
    ("ignores_logprobs", "the server returned no logprobs"),
    ("refuses_logprobs", r"the server refused the logprobs parameter \(HTTP 400: .*does not support the 'logprobs'"),
    ("caps_logprobs", r"the server refused the logprobs parameter \(HTTP 400: .*greater than max allowed: 5"),
])
def test_vqascore_reads_json_answers_from_a_server_without_logprobs(fake, caplog, model, reason):
    before = len(fake.requests)
    verifier = grader(fake, model, "vqascore")
    with caplog.at_level("WARNING", logger=rg.__name__):
        got = verifier.score(images(LEVELS), "a grey square")
    # The fake answers {"answer": "no", "confidence": 1 - b} below b = 0.5, {"answer": "yes", "confidence": b}
    # above: P(yes) = 1 - confidence for "no", confidence for "yes".
    want = torch.tensor([1 - (1 - 40 / 255), 200 / 255, 1 - (1 - 120 / 255)])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert verifier.vqa_source == "json"
    assert verifier.name == f"remote VQAScore ({model}, P(yes) from a JSON answer)"
    assert re.match(reason, verifier.vqa_source_reason), verifier.vqa_source_reason
    sent = [r["body"] for r in fake.requests[before:]]
    # Image 0 with logprobs (refused or ignored), then image 0 again and the others as JSON questions.
    assert len(sent) == 4 and sent[0]["logprobs"] is True and sent[0]["top_logprobs"] == 20
    assert all("logprobs" not in b and "top_logprobs" not in b for b in sent[1:])
    assert all(b["messages"][0]["content"][0]["text"] == JSON_QUESTION for b in sent[1:])
    # Decided once: the next batch asks for JSON answers only, one request an image.
    before = len(fake.requests)
    torch.testing.assert_close(verifier.score(images([255, 0]), "a grey square"), torch.tensor([1.0, 0.0]))
    assert [("logprobs" in r["body"]) for r in fake.requests[before:]] == [False, False]
    warning = [r.getMessage() for r in caplog.records if "JSON answers" in r.getMessage()]
    assert len(warning) == 1 and verifier.vqa_source_reason in warning[0]
    for where in (verifier.vqa_source_reason, caplog.text, verifier.name):
        assert KEY not in where  # refuses_logprobs echoes the Authorization header


@pytest.mark.parametrize("model, what", [("logprobs_if_bright", "returned no logprobs"),
                                         ("refuses_if_dark", "refused the logprobs parameter")])
def test_vqascore_from_logprobs_never_mixes_in_json_answers(fake, model, what):
    verifier = grader(fake, model, "vqascore")
    # The first image is bright: logprobs; the second dark: the server drops them. No JSON question is asked.
    before = len(fake.requests)
    with pytest.raises(rg.RemoteGraderError, match=f"for image 1 the server {what}.*though its first reply had "
                                                   "them; this verifier's scores came from logprobs") as e:
        verifier.score(images([200, 40]), "a cat")
    assert KEY not in str(e.value) and verifier.vqa_source == "logprobs"
    assert all("confidence" not in r["body"]["messages"][0]["content"][0]["text"] for r in fake.requests[before:])
    torch.testing.assert_close(verifier.score(images([200]), "a cat"), torch.tensor([200 / 255]))


def test_the_json_question_is_documented():
    from pathlib import Path

    docs = " ".join((Path(__file__).parents[1] / "docs" / "verifiers.md").read_text().split())
    assert " ".join(rg.JSON_ANSWER.split()) in docs.replace("`", "")


def test_a_slow_server_times_out_with_bounded_retries(fake):
    before = fake.count("slow")
    t0 = time.monotonic()
    with pytest.raises(rg.RemoteGraderError, match=r"no answer within timeout_s=0.4 s") as e:
        grader(fake, "slow", timeout_s=0.4, max_retries=1).score(images([100]), "a cat")
    elapsed = time.monotonic() - t0
    assert "after 1 retries" in str(e.value) and elapsed < 5, elapsed
    time.sleep(0.2)
    assert fake.count("slow") - before == 2  # the request and one retry


def test_interrupt_returns_while_a_request_is_in_flight(fake):
    class Interrupted(Exception):
        pass

    start = time.monotonic()

    def interrupt_after_half_a_second():
        if time.monotonic() - start > 0.5:
            raise Interrupted

    g = grader(fake, "slow", timeout_s=60)
    g.check_interrupt = interrupt_after_half_a_second
    with pytest.raises(Interrupted):
        g.score(images([100, 120]), "a cat")
    assert time.monotonic() - start < 2  # the 30 s answers were not waited for


def test_bad_settings_and_a_missing_key_are_named(fake, monkeypatch):
    with pytest.raises(VerifierError, match="NAME of an environment variable"):
        grader(fake, "rubric", api_key_env="sk-live abc")
    with pytest.raises(VerifierError, match="mode must be one of vqascore, grader"):
        grader(fake, "rubric", "yesno")
    with pytest.raises(VerifierError, match="base_url must be an http"):
        rg.RemoteGraderVerifier("localhost:8000", "m")
    with pytest.raises(VerifierError, match="exactly one"):
        grader(fake, "logprobs", "vqascore", question_template="no slot")
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(rg.RemoteGraderError, match=f"environment variable {KEY_ENV} .* is not set"):
        grader(fake, "rubric").score(images([1]), "a cat")
    # No key at all (a local server): no Authorization the user set, and scoring works.
    assert grader(fake, "rubric", api_key_env="").score(images([255]), "a cat").shape == (1,)


# -- through a live ComfyUI server ------------------------------------------------------------

def report_key() -> str:
    from tests.harness.host import pack_module

    return pack_module("nodes.search_runner").REPORT_KEY


@pytest.mark.parametrize("model, mode, requests, name, top", [
    ("rubric", "grader", 2, "remote LLM grader (rubric)", 100),
    # VQAScore from a server that refuses logprobs with an error echoing the key: the fallback's warning
    # lands in the server log, and the report says the scores are JSON answers.
    ("refuses_logprobs", "vqascore", 3, "remote VQAScore (refuses_logprobs, P(yes) from a JSON answer)", 1),
])
def test_search_judged_by_the_remote_grader_never_leaks_the_key(live, fake, tmp_path, model, mode, requests, name,
                                                                 top):
    from PIL import Image

    from tests import reliability_prompts as rp

    verifier = {"class_type": "RemoteGraderVerifierLoader",
                "inputs": {"base_url": fake.url, "model": model, "mode": mode, "api_key_env": KEY_ENV,
                           "question_template": rg.VQA_TEMPLATE, "timeout_s": 10.0, "max_retries": 1,
                           "concurrency": 2}}
    before = len(fake.requests)
    prompt = rp.search_prompt("RandomSearchSampler", verifier_node=verifier, condition="a bright square")
    # As the editor queues it: extra_pnginfo carries the workflow, and the search adds its report.
    result = live.run(prompt, timeout=180, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result["status"] == "success", result
    sent = fake.requests[before:]
    # The two candidates (and, falling back, the first one's refused logprobs request).
    assert len(sent) == requests and all(r["authorization"] == f"Bearer {KEY}" for r in sent)
    history = json.dumps(result["history"])
    saved = result["history"]["outputs"][rp.SAVE_ID]["images"][0]
    query = urllib.parse.urlencode({"filename": saved["filename"], "subfolder": saved.get("subfolder", ""),
                                    "type": saved.get("type", "output")})
    status, body = live.request("GET", f"/view?{query}")
    assert status == 200
    png = Image.open(__import__("io").BytesIO(body))
    text = json.dumps(dict(png.text))
    assert "RemoteGraderVerifierLoader" in text and KEY_ENV in text  # the workflow is there, with the variable's name
    report = json.loads(png.text[report_key()])
    assert report["verifier"] == name
    assert np.isfinite(report["best"]["score"]) and 0 <= report["best"]["score"] <= top
    if mode == "vqascore":
        assert "refused the logprobs parameter" in live.log() and "JSON answers" in live.log()
    for where, content in (("the history and report", history), ("the PNG text", text), ("the server log", live.log())):
        assert KEY not in content, f"the API key leaked into {where}"
