"""The precision of the frozen base's forward pass, the teacher of the KL terms.

That pass needs no gradients and no float32 accuracy: under bfloat16 autocast its
probabilities differ from the float32 pass's by KL 0.0006 nats per answer token (SmolLM2-135M,
16 benign training answers; the utility budget is 0.02), and on hardware that computes
bfloat16 natively it runs about 1.7 times as fast (bench/base_pass_precision.py, bench/README.md).
"""

from __future__ import annotations

from typing import Literal

import torch

BasePass = Literal["auto", "fp32", "bf16"]
"""``rf-train fit --base-pass``: "auto" is bf16 where the device computes bfloat16 natively, else fp32."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or an x86 CPU
    with AVX512-BF16 or AMX (elsewhere bfloat16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def base_pass_bf16(choice: BasePass, device: torch.device, weights: Literal["fp32", "bf16"]) -> bool:
    """Whether the frozen base's pass runs in bfloat16 for ``choice`` on ``device``: always with
    bfloat16 ``weights`` (the whole network then runs under bfloat16 autocast)."""
    return weights == "bf16" or choice == "bf16" or (choice == "auto" and native_bf16(device))
