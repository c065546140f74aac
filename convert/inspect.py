"""Describe a GGUF model: its shape, quantization, vocabulary and <rf> token."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from gguf import GGUFReader, TokenType
from pydantic import BaseModel

from . import keys
from .reader import architecture, field_value, open_gguf
from .vocab import Vocab

RF_TOKEN_TEXT = "<rf>"


class RfTokenInfo(BaseModel):
    """Where the <rf> token is and what kind of token it is."""

    id: int
    text: str
    type: str
    found_by: Literal["rf.token", "text"]


class ModelInfo(BaseModel):
    """A summary of one GGUF model file."""

    path: Path
    file_bytes: int
    gguf_version: int
    architecture: str
    name: str | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | list[int] | None
    head_count_kv: int | list[int] | None
    vocab_size: int | None
    parameter_count: int
    tensor_count: int
    tensor_types: dict[str, int]
    tied_embeddings: bool
    chat_template: bool
    rf_token: RfTokenInfo | None
    rf_metadata: dict[str, Any]
    warnings: list[str]


def inspect_gguf(path: Path) -> ModelInfo:
    """Read the GGUF file ``path`` and summarise it."""
    reader = open_gguf(path)
    arch = architecture(reader)
    tokens_present = reader.get_field("tokenizer.ggml.tokens") is not None
    vocab = Vocab.from_reader(reader) if tokens_present else None
    warnings: list[str] = []
    rf_token = _rf_token(reader, vocab, warnings)
    tensor_names = {tensor.name for tensor in reader.tensors}
    type_counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)

    def arch_value(key: str) -> Any:
        return field_value(reader, f"{arch}.{key}")

    return ModelInfo(
        path=path,
        file_bytes=path.stat().st_size,
        gguf_version=field_value(reader, "GGUF.version"),
        architecture=arch,
        name=field_value(reader, "general.name"),
        context_length=arch_value("context_length"),
        embedding_length=arch_value("embedding_length"),
        block_count=arch_value("block_count"),
        head_count=arch_value("attention.head_count"),
        head_count_kv=arch_value("attention.head_count_kv"),
        vocab_size=len(vocab.tokens) if vocab is not None else arch_value("vocab_size"),
        parameter_count=sum(int(tensor.n_elements) for tensor in reader.tensors),
        tensor_count=len(reader.tensors),
        tensor_types=dict(type_counts.most_common()),
        tied_embeddings="token_embd.weight" in tensor_names and "output.weight" not in tensor_names,
        chat_template=reader.get_field("tokenizer.chat_template") is not None,
        rf_token=rf_token,
        rf_metadata={key: field_value(reader, key) for key in reader.fields if key.startswith("rf.")},
        warnings=warnings,
    )


def render_table(info: ModelInfo) -> str:
    """``info`` as an aligned two-column table for people."""
    rows: list[tuple[str, str]] = [
        ("file", str(info.path)),
        ("file size", f"{_si(info.file_bytes)}B ({info.file_bytes} bytes)"),
        ("gguf version", str(info.gguf_version)),
        ("architecture", info.architecture),
        ("name", _text(info.name)),
        ("context length", _text(info.context_length)),
        ("embedding size", _text(info.embedding_length)),
        ("layers", _text(info.block_count)),
        ("heads", _text(info.head_count)),
        ("kv heads", _text(info.head_count_kv)),
        ("vocab size", _text(info.vocab_size)),
        ("parameters", f"{_si(info.parameter_count)} ({info.parameter_count})"),
        ("tensors", str(info.tensor_count)),
        ("tensor types", ", ".join(f"{name} x{count}" for name, count in info.tensor_types.items())),
        ("embeddings", "tied (no output.weight)" if info.tied_embeddings else "untied (output.weight)"),
        ("chat template", "yes" if info.chat_template else "no"),
        ("<rf> token", _rf_text(info.rf_token)),
    ]
    rows += [(key, _text(value)) for key, value in info.rf_metadata.items()]
    rows += [("warning", warning) for warning in info.warnings]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _rf_token(reader: GGUFReader, vocab: Vocab | None, warnings: list[str]) -> RfTokenInfo | None:
    if vocab is None:
        return None
    token_id = field_value(reader, keys.RF_TOKEN)
    found_by: Literal["rf.token", "text"] = "rf.token"
    if token_id is not None and not (isinstance(token_id, int) and 0 <= token_id < len(vocab.tokens)):
        warnings.append(
            f"{keys.RF_TOKEN} = {token_id!r} is not a token id (the vocabulary has {len(vocab.tokens)})."
        )
        token_id = None
    if token_id is None:
        token_id, found_by = vocab.find(RF_TOKEN_TEXT), "text"
    if token_id is None:
        return None
    info = RfTokenInfo(
        id=token_id,
        text=vocab.tokens[token_id].decode("utf-8", errors="replace"),
        type=vocab.type_name(token_id),
        found_by=found_by,
    )
    if info.type != TokenType.CONTROL.name:
        warnings.append(f"the <rf> token is {info.type}, not CONTROL, so ordinary text can produce it.")
    return info


def _rf_text(token: RfTokenInfo | None) -> str:
    if token is None:
        return "none"
    return f"id {token.id} {token.text!r}, {token.type} (found by {token.found_by})"


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _si(number: int) -> str:
    if number < 1000:
        return f"{number} "
    value = number / 1000
    for prefix in "KMG":
        if value < 1000:
            return f"{value:.1f} {prefix}"
        value /= 1000
    return f"{value:.1f} T"
