// Live view of a noise search inside the search node: one thumbnail per scored candidate
// (score below it, the current best outlined) and the best score versus NFEs.
//
// The server sends the whole search state after every scored round
// ("noise-search.progress", see nodes/progress.py) and returns the final state as the
// node's UI output {"noise_search": [state]}; both have the same shape, so one render
// function draws the live view, the final view and a view restored from history.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT = "noise-search.progress";
// The pack's search nodes, whatever their strategy (the strategy registry makes them): the
// nodes of its category that output a search report.
const CATEGORY = "sampling/noise_search";
const isSearchNode = (nodeData) =>
  (nodeData.category ?? "").startsWith(CATEGORY) && (nodeData.output_name ?? []).includes("report");
const WIDGET_NAME = "noise_search_view";
// The last state is kept in the node's properties so it survives saving and reopening the
// workflow. Properties travel inside every PNG saved from this workflow, so only the best
// candidates keep their thumbnails there; the others keep id and score.
const PROPERTY = "noise_search_state";
const KEEP_THUMBS = 16;
// Video candidates carry a few small frames (nodes/progress.py): each tile plays them in a loop.
const FRAME_MS = 160;
const SVG_NS = "http://www.w3.org/2000/svg";
// The view's least height. The classic canvas sizes a DOM widget from getMinHeight; Nodes 2.0
// (Vue nodes) only moves the element into the node's body and lets CSS size it, so the same
// least height is also a CSS min-height: without it the thumbnails shrink to a strip there.
const MIN_HEIGHT = 170;

const CSS = `
.noise-search-view { display: flex; flex-direction: column; gap: 4px; box-sizing: border-box;
  height: 100%; min-height: ${MIN_HEIGHT}px; padding: 4px; overflow: hidden; border-radius: 6px;
  font: 11px/1.3 sans-serif; color: var(--input-text, #ddd); background: var(--comfy-input-bg, #222); }
.noise-search-header { flex: 0 0 auto; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.noise-search-view[data-status="running"] .noise-search-header::before { content: "\\25CF  "; color: #4caf50; }
.noise-search-view[data-status="stopped"] .noise-search-header::before { content: "\\25A0  "; color: #e57373; }
.noise-search-chart { flex: 0 0 auto; width: 100%; height: 64px; display: block; }
.noise-search-chart .axis { stroke: #777; stroke-width: 1; fill: none; }
.noise-search-chart .curve { stroke: #f5c518; stroke-width: 1.5; fill: none; }
.noise-search-chart .point { fill: #f5c518; }
.noise-search-chart .candidate { fill: #999; opacity: 0.7; }
.noise-search-chart text { fill: #aaa; font-size: 9px; }
.noise-search-grid { flex: 1 1 auto; min-height: 0; overflow-y: auto; display: grid; gap: 4px;
  grid-template-columns: repeat(auto-fill, minmax(56px, 1fr)); align-content: start; }
.noise-search-thumb { position: relative; margin: 0; border: 2px solid transparent; border-radius: 4px;
  overflow: hidden; background: #111; aspect-ratio: 1; }
.noise-search-thumb img { width: 100%; height: 100%; object-fit: cover; display: block; }
.noise-search-thumb .noise-search-score { position: absolute; left: 0; right: 0; bottom: 0; text-align: center;
  font-size: 10px; background: rgba(0, 0, 0, 0.65); color: #fff; }
.noise-search-thumb.noise-search-best { border-color: #f5c518; }
.noise-search-thumb.noise-search-best::after { content: "\\2605"; position: absolute; top: 0; right: 2px;
  color: #f5c518; text-shadow: 0 0 2px #000; }
.noise-search-empty { grid-column: 1 / -1; opacity: 0.6; padding: 8px 2px; }
`;

function injectStyle() {
  if (document.getElementById("noise-search-style")) return;
  const style = document.createElement("style");
  style.id = "noise-search-style";
  style.textContent = CSS;
  document.head.appendChild(style);
}

