# Two entry points for users: `make demo` (the main job) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
COMFYUI_PATH ?= $(CURDIR)/.comfyui/ComfyUI
export COMFYUI_PATH

.PHONY: setup setup-test test demo bench lint clean

setup:
	@bash scripts/setup.sh

# The tests also drive the editor in Debian's chromium (installed with apt-get if missing).
setup-test:
	@bash scripts/setup.sh --browser

lint: setup
	$(VENV)/bin/ruff check .

test: setup-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m bench.testbed.demo $(DEMO_ARGS)

bench: setup
	$(PY) bench/perf.py $(BENCH_ARGS)

clean:
	rm -rf .cache demo_output bench_output test_artifacts
