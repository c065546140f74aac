"""Train the text classifier (:class:`rfsdk.classifiers.TextClassifier`) on the rfsdk dataset.

:func:`train` fits on the train split, picks the threshold on the validation split (the
lowest one with a false-positive rate at most ``target_fpr`` on conversations) and the logit
offset of prompts judged alone (the same false-positive rate on validation prompts at that
threshold), and measures validation and test figures. ``rf-train text-classifier`` runs it and
writes the weights (by default over the shipped file). It needs the dataset but only numpy to
fit (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from rfsdk.calibration import DetectionMetrics, detection_metrics, threshold_for_fpr
from rfsdk.classifiers import text_features
from rfsdk.classifiers.base import Pair
from rfsdk.classifiers.text import TextClassifier

from .data import load_dataset

HARMFUL_PROMPT_KINDS = frozenset({"harmful_prompt", "harmful_answer", "refused_answer"})
"""Dataset kinds whose prompt is a harmful request (a refused answer makes the pair benign)."""
HEAD_WORDS = 40
"""Answers longer than this also train as their opening, as a stream check sees them."""


class SplitFigures(BaseModel):
    """Detection figures of the text classifier on one split."""

    model_config = ConfigDict(frozen=True)

    split: str
    conversations: DetectionMetrics
    prompts: DetectionMetrics


def training_pairs(examples: Sequence) -> tuple[list[Pair], np.ndarray]:
    """Pairs and labels from dataset examples: each conversation, its prompt alone, and its answer's opening."""
    pairs: list[Pair] = []
    labels: list[bool] = []
    for e in examples:
        harmful = e.label == "harmful"
        pairs.append((e.prompt, e.answer or ""))
        labels.append(harmful)
        if e.answer:
            pairs.append((e.prompt, ""))
            labels.append(e.kind in HARMFUL_PROMPT_KINDS)
            words = e.answer.split()
            if len(words) > HEAD_WORDS:
                pairs.append((e.prompt, " ".join(words[:HEAD_WORDS])))
                labels.append(harmful)
    return pairs, np.asarray(labels, dtype=bool)


def evaluation_sets(examples: Sequence) -> dict[str, tuple[list[Pair], np.ndarray]]:
    """"conversations": each example as it is; "prompts": each distinct prompt alone."""
    conversations = [(e.prompt, e.answer or "") for e in examples]
    prompt_label: dict[str, bool] = {}
    for e in examples:
        prompt_label[e.prompt] = prompt_label.get(e.prompt, False) or e.kind in HARMFUL_PROMPT_KINDS
    return {
        "conversations": (conversations, np.array([e.label == "harmful" for e in examples])),
        "prompts": ([(p, "") for p in prompt_label], np.array(list(prompt_label.values()))),
    }


def fit(
    pairs: Sequence[Pair], labels: np.ndarray, *, l2: float = 1e-5, steps: int = 300, lr: float = 0.05
) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression, full-batch Adam; returns (weights, bias)."""
    x = text_features.featurize(pairs)
    rows = x.row_ids()
    y = labels.astype(np.float64)
    pos = max(y.sum(), 1.0)
    neg = max(len(y) - y.sum(), 1.0)
    sample_w = np.where(y > 0, 0.5 / pos, 0.5 / neg)
    w = np.zeros(text_features.DIM)
    b = np.log(pos / neg)
    m, v = np.zeros(text_features.DIM + 1), np.zeros(text_features.DIM + 1)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        p = 1.0 / (1.0 + np.exp(-np.clip(x.dot(w) + b, -50, 50)))
        residual = sample_w * (p - y)
        grad = np.empty(text_features.DIM + 1)
        grad[:-1] = np.bincount(x.indices, weights=x.values * residual[rows], minlength=text_features.DIM)
        grad[:-1] += l2 * w
        grad[-1] = residual.sum()
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        update = lr * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
        w -= update[:-1]
        b -= update[-1]
    return w.astype(np.float32), float(b)


def split_figures(classifier: TextClassifier, examples: Sequence, split: str) -> SplitFigures:
    """Figures at the classifier's threshold on one split's conversations and prompts."""
    metrics = {}
    for name, (pairs, labels) in evaluation_sets(examples).items():
        scores = classifier.scores(pairs)
        metrics[name] = detection_metrics(scores[labels], scores[~labels], classifier.threshold)
    return SplitFigures(split=split, **metrics)


def train(*, target_fpr: float = 0.05, steps: int = 300) -> tuple[TextClassifier, list[SplitFigures]]:
    """Fit on train, choose the threshold on validation, measure validation and test."""
    dataset = load_dataset()
    train_examples = dataset.split("train")
    validation = dataset.split("validation")
    pairs, labels = training_pairs(train_examples)
    weights, bias = fit(pairs, labels, steps=steps)
    classifier = TextClassifier(weights, bias, 0.5)
    # Quantise first, so the threshold is chosen for the weights that ship.
    classifier.weights = _quantised(classifier.weights)
    sets = evaluation_sets(validation)
    pairs_val, labels_val = sets["conversations"]
    scores = classifier.scores(pairs_val)
    classifier.threshold = min(threshold_for_fpr(scores[~labels_val], target_fpr), 1.0)
    prompts_val, prompt_labels = sets["prompts"]
    prompt_scores = classifier.scores(prompts_val)
    prompt_threshold = threshold_for_fpr(prompt_scores[~prompt_labels], target_fpr)
    classifier.prompt_bias = _logit(classifier.threshold) - _logit(prompt_threshold)
    figures = [
        split_figures(classifier, validation, "validation"),
        split_figures(classifier, dataset.split("test", evaluation=True), "test"),
    ]
    classifier.info = {
        "trained_on": "rfsdk dataset, train split",
        "train_pairs": len(pairs),
        "threshold_rule": f"lowest threshold with validation FPR <= {target_fpr} on conversations and, "
        "with prompt_bias, on prompts alone",
        "figures": [f.model_dump() for f in figures],
    }
    return classifier, figures


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return float(np.log(p / (1.0 - p)))


def _quantised(weights: np.ndarray) -> np.ndarray:
    scale = float(np.abs(weights).max()) / 127.0 or 1.0
    return (np.clip(np.round(weights / scale), -127, 127) * scale).astype(np.float32)


def figures_table(figures: list[SplitFigures]) -> str:
    """The figures as a Markdown table, one row per split and set."""
    lines = [
        "| split | set | threshold | TPR | FPR | ROC-AUC | harmful | benign |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        for name in ("conversations", "prompts"):
            m: DetectionMetrics = getattr(f, name)
            lines.append(
                f"| {f.split} | {name} | {m.threshold:.3f} | {m.tpr:.3f} | {m.fpr:.3f} | {m.roc_auc:.3f} "
                f"| {m.n_harmful} | {m.n_benign} |"
            )
    return "\n".join(lines)
