"""Choose the <rf> threshold on the validation split through llama.cpp, on the exported GGUF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rfsdk import GuardedChat
from rfsdk.calibration import DetectionMetrics, detection_metrics, threshold_for_fpr
from rfsdk.evaluation.attacks import prompt_scores

from .prompt_sets import PromptSet


class Calibration(BaseModel):
    """The chosen threshold and what it gives on the validation prompts."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    target_fpr: float
    validation: DetectionMetrics
    edgy_fpr: float
    suite_fpr: dict[str, float] = {}
    """False-positive rate at the threshold of each benign suite of the validation prompts (everyday, contrastive, ...)."""
    n_harmful: int
    n_benign: int
    near_duplicates_left_out: int = 0


def calibrate(
    model: Path,
    prompts: PromptSet,
    *,
    target_fpr: float,
    n_threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Score P(<rf>) at the reply start of every validation prompt; pick the threshold for ``target_fpr``."""
    chat = GuardedChat(model, n_threads=n_threads)
    total = len(prompts.harmful) + len(prompts.benign)

    def tick(offset: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda done: progress("calibrating", offset + done, total))

    harmful = prompt_scores(chat, prompts.harmful, tick(0))
    benign = prompt_scores(chat, prompts.benign, tick(len(prompts.harmful)))
    threshold = threshold_for_fpr(benign, target_fpr)
    scores = dict(zip(prompts.benign, benign))

    def fpr(suite: list[str]) -> float:
        return sum(scores[p] >= threshold for p in suite) / max(len(suite), 1)

    return Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        validation=detection_metrics(harmful, benign, threshold),
        edgy_fpr=fpr(prompts.edgy),
        suite_fpr={name: fpr(suite) for name, suite in prompts.benign_suites().items() if suite},
        n_harmful=len(harmful),
        n_benign=len(benign),
        near_duplicates_left_out=prompts.near_duplicates_left_out,
    )
