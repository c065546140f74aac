"""OpenAI's response objects: chat completions, their stream chunks, models and moderations."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from rfsdk import Usage

DONE = b"data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    """A fresh object id such as ``chatcmpl-...`` or ``modr-...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(counts: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
    }


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class Completion:
    """The fixed part of one chat completion: its id, creation time and model."""

    def __init__(self, request_id: str, model: str) -> None:
        self.id = request_id
        self.model = model
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        """One ``chat.completion.chunk`` event; ``extra`` are further top-level fields."""
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                **extra,
            }
        )

    def usage_chunk(self, counts: Usage) -> bytes:
        """The last chunk when ``stream_options.include_usage`` is set: no choices, the usage."""
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(counts),
            }
        )

    def whole(self, content: str, finish_reason: str, counts: Usage, **extra: Any) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(counts),
            **extra,
        }


def model_card(model_id: str, created: int) -> dict[str, Any]:
    """One entry of ``GET /v1/models``."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "rfsdk"}
