"""P(<rf>) over a prefilled reply's opening, measured before generation starts.

A prefill puts text into the model's mouth, so llama.cpp evaluates it with the prompt and
the guard's first step comes only after it. These positions are checked here instead:
the reply start (where the request alone is scored) and each prefill position but the
last, one decode step each, reusing llama.cpp's cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import llama_cpp
import numpy as np


def opening_probabilities(
    llm: llama_cpp.Llama, tokens: Sequence[int], prefill_length: int, rf_id: int, *, cancel: threading.Event | None = None
) -> list[float]:
    """P(<rf>) at the reply start and after each prefill token but the last; ``tokens`` ends with the prefill.

    Stops early, with the positions measured so far, once ``cancel`` is set.
    """
    seen: list[float] = []

    def record(_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        logits = np.asarray(scores, dtype=np.float64)
        top = logits.max()
        seen.append(float(np.exp(logits[rf_id] - top) / np.exp(logits - top).sum()))
        return scores

    processors = llama_cpp.LogitsProcessorList([record])
    for end in range(len(tokens) - prefill_length, len(tokens)):
        if cancel is not None and cancel.is_set():
            break
        steps = llm.generate(list(tokens[:end]), temp=0.0, logits_processor=processors)
        next(steps)
        steps.close()
    return seen
