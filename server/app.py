"""The ASGI application: routes, CORS and OpenAI-style errors for everything that goes wrong."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .completions import chat_completions
from .errors import ApiError
from .http import ServerState, check_api_key
from .moderations import moderations
from .shapes import model_card

log = logging.getLogger("rfsdk.server")


def create_app(state: ServerState) -> Starlette:
    """The rf-serve application over ``state``'s model and settings."""
    middleware = []
    if state.cors:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=state.cors,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["X-Request-Id", "Retry-After"],
            )
        )
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/moderations", moderations, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.rf = state
    return app


async def list_models(request: Request) -> Response:
    state: ServerState = request.app.state.rf
    check_api_key(request, state.api_key)
    return JSONResponse({"object": "list", "data": [model_card(state.model.id, state.model.created)]})


async def get_model(request: Request) -> Response:
    state: ServerState = request.app.state.rf
    check_api_key(request, state.api_key)
    name = request.path_params["model_id"]
    if name != state.model.id:
        raise ApiError(404, f"The model {name!r} is not served here. This server serves {state.model.id!r}.",
                       param="model", code="model_not_found")
    return JSONResponse(model_card(state.model.id, state.model.created))


async def health(request: Request) -> Response:
    """Liveness and load: no API key needed, nothing about any client."""
    state: ServerState = request.app.state.rf
    return JSONResponse(
        {"status": "ok", "model": state.model.id, "busy": state.queue.busy, "waiting": state.queue.waiting}
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"There is no {request.url.path} here. rf-serve answers /v1/chat/completions, /v1/moderations, /v1/models and /health."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = exc.detail
    return ApiError(exc.status_code, message, headers=dict(exc.headers or {})).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiError(
        500, "The server failed on this request (a bug in rf-serve; its log has the details).", type="server_error"
    ).response()
