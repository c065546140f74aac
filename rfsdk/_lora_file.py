"""Check a LoRA adapter GGUF (``llama_kwargs={"lora_path": ...}``) against the model it is for.

llama.cpp refuses a bad adapter by returning NULL, which llama-cpp-python does not notice: the
NULL adapter is attached to the context and the first decode crashes the process. So rfsdk
checks, before llama.cpp opens it, everything llama.cpp's ``llama_adapter_lora_init`` checks
(the file is a well-formed GGUF, ``general.type`` "adapter", ``adapter.type`` "lora", the
model's architecture, ``lora_a``/``lora_b`` pairs of tensors the model has, with matching
shapes) and what llama.cpp does not check but crashes on later (tensor types it cannot
multiply with, a rank that differs between the two halves of a pair, metadata of the wrong type).
"""

from __future__ import annotations

import math
from pathlib import Path

from gguf import GGMLQuantizationType

from ._gguf_file import GGUFHeader, GGUFInfo, read_gguf_header
from .errors import ConfigError, RfsdkError

_PAIR_SUFFIXES = (".lora_a", ".lora_b")
_IGNORED_SUFFIX = "_norm.weight"  # llama.cpp skips these tensors of an adapter
# Adapter tensor types llama.cpp's LoRA matrix products work with (convert_lora_to_gguf.py's outtypes).
_LORA_TENSOR_TYPES = {
    int(GGMLQuantizationType.F32): "F32",
    int(GGMLQuantizationType.F16): "F16",
    int(GGMLQuantizationType.BF16): "BF16",
    int(GGMLQuantizationType.Q8_0): "Q8_0",
}
_STRING_KEYS = {"general.type": "adapter", "adapter.type": "lora"}
_ALPHA_KEY = "adapter.lora.alpha"
_ALORA_KEY = "adapter.alora.invocation_tokens"


class _Refused(Exception):
    """Why the adapter cannot be used (turned into a ConfigError naming the file)."""


def check_lora_file(path: str, model: GGUFInfo) -> None:
    """Raise :class:`ConfigError` unless the GGUF at ``path`` is a LoRA adapter llama.cpp can apply to ``model``."""
    where = f"llama_kwargs: lora_path {path!r}"
    file = Path(path)
    if not file.is_file():
        problem = "is a directory" if file.is_dir() else "does not exist"
        raise ConfigError(f"{where} {problem}. Pass the path of a LoRA adapter GGUF file (rf-convert lora writes one).")
    try:
        header = read_gguf_header(file)
        _check_metadata(header, model)
        _check_tensors(header, model)
    except _Refused as exc:
        raise ConfigError(f"{where} cannot be applied to {model.path}: {exc}.") from None
    except RfsdkError as exc:
        raise ConfigError(f"{where} is not a usable GGUF file: {exc}") from None


def _check_metadata(header: GGUFHeader, model: GGUFInfo) -> None:
    for key, wanted in _STRING_KEYS.items():
        value = header.metadata.get(key) if header.value_types.get(key) == "STRING" else None
        if value != wanted:
            found = "it has none" if key not in header.value_types else f"not {value!r}"
            raise _Refused(f"it is not a LoRA adapter ({key} must be {wanted!r}, {found})")
    if header.value_types.get("general.architecture") != "STRING" or header.architecture != model.architecture:
        raise _Refused(
            f"it is an adapter for the architecture {header.architecture!r}, and the model's is "
            f"{model.architecture!r}; use an adapter made for this model"
        )
    if _ALPHA_KEY in header.value_types:
        alpha = header.metadata.get(_ALPHA_KEY)
        if header.value_types[_ALPHA_KEY] != "FLOAT32" or not isinstance(alpha, float) or not math.isfinite(alpha):
            raise _Refused(f"{_ALPHA_KEY} must be a finite FLOAT32, not a {header.value_types[_ALPHA_KEY]} {alpha!r}")
    if _ALORA_KEY in header.value_types and header.value_types[_ALORA_KEY] != "ARRAY[UINT32]":
        raise _Refused(f"{_ALORA_KEY} must be an ARRAY[UINT32], not {header.value_types[_ALORA_KEY]}")


def _check_tensors(header: GGUFHeader, model: GGUFInfo) -> None:
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in header.tensor_shapes.items():
        if name.endswith(_IGNORED_SUFFIX):
            continue
        suffix = next((s for s in _PAIR_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise _Refused(f"its tensor {name!r} is neither a .lora_a nor a .lora_b half")
        if header.tensor_types[name] not in _LORA_TENSOR_TYPES:
            kind = GGMLQuantizationType(header.tensor_types[name]).name
            raise _Refused(f"its tensor {name!r} has type {kind}; LoRA tensors must be {', '.join(_LORA_TENSOR_TYPES.values())}")
        if len(shape) != 2:
            raise _Refused(f"its tensor {name!r} has {len(shape)} dimensions, not 2")
        pairs.setdefault(name.removesuffix(suffix), {})[suffix] = shape
    for target, halves in pairs.items():
        _check_pair(target, halves, model)


def _check_pair(target: str, halves: dict[str, tuple[int, ...]], model: GGUFInfo) -> None:
    if len(halves) != 2:
        missing = next(s for s in _PAIR_SUFFIXES if s not in halves)
        raise _Refused(f"it has no {target}{missing} to pair with {target}{next(iter(halves))}")
    weight = model.tensor_shapes.get(target)
    if weight is None:
        raise _Refused(f"it adapts {target!r}, which the model does not have; it was made for another base model")
    if len(weight) != 2:
        raise _Refused(f"it adapts {target!r}, a {len(weight)}-dimensional tensor; rfsdk applies LoRA to matrices only")
    a, b = halves[".lora_a"], halves[".lora_b"]
    if target.endswith("token_embd.weight"):  # llama.cpp: A and B flipped, B not transposed
        fits = weight[0] == b[1] and weight[1] == a[1] and a[0] == b[0]
    else:
        fits = weight[0] == a[0] and weight[1] == b[1] and a[1] == b[0]
    if not fits:
        raise _Refused(
            f"its {target} pair has shapes A {list(a)} and B {list(b)}, which do not fit the model's "
            f"{list(weight)} (GGML order); it was made for another base model"
        )
