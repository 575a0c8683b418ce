"""The editor in headless Chromium (Debian's package, driven by Playwright): the example workflows
load and convert like the editor's own "queue", and a queued search fills the node's live view
(thumbnails with scores, the best marked, the score-vs-NFE chart), which survives reopening
the workflow and loading the run from the queue panel. Screenshot: test_artifacts/ui_search.png.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.harness import workflow_convert as wc
from tests.harness.host import PACK_NAME, REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test_artifacts"
CANDIDATES, ROUND_SIZE = 6, 2
SCORE = re.compile(r"^-?\d+\.\d+$")


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium; run scripts/setup.sh "
                    "(it installs it with apt-get) or `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def info(server):
    wc.place_test_verifiers(server.dirs["models"])
    # A returning user: no first-run template dialog over the canvas.
    status, body = server.request("POST", "/settings/Comfy.TutorialCompleted", True)
    assert status == 200, body
    return server.object_info()


class Editor:
    """One page of the editor, with the errors it logs."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.errors = []
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        # The "Nodes 2.0" banner would cover the top of the canvas in the screenshot.
        self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        self.url = url
        self.open()

    def open(self):
        self.page.goto(self.url)
        # Ready when the graph exists and this pack's extension has run its setup().
        self.page.wait_for_function(
            "window.app?.graph && document.getElementById('noise-search-style') && "
            "window.app.extensions?.some(e => e.name === 'noise_search.view')", timeout=120_000)

    def load(self, workflow):
        self.page.evaluate("async wf => { await app.loadGraphData(wf); }", workflow)

    def pack_errors(self):
        return [e for e in self.errors if "noise" in e.lower()]

    def views(self):
        return self.page.evaluate("""() => [...document.querySelectorAll('.noise-search-view')].map(v => ({
            status: v.dataset.status, candidates: Number(v.dataset.candidates), best: v.dataset.bestId,
            thumbs: [...v.querySelectorAll('.noise-search-thumb')].map(t => ({
                id: t.dataset.id, text: t.querySelector('.noise-search-score').textContent,
                src: t.querySelector('img').getAttribute('src') || '',
                best: t.classList.contains('noise-search-best')})),
            bestCount: v.querySelectorAll('.noise-search-best').length,
            chartPoints: v.querySelectorAll('.noise-search-chart circle.point').length,
            chartDots: v.querySelectorAll('.noise-search-chart circle.candidate').length,
            curve: !!v.querySelector('.noise-search-chart path.curve')}))""")


@pytest.fixture
def editor(browser, live, info):
    ed = Editor(browser, live.url)
    yield ed
    ed.page.close()


@pytest.fixture(scope="module")
def shared_editor(browser, server, info):
    """One page for the tests that only load graphs (opening the editor takes seconds)."""
    ed = Editor(browser, server.url)
    yield ed
    ed.page.close()


def api_of(prompt):
    """Class and inputs only; both sides may add titles, the editor adds its own preview inputs."""
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def test_every_pack_node_explains_itself_in_the_editor(info):
    """The editor shows these as hover texts: a description per node, a tooltip per input and output."""
    pack = {name: d for name, d in info.items() if d["python_module"].endswith(PACK_NAME)}
    assert len(pack) >= 15, sorted(pack)
    missing = []
    for name, node in pack.items():
        if not node.get("description"):
            missing.append(f"{name}: description")
        for input_name, spec in wc.input_specs(node):
            if not (len(spec) > 1 and spec[1].get("tooltip")):
                missing.append(f"{name}.{input_name}: input tooltip")
        tooltips = node.get("output_tooltips") or []
        for i, output_name in enumerate(node["output_name"]):
            if i >= len(tooltips) or not tooltips[i]:
                missing.append(f"{name}.{output_name}: output tooltip")
    assert missing == []


@pytest.mark.parametrize("name", [p.stem for p in wc.example_paths()])
def test_editor_converts_examples_like_the_converter(shared_editor, info, name):
    """The editor's own graphToPrompt equals examples/workflow_convert.py: widget values are read
    back in the order they were saved, and the converter agrees with the editor."""
    workflow = wc.load_example(name)
    if not any(n["type"] in wc.NODE_SUBSTITUTES for n in workflow["nodes"]):
        workflow = wc.tiny_ui_workflow(workflow, info)  # names the editor can find: no missing-model dialog
    editor = shared_editor
    editor.load(workflow)
    ours = api_of(wc.ui_to_api(workflow, info))
    theirs = api_of(editor.page.evaluate("async () => (await app.graphToPrompt()).output"))
    for node in theirs.values():  # inputs the server does not define (the editor's preview widgets)
        known = dict(wc.input_specs(info[node["class_type"]]))
        node["inputs"] = {k: v for k, v in node["inputs"].items() if k in known}
    assert theirs == ours
    assert editor.pack_errors() == []


