"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """A request the server answers with a 4xx (or 5xx) status and an OpenAI-style error body.

    ``message`` says what is wrong and what to do; ``param`` names the request field at fault.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        """The error as OpenAI sends it."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def queue_full(max_queue: int, retry_after_s: int) -> ApiError:
    return ApiError(
        503,
        f"The server is busy: {max_queue} requests are already waiting for the model. "
        f"Retry after {retry_after_s} s, or start rf-serve with a larger --max-queue.",
        type="server_busy",
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )
