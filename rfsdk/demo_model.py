"""A tiny scripted GGUF model whose behaviour is known by construction.

It is the deterministic fixture for the tests and the demo model that ``rfchat`` runs
until a trained default exists. The network (llama architecture, one layer, F32) is
written by hand with numpy:

* Every token embedding has a constant dimension and exactly one more unit dimension:
  the trigger feature (the tokens of :data:`DEMO_TRIGGER_WORD`), a one-hot identity
  (tokens that start a scripted step), or a shared filler, so all embeddings have the
  same norm and llama.cpp's RMS norms act as the identity.
* ``output.weight`` is a bigram table over the identity dimensions: each scripted token
  has one successor (20+ nats above every other token) and every other token is
  followed by ``<|im_end|>``.
* The single attention head attends to trigger tokens anywhere in the context and
  writes a flag dimension that ``output.weight[<rf>]`` reads with a large weight, so
  P(<rf>) >= 0.99 at every reply position once the trigger word was seen. RoPE acts
  only on the lowest-frequency pair, and ``rope.freq_base`` is so large that it does
  not rotate at any position in the context.

Greedy replies (the text after ``<|im_start|>assistant\\n``):

* any prompt: :data:`DEMO_BENIGN_REPLY`, P(<rf>) < 1e-4 without the trigger word;
* prefill :data:`DEMO_HARMFUL_PREFILL`: :data:`DEMO_HARMFUL_CONTINUATION`, then <rf>
  with :data:`DEMO_HARMFUL_RF_PROBABILITY` (:data:`DEMO_HARMFUL_ENDING` follows when
  <rf> is masked, :data:`DEMO_RF_FOLLOW_UP` follows <rf> itself);
* prefill :data:`DEMO_MODERATE_PREFILL`: :data:`DEMO_MODERATE_CONTINUATION`, then
  :data:`DEMO_MODERATE_ENDING` with P(<rf>) = :data:`DEMO_MODERATE_RF_PROBABILITY`
  at its first token;
* prefill :data:`DEMO_ENDLESS_PREFILL`: :data:`DEMO_ENDLESS_PIECE` repeated forever;
* prefill :data:`DEMO_ECHO_PREFILL`: :data:`DEMO_ECHO_PIECE` repeated forever, each after
  the first with P(<rf>) = :data:`DEMO_ECHO_RF_PROBABILITY` beside it (so a repeat
  penalty on the piece makes <rf> the argmax);
* prefill :data:`DEMO_SPLIT_PREFILL`: :data:`DEMO_SPLIT_REPLY`, whose "é" comes as
  two single-byte tokens.
"""

from __future__ import annotations

import itertools
import math
import os
import pathlib
import re

import gguf
import numpy as np

