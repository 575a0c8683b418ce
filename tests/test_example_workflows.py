"""The example workflows: listed by the template browser, saved with widget values in the order
the editor expects, up to date with their builder, and every one runs on the live server
with tiny models substituted (tests/harness/workflow_convert.py says what is substituted)."""

from __future__ import annotations

import io
import json
import sys
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from examples.video_examples import VIDEO_MODELS
from tests.harness import workflow_convert as wc
from tests.harness.host import PACK_NAME, REPO

EXAMPLES = [p.stem for p in wc.example_paths()]
# The video examples run in-process with tiny video models (tests/test_video_workflows.py): their
# text encoders have no tiny stand-in on the server.
VIDEO_EXAMPLES = [name for name in EXAMPLES if name.startswith("video_")]
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# File names the examples use that the test server does not have (official model files).
OFFICIAL_FILES = set(wc.MODEL_SUBSTITUTES) | {"clip_l.safetensors", "t5xxl_fp16.safetensors"} | set(VIDEO_MODELS)
# The examples as the first release saved them (node ids and widget orders of that release).
SAVED_V1 = sorted((REPO / "tests" / "fixtures" / "saved_v1").glob("*.json"))


@pytest.fixture(scope="module")
def info(server):
    wc.place_test_verifiers(server.dirs["models"])
    return server.object_info()


def search_types(info) -> set[str]:
    """The pack's search nodes: those that output a search report."""
    return {name for name, node in info.items()
            if node.get("category", "").startswith("sampling/noise_search") and "report" in node.get("output_name", [])}


def test_the_examples_exist():
    assert EXAMPLES == sorted(["sd15_random_search_imagereward", "sdxl_zero_order_ensemble",
                               "flux_path_search_clipscore", "verifier_score_best_of_batch",
                               "replay_winner_stock_nodes", "sd15_particle_steering_clipscore",
                               "sd15_early_rejection_imagereward", "sd15_tree_search_custom",
                               "sd15_latent_batch_random_search", "video_wan21_random_search",
                               "video_wan22_14b_high_noise_search", "video_ltxv_early_rejection"])


def test_examples_use_no_deprecated_node_and_show_every_strategy(info):
    """Examples show the current nodes; every registered strategy has one (its KSampler-style node
    or its search options node), as has a latent batch."""
    used = {node["type"] for name in EXAMPLES for node in wc.load_example(name)["nodes"]}
    assert not [t for t in used if info.get(t, {}).get("deprecated")]
    from search import registry

    for spec in registry.specs():
        assert {spec.sampler_node, spec.option_node} & used, spec.name
    # What the server lists: NoiseSearch's seven inputs (and an optional draft model); the earlier
    # releases' nodes deprecated.
    noise_search = info["NoiseSearch"]["input"]
    assert [*noise_search["required"]] == ["noise", "guider", "sampler", "sigmas", "latent_image", "search", "judge"]
    assert [*noise_search.get("optional", {})] == ["draft"]
    earlier = {n.node_id for spec in registry.specs() for n in spec.legacy}
    assert earlier and all(info[n].get("deprecated") for n in earlier)
    assert not any(info[n].get("deprecated") for spec in registry.specs() for n in (spec.option_node, spec.sampler_node))
    batches = [n for n in wc.load_example("sd15_latent_batch_random_search")["nodes"] if n["type"] == "EmptyLatentImage"]
    assert batches and wc.widget_values_by_name(batches[0], info["EmptyLatentImage"])["batch_size"] > 1


def test_template_browser_lists_and_serves_them(live):
    listed = live.get("/api/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == EXAMPLES, listed
    for name in EXAMPLES:
        base = f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}"
        assert live.get(base + ".json") == wc.load_example(name)
        # The browser shows <name>.jpg as the template's picture (a render of the graph).
        status, body = live.request("GET", base + ".jpg")
        assert status == 200 and Image.open(io.BytesIO(body)).format == "JPEG"


@pytest.mark.parametrize("name", EXAMPLES)
def test_widget_values_follow_object_info(info, name):
    """Each saved value sits where the editor reads it: right count, right type, valid choice."""
    for node in wc.load_example(name)["nodes"]:
        node_def = info.get(node["type"])
        if node_def is None:
            assert node["type"] == "Note", f"node {node['id']}: unknown type {node['type']}"
            continue
        values = node.get("widgets_values", [])
        slots = wc.widget_slots(node_def)
        expected_len = sum(1 + wc.extra_widget_values(n, s) for n, s in wc.input_specs(node_def) if wc.is_widget(s))
        where = f"{name}: node {node['id']} ({node['type']})"
        assert len(values) == expected_len, f"{where}: {len(values)} widget values, expected {expected_len}"
        specs = dict(wc.input_specs(node_def))
        for input_name, index in slots:
            spec, value = specs[input_name], values[index]
            check_value(f"{where}.{input_name}", spec, value)
            for extra in values[index + 1:index + 1 + wc.extra_widget_values(input_name, spec)]:
                assert extra in CONTROL_VALUES, f"{where}.{input_name}: control value {extra!r}"
        for inp in node.get("inputs", []):
            if inp.get("widget"):  # a widget converted to an input socket keeps its name
                assert inp["widget"]["name"] in dict(slots), f"{where}: socket for unknown widget {inp}"


def check_value(where, spec, value):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    options = kind if isinstance(kind, list) else opts.get("options")
    if kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an INT"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a BOOLEAN"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a STRING"
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", -np.inf) <= value <= opts.get("max", np.inf), f"{where}: {value} out of range"
    if options is not None:
        assert value in options or value in OFFICIAL_FILES, f"{where}: {value!r} is not a choice"


