# Two entry points for users: `make demo` (the main job) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
COMFYUI_PATH ?= $(CURDIR)/.comfyui/ComfyUI
export COMFYUI_PATH

.PHONY: setup setup-test test demo demo-full study bench lint clean setup-tools release-check

setup:
	@bash scripts/setup.sh

# The tests also drive the editor in Debian's chromium (installed with apt-get if missing).
setup-test:
	@bash scripts/setup.sh --browser

lint: setup
	$(VENV)/bin/ruff check .

test: setup-test setup-tools
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m bench.testbed.demo $(DEMO_ARGS)

# The full scaling study behind the demo (50 samples per class: about 8 minutes on 2 cores before the two selection-rule rows, roughly a third more with them).
demo-full: setup
	$(PY) -m bench.testbed.demo --full $(DEMO_ARGS)

# The long-chain study (16-step candidates, particle steering and tree search against random
# search at equal and half NFEs; about 10 minutes on 2 cores): bench/testbed/study.py.
study: setup
	$(PY) -m bench.testbed.study $(STUDY_ARGS)

bench: setup
	$(PY) bench/perf.py $(BENCH_ARGS)
	$(PY) bench/video.py $(VIDEO_BENCH_ARGS)

clean:
	rm -rf .cache demo_output study_output bench_output test_artifacts

# comfy-cli, the Comfy registry's tool, in its own .venv-tools/ (tests/test_registry.py and
# release-check use it).
setup-tools:
	@bash scripts/setup.sh --tools

# What a maintainer runs before `comfy node publish`, on a committed tree (publish packs the
# git-tracked files as they are on disk; ALLOW_DIRTY=1 skips that check): ruff,
# `comfy node validate` (its warnings count as failures), the archive publish would upload
# (dist/<name>-<version>.zip, size printed), then the fast tests: the registry and
# install-route tests plus the in-process suites that use neither the live-server fixture
# nor the browser (the server, web UI, workflow, reliability, demo and bench tests are left
# to `make test`).
RELEASE_TESTS ?= tests/test_registry.py tests/test_search_algorithms.py tests/test_search_nodes.py \
	tests/test_verifiers.py tests/test_imagereward.py
release-check: setup-tools
	@if [ -z "$(ALLOW_DIRTY)" ] && [ -n "$$(git status --porcelain --untracked-files=normal)" ]; then \
	  git status --short; \
	  echo "release-check: commit (or stash) the changes above first: publish packs the git-tracked files on disk" >&2; \
	  exit 1; fi
	$(VENV)/bin/ruff check .
	$(PY) -m tests.harness.registry validate
	$(PY) -m tests.harness.registry pack
	$(PY) -m pytest $(RELEASE_TESTS) $(PYTEST_ARGS)

# Mutation testing (a developer command, not part of `make test`): mutmut mutates search/ and
# the scoring code (search/scoring.py, verifiers/ensemble.py) and runs the fast host-free
# tests against each mutant; [tool.mutmut] in pyproject.toml says which files and tests. It
# starts from an empty mutants/ so every mutant is judged by the current tests, then lists
# the mutants no test killed (CONTRIBUTING.md, Mutation testing, says why each known one survives).
# `mutmut show <name>` prints a mutant's diff. MUTATION_JOBS: parallel workers.
MUTATION_JOBS ?= 2
.PHONY: mutation
mutation: setup
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS)
	$(VENV)/bin/mutmut results
