"""A fast text classifier: logistic regression over hashed n-gram features, numpy only.

The shipped weights (``rfsdk/classifiers/data/text_classifier.npz``, ~0.2 MB) were
trained on the rfsdk dataset's train split by ``rf-train text-classifier``;
the threshold was chosen on the validation split. A prompt judged alone (reply "") has
no reply features, so its logit gets its own offset, chosen so that the one threshold
meets the same validation false-positive rate on prompts alone. It judges a few thousand
conversations per second on one core, so it suits stream moderation and backstops; it
knows only the words of its training data, so it is a cross-check, not a guard on its own.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..events import Verdict
from . import text_features
from .base import Classifier, Pair

WEIGHTS_FILE = "text_classifier.npz"


def default_weights_path() -> Path:
    """The weights file shipped inside the package."""
    return Path(str(resources.files("rfsdk.classifiers") / "data" / WEIGHTS_FILE))


class TextClassifier(Classifier):
    """Logistic regression on :mod:`~rfsdk.classifiers.text_features`; score = P(harmful).

    ``TextClassifier.load()`` loads the shipped weights; ``threshold`` overrides the
    threshold saved with them. ``prompt_bias`` is added to the logit of a prompt judged
    alone. ``info`` holds what the training run recorded (dataset, metrics).
    """

    name = "text"

    def __init__(
        self,
        weights: np.ndarray,
        bias: float,
        threshold: float,
        *,
        prompt_bias: float = 0.0,
        info: dict | None = None,
    ) -> None:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (text_features.DIM,):
            raise ConfigError(f"weights must have shape ({text_features.DIM},), not {weights.shape}")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], not {threshold}")
        self.weights = weights
        self.bias = float(bias)
        self.prompt_bias = float(prompt_bias)
        self.threshold = float(threshold)
        self.info = dict(info or {})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, threshold: float | None = None) -> "TextClassifier":
        """Weights saved by :meth:`save` (by default the shipped ones)."""
        path = Path(path) if path is not None else default_weights_path()
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            if info.get("feature_format") != text_features.FORMAT:
                raise ConfigError(
                    f"{path} was trained on feature format {info.get('feature_format')}, but this rfsdk "
                    f"computes format {text_features.FORMAT}; retrain with rf-train text-classifier"
                )
            weights = data["weights"].astype(np.float32) * float(data["scale"])
            bias = float(data["bias"])
            prompt_bias = float(data["prompt_bias"])
            saved_threshold = float(data["threshold"])
        chosen = saved_threshold if threshold is None else threshold
        return cls(weights, bias, chosen, prompt_bias=prompt_bias, info=info)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights (8-bit, one scale) with the bias, threshold and ``info``."""
        path = Path(path)
        scale = float(np.abs(self.weights).max()) / 127.0 or 1.0
        quantised = np.clip(np.round(self.weights / scale), -127, 127).astype(np.int8)
        info = {**self.info, "feature_format": text_features.FORMAT}
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                weights=quantised,
                scale=np.float64(scale),
                bias=np.float64(self.bias),
            prompt_bias=np.float64(self.prompt_bias),
                threshold=np.float64(self.threshold),
                info=np.array(json.dumps(info)),
            )
        return path

    def scores(self, pairs: Sequence[Pair]) -> np.ndarray:
        """P(harmful) of each (prompt, reply) pair."""
        alone = np.array([not reply for _, reply in pairs], dtype=bool)
        logits = text_features.featurize(pairs).dot(self.weights) + self.bias + self.prompt_bias * alone
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))

    def classify(self, prompt: str, reply: str = "") -> Verdict:
        return self.classify_batch([(prompt, reply)])[0]

    def classify_batch(self, pairs: Sequence[Pair]) -> list[Verdict]:
        return [
            Verdict(harmful=bool(s >= self.threshold), score=float(s), classifier=self.name)
            for s in self.scores(pairs)
        ]
