"""Registry readiness and the README's install routes that work today.

- `comfy node validate` (comfy-cli 1.23, from .venv-tools/) passes, offline, with no warnings,
  and comfy-cli's own parser reads the registry page's fields from pyproject.toml.
- The archive `comfy node publish` would upload, built by comfy-cli's own packing code,
  holds the runtime files and none of the development ones; its size is printed.
- Install routes: a git clone of the committed HEAD, and the archive unpacked, each put into
  the `custom_nodes/` of a scratch ComfyUI (`--base-directory`), load as the pack: a real
  server lists its nodes, serves its web extension and its example workflows.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.harness import registry
from tests.harness.host import PACK_NAME, REPO, comfyui_path
from tests.harness.server import ComfyServer

# The node table of docs/nodes.md (current and deprecated nodes): every one must load from either install route.
README_NODES = [
    "NoiseCandidates", "RandomSearch", "RandomSearchAdvanced", "ZeroOrderSearch",
    "ZeroOrderSearchAdvanced", "PathSearch", "PathSearchAdvanced", "ParticleSteering", "EarlyRejectionSearch",
    "SearchParticles", "SearchEarlyRejection", "DiffusionTreeSearch", "SearchTree", "VerifierScore",
    "CLIPScoreVerifierLoader", "ImageRewardVerifierLoader", "AestheticVerifierLoader",
    "CLIPZeroShotVerifierLoader", "DINOv2VerifierLoader", "ClassifierVerifierLoader", "VerifierEnsemble",
    "SearchJudge", "NoiseSearch", "SearchRandom", "SearchZeroOrder", "SearchPaths", "RandomSearchSampler",
    "ZeroOrderSearchSampler", "PathSearchSampler", "ParticleSteeringSampler", "EarlyRejectionSampler",
    "DiffusionTreeSampler",
]
RUNTIME_FILES = ["__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md"]
RUNTIME_DIRS = ["nodes", "search", "verifiers", "web", "example_workflows"]
# Development only; bench/ (the scaling demo's testbed and the benchmarks) runs from a clone.
DEV_DIRS = ["tests", "devhost", "scripts", ".ci", "bench"]
DEV_FILES = ["Makefile", "requirements-dev.txt", "requirements-host.txt", "requirements-tools.txt"]
REPOSITORY = "https://github.com/noise-search/noise-search"
MAX_ARCHIVE_MB = 5.0  # weights or fixtures slipping in would blow this


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


def say(capsys, text: str) -> None:
    """Print through pytest's capture, so `make test` shows it."""
    with capsys.disabled():
        print(f"\n[registry] {text}")


# -- comfy node validate -----------------------------------------------------------------------

def test_comfy_cli_is_the_pinned_registry_tool():
    assert registry.comfy_cli_version().startswith("1.23."), registry.comfy_cli_version()


def test_comfy_node_validate_passes_without_warnings(capsys):
    out = registry.validate(REPO)
    say(capsys, "comfy node validate:\n" + out.strip())
    assert registry.VALIDATE_OK in out


def test_validate_catches_what_the_registry_rejects(tmp_path):
    """The check fails on an exec() and on an ignored classifier, so a pass means something."""
    (tmp_path / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text().replace('"Operating System :: OS Independent"',
                                                      '"Operating System :: Plan 9"'))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(registry.RegistryCheckError, match="Invalid Operating System classifier"):
        registry.validate(tmp_path)
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("exec(input())\n")
    with pytest.raises(registry.RegistryCheckError, match="S102"):
        registry.validate(tmp_path)


def _registry_page_fields() -> dict:
    """pyproject.toml as comfy-cli's own parser (what `publish` sends) reads it."""
    code = ("import json; from comfy_cli.registry.config_parser import extract_node_configuration as x; "
            "c = x(); print('JSON' + json.dumps({'project': c.project.__dict__ | "
            "{'urls': c.project.urls.__dict__, 'license': c.project.license.__dict__}, "
            "'comfy': c.tool_comfy.__dict__}, default=str))")
    proc = registry._run([str(registry.TOOLS_PY), "-c", code], REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.split("JSON", 1)[1])


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_registry_page_fields_are_complete():
    page = _registry_page_fields()
    proj, comfy = page["project"], page["comfy"]
    assert proj["name"] == PACK_NAME  # the node id: custom_nodes/<id> after a registry install
    assert re.fullmatch(r"\d+\.\d+\.\d+", proj["version"])
    assert len(proj["description"]) > 40
    assert proj["license"]["file"] == "LICENSE" and (REPO / "LICENSE").is_file()
    assert proj["urls"]["repository"] == REPOSITORY
    assert proj["urls"]["documentation"].startswith(REPOSITORY)
    assert proj["supported_os"] == ["OS Independent"]
    assert proj["supported_accelerators"] == ["GPU :: NVIDIA CUDA"]
    assert comfy["publisher_id"] and comfy["display_name"] == "Noise Search"
    assert comfy["web"] == "web"
    # The registry takes the icon as a URL: this repository's main branch, a tracked file
    # that is a PNG within the registry's 800x400 limit.
    prefix = "https://raw.githubusercontent.com/noise-search/noise-search/main/"
    assert comfy["icon"].startswith(prefix), comfy["icon"]
    icon = comfy["icon"].removeprefix(prefix)
    assert icon in tracked_files(), f"{icon} is not committed"
    w, h = png_size(REPO / icon)
    assert w <= 800 and h <= 400, (w, h)
    # requires-comfyui is parsed (not dropped with a warning) and admits the host tested here.
    floor = proj["supported_comfyui_version"]
    assert floor.startswith(">="), floor
    host = re.search(r'"([\d.]+)"', (comfyui_path() / "comfyui_version.py").read_text()).group(1)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(host) >= as_tuple(floor[2:]), (host, floor)


