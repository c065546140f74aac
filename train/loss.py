"""The red-flag loss of arXiv 2502.16366, one example at a time.

* harmful answers: cross-entropy for <rf> at a sampled position ``i`` of the answer, and
  KL to the frozen base on the answer tokens after the inserted <rf>, so the continuation
  is not pushed either way;
* benign answers: KL to the frozen base, which keeps utility and keeps P(<rf>) near zero
  (the base never emits <rf>).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from .rf_model import RfModel


class LossWeights(BaseModel):
    """Weights of the three terms; a weight of 0 switches a term off."""

    model_config = ConfigDict(frozen=True)

    rf: float = 1.0
    benign_kl: float = 1.0
    after_kl: float = 1.0


def _kl(base: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(base || model), from logits."""
    return F.kl_div(
        F.log_softmax(model, dim=-1), F.log_softmax(base, dim=-1), log_target=True, reduction="batchmean"
    )


def harmful_terms(rf: RfModel, prompt: list[int], answer: list[int], position: int) -> dict[str, torch.Tensor]:
    """<rf> inserted before ``answer[position]``: its cross-entropy and the KL after it.

    An empty answer (a harmful prompt with no answer) gives the cross-entropy at the reply
    start only.
    """
    if not answer and position == 0:
        logits = rf.logits(prompt)
        return {"rf": F.cross_entropy(logits[-1:], torch.tensor([rf.rf_id], device=rf.device))}
    if not 0 <= position < len(answer):
        raise ValueError(f"position {position} is outside the answer (length {len(answer)})")
    p = len(prompt)
    logits = rf.logits(prompt + answer[:position] + [rf.rf_id] + answer[position:])
    base = rf.base_logits(prompt + answer)
    return {
        "rf": F.cross_entropy(logits[p + position - 1 : p + position], torch.tensor([rf.rf_id], device=rf.device)),
        "after_kl": _kl(base[p + position - 1 : p + len(answer) - 1], logits[p + position : p + len(answer)]),
    }


def benign_terms(rf: RfModel, prompt: list[int], answer: list[int]) -> dict[str, torch.Tensor]:
    """KL to the frozen base on every answer token."""
    p = len(prompt)
    ids = prompt + answer
    span = slice(p - 1, p + len(answer) - 1)
    return {"benign_kl": _kl(rf.base_logits(ids)[span], rf.logits(ids)[span])}


def total(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum of whatever terms are present."""
    return sum(getattr(weights, name) * value for name, value in terms.items())
