"""Choose the adapter's LoRA strength after training: the strongest one within a utility budget.

The LoRA delta is scaled by a strength in (0, 1]; the benign KL to the base grows with it
and so does detection. On the validation split, bisection finds the largest strength whose
mean KL(base || <rf> model) per benign answer token stays within ``max_kl``; the threshold is
then calibrated again for that strength. A strength profile weighs the modules against each
other first (attention and MLP, in the first and second half of the layers): each profile
tried gets its own strength and calibration, and the one with the highest validation TPR at
the target FPR is kept. Everything is measured through llama.cpp on the GGUF that
``rf-convert patch`` assembles, as users get it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rfsdk.convert.adapter import Adapter, load_adapter, save_adapter
from rfsdk.convert.patch import patch_gguf
from rfsdk.convert.reader import architecture, field_value, open_gguf
from rfsdk.errors import ConversionError
from rfsdk.evaluation.utility import AnswerKL

from .base import check_trained_on
from .calibrate import Calibration, calibrate
from .llama_settings import llama_settings
from .prompt_sets import PromptSet
from .strength_profiles import PROFILES, StrengthProfile


class StrengthTried(BaseModel):
    """One measured strength."""

    model_config = ConfigDict(frozen=True)

    strength: float
    kl_nats_per_token: float


class ProfileTuning(BaseModel):
    """One profile's strength within budget, every strength tried, and the calibration there."""

    model_config = ConfigDict(frozen=True)

    profile: StrengthProfile
    strength: float
    kl_nats_per_token: float
    tried: list[StrengthTried]
    calibration: Calibration


class Tuning(ProfileTuning):
    """The chosen profile's tuning, the budget, and every profile tried (the chosen one included)."""

    max_kl: float
    answer_pairs: int
    profiles: list[ProfileTuning]


def choose_strength(kl_at: Callable[[float], float], max_kl: float, *, steps: int = 5) -> list[StrengthTried]:
    """Measure strength 1, then bisect (0, 1) ``steps`` times for the largest strength with KL <= ``max_kl``.

    Returns every strength tried, in order; the chosen one is the largest within budget.
    """
    tried: list[StrengthTried] = []

    def within(strength: float) -> bool:
        tried.append(StrengthTried(strength=strength, kl_nats_per_token=kl_at(strength)))
        return tried[-1].kl_nats_per_token <= max_kl

    if within(1.0):
        return tried
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        if within(middle):
            low = middle
        else:
            high = middle
    if low == 0.0:
        raise ConversionError(
            f"even LoRA strength {high:g} changes benign answers by {tried[-1].kl_nats_per_token:.4f} nats/token, "
            f"over --max-kl {max_kl:g}. Allow a larger KL, tune with more --steps, or retrain with a higher "
            "--benign-kl-weight."
        )
    return tried


def chosen(tried: Sequence[StrengthTried], max_kl: float) -> StrengthTried:
    """The largest strength of ``tried`` within ``max_kl``."""
    return max((t for t in tried if t.kl_nats_per_token <= max_kl), key=lambda t: t.strength)


def best_profile(tunings: Sequence[ProfileTuning]) -> ProfileTuning:
    """The tuning with the highest validation TPR at its calibrated threshold (then ROC-AUC; then the first)."""
    return max(tunings, key=lambda t: (t.calibration.validation.tpr, t.calibration.validation.roc_auc))


def _with(
    rf: Adapter, path: Path, *, n_layers: int, profile: StrengthProfile, strength: float, threshold: float
) -> Path:
    metadata = rf.metadata.model_copy(update={"lora_strength": strength, "rf_threshold": threshold})
    loras = [replace(pair, weight=profile.weight(pair, n_layers)) for pair in rf.loras]
    save_adapter(path, metadata, rf.embedding, rf.output, loras)
    return path


def tune_strength(
    adapter: Path,
    base: Path,
    out: Path,
    *,
    answer_pairs: Sequence[tuple[str, str]],
    prompts: PromptSet,
    max_kl: float,
    target_fpr: float,
    profiles: Sequence[StrengthProfile] = (PROFILES["uniform"],),
    steps: int = 5,
    n_threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Tuning:
    """Write ``out``: ``adapter`` with the best of ``profiles`` at its strongest strength within ``max_kl``.

    Each profile gets its strength (bisection) and threshold (calibration); the one with the
    highest validation TPR is written, threshold included. Also writes ``out`` with the
    suffix ``.tune.json`` (the :class:`Tuning`).
    """
    rf = load_adapter(adapter)
    check_trained_on(adapter, rf, base)
    if not rf.loras:
        raise ConversionError(f"{adapter} has no LoRA weights, so there is no strength to tune.")
    if not profiles:
        raise ConversionError("no strength profile to tune; name at least one.")
    reader = open_gguf(base)
    # The profile's halves are the base model's, also for an adapter with LoRA on fewer layers.
    n_layers = int(field_value(reader, f"{architecture(reader)}.block_count") or max(p.layer for p in rf.loras) + 1)
    del reader
    # Next to OUT, not in the system temp (often in memory): the kept base side is about
    # 200 KB per answer token (1.6 GB for the default 60 validation pairs).
    with tempfile.TemporaryDirectory(prefix=".rf-tune-", dir=out.resolve().parent) as folder:
        measure_kl = AnswerKL(base, answer_pairs, keep_base_in=Path(folder), n_threads=n_threads,
                              n_gpu_layers=llama_settings().n_gpu_layers)

        def assembled(profile: StrengthProfile, strength: float) -> Path:
            staged = Path(folder) / "adapter.safetensors"
            _with(rf, staged, n_layers=n_layers, profile=profile, strength=strength, threshold=rf.metadata.rf_threshold)
            gguf = Path(folder) / "model.gguf"
            gguf.unlink(missing_ok=True)  # one 100+ MB model at a time
            patch_gguf(base, staged, gguf)
            return gguf

        def tuned(profile: StrengthProfile) -> ProfileTuning:
            def kl_at(strength: float) -> float:
                label = f"KL at strength {strength:.3f} ({profile.name})"
                if progress is not None:
                    progress(label, 0, 1)
                kl = measure_kl(assembled(profile, strength))[0]
                if progress is not None:
                    progress(label, 1, 1)
                return kl

            tried = choose_strength(kl_at, max_kl, steps=steps)
            best = chosen(tried, max_kl)
            calibration = calibrate(
                assembled(profile, best.strength), prompts, target_fpr=target_fpr, n_threads=n_threads, progress=progress
            )
            return ProfileTuning(
                profile=profile, strength=best.strength, kl_nats_per_token=best.kl_nats_per_token, tried=tried, calibration=calibration
            )

        tunings = [tuned(profile) for profile in profiles]
    best = best_profile(tunings)
    _with(rf, out, n_layers=n_layers, profile=best.profile, strength=best.strength, threshold=best.calibration.threshold)
    tuning = Tuning(**dict(best), max_kl=max_kl, answer_pairs=len(answer_pairs), profiles=tunings)
    out.with_suffix(".tune.json").write_text(json.dumps(json.loads(tuning.model_dump_json()), indent=1) + "\n", encoding="utf-8")
    return tuning
