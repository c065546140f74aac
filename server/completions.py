"""``POST /v1/chat/completions``: a guarded reply, whole or streamed."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rfsdk import ContextOverflowError, RfsdkError

from .client import ClientWatch
from .errors import ApiError
from .http import EventStream, ServerState, check_api_key, read_json
from .model import sampling_for
from .queue import ClientGone
from .requests import ChatCompletionRequest, parse
from .shapes import DONE, Completion, new_id, sse
from .turn import TurnEnd, conversation, guard_report, run_turn


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.rf
    check_api_key(request, state.api_key)
    body = parse(ChatCompletionRequest, await read_json(request, state.max_body))
    check_model_name(state, body.model)
    talk = conversation(body.messages)
    chat = state.model.chat(sampling_for(body))
    shape = Completion(new_id("chatcmpl"), state.model.id)
    cleanup = AsyncExitStack()
    try:
        watch = ClientWatch(request.receive)
        cleanup.callback(watch.close)
        await cleanup.enter_async_context(state.queue.turn(watch.gone))
        turn = run_turn(chat, talk, max_tokens=body.token_limit, stops=body.stops, watch=watch)
        cleanup.push_async_callback(turn.aclose)
        first = await _first(turn)
    except ClientGone:
        await cleanup.aclose()
        return Response(status_code=499)  # nobody reads it
    except BaseException:
        await cleanup.aclose()
        raise
    headers = {"X-Request-Id": shape.id}
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return EventStream(_chunks(state, shape, first, turn, talk.message, include_usage), cleanup, headers)
    async with cleanup:
        pieces = []
        item = first
        while not isinstance(item, TurnEnd):
            pieces.append(item)
            item = await anext(turn)
    if item.finish_reason == "cancelled":
        return Response(status_code=499)
    if item.finish_reason == "error":
        raise ApiError(500, f"The guard failed, so the reply was stopped: {item.end.error}", type="server_error")
    audit(state, shape.id, item, talk.message)
    content = state.model.guard.refusal if item.finish_reason == "content_filter" else "".join(pieces)
    extra = {"rf": guard_report(item.end, state.model.threshold)}
    return JSONResponse(shape.whole(content, item.finish_reason, item.end.usage, **extra), headers=headers)


def check_model_name(state: ServerState, name: str | None) -> None:
    """404 unless ``name`` is the served model's id."""
    if name is not None and name != state.model.id:
        raise ApiError(
            404,
            f"The model {name!r} is not served here. This server serves {state.model.id!r} (GET /v1/models).",
            param="model",
            code="model_not_found",
        )


async def _first(turn: AsyncIterator[str | TurnEnd]) -> str | TurnEnd:
    """The turn's first item; rfsdk's errors about the request become 400s before any reply is sent."""
    try:
        return await anext(turn)
    except ContextOverflowError as exc:
        raise ApiError(400, f"{exc} (rf-serve: --n-ctx)", param="messages", code="context_length_exceeded") from None
    except RfsdkError as exc:
        raise ApiError(400, str(exc), param="messages") from None


async def _chunks(
    state: ServerState,
    shape: Completion,
    first: str | TurnEnd,
    turn: AsyncIterator[str | TurnEnd],
    message: str,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    usage_field = {"usage": None} if include_usage else {}
    yield shape.chunk({"role": "assistant", "content": ""}, **usage_field)
    item = first
    while not isinstance(item, TurnEnd):
        yield shape.chunk({"content": item}, **usage_field)
        item = await anext(turn)
    if item.finish_reason == "cancelled":
        return
    if item.finish_reason == "error":
        yield sse({"error": {"message": f"The guard failed, so the reply was stopped: {item.end.error}",
                             "type": "server_error", "param": None, "code": None}})
        yield DONE
        return
    audit(state, shape.id, item, message)
    delta = {"content": state.model.guard.refusal} if item.finish_reason == "content_filter" else {}
    yield shape.chunk(delta, item.finish_reason, rf=guard_report(item.end, state.model.threshold), **usage_field)
    if include_usage:
        yield shape.usage_chunk(item.end.usage)
    yield DONE


def audit(state: ServerState, request_id: str, item: TurnEnd, message: str) -> None:
    """One audit record for a turn with a flag (when --audit-log is set)."""
    if state.audit is None or not item.end.flags:
        return
    report = guard_report(item.end, state.model.threshold)
    state.audit.write(
        {
            "request_id": request_id,
            "kind": "chat",
            "model": state.model.id,
            "model_sha256": state.model.sha256,
            "threshold": report["threshold"],
            "rf_peak": item.end.max_rf_probability,
            "prompt_rf_probability": item.end.prompt_rf_probability,
            "flags": report["flags"],
            "action": report["action"],
            "finish_reason": item.finish_reason,
        },
        text={"prompt": message, "reply": item.end.text},
    )
