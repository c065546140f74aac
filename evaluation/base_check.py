"""The base rf-eval compares a <rf> model with must be the model it was made from, checked first.

Utility (the KL between the two models' next-token distributions) and the base refusal rate
mean nothing against another model: the KL of a user's model against SmolLM2 came out as 9
nats/token. A base matches when it has the model's vocabulary without <rf> (one token more,
or one reserved slot taken over) and the same architecture and shape.
"""

from __future__ import annotations

from pathlib import Path

from rfsdk._gguf_file import GGUFInfo, read_gguf_info
from rfsdk.errors import ConfigError

_SHAPE_KEYS = ("embedding_length", "block_count", "attention.head_count", "attention.head_count_kv")


def _shape(info: GGUFInfo) -> tuple[object, ...]:
    return (info.architecture, *(info.metadata.get(f"{info.architecture}.{key}") for key in _SHAPE_KEYS))


def base_mismatch(model: Path, base: Path) -> str | None:
    """Why ``base`` is not the model ``model`` was made from, or None if it is (headers only: fast)."""
    model_info, base_info = read_gguf_info(model), read_gguf_info(base)
    if _shape(model_info) != _shape(base_info):
        return f"their shapes differ ({_describe(model_info)} against {_describe(base_info)})"
    model_tokens, base_tokens = model_info.tokens, base_info.tokens
    changed = sum(m != b for m, b in zip(model_tokens, base_tokens))
    if len(model_tokens) - len(base_tokens) not in (0, 1) or changed > 1:
        return (f"their vocabularies differ ({len(model_tokens)} tokens against {len(base_tokens)}, "
                f"{changed} of the shared positions changed)")
    return None


def _describe(info: GGUFInfo) -> str:
    arch = info.architecture
    return f"{arch}, {info.metadata.get(f'{arch}.block_count')} layers of {info.metadata.get(f'{arch}.embedding_length')}"


def check_base(model: Path, base: Path, *, defaulted: bool) -> None:
    """Raise :class:`~rfsdk.ConfigError` unless ``base`` is the model ``model`` was made from.

    ``defaulted``: ``base`` is the bundled default because no ``--base`` was given, and the
    message says so.
    """
    reason = base_mismatch(model, base)
    if reason is None:
        return
    fix = ("pass --base BASE.gguf, the model before <rf> training (rf-train recipe keeps it as OUT/base.gguf; "
           "rf-convert hf SRC base.gguf --no-rf makes one), or --base none to skip the utility and base-refusal measures")
    if defaulted:
        raise ConfigError(f"{model} was not made from the bundled SmolLM2-135M-Instruct, rf-eval's default base: {reason}; {fix}")
    raise ConfigError(f"--base {base} is not the model {model} was made from: {reason}; {fix}")
