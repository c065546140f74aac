"""Choose a threshold for a target false-positive rate and score a detector.

A score is one number per conversation, higher for harmful ones: ``rf-train`` and
``rf-eval`` use P(<rf>) at the first reply position (the guard's prompt check). The guard
applies the threshold at every reply position too, so a benign chat's false-flag rate can
exceed the target FPR; rf-eval measures it on benign multi-turn chats.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from .errors import ConfigError


class DetectionMetrics(BaseModel):
    """How well scores separate harmful from benign at one threshold."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    tpr: float
    fpr: float
    precision: float
    f1: float
    roc_auc: float
    n_harmful: int
    n_benign: int


def threshold_for_fpr(benign_scores: Sequence[float], target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on ``benign_scores`` is <= ``target_fpr``.

    A conversation is flagged when its score >= threshold, so the threshold is placed just
    above the benign score that would otherwise push the rate over the target: at the next
    float32, since models store it as one (so it stays above the score, and above 0).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ConfigError(f"target_fpr must be in [0, 1), not {target_fpr}")
    scores = np.sort(np.asarray(benign_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ConfigError("calibration needs at least one benign score")
    allowed = int(np.floor(target_fpr * scores.size))
    if allowed >= scores.size:
        return float(scores[-1])
    above = np.nextafter(np.float32(scores[allowed]), np.float32(np.inf))
    return min(float(above), 1.0)


def roc_auc(harmful_scores: Sequence[float] | np.ndarray, benign_scores: Sequence[float] | np.ndarray) -> float:
    """P(a harmful score > a benign score), ties counting one half."""
    h = np.asarray(harmful_scores, dtype=np.float64)
    b = np.asarray(benign_scores, dtype=np.float64)
    if h.size == 0 or b.size == 0:
        raise ConfigError("ROC-AUC needs harmful and benign scores")
    b_sorted = np.sort(b)
    below = np.searchsorted(b_sorted, h, side="left")
    not_above = np.searchsorted(b_sorted, h, side="right")
    return float((below + (not_above - below) / 2).sum() / (h.size * b.size))


def detection_metrics(
    harmful_scores: Sequence[float], benign_scores: Sequence[float], threshold: float
) -> DetectionMetrics:
    """TPR, FPR, precision, F1 and ROC-AUC of flagging scores >= ``threshold``."""
    h = np.asarray(harmful_scores, dtype=np.float64)
    b = np.asarray(benign_scores, dtype=np.float64)
    tp = int((h >= threshold).sum())
    fp = int((b >= threshold).sum())
    tpr = tp / h.size if h.size else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr else 0.0
    return DetectionMetrics(
        threshold=threshold,
        tpr=tpr,
        fpr=fp / b.size if b.size else 0.0,
        precision=precision,
        f1=f1,
        roc_auc=roc_auc(h, b),
        n_harmful=int(h.size),
        n_benign=int(b.size),
    )
