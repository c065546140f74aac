"""The turn engine: one guarded turn, from the prompt to the :class:`EndEvent`.

:class:`TurnEngine` is the single streaming engine behind ``GuardedChat.stream``, ``send``,
``astream`` and ``asend``. It builds the prompt, runs llama.cpp's generation with the
:class:`~rfsdk._guard.TurnGuard` watching every step, hands tokens, flags and classifier
verdicts out as events, and acts on the policy's decisions. The caller holds the model's
lock for the whole turn.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp

from ._turn_state import TurnState
from .classifiers.base import Classifier
from .config import CrossCheckConfig, GuardConfig, Overflow, SamplingConfig
from ._cross_check import TurnChecks
from .errors import ConfigError, EmptyMessageError
from .events import (
    Check,
    EndEvent,
    ErrorEvent,
    Event,
    Flag,
    FlagEvent,
    Message,
    NoticeEvent,
    Reply,
    TokenEvent,
    VerdictEvent,
)
from ._guard import TurnGuard
from ._policies import PolicyFn
from ._prefill_check import opening_probabilities
from ._prompt import PromptBuilder, check_text, fit_prompt, token_piece

MIN_REPLY_ROOM = 128
"""Prompt fitting keeps this many context tokens free for the reply (fewer if max_tokens is smaller)."""

Outcome = Literal["next", "end", "restart"]
"""What a turn does after a step: go on ("next"), stop (the reply is over; ``finish`` says
why), or restart generation from the prompt and the reply so far ("restart": the reply's
tokens changed, e.g. a reflection put <rf> into them; llama.cpp's cache is reused)."""

OnToken = Callable[[TokenEvent], None]
OnFlag = Callable[[Flag], None]
Record = Callable[[Message, Reply], None]
"""Called once when a turn ends, however it ends, with the user message and the reply."""


@dataclass(frozen=True)
class TurnSettings:
    """A chat's settings as one turn reads them when it starts."""

    guard: GuardConfig
    threshold: float
    """The guard's threshold, resolved (the model's calibrated value if ``guard.threshold`` is None)."""
    flag_sampled: bool
    """``guard.flag_sampled``, resolved."""
    policy: PolicyFn
    sampling: SamplingConfig
    system: str | None
    overflow: Overflow
    classifier: Classifier | None
    cross_check: CrossCheckConfig
    on_token: OnToken | None
    on_flag: OnFlag | None


def check_turn_args(message: object, prefill: object, max_tokens: object) -> None:
    """Refuse what a turn cannot answer, before it takes the model."""
    if not check_text("message", message).strip():
        raise EmptyMessageError("The message is empty. Type something to send.")
    check_text("prefill", prefill)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens must be a whole number of tokens >= 1, not {max_tokens!r}")


class ModelRunner:
    """A loaded model as turns drive it: prompt building, seeded generation, token pieces."""

    def __init__(self, llm: llama_cpp.Llama, prompt: PromptBuilder, rf_token_id: int | None, seed: int | None) -> None:
        self.llm = llm
        self.prompt = prompt
        self.rf_token_id = rf_token_id
        self.rng = random.Random(seed)
        self._vocab = llm._model.vocab
        self._pieces: dict[int, bytes] = {}
        eos = llm.token_eos()
        self.stop_token = eos if eos >= 0 else (rf_token_id or 0)
        """The token the guard forces to end a reply (EOS, or <rf> for a model without one)."""

    def generate(self, tokens: list[int], guard: TurnGuard, sampling: SamplingConfig) -> Generator[int, None, None]:
        """llama.cpp's generation from ``tokens``, with ``guard`` as its logits processor."""
        # llama-cpp-python seeds a new sampler from the Llama's seed on every generate() call
        # (and treats seed 0 as "random"). A seed drawn from the chat's own RNG each time keeps
        # turns and restarts from replaying one sequence, and SamplingConfig.seed repeatable.
        self.llm.set_seed(self.rng.randrange(llama_cpp.LLAMA_DEFAULT_SEED))
        return self.llm.generate(
            tokens,
            temp=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            logits_processor=llama_cpp.LogitsProcessorList([guard]),
        )

    def ends_reply(self, token: int) -> bool:
        """Whether ``token`` ends the reply (an end-of-generation token other than <rf>)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token)) and token != self.rf_token_id

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` renders as (cached)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self.llm, token)
        return piece


class TurnEngine:
    """Runs one turn: :meth:`events` yields its events, the :class:`EndEvent` last.

    Args:
        model: the chat's model.
        settings: the chat's settings, read when the turn starts.
        history: the conversation before this turn.
        pool: the worker threads classifiers run in (None without a classifier).
        cancel: set from any thread to end the turn within one token.
        record: hears the user message and the reply once the turn has ended, however it
            ended (the chat adds them to its history).
    """

    def __init__(
        self,
        model: ModelRunner,
        settings: TurnSettings,
        history: Sequence[Message],
        *,
        pool: concurrent.futures.Executor | None,
        cancel: threading.Event,
        record: Record,
    ) -> None:
        self._model = model
        self._llm = model.llm
        self._rf = model.rf_token_id
        self._settings = settings
        self._history = history
        self._pool = pool
        self._cancel = cancel
        self._record = record

    def events(self, message: str, prefill: str, max_tokens: int | None) -> Iterator[Event]:
        """Answer ``message`` (the reply starts with ``prefill``; at most ``max_tokens`` tokens).

        Closing the generator (the caller stopped reading, or ``cancel()`` ended a held turn)
        at any event before the end still records the turn, as cancelled unless it had
        already been halted or failed.
        """
        s, llm, cancel = self._settings, self._llm, self._cancel
        started = time.perf_counter()
        user = Message(role="user", content=message)
        limit = max_tokens or s.sampling.max_tokens
        prompt, dropped = fit_prompt(
            self._model.prompt,
            n_ctx=llm.n_ctx(),
            system=s.system,
            history=self._history,
            user=user,
            prefill=prefill,
            reply_room=min(limit or MIN_REPLY_ROOM, MIN_REPLY_ROOM),
            overflow=s.overflow,
        )
        budget = llm.n_ctx() - len(prompt)
        if limit is not None:
            budget = min(budget, limit)
        classifier = s.classifier
        confirm = classifier is not None and s.cross_check.mode in ("confirm", "both")
        backstop = classifier is not None and s.cross_check.mode in ("backstop", "both")
        guard = TurnGuard(
            rf_id=self._rf,
            stop_id=self._model.stop_token,
            threshold=s.threshold,
            flag_sampled=s.flag_sampled,
            policy=s.policy,
            sampling=s.sampling,
            rng=self._model.rng,
            cancel=cancel,
            max_reflections=s.guard.max_reflections,
            defer=confirm,
            penalty_window=llm.last_n_tokens_size,
        )
        guard.text_so_far = prefill
        checks = None
        if classifier is not None:
            assert self._pool is not None, "a classifier needs the pool"
            checks = TurnChecks(classifier, self._pool, message, s.cross_check.classifier_timeout)
            if backstop:
                checks.submit("prompt", 0, "")
        turn = self._turn = TurnState(
            user=user,
            prompt=prompt,
            budget=budget,
            guard=guard,
            checks=checks,
            started=started,
            text=prefill,
            next_stream_check=s.cross_check.check_every if backstop else 0,
        )
        try:
            if dropped:
                yield NoticeEvent(
                    message=f"The conversation is longer than the context ({llm.n_ctx()} "
                    f"tokens): the oldest {dropped} messages were left out of this turn."
                )
            if cancel.is_set():  # cancelled while queued: the prompt is not even evaluated
                turn.finish = "cancelled"
            else:
                yield from self._generate(prefill, backstop)
        except GeneratorExit:
            # The caller stopped reading: the turn counts as cancelled, unless it had already
            # failed or been halted (say, the caller stopped at the halting flag; a flag is in
            # turn.flags before its event is yielded).
            if turn.finish == "error" or turn.guard.stop_reason == "error":
                guard_error = turn.guard.error.message if turn.guard.error else None
                turn.finish, turn.error = "error", turn.error or guard_error
            else:
                turn.finish = "halt" if turn.halted else "cancelled"
            self._finish()
            raise
        yield EndEvent(**self._finish().model_dump())
        if guard.interrupt is not None:  # e.g. Ctrl-C inside the policy: the turn is closed, now pass it on
            raise guard.interrupt

    def _generate(self, prefill: str, backstop: bool) -> Generator[Event, None, None]:
        """The reply after ``prefill``: llama.cpp's generation with the guard on every step,
        restarted after a reflection; ``backstop`` has the classifier judge the finished reply."""
        s, llm, turn = self._settings, self._llm, self._turn
        if prefill and s.guard.check_prefill and self._rf is not None:
            prefill_length = len(self._model.prompt.text_tokens(prefill))
            turn.guard.open_with(opening_probabilities(llm, turn.prompt, prefill_length, self._rf, cancel=self._cancel))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = self._model.generate(turn.prompt, turn.guard, s.sampling)
        try:
            while True:
                outcome: Outcome = "end"
                for token in tokens:
                    outcome = yield from self._step(token, decoder)
                    if outcome != "next" or turn.generated >= turn.budget:
                        break
                if outcome != "restart" and backstop and turn.finish in ("stop", "length"):
                    outcome = yield from self._check_reply()
                if outcome != "restart":
                    break
                turn.finish = "length"  # until the restarted generation says otherwise
                tokens.close()
                tokens = self._model.generate(turn.prompt + turn.ids, turn.guard, s.sampling)
        finally:
            tokens.close()
        turn.text += decoder.decode(b"", final=True)

    # Each step below yields events and returns the turn's Outcome.

    def _step(self, token: int, decoder: codecs.IncrementalDecoder) -> Generator[Event, None, Outcome]:
        turn = self._turn
        guard = turn.guard
        outcome = yield from self._emit_flags()
        if outcome != "next":
            return outcome
        if guard.stop_reason:
            turn.finish = guard.stop_reason
            if guard.error:
                turn.error = guard.error.message
                yield guard.error
            return "end"
        if guard.deferred:
            # <rf> fired at this step and was masked; `token` was sampled in its place and is
            # shown only if the classifier rejects the flag or the policy continues.
            flag = guard.deferred.pop(0)
            outcome = yield from self._confirm(flag)
            if outcome != "next":
                return outcome
        turn.generated += 1
        if self._model.ends_reply(token):
            turn.finish = "stop"
            return "end"
        turn.ids.append(token)
        if token != self._rf:
            piece = decoder.decode(self._model.piece(token))
            if piece:
                event = turn.show(piece, token)
                # Callbacks run before the event is handed on, so they fire even if the
                # caller stops reading at it.
                turn.error = _call(self._settings.on_token, event, "on_token")
                yield event
                if turn.error:
                    yield ErrorEvent(message=turn.error, where="on_token")
                    turn.finish = "error"
                    return "end"
        if turn.checks is None:
            return "next"
        for check in turn.checks.ready():
            outcome = yield from self._on_check(check)
            if outcome != "next":
                return outcome
        if turn.next_stream_check and len(turn.ids) >= turn.next_stream_check and not turn.checks.running("stream"):
            turn.checks.submit("stream", len(turn.ids), turn.text)
            turn.next_stream_check = len(turn.ids) + self._settings.cross_check.check_every
        return "next"

    def _emit_flags(self) -> Generator[Event, None, Outcome]:
        turn = self._turn
        for flag in turn.guard.take_flags():
            turn.flags.append(flag)
            turn.error = _call(self._settings.on_flag, flag, "on_flag")
            yield FlagEvent(flag=flag)
            if turn.error:
                yield ErrorEvent(message=turn.error, where="on_flag")
                turn.finish = "error"
                return "end"
        return "next"

    def _act(self, flag: Flag) -> Generator[Event, None, Outcome]:
        turn = self._turn
        room = len(turn.prompt) + len(turn.ids) + 1 < self._llm.n_ctx() and turn.generated < turn.budget
        action = turn.guard.decide(flag, can_reflect=self._rf is not None and room)
        outcome = yield from self._emit_flags()
        if outcome != "next":
            return outcome
        if action == "halt":
            turn.finish = "halt"
            return "end"
        if action == "reflect":
            assert self._rf is not None, "decide() reflects only when <rf> exists"
            turn.ids.append(self._rf)
            turn.generated += 1
            turn.guard.rewind(len(turn.ids), turn.text)
            return "restart"
        if action == "continue":
            return "next"
        error = turn.guard.error
        assert error is not None, "decide() answers 'error' only after recording the error"
        turn.error = error.message
        turn.finish = "error"
        yield error
        return "end"

    def _confirm(self, flag: Flag) -> Generator[Event, None, Outcome]:
        checks = self._turn.checks
        assert checks is not None
        check = checks.wait(checks.submit("confirm", flag.position, flag.text_so_far, flag), self._cancel)
        if check is None:
            self._turn.finish = "cancelled"
            return "end"
        yield _check_event(check)
        if check.verdict is not None and not check.verdict.harmful:
            return "next"
        return (yield from self._act(flag.model_copy(update={"verdict": check.verdict})))

    def _on_check(self, check: Check) -> Generator[Event, None, Outcome]:
        turn = self._turn
        yield _check_event(check)
        verdict = check.verdict
        if verdict is None or not verdict.harmful or turn.classifier_flagged:
            return "next"
        flag = Flag(
            position=len(turn.ids),
            probability=verdict.score,
            source="classifier",
            text_so_far=turn.text,
            verdict=verdict,
        )
        turn.classifier_flagged = True
        outcome = yield from self._act(flag)
        if outcome == "restart":
            turn.classifier_flagged = False
        return outcome

    def _check_reply(self) -> Generator[Event, None, Outcome]:
        checks = self._turn.checks
        assert checks is not None
        checks.drop("stream")
        checks.submit("reply", len(self._turn.ids), self._turn.text)
        for pending in checks.running():
            check = checks.wait(pending, self._cancel)
            if check is None:
                self._turn.finish = "cancelled"
                return "end"
            outcome = yield from self._on_check(check)
            if outcome != "next":
                return outcome
        return "end"

    def _finish(self) -> Reply:
        turn = self._turn
        if turn.checks is not None:
            turn.checks.drop()
        reply = turn.reply(self._settings.guard.refusal)
        self._record(turn.user, reply)
        return reply


def _call(callback: Callable[[Any], None] | None, arg: object, name: str) -> str | None:
    if callback is None:
        return None
    try:
        callback(arg)
    except Exception as exc:  # noqa: BLE001 - report any callback failure, end cleanly
        return f"{name} callback raised {type(exc).__name__}: {exc}"
    return None


def _check_event(check: Check) -> VerdictEvent | ErrorEvent:
    if check.verdict is None:
        return ErrorEvent(message=check.error or "classifier failed", where="classifier")
    return VerdictEvent(check=check)
