"""Choose the adapter's LoRA strength after training: the strongest one within a utility budget.

The LoRA delta is scaled by a strength in (0, 1]; the benign KL to the base grows with it
and so does detection. On the validation split, bisection finds the largest strength whose
mean KL(base || <rf> model) per benign answer token stays within ``max_kl``; the threshold is
then calibrated again for that strength. Everything is measured through llama.cpp on the
GGUF that ``rf-convert patch`` assembles, as users get it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rfsdk.convert.adapter import Adapter, load_adapter, save_adapter
from rfsdk.convert.patch import patch_gguf
from rfsdk.errors import ConversionError
from rfsdk.evaluation.utility import AnswerKL

from .calibrate import Calibration, calibrate
from .prompt_sets import PromptSet


class StrengthTried(BaseModel):
    """One measured strength."""

    model_config = ConfigDict(frozen=True)

    strength: float
    kl_nats_per_token: float


class Tuning(BaseModel):
    """The chosen strength, every strength tried, and the calibration at the chosen one."""

    model_config = ConfigDict(frozen=True)

    strength: float
    max_kl: float
    kl_nats_per_token: float
    tried: list[StrengthTried]
    answer_pairs: int
    calibration: Calibration


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


def _with(rf: Adapter, path: Path, *, strength: float, threshold: float) -> Path:
    metadata = rf.metadata.model_copy(update={"lora_strength": strength, "rf_threshold": threshold})
    save_adapter(path, metadata, rf.embedding, rf.output, rf.loras)
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
    steps: int = 5,
    n_threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Tuning:
    """Write ``out``: ``adapter`` at the strongest LoRA strength within ``max_kl``, threshold recalibrated.

    Also writes ``out`` with the suffix ``.tune.json`` (the :class:`Tuning`).
    """
    rf = load_adapter(adapter)
    if not rf.loras:
        raise ConversionError(f"{adapter} has no LoRA weights, so there is no strength to tune.")
    # Next to OUT, not in the system temp (often in memory): the kept base side is about
    # 200 KB per answer token (1.6 GB for the default 60 validation pairs).
    with tempfile.TemporaryDirectory(prefix=".rf-tune-", dir=out.resolve().parent) as folder:
        measure_kl = AnswerKL(base, answer_pairs, keep_base_in=Path(folder), n_threads=n_threads)

        def assembled(strength: float) -> Path:
            staged = _with(rf, Path(folder) / "adapter.safetensors", strength=strength, threshold=rf.metadata.rf_threshold)
            gguf = Path(folder) / "model.gguf"
            gguf.unlink(missing_ok=True)  # one 100+ MB model at a time
            patch_gguf(base, staged, gguf)
            return gguf

        def kl_at(strength: float) -> float:
            label = f"KL at strength {strength:.3f}"
            if progress is not None:
                progress(label, 0, 1)
            kl = measure_kl(assembled(strength))[0]
            if progress is not None:
                progress(label, 1, 1)
            return kl

        tried = choose_strength(kl_at, max_kl, steps=steps)
        best = chosen(tried, max_kl)
        calibration = calibrate(
            assembled(best.strength), prompts, target_fpr=target_fpr, n_threads=n_threads, progress=progress
        )
    _with(rf, out, strength=best.strength, threshold=calibration.threshold)
    tuning = Tuning(
        strength=best.strength,
        max_kl=max_kl,
        kl_nats_per_token=best.kl_nats_per_token,
        tried=tried,
        answer_pairs=len(answer_pairs),
        calibration=calibration,
    )
    out.with_suffix(".tune.json").write_text(json.dumps(json.loads(tuning.model_dump_json()), indent=1) + "\n", encoding="utf-8")
    return tuning
