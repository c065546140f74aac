"""The token table of a GGUF model and the one edit rf-convert makes to it: adding a CONTROL token."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gguf import GGUFReader, TokenType

from rfsdk.errors import ConversionError, ModelFileError

from .reader import string_array

TOKENS_KEY = "tokenizer.ggml.tokens"
TYPES_KEY = "tokenizer.ggml.token_type"
SCORES_KEY = "tokenizer.ggml.scores"
ADDED_TOKEN_SCORE = -1000.0
"""Score given to an appended token (what converters give added/control tokens)."""

_TAKEOVER_TYPES = frozenset({TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNUSED})


@dataclass(frozen=True)
class Vocab:
    """Token texts (raw bytes), token types and optional scores of a GGUF model."""

    tokens: tuple[bytes, ...]
    types: tuple[int, ...] | None
    scores: tuple[float, ...] | None

    @classmethod
    def from_reader(cls, reader: GGUFReader) -> Vocab:
        """The vocabulary stored in ``reader``'s tokenizer metadata."""
        tokens = string_array(reader, TOKENS_KEY)
        if not tokens:
            raise ModelFileError(
                f"the GGUF file has no {TOKENS_KEY} metadata, so it has no vocabulary to read."
            )
        types = _per_token(reader, TYPES_KEY, len(tokens))
        scores = _per_token(reader, SCORES_KEY, len(tokens))
        return cls(
            tokens=tuple(tokens),
            types=None if types is None else tuple(int(v) for v in types),
            scores=None if scores is None else tuple(float(v) for v in scores),
        )

    def find(self, text: str) -> int | None:
        """The id of the token whose text is ``text``, or None."""
        try:
            return self.tokens.index(text.encode("utf-8"))
        except ValueError:
            return None

    def type_name(self, token_id: int) -> str:
        """The name of the token type of ``token_id`` (NORMAL when the model stores no types)."""
        value = self.types[token_id] if self.types is not None else int(TokenType.NORMAL)
        try:
            return TokenType(value).name
        except ValueError:
            return f"TYPE_{value}"


def add_control_token(vocab: Vocab, text: str, slot: str | None) -> tuple[Vocab, int]:
    """``vocab`` with CONTROL token ``text`` appended (or replacing token ``slot``, which may be ``text`` itself), and its id."""
    existing = vocab.find(text)
    if existing is not None and text != slot:
        raise ConversionError(
            f"the base model already has a {text!r} token (id {existing}, {vocab.type_name(existing)}). "
            "If it was patched before, patch the original base model instead; otherwise set the "
            "adapter's rf_token to a text the vocabulary lacks."
        )
    if vocab.types is None:
        raise ConversionError(
            f"the base model has no {TYPES_KEY} metadata, so a CONTROL token cannot be marked. "
            "Re-convert the base with a current llama.cpp converter."
        )
    encoded = text.encode("utf-8")
    if slot is None:
        token_id = len(vocab.tokens)
        scores = None if vocab.scores is None else (*vocab.scores, ADDED_TOKEN_SCORE)
        return (
            Vocab(
                tokens=(*vocab.tokens, encoded), types=(*vocab.types, int(TokenType.CONTROL)), scores=scores
            ),
            token_id,
        )
    types = list(vocab.types)
    token_id = _slot_id(vocab, slot, types)
    tokens = list(vocab.tokens)
    tokens[token_id] = encoded
    types[token_id] = int(TokenType.CONTROL)
    return replace(vocab, tokens=tuple(tokens), types=tuple(types)), token_id


def _slot_id(vocab: Vocab, slot: str, types: list[int]) -> int:
    token_id = vocab.find(slot)
    if token_id is None:
        raise ConversionError(
            f"the adapter's slot token {slot!r} is not in the base model's vocabulary. "
            "Set slot to an existing reserved/unused token, or leave it out to append <rf>."
        )
    if types[token_id] not in _TAKEOVER_TYPES:
        raise ConversionError(
            f"the adapter's slot token {slot!r} (id {token_id}) is a {vocab.type_name(token_id)} token that "
            "ordinary text can produce; taking it over would corrupt tokenization. Pick a reserved "
            "CONTROL, USER_DEFINED or UNUSED token, or leave slot out to append <rf>."
        )
    return token_id


def _per_token(reader: GGUFReader, key: str, count: int) -> list[Any] | None:
    field = reader.get_field(key)
    if field is None:
        return None
    values = field.contents()
    if not isinstance(values, list) or len(values) != count:
        raise ModelFileError(
            f"metadata {key!r} should list one value per token ({count}) but does not; "
            "the GGUF file is corrupt."
        )
    return values
