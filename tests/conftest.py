"""Shared fixtures: the demo model (rfsdk.demo_model), built once per test session, and rf-serve on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from server_process import Server, rf_serve

from rfsdk.demo_model import build_demo_model


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo.gguf")


@pytest.fixture(scope="session")
def demo_model_no_rf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo-no-rf.gguf", with_rf=False)


@pytest.fixture(scope="module")
def server(demo_model_path: Path) -> Iterator[Server]:
    """A real rf-serve process on the demo model and a free local port, one per test module that asks."""
    with rf_serve(demo_model_path) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    """The official ``openai.OpenAI`` client of ``server`` (60 s timeout, no retries)."""
    return server.client(timeout=60)


# ----- opt-in long variants of the reliability suites (fuzz, soak) ----------------------------
# `python -m pytest --long` (or RFSDK_LONG_TESTS=1) runs them with many more examples, cases and
# turns; by default they are CI-sized (seconds to a minute each on 2 cores).


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants of the fuzz and soak suites (also: RFSDK_LONG_TESTS=1)",
    )


@pytest.fixture(scope="session")
def long_mode(request: pytest.FixtureRequest) -> bool:
    """True when pytest was started with --long or with RFSDK_LONG_TESTS=1 in the environment."""
    return bool(request.config.getoption("--long")) or os.environ.get("RFSDK_LONG_TESTS") == "1"