function formatScore(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "–";
  const a = Math.abs(x);
  return x.toFixed(a >= 100 ? 1 : a >= 1 ? 3 : 4);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Index of the candidate that is the current best (first match of best_id). */
function bestIndex(state) {
  const cands = state.candidates || [];
  let i = cands.findIndex((c) => c.id === state.best_id);
  if (i < 0 && cands.length) {
    // best_id missing (e.g. an old saved state): fall back to the highest score.
    i = cands.reduce((b, c, j) => (c.score > cands[b].score ? j : b), 0);
  }
  return i;
}

/** The state without most thumbnails, for the node's properties (see PROPERTY). */
function compact(state) {
  const cands = state.candidates || [];
  const keep = new Set(
    [...cands.keys()].sort((a, b) => (cands[b].score ?? -Infinity) - (cands[a].score ?? -Infinity))
      .slice(0, KEEP_THUMBS));
  return {
    ...state,
    // Animation frames stay out of the properties (the PNG would carry them): a saved view shows stills.
    candidates: cands.map((c, i) => (keep.has(i) ? { ...c, frames: undefined }
      : { id: c.id, score: c.score, round: c.round })),
  };
}

class SearchView {
  constructor(node) {
    this.node = node;
    this.root = el("div", "noise-search-view");
    this.root.dataset.status = "idle";
    this.header = el("div", "noise-search-header");
    this.chart = svg("svg", { class: "noise-search-chart", preserveAspectRatio: "none" });
    this.grid = el("div", "noise-search-grid");
    this.root.append(this.header, this.chart, this.grid);
    this.tiles = [];
    this.state = null;
    this.timer = null;
    this.tick = 0;
    this.clear("Queue the workflow to see the candidates here.");
  }

  /** Plays the frames of every video tile, one step per FRAME_MS, while the view is shown. */
  animate() {
    if (this.timer || !this.tiles.some((t) => t.frames)) return;
    this.timer = setInterval(() => {
      if (!this.root.isConnected && this.tick > 0) {
        clearInterval(this.timer);
        this.timer = null;
        return;
      }
      this.tick += 1;
      for (const tile of this.tiles) {
        if (!tile.frames) continue;
        const k = this.tick % tile.frames.length;
        tile.firstChild.src = tile.frames[k];
        tile.dataset.frame = String(k);
      }
    }, FRAME_MS);
  }

  clear(message, status = "idle") {
    this.state = null;
    this.tiles = [];
    this.grid.replaceChildren(el("div", "noise-search-empty", message));
    this.chart.replaceChildren();
    this.header.textContent = status === "running" ? "Searching…" : "No search yet";
    this.root.dataset.status = status;
    this.root.dataset.candidates = "0";
  }

  update(state, { persist = true } = {}) {
    if (!state || !Array.isArray(state.candidates)) return;
    const cands = state.candidates;
    // A new run starts over with fewer candidates: rebuild instead of appending.
    if (this.tiles.length > cands.length || !this.state) {
      this.tiles = [];
      this.grid.replaceChildren();
    }
    for (let i = this.tiles.length; i < cands.length; i++) {
      this.tiles.push(this.addTile(cands[i]));
    }
    cands.forEach((c, i) => this.fillTile(this.tiles[i], c));
    this.animate();
    const best = bestIndex(state);
    this.tiles.forEach((tile, i) => tile.classList.toggle("noise-search-best", i === best));
    this.state = state;
    this.drawHeader(state);
    this.drawChart(state);
    this.root.dataset.status = state.finished ? "finished" : "running";
    this.root.dataset.candidates = String(cands.length);
    this.root.dataset.bestId = String(state.best_id ?? "");
    if (persist) this.node.properties[PROPERTY] = compact(state);
    this.node.setDirtyCanvas?.(true, false);
  }

  addTile(candidate) {
    const tile = el("figure", "noise-search-thumb");
    tile.append(el("img"), el("figcaption", "noise-search-score"));
    this.grid.append(tile);
    return tile;
  }

  fillTile(tile, c) {
    const img = tile.firstChild;
    const frames = Array.isArray(c.frames) && c.frames.length > 1 ? c.frames : null;
    tile.frames = frames;
    if (frames) {
      tile.dataset.frames = String(frames.length);
      if (!img.getAttribute("src")) img.src = frames[0];
    } else {
      delete tile.dataset.frames;
      if (c.thumb && img.getAttribute("src") !== c.thumb) img.src = c.thumb;
    }
    img.alt = `candidate ${c.id}`;
    img.style.visibility = c.thumb || frames ? "visible" : "hidden";
    const text = formatScore(c.score);
    tile.lastChild.textContent = text;
    tile.dataset.id = String(c.id);
    tile.dataset.score = String(c.score);
    tile.dataset.round = String(c.round ?? "");
    tile.title = `candidate ${c.id}, round ${c.round ?? "?"}: score ${text}`;
    if (Array.isArray(c.frames_scored)) {
      tile.dataset.framesScored = c.frames_scored.join(",");
      tile.title += `; frames scored: ${c.frames_scored.join(", ")}`;
    }
  }

  drawHeader(s) {
    // The state names its strategy (its display name); views saved before it did name the algorithm.
    const parts = [s.label || s.algorithm || "Search", `${s.candidates.length} scored`];
    if (s.best_score !== null && s.best_score !== undefined) {
      parts.push(`best ${formatScore(s.best_score)} (#${s.best_id})`);
    }
    parts.push(`${s.nfe ?? 0} NFE`);
    if (s.finished) parts.push("done");
    // With a held-out judge: both verifiers' scores of the winner and of the unsearched sample at
    // the seed, side by side (did search improve what the judge measures, or only the verifier?).
    const held = s.judged?.held_out;
    if (held) {
      const seed = s.judged.searched?.seed_sample;
      parts.push(`held-out ${held.verifier} ${formatScore(held.winner)} vs ${formatScore(held.seed_sample)} at the seed`
        + (seed !== null && seed !== undefined ? ` (searched ${formatScore(s.best_score)} vs ${formatScore(seed)})` : ""));
      this.root.dataset.heldOut = `${held.winner},${held.seed_sample}`;
    } else {
      delete this.root.dataset.heldOut;
    }
    this.header.textContent = parts.join(" · ");
  }

  drawChart(state) {
    // Every candidate's score (grey dots, at the NFEs spent when its round ended) and the
    // best score so far as a step line: it only changes when a round finds a better one.
    const W = 300, H = 64, left = 34, right = 4, top = 4, bottom = 12;
    const curve = (state.curve || []).filter((p) => Array.isArray(p) && Number.isFinite(p[0])
      && Number.isFinite(p[1]));
    this.chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.chart.dataset.points = String(curve.length);
    const parts = [svg("path", { class: "axis", d: `M${left},${top} V${H - bottom} H${W - right}` })];
    if (curve.length) {
      // Rounds in order of arrival; curve[i] closes the i-th round seen among the candidates.
      const rounds = [...new Set(state.candidates.map((c) => c.round))];
      const dots = state.candidates
        .map((c) => [curve[Math.min(rounds.indexOf(c.round), curve.length - 1)][0], c.score])
        .filter((p) => Number.isFinite(p[1]));
      const ys = [...curve, ...dots].map((p) => p[1]);
      const xMax = Math.max(...curve.map((p) => p[0]), 1);
      let yMin = Math.min(...ys);
      let yMax = Math.max(...ys);
      if (yMax - yMin < 1e-9) { yMin -= 0.5; yMax += 0.5; }
      const x = (v) => left + (v / xMax) * (W - left - right);
      const y = (v) => top + (1 - (v - yMin) / (yMax - yMin)) * (H - top - bottom);
      for (const p of dots) parts.push(svg("circle", { class: "candidate", cx: x(p[0]), cy: y(p[1]), r: 1.5 }));
      let d = `M${x(0)},${y(curve[0][1])} H${x(curve[0][0])}`;
      for (let i = 1; i < curve.length; i++) d += ` H${x(curve[i][0])} V${y(curve[i][1])}`;
      parts.push(svg("path", { class: "curve", d }));
      for (const p of curve) parts.push(svg("circle", { class: "point", cx: x(p[0]), cy: y(p[1]), r: 2 }));
      parts.push(svg("text", { x: 2, y: top + 8 }, formatScore(yMax)));
      parts.push(svg("text", { x: 2, y: H - bottom }, formatScore(yMin)));
      parts.push(svg("text", { x: W - right, y: H - 2, "text-anchor": "end" }, `${xMax} NFE`));
    }
    this.chart.replaceChildren(...parts);
  }
}

// Two kinds of node ids reach this extension:
// - execution ids, from the server's messages ("executing", our progress event): the path of
//   node ids from the root graph, "12", or "5:12" for node 12 inside the subgraph node 5;
// - locator ids, the keys of app.nodeOutputs handed to onNodeOutputsUpdated by frontends with
//   subgraphs: "12" on the root graph, "<subgraph uuid>:12" for node 12 of that subgraph.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function rootGraph() {
  return app.rootGraph ?? app.graph;
}

