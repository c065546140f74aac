"""Hugging Face decoder architectures that ``rf-convert hf`` knows: hyperparameters and tensor layout.

For each supported ``config.json`` architecture this module says which GGUF architecture it
becomes, which HF tensors the checkpoint must hold (with their shapes, computed from the config),
their GGUF names, and how their rows are reordered (llama's q/k rope permutation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf import Keys

from rfsdk.errors import ConversionError

from .merge import ROPE_PERMUTED_ARCHS, permute_rope_rows

HF_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
"""config.json ``architectures`` entry -> GGUF ``general.architecture``."""

IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)
"""HF buffers that some checkpoints store but that llama.cpp recomputes."""


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: its HF source name (None: computed), shape (numpy order) and row transform."""

    gguf_name: str
    hf_name: str | None
    shape: tuple[int, ...]
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    values: np.ndarray | None = None  # for computed tensors (rope_freqs)


@dataclass(frozen=True)
class HParams:
    """The hyperparameters of a supported HF config, already checked."""

    hf_arch: str
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    tied: bool
    attention_bias: bool
    extra: dict[str, Any] = field(default_factory=dict)


def architecture_of(config: dict[str, Any], where: str) -> tuple[str, str]:
    """(HF architecture, GGUF architecture) named by ``config``; raises for unsupported ones."""
    names = config.get("architectures")
    supported = ", ".join(sorted(HF_ARCHITECTURES))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConversionError(
            f"{where} has no \"architectures\" list, so the model type is unknown. "
            f"Supported architectures: {supported}."
        )
    for name in names:
        if name in HF_ARCHITECTURES:
            return name, HF_ARCHITECTURES[name]
    raise ConversionError(
        f"unsupported architecture {', '.join(names)} in {where}. rf-convert hf supports: {supported}. "
        "For other models use llama.cpp's convert_hf_to_gguf.py, then rf-convert patch."
    )


