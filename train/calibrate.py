"""Choose the <rf> threshold on the validation split through llama.cpp, on the exported GGUF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rfsdk import GuardedChat
from rfsdk.calibration import DetectionMetrics, detection_metrics, threshold_for_fpr
from rfsdk.evaluation.attacks import prompt_scores

from .llama_settings import llama_settings
from .prompt_sets import PromptSet


class Calibration(BaseModel):
    """The chosen threshold and what it gives on the validation prompts."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    target_fpr: float
    validation: DetectionMetrics
    edgy_fpr: float
    n_harmful: int
    n_benign: int
    near_duplicates_left_out: int = 0


def calibrate(
    model: Path,
    prompts: PromptSet,
    *,
    target_fpr: float,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Score P(<rf>) at the reply start of every validation prompt; pick the threshold for ``target_fpr``.

    ``n_threads`` and ``n_gpu_layers`` default to the :func:`~rfsdk.train.llama_settings.llama_settings` in force.
    """
    ambient = llama_settings()
    chat = GuardedChat(
        model, n_threads=n_threads or ambient.n_threads,
        n_gpu_layers=ambient.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
    )
    total = len(prompts.harmful) + len(prompts.benign)

    def tick(offset: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda done: progress("calibrating", offset + done, total))

    harmful = prompt_scores(chat, prompts.harmful, tick(0))
    benign = prompt_scores(chat, prompts.benign, tick(len(prompts.harmful)))
    threshold = threshold_for_fpr(benign, target_fpr)
    edgy = set(prompts.edgy)
    edgy_scores = [s for p, s in zip(prompts.benign, benign) if p in edgy]
    return Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        validation=detection_metrics(harmful, benign, threshold),
        edgy_fpr=sum(s >= threshold for s in edgy_scores) / max(len(edgy_scores), 1),
        n_harmful=len(harmful),
        n_benign=len(benign),
        near_duplicates_left_out=prompts.near_duplicates_left_out,
    )