function nodeIn(graph, id) {
  return graph?.getNodeById(Number(id)) ?? graph?.getNodeById(id) ?? null;
}

/** The subgraph definition with this uuid: the root graph holds them all, nested ones too. */
function subgraphById(uuid) {
  return rootGraph()?.subgraphs?.get?.(uuid) ?? null;
}

/** Every node of the root graph and of every subgraph definition. */
function allNodes() {
  const graphs = [rootGraph(), ...(rootGraph()?.subgraphs?.values?.() ?? [])];
  return [...new Set(graphs.filter(Boolean).flatMap((g) => g.nodes ?? []))];
}

/** The node for an execution id or a locator id (see above); null when absent. */
function nodeForId(id) {
  const parts = String(id).split(":");
  if (parts.length === 2 && UUID.test(parts[0])) return nodeIn(subgraphById(parts[0]), parts[1]);
  let graph = rootGraph();
  let node = null;
  for (const part of parts) {
    node = nodeIn(graph, part);
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

function viewOf(node) {
  return node?.noiseSearchView ?? null;
}

function attachView(node) {
  if (node.noiseSearchView) return node.noiseSearchView;
  const view = new SearchView(node);
  const widget = node.addDOMWidget(WIDGET_NAME, "noise_search", view.root, {
    serialize: false, // the view is not an input of the node
    hideOnZoom: false,
    getMinHeight: () => MIN_HEIGHT,
  });
  widget.serialize = false; // keeps widgets_values free of it when the workflow is saved
  node.noiseSearchView = view;
  return view;
}

app.registerExtension({
  name: "noise_search.view",

  setup() {
    injectStyle();
    api.addEventListener(EVENT, ({ detail }) => {
      if (detail?.node === undefined || detail?.node === null) return;
      viewOf(nodeForId(detail.node))?.update(detail);
    });
    api.addEventListener("executing", ({ detail }) => {
      const view = detail === null || detail === undefined ? null : viewOf(nodeForId(detail));
      if (view) view.clear("Searching… the first candidates appear after the first scored round.", "running");
    });
    const stop = () => {
      for (const node of allNodes()) {
        const view = viewOf(node);
        if (view?.root.dataset.status === "running") {
          view.root.dataset.status = "stopped";
          view.header.textContent = `${view.header.textContent} · stopped`;
        }
      }
    };
    api.addEventListener("execution_error", stop);
    api.addEventListener("execution_interrupted", stop);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isSearchNode(nodeData)) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      attachView(this);
      this.setSize([Math.max(this.size[0], 340), this.computeSize()[1]]);
      return r;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const r = onConfigure?.apply(this, arguments);
      const saved = this.properties?.[PROPERTY];
      if (saved) attachView(this).update(saved, { persist: false });
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      const state = output?.noise_search?.[0];
      if (state) attachView(this).update(state);
      return r;
    };
  },

  // Opening a finished prompt from the queue/history panel restores its outputs here.
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [id, output] of Object.entries(nodeOutputs || {})) {
      const state = output?.noise_search?.[0];
      if (state) viewOf(nodeForId(id))?.update(state);
    }
  },
});
