"""Classifiers that cross-check the <rf> guard: one protocol, three kinds.

* :class:`TextClassifier`: hashed n-gram logistic regression, numpy only, shipped weights
  (``TextClassifier.load()``);
* :class:`LlamaJudge`: a GGUF judge through llama.cpp, with the Llama Guard 3 prompt or a
  generic yes/no question;
* any function ``(prompt, reply) -> Verdict | bool | score`` (:class:`FunctionClassifier`).

Each judges a conversation with ``classify(prompt, reply) -> Verdict`` (reply "" judges
the prompt alone) and many with ``classify_batch(pairs)``. Pass one to
``GuardedChat(..., classifier=..., cross_check=...)``.
"""

from ..events import Verdict
from .base import Classifier, ClassifierFn, ClassifierLike, FunctionClassifier, Pair, as_classifier
from .judge import LlamaJudge
from .judge_formats import LLAMA_GUARD_3_CATEGORIES, JudgeFormat, LlamaGuard3Format, YesNoFormat
from .text import TextClassifier

__all__ = [
    "Classifier",
    "ClassifierFn",
    "ClassifierLike",
    "FunctionClassifier",
    "JudgeFormat",
    "LLAMA_GUARD_3_CATEGORIES",
    "LlamaGuard3Format",
    "LlamaJudge",
    "Pair",
    "TextClassifier",
    "Verdict",
    "YesNoFormat",
    "as_classifier",
]