# -- the archive `comfy node publish` uploads --------------------------------------------------

@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return registry.pack(tmp_path_factory.mktemp("archive") / "node.zip", REPO)


def test_archive_holds_the_runtime_and_no_development_files(archive, capsys):
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        assert z.testzip() is None
    names = {i.filename for i in infos}
    tracked = set(tracked_files())
    mb = archive.stat().st_size / 1e6
    say(capsys, f"archive that `comfy node publish` uploads: {len(names)} files, {mb:.2f} MB "
                f"({sum(i.file_size for i in infos) / 1e6:.2f} MB unpacked); top level: "
                f"{sorted({n.split('/')[0] for n in names})}")
    assert names <= tracked, f"untracked files packed: {sorted(names - tracked)}"
    missing = [f for f in RUNTIME_FILES if f not in names]
    assert not missing, f"runtime files missing from the archive: {missing}"
    for d in RUNTIME_DIRS:
        want = {f for f in tracked if f.startswith(d + "/")}
        assert want, f"nothing tracked under {d}/"
        assert want <= names, f"{d}/ files missing from the archive: {sorted(want - names)}"
    leaked = sorted(n for n in names if n.split("/")[0] in DEV_DIRS or n in DEV_FILES)
    assert not leaked, f"development files in the archive: {leaked}"
    assert mb < MAX_ARCHIVE_MB, f"archive is {mb:.2f} MB"


# -- install routes: git clone, and the archive unpacked ----------------------------------------

def load_in_scratch_comfyui(base: Path) -> dict:
    """Start the host with --base-directory base (whose custom_nodes/ holds the pack)."""
    pack_dir = base / "custom_nodes" / PACK_NAME
    assert (pack_dir / "__init__.py").is_file()
    srv = ComfyServer(base, extra_args=["--base-directory", str(base)])
    srv.start()
    try:
        info = srv.object_info()
        extensions = srv.get("/extensions")
        templates = srv.get("/workflow_templates")
        status, workflow = srv.request("GET", f"/api/workflow_templates/{PACK_NAME}/"
                                              f"{sorted(templates.get(PACK_NAME, ['missing']))[0]}.json")
    finally:
        srv.stop()
    log = srv.log()
    imports = [line for line in log.splitlines() if "seconds" in line and "custom_nodes" in line]
    assert imports == [line for line in imports if str(pack_dir) in line and "IMPORT FAILED" not in line] \
        and imports, "the pack did not load from the scratch custom_nodes/:\n" + log
    missing = [n for n in README_NODES if n not in info]
    assert not missing, f"nodes not registered: {missing}\n{log}"
    assert {info[n]["python_module"] for n in README_NODES} == {f"custom_nodes.{PACK_NAME}"}
    assert f"/extensions/{PACK_NAME}/noise_search.js" in extensions
    shipped = sorted(p.stem for p in (pack_dir / "example_workflows").glob("*.json"))
    assert shipped and sorted(templates.get(PACK_NAME, [])) == shipped
    assert status == 200 and isinstance(workflow, dict) and workflow.get("nodes")
    return info


def test_git_clone_route_loads_in_a_scratch_comfyui(tmp_path):
    """README: cd ComfyUI/custom_nodes && git clone <repo> noise-search && pip install -r ..."""
    dest = tmp_path / "custom_nodes" / PACK_NAME
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    head = lambda p: subprocess.run(["git", "-C", str(p), "rev-parse", "HEAD"],  # noqa: E731
                                    capture_output=True, text=True, check=True).stdout
    assert head(dest) == head(REPO)
    # The requirements step: everything is already satisfied by the environment the host runs
    # in (no index is consulted), so the clone needs nothing beyond requirements.txt.
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                          "-r", str(dest / "requirements.txt")], capture_output=True, text=True)
    assert pip.returncode == 0 and "Would install" not in pip.stdout, pip.stdout + pip.stderr
    load_in_scratch_comfyui(tmp_path)


def test_archive_route_loads_in_a_scratch_comfyui(tmp_path, archive):
    """README: unzip the built archive into ComfyUI/custom_nodes/noise-search."""
    dest = tmp_path / "custom_nodes" / PACK_NAME
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    load_in_scratch_comfyui(tmp_path)
