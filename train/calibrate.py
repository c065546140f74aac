"""Choose the <rf> threshold on the validation split through llama.cpp, on the exported GGUF."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rfsdk import GuardedChat
from rfsdk.calibration import DetectionMetrics, detection_metrics, threshold_for_fpr
from rfsdk.evaluation.attacks import prompt_scores

from .llama_settings import llama_settings
from .prompt_sets import PromptSet


SUITE_FPR_LIMITS: dict[str, float] = {"everyday requests": 0.02}
"""The most a benign suite may be flagged at the chosen threshold: a user meets everyday requests most.

The contrastive suite is reported, not limited: on the default model a 5% limit on it raised
the threshold from 0.43 to 0.91 and cut validation TPR from 0.91 to 0.73.
"""


class Calibration(BaseModel):
    """The chosen threshold and what it gives on the validation prompts."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    target_fpr: float
    validation: DetectionMetrics
    edgy_fpr: float
    suite_fpr: dict[str, float] = {}
    """False-positive rate at the threshold of each benign suite of the validation prompts (everyday, contrastive, ...)."""
    suite_fpr_limits: dict[str, float] = {}
    """The limits the threshold was chosen to meet as well (``SUITE_FPR_LIMITS``)."""
    n_harmful: int
    n_benign: int
    near_duplicates_left_out: int = 0


def calibrate(
    model: Path,
    prompts: PromptSet,
    *,
    target_fpr: float,
    suite_fpr_limits: Mapping[str, float] = SUITE_FPR_LIMITS,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Score P(<rf>) at the reply start of every validation prompt; pick the threshold.

    The threshold is the lowest that keeps the false-positive rate over all benign prompts
    within ``target_fpr`` and that of each named benign suite within its limit.
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
    scores = dict(zip(prompts.benign, benign))
    suites = {name: suite for name, suite in prompts.benign_suites().items() if suite}
    limits = {name: limit for name, limit in suite_fpr_limits.items() if name in suites}
    threshold = max([
        threshold_for_fpr(benign, target_fpr),
        *(threshold_for_fpr([scores[p] for p in suites[name]], limit) for name, limit in limits.items()),
    ])

    def fpr(suite: list[str]) -> float:
        return sum(scores[p] >= threshold for p in suite) / max(len(suite), 1)

    return Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        validation=detection_metrics(harmful, benign, threshold),
        edgy_fpr=fpr(prompts.edgy),
        suite_fpr={name: fpr(suite) for name, suite in suites.items()},
        suite_fpr_limits=limits,
        n_harmful=len(harmful),
        n_benign=len(benign),
        near_duplicates_left_out=prompts.near_duplicates_left_out,
    )
