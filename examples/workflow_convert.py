"""Convert a ComfyUI workflow saved from the editor (UI format) to the API format.

The editor saves a graph: nodes with ``widgets_values`` (a positional list) and links. The
server's POST /prompt wants ``{node_id: {"class_type", "inputs"}}``, where every input is a
value or a link ``[source_node_id, output_slot]``. The positional widget values are matched
to input names with the node definitions from the server's GET /object_info, the same way
the editor builds its widgets:

- inputs are visited in the node's ``input_order`` (required, then optional);
- INT, FLOAT, STRING, BOOLEAN and combo inputs are widgets unless ``forceInput`` is set;
- a seed widget (``control_after_generate``, or an INT named seed / noise_seed) is followed
  by the "control after generate" widget, whose value is saved but never sent;
- a combo with ``image_upload`` is followed by the upload button's value.

Editor-only nodes are resolved here: notes are dropped, Reroute nodes are followed to their
source, a PrimitiveNode's value is written into the inputs it feeds. Muted nodes (mode 2)
are left out; bypassed nodes (mode 4) pass their first input of the matching type through,
as the editor does. Subgraphs are not supported (convert them to nodes first).

Standard library only, so ``examples/api_queue.py`` runs without extra installs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")
NOTE_TYPES = {"Note", "MarkdownNote"}
MODE_MUTED, MODE_BYPASS = 2, 4


class ConversionError(ValueError):
    """The workflow cannot be converted (missing node types, subgraphs, broken links)."""


# -- reading node definitions ----------------------------------------------------------
def input_specs(node_def: Mapping) -> list[tuple[str, list]]:
    """(name, spec) of every visible input in the order the editor creates them."""
    sections = node_def.get("input", {})
    order = node_def.get("input_order") or {s: list(sections.get(s, {})) for s in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        specs = sections.get(section, {})
        out += [(name, specs[name]) for name in order.get(section, []) if name in specs]
    return out


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec) -> bool:
    kind = spec[0]
    if _options(spec).get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def extra_widget_values(name: str, spec) -> int:
    """How many saved-but-not-sent values follow this widget's own value."""
    opts = _options(spec)
    control = opts.get("control_after_generate")
    if control is None:
        # The editor adds the control widget to INT seeds even when the spec does not ask.
        control = spec[0] == "INT" and name in SEED_NAMES
    return int(bool(control)) + int(bool(opts.get("image_upload")))


def widget_slots(node_def: Mapping) -> list[tuple[str, int]]:
    """(input name, index in widgets_values) of every widget input of a node type."""
    slots, index = [], 0
    for name, spec in input_specs(node_def):
        if not is_widget(spec):
            continue
        slots.append((name, index))
        index += 1 + extra_widget_values(name, spec)
    return slots


def widget_values_by_name(node: Mapping, node_def: Mapping) -> dict:
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some nodes save a mapping instead of a list
        return dict(values)
    values = values or []
    return {name: values[i] for name, i in widget_slots(node_def) if i < len(values)}


def set_widget_value(node: dict, node_def: Mapping, name: str, value) -> None:
    """Change one widget value of a UI-format node in place (by input name)."""
    values = node.setdefault("widgets_values", [])
    if isinstance(values, dict):
        values[name] = value
        return
    for slot_name, index in widget_slots(node_def):
        if slot_name == name:
            if index >= len(values):
                raise ConversionError(f"node {node['id']} ({node['type']}) saves no value for {name!r}")
            values[index] = value
            return
    raise ConversionError(f"{node['type']} has no widget input {name!r}")