def test_examples_match_their_builder(info):
    """The committed files are what examples/build_example_workflows.py makes from /object_info."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import build_example_workflows as build
    finally:
        sys.path.remove(str(REPO / "examples"))
    built = build.build_all(info)
    assert sorted(built) == EXAMPLES
    for name, workflow in built.items():
        assert workflow == wc.load_example(name), (
            f"example_workflows/{name}.json is stale: rebuild it with "
            "python examples/build_example_workflows.py --server URL")


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n not in VIDEO_EXAMPLES])
def test_example_converts_validates_and_runs(live, info, name):
    workflow = wc.load_example(name)
    prompt = wc.tiny_prompt(workflow, info)
    assert set(prompt) == {str(n["id"]) for n in workflow["nodes"] if n["type"] != "Note"}
    result = live.run(prompt, timeout=600, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result["status"] == "success", json.dumps(result.get("data") or result.get("body"), indent=1)[:4000]
    outputs = result["history"]["outputs"]

    searches = [nid for nid, n in prompt.items() if n["class_type"] in search_types(info)]
    for nid in searches:
        (state,) = outputs[nid]["noise_search"]
        assert state["finished"] and state["candidates"] and state["curve"]
        thumbs = [c.get("thumb", "") for c in state["candidates"]]
        assert any(thumbs) and all(t.startswith("data:image/jpeg;base64,") for t in thumbs if t)
        assert np.isfinite(state["best_score"])
        if state["algorithm"] == "random":  # other searches score intermediate states too
            assert all(thumbs)
            assert state["best_score"] == max(c["score"] for c in state["candidates"])
    saves = [nid for nid, n in prompt.items() if n["class_type"] == "SaveImage"]
    assert saves and all(outputs[nid]["images"] for nid in saves)
    if searches:
        # The report travels inside the saved PNG (SaveImage writes extra_pnginfo).
        png = open_image(live, outputs[saves[0]]["images"][0])
        report = json.loads(png.info["noise_search_report"])
        first = report["problems"][0] if "problems" in report else report  # a latent batch: the view shows latent 0
        assert first["best"]["score"] == pytest.approx(outputs[searches[0]]["noise_search"][0]["best_score"])
    if name == "replay_winner_stock_nodes":
        check_replays_match(live, prompt, outputs)
    if name == "sd15_latent_batch_random_search":
        check_batch_replay(live, prompt, outputs, report)
    if name == "sdxl_zero_order_ensemble":
        # The ensemble ranks the pivot with its neighbours: the pivot moves, and the winner is
        # not the seed's plain sample (candidate 0).
        assert any(r["moved"] for r in report["rounds"][1:]), report["rounds"]
        assert report["best"]["id"] != 0


@pytest.mark.parametrize("path", SAVED_V1, ids=[p.stem for p in SAVED_V1])
def test_workflows_saved_by_the_first_release_still_run(live, info, path):
    """Workflows saved with the first release's nodes load (same node ids, same widget order)
    and run unchanged."""
    workflow = json.loads(path.read_text())
    prompt = wc.tiny_prompt(workflow, info)
    result = live.run(prompt, timeout=600)
    assert result["status"] == "success", json.dumps(result.get("data") or result.get("body"), indent=1)[:4000]
    outputs = result["history"]["outputs"]
    for nid, node in prompt.items():
        if node["class_type"] in search_types(info):
            (state,) = outputs[nid]["noise_search"]
            assert state["finished"] and np.isfinite(state["best_score"])
    if path.stem == "replay_winner_stock_nodes":
        check_replays_match(live, prompt, outputs)


def open_image(live, image: dict) -> Image.Image:
    query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                    "type": image.get("type", "output")})
    status, body = live.request("GET", f"/view?{query}")
    assert status == 200
    img = Image.open(io.BytesIO(body))
    img.load()
    return img


def check_batch_replay(live, prompt, outputs, report):
    """A latent batch: one winner per latent, each with its own report; latent 0's winner is
    LatentFromBatch(0) sampled by a stock KSampler at the seed output (euler_ancestral)."""
    by_prefix = {prompt[nid]["inputs"]["filename_prefix"].rsplit("/", 1)[-1]: nid
                 for nid, n in prompt.items() if n["class_type"] == "SaveImage"}
    winners = outputs[by_prefix["latent_batch_winners"]]["images"]
    assert len(winners) == report["batch"] == len(report["problems"]) > 1
    replay = np.asarray(open_image(live, outputs[by_prefix["latent_batch_replay_0"]]["images"][0]).convert("RGB"),
                        dtype=np.int16)
    first = np.asarray(open_image(live, winners[0]).convert("RGB"), dtype=np.int16)
    assert np.abs(replay - first).max() <= 3


def check_replays_match(live, prompt, outputs):
    """The search's best, the KSampler replay and the replay-noise run are the same picture."""
    by_prefix = {prompt[nid]["inputs"]["filename_prefix"].rsplit("/", 1)[-1]: nid
                 for nid, n in prompt.items() if n["class_type"] == "SaveImage"}
    pixels = {key: np.asarray(open_image(live, outputs[nid]["images"][0]).convert("RGB"), dtype=np.int16)
              for key, nid in by_prefix.items()}
    best = pixels["replay_search_best"]
    for key in ("replay_ksampler", "replay_custom"):
        diff = np.abs(pixels[key] - best)
        # Batched and single model calls may round differently; a different noise would not.
        assert diff.max() <= 3, f"{key} differs from the search's best by up to {diff.max()} levels"
