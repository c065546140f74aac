"""Configuration models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SamplingConfig(BaseModel):
    """How reply tokens are sampled. ``temperature=0`` is greedy decoding.

    ``seed`` makes a chat's sampled replies repeatable: the same seed and the same messages
    give the same conversation. Without one, every chat samples differently.
    """

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0)
    max_tokens: int | None = Field(1024, gt=0)
    seed: int | None = None
