"""The Comfy registry's tooling (comfy-cli in .venv-tools/) run on this repository, offline.

Used by tests/test_registry.py and `make release-check`:

    python -m tests.harness.registry validate      # `comfy node validate`, warnings are failures
    python -m tests.harness.registry pack [PATH]   # the archive `comfy node publish` uploads

`comfy node validate` exits 0 even when it prints warnings (an ignored classifier, an
unparsable `requires-comfyui`, exec/eval found by its ruff rules), so `validate` fails on
any of them. `pack` runs comfy-cli's own `comfy node pack` command function (the packing
`comfy node publish` uses: git-tracked files minus .comfyignore, plus [tool.comfy] includes)
with the archive written to PATH instead of ./node.zip. Telemetry is switched off and
comfy-cli's config lives in a temporary HOME, so nothing leaves the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the copy pip vendors
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
TOOLS_VENV = Path(os.environ.get("NOISE_SEARCH_TOOLS_VENV") or REPO / ".venv-tools")
COMFY = TOOLS_VENV / "bin" / "comfy"
TOOLS_PY = TOOLS_VENV / "bin" / "python"
VALIDATE_OK = "All validation checks passed successfully"

# Runs in the tools venv; argv[1] is the archive path. The same body as `comfy node pack`,
# whose only difference is the hard-coded ./node.zip.
_PACK = """
import os, sys
import comfy_cli.command.custom_nodes.command as cmd
out = os.path.abspath(sys.argv[1])
cmd.NODE_ZIP_FILENAME = out
cmd.pack()
if not os.path.isfile(out):
    sys.exit(f"comfy-cli's pack did not write {out}: has its command changed?")
"""


class RegistryCheckError(RuntimeError):
    pass


def _require_tools() -> None:
    if not COMFY.is_file():
        raise RegistryCheckError(f"comfy-cli is missing ({COMFY}): run `make setup-tools`")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="comfy-cli-home-") as home:
        env = dict(os.environ, HOME=home, DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1",
                   NO_COLOR="1", TERM="dumb", PYTHONIOENCODING="utf-8")
        env.pop("XDG_CONFIG_HOME", None)
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def comfy_cli_version() -> str:
    _require_tools()
    out = subprocess.run([str(TOOLS_PY), "-c", "import comfy_cli, importlib.metadata as m; "
                          "print(m.version('comfy-cli'))"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def validate(path: Path = REPO) -> str:
    """Run `comfy node validate` in `path`; return its output, raise on failure or warnings."""
    _require_tools()
    proc = _run([str(COMFY), "node", "validate"], Path(path))
    out = proc.stdout + proc.stderr
    problems = [line for line in out.splitlines()
                if any(w in line for w in ("Warning", "warning", "Error", "error", "Security warnings"))]
    if proc.returncode != 0 or VALIDATE_OK not in out or problems:
        raise RegistryCheckError(f"`comfy node validate` failed (exit {proc.returncode}):\n{out}")
    return out


def pack(dest: Path, path: Path = REPO) -> Path:
    """Build the archive `comfy node publish` would upload from `path`, at `dest`."""
    _require_tools()
    dest = Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    proc = _run([str(TOOLS_PY), "-c", _PACK, str(dest)], Path(path))
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or not dest.is_file():
        raise RegistryCheckError(f"packing failed (exit {proc.returncode}):\n{out}")
    if "not found" in out.lower() or "warning" in out.lower():
        raise RegistryCheckError(f"packing warned:\n{out}")
    return dest


def project() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def default_archive() -> Path:
    p = project()["project"]
    return REPO / "dist" / f"{p['name']}-{p['version']}.zip"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("validate", "pack"):
        print(__doc__)
        return 2
    try:
        if argv[0] == "validate":
            print(validate().rstrip())
            print(f"(comfy-cli {comfy_cli_version()})")
        else:
            import zipfile

            dest = pack(Path(argv[1]) if len(argv) > 1 else default_archive())
            with zipfile.ZipFile(dest) as z:
                infos = z.infolist()
            raw = sum(i.file_size for i in infos)
            print(f"archive: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}: "
                  f"{len(infos)} files, {dest.stat().st_size / 1e6:.2f} MB "
                  f"({raw / 1e6:.2f} MB unpacked)")
    except RegistryCheckError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
