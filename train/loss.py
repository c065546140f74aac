"""The red-flag loss of arXiv 2502.16366, for a whole batch in two forward passes.

* harmful answers: cross-entropy for <rf> at a sampled position ``i`` of the answer, and
  KL to the frozen base on the answer tokens after the inserted <rf>, so the continuation
  is not pushed either way;
* benign answers: KL to the frozen base, which keeps utility and keeps P(<rf>) near zero
  (the base never emits <rf>);
* benign reply starts (an addition to the paper's loss, off at weight 0): ``-log(1 - P(<rf>))``
  where a benign reply begins, the negative counterpart of the <rf> cross-entropy. The KL holds
  this too, but averaged over every answer position, so at the reply start, where prompt-level
  detection reads P(<rf>), a false flag weighs only 1/(answer length) of a benign example.

The trained network runs once over the sequences of a batch and the frozen base (adapters
off, no gradients) once over those the KL needs: on a GPU as one right-padded tensor with an
attention mask, on CPU one sequence at a time, so no compute goes to padding. Logits are
computed only at the positions a term reads, so memory grows with the answer tokens, not with
sequence length times vocabulary. The frozen base's pass can run under bfloat16 autocast
(``base_bf16``; see :mod:`rfsdk.train.precision`).
No log-softmax of the trained logits is stored: KL(base ‖ model) at a position is
``Σ p·log p − Σ p·z + logsumexp(z)`` with ``p`` the base's probabilities and ``z`` the trained
logits, so a position keeps only ``z`` and ``p`` for the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict

from .lora import adapters_disabled, base_weights_cast
from .rf_model import NEVER_LOGIT, RfModel


class LossWeights(BaseModel):
    """Weights of the loss terms; a weight of 0 switches a term off."""

    model_config = ConfigDict(frozen=True)

    rf: float = 1.0
    benign_kl: float = 1.0
    after_kl: float = 1.0
    benign_start: float = 0.0


@dataclass(frozen=True)
class HarmfulItem:
    """A harmful example with <rf> to be inserted before ``answer[position]`` (0 with an empty answer: the reply start)."""

    prompt: list[int]
    answer: list[int]
    position: int


@dataclass(frozen=True)
class _Span:
    """Positions of one sequence whose logits a term reads: rows ``start`` .. ``start + length`` of it."""

    sequence: int
    start: int
    length: int


def _padded(sequences: Sequence[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids.to(device), mask.to(device)


def span_logits(
    rf: RfModel, sequences: Sequence[list[int]], spans: Sequence[_Span], *, padded: bool | None = None
) -> torch.Tensor:
    """Float32 logits of the trained network at every position of ``spans``, concatenated: ``[positions, vocab]``.

    ``padded``: run the sequences as one right-padded batch (the default on a GPU), or one at a
    time (the default on CPU, where a padding position costs as much compute as a real one).
    """
    if padded is None:
        padded = rf.device.type != "cpu"
    if padded:
        ids, mask = _padded(sequences, rf.device)
        hidden = rf.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = torch.tensor([s.sequence for s in spans for _ in range(s.length)], device=rf.device)
        columns = torch.tensor([s.start + i for s in spans for i in range(s.length)], device=rf.device)
        at_spans = hidden[rows, columns]
    else:
        ends = [0] * len(sequences)  # tokens after the last position a span reads are not run
        for s in spans:
            ends[s.sequence] = max(ends[s.sequence], s.start + s.length)
        states = [rf.model.base_model(input_ids=torch.tensor([ids[:end]], device=rf.device)).last_hidden_state[0]
                  for ids, end in zip(sequences, ends)]
        at_spans = torch.cat([states[s.sequence][s.start : s.start + s.length] for s in spans])
    return rf.model.get_output_embeddings()(at_spans).float()


@dataclass(frozen=True)
class _BaseTargets:
    """The frozen base at one span: its probabilities, and Σ p·log p at each position (the KL's constant part)."""

    probs: torch.Tensor  # [positions, vocab]
    neg_entropy: torch.Tensor  # [positions]


def _kl(base: _BaseTargets, logits: torch.Tensor, log_normaliser: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(base || model), from the trained ``logits`` and their log-sum-exp."""
    return (base.neg_entropy - _row_dots(base.probs, logits) + log_normaliser).mean()


def _row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``[positions, vocab]`` tensors, without a ``[positions, vocab]`` temporary."""
    with torch.autocast(a.device.type, enabled=False):  # float32, as the logits are, under a bfloat16 autocast too
        return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def batch_terms(
    rf: RfModel, harmful: Sequence[HarmfulItem], benign: Sequence[tuple[list[int], list[int]]], *, base_bf16: bool = False
) -> list[dict[str, torch.Tensor]]:
    """The loss terms of every example: one dict per harmful item (``rf``, and ``after_kl``
    unless its answer is empty), then one per benign ``(prompt, answer)`` (``benign_kl`` and
    ``benign_start``). ``base_bf16``: run the frozen base's pass under bfloat16 autocast."""
    trained: list[list[int]] = []
    trained_spans: list[_Span] = []
    base: list[list[int]] = []
    base_spans: list[_Span] = []
    for item in harmful:
        p, n = len(item.prompt), len(item.answer)
        if n == 0 and item.position == 0:
            trained_spans.append(_Span(len(trained), p - 1, 1))
            trained.append(item.prompt)
            continue
        if not 0 <= item.position < n:
            raise ValueError(f"position {item.position} is outside the answer (length {n})")
        k = item.position
        trained_spans.append(_Span(len(trained), p + k - 1, 1 + n - k))  # the <rf> target, then the tokens after it
        trained.append(item.prompt + item.answer[:k] + [rf.rf_id] + item.answer[k:])
        base_spans.append(_Span(len(base), p + k - 1, n - k))
        base.append(item.prompt + item.answer)
    for prompt, answer in benign:
        span = _Span(len(trained), len(prompt) - 1, len(answer))
        trained_spans.append(span)
        trained.append(prompt + answer)
        base_spans.append(_Span(len(base), span.start, span.length))
        base.append(prompt + answer)
    # The base first: its forward pass then runs while none of the trained pass's activations are kept.
    base_targets = iter(_base_targets(rf, base, base_spans, bf16=base_bf16) if base else [])
    logits = span_logits(rf, trained, trained_spans)
    lengths = [s.length for s in trained_spans]
    spans = list(zip(torch.split(logits, lengths), torch.split(torch.logsumexp(logits, dim=-1), lengths)))
    terms = []
    for item, (z, lse) in zip(harmful, spans[: len(harmful)]):
        term = {"rf": lse[0] - z[0, rf.rf_id]}  # -log P(<rf>) at the inserted position
        if item.answer:
            term["after_kl"] = _kl(next(base_targets), z[1:], lse[1:])
        terms.append(term)
    for z, lse in spans[len(harmful):]:
        terms.append({"benign_kl": _kl(next(base_targets), z, lse), "benign_start": _not_rf_loss(z[0], lse[0], rf.rf_id)})
    return terms


def _not_rf_loss(logits: torch.Tensor, log_normaliser: torch.Tensor, rf_id: int) -> torch.Tensor:
    """``-log(1 - P(<rf>))`` at one position, as the log-sum-exp of the other logits (no cancellation near P = 1)."""
    others = torch.cat([logits[:rf_id], logits[rf_id + 1 :]])
    return log_normaliser - torch.logsumexp(others, dim=-1)


@torch.no_grad()
def _base_targets(rf: RfModel, sequences: Sequence[list[int]], spans: Sequence[_Span], *, bf16: bool) -> list[_BaseTargets]:
    """The frozen base (adapters off, <rf> never emitted) at ``spans``: probabilities and Σ p·log p.

    With ``bf16`` the pass runs under bfloat16 autocast; the probabilities are float32 either way.
    """
    precision = torch.autocast(rf.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()  # else as the caller runs
    weights = base_weights_cast(rf.loras, torch.bfloat16) if bf16 else nullcontext()
    with adapters_disabled(rf.loras), precision, weights:
        logits = span_logits(rf, sequences, spans)
    logits[:, rf.rf_id] = NEVER_LOGIT
    logits -= torch.logsumexp(logits, dim=-1, keepdim=True)  # log-probabilities, in place
    probs = logits.exp()
    neg_entropy = _row_dots(probs, logits)
    return [_BaseTargets(p, h) for p, h in zip(torch.split(probs, [s.length for s in spans]),
                                               torch.split(neg_entropy, [s.length for s in spans]))]


def harmful_terms(rf: RfModel, prompt: list[int], answer: list[int], position: int) -> dict[str, torch.Tensor]:
    """<rf> inserted before ``answer[position]``: its cross-entropy and the KL after it (one example).

    An empty answer (a harmful prompt with no answer) gives the cross-entropy at the reply
    start only.
    """
    return batch_terms(rf, [HarmfulItem(prompt, answer, position)], [])[0]


def total(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum of whatever terms are present."""
    return sum(getattr(weights, name) * value for name, value in terms.items())
