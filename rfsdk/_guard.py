"""Per-step red-flag detection, run inside llama.cpp's sampler as a logits processor."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .config import SamplingConfig
from .events import ErrorEvent, Flag, FlagSource
from ._policies import ACTIONS, PolicyFn
from ._sampling_chain import repeat_penalty_range, sample_probability

StopReason = Literal["halt", "cancelled", "error"]
"""Why the guard ended a reply."""
Decision = Literal["halt", "continue", "reflect", "error"]
"""What :meth:`TurnGuard.decide` settled on: the policy's action, or "error" when the policy failed."""
_NO_TOKENS = np.empty(0, dtype=np.intp)


class TurnGuard:
    """Watches P(<rf>) at every step of one reply and steers sampling.

    Called by llama-cpp-python with the full-vocabulary logits before each token is
    sampled. It measures P(<rf>) (softmax at temperature 1), decides whether <rf>
    would be sampled (a draw from what llama.cpp's sampler would keep under ``sampling``:
    the repeat penalty on the last ``penalty_window`` tokens it picked, top-k, top-p, min-p,
    temperature; greedy: <rf> is the argmax), raises a flag when P(<rf>) >= threshold or, with ``flag_sampled``,
    when <rf> would be sampled below it, asks the policy, and then masks <rf> out,
    forces it in (reflect), or forces end-of-turn (halt, cancel). It never raises:
    llama.cpp calls it through ctypes, which would swallow the exception.

    Within a run of consecutive flagged steps it raises a flag at the run's first step and
    again at every step whose P(<rf>) is above the highest P(<rf>) already flagged in that run
    (a policy that scales with the probability sees the run's risk each time it rises: 0.68,
    0.89, 0.79, 0.39 raises flags at 0.68 and 0.89). A step that is not flagged ends the run.

    With ``defer=True`` (a classifier must confirm flags first) it does not ask the
    policy: it masks <rf>, records the flag in ``deferred`` with no action, and leaves
    the decision to the caller, who later calls :meth:`decide` with the confirmed flag.
    """

    def __init__(
        self,
        *,
        rf_id: int | None,
        stop_id: int,
        threshold: float,
        flag_sampled: bool,
        policy: PolicyFn,
        sampling: SamplingConfig,
        rng: random.Random,
        cancel: threading.Event,
        max_reflections: int = 1,
        defer: bool = False,
        penalty_window: int = 64,
    ) -> None:
        self._rf = rf_id
        self._stop_id = stop_id
        self._threshold = threshold
        self._flag_sampled = flag_sampled
        self._policy = policy
        self._sampling = sampling
        self._rng = rng
        self._cancel = cancel
        self._reflections_left = max_reflections
        self._defer = defer
        self._penalty_window = penalty_window
        self._generation_start: int | None = None
        self._context: np.ndarray | None = None
        self._in_episode = False
        self._episode_peak = 0.0
        """The highest P(<rf>) flagged in the current run of flagged steps."""
        self._buf: np.ndarray | None = None
        self.position = 0
        self.text_so_far = ""
        self.last_probability = 0.0
        self.prompt_probability = 0.0
        self.max_probability = 0.0
        self._prefill_peak: float | None = None
        self.new_flags: list[Flag] = []
        self.deferred: list[Flag] = []
        self.stop_reason: StopReason | None = None
        self.error: ErrorEvent | None = None
        self.interrupt: BaseException | None = None
        """A KeyboardInterrupt (or other BaseException) the policy raised: the turn halts, and
        the engine raises it again once the turn has ended cleanly."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        try:
            if self._generation_start is None:
                self._generation_start = len(input_ids)
            self._context = input_ids
            self._step(scores)
        except BaseException as exc:  # noqa: BLE001 - must not escape into ctypes
            self.error = ErrorEvent(message=f"guard failed: {type(exc).__name__}: {exc}", where="guard")
            self.stop_reason = "error"
            self._force(scores, self._stop_id)
        self.position += 1
        return scores

    def _step(self, scores: np.ndarray) -> None:
        if self._cancel.is_set():
            self.stop_reason = "cancelled"
            self._force(scores, self._stop_id)
            return
        if self._rf is None:
            return
        source = self._detect(scores)
        if not math.isfinite(self.last_probability):
            self._fail_closed(scores)
            return
        if source is None:
            self._in_episode = False
            scores[self._rf] = -np.inf
            return
        if self._in_episode and not self.last_probability > self._episode_peak:
            scores[self._rf] = -np.inf  # the run's risk has not risen since its last flag
            return
        self._in_episode = True
        self._episode_peak = self.last_probability
        flag = Flag(
            position=self.position,
            probability=self.last_probability,
            source=source,
            text_so_far=self.text_so_far,
        )
        if self._defer:
            self.deferred.append(flag)
            scores[self._rf] = -np.inf
            return
        action = self.decide(flag)
        if action == "halt":
            self.stop_reason = "halt"
            self._force(scores, self._stop_id)
        elif action == "reflect":
            self._force(scores, self._rf)
        elif action == "continue":
            scores[self._rf] = -np.inf
        else:  # the policy failed; _decide recorded why
            self.stop_reason = "error"
            self._force(scores, self._stop_id)

    def _detect(self, scores: np.ndarray) -> FlagSource | None:
        if self._buf is None or self._buf.shape != scores.shape:
            self._buf = np.empty(scores.shape, dtype=scores.dtype)
        # llama-cpp-python hands over a strided view into its candidate records: read it
        # once into a contiguous buffer, where max, exp and sum run at full speed.
        buf = self._buf
        np.copyto(buf, scores)
        top = float(buf.max())
        rf_logit = float(buf[self._rf])
        buf -= top
        np.exp(buf, out=buf)
        p = math.exp(rf_logit - top) / float(buf.sum()) if math.isfinite(top) else math.nan
        if self.position == 0:
            if self._prefill_peak is None:
                self.prompt_probability = p
            else:  # a prefilled reply's first position stands for its whole opening
                p = max(p, self._prefill_peak) if math.isfinite(self._prefill_peak) else math.nan
        self.last_probability = p
        if not math.isfinite(p):
            return None
        self.max_probability = max(self.max_probability, p)
        above = p >= self._threshold
        if not (above or self._flag_sampled):
            return None
        sampled = self._sampled(scores, top, rf_logit)
        if not (above or sampled):
            return None
        if self.position == 0:
            return "prompt"
        return "sampled" if sampled else "threshold"

    def _fail_closed(self, scores: np.ndarray) -> None:
        # Non-finite logits (a setting such as a negative rope_freq_base, a broken quantization,
        # an overflow) give no P(<rf>) to judge: the step counts as flagged and the turn halts.
        self.new_flags.append(
            Flag(
                position=self.position,
                probability=self.last_probability,
                source="prompt" if self.position == 0 else "threshold",
                text_so_far=self.text_so_far,
                action="halt",
            )
        )
        self.error = ErrorEvent(
            message=f"P(<rf>) is not a number at reply step {self.position}: the model's logits are not finite "
            "(a llama.cpp setting, a broken quantization or an overflow), so the guard cannot judge the "
            "reply and stopped it. Check the model and its settings.",
            where="guard",
        )
        self.stop_reason = "error"
        self._force(scores, self._stop_id)

    def _sampled(self, scores: np.ndarray, top: float, rf_logit: float) -> bool:
        recent = self._recent_tokens()
        rf_high, top_low = rf_logit, top
        if len(recent):
            penalty = self._sampling.repeat_penalty
            rf_high, top_low = repeat_penalty_range(rf_logit, penalty)[1], repeat_penalty_range(top, penalty)[0]
        t = self._sampling.temperature
        draw = self._rng.random() if t > 0 else 0.0
        if rf_high < top_low:
            if t <= 0:
                return False
            # The most likely token is always kept, so <rf>'s chance is at most e / (1 + e):
            # most steps end here without working out the sampler's cut-offs.
            e = math.exp((rf_high - top_low) / t)
            if draw >= e / (1.0 + e):
                return False
        assert self._rf is not None, "only asked when the model has <rf>"
        return draw < sample_probability(scores, self._rf, self._sampling, recent)

    def _recent_tokens(self) -> np.ndarray:
        # The tokens llama.cpp's repeat penalty applies to: those its sampler picked since
        # this generate() call began (a restart builds a new sampler), the last window of them.
        if self._sampling.repeat_penalty == 1.0 or self._penalty_window <= 0 or self._context is None:
            return _NO_TOKENS
        assert self._generation_start is not None
        start = max(self._generation_start, len(self._context) - self._penalty_window)
        return self._context[start:]

    def open_with(self, probabilities: Sequence[float]) -> None:
        """Take P(<rf>) over a prefilled reply's opening, the reply start first, measured before
        generation (:mod:`rfsdk._prefill_check`): the first step counts the highest as its own.
        An empty list (the measurement was cancelled) changes nothing."""
        if probabilities:
            self.prompt_probability = probabilities[0]
            finite = all(math.isfinite(p) for p in probabilities)
            self._prefill_peak = max(probabilities) if finite else math.nan

    def decide(self, flag: Flag, *, can_reflect: bool = True) -> Decision:
        """Ask the policy about ``flag``, record it with the action, and return the action.

        Returns "error" (recording why in ``error``; a ``BaseException`` such as
        ``KeyboardInterrupt`` is kept in ``interrupt``) when the policy raises or answers
        nonsense, and the flag is recorded as halted; "reflect" becomes "continue" once ``max_reflections`` are used up, and
        "halt" when ``can_reflect`` is false (no room left in the context or token budget).
        """
        try:
            action = self._policy(flag)
        except BaseException as exc:  # noqa: BLE001 - a user policy may raise anything, even KeyboardInterrupt
            self.error = ErrorEvent(message=f"policy raised {type(exc).__name__}: {exc}", where="policy")
            if not isinstance(exc, Exception):
                self.interrupt = exc
            action = None
        if action not in ACTIONS:
            if self.error is None:
                self.error = ErrorEvent(
                    message=f"policy returned {action!r}; expected one of {', '.join(ACTIONS)}", where="policy"
                )
            self.new_flags.append(flag.model_copy(update={"action": "halt"}))
            return "error"
        if action == "reflect":
            if not can_reflect:
                action = "halt"
            elif self._reflections_left <= 0:
                action = "continue"
            else:
                self._reflections_left -= 1
        self.new_flags.append(flag.model_copy(update={"action": action}))
        return action

    def rewind(self, position: int, text: str) -> None:
        """Continue from reply step ``position`` with <rf> just put into the context there,
        in a new generate() call (whose sampler has picked no tokens yet). The run of flagged
        steps goes on: the next step raises a flag only if its P(<rf>) is higher still."""
        self.position = position
        self.text_so_far = text
        self._in_episode = True
        self._generation_start = None

    @staticmethod
    def _force(scores: np.ndarray, token_id: int) -> None:
        scores[:] = -np.inf
        scores[token_id] = 0.0

    def take_flags(self) -> list[Flag]:
        """Flags raised since the last call."""
        flags, self.new_flags = self.new_flags, []
        return flags
