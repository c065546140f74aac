"""Typed events and results of a guarded chat turn."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

FlagSource = Literal["sampled", "threshold", "prompt", "classifier"]
CheckStage = Literal["confirm", "prompt", "stream", "reply"]
Action = Literal["halt", "continue", "reflect"]
FinishReason = Literal["stop", "length", "halt", "cancelled", "error"]
Role = Literal["system", "user", "assistant"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Verdict(_Frozen):
    """A classifier's judgement of one conversation (a prompt and, if any, a reply).

    ``score`` is the classifier's probability-like score of harm (higher is more
    harmful); ``harmful`` is the score compared with the classifier's threshold;
    ``categories`` are the policy categories it named (e.g. Llama Guard's "S1").
    """

    harmful: bool
    score: float = Field(ge=0.0, le=1.0)
    categories: list[str] = Field(default_factory=list)
    classifier: str = ""


class Flag(_Frozen):
    """One detection of harmful content in a reply.

    ``position`` is the reply step at which it fired (0 is the first reply position,
    before any token is shown); ``probability`` is P(<rf>) there, or the classifier's
    score for a flag with ``source="classifier"``; ``verdict`` is the classifier verdict
    that confirmed an <rf> flag or raised a classifier flag; ``action`` is what the
    policy did about it (None while the policy is still deciding).
    """

    position: int
    probability: float
    source: FlagSource
    text_so_far: str
    verdict: Verdict | None = None
    action: Action | None = None


class Check(_Frozen):
    """One classifier cross-check of a turn and its outcome.

    ``stage``: "confirm" (asked about the <rf> ``flag``), "prompt" (the user message
    alone), "stream" (the reply so far) or "reply" (the finished reply). ``position``
    is the number of reply tokens the classified text covers. ``verdict`` is None when
    the classifier failed or timed out; ``error`` then says why. ``latency_s`` runs
    from the check's submission to its verdict.
    """

    stage: CheckStage
    position: int
    verdict: Verdict | None = None
    error: str | None = None
    latency_s: float = 0.0
    flag: Flag | None = None


class Usage(_Frozen):
    """Token counts of one turn."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Timings(_Frozen):
    """Wall-clock timings of one turn, in seconds."""

    time_to_first_token_s: float | None = None
    total_s: float = 0.0
    tokens_per_s: float = 0.0


class Message(_Frozen):
    """One message of the conversation history."""

    role: Role
    content: str
    flagged: bool = False
    finish_reason: FinishReason | None = None


class Reply(_Frozen):
    """The result of one turn: what the user saw and what the guard found.

    ``prompt_rf_probability`` is P(<rf>) at the first reply position (a score of the
    request alone; for a prefilled reply, at its start before the prefill unless the chat's
    ``check_prefill`` is off); ``max_rf_probability`` is the largest P(<rf>) over the whole
    reply.
    ``checks`` are the classifier cross-checks of the turn (empty without a classifier);
    an <rf> flag that the classifier rejected is in ``checks``, not in ``flags``.
    """

    text: str
    flagged: bool
    flags: list[Flag] = Field(default_factory=list)
    prompt_rf_probability: float = 0.0
    max_rf_probability: float = 0.0
    finish_reason: FinishReason
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    checks: list[Check] = Field(default_factory=list)
    error: str | None = None


class TokenEvent(_Frozen):
    """A piece of reply text shown to the user."""

    kind: Literal["token"] = "token"
    text: str
    token_id: int
    position: int
    rf_probability: float


class FlagEvent(_Frozen):
    """The guard fired."""

    kind: Literal["flag"] = "flag"
    flag: Flag


class NoticeEvent(_Frozen):
    """Something the user should know that is not an error (e.g. history truncated)."""

    kind: Literal["notice"] = "notice"
    message: str


class VerdictEvent(_Frozen):
    """A classifier cross-check came back with a verdict."""

    kind: Literal["verdict"] = "verdict"
    check: Check


ErrorSource = Literal["policy", "on_token", "on_flag", "guard", "classifier", "app"]
"""Where an error happened: in a turn (the first five) or, "app", in the application around
the chat (e.g. a command it could not run), for apps that report their own errors as events."""


class ErrorEvent(_Frozen):
    """Something failed: the policy, a callback (``on_token``, ``on_flag``), the guard itself
    (an internal fault while watching the logits) or the classifier. After a classifier
    failure the turn goes on, guarded by <rf> alone; after any other it ends cleanly. rfsdk
    itself never uses ``where="app"``: it is for the application's own errors."""

    kind: Literal["error"] = "error"
    message: str
    where: ErrorSource


class EndEvent(Reply):
    """The last event of every turn; carries the whole :class:`Reply`."""

    kind: Literal["end"] = "end"

    def reply(self) -> Reply:
        return Reply(**self.model_dump(exclude={"kind"}))


Event = Annotated[
    Union[TokenEvent, FlagEvent, VerdictEvent, NoticeEvent, ErrorEvent, EndEvent],
    Field(discriminator="kind"),
]
