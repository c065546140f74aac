"""The records of the red-flag dataset: examples, chat turns, and where each source came from."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .data_text import normalise

Label = Literal["harmful", "benign"]
Kind = Literal[
    "harmful_prompt",
    "harmful_answer",
    "refused_answer",
    "benign_answer",
    "benign_chat",
    "over_refusal",
    "everyday_request",
    "contrastive_benign",
    "contrastive_harmful",
]
KIND_DESCRIPTIONS: dict[str, str] = {
    "harmful_prompt": "a harmful request without an answer (label harmful)",
    "harmful_answer": "a harmful request with a human- or author-labelled harmful answer (label harmful)",
    "refused_answer": "a harmful request with a human-labelled harmless answer, mostly refusals (label benign)",
    "benign_answer": "a benign request with a benign answer (label benign)",
    "benign_chat": "a benign multi-turn chat; prompt/answer are its first exchange (label benign)",
    "over_refusal": "an edgy-but-benign request a model should not refuse (label benign)",
    "everyday_request": "a short everyday chat request, generated in the repository (label benign)",
    "contrastive_benign": "an edgy-but-benign request by XSTest's kinds, generated in the repository (label benign)",
    "contrastive_harmful": "a harmful request of the same shape as contrastive benign ones (label harmful)",
}


class Turn(BaseModel):
    """One message of a multi-turn chat."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class Example(BaseModel):
    """One dataset record.

    ``label`` is the label of the answer when there is one, otherwise of the prompt.
    ``id`` is a stable hash of the source and the normalised prompt (and answer, since one
    source can hold several answers to the same prompt).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    prompt: str = Field(min_length=1)
    answer: str | None = None
    label: Label
    kind: Kind
    source: str
    turns: tuple[Turn, ...] | None = None
    category: str | None = None
    """The source's own category of the example (a domain, a contrastive kind), where it has one."""

    @classmethod
    def create(
        cls,
        *,
        source: str,
        prompt: str,
        label: Label,
        kind: Kind,
        answer: str | None = None,
        turns: tuple[Turn, ...] | None = None,
        category: str | None = None,
    ) -> Example:
        """Build an example, computing its id from the source, prompt and answer."""
        prompt = prompt.strip()
        answer = answer.strip() if answer is not None else None
        key = "\x1f".join((source, normalise(prompt), normalise(answer or "")))
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
        return cls(id=digest, prompt=prompt, answer=answer, label=label, kind=kind, source=source, turns=turns,
                   category=category)


class SourceInfo(BaseModel):
    """Provenance of one source: the package it ships in, the files read, the licence, the counts."""

    model_config = ConfigDict(extra="forbid")

    name: str
    distribution: str
    version: str
    files: list[str]
    licence: str
    counts: dict[str, int] = Field(default_factory=dict)
