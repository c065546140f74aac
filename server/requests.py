"""The request bodies rf-serve accepts, validated as OpenAI does (with clear messages)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from .errors import ApiError

MAX_STOPS = 4
MAX_MODERATION_INPUTS = 32

Number = StrictFloat | StrictInt


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _text_of(content: Any) -> Any:
    """A message's content as text: a string, or a list of text parts joined (other parts refused)."""
    if not isinstance(content, list):
        return content
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(
                f"has a part {i} of type {kind!r}; only text parts {{'type': 'text', 'text': '...'}} are supported "
                "(this model reads text only)"
            )
        texts.append(part["text"])
    return "".join(texts)


class ChatMessage(_Request):
    """One message of ``messages``: "developer" counts as "system"."""

    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr
    name: StrictStr | None = None
    refusal: StrictStr | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, value: Any) -> Any:
        return _text_of(value)


class StreamOptions(_Request):
    include_usage: StrictBool = False


def _refuse(name: str, why: str):  # noqa: ANN202 - a pydantic validator
    def check(cls, value: Any) -> Any:  # noqa: ANN001
        if value not in (None, False, 0, [], {}, "none", {"type": "text"}):
            raise ValueError(f"is not supported ({why}); leave it out")
        return value

    return field_validator(name)(classmethod(check))


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``. Fields that would change the meaning of a request and
    that this server cannot honour are refused, not ignored."""

    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, gt=0, le=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    n: StrictInt | None = None
    # llama.cpp's sampling extensions
    top_k: StrictInt | None = Field(None, ge=0)
    min_p: Number | None = Field(None, ge=0, le=1)
    repeat_penalty: Number | None = Field(None, gt=0)
    # accepted, no effect on the reply
    user: StrictStr | None = None
    metadata: dict[str, StrictStr] | None = None
    store: StrictBool | None = None
    service_tier: StrictStr | None = None
    parallel_tool_calls: StrictBool | None = None
    # refused unless they are the default
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    response_format: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None

    _tools = _refuse("tools", "this server does not call tools")
    _tool_choice = _refuse("tool_choice", "this server does not call tools")
    _functions = _refuse("functions", "this server does not call functions")
    _function_call = _refuse("function_call", "this server does not call functions")
    _logit_bias = _refuse("logit_bias", "biasing tokens could switch off the guard's <rf> token")
    _logprobs = _refuse("logprobs", "this server does not return log probabilities")
    _top_logprobs = _refuse("top_logprobs", "this server does not return log probabilities")
    _response_format = _refuse("response_format", "this server writes plain text only")
    _presence_penalty = _refuse("presence_penalty", "use repeat_penalty (llama.cpp's) instead")
    _frequency_penalty = _refuse("frequency_penalty", "use repeat_penalty (llama.cpp's) instead")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("is not supported above 1 (one reply per request, n=1); send several requests instead")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"holds {len(stops)} sequences; at most {MAX_STOPS} are allowed")
        if any(not s for s in stops):
            raise ValueError("holds an empty sequence; remove it")
        return value

    @property
    def stops(self) -> list[str]:
        """The stop sequences as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens``, else ``max_tokens`` (the older name)."""
        return self.max_completion_tokens or self.max_tokens


class ModerationRequest(_Request):
    """``POST /v1/moderations``: one text or a list of texts (or of text parts)."""

    input: StrictStr | list[Any]
    model: StrictStr | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("is an empty list; give at least one text")
            if len(value) > MAX_MODERATION_INPUTS:
                raise ValueError(f"holds {len(value)} texts; at most {MAX_MODERATION_INPUTS} are allowed per request")
            if all(isinstance(v, dict) for v in value):
                return [_text_of(value)]
            if not all(isinstance(v, str) for v in value):
                raise ValueError("must be a string, a list of strings or a list of text parts")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def parse(model: type[BaseModel], data: Any) -> Any:
    """``data`` validated as ``model``, or an :class:`ApiError` (400) naming the first fault."""
    if not isinstance(data, dict):
        raise ApiError(400, f"The request body must be a JSON object, not a JSON {_json_kind(data)}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc) from None


def _describe(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = _path(first["loc"])
    kind = first["type"]
    if kind == "value_error":
        message = f' {first["ctx"]["error"]}'
    elif kind == "extra_forbidden":
        message = " is not a field this server knows; remove it"
    elif kind == "missing":
        message = " is required"
    else:
        message = f": {first['msg'][0].lower()}{first['msg'][1:]} (got {_short(first.get('input'))})"
    others = len({_path(e["loc"]) for e in errors} - {param})
    more = f" ({others} more fields have problems)" if others else ""
    return ApiError(400, f"Invalid request: {param}{message}.{more}", param=param)


def _path(loc: tuple) -> str:
    # pydantic names a union's branch in the path (e.g. "str" or "list[...]"): leave it out
    parts = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool")))]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
