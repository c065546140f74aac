"""Check ``llama_kwargs`` (extra ``llama_cpp.Llama`` settings) by name and by value.

llama.cpp trusts its settings: a KV cache type it has no kernel for, a thread count in the
hundred thousands or a metadata override of the layer count aborts or crashes the process
instead of raising. So every setting rfsdk passes on has a rule here, and a value outside it
is a :class:`ConfigError` naming the setting, the value and what is accepted. A setting with
no rule (one a newer llama-cpp-python adds) is refused: rfsdk cannot vouch for it.

``kv_overrides`` is refused whole: an override changes the model's metadata after rfsdk
checked the file, and which keys and values crash llama.cpp depends on the architecture.
A LoRA (``lora_path``) is checked against the model in :mod:`rfsdk._lora_file`.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import llama_cpp
from gguf import GGMLQuantizationType

from .errors import ArgumentTypeError, ConfigError

MAX_THREADS = 512
"""ggml's GGML_MAX_N_THREADS; llama.cpp crashes on thread counts far above it."""
_INT32_MAX = 2**31 - 1

SET_BY_RFSDK = {
    "model_path": "the model argument",
    "n_ctx": "GuardedChat(n_ctx=...)",
    "n_gpu_layers": "GuardedChat(n_gpu_layers=...)",
    "n_threads": "GuardedChat(n_threads=...)",
    "seed": "SamplingConfig(seed=...)",
    "verbose": "GuardedChat(verbose=...)",
}
_NOT_SUPPORTED = {
    "vocab_only": "it loads no weights, so there is nothing to chat with",
    "embedding": "an embedding context produces no next-token logits for the guard",
    "draft_model": "speculative decoding accepts draft tokens the guard never checked",
    "tokenizer": "rfsdk tokenizes with the model's own vocabulary, so typed text cannot become a special token",
    "chat_format": "rfsdk renders prompts with the model's chat template; pass GuardedChat(chat_template=...) instead",
    "chat_handler": "rfsdk renders prompts with the model's chat template; pass GuardedChat(chat_template=...) instead",
    "lora_base": f"llama-cpp-python {llama_cpp.__version__} ignores it; leave it out",
    "kv_overrides": (
        "an override changes the model's metadata after rfsdk checked the file, and a wrong one "
        "(e.g. llama.block_count=0) crashes llama.cpp. Write the change into the file instead "
        "(gguf's gguf_new_metadata.py or gguf_set_metadata.py), so that rfsdk checks it when loading"
    ),
}
# KV cache types llama.cpp has CPU kernels for (its --cache-type-k/-v list); others abort or crash.
KV_CACHE_TYPES = {
    name.lower(): int(GGMLQuantizationType[name])
    for name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "IQ4_NL", "Q5_0", "Q5_1")
}
_UNQUANTIZED_CACHE = {KV_CACHE_TYPES["f32"], KV_CACHE_TYPES["f16"], KV_CACHE_TYPES["bf16"]}
_SPLIT_MODES = {
    name.removeprefix("LLAMA_SPLIT_MODE_").lower(): getattr(llama_cpp, name)
    for name in dir(llama_cpp)
    if name.startswith("LLAMA_SPLIT_MODE_")
}

Check = Callable[[str, Any], None]


