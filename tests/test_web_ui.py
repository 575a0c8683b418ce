"""The editor in headless Chromium (Debian's package, driven by Playwright), on one backend
(ComfyUI v0.3.75) with two frontends: the one the host pins (comfyui-frontend-package 1.32.9)
and the newest on the package index (installed by scripts/setup.sh --browser into
.frontends/newest and served with --front-end-root).

- The example workflows load and convert like the editor's own "queue", on both frontends.
- A queued search fills the node's live view (thumbnails with scores, the best marked, the
  score-vs-NFE chart), with the classic canvas and with Nodes 2.0 (Vue nodes), on both
  frontends. The view survives reopening the workflow and is rebuilt from the run's outputs
  through the onNodeOutputsUpdated hook.
- The same with the search node inside a subgraph, where that hook gets locator ids
  ("<subgraph uuid>:<node id>") and the server's messages execution ids ("<subgraph node>:<id>").

How the outputs come back differs: frontend 1.32.9 reopens a run from its queue panel; the
newest lists runs through the jobs API (/api/jobs), which v0.3.75 does not have (its queue
panel stays empty: test_newest_frontend_needs_the_jobs_api keeps the evidence), so there the
outputs come back when the user returns to the workflow's tab (the frontend restores the tab's
outputs through the same hook).

Screenshots: test_artifacts/ui_<frontend>_<canvas>.png, ui_<frontend>_subgraph.png; the run on the
pinned frontend with the classic canvas also rewrites docs/images/live_search.png (the README's)
when NOISE_SEARCH_README_PICTURE=1.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

import pytest

from tests.harness import workflow_convert as wc
from tests.harness.host import PACK_NAME, REPO
from tests.harness.server import ComfyServer, offline_flag

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test_artifacts"
README_PICTURE = REPO / "docs" / "images" / "live_search.png"  # committed; the README shows it
CANDIDATES, ROUND_SIZE = 6, 2
SEARCH_NODE = "RandomSearchSampler"  # the search node of the random-search example
SCORE = re.compile(r"^-?\d+\.\d+$")
REGISTRY_LOOKUP = re.compile(r"^(Connecting to|Fetch API cannot load) '?https://api\.comfy\.org/.*Content Security Policy")
NEWEST = REPO / ".frontends" / "newest"
FRONTENDS = ("pinned", "newest")
NODES_2 = "Comfy.VueNodes.Enabled"  # the frontend setting "Modern Node Design (Nodes 2.0)"
MIN_HEIGHT = 170  # web/noise_search.js MIN_HEIGHT
# A seed no other test uses, one per run: a cached result would skip the live updates.
SEEDS = {("pinned", False): 7341, ("pinned", True): 7342, ("newest", False): 7343, ("newest", True): 7344,
         ("pinned", "subgraph"): 7345, ("newest", "subgraph"): 7346}


def newest_static() -> Path:
    static = NEWEST / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        pytest.fail(f"{static} is missing: the browser test serves the newest comfyui-frontend-package from "
                    ".frontends/newest; run scripts/setup.sh --browser (make test does)")
    return static


def frontend_version(frontend: str) -> str:
    if frontend == "pinned":
        return importlib.metadata.version("comfyui-frontend-package")
    (dist,) = newest_static().parent.parent.glob("comfyui_frontend_package-*.dist-info")
    return dist.name.removeprefix("comfyui_frontend_package-").removesuffix(".dist-info")


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


def prepare(srv: ComfyServer) -> None:
    wc.place_test_verifiers(srv.dirs["models"])
    # A returning user: no first-run template dialog over the canvas.
    status, body = srv.request("POST", "/settings/Comfy.TutorialCompleted", True)
    assert status == 200, body


@pytest.fixture(scope="module")
def info(server):
    prepare(server)
    return server.object_info()


@pytest.fixture(scope="module")
def newest_server(tmp_path_factory, tiny_checkpoint_path, tiny_unet_path, tiny_vae_path):
    """The same backend as the session's server, serving the newest frontend."""
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_newest_frontend"), front_end_root=newest_static())
    srv.add_model("checkpoints", tiny_checkpoint_path, "tiny_sd15.safetensors")
    srv.add_model("diffusion_models", tiny_unet_path, "tiny_sd15_unet.safetensors")
    srv.add_model("vae", tiny_vae_path, "tiny_taesd.safetensors")
    srv.start()
    prepare(srv)
    yield srv
    srv.stop()


