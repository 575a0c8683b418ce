"""The remote grader (verifiers/remote_grader.py) against a fake OpenAI-compatible server on
127.0.0.1 (tests/fake_openai.py): scores from logprobs and from JSON rubrics, every failure
case with a clear error in bounded time, the concurrency limit, interrupts within one request,
and, through a live ComfyUI server, a search judged by it whose report, saved PNG and server
log never contain the API key.
"""

from __future__ import annotations

import json
import os
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
    got = grader(fake, "logprobs", "vqascore").score(images(LEVELS), "a grey square")
    torch.testing.assert_close(got, torch.tensor([v / 255 for v in LEVELS]), atol=1e-6, rtol=0)
    g = grader(fake, "rubric")
    overall = g.score(images(LEVELS), "a grey square")
    want = torch.tensor([(10 * v / 255 + 20) / 5 * 10 for v in LEVELS])
    torch.testing.assert_close(overall, want, atol=1e-4, rtol=0)
    assert g.last_aspects.shape == (3, 5) and float(g.last_aspects[1, 1]) == 5.0
    sent = fake.requests[before:]
    assert len(sent) == 6 and all(r["authorization"] == f"Bearer {KEY}" for r in sent)
    assert all(r["path"] == "/v1/chat/completions" for r in sent)
    vqa = next(r["body"] for r in sent if r["model"] == "logprobs")
    assert vqa["logprobs"] is True and vqa["max_tokens"] == 1 and vqa["temperature"] == 0
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
    ("nologprobs", "vqascore", "returned no logprobs"),
    ("unknown-model", "grader", "HTTP 404"),
])
def test_failures_give_clear_errors_without_the_key(fake, model, mode, match):
    t0 = time.monotonic()
    with pytest.raises(rg.RemoteGraderError, match=match) as e:
        grader(fake, model, mode).score(images([100]), "a cat")
    assert time.monotonic() - t0 < 5
    assert KEY not in str(e.value) and fake.url in str(e.value) or model in ("prose", "out_of_range", "refuse",
                                                                             "nologprobs")
    assert KEY not in str(e.value)


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


def test_search_judged_by_the_remote_grader_never_leaks_the_key(live, fake, tmp_path):
    from PIL import Image

    from tests import reliability_prompts as rp

    verifier = {"class_type": "RemoteGraderVerifierLoader",
                "inputs": {"base_url": fake.url, "model": "rubric", "mode": "grader", "api_key_env": KEY_ENV,
                           "question_template": rg.VQA_TEMPLATE, "timeout_s": 10.0, "max_retries": 1,
                           "concurrency": 2}}
    before = len(fake.requests)
    prompt = rp.search_prompt("RandomSearchSampler", verifier_node=verifier, condition="a bright square")
    # As the editor queues it: extra_pnginfo carries the workflow, and the search adds its report.
    result = live.run(prompt, timeout=180, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result["status"] == "success", result
    sent = fake.requests[before:]
    assert len(sent) == 2 and all(r["authorization"] == f"Bearer {KEY}" for r in sent)  # the two candidates
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
    assert report["verifier"].startswith("remote LLM grader (rubric)")
    assert np.isfinite(report["best"]["score"]) and 0 <= report["best"]["score"] <= 100
    for where, content in (("the history and report", history), ("the PNG text", text), ("the server log", live.log())):
        assert KEY not in content, f"the API key leaked into {where}"
