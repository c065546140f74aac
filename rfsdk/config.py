"""Configuration models: frozen, validated, and refusing bad values with a :class:`ConfigError`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._cross_check import CrossCheckMode
from .errors import ArgumentTypeError, ConfigError
from ._policies import PolicyLike, resolve_policy

DEFAULT_REFUSAL = "I can't help with that."
DEFAULT_THRESHOLD = 0.5
DEFAULT_CHECK_EVERY = 32
DEFAULT_CLASSIFIER_TIMEOUT_S = 10.0

Overflow = Literal["truncate", "error"]
HaltedContext = Literal["omit", "keep"]
"""What the model sees of a halted exchange: "omit" leaves it out, "keep" shows it."""
"""What a turn does when the conversation outgrows the context: leave the oldest messages
out ("truncate") or raise :class:`rfsdk.ContextOverflowError` ("error")."""


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe(type(self).__name__, exc)) from None

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied and validated (the model is frozen)."""
        return type(self)(**{**dict(self), **changes})


def describe(owner: str, exc: ValidationError) -> str:
    """One line per bad field of a pydantic error: which field, what is wrong, the value given."""
    problems = []
    for error in exc.errors(include_url=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):  # a validator's own message names the field
            problems.append(str(cause))
            continue
        field = ".".join(str(part) for part in error["loc"]) or "value"
        problems.append(f"{field}: {error['msg']} (got {error.get('input')!r})")
    return f"{owner}: " + "; ".join(problems)


