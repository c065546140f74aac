"""GuardedChat: a streaming chat over llama.cpp that watches P(<rf>) at every token."""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import json
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Generator, Iterator, Literal

import llama_cpp
from pydantic import TypeAdapter, ValidationError

from .classifiers.base import Classifier, ClassifierLike, as_classifier
from .config import SamplingConfig
from .cross_check import CROSS_CHECK_MODES, CrossCheckMode, TurnChecks
from .errors import (
    ChatTemplateError,
    ContextOverflowError,
    EmptyMessageError,
    InvalidMessageError,
)
from .events import (
    Check,
    EndEvent,
    ErrorEvent,
    Event,
    FinishReason,
    Flag,
    FlagEvent,
    Message,
    NoticeEvent,
    Reply,
    Timings,
    TokenEvent,
    Usage,
    VerdictEvent,
)
from .guard import TurnGuard
from .loading import load_model
from .model_lock import lock_for
from .policies import PolicyLike, resolve_policy
from .prefill_check import opening_probabilities
from .prompt import PromptBuilder, check_text, token_piece

DEFAULT_REFUSAL = "I can't help with that."
DEFAULT_THRESHOLD = 0.5
DEFAULT_CHECK_EVERY = 32
DEFAULT_CLASSIFIER_TIMEOUT_S = 10.0
_MIN_REPLY_ROOM = 128
_CLASSIFIER_WORKERS = 2

OnToken = Callable[[TokenEvent], None]
OnFlag = Callable[[Flag], None]
Overflow = Literal["truncate", "error"]
HaltedContext = Literal["omit", "keep"]
HALTED_CONTEXTS: tuple[HaltedContext, ...] = ("omit", "keep")

_history_adapter = TypeAdapter(list[Message])


