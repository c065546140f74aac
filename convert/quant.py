"""Decode GGML tensor data to float32 and encode it back, per quantization type."""

from __future__ import annotations

from functools import cache

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as _quants

FALLBACK_TYPE = GGMLQuantizationType.F16
"""The type a tensor is stored in when its own type cannot be encoded with numpy."""


@cache
def can_encode(qtype: GGMLQuantizationType) -> bool:
    """Whether numpy (gguf-py) can quantize float32 data into ``qtype``."""
    block_size, _ = GGML_QUANT_SIZES[qtype]
    try:
        _quants.quantize(np.zeros((1, block_size), dtype=np.float32), qtype)
    except (NotImplementedError, _quants.QuantError):
        return False
    return True


@cache
def can_decode(qtype: GGMLQuantizationType) -> bool:
    """Whether numpy (gguf-py) can dequantize ``qtype`` data to float32."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    try:
        _quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def decode(data: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Float32 values of tensor ``data`` (as GGUFReader gives it) of type ``qtype``."""
    return np.asarray(_quants.dequantize(np.asarray(data), qtype), dtype=np.float32)


def encode(values: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """``values`` (float32, rows last) encoded as ``qtype``, ready to be written as tensor data."""
    return _quants.quantize(np.ascontiguousarray(values, dtype=np.float32), qtype)


def bits_per_weight(qtype: GGMLQuantizationType) -> float:
    """Storage bits per value of ``qtype`` (Q4_1: 5.0, Q8_0: 8.5, F16: 16.0)."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return 8 * type_size / block_size


def n_bytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Bytes that a tensor of element ``shape`` (numpy order) takes when stored as ``qtype``."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape, dtype=np.int64)) // block_size * type_size
