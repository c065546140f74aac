# Quick start: `make chat` (install, then chat on the default model) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# llama-cpp-python builds from source; skipping LLaVA keeps the build near 4 minutes.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: install install-dev chat test bench

install:
	$(PIP) install -e .

install-dev:
	$(PIP) install -e ".[dev]"

chat: install
	rfchat

test: install-dev
	$(PYTHON) -m pytest

bench: install-dev
	$(PYTHON) bench/stream_overhead.py