# -- the graph -------------------------------------------------------------------------
def is_ui_workflow(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_prompt(data) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def _links(workflow: Mapping) -> dict[int, tuple[int, int]]:
    """link id -> (origin node id, origin slot); both the list and the object form."""
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            out[link[0]] = (link[1], link[2])
    return out


class _Graph:
    def __init__(self, workflow: Mapping, object_info: Mapping):
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise ConversionError("workflows with subgraphs are not supported: unpack them in the editor first")
        self.info = object_info
        self.nodes = {node["id"]: node for node in workflow["nodes"]}
        self.links = _links(workflow)

    def source(self, link_id, want_type=None, seen=()):
        """What feeds a link: ("link", [node_id, slot]), ("value", v), or None (muted)."""
        if link_id not in self.links:
            raise ConversionError(f"link {link_id} is missing from the workflow's links")
        node_id, slot = self.links[link_id]
        if node_id in seen:
            raise ConversionError(f"reroute/bypass cycle through node {node_id}")
        node = self.nodes.get(node_id)
        if node is None:
            raise ConversionError(f"link {link_id} starts at missing node {node_id}")
        kind, mode = node["type"], node.get("mode", 0)
        if kind == "Reroute":
            return self._first_input_source(node, None, seen + (node_id,))
        if kind == "PrimitiveNode":
            values = node.get("widgets_values") or []
            if not values:
                raise ConversionError(f"primitive node {node_id} holds no value")
            return ("value", values[0])
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            outputs = node.get("outputs") or []
            out_type = want_type or (outputs[slot].get("type") if slot < len(outputs) else None)
            return self._first_input_source(node, out_type, seen + (node_id,))
        return ("link", [str(node_id), slot])

    def _first_input_source(self, node, want_type, seen):
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            if want_type is None or inp.get("type") in (want_type, "*"):
                return self.source(inp["link"], want_type, seen)
        return None

    def convert(self) -> dict:
        prompt = {}
        for node_id, node in self.nodes.items():
            kind, mode = node["type"], node.get("mode", 0)
            if kind in NOTE_TYPES or kind in ("Reroute", "PrimitiveNode") or mode in (MODE_MUTED, MODE_BYPASS):
                continue
            node_def = self.info.get(kind)
            if node_def is None:
                raise ConversionError(f"node {node_id} is a {kind!r}, which this server does not have "
                                      "(a missing custom node pack?)")
            inputs = widget_values_by_name(node, node_def)
            for inp in node.get("inputs") or []:
                if inp.get("link") is None:
                    continue
                found = self.source(inp["link"], inp.get("type"))
                if found is None:
                    inputs.pop(inp["name"], None)
                else:
                    inputs[inp["name"]] = found[1]
            entry = {"class_type": kind, "inputs": inputs}
            if node.get("title"):
                entry["_meta"] = {"title": node["title"]}
            prompt[str(node_id)] = entry
        return prompt


def ui_to_api(workflow: Mapping, object_info: Mapping) -> dict:
    """The API-format prompt of a UI-format workflow (see the module docstring)."""
    return _Graph(workflow, object_info).convert()


# -- edits on API prompts ----------------------------------------------------------------
def substitute_values(prompt: dict, mapping: Mapping[str, str]) -> list[str]:
    """Replace every string input equal to a key of ``mapping`` (e.g. model file names).

    Returns "node.input: old -> new" lines describing what changed."""
    changed = []
    for node_id, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value in mapping:
                node["inputs"][name] = mapping[value]
                changed.append(f"{node_id}.{name}: {value} -> {mapping[value]}")
    return changed


def parse_value(text: str):
    """A command-line value: JSON when it parses (3, 0.5, true, "x"), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def find_node(prompt: Mapping, key: str) -> str:
    """A node id by id, by title, or by class_type when only one node has it."""
    if key in prompt:
        return key
    for attr in ("title", "class_type"):
        hits = [nid for nid, n in prompt.items()
                if (n.get("_meta", {}).get("title") if attr == "title" else n["class_type"]) == key]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConversionError(f"{key!r} names several nodes ({', '.join(hits)}); use a node id")
    raise ConversionError(f"no node {key!r} in the prompt (ids: {', '.join(prompt)})")


def apply_override(prompt: dict, assignment: str) -> str:
    """Apply ``NODE.input=value`` (NODE: id, title or unique class_type); returns the node id."""
    target, sep, value = assignment.partition("=")
    node_key, dot, name = target.rpartition(".")
    if not sep or not dot or not node_key or not name:
        raise ConversionError(f"override {assignment!r} is not NODE.input=value")
    node_id = find_node(prompt, node_key)
    prompt[node_id]["inputs"][name] = parse_value(value)
    return node_id
