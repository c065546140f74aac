"""The chance that llama.cpp's sampler picks a given token, as llama-cpp-python sets it up."""

from __future__ import annotations

import math

import numpy as np

from .config import SamplingConfig


def sample_probability(logits: np.ndarray, token: int, sampling: SamplingConfig) -> float:
    """P(the sampler picks ``token``) from ``logits`` under ``sampling``.

    Follows the chain llama-cpp-python builds: top-k, then top-p (on the top-k
    probabilities at temperature 1), then min-p (relative to the most likely token), then
    temperature; ``temperature=0`` is greedy. Repeat penalties are not modelled. The kept
    tokens are always the most likely ones, so the cut-offs only decide how many are kept.
    """
    x = float(logits[token])
    top = float(logits.max())
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
