"""Quantize a GGUF file with llama.cpp's own quantizer (``llama_model_quantize`` in llama-cpp-python).

Used for the types numpy cannot encode (the K-quants) and the legacy 4/5-bit types, whose
per-tensor choices (e.g. a higher-precision output tensor) only llama.cpp makes.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from rfsdk.errors import ConversionError

LLAMA_OUTTYPES: dict[str, str] = {
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
"""Output type name -> llama-cpp-python ``LLAMA_FTYPE_*`` constant."""


def llama_quantize(src: Path, dst: Path, outtype: str, threads: int | None = None) -> None:
    """Write ``dst``: the GGUF model ``src`` quantized by llama.cpp to ``outtype`` (all metadata kept)."""
    import llama_cpp
    from llama_cpp import _logger

    ftype = getattr(llama_cpp, LLAMA_OUTTYPES[outtype], None)
    if ftype is None:
        raise ConversionError(
            f"the installed llama-cpp-python has no {LLAMA_OUTTYPES[outtype]}; pick another --outtype "
            "or upgrade llama-cpp-python."
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    if dst.exists():
        dst.unlink()
    level = _logger.logger.level
    _logger.logger.setLevel(logging.ERROR)  # llama.cpp logs every tensor otherwise
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        _logger.logger.setLevel(level)
    if rc != 0 or not dst.is_file():
        raise ConversionError(
            f"llama.cpp could not quantize the model to {outtype} (code {rc}); see its log above. "
            "Convert to f16 or q8_0 instead, or upgrade llama-cpp-python."
        )
