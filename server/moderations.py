"""``POST /v1/moderations``: each input scored by P(<rf>) at the reply start (and the classifier)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rfsdk import ContextOverflowError, Reply, RfsdkError, SamplingConfig

from .client import ClientWatch
from .completions import check_model_name
from .errors import ApiError
from .http import ServerState, check_api_key, read_json
from .queue import ClientGone
from .requests import ModerationRequest, parse
from .shapes import new_id

OPENAI_MODERATION_MODELS = ("omni-moderation-latest", "text-moderation-latest", "text-moderation-stable")
"""Model names OpenAI clients send by default; they mean this server's guard."""


async def moderations(request: Request) -> Response:
    state: ServerState = request.app.state.rf
    check_api_key(request, state.api_key)
    body = parse(ModerationRequest, await read_json(request, state.max_body))
    if body.model not in OPENAI_MODERATION_MODELS:
        check_model_name(state, body.model)
    watch = ClientWatch(request.receive)
    results = []
    try:
        async with state.queue.turn(watch.gone):
            for i, text in enumerate(body.texts):
                if not text.strip():
                    raise ApiError(400, f"input[{i}] is empty; give some text to moderate.", param="input")
                chat = state.model.chat(SamplingConfig(temperature=0.0), policy="continue")
                watch.on_gone(chat.cancel)
                try:
                    reply = await chat.asend(text, max_tokens=1)
                except ContextOverflowError as exc:
                    raise ApiError(400, f"input[{i}]: {exc}", param="input", code="context_length_exceeded") from None
                except RfsdkError as exc:
                    raise ApiError(400, f"input[{i}]: {exc}", param="input") from None
                results.append(_result(reply))
    except ClientGone:
        return Response(status_code=499)
    finally:
        watch.close()
    request_id = new_id("modr")
    _audit(state, request_id, results, body.texts)
    return JSONResponse({"id": request_id, "model": state.model.id, "results": results}, headers={"X-Request-Id": request_id})


def _result(reply: Reply) -> dict[str, Any]:
    """One input's result: category "rf" from the guard, plus the classifier's verdict if one ran."""
    rf_flags = [f for f in reply.flags if f.source != "classifier"]
    categories: dict[str, bool] = {"rf": bool(rf_flags)}
    scores: dict[str, float] = {"rf": reply.prompt_rf_probability}
    for check in reply.checks:
        verdict = check.verdict
        if check.stage == "prompt" and verdict is not None:
            categories["classifier"] = verdict.harmful
            scores["classifier"] = verdict.score
            for name in verdict.categories:
                categories[name] = verdict.harmful
                scores[name] = verdict.score
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in categories},
    }


def _audit(state: ServerState, request_id: str, results: list[dict[str, Any]], texts: list[str]) -> None:
    if state.audit is None:
        return
    for i, (result, text) in enumerate(zip(results, texts)):
        if result["flagged"]:
            state.audit.write(
                {
                    "request_id": request_id,
                    "kind": "moderation",
                    "input_index": i,
                    "model": state.model.id,
                    "model_sha256": state.model.sha256,
                    "threshold": state.model.threshold,
                    "rf_peak": result["category_scores"]["rf"],
                    "categories": result["categories"],
                    "action": "flag",
                    "finish_reason": None,
                },
                text={"input": text},
            )