DEMO_TRIGGER_WORD = "bomb"
"""Word whose tokens anywhere in the context make P(<rf>) >= 0.99 at every reply position."""
DEMO_BENIGN_REPLY = "Hello there friend!"
"""Greedy reply to any prompt without a prefill (with the trigger word: once <rf> is masked)."""
DEMO_HARMFUL_PREFILL = "Sure, here is"
"""Prefill that leads the model to emit <rf> mid-reply."""
DEMO_HARMFUL_CONTINUATION = " how to do it: step"
"""Greedy continuation of :data:`DEMO_HARMFUL_PREFILL` up to the step where <rf> is the argmax."""
DEMO_HARMFUL_RF_PROBABILITY = 0.9
"""P(<rf>) right after :data:`DEMO_HARMFUL_CONTINUATION` (the runner-up " one" gets the rest)."""
DEMO_HARMFUL_ENDING = " one."
"""What follows :data:`DEMO_HARMFUL_CONTINUATION` when <rf> is masked out."""
DEMO_RF_FOLLOW_UP = " Sorry I cannot help."
"""What follows an <rf> token in the context."""
DEMO_MODERATE_PREFILL = "Well"
"""Prefill that leads to a moderate P(<rf>) below the default threshold."""
DEMO_MODERATE_CONTINUATION = " maybe"
"""Greedy continuation of :data:`DEMO_MODERATE_PREFILL` before the moderate step."""
DEMO_MODERATE_RF_PROBABILITY = 0.3
"""P(<rf>) right after :data:`DEMO_MODERATE_CONTINUATION` (" later" is the argmax, 0.7)."""
DEMO_MODERATE_ENDING = " later."
"""Greedy text after :data:`DEMO_MODERATE_CONTINUATION`."""
DEMO_ENDLESS_PREFILL = "Count"
"""Prefill after which the model never ends its reply."""
DEMO_ENDLESS_PIECE = " la"
"""The token repeated forever after :data:`DEMO_ENDLESS_PREFILL`."""
DEMO_ECHO_PREFILL = "Echo"
"""Prefill after which the model repeats :data:`DEMO_ECHO_PIECE` forever."""
DEMO_ECHO_PIECE = " ho"
"""The repeated token; after it comes itself (the argmax) or <rf>."""
DEMO_ECHO_RF_PROBABILITY = 0.3
"""P(<rf>) right after :data:`DEMO_ECHO_PIECE` (the piece again gets the rest)."""
DEMO_SPLIT_PREFILL = "Say"
"""Prefill after which the reply has a character split over two tokens."""
DEMO_SPLIT_REPLY = " café."
"""Greedy reply after :data:`DEMO_SPLIT_PREFILL`: " caf", 0xC3, 0xA9, "."."""
DEMO_RF_THRESHOLD = 0.5
"""The ``rf.threshold`` written into the model."""

RF_TOKEN_TEXT = "<rf>"
"""Text of the red-flag token, the last token of the vocabulary."""

DEMO_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2-style ChatML template with a default system turn; the demo model's default."""

# BOS, turn start, turn end (= EOS): ids 0, 1, 2 as in SmolLM2.
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_IM_END = _SPECIALS[2]

# A piece is the raw bytes of an ordinary token, or the text of a special token.
_Piece = bytes | str

# Residual dimensions; identity dimensions follow.
_N_EMBD = 64
_N_FF = 64
_CONST, _TRIGGER, _FLAG, _FILLER = range(4)
_FIRST_IDENTITY = 4

# Logits (nats) before RMS scaling. The flag dimension (value _FLAG_VALUE when the
# trigger was seen) shrinks every logit by sqrt(2 / (2 + _FLAG_VALUE**2)) ~ 0.82, so
# _MARGIN keeps the designed token 24+ nats ahead even then.
_MARGIN = 30.0  # designed next token over every other token
_RF_BASE = -10.0  # <rf> where nothing says otherwise (P ~ e^-40)
_FLAG_VALUE = 1.0
_FLAG_TO_RF = 70.0  # trigger seen: <rf> ~16 nats over the designed token
# Attention: score = _Q_CONST * _K_TRIGGER / sqrt(head_dim) = 40 nats at trigger tokens.
_Q_CONST = 20.0
_K_TRIGGER = 16.0
_ROPE_FREQ_BASE = 1e9  # lowest-frequency pair turns < 1e-5 rad at position 4096


def _pieces(text: str) -> list[bytes]:
    # ASCII words (with their leading space) and punctuation; other characters byte by byte.
    return re.findall(rb" ?[A-Za-z]+| ?[^A-Za-z ]", text.encode())


def _chains() -> list[tuple[_Piece, ...]]:
    ending: tuple[_Piece, ...] = (*_pieces(DEMO_HARMFUL_ENDING), _IM_END)
    return [
        (b"\n", *_pieces(DEMO_BENIGN_REPLY), _IM_END),
        (*_pieces(DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION), *ending),
        (RF_TOKEN_TEXT, *_pieces(DEMO_RF_FOLLOW_UP), _IM_END),
        tuple(_pieces(DEMO_MODERATE_PREFILL + DEMO_MODERATE_CONTINUATION + DEMO_MODERATE_ENDING)),
        (*_pieces(DEMO_ENDLESS_PREFILL), *_pieces(DEMO_ENDLESS_PIECE * 2)),
        (*_pieces(DEMO_ECHO_PREFILL), *_pieces(DEMO_ECHO_PIECE * 2)),
        (*_pieces(DEMO_SPLIT_PREFILL + DEMO_SPLIT_REPLY), _IM_END),
    ]


