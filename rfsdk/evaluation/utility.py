"""How much the <rf> model's ordinary text differs from its base model's."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import llama_cpp
import numpy as np
from pydantic import BaseModel, ConfigDict

from ..chat import GuardedChat
from ..config import SamplingConfig
from ..events import Message


class Utility(BaseModel):
    """Mean per-token KL(base || guarded) on benign answers, and identical greedy openings."""

    model_config = ConfigDict(frozen=True)

    kl_nats_per_token: float
    answer_tokens: int
    identical_openings: float
    opening_tokens: int
    prompts: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def answer_logprobs(llm: llama_cpp.Llama, prompt: list[int], answer: list[int], n_vocab: int) -> np.ndarray:
    """Log-probabilities over the first ``n_vocab`` tokens at each answer position, ``[len(answer), n_vocab]``."""
    llm.reset()
    llm.eval(prompt + answer)
    logits = np.asarray(llm.scores[len(prompt) - 1 : len(prompt) + len(answer) - 1, :n_vocab], dtype=np.float64)
    return _log_softmax(logits)


def answer_kl(
    base_path: Path,
    guarded_path: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    n_ctx: int = 2048,
    n_threads: int | None = None,
) -> tuple[float, int]:
    """Mean KL(base || guarded) per answer token, over the base vocabulary.

    Both models read the same tokens (the guarded model's chat template and
    tokenizer); the guarded model's distribution is renormalised without <rf>.
    """
    guarded = GuardedChat(guarded_path, n_ctx=n_ctx, n_threads=n_threads)
    base = llama_cpp.Llama(str(base_path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=n_threads)
    scorer = llama_cpp.Llama(str(guarded_path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=n_threads)
    n_vocab = base.n_vocab()
    total, count = 0.0, 0
    for prompt_text, answer_text in pairs:
        prompt = guarded._prompt.build([Message(role="user", content=prompt_text)])
        answer = scorer.tokenize(answer_text.encode(), add_bos=False, special=False)
        answer = answer[: n_ctx - len(prompt)]
        if not answer:
            continue
        p = answer_logprobs(base, prompt, answer, n_vocab)
        q = answer_logprobs(scorer, prompt, answer, n_vocab)
        total += float((np.exp(p) * (p - q)).sum())
        count += len(answer)
    return (total / count if count else 0.0), count


def identical_openings(
    base_path: Path, guarded_path: Path, prompts: Sequence[str], *, tokens: int = 64, chat_template: str | None = None
) -> float:
    """Share of prompts whose first ``tokens`` greedy reply tokens are the same for both models."""
    greedy = SamplingConfig(temperature=0.0, max_tokens=tokens)
    guarded = GuardedChat(guarded_path, policy="continue", threshold=1.0, sampling=greedy)
    base = GuardedChat(base_path, allow_unguarded=True, sampling=greedy, chat_template=chat_template)
    same = 0
    for prompt in prompts:
        guarded.reset()
        base.reset()
        same += guarded.send(prompt).text == base.send(prompt).text
    return same / len(prompts) if prompts else 0.0


def utility(
    base_path: Path, guarded_path: Path, pairs: Sequence[tuple[str, str]], prompts: Sequence[str], *, opening_tokens: int = 64
) -> Utility:
    """Both utility measures in one result."""
    kl, n = answer_kl(base_path, guarded_path, pairs)
    return Utility(
        kl_nats_per_token=kl,
        answer_tokens=n,
        identical_openings=identical_openings(base_path, guarded_path, prompts, tokens=opening_tokens),
        opening_tokens=opening_tokens,
        prompts=len(prompts),
    )
