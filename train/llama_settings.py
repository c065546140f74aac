"""How the llama.cpp steps of a training command run (threads, GPU offload), set once per command.

``rf-train fit``, ``tune`` and ``refit-row`` run llama.cpp in several places (the base's own
answers, calibration); the command sets these settings around its work and every such step
that is not given its own reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict, Field


class LlamaSettings(BaseModel):
    """llama.cpp settings for the training commands' steps."""

    model_config = ConfigDict(frozen=True)

    n_threads: int | None = Field(None, gt=0, description="CPU threads (None: llama.cpp's default).")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all).")


_CURRENT: ContextVar[LlamaSettings] = ContextVar("rfsdk_train_llama_settings", default=LlamaSettings())


def llama_settings() -> LlamaSettings:
    """The settings in force (the defaults outside :func:`using_llama_settings`)."""
    return _CURRENT.get()


@contextmanager
def using_llama_settings(settings: LlamaSettings) -> Iterator[None]:
    """Run the llama.cpp steps inside the block with ``settings``."""
    token = _CURRENT.set(settings)
    try:
        yield
    finally:
        _CURRENT.reset(token)
