"""Read a SentencePiece ``tokenizer.model`` (a protobuf ``ModelProto``) without protobuf or sentencepiece.

Only the fields a GGUF "llama" tokenizer needs are decoded: every piece (text, score, type), the
model type and byte fallback of the trainer spec, and ``add_dummy_prefix`` of the normalizer spec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from rfsdk.errors import ConversionError

BPE_MODEL_TYPE = 2
"""``TrainerSpec.model_type`` of BPE models (1 is unigram, 3 word, 4 char)."""
_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
_NORMAL = 1


@dataclass(frozen=True)
class SpPiece:
    """One vocabulary entry; ``type`` uses SentencePiece's numbering, which GGUF's TokenType shares."""

    text: str
    score: float
    type: int


@dataclass(frozen=True)
class SpModel:
    """The parts of a SentencePiece model that matter for conversion."""

    pieces: list[SpPiece]
    model_type: int
    byte_fallback: bool
    add_dummy_prefix: bool

    @property
    def model_type_name(self) -> str:
        """``"bpe"``, ``"unigram"``, ... as SentencePiece calls the model type."""
        return _MODEL_TYPES.get(self.model_type, f"type {self.model_type}")


def read_spm_model(path: Path) -> SpModel:
    """Parse the SentencePiece model file ``path``; raises ConversionError if it is not one."""
    data = path.read_bytes()
    try:
        fields = _fields(data)
        pieces = [_piece(raw) for number, raw in fields if number == 1]
        trainer = dict(_fields(_last(fields, 2)))
        normalizer = dict(_fields(_last(fields, 3)))
    except (ValueError, TypeError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ConversionError(
            f"{path} is not a SentencePiece model ({exc}); it may be a tiktoken file or corrupt. "
            "Copy the tokenizer.model of the original checkpoint, or remove it if tokenizer.json is "
            "a byte-level BPE tokenizer."
        ) from exc
    if not pieces:
        raise ConversionError(f"{path} holds no vocabulary pieces; it is not a usable SentencePiece model.")
    return SpModel(
        pieces=pieces,
        model_type=int(trainer.get(3, 1)),
        byte_fallback=bool(trainer.get(35, 0)),
        add_dummy_prefix=bool(normalizer.get(3, 1)),
    )


def _last(fields: list[tuple[int, int | bytes]], number: int) -> bytes:
    found = [raw for n, raw in fields if n == number]
    value = found[-1] if found else b""
    if not isinstance(value, bytes):
        raise TypeError(f"field {number} has the wrong wire type")
    return value


def _piece(raw: int | bytes) -> SpPiece:
    if not isinstance(raw, bytes):
        raise TypeError("a piece is not a message")
    fields = dict(_fields(raw))
    text, score, kind = fields.get(1, b""), fields.get(2, 0), fields.get(3, _NORMAL)
    if not isinstance(text, bytes) or not isinstance(score, int) or not isinstance(kind, int):
        raise TypeError("a piece has fields of the wrong wire type")
    (score_value,) = struct.unpack("<f", score.to_bytes(4, "little"))
    return SpPiece(text.decode("utf-8"), score_value, kind)


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of each field of one message; varints and fixed ints as int, LEN as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data) or number == 0:
            raise ValueError("truncated or malformed protobuf data")
        out.append((number, value))
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
