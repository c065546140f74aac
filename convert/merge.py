"""LoRA deltas in GGUF weight layout, for merging an adapter into a converted model."""

from __future__ import annotations

import numpy as np

from rfsdk.errors import ConversionError

from .adapter import LoraPair

ROPE_PERMUTED_ARCHS = frozenset({"llama", "smollm3"})
"""Architectures whose q/k rows llama.cpp's converter permutes (HF rotate-half -> interleaved rope)."""

MERGEABLE_ARCHS = ROPE_PERMUTED_ARCHS | {"qwen2", "qwen3"}
"""Architectures whose GGUF q/k/v/o and gate/up/down weights LoRA deltas can be merged into."""


def check_mergeable(arch: str) -> None:
    """Raise unless LoRA deltas in HF layout can be merged into GGUF weights of ``arch``."""
    if arch not in MERGEABLE_ARCHS:
        raise ConversionError(
            f"merging LoRA weights into a {arch!r} model is not supported (supported: "
            f"{', '.join(sorted(MERGEABLE_ARCHS))}). Use an adapter without LoRA tensors, or convert "
            "from the HF checkpoint instead."
        )


def permute_rope_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """``rows`` of a q/k projection reordered from HF's rotate-half layout to GGUF's interleaved one."""
    n_rows = rows.shape[0]
    if n_head <= 0 or n_rows % (2 * n_head) != 0:
        raise ConversionError(
            f"a q/k projection with {n_rows} rows cannot be split into {n_head} heads of even size; "
            "the base model's attention.head_count metadata does not match its weights."
        )
    return rows.reshape(n_head, 2, n_rows // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def lora_delta(pair: LoraPair, scale: float, arch: str, n_head: int, n_head_kv: int) -> np.ndarray:
    """``scale * B @ A`` for ``pair`` as a float32 ``[out, in]`` array in the GGUF layout of ``arch``."""
    b = pair.b
    if arch in ROPE_PERMUTED_ARCHS and pair.module == "q_proj":
        b = permute_rope_rows(b, n_head)
    elif arch in ROPE_PERMUTED_ARCHS and pair.module == "k_proj":
        b = permute_rope_rows(b, n_head_kv)
    return np.asarray(np.float32(scale) * b, dtype=np.float32) @ np.asarray(pair.a, dtype=np.float32)