@pytest.fixture
def backend(request, info):
    """The server of the test's frontend (the `frontend` parameter); its log on failure."""
    frontend = request.node.callspec.params["frontend"]
    srv = request.getfixturevalue("server" if frontend == "pinned" else "newest_server")
    yield srv
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n----- ComfyUI server log ({frontend} frontend, last 200 lines) -----")
        print("\n".join(srv.log().splitlines()[-200:]))


def node_js(expression: str) -> str:
    """JS for the node ``expression`` names (it may use `root`, the root graph), null where it
    names none (e.g. on another workflow's tab)."""
    return f"(() => {{ try {{ const root = app.rootGraph ?? app.graph; return {expression} ?? null; }} " \
           "catch (e) { return null; } })()"


class Editor:
    """One page of the editor, with the errors it logs and the failed requests it makes."""

    def __init__(self, browser, srv: ComfyServer, nodes2: bool = False):
        status, body = srv.request("POST", f"/settings/{NODES_2}", nodes2)
        assert status == 200, body
        self.nodes2 = nodes2
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.errors = []
        self.failed = []
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("response", lambda r: self.failed.append((r.status, r.url)) if r.status >= 400 else None)
        # The "Nodes 2.0" banner would cover the top of the canvas in the screenshot.
        self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        self.url = srv.url
        self.open()

    def open(self):
        self.page.goto(self.url)
        # Ready when the graph exists and this pack's extension has run its setup().
        self.page.wait_for_function(
            "window.app?.graph && document.getElementById('noise-search-style') && "
            "window.app.extensions?.some(e => e.name === 'noise_search.view')", timeout=120_000)
        assert self.page.evaluate(f"() => app.ui.settings.getSettingValue('{NODES_2}')") is self.nodes2

    def load(self, workflow):
        self.page.evaluate("async wf => { await app.loadGraphData(wf); }", workflow)

    def pack_errors(self):
        """Errors that name the pack. Not the frontend's own lookups of a node type on the
        Comfy registry (api.comfy.org/comfy-nodes/<NodeType>/node), which the server's offline
        Content-Security-Policy blocks and which name the node type, e.g. NoiseSearch."""
        return [e for e in self.errors if "noise" in e.lower() and not REGISTRY_LOOKUP.search(e)]

    def views(self):
        """The views of the nodes of the graph on the canvas (the root graph, or the subgraph
        the user entered). The frontends keep a DOM widget's element in the page while its node
        is elsewhere (and briefly show a moved node's), so the page alone cannot tell."""
        return self.page.evaluate(f"""() => (app.canvas.graph?.nodes ?? []).filter(n => n.noiseSearchView)
            .map(n => ({VIEW_JS})(n.noiseSearchView.root))""")

    def node_view(self, expression):
        """The view of the node ``expression`` (JS, may use `root`) evaluates to, shown or not."""
        return self.page.evaluate(f"""() => {{ const node = {node_js(expression)};
            return node?.noiseSearchView ? ({VIEW_JS})(node.noiseSearchView.root) : null; }}""")

    def show_node(self, node_expression):
        """Scroll the canvas to the node and return the on-screen boxes of its view."""
        self.page.evaluate(f"""() => {{ const n = {node_js(node_expression)};
            const ds = app.canvas.ds; ds.scale = 0.9; ds.offset = [620 / 0.9 - n.pos[0], 130 / 0.9 - n.pos[1]];
            app.canvas.setDirty(true, true); }}""")
        self.page.wait_for_timeout(800)
        # Boxes in canvas units: both renderers scale the view with the canvas zoom.
        return self.page.evaluate("""() => [...document.querySelectorAll('.noise-search-view')].map(v => {
            const s = app.canvas.ds.scale;
            const box = e => { const r = e.getBoundingClientRect(); return [r.left / s, r.top / s, r.width / s, r.height / s]; };
            return {view: box(v), chart: box(v.querySelector('.noise-search-chart')),
                    thumbs: [...v.querySelectorAll('.noise-search-thumb')].map(box),
                    visible: v.checkVisibility ? v.checkVisibility() : v.offsetParent !== null}; })""")


