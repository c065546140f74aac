"""GuardedChat: a streaming chat over llama.cpp that watches P(<rf>) at every token.

This module is the façade: settings, history, the turn methods and the lifecycle. The turn
itself runs in :mod:`rfsdk._engine`; the guard's per-step check in :mod:`rfsdk._guard`.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from ._async_bridge import EventsInThread, cancel_turns_read_here
from ._engine import ModelRunner, OnFlag, OnToken, TurnEngine, TurnSettings, check_turn_args
from ._history import check_history, model_history, read_history, write_history
from .classifiers.base import Classifier, ClassifierLike, as_classifier
from .config import CheckedSetting, CrossCheckConfig, GuardConfig, HaltedContext, Overflow, SamplingConfig
from .config import check_callback, check_halted_context, check_overflow, checked_instance
from .config import merged_cross_check_config, merged_guard_config
from ._cross_check import CrossCheckMode
from .errors import ChatClosedError, ConfigError
from .events import EndEvent, Event, Message, Reply
from ._turn_stream import RunningTurns, TurnStream
from ._loading import load_model
from ._model_lock import lock_for
from ._policies import PolicyLike, resolve_policy
from ._prompt import PromptBuilder, check_text

_CLASSIFIER_WORKERS = 2
_KEEP: Any = object()


class GuardedChat:
    """A multi-turn chat with a GGUF model carrying the ``<rf>`` red-flag token.

    ``model`` is a GGUF path, ``hf://org/repo/file.gguf``, or a loaded ``llama_cpp.Llama``
    (so one model can serve several chats). Every reply step is checked, including the
    first reply position before anything is shown. The guard's settings are a
    :class:`GuardConfig` (``guard_config=``), or its fields as keyword arguments
    (``threshold``, ``flag_sampled``, ``check_prefill``, ``policy``, ``refusal``,
    ``max_reflections``; those given replace the config's); each is also a settable
    property. By default the guard fires when P(<rf>) reaches the model's calibrated
    ``rf.threshold`` and halts the reply. The policy is asked at the first step of a run of
    consecutive flagged steps and again whenever P(<rf>) rises above the highest P(<rf>) it was
    asked about in that run (so a policy that scales with ``flag.probability`` sees the peak).

    ``classifier`` (an :mod:`rfsdk.classifiers` classifier or a function
    ``(prompt, reply) -> Verdict | bool | score``) cross-checks the guard as ``cross_check``
    says: a mode ("confirm", "backstop", "both") or a :class:`CrossCheckConfig`
    (``check_every`` and ``classifier_timeout`` replace its fields). Classifiers run in
    worker threads, never in the streaming one; a classifier that fails or times out is
    reported by an ``ErrorEvent`` with ``where="classifier"`` and the turn goes on, guarded
    by <rf> alone.

    ``sampling`` says how tokens are sampled; ``n_ctx``, ``n_gpu_layers``, ``n_threads``,
    ``verbose`` and ``llama_kwargs`` (further ``llama_cpp.Llama`` settings, checked by name and value)
    apply to a model rfsdk loads. ``overflow`` says what a conversation longer than the
    context does ("truncate": the oldest messages are left out; "error").
    ``halted_context`` says what the model sees of an exchange whose reply was halted: "omit"
    (the default) leaves the request and the refusal out of the model's context, so one
    halted turn does not make the guard flag the ordinary turns after it (the exchange stays
    in ``history`` for the app; a harmful request made again is judged on its own); "keep"
    shows the model both as they are.

    Bad settings raise :class:`rfsdk.ConfigError`. Every method may be called from any
    thread; turns on one model are serialised (chats sharing one ``Llama`` share its lock).
    A turn starts at its stream's first read and holds the model until its end has been
    read, also while the caller holds the stream between reads; ``cancel()`` ends the chat's
    started turns (see :meth:`cancel`, :meth:`stream`, :meth:`astream`). ``close()`` (or
    ``with``) frees the classifier threads and a model rfsdk loaded.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | llama_cpp.Llama,
        *,
        guard_config: GuardConfig | None = None,
        threshold: float | None = None,
        flag_sampled: bool | None = None,
        check_prefill: bool | None = None,
        policy: PolicyLike | None = None,
        refusal: str | None = None,
        max_reflections: int | None = None,
        on_flag: OnFlag | None = None,
        on_token: OnToken | None = None,
        system: str | None = None,
        sampling: SamplingConfig | None = None,
        n_ctx: int | None = None,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        chat_template: str | None = None,
        overflow: Overflow = "truncate",
        halted_context: HaltedContext = "omit",
        classifier: ClassifierLike | None = None,
        cross_check: CrossCheckMode | CrossCheckConfig = "backstop",
        check_every: int | None = None,
        classifier_timeout: float | None = None,
        allow_unguarded: bool = False,
        verbose: bool = False,
        llama_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._guard_config = merged_guard_config(
            guard_config, threshold=threshold, flag_sampled=flag_sampled, check_prefill=check_prefill,
            policy=policy, refusal=refusal, max_reflections=max_reflections,
        )  # fmt: skip
        self._cross_check_config = merged_cross_check_config(
            cross_check, check_every=check_every, classifier_timeout=classifier_timeout
        )
        self.sampling, self.overflow = SamplingConfig() if sampling is None else sampling, overflow
        self.halted_context = halted_context
        self.on_flag, self.on_token, self.system = on_flag, on_token, system
        self._closed = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
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
        self._owns_llm = not isinstance(model, llama_cpp.Llama)
        self.model_path = loaded.path
        self.rf_token_id: int | None = loaded.rf_token_id
        self.calibrated_threshold: float | None = loaded.rf_threshold
        self._prompt = PromptBuilder(self.llm, loaded.template(chat_template))
        self._model = ModelRunner(self.llm, self._prompt, self.rf_token_id, self.sampling.seed)
        self.classifier = classifier
        self._history: list[Message] = []
        self._lock = lock_for(self.llm)
        self._cancels = RunningTurns()
        """The turns that have started and not ended: what cancel() reaches."""

    @classmethod
    def from_default(cls, *, progress: Callable[[str, int, int], None] | None = None, **kwargs: Any) -> GuardedChat:
        """A chat on the bundled default model (see :func:`rfsdk.default_model`).

        The first call assembles the trained default into the cache (seconds);
        ``progress(step, done, total)`` hears about it.
        """
        from .default_model import default_model

        return cls(default_model(progress=progress).path, **kwargs)

    # ----- settings -----------------------------------------------------------------

    guard_config = CheckedSetting(lambda value: checked_instance("guard_config", value, GuardConfig, optional=False))
    """The guard's settings (frozen: assign a new one, or set the properties below)."""
    threshold = property(
        lambda self: self._guard_config.resolved_threshold(self.calibrated_threshold),
        lambda self, v: self._set_guard(threshold=v),
    )
    """P(<rf>) at or above which the guard fires (0 < threshold <= 1; see :class:`GuardConfig`)."""
    flag_sampled = property(
        lambda self: self._guard_config.resolved_flag_sampled(self.calibrated_threshold),
        lambda self, v: self._set_guard(flag_sampled=v),
    )
    """Whether a would-be-sampled <rf> below ``threshold`` raises a flag (see :class:`GuardConfig`)."""
    check_prefill = property(lambda self: self._guard_config.check_prefill, lambda self, v: self._set_guard(check_prefill=v))
    """Whether a prefilled reply is checked from its real start (see :class:`GuardConfig`)."""
    policy = property(lambda self: self._guard_config.policy, lambda self, v: self._set_guard(policy=v))
    """"halt", "continue", "reflect", or a callable ``Flag -> action``."""
    refusal = property(lambda self: self._guard_config.refusal, lambda self, v: self._set_guard(refusal=v))
    """The reply text of a halted turn."""
    max_reflections = property(lambda self: self._guard_config.max_reflections, lambda self, v: self._set_guard(max_reflections=v))
    """How many times one turn may reflect."""

    def _set_guard(self, **change: Any) -> None:
        self.guard_config = self._guard_config.replace(**change)

    cross_check_config = CheckedSetting(lambda value: checked_instance("cross_check_config", value, CrossCheckConfig, optional=False))
    """How the classifier cross-checks the guard (frozen: assign a new one to change it)."""
    cross_check = property(lambda self: self._cross_check_config.mode)
    """The cross-check mode: "confirm", "backstop" or "both"."""
    check_every = property(lambda self: self._cross_check_config.check_every)
    """Reply tokens between the classifier's stream checks (0: none)."""
    classifier_timeout = property(lambda self: self._cross_check_config.classifier_timeout)
    """Seconds a classifier check may take."""

    @property
    def classifier(self) -> Classifier | None:
        """The cross-checking classifier, or None (a function given is wrapped in a Classifier)."""
        return self._classifier

    @classifier.setter
    def classifier(self, value: ClassifierLike | None) -> None:
        classifier = None if value is None else as_classifier(value)
        if classifier is not None and getattr(classifier, "llm", None) is self.llm:
            raise ConfigError(
                "The classifier judges with the chat's own model, which is busy during the turn; "
                "load the judge model separately."
            )
        self._classifier = classifier

    sampling = CheckedSetting(lambda value: checked_instance("sampling", value, SamplingConfig, optional=False))
    """How reply tokens are sampled."""
    overflow = CheckedSetting(check_overflow)
    """What a turn does when the conversation outgrows the context: "truncate" or "error"."""
    halted_context = CheckedSetting(check_halted_context)
    """What the model sees of a halted exchange: "omit" (left out; the default) or "keep"."""
    system = CheckedSetting(lambda value: None if value is None else check_text("system", value))
    """The system prompt (None: none)."""
    on_token = CheckedSetting(lambda value: check_callback("on_token", value))
    """Called with every ``TokenEvent`` before it is yielded (None: no callback)."""
    on_flag = CheckedSetting(lambda value: check_callback("on_flag", value))
    """Called with every ``Flag`` before its event is yielded (None: no callback)."""

    @property
    def guarded(self) -> bool:
        """False only for a chat created with ``allow_unguarded=True`` on a model without <rf>."""
        return self.rf_token_id is not None

    # ----- history --------------------------------------------------------------------

    @property
    def history(self) -> list[Message]:
        """The user and assistant messages so far (a copy; the system prompt is ``system``)."""
        return list(self._history)

    def set_history(self, messages: Sequence[Message | Mapping[str, Any]], *, system: str | None = _KEEP) -> None:
        """Replace the conversation by ``messages`` (and the system prompt by ``system``, if given).

        ``messages`` are :class:`Message` objects or dicts with ``role`` and ``content``, as
        turns produce them: user and assistant alternating, starting with a user message,
        ending with an assistant reply, user messages not empty, all valid Unicode. Anything
        else raises :class:`rfsdk.HistoryError` and leaves the conversation unchanged.
        """
        checked = check_history(messages)
        system = self.system if system is _KEEP else system
        if system is not None:
            check_text("system", system)
        with self._lock.hold():
            self._history, self.system = checked, system

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        with self._lock.hold():
            self._history = []

    def save_history(self, path: str | os.PathLike[str]) -> None:
        """Write the system prompt and history to a JSON file (atomically)."""
        write_history(Path(path), self.system, self.history)

    def load_history(self, path: str | os.PathLike[str]) -> None:
        """Replace the system prompt and history by those saved with :meth:`save_history`.

        The file is checked as :meth:`set_history` checks its arguments.
        """
        system, messages = read_history(Path(path))
        with self._lock.hold():
            self._history, self.system = messages, system

    # ----- turns ----------------------------------------------------------------------

    def cancel(self) -> None:
        """End this chat's turns that have started and not ended; safe from any thread.

        A turn starts at its stream's first read, so a stream not yet read is not touched
        (it runs normally when read). A running turn stops within one token; one waiting for
        the model ends when it gets it, before its prompt is evaluated; one held between
        reads (``s = chat.stream(...); next(s)``, or an ``astream`` left unread) ends at once
        and releases the model, and its stream's next read gives the end. Either way the
        history gets the turn with the reply so far and ``finish_reason="cancelled"`` (a
        reply already halted keeps the refusal and "halt").
        """
        self._cancels.cancel()

    def stream(self, message: str, *, prefill: str = "", max_tokens: int | None = None) -> Iterator[Event]:
        """Send ``message`` and yield events: tokens, flags, notices, errors, then one end.

        ``prefill`` starts the assistant's reply with the given text (the model
        continues from it; it is part of the reply text). The arguments are checked now;
        the turn starts at the first read (it then waits for the model) and holds the model
        until its end has been read, the stream is closed or dropped, or :meth:`cancel`
        ends it.
        """
        return self._open(message, prefill, max_tokens)

    def send(self, message: str, *, prefill: str = "", max_tokens: int | None = None) -> Reply:
        """Send ``message`` and return the whole :class:`Reply`."""
        end = None
        for event in self.stream(message, prefill=prefill, max_tokens=max_tokens):
            if isinstance(event, EndEvent):
                end = event
        assert end is not None
        return end.reply()

    async def astream(self, message: str, *, prefill: str = "", max_tokens: int | None = None) -> AsyncGenerator[Event, None]:
        """:meth:`stream` for asyncio: the model runs in a worker thread, never in the loop.

        The turn advances only as it is read (the worker reads at most one event ahead), and
        is cancelled when the stream is left: ``aclose()``, an exception or a cancelled task
        in ``async for``, or the stream garbage-collected after a ``break``; also when the
        task that last read it starts another turn on the same model, and by :meth:`cancel`.
        """
        events = EventsInThread(self._open(message, prefill, max_tokens), self._lock)
        try:
            async for event in events:
                yield event
        finally:
            events.leave()  # nothing left to do once the end was read

    async def asend(self, message: str, *, prefill: str = "", max_tokens: int | None = None) -> Reply:
        """:meth:`send` for asyncio."""
        end = None
        async for event in self.astream(message, prefill=prefill, max_tokens=max_tokens):
            if isinstance(event, EndEvent):
                end = event
        assert end is not None
        return end.reply()

    def _open(self, message: str, prefill: str, max_tokens: int | None) -> TurnStream:
        if self._closed:
            raise ChatClosedError("This chat was closed; create a new GuardedChat to go on chatting.")
        check_turn_args(message, prefill, max_tokens)
        return TurnStream(lambda cancel, ended: self._turn(message, prefill, max_tokens, cancel, ended), self._cancels)

    def _turn(
        self, message: str, prefill: str, max_tokens: int | None, cancel: threading.Event, ended: list[Reply]
    ) -> Generator[Event, None, None]:
        # Blocking code on an event loop's thread: that loop's async turns on this model
        # cannot be read on while this turn waits for the model, so they end first.
        cancel_turns_read_here(self._lock, blocking=True)

        def record(user: Message, reply: Reply) -> None:
            self._record(user, reply)
            ended.append(reply)

        with self._lock.hold():
            if self._closed:
                raise ChatClosedError("This chat was closed while the turn waited for the model.")
            engine = TurnEngine(
                self._model,
                self._settings(),
                model_history(self._history, self.halted_context),
                pool=self._classifier_pool() if self._classifier is not None else None,
                cancel=cancel,
                record=record,
            )
            yield from engine.events(message, prefill, max_tokens)

    def _settings(self) -> TurnSettings:
        return TurnSettings(
            guard=self._guard_config,
            threshold=self.threshold,
            flag_sampled=self.flag_sampled,
            policy=resolve_policy(self._guard_config.policy),
            sampling=self.sampling,
            system=self.system,
            overflow=self.overflow,
            classifier=self._classifier,
            cross_check=self._cross_check_config,
            on_token=self.on_token,
            on_flag=self.on_flag,
        )

    def _record(self, user: Message, reply: Reply) -> None:
        assistant = Message(role="assistant", content=reply.text, flagged=reply.flagged, finish_reason=reply.finish_reason)
        self._history += [user, assistant]

    def _classifier_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=_CLASSIFIER_WORKERS, thread_name_prefix="rfsdk-classifier"
            )
        return self._executor

    # ----- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Stop this chat: cancel its turns, shut its classifier threads down, and free the
        model if rfsdk loaded it (a ``Llama`` passed in stays open for its owner).

        Waits for a running turn to end (within one token). Calling it again does nothing;
        a turn started afterwards raises :class:`rfsdk.ChatClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        self.cancel()
        with self._lock.hold():
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            if self._owns_llm:
                self.llm.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> GuardedChat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


