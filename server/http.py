"""What every endpoint shares: settings, the API key check, the bounded JSON body, the SSE response."""

from __future__ import annotations

import hmac
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .audit import AuditLog
from .errors import ApiError
from .model import ServedModel
from .queue import TurnQueue

DEFAULT_MAX_BODY = 1 << 20


@dataclass
class ServerState:
    """The served model and the server's settings."""

    model: ServedModel
    queue: TurnQueue
    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    audit: AuditLog | None = None
    cors: list[str] = field(default_factory=list)


def check_api_key(request: Request, key: str | None) -> None:
    """Raise a 401 unless ``Authorization: Bearer <key>`` matches (constant-time); no key, no check."""
    if key is None:
        return
    given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, f"Bearer {key}".encode()):
        raise ApiError(
            401,
            "Missing or wrong API key. Send the key rf-serve was started with as 'Authorization: Bearer KEY'.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, at most ``limit`` bytes (413 beyond, 400 if not JSON)."""
    too_big = ApiError(413, f"The request body is larger than {limit} bytes. Send less, or start rf-serve with a larger --max-body.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_big
    except ClientDisconnect:
        raise ApiError(400, "The client disconnected before sending the whole body.") from None
    if not body.strip():
        raise ApiError(400, "The request body is empty. Send a JSON object (Content-Type: application/json).")
    try:
        return json.loads(body, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}).") from None
    except UnicodeDecodeError:
        raise ApiError(400, "The request body is not UTF-8 text. Send JSON encoded as UTF-8.") from None
    except RecursionError:
        raise ApiError(400, "The request body nests JSON too deeply. Send a flat OpenAI request.") from None
    except ValueError as exc:  # NaN / Infinity, or an integer too long to convert
        raise ApiError(400, f"The request body is not valid JSON ({exc}).") from None


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


class EventStream(Response):
    """A ``text/event-stream`` response whose body comes from ``chunks``; ``cleanup`` runs at the end,
    also when the client has gone (then sending fails and the rest of the stream is dropped)."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncGenerator[bytes, None], cleanup: AsyncExitStack, headers: dict[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})  # no Content-Length
        self._chunks = chunks
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away (uvicorn's ClientDisconnected is an OSError)
            pass
        finally:
            await self._chunks.aclose()
            await self._cleanup.aclose()
