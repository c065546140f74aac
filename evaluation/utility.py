"""How much the <rf> model's ordinary text differs from its base model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import llama_cpp
import numpy as np
from pydantic import BaseModel, ConfigDict

from ..chat import GuardedChat
from ..config import SamplingConfig
from ..events import Message


class RoundingReference(BaseModel):
    """The base model against itself with an f32 instead of an f16 KV cache: rounding alone.

    What the utility measures give for a change of arithmetic only, with no weight
    changed; a guarded model cannot be expected to do better.
    """

    model_config = ConfigDict(frozen=True)

    kl_nats_per_token: float
    top1_agreement: float
    identical_openings: float


class Utility(BaseModel):
    """How far the guarded model's text moves from its base's.

    Mean per-token KL(base || guarded) and the share of positions with the same most
    likely token, both on benign answers read by both models; the share of prompts whose
    first ``opening_tokens`` greedy reply tokens are identical; and the same measures for
    rounding alone (``rounding``). The last two fields are None in reports made before them.
    """

    model_config = ConfigDict(frozen=True)

    kl_nats_per_token: float
    answer_tokens: int
    identical_openings: float
    opening_tokens: int
    prompts: int
    top1_agreement: float | None = None
    rounding: RoundingReference | None = None


class AnswerComparison(NamedTuple):
    """KL(base || model) per answer token, the share of answer positions with the same top token, and the count."""

    kl_nats_per_token: float
    top1_agreement: float
    answer_tokens: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def answer_logprobs(llm: llama_cpp.Llama, prompt: list[int], answer: list[int], n_vocab: int) -> np.ndarray:
    """Log-probabilities over the first ``n_vocab`` tokens at each answer position, ``[len(answer), n_vocab]``."""
    llm.reset()
    llm.eval(prompt + answer)
    logits = np.asarray(llm.scores[len(prompt) - 1 : len(prompt) + len(answer) - 1, :n_vocab], dtype=np.float64)
    return _log_softmax(logits)


class AnswerKL:
    """Mean KL(base || model) per answer token on fixed benign (prompt, answer) pairs.

    Call it with each model to compare; it returns ``(kl, answer_tokens)`` (``compare``
    adds the top-1 agreement). Both models
    read the same tokens (the first compared model's chat template and tokenizer); the
    compared model's distribution is renormalised over the base vocabulary, without <rf>.
    With ``keep_base_in`` (a folder) the base's log-probabilities are computed on the
    first call and kept there (float32, answer tokens x vocabulary x 4 bytes), so every
    later model costs one forward pass instead of two.
    """

    def __init__(
        self,
        base_path: Path,
        pairs: Sequence[tuple[str, str]],
        *,
        keep_base_in: Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> None:
        self._base_path = base_path
        self._n_gpu_layers = n_gpu_layers
        self._pairs = list(pairs)
        self._folder = keep_base_in
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._tokens: list[tuple[list[int], list[int]]] | None = None
        self._kept: list[Path] | None = None  # the base side, once one call has kept all of it

    def _llama(self, path: Path, **llama_kwargs: Any) -> llama_cpp.Llama:
        return llama_cpp.Llama(
            str(path), n_ctx=self._n_ctx, logits_all=True, verbose=False, n_threads=self._n_threads,
            n_gpu_layers=self._n_gpu_layers, **llama_kwargs
        )

    def _tokenize(self, scorer: llama_cpp.Llama) -> list[tuple[list[int], list[int]]]:
        template = GuardedChat(scorer)
        tokens = []
        for prompt_text, answer_text in self._pairs:
            prompt = template._prompt.build([Message(role="user", content=prompt_text)])
            answer = scorer.tokenize(answer_text.encode(), add_bos=False, special=False)[: self._n_ctx - len(prompt)]
            if answer:
                tokens.append((prompt, answer))
        return tokens

    def _keep(self, folder: Path, index: int, p: np.ndarray) -> tuple[Path, np.ndarray]:
        p32 = p.astype(np.float32)  # what later calls read back, so that all calls agree
        path = folder / f"base-logprobs-{index}.npy"
        np.save(path, p32)
        return path, p32.astype(np.float64)

    def _base_sides(self, tokens: list[tuple[list[int], list[int]]]) -> Iterator[np.ndarray]:
        if self._kept is not None:
            yield from (np.load(path).astype(np.float64) for path in self._kept)
            return
        base = self._llama(self._base_path)
        kept = []
        for index, (prompt, answer) in enumerate(tokens):
            p = answer_logprobs(base, prompt, answer, base.n_vocab())
            if self._folder is not None:
                path, p = self._keep(self._folder, index, p)
                kept.append(path)
                if len(kept) == len(tokens):  # complete: later calls read it back
                    self._kept = kept
            yield p

    def __call__(self, model_path: Path) -> tuple[float, int]:
        comparison = self.compare(model_path)
        return comparison.kl_nats_per_token, comparison.answer_tokens

    def compare(self, model_path: Path, **llama_kwargs: Any) -> AnswerComparison:
        """KL and top-1 agreement of the model at ``model_path`` (loaded with ``llama_kwargs``) against the base."""
        scorer = self._llama(model_path, **llama_kwargs)
        if self._tokens is None:
            self._tokens = self._tokenize(scorer)
        total, same = 0.0, 0
        for (prompt, answer), p in zip(self._tokens, self._base_sides(self._tokens)):
            q = answer_logprobs(scorer, prompt, answer, p.shape[1])
            total += float((np.exp(p) * (p - q)).sum())
            same += int((p.argmax(axis=1) == q.argmax(axis=1)).sum())
        count = sum(len(answer) for _, answer in self._tokens)
        if not count:
            return AnswerComparison(0.0, 1.0, 0)
        return AnswerComparison(total / count, same / count, count)


_F32_CACHE = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}


def _greedy_openings(chat: GuardedChat, prompts: Sequence[str]) -> list[str]:
    replies = []
    for prompt in prompts:
        chat.reset()
        replies.append(chat.send(prompt).text)
    return replies


def _share_same(a: Sequence[str], b: Sequence[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else 0.0


def utility(
    base_path: Path,
    guarded_path: Path,
    pairs: Sequence[tuple[str, str]],
    prompts: Sequence[str],
    *,
    opening_tokens: int = 64,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
) -> Utility:
    """KL and top-1 agreement on ``pairs`` and identical greedy openings of ``prompts``, with the rounding reference."""
    answers = AnswerKL(base_path, pairs, n_threads=n_threads, n_gpu_layers=n_gpu_layers)
    guarded_answers = answers.compare(guarded_path)
    rounding_answers = answers.compare(base_path, **_F32_CACHE)
    greedy = SamplingConfig(temperature=0.0, max_tokens=opening_tokens)

    def base_chat(**llama_kwargs: Any) -> GuardedChat:
        return GuardedChat(base_path, allow_unguarded=True, sampling=greedy, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                           llama_kwargs=llama_kwargs)

    base = _greedy_openings(base_chat(), prompts)
    guarded = GuardedChat(guarded_path, policy="continue", threshold=1.0, sampling=greedy, n_threads=n_threads,
                          n_gpu_layers=n_gpu_layers)
    return Utility(
        kl_nats_per_token=guarded_answers.kl_nats_per_token,
        answer_tokens=guarded_answers.answer_tokens,
        top1_agreement=guarded_answers.top1_agreement,
        identical_openings=_share_same(base, _greedy_openings(guarded, prompts)),
        opening_tokens=opening_tokens,
        prompts=len(prompts),
        rounding=RoundingReference(
            kl_nats_per_token=rounding_answers.kl_nats_per_token,
            top1_agreement=rounding_answers.top1_agreement,
            identical_openings=_share_same(base, _greedy_openings(base_chat(**_F32_CACHE), prompts)),
        ),
    )
