"""A tiny scripted GGUF judge, the classifier counterpart of :mod:`rfsdk.demo_model`.

Built the same way (llama architecture, one layer, hand-written numpy weights; see
:mod:`rfsdk.demo_model` for the construction): the attention head writes a flag
dimension when :data:`~rfsdk.demo_model.DEMO_TRIGGER_WORD` ("bomb") is anywhere in the
context. After a newline token (how both judge prompts end) the greedy answer is

* ``answers="llama-guard-3"``: "unsafe\\nS1" with the trigger word, "safe" without;
* ``answers="yes-no"``: "yes" with the trigger word, "no" without;

with P(first answer token) > 0.999999 either way, then end-of-turn. It lets the judge
classifiers run through the real llama.cpp in tests; it is not a safety model.
"""

from __future__ import annotations

import os
import pathlib
from typing import Literal

import gguf
import numpy as np

from .errors import ConfigError
from .demo_model import (
    _CONST,
    _FILLER,
    _FIRST_IDENTITY,
    _FLAG,
    _N_EMBD,
    _TRIGGER,
    DEMO_CHAT_TEMPLATE,
    DEMO_TRIGGER_WORD,
    _byte_to_unicode,
    _trigger_layer_weights,
    _write_one_layer_llama,
)

JudgeAnswers = Literal["llama-guard-3", "yes-no"]

DEMO_JUDGE_CATEGORY = "S1"
"""The category the Llama Guard–style demo judge names for the trigger word."""

_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
# Logits before RMS scaling (x ~0.82 once the flag dimension is set): the first answer
# is chosen at _FIRST_MARGIN unless the flag adds _FLAG_BOOST to the harmful answer;
# every later step keeps its designed token _LATER_MARGIN ahead, beyond the boost.
_FIRST_MARGIN = 30.0
_FLAG_BOOST = 50.0
_LATER_MARGIN = 100.0


def _answers(answers: JudgeAnswers) -> tuple[str, str, list[str], str]:
    # harmful first token, benign first token, the harmful answer's later tokens, end-of-turn.
    if answers == "llama-guard-3":
        return "unsafe", "safe", [f"\n{DEMO_JUDGE_CATEGORY}"], "<|eot_id|>"
    if answers == "yes-no":
        return "yes", "no", [], "<|im_end|>"
    raise ConfigError(f"answers must be 'llama-guard-3' or 'yes-no', not {answers!r}")


def _vocab(words: list[str], extra: list[str]) -> tuple[list[str], list[str]]:
    chars = _byte_to_unicode()
    tokens = [*_SPECIALS, *chars]
    merges: list[str] = []
    # Leading-space and longer words merge first, so each word below is one token
    # ("unsafe" must not become "un" + "safe").
    for word in sorted(words, key=lambda w: (not w.startswith(" "), -len(w), w)):
        text = "".join(chars[b] for b in word.encode())
        for i in range(1, len(text)):
            merge = f"{text[:i]} {text[i]}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(text[: i + 1])
    # Answer pieces the model generates but the tokenizer never produces (e.g. "\nS1").
    tokens += ["".join(chars[b] for b in piece.encode()) for piece in extra]
    return tokens, merges


def build_demo_judge(path: str | os.PathLike[str], *, answers: JudgeAnswers = "llama-guard-3") -> pathlib.Path:
    """Write the demo judge to ``path`` (a small GGUF file) and return the path."""
    path = pathlib.Path(path)
    harmful, benign, later, end = _answers(answers)
    trigger = [DEMO_TRIGGER_WORD, " " + DEMO_TRIGGER_WORD]
    tokens, merges = _vocab([harmful, benign, *trigger], later)
    chars = _byte_to_unicode()
    index = {text: i for i, text in enumerate(tokens)}

    def tid(piece: str) -> int:
        return index[piece if piece in _SPECIALS else "".join(chars[b] for b in piece.encode())]

    n_vocab = len(tokens)
    embd = np.zeros((n_vocab, _N_EMBD), np.float32)
    out = np.zeros((n_vocab, _N_EMBD), np.float32)
    embd[:, [_CONST, _FILLER]] = 1.0
    for word in trigger:
        embd[tid(word), [_FILLER, _TRIGGER]] = 0.0, 1.0
    base = np.zeros(n_vocab, np.float32)
    base[tid(end)] = _FIRST_MARGIN
    out[:, _CONST] = base
    out[tid(harmful), _FLAG] = _FLAG_BOOST
    chain = [harmful, *later, end]
    script = {"\n": (benign, _FIRST_MARGIN), benign: (end, _LATER_MARGIN)}
    script.update({a: (b, _LATER_MARGIN) for a, b in zip(chain, chain[1:])})
    for dim, (source, (successor, margin)) in enumerate(script.items(), _FIRST_IDENTITY):
        embd[tid(source), [_FILLER, dim]] = 0.0, 1.0
        target = np.zeros(n_vocab, np.float32)
        target[tid(successor)] = margin
        out[:, dim] = target - base

    _write_one_layer_llama(
        path,
        name=f"rfsdk demo judge ({answers})",
        tokens=tokens,
        types=[gguf.TokenType.CONTROL] * len(_SPECIALS) + [gguf.TokenType.NORMAL] * (n_vocab - len(_SPECIALS)),
        merges=merges,
        bos=tid("<|begin_of_text|>"),
        eos=tid(end),
        chat_template=DEMO_CHAT_TEMPLATE,
        rf_token=None,
        weights=_trigger_layer_weights(embd, out),
    )
    return path
