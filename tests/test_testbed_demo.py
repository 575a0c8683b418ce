"""`make demo` in small: the same pipeline (the pack's search nodes driving the digits model
through ComfyUI's sampler, cfg 1.0), at small budgets and few samples per class, checked for
its rows, intervals, comparisons with no search, target lines and curves; and the bootstrap
and target logic on synthetic data, where the expected answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.testbed import demo, metrics

# The settings are the demo's own (cfg, search steps, strategy settings); only the ladder is
# shorter, there are fewer samples per class and fewer bootstrap resamples. 4, 8, 16, 32: every
# strategy runs at 16 and 32 (zero-order search needs 12 NFEs, a path 13), and particle
# steering has a row at half of random search's two largest budgets.
BUDGETS = [4, 8, 16, 32]
PER_CLASS = 3
RESAMPLES = 200


@pytest.fixture(scope="module")
def demo_run(comfy, tmp_path_factory):
    import comfy.utils
    import folder_paths

    paths = folder_paths.folder_names_and_paths["verifiers"][0]
    before, bars = list(paths), comfy.utils.PROGRESS_BAR_ENABLED
    out = tmp_path_factory.mktemp("demo_output")
    try:
        results = demo.run(BUDGETS, PER_CLASS, out, resamples=RESAMPLES, log=print, progress=False)
        drawn = demo.plot(results, out)
        drawn["pareto"] = demo.pareto_plot(results, out)
        demo.grid(out, BUDGETS, PER_CLASS)
    finally:
        # The demo adds the testbed's weights folder to the verifier folders and turns
        # ComfyUI's sampler progress bars off (it draws its own): leave the session as it was.
        paths[:] = before
        comfy.utils.PROGRESS_BAR_ENABLED = bars
    return results, out, drawn


def expected_rows(results):
    """(method, budget) of every row: steps everywhere, each search from the budget that pays for it."""
    low = results["settings"]["min_budget"]
    return ({("steps", b) for b in BUDGETS}
            | {(m, b) for m in demo.SEARCHES for b in BUDGETS[1:] if b >= low[m]})


def test_setting_is_class_conditional_without_guidance(demo_run):
    results, _, _ = demo_run
    s = results["settings"]
    assert demo.CFG == 1.0 and s["cfg"] == 1.0 and s["search_steps"] == demo.SEARCH_STEPS
    assert s["bootstrap"]["resamples"] == RESAMPLES and s["bootstrap"]["confidence"] == 0.95
    assert s["min_budget"]["zero_order"] == 12 and s["min_budget"]["particles"] == 8


def test_all_outputs_are_written(demo_run):
    results, out, _ = demo_run
    for name in ("results.json", "scaling.png", "pareto.png", "grid.png", "samples.npz"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    for name in ("scaling.png", "pareto.png", "grid.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_samples_npz_schema(demo_run):
    results, out, _ = demo_run
    data = np.load(out / "samples.npz")
    assert sorted(data.files) == ["images", "labels", "method", "nfe"]
    images, labels, method, nfe = data["images"], data["labels"], data["method"], data["nfe"]
    n = len(results["rows"]) * 10 * PER_CLASS
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
    # Every search spent more than one plain sample, except threshold selection where the first
    # candidate already reaches the value (it then stops after that one sample).
    assert nfe[(method != "steps") & (method != "threshold")].min() > BUDGETS[0]
    assert nfe[method == "threshold"].min() >= BUDGETS[0]


def test_rows_cover_every_method_and_budget(demo_run):
    results, _, _ = demo_run
    keys = {(r["method"], r["budget"]) for r in results["rows"]}
    assert keys == expected_rows(results)
    assert {m for m, _ in keys} == set(demo.METHODS)  # the three newer strategies have rows
    for m in ("particles", "rejection", "tree"):
        assert {b for k, b in keys if k == m} == set(BUDGETS[1:]), m
    for r in results["rows"]:
        for k in (*demo.METRICS, "nfe_mean"):
            assert np.isfinite(r[k]), (r["method"], r["budget"], k)


def test_every_metric_has_an_interval_around_its_value(demo_run):
    results, _, _ = demo_run
    for r in results["rows"]:
        assert set(r["ci"]) == set(demo.METRICS), r["method"]
        for k in demo.METRICS:
            lo, hi = r["ci"][k]
            assert lo <= r[k] + 1e-9 and r[k] <= hi + 1e-9, (r["method"], r["budget"], k, lo, r[k], hi)
        assert 0.0 <= r["ci"]["accuracy"][0] <= r["ci"]["accuracy"][1] <= 1.0
    # Sampling noise at 3 per class: the verifier's interval has a width.
    assert all(r["ci"]["verifier_score"][1] > r["ci"]["verifier_score"][0] for r in results["rows"])


def test_every_row_is_compared_with_no_search(demo_run):
    results, _, _ = demo_run
    base, rest = results["rows"][0], results["rows"][1:]
    assert (base["method"], base["budget"]) == ("steps", BUDGETS[0]) and "vs_no_search" not in base
    for r in rest:
        assert set(r["vs_no_search"]) == set(demo.METRICS)
        for k, d in r["vs_no_search"].items():
            assert d["diff"] == pytest.approx(r[k] - base[k]), (r["method"], k)
            lo, hi = d["ci"]
            assert lo <= hi and d["excludes_zero"] == (lo > 0 or hi < 0)
    # Search raises the verifier's score over the same noises unsearched, clearly even at 3 per class.
    top = [r for r in rest if r["budget"] == BUDGETS[-1] and r["method"] in demo.SEARCHES]
    assert len(top) == len(demo.SEARCHES)
    for r in top:
        d = r["vs_no_search"]["verifier_score"]
        assert d["diff"] > 0 and d["excludes_zero"], (r["method"], d)


def test_tables_and_target_lines(demo_run):
    results, _, _ = demo_run
    text = demo.report(results)
    assert "difference to NO SEARCH" in text and "95% bootstrap interval" in text
    for r in results["rows"]:
        assert f"{r['verifier_score']:.2f} [{r['ci']['verifier_score'][0]:.2f}," in text
    lines = demo.target_lines(results) + demo.selection_target_lines(results)
    assert [line[:4] for line in lines] == ["(a) ", "(b) ", "(c) ", "(d) ", "(e) ", "(f) "]
    for line in lines:
        assert line in text  # the console prints every target line
    targets = {"a": "a", "b": "b", "c": "c", "d": "tempered", "e": "threshold"}
    for line, key in zip(lines, "abcde"):
        met = results["targets"][targets[key]]["met"]
        assert isinstance(met, bool)
        assert line.startswith(f"({key}) met:" if met else f"({key}) NOT met:"), line
        assert "[" in line  # every target line shows intervals
    # (a) compares particle steering at half of random search's two largest budgets (8 and 16
    # particles' NFEs against 16 and 32).
    half = results["targets"]["a"]["verifier_at_half_nfe"]
    assert [(h["random_budget"], h["particles_budget"]) for h in half] == [(16, 8), (32, 16)]
    assert [x["budget"] for x in results["targets"]["b"]["comparisons"]] == BUDGETS[1:]
    assert {g["method"] for g in results["targets"]["c"]["gains"]} == set(demo.STRATEGIES)
    # (d) and (e) rest on the rows they name.
    tem, rnd, plain = (demo._row(results["rows"], m, BUDGETS[-1]) for m in ("tempered", "random", "steps"))
    base = results["rows"][0]
    d = results["targets"]["tempered"]
    assert d["fd_ratio"] == pytest.approx(tem["frechet_distance"] / base["frechet_distance"])
    assert d["gain"] == pytest.approx(tem["accuracy"] - base["accuracy"])
    assert d["random_gain"] == pytest.approx(rnd["accuracy"] - base["accuracy"])
    e = results["targets"]["threshold"]
    thr = demo._row(results["rows"], "threshold", BUDGETS[-1])
    assert e["saved"] == pytest.approx(1 - thr["nfe_mean"] / rnd["nfe_mean"]) and thr["nfe_mean"] <= rnd["nfe_mean"]


def test_pareto_frontier_holds_exactly_the_undominated_rows(demo_run):
    results, _, drawn = demo_run
    rows = results["rows"]
    for key, sign in demo.FIDELITY.items():
        front = {(p["method"], p["budget"]) for p in results["pareto"][key]}
        assert drawn["pareto"][key] == [(p["method"], p["budget"]) for p in results["pareto"][key]]
        for r in rows:
            beaten = any(o["verifier_score"] >= r["verifier_score"] and sign * o[key] >= sign * r[key]
                         and (o["verifier_score"], o[key]) != (r["verifier_score"], r[key]) for o in rows)
            assert ((r["method"], r["budget"]) in front) is not beaten, (key, r["method"], r["budget"])
    text = demo.report(results)
    assert "frontier of verifier vs FD" in text and "frontier of verifier vs divers." in text


def test_pareto_on_known_points():
    rows = [{"method": m, "budget": b, "nfe_mean": b, "verifier_score": v, "frechet_distance": fd, "diversity": dv,
             "ci": {"verifier_score": [v, v], "frechet_distance": [fd, fd], "diversity": [dv, dv]}}
            for m, b, v, fd, dv in [("steps", 4, 1.0, 10.0, 9.0), ("random", 8, 2.0, 12.0, 8.0),
                                    ("random", 16, 3.0, 20.0, 7.0), ("tempered", 16, 2.5, 11.0, 7.5),
                                    ("tree", 16, 1.5, 15.0, 8.5)]]
    front = demo.pareto(rows)
    assert [(p["method"], p["budget"]) for p in front["frechet_distance"]] == [
        ("steps", 4), ("tempered", 16), ("random", 16)]
    assert [(p["method"], p["budget"]) for p in front["diversity"]] == [
        ("steps", 4), ("tree", 16), ("random", 8), ("tempered", 16), ("random", 16)]


def test_selection_targets_met_and_not_met():
    base = {"verifier_score": 0.0, "frechet_distance": 10.0, "diversity": 10.0, "accuracy": 0.90}
    values = {("steps", 4): base,
              ("random", 32): {**base, "verifier_score": 3.0, "frechet_distance": 20.0, "accuracy": 0.98},
              ("tempered", 32): {**base, "verifier_score": 2.0, "frechet_distance": 11.9, "accuracy": 0.962},
              ("threshold", 32): {**base, "verifier_score": 2.5, "frechet_distance": 18.0, "accuracy": 0.98}}
    rows, boots, budgets = fake_results(values)
    rows[-1]["nfe_mean"] = 22.0  # 31% fewer than random search's 32
    t = demo.selection_targets(rows, boots, budgets)
    assert t["tempered"]["met"] and t["threshold"]["met"]
    # FD above 1.2x, or less than 3/4 of the gain, or too few NFEs saved: not met.
    for change, key in (({("tempered", 32): {**values[("tempered", 32)], "frechet_distance": 12.1}}, "tempered"),
                        ({("tempered", 32): {**values[("tempered", 32)], "accuracy": 0.955}}, "tempered")):
        rows, boots, budgets = fake_results({**values, **change})
        rows[-1]["nfe_mean"] = 22.0
        assert not demo.selection_targets(rows, boots, budgets)[key]["met"]
    rows, boots, budgets = fake_results(values)
    rows[-1]["nfe_mean"] = 23.0  # 28% fewer
    assert not demo.selection_targets(rows, boots, budgets)["threshold"]["met"]


def test_curves_have_bands_for_every_strategy(demo_run):
    results, _, drawn = demo_run
    assert set(drawn) == set(demo.METRICS) | {"pareto"}
    for key, curves in ((k, v) for k, v in drawn.items() if k != "pareto"):
        assert set(curves) == set(demo.METHODS), key
        for method, pts in curves.items():
            assert len(pts) >= 2 and pts[0][0] == BUDGETS[0]  # every curve starts at the no-search sample
            assert [p[0] for p in pts] == sorted(p[0] for p in pts)
            for _, value, lo, hi in pts:
                assert lo <= value + 1e-9 <= hi + 2e-9, (key, method)


# ---------------------------------------------------------------- the statistics on synthetic data


def synthetic(n_per_class=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    n = len(labels)
    sample = {"verifier": torch.randn(n, generator=g), "probs": torch.randn(n, 10, generator=g).softmax(-1),
              "features": torch.randn(n, 8, generator=g)}
    return labels, sample, torch.randn(100, 8, generator=g)


def test_identity_resample_gives_the_point_metrics():
    labels, sample, ref = synthetic()
    point = metrics.resampled_metrics(sample, labels, ref, torch.arange(len(labels))[None])
    assert float(point["inception_score"][0]) == pytest.approx(metrics.inception_score(sample["probs"]))
    assert float(point["frechet_distance"][0]) == pytest.approx(metrics.frechet_distance(sample["features"], ref))
    assert float(point["diversity"][0]) == pytest.approx(metrics.class_diversity(sample["features"], labels))
    assert float(point["verifier_score"][0]) == pytest.approx(float(sample["verifier"].mean()))
    acc = float((sample["probs"].argmax(-1) == labels).float().mean())
    assert float(point["accuracy"][0]) == pytest.approx(acc)


def test_resamples_stay_within_classes_and_are_fixed():
    labels = torch.arange(10).repeat_interleave(7)
    idx = metrics.stratified_resamples(labels, 50)
    assert idx.shape == (50, 70)
    assert torch.equal(labels[idx], labels.expand(50, -1))  # per-class counts kept, position by position
    assert torch.equal(idx, metrics.stratified_resamples(labels, 50))  # fixed seed
    assert len(idx.unique()) > 60  # actually resampled


def test_diversity_does_not_count_a_repeated_sample_as_a_pair():
    feats = torch.tensor([[0.0], [1.0], [3.0]])
    labels = torch.zeros(3, dtype=torch.int64)
    # Sample 0 twice and sample 2 once: pairs (0,2) x 2 -> distance 3; the (0,0) pair is not one.
    value = metrics.class_diversities(feats, labels, torch.tensor([[0, 0, 2]]))
    assert float(value[0]) == pytest.approx(3.0)


def paired_rows(shift: float, seed=0):
    """Two rows of the same samples whose verifier scores differ by ``shift`` plus small noise."""
    labels, sample, ref = synthetic(seed=seed)
    other = dict(sample, verifier=sample["verifier"] + shift
                 + 0.05 * torch.randn(len(labels), generator=torch.Generator().manual_seed(9)))
    idx = metrics.stratified_resamples(labels, 300)
    boots, rows = {}, []
    for name, s in (("steps", sample), ("random", other)):
        boots[(name, 4 if name == "steps" else 8)] = metrics.resampled_metrics(s, labels, ref, idx)
        point = metrics.resampled_metrics(s, labels, ref, torch.arange(len(labels))[None])
        rows.append({"method": name, "budget": 4 if name == "steps" else 8,
                     **{k: float(v[0]) for k, v in point.items()}})
    return rows, boots


def test_paired_interval_excludes_zero_only_for_a_real_difference():
    rows, boots = paired_rows(0.3)
    d = demo.paired(rows, boots, ("random", 8), ("steps", 4), "verifier_score")
    assert d["excludes_zero"] and d["ci"][0] > 0.2
    # The same shift is far inside the unpaired intervals' spread (scores vary by ~1 between
    # samples): pairing is what resolves it.
    assert boots[("steps", 4)]["verifier_score"].std() > 2 * (
        boots[("random", 8)]["verifier_score"] - boots[("steps", 4)]["verifier_score"]).std()
    rows, boots = paired_rows(0.0)
    d = demo.paired(rows, boots, ("random", 8), ("steps", 4), "verifier_score")
    assert not d["excludes_zero"] and d["ci"][0] < 0 < d["ci"][1]


def fake_results(values: dict, budgets=(4, 8, 16, 32)):
    """Rows, and bootstrap values spread evenly around each row's value (+-0.5, accuracy +-0.005),
    in an order of their own per row, for the target logic."""
    rows, boots = [], {}
    spread = torch.linspace(-0.5, 0.5, 101, dtype=torch.float64)
    for i, ((method, budget), v) in enumerate(values.items()):
        rows.append({"method": method, "budget": budget, "nfe_mean": float(budget), **v})
        noise = spread[torch.randperm(len(spread), generator=torch.Generator().manual_seed(i))]
        boots[(method, budget)] = {k: x + noise * (0.01 if k == "accuracy" else 1) for k, x in v.items()}
    return rows, boots, list(budgets)


def ladder(verifier: dict, diversity: dict, accuracy: dict):
    """{(method, budget): metrics} from per-method lists over the budgets 8, 16, 32 (and steps at 4)."""
    out = {("steps", 4): {"verifier_score": 0.0, "diversity": 10.0, "accuracy": 0.9}}
    for m in verifier:
        for i, b in enumerate((8, 16, 32)):
            out[(m, b)] = {"verifier_score": verifier[m][i], "diversity": diversity[m][i], "accuracy": accuracy[m][i]}
    return out


def test_targets_met_and_not_met():
    good = ladder(verifier={"random": [1, 2, 3], "particles": [2, 3, 4], "rejection": [1.5, 2.5, 3.5]},
                  diversity={"random": [8, 7, 6], "particles": [8, 7.5, 7], "rejection": [8, 7, 6]},
                  accuracy={"random": [0.95, 0.96, 0.97], "particles": [0.95, 0.96, 0.97],
                            "rejection": [0.95, 0.96, 0.98]})
    rows, boots, budgets = fake_results(good)
    t = demo.targets(rows, boots, budgets)
    assert t["a"]["met"] and t["b"]["met"] and t["c"]["met"]
    assert [(h["random_budget"], h["particles_budget"]) for h in t["a"]["verifier_at_half_nfe"]] == [(16, 8), (32, 16)]

    # (a) fails when particle steering at half the NFEs falls short at one of the two largest
    # budgets, or when its diversity drops below random search's at any budget.
    short = {**good, ("particles", 16): {**good[("particles", 16)], "verifier_score": 2.9}}
    assert not demo.targets(*fake_results(short))["a"]["met"]
    narrow = {**good, ("particles", 8): {**good[("particles", 8)], "diversity": 7.9}}
    assert not demo.targets(*fake_results(narrow))["a"]["met"]
    # (b) fails on one tie.
    tie = {**good, ("rejection", 16): {**good[("rejection", 16)], "verifier_score": 2.0}}
    assert not demo.targets(*fake_results(tie))["b"]["met"]
    # (c) fails when one strategy's accuracy gain's interval reaches zero.
    flat = {**good, ("random", 32): {**good[("random", 32)], "accuracy": 0.902}}
    t = demo.targets(*fake_results(flat))
    assert not t["c"]["met"] and [g["raises"] for g in t["c"]["gains"]].count(False) == 1