VIEW_JS = """v => ({
    status: v.dataset.status, candidates: Number(v.dataset.candidates), best: v.dataset.bestId,
    thumbs: [...v.querySelectorAll('.noise-search-thumb')].map(t => ({
        id: t.dataset.id, text: t.querySelector('.noise-search-score').textContent,
        src: t.querySelector('img').getAttribute('src') || '',
        best: t.classList.contains('noise-search-best')})),
    bestCount: v.querySelectorAll('.noise-search-best').length,
    chartPoints: v.querySelectorAll('.noise-search-chart circle.point').length,
    chartDots: v.querySelectorAll('.noise-search-chart circle.candidate').length,
    curve: !!v.querySelector('.noise-search-chart path.curve')})"""
IDLE = {"status": "idle", "candidates": 0, "best": None, "thumbs": [], "bestCount": 0,
        "chartPoints": 0, "chartDots": 0, "curve": False}


@pytest.fixture(scope="module", params=FRONTENDS)
def shared_editor(request, browser, info):
    """One page per frontend for the tests that only load graphs (opening the editor takes seconds)."""
    srv = request.getfixturevalue("server" if request.param == "pinned" else "newest_server")
    ed = Editor(browser, srv)
    yield ed
    ed.page.close()


def api_of(prompt):
    """Class and inputs only; both sides may add titles, the editor adds its own preview inputs."""
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def with_clipscore(workflow):
    """The example with its ImageReward loader swapped for the FLUX example's CLIPScore loader.
    Which verifier scores does not matter to the view; the CLIPScore stand-in is a tiny open_clip
    model under a name of its own, while the ImageReward stand-in sits under the official file
    name, whose pinned SHA-256 the pack checks (and refuses it)."""
    (clipscore,) = [n for n in wc.load_example("flux_path_search_clipscore")["nodes"]
                    if n["type"] == "CLIPScoreVerifierLoader"]
    for node in workflow["nodes"]:
        if node["type"] == "ImageRewardVerifierLoader":
            node.update(type=clipscore["type"], widgets_values=list(clipscore["widgets_values"]),
                        properties=dict(clipscore.get("properties", {})), title="Load CLIPScore Verifier")
    return workflow


def search_workflow(info, frontend, variant):
    workflow = wc.tiny_ui_workflow(with_clipscore(wc.load_example("sd15_random_search_imagereward")), info)
    search = next(n for n in workflow["nodes"] if n["type"] == SEARCH_NODE)
    wc.set_widget_value(search, info[SEARCH_NODE], "candidates", CANDIDATES)
    # Two candidates per model call: three rounds, three live updates before the end.
    wc.set_widget_value(search, info[SEARCH_NODE], "batch_size", ROUND_SIZE)
    wc.set_widget_value(search, info[SEARCH_NODE], "seed", SEEDS[frontend, variant])
    return workflow, search


def run_and_watch(editor, node_expression):
    """Queue the graph on screen and record what the node's view shows as messages arrive:
    status, candidate count, thumbnails with an image and a score, points of the best-score
    curve. Returns (prompt id, the recorded states)."""
    page = editor.page
    page.evaluate(f"""() => {{ const node = {node_js(node_expression)};
        window.__nsSeen = []; const v = node.noiseSearchView.root;
        new MutationObserver(() => window.__nsSeen.push([v.dataset.status, Number(v.dataset.candidates),
            [...v.querySelectorAll('.noise-search-thumb')].filter(t =>
                (t.querySelector('img').getAttribute('src') || '').startsWith('data:image/')
                && /^-?\\d+\\.\\d+$/.test(t.querySelector('.noise-search-score').textContent)).length,
            v.querySelectorAll('.noise-search-chart circle.point').length]))
            .observe(v, {{attributes: true, attributeFilter: ['data-candidates', 'data-status']}});
        window.__nsDone = null;
        window.comfyAPI.api.api.addEventListener('execution_success', e => {{ window.__nsDone = e.detail.prompt_id; }});
        }}""")
    page.evaluate("() => app.queuePrompt(0, 1)")
    prompt_id = page.wait_for_function("() => window.__nsDone", timeout=300_000).json_value()
    page.wait_for_function(f"""() => {{ const node = {node_js(node_expression)};
        return node.noiseSearchView.root.dataset.status === 'finished'; }}""", timeout=60_000)
    return prompt_id, [tuple(s) for s in page.evaluate("() => window.__nsSeen")]