def _bad(name: str, value: object, accepted: str) -> ConfigError:
    return ConfigError(f"llama_kwargs: {name}={value!r} is not accepted; {name} must be {accepted}.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flag(optional: bool = False) -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, bool) and not (optional and value is None):
            raise _bad(name, value, "True or False" + (" (or None: llama.cpp's default)" if optional else ""))

    return check


def _whole(least: int, most: int, *, optional: bool = False, note: str = "") -> Check:
    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        if not _is_int(value) or not least <= value <= most:
            extra = " or None" if optional else ""
            raise _bad(name, value, f"a whole number from {least} to {most}{extra}{note}")

    return check


def _finite(least: float | None = None, *, note: str = "") -> Check:
    def check(name: str, value: Any) -> None:
        if not _is_number(value) or not math.isfinite(value) or (least is not None and value < least):
            bound = "" if least is None else f" >= {least:g}"
            raise _bad(name, value, f"a finite number{bound}{note}")

    return check


def _choice(options: Mapping[str, int], *, optional: bool = False, what: str = "") -> Check:
    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        if not _is_int(value) or value not in options.values():
            listed = ", ".join(f"{label} ({number})" for label, number in options.items())
            extra = ", or None for llama.cpp's default" if optional else ""
            raise _bad(name, value, f"one of {listed}{what}{extra}")

    return check


def _tensor_split(name: str, value: Any) -> None:
    if value is None:
        return
    most = llama_cpp.LLAMA_MAX_DEVICES
    if (
        isinstance(value, (str, bytes, Mapping))
        or not hasattr(value, "__len__")
        or not 1 <= len(value) <= most
        or not all(_is_number(x) and math.isfinite(x) and x >= 0 for x in value)
    ):
        raise _bad(name, value, f"None or a list of 1 to {most} finite numbers >= 0 (one share per GPU)")


def _numa(name: str, value: Any) -> None:
    count = llama_cpp.GGML_NUMA_STRATEGY_COUNT
    if not isinstance(value, bool) and not (_is_int(value) and 0 <= value < count):
        raise _bad(name, value, f"True, False or a ggml NUMA strategy from 0 to {count - 1} (llama_cpp.GGML_NUMA_STRATEGY_*)")


def _lora_path(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(f"llama_kwargs: {name} must be the path of a LoRA GGUF file, not {value!r}.")
    if isinstance(value, str) and not value:
        raise _bad(name, value, "the path of a LoRA GGUF file (or None)")


_RULES: dict[str, Check] = {
    "split_mode": _choice(_SPLIT_MODES, what=" (llama_cpp.LLAMA_SPLIT_MODE_*)"),
    "main_gpu": _whole(0, llama_cpp.LLAMA_MAX_DEVICES - 1),
    "tensor_split": _tensor_split,
    "use_mmap": _flag(),
    "use_mlock": _flag(),
    "n_batch": _whole(1, _INT32_MAX),
    "n_ubatch": _whole(1, _INT32_MAX),
    "n_threads_batch": _whole(1, MAX_THREADS, optional=True),
    "rope_scaling_type": _whole(
        llama_cpp.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
        llama_cpp.LLAMA_ROPE_SCALING_TYPE_MAX_VALUE,
        optional=True,
        note=" (llama_cpp.LLAMA_ROPE_SCALING_TYPE_*; -1: the model's)",
    ),
    "pooling_type": _choice(
        {"unspecified": llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED, "none": llama_cpp.LLAMA_POOLING_TYPE_NONE},
        what=": pooling is for embeddings, which rfsdk does not produce",
    ),
    "attention_type": _choice(
        {"unspecified": llama_cpp.LLAMA_ATTENTION_TYPE_UNSPECIFIED, "causal": llama_cpp.LLAMA_ATTENTION_TYPE_CAUSAL},
        what=": a chat model generates with causal attention, and the guard reads those logits",
    ),
    "rope_freq_base": _finite(0.0, note=" (0: the model's)"),
    "rope_freq_scale": _finite(0.0, note=" (0: the model's)"),
    "yarn_ext_factor": _finite(note=" (negative: the model's)"),
    "yarn_attn_factor": _finite(),
    "yarn_beta_fast": _finite(),
    "yarn_beta_slow": _finite(),
    "yarn_orig_ctx": _whole(0, _INT32_MAX, note=" (0: the model's)"),
    "logits_all": _flag(),
    "offload_kqv": _flag(),
    "flash_attn": _flag(),
    "op_offload": _flag(optional=True),
    "swa_full": _flag(optional=True),
    "no_perf": _flag(),
    "last_n_tokens_size": _whole(0, _INT32_MAX),
    "lora_scale": _finite(),
    "lora_path": _lora_path,
    "numa": _numa,
    "type_k": _choice(KV_CACHE_TYPES, optional=True, what=" (llama_cpp.GGML_TYPE_*)"),
    "type_v": _choice(KV_CACHE_TYPES, optional=True, what=" (llama_cpp.GGML_TYPE_*)"),
    "spm_infill": _flag(),
}


def check_llama_kwargs(kwargs: Mapping[str, object] | None) -> dict[str, object]:
    """``kwargs`` checked setting by setting, as a new dict ready for ``llama_cpp.Llama``.

    Unknown names, names rfsdk sets from its own arguments, settings that would blind the
    guard or that rfsdk cannot check, and values outside a setting's rule raise
    :class:`ConfigError` (:class:`ArgumentTypeError` for a wrong type) saying what to do instead.
    """
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ArgumentTypeError(f"llama_kwargs must be a dict of llama_cpp.Llama settings, not {kwargs!r}")
    extra = dict(kwargs or {})
    accepted = inspect.signature(llama_cpp.Llama.__init__).parameters
    for name, value in extra.items():
        if name in SET_BY_RFSDK:
            raise ConfigError(f"llama_kwargs: set {name!r} with {SET_BY_RFSDK[name]}, not in llama_kwargs.")
        if name in _NOT_SUPPORTED:
            raise ConfigError(f"llama_kwargs: {name!r} is not supported: {_NOT_SUPPORTED[name]}.")
        if not isinstance(name, str) or name not in accepted or accepted[name].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ConfigError(
                f"llama_kwargs: {name!r} is not a setting of llama_cpp.Llama "
                f"(llama-cpp-python {llama_cpp.__version__}); check the spelling."
            )
        rule = _RULES.get(name)
        if rule is None:
            raise ConfigError(
                f"llama_kwargs: {name!r} is a setting of llama-cpp-python {llama_cpp.__version__} that rfsdk "
                "does not know, so it cannot check its value; leave it out (or report it to rfsdk)."
            )
        rule(name, value)
    _check_combination(extra)
    lora = extra.get("lora_path")
    if isinstance(lora, (str, os.PathLike)):
        extra["lora_path"] = os.path.expanduser(os.fspath(lora))  # llama.cpp opens it as given
    return extra


def _check_combination(extra: Mapping[str, object]) -> None:
    type_v = extra.get("type_v")
    if isinstance(type_v, int) and type_v not in _UNQUANTIZED_CACHE and extra.get("flash_attn") is not True:
        names = {number: label for label, number in KV_CACHE_TYPES.items()}
        raise ConfigError(
            f"llama_kwargs: type_v={type_v!r} ({names[type_v]}) needs flash_attn=True: llama.cpp "
            "quantizes the V cache only with flash attention. Add \"flash_attn\": True, or use "
            "type_v f16, bf16 or f32."
        )
