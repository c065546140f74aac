"""Low-rank adapters on a Hugging Face causal LM, switchable off to get the frozen base."""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from rfsdk.convert.adapter import LORA_MODULES

_LAYER = re.compile(r"\.layers\.(\d+)\.")


class LoRALinear(nn.Module):
    """``base(x) + scale * B(A(x))``; A starts random, B zero, so training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        # float32 whatever the base's dtype: the trained weights (a bfloat16 base runs under autocast)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.enabled = True
        self.cast: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the base's weight and bias, cast once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cast is None:
            out = self.base(x)
        else:
            weight, bias = self.cast
            out = nn.functional.linear(x.to(weight.dtype), weight, bias)
        if self.enabled:
            out = out + ((x @ self.lora_a.T) * self.scale) @ self.lora_b.T  # scaled at rank width, not output width
        return out


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...]) -> dict[tuple[int, str], LoRALinear]:
    """Wrap every ``targets`` projection of every decoder layer; returns them by (layer, module)."""
    unknown = set(targets) - set(LORA_MODULES)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; use some of {', '.join(LORA_MODULES)}")
    wrapped: dict[tuple[int, str], LoRALinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                layer = _LAYER.search(f"{name}.")
                if layer is None:
                    continue
                lora = LoRALinear(child, rank, alpha)
                setattr(module, child_name, lora)
                wrapped[(int(layer.group(1)), child_name)] = lora
    if not wrapped:
        raise ValueError(
            f"found none of the LoRA targets {targets} inside decoder layers; is this a "
            "Llama/Qwen-style model?"
        )
    return wrapped


@contextmanager
def base_weights_cast(loras: dict[tuple[int, str], LoRALinear], dtype: torch.dtype) -> Iterator[None]:
    """Run the wrapped projections on copies of their base weights cast to ``dtype`` once.

    Autocast casts a frozen weight again at every call: for a pass that runs one sequence at a
    time that is once per sequence, which costs about as much as the lower precision saves.
    The copies exist only inside the context.
    """
    for lora in loras.values():
        base = lora.base
        lora.cast = (base.weight.detach().to(dtype), None if base.bias is None else base.bias.detach().to(dtype))
    try:
        yield
    finally:
        for lora in loras.values():
            lora.cast = None


@contextmanager
def adapters_disabled(loras: dict[tuple[int, str], LoRALinear]) -> Iterator[None]:
    """Run the frozen base: the same network with every adapter switched off."""
    for lora in loras.values():
        lora.enabled = False
    try:
        yield
    finally:
        for lora in loras.values():
            lora.enabled = True
