"""The model that ``GuardedChat.from_default()`` and ``rfchat`` use when none is named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .model_source import cache_dir

_DEMO_FILE = "rfsdk-demo-v1.gguf"


class DefaultModel(BaseModel):
    """Where the default model is and what it is."""

    model_config = ConfigDict(frozen=True)

    path: Path
    kind: Literal["demo", "trained"]
    description: str


def default_model() -> DefaultModel:
    """Locate (building it on first use) the default guarded model.

    No trained default ships yet, so this is the demo model: a tiny scripted GGUF
    built locally in well under a second, whose guard fires on the word "bomb".
    """
    from .demo_model import DEMO_TRIGGER_WORD, build_demo_model

    path = cache_dir() / "models" / _DEMO_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        build_demo_model(tmp)
        os.replace(tmp, path)
    return DefaultModel(
        path=path,
        kind="demo",
        description=(
            "demo model: a tiny scripted network, not a real language model (no trained "
            f"default ships yet). Its guard fires on the word {DEMO_TRIGGER_WORD!r}."
        ),
    )


def default_model_path() -> Path:
    """Path of the default guarded model (see :func:`default_model`)."""
    return default_model().path
