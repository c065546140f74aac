"""The classifier protocol: judge one conversation (prompt, reply) and return a Verdict."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence, Union

from ..errors import ArgumentTypeError
from ..events import Verdict

Pair = tuple[str, str]
"""A conversation to judge: the user's prompt and the reply ("" to judge the prompt alone)."""

ClassifierFn = Callable[[str, str], Union[Verdict, bool, float]]
"""A plain function ``(prompt, reply) -> Verdict | bool | score in [0, 1]``."""


class Classifier(ABC):
    """Judges whether a conversation is harmful.

    ``classify(prompt, reply)`` judges the reply in the light of the prompt, or the
    prompt alone when ``reply`` is "". Implementations may be called from worker
    threads, several at once when chats share a classifier; the built-in ones are
    thread-safe. ``classify_batch`` judges many pairs; the default calls ``classify``
    for each, and classifiers that can do better (the text classifier) override it.
    """

    name: str = "classifier"

    @abstractmethod
    def classify(self, prompt: str, reply: str = "") -> Verdict:
        """The verdict on one conversation."""

    def classify_batch(self, pairs: Sequence[Pair]) -> list[Verdict]:
        """Verdicts on many conversations, in order."""
        return [self.classify(prompt, reply) for prompt, reply in pairs]


class FunctionClassifier(Classifier):
    """A classifier from a function returning a :class:`Verdict`, a bool, or a score.

    A score (a float in [0, 1]) is harmful at or above ``threshold``; a bool is taken
    as it is, with score 1.0 or 0.0.
    """

    def __init__(self, fn: ClassifierFn, *, threshold: float = 0.5, name: str | None = None) -> None:
        if not callable(fn):
            raise ArgumentTypeError(f"a classifier function must be callable, not {fn!r}")
        self._fn = fn
        self.threshold = threshold
        self.name = name or str(getattr(fn, "__name__", type(fn).__name__))

    def classify(self, prompt: str, reply: str = "") -> Verdict:
        out = self._fn(prompt, reply)
        if isinstance(out, Verdict):
            return out
        if isinstance(out, bool):
            return Verdict(harmful=out, score=float(out), classifier=self.name)
        if isinstance(out, (int, float)):
            return Verdict(harmful=out >= self.threshold, score=float(out), classifier=self.name)
        raise ArgumentTypeError(
            f"classifier {self.name!r} returned {type(out).__name__}; expected a Verdict, a bool "
            "or a score between 0 and 1"
        )


ClassifierLike = Union[Classifier, ClassifierFn]


def as_classifier(classifier: ClassifierLike) -> Classifier:
    """A :class:`Classifier` as it is; a function (or an object with a ``classify`` method) wrapped."""
    if isinstance(classifier, Classifier):
        return classifier
    method = getattr(classifier, "classify", None)
    if callable(method):
        return FunctionClassifier(method, name=type(classifier).__name__)
    if callable(classifier):
        return FunctionClassifier(classifier)
    raise ArgumentTypeError(
        f"classifier must be an rfsdk Classifier, an object with classify(prompt, reply), or a "
        f"function (prompt, reply) -> Verdict | bool | score, not {classifier!r}"
    )