class GuardedChat:
    """A multi-turn chat with a GGUF model carrying the ``<rf>`` red-flag token.

    ``model`` is a GGUF path, ``hf://org/repo/file.gguf``, or a loaded
    ``llama_cpp.Llama`` (so one model can serve several chats). Every reply step is
    checked, including the first reply position before anything is shown: the guard
    fires when P(<rf>) >= ``threshold`` (the model's calibrated ``rf.threshold`` by
    default) and, if ``flag_sampled``, also when ``<rf>`` would be sampled below it (under
    ``sampling``'s top-k, top-p, min-p and temperature, as llama.cpp samples).
    ``flag_sampled=None`` (the default) means: not at the model's calibrated threshold,
    whose benign false-positive rate the calibration measured (a small model may give
    <rf> the top probability on benign prompts far below it), and yes otherwise. ``policy`` decides what happens then: "halt"
    replaces the reply by ``refusal``, "continue" records the flag and goes on with
    ``<rf>`` kept out of the context, "reflect" puts ``<rf>`` into the context and lets
    the model continue; or pass a callable ``Flag -> action``.

    A reply started with ``prefill`` is checked from its real start: with ``check_prefill``
    (the default) P(<rf>) at the reply start and after each prefill token counts toward the
    first reply position (one decode step per prefill token, as if the model had written
    it), so a prefill cannot skip the check of the request; ``check_prefill=False`` judges
    only what follows the prefill.

    ``classifier`` (an :mod:`rfsdk.classifiers` classifier or a function
    ``(prompt, reply) -> Verdict | bool | score``) cross-checks the guard, as
    ``cross_check`` says. "confirm": when <rf> fires, the stream pauses until the
    classifier has judged the reply so far; the policy acts only if it agrees (a
    rejected flag is kept in ``Reply.checks``, not in ``Reply.flags``). "backstop": the
    classifier judges the prompt (while the reply streams), the reply so far every
    ``check_every`` tokens (0: never) and the finished reply; a harmful verdict becomes
    a flag with ``source="classifier"`` that the policy acts on. "both" does both.
    Classifiers run in worker threads, never in the streaming one; each verdict arrives
    as a ``VerdictEvent``. A classifier that raises or takes longer than
    ``classifier_timeout`` seconds is reported by an ``ErrorEvent`` with
    ``where="classifier"`` and the turn goes on, guarded by <rf> alone. A stream check
    still running when the reply ends is dropped: the reply check covers its text.

    ``halted_context`` says what the model sees of an exchange whose reply was halted:
    "omit" (the default) leaves the request and the refusal out of the model's context, so
    one halted turn does not make the guard flag the ordinary turns after it (the halted
    exchange stays in ``history`` for the app, and a harmful request made again is judged
    on its own); "keep" shows the model the request and the refusal as they are.

    ``llama_kwargs`` are further ``llama_cpp.Llama`` settings for a model rfsdk loads
    (``use_mlock``, ``n_batch``, ``type_k``, ``flash_attn``, ...); the model's header is
    still checked before llama.cpp sees the file. A misspelt or unsupported name is a
    ``ValueError``.

    Thread safety: every method may be called from any thread; turns on one model
    are serialised (chats sharing one ``Llama`` share its lock). ``cancel()`` may be
    called from any thread and stops the running turn within one token.
    """

    def __init__(
        self,
        model: str | os.PathLike | llama_cpp.Llama,
        *,
        threshold: float | None = None,
        flag_sampled: bool | None = None,
        check_prefill: bool = True,
        policy: PolicyLike = "halt",
        on_flag: OnFlag | None = None,
        on_token: OnToken | None = None,
        system: str | None = None,
        refusal: str = DEFAULT_REFUSAL,
        sampling: SamplingConfig | None = None,
        n_ctx: int | None = None,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        chat_template: str | None = None,
        overflow: Overflow = "truncate",
        halted_context: HaltedContext = "omit",
        max_reflections: int = 1,
        classifier: ClassifierLike | None = None,
        cross_check: CrossCheckMode = "backstop",
        check_every: int = DEFAULT_CHECK_EVERY,
        classifier_timeout: float = DEFAULT_CLASSIFIER_TIMEOUT_S,
        allow_unguarded: bool = False,
        verbose: bool = False,
        llama_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if overflow not in ("truncate", "error"):
            raise ValueError(f"overflow must be 'truncate' or 'error', not {overflow!r}")
        if halted_context not in HALTED_CONTEXTS:
            raise ValueError(f"halted_context must be 'omit' or 'keep', not {halted_context!r}")
        if cross_check not in CROSS_CHECK_MODES:
            raise ValueError(f"cross_check must be one of {', '.join(CROSS_CHECK_MODES)}, not {cross_check!r}")
        _check_token_count("check_every", check_every, minimum=0)
        if not classifier_timeout > 0:
            raise ValueError(f"classifier_timeout must be > 0 seconds, not {classifier_timeout!r}")
        self.sampling = sampling or SamplingConfig()
        loaded = load_model(
            model,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
            allow_unguarded=allow_unguarded,
            verbose=verbose,
            llama_kwargs=llama_kwargs,
        )
        self.llm = loaded.llm
        self.model_path = loaded.path
        rf_id, rf_threshold, template = loaded.rf_token_id, loaded.rf_threshold, loaded.chat_template
        self.rf_token_id: int | None = rf_id
        template = chat_template or template
        if not template:
            raise ChatTemplateError(
                f"{self.model_path} has no chat template. Pass chat_template=... "
                "(rfsdk.CHATML_TEMPLATE fits ChatML models such as SmolLM2 and Qwen2)."
            )
        self._prompt = PromptBuilder(self.llm, template)
        self.calibrated_threshold: float | None = rf_threshold
        self.threshold = threshold if threshold is not None else (rf_threshold or DEFAULT_THRESHOLD)
        self.flag_sampled = flag_sampled
        self.check_prefill = check_prefill
        self.policy = policy
        self.on_flag = on_flag
        self.on_token = on_token
        self.system = system
        self.refusal = refusal
        self.overflow: Overflow = overflow
        self.halted_context: HaltedContext = halted_context
        self.max_reflections = max_reflections
        self.classifier = classifier
        self.cross_check: CrossCheckMode = cross_check
        self.check_every = check_every
        self.classifier_timeout = float(classifier_timeout)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._history: list[Message] = []
        self._lock = lock_for(self.llm)
        self._cancels: set[threading.Event] = set()
        # Re-entrant: rfchat's Ctrl-C handler calls cancel() on the thread that may hold it.
        self._cancels_lock = threading.RLock()
        self._rng = random.Random(self.sampling.seed)
        self._vocab = self.llm._model.vocab
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def from_default(cls, *, progress: Callable[[str, int, int], None] | None = None, **kwargs) -> "GuardedChat":
        """A chat on the bundled default model (see :func:`rfsdk.default_model`).

        The first call assembles the trained default into the cache (seconds);
        ``progress(step, done, total)`` hears about it.
        """
        from .default_model import default_model

        return cls(default_model(progress=progress).path, **kwargs)

    # ----- settings -----------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """P(<rf>) at or above which the guard fires (0 < threshold <= 1)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], not {value!r}")
        self._threshold = float(value)

    @property
    def flag_sampled(self) -> bool:
        """Whether a would-be-sampled <rf> below ``threshold`` raises a flag (see the class)."""
        if self._flag_sampled is not None:
            return self._flag_sampled
        return self.calibrated_threshold is None or self._threshold != self.calibrated_threshold

    @flag_sampled.setter
    def flag_sampled(self, value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"flag_sampled must be True, False or None, not {value!r}")
        self._flag_sampled = value

    @property
    def policy(self) -> PolicyLike:
        """"halt", "continue", "reflect", or a callable ``Flag -> action``."""
        return self._policy

    @policy.setter
    def policy(self, value: PolicyLike) -> None:
        self._policy_fn = resolve_policy(value)
        self._policy = value

    @property
    def classifier(self) -> Classifier | None:
        """The cross-checking classifier, or None (a function given is wrapped in a Classifier)."""
        return self._classifier

    @classifier.setter
    def classifier(self, value: ClassifierLike | None) -> None:
        classifier = None if value is None else as_classifier(value)
        if classifier is not None and getattr(classifier, "llm", None) is self.llm:
            raise ValueError(
                "The classifier judges with the chat's own model, which is busy during the turn; "
                "load the judge model separately."
            )
        self._classifier = classifier

    @property
    def guarded(self) -> bool:
        """False only for a chat created with ``allow_unguarded=True`` on a model without <rf>."""
        return self.rf_token_id is not None

    # ----- history --------------------------------------------------------------------

    @property
    def history(self) -> list[Message]:
        """The user and assistant messages so far (a copy; the system prompt is ``system``)."""
        return list(self._history)

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        with self._lock.hold():
            self._history = []

    def set_history(self, messages: Sequence[Message | Mapping[str, Any]], *, system: str | None = None) -> None:
        """Replace the conversation by ``messages`` and the system prompt by ``system``.

        ``messages`` are :class:`Message` objects or mappings with ``role`` ("user" or
        "assistant") and ``content`` (non-empty text without lone surrogates); the next
        turn's message follows them. Bad input raises an :class:`RfsdkError`
        (``InvalidMessageError``, ``EmptyMessageError``, ``InvalidTextError``) and keeps the
        old conversation.
        """
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidMessageError(
                f"messages must be a list of messages, not {type(messages).__name__}. "
                "Pass [{'role': 'user', 'content': '...'}, ...]."
            )
        checked = [_history_message(i, m) for i, m in enumerate(messages)]
        if system is not None:
            if not isinstance(system, str):
                raise InvalidMessageError(f"system must be a string or None, not {type(system).__name__}.")
            check_text(system)
        with self._lock.hold():
            self._history = checked
            self.system = system

    def save_history(self, path: str | os.PathLike) -> None:
        """Write the system prompt and history to a JSON file (atomically)."""
        path = Path(path)
        data = {
            "system": self.system,
            "messages": [m.model_dump() for m in self.history],
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def load_history(self, path: str | os.PathLike) -> None:
        """Replace the system prompt and history by those saved with :meth:`save_history`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            messages = _history_adapter.validate_python(data["messages"])
            system = data.get("system")
            if system is not None and not isinstance(system, str):
                raise TypeError("'system' must be a string or null")
        except FileNotFoundError:
            raise FileNotFoundError(f"No saved chat at {path}.") from None
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            raise ValueError(
                f"{path} is not a chat saved by rfsdk ({type(exc).__name__}: {exc}). "
                "The current conversation was left unchanged."
            ) from None
        with self._lock.hold():
            self._history = list(messages)
            self.system = system

    # ----- turns ----------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the running (or queued) turns of this chat; safe from any thread."""
        with self._cancels_lock:
            for event in self._cancels:
                event.set()

    def stream(
        self, message: str, *, prefill: str = "", max_tokens: int | None = None
    ) -> Iterator[Event]:
        """Send ``message`` and yield events: tokens, flags, notices, errors, then one end.

        ``prefill`` starts the assistant's reply with the given text (the model
        continues from it; it is part of the reply text).
        """
        return self._open(message, prefill, max_tokens)[0]

    def send(self, message: str, *, prefill: str = "", max_tokens: int | None = None) -> Reply:
        """Send ``message`` and return the whole :class:`Reply`."""
        end = None
        for event in self.stream(message, prefill=prefill, max_tokens=max_tokens):
            if isinstance(event, EndEvent):
                end = event
        assert end is not None
        return end.reply()

    async def astream(
        self, message: str, *, prefill: str = "", max_tokens: int | None = None
    ) -> AsyncIterator[Event]:
        """:meth:`stream` for asyncio: the model runs in a worker thread, never in the loop."""
        events, cancel = self._open(message, prefill, max_tokens)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def post(item: object) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
                return True
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                return False

        def work() -> None:
            try:
                for event in events:
                    if not post(event):
                        break
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                post(exc)
            finally:
                events.close()  # releases the model at once, even if the loop went away
                post(done)

        # Not a daemon: at interpreter exit Python waits for it (it stops within one token
        # after cancel()) instead of freeing the model under a running llama.cpp call.
        worker = threading.Thread(target=work, name="rfsdk-turn", daemon=False)
        worker.start()
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is done:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not finished:
                cancel.set()  # this turn only; other turns of the chat go on

    async def asend(self, message: str, *, prefill: str = "", max_tokens: int | None = None) -> Reply:
        """:meth:`send` for asyncio."""
        end = None
        async for event in self.astream(message, prefill=prefill, max_tokens=max_tokens):
            if isinstance(event, EndEvent):
                end = event
        assert end is not None
        return end.reply()

    # ----- the turn itself ------------------------------------------------------------

    def _open(self, message: str, prefill: str, max_tokens: int | None) -> tuple[Iterator[Event], threading.Event]:
        _check_message(message)
        if not isinstance(prefill, str):
            raise TypeError(f"prefill must be a string, not {type(prefill).__name__}")
        if max_tokens is not None:
            _check_token_count("max_tokens", max_tokens, minimum=1)
        cancel = threading.Event()
        with self._cancels_lock:
            self._cancels.add(cancel)
        return self._turn(message, prefill, max_tokens, cancel), cancel

    def _turn(
        self, message: str, prefill: str, max_tokens: int | None, cancel: threading.Event
    ) -> Iterator[Event]:
        try:
            with self._lock.hold():
                yield from self._run_turn(message, prefill, max_tokens, cancel)
        finally:
            with self._cancels_lock:
                self._cancels.discard(cancel)

    def _run_turn(
        self, message: str, prefill: str, max_tokens: int | None, cancel: threading.Event
    ) -> Iterator[Event]:
        started = time.perf_counter()
        user = Message(role="user", content=message)
        limit = max_tokens or self.sampling.max_tokens
        prompt, dropped = self._fit_prompt(user, prefill, limit)
        if dropped:
            yield NoticeEvent(
                message=f"The conversation is longer than the context ({self.llm.n_ctx()} "
                f"tokens): the oldest {dropped} messages were left out of this turn."
            )
        budget = self.llm.n_ctx() - len(prompt)
        if limit is not None:
            budget = min(budget, limit)
        classifier = self._classifier
        confirm = classifier is not None and self.cross_check in ("confirm", "both")
        backstop = classifier is not None and self.cross_check in ("backstop", "both")
        guard = TurnGuard(
            rf_id=self.rf_token_id,
            stop_id=_stop_token(self.llm, self.rf_token_id),
            threshold=self._threshold,
            flag_sampled=self.flag_sampled,
            policy=self._policy_fn,
            sampling=self.sampling,
            rng=self._rng,
            cancel=cancel,
            max_reflections=self.max_reflections,
            defer=confirm,
            penalty_window=self.llm.last_n_tokens_size,
        )
        guard.text_so_far = prefill
        checks = None
        if classifier is not None:
            checks = TurnChecks(classifier, self._classifier_pool(), message, self.classifier_timeout)
            if backstop:
                checks.submit("prompt", 0, "")
        turn = _Turn(
            user=user,
            prompt=prompt,
            budget=budget,
            guard=guard,
            checks=checks,
            started=started,
            text=prefill,
            next_stream_check=self.check_every if backstop else 0,
        )
        if cancel.is_set():  # cancelled while queued: the prompt is not even evaluated
            turn.finish = "cancelled"
            yield EndEvent(**self._finish(turn).model_dump())
            return
        if prefill and self.check_prefill and self.rf_token_id is not None:
            prefill_length = len(self._prompt.text_tokens(prefill))
            guard.open_with(opening_probabilities(self.llm, prompt, prefill_length, self.rf_token_id, cancel=cancel))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = self._generate(prompt, guard)
        try:
            while True:
                outcome = "end"
                for token in tokens:
                    outcome = yield from self._step(turn, token, decoder, cancel)
                    if outcome != "next" or turn.generated >= budget:
                        break
                if outcome != "restart" and backstop and turn.finish in ("stop", "length"):
                    outcome = yield from self._check_reply(turn, cancel)
                if outcome != "restart":
                    break
                turn.finish = "length"  # until the restarted generation says otherwise
                tokens.close()
                tokens = self._generate(prompt + turn.ids, guard)
        except GeneratorExit:
            # The caller stopped reading: the turn counts as cancelled, unless it had already
            # failed or been halted (say, the caller stopped at the halting flag; a flag is in
            # turn.flags before its event is yielded).
            tokens.close()
            if turn.finish == "error" or turn.guard.stop_reason == "error":
                guard_error = turn.guard.error.message if turn.guard.error else None
                turn.finish, turn.error = "error", turn.error or guard_error
            else:
                turn.finish = "halt" if turn.halted else "cancelled"
            self._finish(turn)
            raise
        tokens.close()
        turn.text += decoder.decode(b"", final=True)
        yield EndEvent(**self._finish(turn).model_dump())

    def _generate(self, tokens: list[int], guard: TurnGuard) -> Generator[int, None, None]:
        s = self.sampling
        # llama-cpp-python seeds a new sampler from the Llama's seed on every generate() call
        # (and treats seed 0 as "random"). A seed drawn from the chat's own RNG each time keeps
        # turns and restarts from replaying one sequence, and SamplingConfig.seed repeatable.
        self.llm.set_seed(self._rng.randrange(llama_cpp.LLAMA_DEFAULT_SEED))
        return self.llm.generate(
            tokens,
            temp=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            logits_processor=llama_cpp.LogitsProcessorList([guard]),
        )

    # Each step below yields events and returns what the turn does next: "next" (go on),
    # "end" (the reply is over; turn.finish says why) or "restart" (turn.ids changed, so
    # generation starts again from the prompt and turn.ids, reusing llama.cpp's cache).

    def _step(
        self, turn: "_Turn", token: int, decoder: codecs.IncrementalDecoder, cancel: threading.Event
    ) -> Generator[Event, None, str]:
        guard = turn.guard
        outcome = yield from self._emit_flags(turn)
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
            outcome = yield from self._confirm(turn, flag, cancel)
            if outcome != "next":
                return outcome
        turn.generated += 1
        if llama_cpp.llama_vocab_is_eog(self._vocab, token) and token != self.rf_token_id:
            turn.finish = "stop"
            return "end"
        turn.ids.append(token)
        if token != self.rf_token_id:
            piece = decoder.decode(self._piece(token))
            if piece:
                event = turn.show(piece, token)
                # Callbacks run before the event is handed on, so they fire even if the
                # caller stops reading at it.
                turn.error = self._call(self.on_token, event, "on_token")
                yield event
                if turn.error:
                    yield ErrorEvent(message=turn.error, where="on_token")
                    turn.finish = "error"
                    return "end"
        if turn.checks is None:
            return "next"
        for check in turn.checks.ready():
            outcome = yield from self._on_check(turn, check)
            if outcome != "next":
                return outcome
        if turn.next_stream_check and len(turn.ids) >= turn.next_stream_check and not turn.checks.running("stream"):
            turn.checks.submit("stream", len(turn.ids), turn.text)
            turn.next_stream_check = len(turn.ids) + self.check_every
        return "next"

    def _emit_flags(self, turn: "_Turn") -> Generator[Event, None, str]:
        for flag in turn.guard.take_flags():
            turn.flags.append(flag)
            turn.error = self._call(self.on_flag, flag, "on_flag")
            yield FlagEvent(flag=flag)
            if turn.error:
                yield ErrorEvent(message=turn.error, where="on_flag")
                turn.finish = "error"
                return "end"
        return "next"

    def _act(self, turn: "_Turn", flag: Flag) -> Generator[Event, None, str]:
        room = len(turn.prompt) + len(turn.ids) + 1 < self.llm.n_ctx() and turn.generated < turn.budget
        action = turn.guard.decide(flag, can_reflect=self.rf_token_id is not None and room)
        outcome = yield from self._emit_flags(turn)
        if outcome != "next":
            return outcome
        if action == "halt":
            turn.finish = "halt"
            return "end"
        if action == "reflect":
            turn.ids.append(self.rf_token_id)
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

    def _confirm(self, turn: "_Turn", flag: Flag, cancel: threading.Event) -> Generator[Event, None, str]:
        assert turn.checks is not None
        check = turn.checks.wait(turn.checks.submit("confirm", flag.position, flag.text_so_far, flag), cancel)
        if check is None:
            turn.finish = "cancelled"
            return "end"
        yield _check_event(check)
        if check.verdict is not None and not check.verdict.harmful:
            return "next"
        return (yield from self._act(turn, flag.model_copy(update={"verdict": check.verdict})))

    def _on_check(self, turn: "_Turn", check: Check) -> Generator[Event, None, str]:
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
        outcome = yield from self._act(turn, flag)
        if outcome == "restart":
            turn.classifier_flagged = False
        return outcome

    def _check_reply(self, turn: "_Turn", cancel: threading.Event) -> Generator[Event, None, str]:
        checks = turn.checks
        assert checks is not None
        checks.drop("stream")
        checks.submit("reply", len(turn.ids), turn.text)
        for pending in checks.running():
            check = checks.wait(pending, cancel)
            if check is None:
                turn.finish = "cancelled"
                return "end"
            outcome = yield from self._on_check(turn, check)
            if outcome != "next":
                return outcome
        return "end"

    def _classifier_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=_CLASSIFIER_WORKERS, thread_name_prefix="rfsdk-classifier"
            )
        return self._executor

    def _finish(self, turn: "_Turn") -> Reply:
        if turn.checks is not None:
            turn.checks.drop()
        reply = turn.reply(self.refusal)
        self._history += [
            turn.user,
            Message(
                role="assistant", content=reply.text, flagged=reply.flagged, finish_reason=reply.finish_reason
            ),
        ]
        return reply

    def _fit_prompt(self, user: Message, prefill: str, limit: int | None) -> tuple[list[int], int]:
        """The prompt for this turn and how many of the oldest history messages it leaves out.

        With ``overflow="truncate"`` the kept history is the longest suffix that starts at a
        user message and fits; it is found by bisection, so a long history costs a few
        prompt builds, not one per message left out.
        """
        n_ctx = self.llm.n_ctx()
        room = min(limit or _MIN_REPLY_ROOM, _MIN_REPLY_ROOM)
        system = [Message(role="system", content=self.system)] if self.system else []
        history = self._model_history()

        def build(start: int) -> list[int]:
            return self._prompt.build(system + history[start:] + [user], prefill=prefill)

        def fits(prompt: list[int]) -> bool:
            return len(prompt) + room <= n_ctx

        whole = build(0)
        if fits(whole):
            return whole, 0
        if history and self.overflow == "error":
            raise ContextOverflowError(
                f"The conversation needs {len(whole)} prompt tokens plus {room} for the "
                f"reply, more than the context's {n_ctx}. Call reset(), or create the chat "
                "with overflow='truncate' to leave the oldest messages out."
            )
        starts = [i for i in range(1, len(history)) if history[i].role == "user"] + [len(history)]
        fitted = build(starts[-1])
        if not fits(fitted):
            raise ContextOverflowError(
                f"The message needs {len(fitted)} prompt tokens (with the system prompt and "
                f"chat format) and {room} more are kept for the reply, but the context holds "
                f"{n_ctx} tokens. Shorten the message or create the chat with a larger n_ctx."
            )
        low, high = 0, len(starts) - 1  # starts[high] fits; find the first start that does
        while low < high:
            middle = (low + high) // 2
            prompt = build(starts[middle])
            if not fits(prompt):
                low = middle + 1
            else:
                high, fitted = middle, prompt
        return fitted, starts[high]

    def _model_history(self) -> list[Message]:
        """The history as the model sees it: with ``halted_context="omit"``, halted exchanges left out."""
        if self.halted_context == "keep":
            return self._history
        kept: list[Message] = []
        for message in self._history:
            if message.role == "assistant" and message.finish_reason == "halt":
                if kept and kept[-1].role == "user":
                    kept.pop()
                continue
            kept.append(message)
        return kept

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self.llm, token)
        return piece

    @staticmethod
    def _call(callback: Callable | None, arg: object, name: str) -> str | None:
        if callback is None:
            return None
        try:
            callback(arg)
        except Exception as exc:  # noqa: BLE001 - report any callback failure, end cleanly
            return f"{name} callback raised {type(exc).__name__}: {exc}"
        return None