class SamplingConfig(_Config):
    """How reply tokens are sampled. ``temperature=0`` is greedy decoding.

    ``seed`` makes a chat's sampled replies repeatable: the same seed and the same messages
    give the same conversation. Without one, every chat samples differently. Every number must
    be finite (``temperature=inf`` is refused, not sampled from).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0)
    max_tokens: int | None = Field(1024, gt=0)
    seed: int | None = None


class GuardConfig(_Config):
    """When the <rf> guard fires and what happens then.

    Args:
        threshold: P(<rf>) at or above which the guard fires, in (0, 1]; None: the model's
            calibrated ``rf.threshold`` (0.5 for a model without one).
        flag_sampled: also fire when <rf> would be sampled below ``threshold`` (under the
            chat's sampling settings, as llama.cpp samples). None: not at the model's
            calibrated threshold, yes at any other.
        check_prefill: check a prefilled reply from its real start (P(<rf>) at the reply
            start and after each prefill token counts toward the first reply position);
            False judges only what follows the prefill.
        policy: "halt" (the reply becomes ``refusal``), "continue" (record the flag, keep
            <rf> out of the context, go on), "reflect" (put <rf> into the context and let the
            model go on), or a callable ``Flag -> action``. It is asked at the first step of
            a run of consecutive flagged steps and again at every step of the run whose
            P(<rf>) is above the highest P(<rf>) it was already asked about in the run.
        refusal: the reply text of a halted turn.
        max_reflections: how many times one turn may reflect; later "reflect" answers
            count as "continue".
    """

    threshold: float | None = None
    flag_sampled: bool | None = None
    check_prefill: bool = True
    policy: PolicyLike = "halt"
    refusal: str = DEFAULT_REFUSAL
    max_reflections: int = Field(1, ge=0)

    def resolved_threshold(self, calibrated: float | None) -> float:
        """The threshold in force on a model calibrated at ``calibrated`` (None: uncalibrated)."""
        return self.threshold or calibrated or DEFAULT_THRESHOLD

    def resolved_flag_sampled(self, calibrated: float | None) -> bool:
        """Whether sampled <rf> flags are on for a model calibrated at ``calibrated`` (see the class)."""
        if self.flag_sampled is not None:
            return self.flag_sampled
        return calibrated is None or self.resolved_threshold(calibrated) != calibrated

    @field_validator("threshold", mode="before")
    @classmethod
    def _probability(cls, value: object) -> object:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0):
            raise ConfigError(f"threshold must be in (0, 1], not {value!r}")
        return value

    @field_validator("flag_sampled", mode="before")
    @classmethod
    def _bool_or_none(cls, value: object) -> object:
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"flag_sampled must be True, False or None, not {value!r}")
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _known_policy(cls, value: object) -> object:
        resolve_policy(value)  # type: ignore[arg-type]  # raises ConfigError for anything else
        return value


class CrossCheckConfig(_Config):
    """How a classifier cross-checks the <rf> guard (the classifier itself is the chat's ``classifier``).

    Args:
        mode: "confirm": when <rf> fires, the stream pauses until the classifier has judged
            the reply so far, and the policy acts only if it agrees. "backstop": the
            classifier judges the prompt, the reply so far every ``check_every`` tokens and
            the finished reply; a harmful verdict becomes a flag with
            ``source="classifier"``. "both" does both.
        check_every: reply tokens between stream checks in "backstop" mode (0: none).
        classifier_timeout: seconds a check may take; a later verdict is dropped and reported as
            an ``ErrorEvent`` with ``where="classifier"``.
    """

    mode: CrossCheckMode = "backstop"
    check_every: int = Field(DEFAULT_CHECK_EVERY, ge=0, strict=True)
    classifier_timeout: float = Field(DEFAULT_CLASSIFIER_TIMEOUT_S, gt=0.0)


def merged_guard_config(config: GuardConfig | None, **fields: Any) -> GuardConfig:
    """``config`` (or the defaults) with the ``fields`` that are not None replacing its own."""
    base = checked_instance("guard_config", config, GuardConfig) or GuardConfig()
    return base.replace(**{name: value for name, value in fields.items() if value is not None})


def merged_cross_check_config(cross_check: CrossCheckMode | CrossCheckConfig, **fields: Any) -> CrossCheckConfig:
    """A :class:`CrossCheckConfig` from a mode or a config, with the ``fields`` that are not None replacing its own."""
    if not isinstance(cross_check, CrossCheckConfig):
        if cross_check not in get_args(CrossCheckMode):
            raise ConfigError(f"cross_check must be one of {', '.join(get_args(CrossCheckMode))}, not {cross_check!r}")
        cross_check = CrossCheckConfig(mode=cross_check)
    return cross_check.replace(**{name: value for name, value in fields.items() if value is not None})


def checked_instance(name: str, value: Any, cls: type, *, optional: bool = True) -> Any:
    """``value`` if it is a ``cls`` (or None, if ``optional``); else an :class:`ArgumentTypeError` naming ``name``."""
    if not (value is None and optional) and not isinstance(value, cls):
        raise ArgumentTypeError(f"{name} must be a {cls.__name__}, not {value!r}")
    return value


class CheckedSetting:
    """An attribute whose value ``check`` validates (and may convert) whenever it is set.

    Stored under the attribute's name with a leading underscore; used for the settings of
    :class:`rfsdk.GuardedChat`.
    """

    def __init__(self, check: Callable[[Any], Any]) -> None:
        self._check = check
        self._slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self._slot)

    def __set__(self, obj: object, value: Any) -> None:
        setattr(obj, self._slot, self._check(value))


def check_overflow(value: object) -> Overflow:
    """``value`` if it is an :data:`Overflow` mode, else a :class:`ConfigError`."""
    if value not in get_args(Overflow):
        raise ConfigError(f"overflow must be 'truncate' or 'error', not {value!r}")
    return value  # type: ignore[return-value]


def check_halted_context(value: object) -> HaltedContext:
    """``value`` if it is a :data:`HaltedContext` mode, else a :class:`ConfigError`."""
    if value not in get_args(HaltedContext):
        raise ConfigError(f"halted_context must be 'omit' or 'keep', not {value!r}")
    return value  # type: ignore[return-value]


def check_callback(name: str, value: object) -> Any:
    """``value`` if it is callable or None, else an :class:`ArgumentTypeError` naming ``name``."""
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"{name} must be a function or None, not {value!r}")
    return value
