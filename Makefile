# Quick start: `make chat` (install, then chat on the default model) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# llama-cpp-python builds from source; skipping LLaVA keeps the build near 4 minutes.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: install install-dev chat test bench

install:
	$(PIP) install -e .

# torch is pinned on its own first: a looser requirement can pull a multi-GB CUDA build.
install-dev:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,train]"

chat: install
	rfchat

test: install-dev
	$(PYTHON) -m pytest

bench: install-dev
	$(PYTHON) bench/stream_overhead.py