def _check_token_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of tokens >= {minimum}, not {value!r}")


def _check_message(message: object) -> None:
    if not isinstance(message, str):
        raise TypeError(f"message must be a string, not {type(message).__name__}")
    if not message.strip():
        raise EmptyMessageError("The message is empty. Type something to send.")


def _history_message(index: int, message: object) -> Message:
    if isinstance(message, Message):
        role, content = message.role, message.content
    elif isinstance(message, Mapping):
        role, content = message.get("role"), message.get("content")
    else:
        raise InvalidMessageError(
            f"Message {index} is a {type(message).__name__}, not a message. "
            "Pass a Message or a mapping with 'role' and 'content'."
        )
    if role not in ("user", "assistant"):
        raise InvalidMessageError(
            f"Message {index} has the role {role!r}; a history holds 'user' and 'assistant' "
            "messages (pass the system prompt as system=...)."
        )
    if not isinstance(content, str):
        raise InvalidMessageError(f"Message {index}'s content must be a string, not {type(content).__name__}.")
    if not content.strip():
        raise EmptyMessageError(f"Message {index} ({role}) is empty. Give every message some text.")
    check_text(content)
    if isinstance(message, Message):
        return message
    return Message(role=role, content=content)


def _check_event(check: Check) -> VerdictEvent | ErrorEvent:
    if check.verdict is None:
        return ErrorEvent(message=check.error or "classifier failed", where="classifier")
    return VerdictEvent(check=check)