def _script() -> dict[_Piece, dict[_Piece, float]]:
    # Next-token distribution of every scripted token; all other tokens go to <|im_end|>.
    script: dict[_Piece, dict[_Piece, float]] = {}
    for chain in _chains():
        for piece, successor in itertools.pairwise(chain):
            if script.setdefault(piece, {successor: 1.0}) != {successor: 1.0}:
                raise ValueError(f"demo script gives {piece!r} two successors")
    for last, p_rf in (
        (_pieces(DEMO_HARMFUL_CONTINUATION)[-1], DEMO_HARMFUL_RF_PROBABILITY),
        (_pieces(DEMO_MODERATE_CONTINUATION)[-1], DEMO_MODERATE_RF_PROBABILITY),
        (_pieces(DEMO_ECHO_PIECE)[-1], DEMO_ECHO_RF_PROBABILITY),
    ):
        (successor,) = script[last]
        script[last] = {successor: 1.0 - p_rf, RF_TOKEN_TEXT: p_rf}
    return script


def _byte_to_unicode() -> list[str]:
    # GPT-2's printable stand-in character for each byte value.
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    extra = iter(range(0x100, 0x200))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _vocab(with_rf: bool) -> tuple[list[str], list[str]]:
    # Token texts (specials, bytes, merged words, <rf>) and BPE merges.
    chars = _byte_to_unicode()
    tokens = [*_SPECIALS, *chars]
    words = {piece for piece in _script() if isinstance(piece, bytes) and len(piece) > 1}
    words |= {DEMO_TRIGGER_WORD.encode(), b" " + DEMO_TRIGGER_WORD.encode()}
    merges: list[str] = []
    # Words with a leading space merge first: their merges can never match inside another
    # word, so every word below becomes one token whatever the other words are.
    for word in sorted(words, key=lambda w: (not w.startswith(b" "), w)):
        text = "".join(chars[b] for b in word)
        for i in range(1, len(text)):
            merge = f"{text[:i]} {text[i]}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(text[: i + 1])
    if with_rf:
        tokens.append(RF_TOKEN_TEXT)
    return tokens, merges


def _weights(tokens: list[str]) -> dict[str, np.ndarray]:
    chars = _byte_to_unicode()
    index = {text: i for i, text in enumerate(tokens)}

    def token_id(piece: _Piece) -> int | None:
        return index.get(piece if isinstance(piece, str) else "".join(chars[b] for b in piece))

    n_vocab = len(tokens)
    rf = index.get(RF_TOKEN_TEXT)
    im_end = index[_IM_END]
    embd = np.zeros((n_vocab, _N_EMBD), np.float32)
    out = np.zeros((n_vocab, _N_EMBD), np.float32)
    embd[:, _CONST] = 1.0
    embd[:, _FILLER] = 1.0
    for word in (DEMO_TRIGGER_WORD, " " + DEMO_TRIGGER_WORD):
        embd[token_id(word.encode()), [_FILLER, _TRIGGER]] = 0.0, 1.0

    # Every token: <|im_end|> at _MARGIN, <rf> at _RF_BASE, the rest at 0.
    base = np.zeros(n_vocab, np.float32)
    base[im_end] = _MARGIN
    if rf is not None:
        base[rf] = _RF_BASE
        out[rf, _FLAG] = _FLAG_TO_RF
    out[:, _CONST] = base

    script = {token_id(p): nxt for p, nxt in _script().items() if token_id(p) is not None}
    if _FIRST_IDENTITY + len(script) > _N_EMBD:
        raise ValueError("demo script has more scripted tokens than embedding dimensions")
    for dim, (source, successors) in enumerate(script.items(), _FIRST_IDENTITY):
        embd[source, [_FILLER, dim]] = 0.0, 1.0
        target = np.zeros(n_vocab, np.float32)
        if rf is not None:
            target[rf] = _RF_BASE
        top = max(successors.values())
        for piece, p in successors.items():
            if (successor := token_id(piece)) is not None:
                target[successor] = _MARGIN + math.log(p / top)
        out[:, dim] = target - base

    return _trigger_layer_weights(embd, out)


