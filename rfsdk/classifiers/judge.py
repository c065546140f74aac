"""A GGUF judge model run through llama.cpp: Llama Guard 3 or a generic yes/no judge."""

from __future__ import annotations

import os
from typing import Literal

import llama_cpp
import numpy as np

from ..errors import ConfigError
from ..events import Verdict
from .._loading import load_model
from .._model_lock import lock_for
from .._prompt import PromptBuilder, token_piece
from .base import Classifier
from .judge_formats import FORMATS, JudgeFormat

FormatName = Literal["llama-guard-3", "yes-no"]


class LlamaJudge(Classifier):
    """Asks a judge model about a conversation; the score is read from its first answer token.

    ``model`` is a GGUF path, ``hf://...``, or a loaded ``llama_cpp.Llama`` (it must not
    be the model a :class:`~rfsdk.GuardedChat` generates with: that model is busy during
    the turn). ``format`` is "llama-guard-3" (Meta's prompt; ``categories`` like "S1"),
    "yes-no" (a yes/no question in the judge's own chat template, or ``chat_template``),
    or a :class:`~rfsdk.classifiers.judge_formats.JudgeFormat`. A conversation longer
    than the context is cut: the prompt keeps its start, the reply its end.

    Calls are serialised on the judge model's lock, so one judge may serve several
    chats and threads.

    Llama Guard 3 (e.g. a Llama-Guard-3-1B or -8B GGUF) is used like this::

        judge = LlamaJudge("Llama-Guard-3-1B.Q8_0.gguf", format="llama-guard-3")
        chat = GuardedChat("model-with-rf.gguf", classifier=judge, cross_check="confirm")
    """

    def __init__(
        self,
        model: str | os.PathLike | llama_cpp.Llama,
        *,
        format: FormatName | JudgeFormat = "llama-guard-3",
        threshold: float = 0.5,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        chat_template: str | None = None,
        name: str | None = None,
        verbose: bool = False,
    ) -> None:
        if isinstance(format, str):
            if format not in FORMATS:
                raise ConfigError(f"Unknown judge format {format!r}: use one of {', '.join(FORMATS)} or a JudgeFormat")
            format = FORMATS[format]()
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], not {threshold}")
        loaded = load_model(
            model,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
            allow_unguarded=True,
            verbose=verbose,
        )
        self.llm = loaded.llm
        self.format = format
        self.threshold = threshold
        self.name = name or f"{format.name}:{loaded.path.stem}"
        template = chat_template or loaded.chat_template
        self._chat = PromptBuilder(self.llm, template) if template else None
        self._lock = lock_for(self.llm)
        self._vocab = self.llm._model.vocab
        self._positive = self._first_tokens(format.positive)
        self._negative = self._first_tokens(format.negative)
        if set(self._positive) & set(self._negative):
            raise ConfigError(
                f"The judge's tokenizer starts {format.positive} and {format.negative} with the same token, "
                "so their first-token probabilities cannot be told apart."
            )
        self._room = self.llm.n_ctx() - format.category_tokens - 1
        if len(format.tokens(self.llm, self._chat, "", "")) > self._room:
            raise ConfigError(f"The judge prompt alone does not fit its context of {self.llm.n_ctx()} tokens.")

    def _first_tokens(self, words: tuple[str, ...]) -> list[int]:
        ids = {self.llm.tokenize(w.encode("utf-8"), add_bos=False, special=False)[0] for w in words}
        return sorted(ids)

    def _prompt_tokens(self, prompt: str, reply: str) -> list[int]:
        while True:
            tokens = self.format.tokens(self.llm, self._chat, prompt, reply)
            if len(tokens) <= self._room:
                return tokens
            if len(reply) >= len(prompt):
                reply = reply[len(reply) - len(reply) * 3 // 4 :]
            else:
                prompt = prompt[: len(prompt) * 3 // 4]

    def classify(self, prompt: str, reply: str = "") -> Verdict:
        tokens = self._prompt_tokens(prompt, reply)
        first: list[float] = []

        def read_first(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if not first:
                first.append(_logsumexp(scores[self._positive]) - _logsumexp(scores[self._negative]))
            return scores

        answer = b""
        score = 0.0
        with self._lock.hold():
            generated = self.llm.generate(
                tokens, temp=0.0, repeat_penalty=1.0, logits_processor=llama_cpp.LogitsProcessorList([read_first])
            )
            try:
                for i, token in enumerate(generated):
                    if i == 0:
                        score = float(1.0 / (1.0 + np.exp(-np.clip(first[0], -50.0, 50.0))))
                        if score < self.threshold:
                            break
                    if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                        break
                    answer += token_piece(self.llm, token)
                    if i >= self.format.category_tokens:
                        break
            finally:
                generated.close()
        harmful = score >= self.threshold
        categories = self.format.categories(answer.decode("utf-8", errors="replace")) if harmful else []
        return Verdict(harmful=harmful, score=score, categories=categories, classifier=self.name)


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + float(np.log(np.exp(values - top).sum()))
