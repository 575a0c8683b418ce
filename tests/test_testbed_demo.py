"""`make demo` in small: the same pipeline (the pack's search nodes driving the digits model
through ComfyUI's sampler), at small budgets, checked for the claims the demo reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.testbed import demo

# Small but not tiny: IS over 10 x PER_CLASS samples is too noisy below this. The settings
# are the demo's own (search steps, cfg, zero-order and path settings); only the ladder
# is shorter and there are fewer samples per class.
BUDGETS = [4, 16, 32]
PER_CLASS = 5


@pytest.fixture(scope="module")
def demo_run(comfy, tmp_path_factory):
    import comfy.utils
    import folder_paths

    paths = folder_paths.folder_names_and_paths["verifiers"][0]
    before, bars = list(paths), comfy.utils.PROGRESS_BAR_ENABLED
    out = tmp_path_factory.mktemp("demo_output")
    try:
        results = demo.run(BUDGETS, PER_CLASS, out, log=print, progress=False)
        demo.plot(results, out)
        demo.grid(out, BUDGETS, PER_CLASS)
    finally:
        # The demo adds the testbed's weights folder to the verifier folders and turns
        # ComfyUI's sampler progress bars off (it draws its own): leave the session as it was.
        paths[:] = before
        comfy.utils.PROGRESS_BAR_ENABLED = bars
    return results, out


def test_all_outputs_are_written(demo_run):
    results, out = demo_run
    for name in ("results.json", "scaling.png", "grid.png", "samples.npz"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    for name in ("scaling.png", "grid.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_samples_npz_schema(demo_run):
    results, out = demo_run
    data = np.load(out / "samples.npz")
    assert sorted(data.files) == ["images", "labels", "method", "nfe"]
    images, labels, method, nfe = data["images"], data["labels"], data["method"], data["nfe"]
    n_rows = len(results["rows"])  # the steps baseline at every budget, each search from the second on
    assert n_rows == len(BUDGETS) + 3 * (len(BUDGETS) - 1)
    n = n_rows * 10 * PER_CLASS
    assert images.dtype == np.float32 and images.shape == (n, 16, 16)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.issubdtype(labels.dtype, np.integer) and labels.shape == (n,)
    assert set(labels.tolist()) == set(range(10))
    assert method.dtype.kind == "U" and method.shape == (n,)
    assert set(method.tolist()) == set(demo.METHODS)
    assert np.issubdtype(nfe.dtype, np.integer) and nfe.shape == (n,)
    # NFEs are what the nodes report: never above the budget, steps exactly at it.
    for row in results["rows"]:
        assert row["nfe_max"] <= row["budget"], row
    assert set(nfe[method == "steps"].tolist()) == set(BUDGETS)
    assert nfe[method != "steps"].min() > BUDGETS[0]  # every search spent more than one plain sample


def test_rows_cover_every_method_and_budget(demo_run):
    results, _ = demo_run
    keys = {(r["method"], r["budget"]) for r in results["rows"]}
    assert keys == {("steps", b) for b in BUDGETS} | {(m, b) for m in demo.SEARCHES for b in BUDGETS[1:]}
    for r in results["rows"]:
        for k in ("verifier_score", "inception_score", "frechet_distance", "diversity", "nfe_mean"):
            assert np.isfinite(r[k]), (r["method"], r["budget"], k)


def test_search_beats_more_steps_on_evaluator_is(demo_run):
    results, _ = demo_run
    rows = results["rows"]
    for method in demo.SEARCHES:
        for b in BUDGETS[1:]:
            searched = demo.cell(rows, method, b)["inception_score"]
            plain = demo.cell(rows, "steps", b)["inception_score"]
            assert searched > plain, (method, b, searched, plain)
    assert all(all(v.values()) for v in results["findings"]["search_beats_steps_on_is"].values())


def test_verifier_score_rises_with_budget(demo_run):
    results, _ = demo_run
    for method in demo.SEARCHES:
        scores = [demo.cell(results["rows"], method, b)["verifier_score"] for b in BUDGETS]
        assert all(b >= a for a, b in zip(scores, scores[1:])), (method, scores)
        assert scores[-1] > scores[0], (method, scores)
    assert results["findings"]["all_claims_hold"]


def test_diversity_change_is_reported(demo_run):
    results, _ = demo_run
    d = results["findings"]["diversity_random_largest"]
    top = demo.cell(results["rows"], "random", BUDGETS[-1])["diversity"]
    plain = demo.cell(results["rows"], "steps", BUDGETS[-1])["diversity"]
    assert d["budget"] == BUDGETS[-1] and d["random"] == top and d["steps_same_budget"] == plain
    assert d["relative_vs_steps_same_budget"] == pytest.approx(top / plain - 1)
    assert any("diversity" in line for line in demo.describe(results))
