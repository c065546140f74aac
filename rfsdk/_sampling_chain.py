"""The chance that llama.cpp's sampler picks a given token, as llama-cpp-python sets it up."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .config import SamplingConfig


def sample_probability(
    logits: np.ndarray, token: int, sampling: SamplingConfig, recent: Sequence[int] | np.ndarray = ()
) -> float:
    """P(the sampler picks ``token``) from ``logits`` under ``sampling``.

    Follows the chain llama-cpp-python builds: the repeat penalty on the ``recent`` tokens
    (those the sampler has picked within its penalty window), then top-k, top-p (on the
    top-k probabilities at temperature 1), min-p (relative to the most likely token) and
    temperature; ``temperature=0`` is greedy. The kept tokens are always the most likely
    ones, so the cut-offs only decide how many are kept.
    """
    if sampling.repeat_penalty != 1.0 and len(recent):
        logits = repeat_penalized(logits, recent, sampling.repeat_penalty)
    logits = np.asarray(logits, dtype=np.float64)  # float32 arithmetic would turn a tiny temperature into 0 / 0
    x = float(logits[token])
    top = float(logits.max())
    if not math.isfinite(top):  # the repeat penalty overflowed: what the sampler picks is unknown, so it may pick ``token``
        return 1.0
    if sampling.temperature <= 0:
        return 1.0 if x >= top else 0.0
    n = logits.size
    k = n if sampling.top_k <= 0 else min(sampling.top_k, n)
    candidates = np.sort(np.partition(logits, n - k)[n - k :] if k < n else logits)[::-1]
    kept = len(candidates)
    if sampling.top_p < 1:
        weights = np.exp(candidates - top)
        share = np.cumsum(weights) / weights.sum()
        kept = min(kept, int(np.searchsorted(share, sampling.top_p)) + 1)
    if sampling.min_p > 0:
        kept = min(kept, int(np.count_nonzero(candidates >= top + math.log(sampling.min_p))))
    if np.count_nonzero(candidates > x) >= kept:  # more likely tokens fill every kept place
        return 0.0
    t = sampling.temperature
    return math.exp((x - top) / t) / float(np.exp((candidates[:kept] - top) / t).sum())


def repeat_penalized(logits: np.ndarray, recent: Sequence[int] | np.ndarray, penalty: float) -> np.ndarray:
    """A copy of ``logits`` with llama.cpp's repeat penalty on every token in ``recent``.

    A positive logit is divided by ``penalty``, any other multiplied by it, once per token
    however often it recurs.
    """
    out = np.array(logits, copy=True)
    ids = np.unique(np.asarray(recent, dtype=np.intp))
    values = out[ids]
    # An extreme penalty overflows to ±inf, as in llama.cpp's float32 (np.where also works out
    # the branch it does not pick, where 0 / 0 may stand).
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out[ids] = np.where(values <= 0, values * penalty, values / penalty)
    return out


def repeat_penalty_range(logit: float, penalty: float) -> tuple[float, float]:
    """The lowest and the highest value ``logit`` can take under the repeat penalty."""
    penalized = logit * penalty if logit <= 0 else logit / penalty
    return min(logit, penalized), max(logit, penalized)