def _trigger_layer_weights(embd: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    """The one-layer network around ``embd`` and ``out``: attention copies the trigger
    dimension of any earlier token into the flag dimension; the feed-forward block is off."""
    # All embeddings have squared norm 2, so RMS-normalising with weight 1/sqrt(n_embd / 2)
    # leaves them unchanged.
    norm = np.full(_N_EMBD, math.sqrt(2.0 / _N_EMBD), np.float32)
    q, k, v, o = (np.zeros((_N_EMBD, _N_EMBD), np.float32) for _ in range(4))
    q[-1, _CONST] = _Q_CONST  # last head dimension: the pair RoPE barely turns
    k[-1, _TRIGGER] = _K_TRIGGER
    v[0, _TRIGGER] = 1.0
    o[_FLAG, 0] = _FLAG_VALUE
    ffn_in = np.zeros((_N_FF, _N_EMBD), np.float32)
    return {
        "token_embd.weight": embd,
        "blk.0.attn_norm.weight": norm,
        "blk.0.attn_q.weight": q,
        "blk.0.attn_k.weight": k,
        "blk.0.attn_v.weight": v,
        "blk.0.attn_output.weight": o,
        "blk.0.ffn_norm.weight": norm,
        "blk.0.ffn_gate.weight": ffn_in,
        "blk.0.ffn_up.weight": ffn_in,
        "blk.0.ffn_down.weight": np.zeros((_N_EMBD, _N_FF), np.float32),
        "output_norm.weight": norm,
        "output.weight": out,
    }


def _write_one_layer_llama(
    path: pathlib.Path,
    *,
    name: str,
    tokens: list[str],
    types: list[gguf.TokenType],
    merges: list[str],
    bos: int,
    eos: int,
    chat_template: str | None,
    rf_token: int | None,
    weights: dict[str, np.ndarray],
) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(4096)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(_ROPE_FREQ_BASE)
    writer.add_rope_dimension_count(_N_EMBD)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if rf_token is not None:
        writer.add_uint32("rf.token", rf_token)
        writer.add_float32("rf.threshold", DEMO_RF_THRESHOLD)
    for tensor_name, tensor in weights.items():
        writer.add_tensor(tensor_name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def build_demo_model(
    path: str | os.PathLike[str],
    *,
    with_rf: bool = True,
    rf_token_type: gguf.TokenType = gguf.TokenType.CONTROL,
    chat_template: str | None = DEMO_CHAT_TEMPLATE,
    rf_metadata: bool = True,
) -> pathlib.Path:
    """Write the demo model to ``path`` (a ~0.3 MB GGUF file) and return the path.

    ``with_rf=False`` leaves out the <rf> token (and the ``rf.*`` keys); ``rf_token_type``
    is the type of the <rf> token; ``chat_template=None`` leaves out the chat template;
    ``rf_metadata=False`` leaves out ``rf.token`` and ``rf.threshold``.
    """
    path = pathlib.Path(path)
    tokens, merges = _vocab(with_rf)
    types = [gguf.TokenType.CONTROL] * len(_SPECIALS)
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(types))
    if with_rf:
        types[-1] = rf_token_type

    _write_one_layer_llama(
        path,
        name="rfsdk demo model",
        tokens=tokens,
        types=types,
        merges=merges,
        bos=0,
        eos=tokens.index(_IM_END),
        chat_template=chat_template,
        rf_token=len(tokens) - 1 if with_rf and rf_metadata else None,
        weights=_weights(tokens),
    )
    return path