def read_hparams(config: dict[str, Any], where: str) -> HParams:
    """Check ``config`` (a parsed config.json) and collect the hyperparameters the conversion needs."""
    hf_arch, arch = architecture_of(config, where)

    def need_int(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConversionError(
                f"{where}: {key!r} is {value!r}; a {hf_arch} config needs a positive integer there."
            )
        return value

    n_embd = need_int("hidden_size")
    n_head = need_int("num_attention_heads")
    n_head_kv = need_int("num_key_value_heads", n_head)
    head_dim = config.get("head_dim") or n_embd // n_head
    if not isinstance(head_dim, int) or head_dim <= 0 or n_head % n_head_kv != 0:
        raise ConversionError(
            f"{where}: head_dim {head_dim!r} / {n_head} heads / {n_head_kv} kv heads do not fit together."
        )
    rms_eps = config.get("rms_norm_eps", 1e-6)
    if not isinstance(rms_eps, (int, float)) or isinstance(rms_eps, bool) or rms_eps <= 0:
        raise ConversionError(f"{where}: rms_norm_eps is {rms_eps!r}; it must be a positive number.")
    if config.get("mlp_bias"):
        raise ConversionError(f"{where}: mlp_bias=true is not supported by rf-convert hf.")
    rope_params = config.get("rope_parameters")
    rope_params = rope_params if isinstance(rope_params, dict) else {}
    rope_theta = config.get("rope_theta", rope_params.get("rope_theta", 10000.0))
    if not isinstance(rope_theta, (int, float)) or isinstance(rope_theta, bool) or rope_theta <= 0:
        raise ConversionError(f"{where}: rope_theta is {rope_theta!r}; it must be a positive number.")
    scaling = config.get("rope_scaling") or (
        rope_params if rope_params.get("rope_type", "default") != "default" else None
    )
    if scaling is not None:
        _check_rope_scaling(scaling, where)
    return HParams(
        hf_arch=hf_arch,
        arch=arch,
        n_vocab=need_int("vocab_size"),
        n_embd=n_embd,
        n_layer=need_int("num_hidden_layers"),
        n_ff=need_int("intermediate_size"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ctx=need_int("max_position_embeddings", 4096),
        rms_eps=float(rms_eps),
        rope_theta=float(rope_theta),
        rope_scaling=scaling,
        tied=bool(config.get("tie_word_embeddings", False)),
        attention_bias=arch == "qwen2" or bool(config.get("attention_bias", False)),
    )


_ROPE_TYPES = ("linear", "yarn", "llama3")


def _rope_type(scaling: dict[str, Any]) -> str:
    return str(scaling.get("rope_type") or scaling.get("type") or "default")


def _check_rope_scaling(scaling: Any, where: str) -> None:
    if not isinstance(scaling, dict):
        raise ConversionError(f"{where}: rope_scaling is {scaling!r}; expected an object or null.")
    kind = _rope_type(scaling)
    if kind not in _ROPE_TYPES:
        raise ConversionError(
            f"{where}: rope scaling type {kind!r} is not supported (supported: {', '.join(_ROPE_TYPES)})."
        )
    if not isinstance(scaling.get("factor"), (int, float)):
        raise ConversionError(f"{where}: rope scaling {kind!r} needs a numeric \"factor\".")


def gguf_hparams(hp: HParams) -> list[tuple[str, Any, str]]:
    """Metadata entries (key, value, kind) for ``hp``; kind is 'u32', 'f32' or 'str'."""
    a = hp.arch
    out: list[tuple[str, Any, str]] = [
        (Keys.LLM.VOCAB_SIZE.format(arch=a), hp.n_vocab, "u32"),
        (Keys.LLM.CONTEXT_LENGTH.format(arch=a), hp.n_ctx, "u32"),
        (Keys.LLM.EMBEDDING_LENGTH.format(arch=a), hp.n_embd, "u32"),
        (Keys.LLM.BLOCK_COUNT.format(arch=a), hp.n_layer, "u32"),
        (Keys.LLM.FEED_FORWARD_LENGTH.format(arch=a), hp.n_ff, "u32"),
        (Keys.Attention.HEAD_COUNT.format(arch=a), hp.n_head, "u32"),
        (Keys.Attention.HEAD_COUNT_KV.format(arch=a), hp.n_head_kv, "u32"),
        (Keys.Attention.LAYERNORM_RMS_EPS.format(arch=a), hp.rms_eps, "f32"),
        (Keys.Rope.FREQ_BASE.format(arch=a), hp.rope_theta, "f32"),
        (Keys.Rope.DIMENSION_COUNT.format(arch=a), hp.head_dim, "u32"),
    ]
    if hp.head_dim != hp.n_embd // hp.n_head:
        out += [
            (Keys.Attention.KEY_LENGTH.format(arch=a), hp.head_dim, "u32"),
            (Keys.Attention.VALUE_LENGTH.format(arch=a), hp.head_dim, "u32"),
        ]
    scaling = hp.rope_scaling
    if scaling is not None:
        kind = _rope_type(scaling)
        if kind in ("linear", "yarn"):
            out += [
                (Keys.Rope.SCALING_TYPE.format(arch=a), kind, "str"),
                (Keys.Rope.SCALING_FACTOR.format(arch=a), float(scaling["factor"]), "f32"),
            ]
        if kind == "yarn" and "original_max_position_embeddings" in scaling:
            out.append(
                (
                    Keys.Rope.SCALING_ORIG_CTX_LEN.format(arch=a),
                    int(scaling["original_max_position_embeddings"]),
                    "u32",
                )
            )
    return out


def plan_tensors(hp: HParams) -> list[TensorPlan]:
    """Every GGUF tensor of the model, in file order, with its HF source and expected shape."""
    n, hd, ff, v = hp.n_embd, hp.head_dim, hp.n_ff, hp.n_vocab
    q_rows, kv_rows = hp.n_head * hd, hp.n_head_kv * hd
    permute = hp.arch in ROPE_PERMUTED_ARCHS

    def rope(n_head: int) -> Callable[[np.ndarray], np.ndarray] | None:
        return (lambda rows: permute_rope_rows(rows, n_head)) if permute else None

    plans = [TensorPlan("token_embd.weight", "model.embed_tokens.weight", (v, n))]
    freqs = _llama3_rope_freqs(hp)
    if freqs is not None:
        plans.append(TensorPlan("rope_freqs.weight", None, freqs.shape, values=freqs))
    for i in range(hp.n_layer):
        hf, gg = f"model.layers.{i}", f"blk.{i}"
        plans += [
            TensorPlan(f"{gg}.attn_norm.weight", f"{hf}.input_layernorm.weight", (n,)),
            TensorPlan(f"{gg}.attn_q.weight", f"{hf}.self_attn.q_proj.weight", (q_rows, n), rope(hp.n_head)),
            TensorPlan(
                f"{gg}.attn_k.weight", f"{hf}.self_attn.k_proj.weight", (kv_rows, n), rope(hp.n_head_kv)
            ),
            TensorPlan(f"{gg}.attn_v.weight", f"{hf}.self_attn.v_proj.weight", (kv_rows, n)),
            TensorPlan(f"{gg}.attn_output.weight", f"{hf}.self_attn.o_proj.weight", (n, q_rows)),
        ]
        if hp.attention_bias:
            plans += [
                TensorPlan(f"{gg}.attn_q.bias", f"{hf}.self_attn.q_proj.bias", (q_rows,), rope(hp.n_head)),
                TensorPlan(
                    f"{gg}.attn_k.bias", f"{hf}.self_attn.k_proj.bias", (kv_rows,), rope(hp.n_head_kv)
                ),
                TensorPlan(f"{gg}.attn_v.bias", f"{hf}.self_attn.v_proj.bias", (kv_rows,)),
            ]
            if hp.arch == "llama":
                plans.append(TensorPlan(f"{gg}.attn_output.bias", f"{hf}.self_attn.o_proj.bias", (n,)))
        plans += [
            TensorPlan(f"{gg}.ffn_norm.weight", f"{hf}.post_attention_layernorm.weight", (n,)),
            TensorPlan(f"{gg}.ffn_gate.weight", f"{hf}.mlp.gate_proj.weight", (ff, n)),
            TensorPlan(f"{gg}.ffn_up.weight", f"{hf}.mlp.up_proj.weight", (ff, n)),
            TensorPlan(f"{gg}.ffn_down.weight", f"{hf}.mlp.down_proj.weight", (n, ff)),
        ]
    plans.append(TensorPlan("output_norm.weight", "model.norm.weight", (n,)))
    if not hp.tied:
        plans.append(TensorPlan("output.weight", "lm_head.weight", (v, n)))
    return plans


def ignorable(hf_name: str, hp: HParams) -> bool:
    """Whether an HF tensor not in the plan may be skipped (recomputed buffers, a tied lm_head)."""
    return hf_name.endswith(IGNORED_TENSOR_SUFFIXES) or (hp.tied and hf_name == "lm_head.weight")


def _llama3_rope_freqs(hp: HParams) -> np.ndarray | None:
    """Per-frequency divisors for llama3-style rope scaling (llama.cpp's rope_freqs tensor)."""
    scaling = hp.rope_scaling
    if scaling is None or _rope_type(scaling) != "llama3":
        return None
    factor = float(scaling["factor"])
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    freqs = hp.rope_theta ** -(np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim)
    divisors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            divisors.append(1.0)
        elif wavelen > low_wavelen:
            divisors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            divisors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(divisors, dtype=np.float32)