def _stop_token(llm: llama_cpp.Llama, rf_id: int | None) -> int:
    eos = llm.token_eos()
    return eos if eos >= 0 else (rf_id or 0)


@dataclass
class _Turn:
    """What one turn has produced so far."""

    user: Message
    prompt: list[int]
    budget: int
    guard: TurnGuard
    checks: TurnChecks | None
    started: float
    text: str
    next_stream_check: int
    """Reply length at which the next stream check is due (0: no stream checks)."""
    ids: list[int] = field(default_factory=list)
    """The reply tokens so far (<rf> included), one per reply step."""
    flags: list[Flag] = field(default_factory=list)
    classifier_flagged: bool = False
    """A classifier flag stands (later harmful verdicts raise no new flag until a reflection)."""
    finish: FinishReason = "length"
    error: str | None = None
    generated: int = 0
    first_token_at: float | None = None

    def show(self, piece: str, token: int) -> TokenEvent:
        self.text += piece
        self.guard.text_so_far = self.text
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        return TokenEvent(
            text=piece,
            token_id=token,
            position=self.guard.position - 1,
            rf_probability=self.guard.last_probability,
        )

    @property
    def halted(self) -> bool:
        """A flag was answered with halt (a failing policy halts too): the reply is the refusal."""
        return any(flag.action == "halt" for flag in self.flags)

    def reply(self, refusal: str) -> Reply:
        now = time.perf_counter()
        first = self.first_token_at
        decode_s = now - first if first is not None else 0.0
        return Reply(
            text=refusal if self.halted else self.text,
            flagged=bool(self.flags),
            flags=self.flags,
            prompt_rf_probability=self.guard.prompt_probability,
            max_rf_probability=self.guard.max_probability,
            finish_reason=self.finish,
            usage=Usage(prompt_tokens=len(self.prompt), completion_tokens=self.generated),
            timings=Timings(
                time_to_first_token_s=None if first is None else first - self.started,
                total_s=now - self.started,
                tokens_per_s=(self.generated - 1) / decode_s if self.generated > 1 and decode_s > 0 else 0.0,
            ),
            checks=list(self.checks.settled) if self.checks is not None else [],
            error=self.error,
        )
