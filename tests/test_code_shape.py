"""The shape the style guide asks of the search core: short, pure functions (k-diffusion's
samplers are 20-40 lines), and no ComfyUI import anywhere in search/."""

from __future__ import annotations

import ast
from pathlib import Path

SEARCH = Path(__file__).resolve().parents[1] / "search"
LONGEST = 80


def functions():
    for path in sorted(SEARCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.name, node


def test_no_function_in_search_is_longer_than_80_lines():
    long = [f"{name}:{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)" for name, fn in functions()
            if fn.end_lineno - fn.lineno + 1 > LONGEST]
    assert not long, long


def test_search_imports_no_host_module():
    hosts = ("comfy", "nodes", "folder_paths", "server", "comfy_api", "comfy_extras")
    found = []
    for path in sorted(SEARCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in hosts]
    assert not found, found
