"""Classifier cross-checks of one turn, run off the streaming thread with a deadline each."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Literal, get_args

from .classifiers.base import Classifier
from .events import Check, CheckStage, Flag, Verdict

CrossCheckMode = Literal["confirm", "backstop", "both"]
"""How a classifier works with <rf>: "confirm" must agree before the policy acts on an <rf>
flag; "backstop" checks the prompt, the stream and the finished reply for what <rf> missed;
"both" does both."""

CROSS_CHECK_MODES: tuple[str, ...] = get_args(CrossCheckMode)

_WAIT_SLICE_S = 0.05


@dataclass
class _Pending:
    stage: CheckStage
    position: int
    future: concurrent.futures.Future
    submitted: float
    flag: Flag | None


def _classify(classifier: Classifier, prompt: str, reply: str) -> tuple[Verdict, float]:
    verdict = classifier.classify(prompt, reply)
    if not isinstance(verdict, Verdict):
        raise TypeError(f"classify() returned {type(verdict).__name__}, not a Verdict")
    return verdict, time.perf_counter()


class TurnChecks:
    """The classifier checks of one turn: submitted to ``executor``, settled in submission order.

    A check settles when its verdict arrives, when the classifier raises, or ``timeout_s``
    after submission (the classifier call is then abandoned: its thread finishes it, and
    the result is ignored). A settled check without a verdict carries the reason in
    ``error``.
    """

    def __init__(
        self,
        classifier: Classifier,
        executor: concurrent.futures.Executor,
        prompt: str,
        timeout_s: float,
    ) -> None:
        self._classifier = classifier
        self._executor = executor
        self._prompt = prompt
        self._timeout_s = timeout_s
        self._pending: list[_Pending] = []
        self.settled: list[Check] = []

    def submit(self, stage: CheckStage, position: int, reply: str, flag: Flag | None = None) -> _Pending:
        """Start judging the prompt with ``reply`` (the reply so far; "" for the prompt alone)."""
        started = time.perf_counter()
        try:
            future = self._executor.submit(_classify, self._classifier, self._prompt, reply)
        except RuntimeError as exc:  # the executor was shut down
            future = concurrent.futures.Future()
            future.set_exception(exc)
        pending = _Pending(stage, position, future, started, flag)
        self._pending.append(pending)
        return pending

    def running(self, stage: CheckStage | None = None) -> list[_Pending]:
        """The checks (of ``stage``, or all) that have not settled yet, in submission order."""
        return [p for p in self._pending if stage is None or p.stage == stage]

    def wait(self, pending: _Pending, cancel: threading.Event) -> Check | None:
        """Block until ``pending`` settles and return its check; None if ``cancel`` was set first."""
        deadline = pending.submitted + self._timeout_s
        while not pending.future.done():
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            if cancel.is_set():
                self._pending.remove(pending)
                return None
            concurrent.futures.wait([pending.future], timeout=min(left, _WAIT_SLICE_S))
        self._pending.remove(pending)
        return self._settle(pending)

    def ready(self) -> list[Check]:
        """Checks that settled since the last call (verdict, failure or timeout), in submission order."""
        now = time.perf_counter()
        done = [p for p in self._pending if p.future.done() or now >= p.submitted + self._timeout_s]
        for p in done:
            self._pending.remove(p)
        return [self._settle(p) for p in done]

    def drop(self, stage: CheckStage | None = None) -> None:
        """Forget the checks (of ``stage``, or all) still running; their results will be ignored."""
        for p in self.running(stage):
            p.future.cancel()
            self._pending.remove(p)

    def _settle(self, pending: _Pending) -> Check:
        name = self._classifier.name
        verdict: Verdict | None = None
        error: str | None = None
        latency = self._timeout_s
        if pending.future.done():
            try:
                verdict, finished = pending.future.result()
                latency = finished - pending.submitted
            except Exception as exc:  # noqa: BLE001 - any classifier failure becomes a reported error
                error = f"classifier {name!r} failed on the {pending.stage} check: {type(exc).__name__}: {exc}"
                latency = time.perf_counter() - pending.submitted
        else:
            pending.future.cancel()
            error = f"classifier {name!r} gave no verdict on the {pending.stage} check within {self._timeout_s:g} s"
        check = Check(
            stage=pending.stage,
            position=pending.position,
            verdict=verdict,
            error=error,
            latency_s=max(latency, 0.0),
            flag=pending.flag,
        )
        self.settled.append(check)
        return check
