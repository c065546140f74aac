"""Shared fixtures: the demo model (rfsdk.demo_model), built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfsdk.demo_model import build_demo_model


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo.gguf")


@pytest.fixture(scope="session")
def demo_model_no_rf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo-no-rf.gguf", with_rf=False)
