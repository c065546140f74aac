"""The one loaded model every request shares, and the per-request chats made on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rfsdk import DEFAULT_REFUSAL, GuardedChat, SamplingConfig
from rfsdk.classifiers import ClassifierLike
from rfsdk.convert.adapter import file_sha256
from rfsdk import CrossCheckMode

from .requests import ChatCompletionRequest


class GuardSettings(BaseModel):
    """How every request's reply is guarded (rf-serve's command-line options)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    policy: Literal["halt", "continue"] = "halt"
    threshold: float | None = Field(None, gt=0, le=1)
    refusal: str = DEFAULT_REFUSAL
    classifier: ClassifierLike | None = None
    cross_check: CrossCheckMode = "backstop"


class ServedModel:
    """A GGUF model loaded once; :meth:`chat` makes a fresh :class:`GuardedChat` on it per request.

    Fresh chats keep clients apart (no history, RNG or cancel state is shared) while turns
    on the one ``Llama`` are serialised by its lock.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        guard: GuardSettings,
        *,
        model_id: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> None:
        self.guard = guard
        first = GuardedChat(
            path,
            threshold=guard.threshold,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
            # prompts too: llama-cpp-python would evaluate them on every core, beside the server's other work
            llama_kwargs={"n_threads_batch": n_threads} if n_threads else None,
        )
        self.llm = first.llm
        self.path = Path(first.model_path)
        self.threshold = first.threshold
        self.id = model_id or self.path.stem
        self.sha256 = file_sha256(self.path)
        self.created = int(self.path.stat().st_mtime)

    def chat(self, sampling: SamplingConfig, *, policy: Literal["halt", "continue"] | None = None) -> GuardedChat:
        """A new chat on the shared model with the server's guard settings."""
        g = self.guard
        return GuardedChat(
            self.llm,
            threshold=self.threshold,
            policy=policy or g.policy,
            refusal=g.refusal,
            sampling=sampling,
            classifier=g.classifier,
            cross_check=g.cross_check,
            overflow="error",
        )


def sampling_for(request: ChatCompletionRequest) -> SamplingConfig:
    """The request's sampling settings over rfsdk's defaults."""
    given = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repeat_penalty": request.repeat_penalty,
        "seed": request.seed,
    }
    return SamplingConfig(max_tokens=None, **{k: v for k, v in given.items() if v is not None})