def test_live_search_view(editor, live, info):
    # Other tests share this server and queue hostile prompts (NaN latents) on purpose; ComfyUI
    # returns those in /history as bare NaN, which is not JSON, so the stock queue panel used
    # below to reopen the run could not list anything. Start from an empty history.
    status, body = live.request("POST", "/history", {"clear": True})
    assert status == 200, body
    workflow = wc.tiny_ui_workflow(wc.load_example("sd15_random_search_imagereward"), info)
    search = next(n for n in workflow["nodes"] if n["type"] == "RandomSearch")
    wc.set_widget_value(search, info["RandomSearch"], "candidates", CANDIDATES)
    # Two candidates per model call: three rounds, three live updates before the end.
    wc.set_widget_value(search, info["RandomSearch"], "batch_size", ROUND_SIZE)
    # A seed no other test uses: a cached result would skip the live updates checked here.
    wc.set_widget_value(search, info["RandomSearch"], "seed", 7341)
    editor.load(workflow)
    page = editor.page
    assert editor.views() == [{"status": "idle", "candidates": 0, "best": None, "thumbs": [], "bestCount": 0,
                               "chartPoints": 0, "chartDots": 0, "curve": False}]
    # Record what the view shows as messages arrive: status, candidate count, thumbnails with
    # an image and a score, points of the best-score curve.
    page.evaluate("""() => { window.__nsSeen = []; const v = document.querySelector('.noise-search-view');
        new MutationObserver(() => window.__nsSeen.push([v.dataset.status, Number(v.dataset.candidates),
            [...v.querySelectorAll('.noise-search-thumb')].filter(t =>
                (t.querySelector('img').getAttribute('src') || '').startsWith('data:image/')
                && /^-?\\d+\\.\\d+$/.test(t.querySelector('.noise-search-score').textContent)).length,
            v.querySelectorAll('.noise-search-chart circle.point').length]))
            .observe(v, {attributes: true, attributeFilter: ['data-candidates', 'data-status']});
        window.__nsDone = null;
        window.comfyAPI.api.api.addEventListener('execution_success', e => { window.__nsDone = e.detail.prompt_id; }); }""")
    page.evaluate("() => app.queuePrompt(0, 1)")
    page.wait_for_selector(".noise-search-view[data-status=finished]", timeout=300_000)
    prompt_id = page.wait_for_function("() => window.__nsDone", timeout=120_000).json_value()
    seen = [tuple(s) for s in page.evaluate("() => window.__nsSeen")]
    assert ("running", 0, 0, 0) in seen, seen  # cleared when the node started
    # While it ran: after a scored round, every candidate so far as a thumbnail with its score,
    # and one curve point per round. (Chromium may hand over messages that arrive together in
    # one task, e.g. the last round with the final state: not every round need be seen.)
    during = [s[1:] for s in seen if s[0] == "running" and s[1] > 0]
    rounds = [(n, n, n // ROUND_SIZE) for n in range(ROUND_SIZE, CANDIDATES + 1, ROUND_SIZE)]
    assert during and all(d in rounds for d in during) and during == sorted(set(during)), seen
    assert during[0][0] < CANDIDATES, seen  # seen before the search ended
    assert seen[-1][0] == "finished", seen

    (view,) = editor.views()
    assert view["candidates"] == CANDIDATES and len(view["thumbs"]) == CANDIDATES
    for thumb in view["thumbs"]:
        assert SCORE.match(thumb["text"]), thumb["text"]
        assert thumb["src"].startswith("data:image/jpeg;base64,")
    assert view["bestCount"] == 1
    (best,) = [t for t in view["thumbs"] if t["best"]]
    assert best["id"] == view["best"]
    assert float(best["text"]) == max(float(t["text"]) for t in view["thumbs"])
    assert view["curve"] and view["chartPoints"] == CANDIDATES // ROUND_SIZE and view["chartDots"] == CANDIDATES

    # The final view equals the node's UI output in /history.
    state = live.history(prompt_id)["outputs"][str(search["id"])]["noise_search"][0]
    assert [t["id"] for t in view["thumbs"]] == [str(c["id"]) for c in state["candidates"]]
    assert view["best"] == str(state["best_id"])

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("""id => { const n = app.graph.getNodeById(id), ds = app.canvas.ds;
        ds.scale = 0.9; ds.offset = [620 / 0.9 - n.pos[0], 130 / 0.9 - n.pos[1]];
        app.canvas.setDirty(true, true); }""",
                  search["id"])
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "ui_search.png"))

    # Reopening the saved workflow (after a page reload) shows the last search again.
    saved = page.evaluate("() => app.graph.serialize()")
    editor.open()
    editor.load(saved)
    (reopened,) = editor.views()
    assert reopened["status"] == "finished" and reopened["thumbs"] == view["thumbs"]

    # So does loading the run from the queue panel: the workflow queued then had no saved
    # state, so this view comes from the run's outputs (the onNodeOutputsUpdated hook).
    queued = live.history(prompt_id)["prompt"][3]["extra_pnginfo"]["workflow"]
    (queued_search,) = [n for n in queued["nodes"] if n["id"] == search["id"]]
    assert "noise_search_state" not in queued_search.get("properties", {})
    page.evaluate("() => app.loadGraphData()")  # the default graph: no search view
    assert editor.views() == []
    page.locator(".queue-tab-button").click()  # the sidebar's queue/history tab
    page.locator(".task-item").first.click(button="right")
    page.get_by_role("menuitem", name="Load Workflow").click()
    page.wait_for_selector(".noise-search-view[data-status=finished]", timeout=30_000)
    (restored,) = editor.views()
    assert restored["thumbs"] == view["thumbs"]
    assert editor.pack_errors() == []