def check_live_updates(seen):
    assert ("running", 0, 0, 0) in seen, seen  # cleared when the node started
    # While it ran: after a scored round, every candidate so far as a thumbnail with its score,
    # and one curve point per round. (Chromium may hand over messages that arrive together in
    # one task, e.g. the last round with the final state: not every round need be seen.)
    during = [s[1:] for s in seen if s[0] == "running" and s[1] > 0]
    rounds = [(n, n, n // ROUND_SIZE) for n in range(ROUND_SIZE, CANDIDATES + 1, ROUND_SIZE)]
    assert during and all(d in rounds for d in during) and during == sorted(set(during)), seen
    assert during[0][0] < CANDIDATES, seen  # seen before the search ended
    assert seen[-1][0] == "finished", seen


def check_final_view(view, state):
    """A finished view: every candidate with its thumbnail and score, one best, the chart; and
    what it shows is the node's UI output ``state`` from /history."""
    assert view["status"] == "finished"
    assert view["candidates"] == CANDIDATES and len(view["thumbs"]) == CANDIDATES
    for thumb in view["thumbs"]:
        assert SCORE.match(thumb["text"]), thumb["text"]
        assert thumb["src"].startswith("data:image/jpeg;base64,")
    assert view["bestCount"] == 1
    (best,) = [t for t in view["thumbs"] if t["best"]]
    assert best["id"] == view["best"]
    assert float(best["text"]) == max(float(t["text"]) for t in view["thumbs"])
    assert view["curve"] and view["chartPoints"] == CANDIDATES // ROUND_SIZE and view["chartDots"] == CANDIDATES
    assert [t["id"] for t in view["thumbs"]] == [str(c["id"]) for c in state["candidates"]]
    assert view["best"] == str(state["best_id"])


def check_layout(boxes):
    """The view on screen is tall enough, keeps its chart and shows every thumbnail whole,
    inside itself (boxes in canvas units)."""
    (box,) = boxes
    assert box["visible"], box
    left, top, width, height = box["view"]
    assert height >= MIN_HEIGHT - 1 and width >= 200, box
    assert box["chart"][3] >= 60, box  # the chart keeps its 64 px
    assert len(box["thumbs"]) == CANDIDATES
    for x, y, w, h in box["thumbs"]:
        assert w >= 40 and h >= 40, box
        assert left - 1 <= x and x + w <= left + width + 1 and top - 1 <= y and y + h <= top + height + 1, box


def screenshot(editor, name):
    ARTIFACTS.mkdir(exist_ok=True)
    editor.page.screenshot(path=str(ARTIFACTS / name))


def restore_from_outputs(editor, frontend, node_expression):
    """Rebuild the view from the run's outputs alone (the onNodeOutputsUpdated hook) and
    return it. The view is emptied and its saved state dropped first, so nothing else can
    rebuild it.

    Frontend 1.32.9: "Load Workflow" on the run in the queue panel loads the workflow as it was
    queued (no saved state then) and hands the run's outputs to the hook. The newest frontend
    cannot list runs on this backend (no jobs API); it hands a tab's outputs to the hook when
    the user comes back to the tab."""
    page = editor.page
    if frontend == "pinned":
        page.evaluate("() => app.loadGraphData()")  # the default graph: no search view
        assert editor.views() == []
        page.locator(".queue-tab-button").click()  # the sidebar's queue/history tab
        page.locator(".task-item").first.click(button="right")
        page.get_by_role("menuitem", name="Load Workflow").click()
    else:
        page.evaluate(f"""() => {{ const node = {node_js(node_expression)};
            delete node.properties.noise_search_state; node.noiseSearchView.clear('emptied by the test');
            app.extensionManager.workflow.activeWorkflow.changeTracker.checkState(); }}""")
        saved = page.evaluate("() => JSON.stringify(app.extensionManager.workflow.activeWorkflow.changeTracker"
                              ".activeState)")
        assert "noise_search_state" not in saved
        page.evaluate("async () => { await app.extensionManager.command.execute('Comfy.NewBlankWorkflow'); }")
        page.wait_for_timeout(500)
        assert editor.node_view(node_expression) is None  # another tab, no search node
        page.evaluate("async () => { await app.extensionManager.command.execute("
                      "'Workspace.PreviousOpenedWorkflow'); }")
    page.wait_for_function(f"""() => {{ const node = {node_js(node_expression)};
        return node?.noiseSearchView?.root.dataset.status === 'finished'; }}""", timeout=30_000)
    return editor.node_view(node_expression)


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


def test_servers_are_offline_on_every_host(tmp_path):
    """The harness keeps the server and its frontend off the internet with the flag the host
    knows: v0.3.75 only has --disable-api-nodes, newer hosts call it --offline (and keep the
    old name as a deprecated alias), and an unknown flag would stop main.py."""
    from tests.harness.host import comfyui_path

    assert offline_flag(comfyui_path()) == "--disable-api-nodes"
    newer = tmp_path / "comfy"
    newer.mkdir()
    (newer / "cli_args.py").write_text(
        'parser.add_argument("--offline", action="store_true", help="...")\n'
        'parser.add_argument("--disable-api-nodes", action="store_true", help="Deprecated alias for --offline.")\n')
    assert offline_flag(tmp_path) == "--offline"


def test_the_newest_frontend_is_served(browser, newest_server):
    """The second frontend really is the newest package, not the pinned one again."""
    assert frontend_version("newest") != frontend_version("pinned")
    ed = Editor(browser, newest_server)
    try:
        assert ed.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") == frontend_version("newest")
    finally:
        ed.page.close()


def test_newest_frontend_needs_the_jobs_api(browser, newest_server):
    """Evidence for what the newest frontend refuses on this backend: its queue and history
    panels read /api/jobs, which ComfyUI v0.3.75 does not serve (404), so they stay empty and
    a run cannot be reopened from them."""
    status, _ = newest_server.request("GET", "/api/jobs?status=completed&limit=1&offset=0")
    assert status == 404
    ed = Editor(browser, newest_server)
    try:
        ed.page.wait_for_timeout(2000)
        jobs = [(s, u) for s, u in ed.failed if "/api/jobs" in u]
        assert jobs and all(s == 404 for s, _ in jobs), ed.failed
    finally:
        ed.page.close()


@pytest.mark.parametrize("name", [p.stem for p in wc.example_paths()])
def test_editor_converts_examples_like_the_converter(shared_editor, info, name):
    """The editor's own graphToPrompt equals examples/workflow_convert.py: widget values are read
    back in the order they were saved, and the converter agrees with the editor."""
    workflow = wc.load_example(name)
    if not any(n["type"] in wc.NODE_SUBSTITUTES for n in workflow["nodes"]):
        workflow = wc.tiny_ui_workflow(workflow, info)  # names the editor can find: no missing-model dialog
    editor = shared_editor
    editor.errors.clear()  # this example's errors only
    editor.load(workflow)
    ours = api_of(wc.ui_to_api(workflow, info))
    theirs = api_of(editor.page.evaluate("async () => (await app.graphToPrompt()).output"))
    for node in theirs.values():  # inputs the server does not define (the editor's preview widgets)
        known = dict(wc.input_specs(info[node["class_type"]]))
        node["inputs"] = {k: v for k, v in node["inputs"].items() if k in known}
    assert theirs == ours
    assert editor.pack_errors() == []


@pytest.mark.parametrize("nodes2", [False, True], ids=["classic", "nodes2"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_live_search_view(browser, backend, info, frontend, nodes2):
    # Other tests share this server and queue hostile prompts (NaN latents) on purpose; ComfyUI
    # returns those in /history as bare NaN, which is not JSON, so the stock queue panel used
    # below to reopen the run could not list anything. Start from an empty history.
    status, body = backend.request("POST", "/history", {"clear": True})
    assert status == 200, body
    workflow, search = search_workflow(info, frontend, nodes2)
    editor = Editor(browser, backend, nodes2)
    try:
        editor.load(workflow)
        node = f"root.getNodeById({search['id']})"
        assert editor.views() == [IDLE]
        prompt_id, seen = run_and_watch(editor, node)
        check_live_updates(seen)
        (view,) = editor.views()
        state = backend.history(prompt_id)["outputs"][str(search["id"])]["noise_search"][0]
        check_final_view(view, state)
        check_layout(editor.show_node(node))
        screenshot(editor, f"ui_{frontend}_{'nodes2' if nodes2 else 'classic'}.png")
        if (frontend, nodes2) == ("pinned", False) and os.environ.get("NOISE_SEARCH_README_PICTURE") == "1":
            # The README's picture (the host's own frontend), retaken on request only, so that
            # `make test` leaves the committed file alone: NOISE_SEARCH_README_PICTURE=1 make test.
            editor.page.screenshot(path=str(README_PICTURE))

        saved = editor.page.evaluate("() => app.graph.serialize()")

        # The run's outputs alone rebuild the view (in this page: the newest frontend keeps a
        # run's outputs only in the page that ran it).
        queued = backend.history(prompt_id)["prompt"][3]["extra_pnginfo"]["workflow"]
        (queued_search,) = [n for n in queued["nodes"] if n["id"] == search["id"]]
        assert "noise_search_state" not in queued_search.get("properties", {})
        restored = restore_from_outputs(editor, frontend, node)
        assert restored["thumbs"] == view["thumbs"]

        # Reopening the saved workflow (after a page reload) shows the last search again.
        editor.open()
        editor.load(saved)
        (reopened,) = editor.views()
        assert reopened["status"] == "finished" and reopened["thumbs"] == view["thumbs"]
        assert editor.pack_errors() == []
    finally:
        editor.page.close()


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_live_search_view_inside_a_subgraph(browser, backend, info, frontend):
    """The search node moved into a subgraph (the editor's own "Convert to Subgraph"): the live
    view follows the run (the server addresses the node as "<subgraph node>:<id>"), shows it
    inside the subgraph, and is rebuilt from the outputs, which the frontend keys
    "<subgraph uuid>:<id>"."""
    status, body = backend.request("POST", "/history", {"clear": True})
    assert status == 200, body
    workflow, search = search_workflow(info, frontend, "subgraph")
    editor = Editor(browser, backend)
    page = editor.page
    try:
        editor.load(workflow)
        made = page.evaluate("""async id => { const root = app.rootGraph ?? app.graph;
            app.canvas.deselectAll?.(); app.canvas.select(root.getNodeById(id));
            await app.extensionManager.command.execute('Comfy.Graph.ConvertToSubgraph');
            const outer = root.nodes.find(n => n.subgraph?.nodes.some(m => m.type === 'RandomSearchSampler'));
            return outer ? {outer: outer.id, subgraph: outer.subgraph.id,
                            inner: outer.subgraph.nodes.find(m => m.type === 'RandomSearchSampler').id} : null; }""",
                             search["id"])
        assert made is not None, "the search node was not moved into a subgraph"
        node = f"root.subgraphs.get('{made['subgraph']}').getNodeById({made['inner']})"
        assert editor.views() == []  # on the root graph: the view is inside the subgraph node
        assert editor.node_view(node) == IDLE

        prompt_id, seen = run_and_watch(editor, node)
        check_live_updates(seen)
        history = backend.history(prompt_id)
        execution_id = f"{made['outer']}:{made['inner']}"
        state = history["outputs"][execution_id]["noise_search"][0]
        view = editor.node_view(node)
        check_final_view(view, state)

        # Inside the subgraph the view is on screen.
        page.evaluate(f"() => app.canvas.setGraph({node_js(node)}.graph)")
        page.wait_for_timeout(500)
        check_layout(editor.show_node(node))
        (shown,) = editor.views()
        assert shown == view
        screenshot(editor, f"ui_{frontend}_subgraph.png")
        page.evaluate("() => app.canvas.setGraph(app.rootGraph ?? app.graph)")

        restored = restore_from_outputs(editor, frontend, node)
        assert restored["thumbs"] == view["thumbs"]
        assert editor.pack_errors() == []
    finally:
        page.close()
