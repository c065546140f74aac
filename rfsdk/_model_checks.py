"""Check a GGUF's metadata for values that crash llama.cpp, before llama.cpp loads the file.

:mod:`rfsdk._gguf_file` checks that a file is well-formed GGUF; this module checks that
what it says makes sense to llama.cpp, which aborts the whole process (instead of raising)
on e.g. zero layers, a NaN norm epsilon, integer weight tensors or a duplicate token.
"""

from __future__ import annotations

import math

import jinja2
from gguf import GGMLQuantizationType
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .errors import ChatTemplateError, ModelFileError
from ._gguf_file import GGUFInfo

MAX_LAYERS = 512
"""llama.cpp's LLAMA_MAX_LAYERS: a model with more layers (or none) aborts it."""
_MAX_CONTEXT = 2**31 - 1  # llama.cpp reports the training context as an int32
_EPSILON_KEYS = ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon")
# Tensor types llama.cpp stores but cannot compute with as model weights.
_NON_WEIGHT_TYPES = frozenset(
    int(t)
    for t in (
        GGMLQuantizationType.I8,
        GGMLQuantizationType.I16,
        GGMLQuantizationType.I32,
        GGMLQuantizationType.I64,
        GGMLQuantizationType.F64,
    )
)
_TEMPLATE_KEY = "tokenizer.chat_template"


def check_model_info(info: GGUFInfo) -> None:
    """Raise ModelFileError (or ChatTemplateError) for metadata llama.cpp cannot load safely.

    Covers the hyperparameters llama.cpp asserts on, the tensor types, the vocabulary's
    uniqueness, ``rf.threshold`` and the chat templates (llama-cpp-python compiles every
    template in the file while loading, whatever template the chat itself uses).
    """
    _check_hyperparameters(info)
    _check_tensor_types(info)
    _check_vocabulary(info)
    _check_threshold(info)
    _check_chat_templates(info)


def _corrupt(info: GGUFInfo, problem: str) -> ModelFileError:
    return ModelFileError(
        f"{info.path} is corrupt: {problem}. llama.cpp would crash on it; "
        "re-download or re-export the model."
    )


def _check_hyperparameters(info: GGUFInfo) -> None:
    arch = info.architecture
    if arch is None:
        return
    meta = info.metadata
    layers = meta.get(f"{arch}.block_count")
    if isinstance(layers, int) and not 1 <= layers <= MAX_LAYERS:
        raise _corrupt(info, f"{arch}.block_count is {layers}, not a layer count from 1 to {MAX_LAYERS}")
    if info.context_length is not None and not 0 <= info.context_length <= _MAX_CONTEXT:
        raise _corrupt(info, f"{arch}.context_length is {info.context_length}, more than llama.cpp can hold")
    for key in (f"{arch}.{name}" for name in _EPSILON_KEYS):
        eps = meta.get(key)
        if isinstance(eps, (int, float)) and not (math.isfinite(eps) and eps >= 0):
            raise _corrupt(info, f"{key} is {eps}, not a finite number >= 0")


def _check_tensor_types(info: GGUFInfo) -> None:
    for name, ggml_type in info.tensor_types.items():
        if ggml_type in _NON_WEIGHT_TYPES:
            kind = GGMLQuantizationType(ggml_type).name
            raise _corrupt(info, f"tensor {name!r} has type {kind}, which llama.cpp cannot use as weights")


def _check_vocabulary(info: GGUFInfo) -> None:
    seen: dict[bytes, int] = {}
    for token_id, raw in enumerate(info.tokens):
        # llama.cpp reads token texts as C strings (cut at the first NUL) and renames an
        # empty one to "[EMPTY_<id>]" before it looks for duplicates.
        text = raw.partition(b"\0")[0] or f"[EMPTY_{token_id}]".encode()
        first = seen.setdefault(text, token_id)
        if first != token_id:
            raise _corrupt(info, f"tokens {first} and {token_id} both have the text {text[:40]!r}")


def is_threshold(value: float) -> bool:
    """Whether ``value`` can be an ``rf.threshold``: a probability in (0, 1]."""
    return math.isfinite(value) and 0.0 < value <= 1.0


def _check_threshold(info: GGUFInfo) -> None:
    value = info.rf_threshold
    if value is not None and not is_threshold(value):
        raise _corrupt(info, f"rf.threshold is {value}, not a probability in (0, 1]")


def _check_chat_templates(info: GGUFInfo) -> None:
    for key, template in info.metadata.items():
        if not (key == _TEMPLATE_KEY or key.startswith(_TEMPLATE_KEY + ".")) or not isinstance(template, str):
            continue
        problem = _template_problem(template)
        if problem:
            raise ChatTemplateError(
                f"{info.path} has a chat template ({key}) that does not parse ({problem}), and "
                "llama-cpp-python compiles it while loading. Fix the template in the file "
                "(gguf's gguf_new_metadata.py --chat-template) or re-export the model."
            )


def _template_problem(template: str) -> str | None:
    # llama.cpp hands metadata strings to Python as C strings, cut at the first NUL.
    if "\0" in template:
        return "it contains a NUL character"
    try:
        Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
    except jinja2.TemplateError as exc:
        return str(exc)
    return None
