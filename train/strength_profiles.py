"""Strength profiles: how `rf-train tune` weighs the LoRA modules against each other (no torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat

from rfsdk.convert.adapter import LoraPair

_MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


class StrengthProfile(BaseModel):
    """Relative LoRA weights of attention and MLP modules, in the first and second half of the layers.

    The halves are of the layers the adapter has LoRA on; the tuned strength scales all four.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    attention: tuple[NonNegativeFloat, NonNegativeFloat] = Field(description="Weight in the first half of the layers, then the second.")
    mlp: tuple[NonNegativeFloat, NonNegativeFloat] = Field(description="Weight in the first half of the layers, then the second.")

    def weight(self, pair: LoraPair, n_layers: int) -> float:
        """The weight of ``pair`` in an adapter with LoRA on ``n_layers`` layers."""
        half = int(pair.layer >= n_layers / 2)
        return (self.mlp if pair.module in _MLP_MODULES else self.attention)[half]


PROFILES: dict[str, StrengthProfile] = {
    "uniform": StrengthProfile(name="uniform", attention=(1.0, 1.0), mlp=(1.0, 1.0)),
    "late-mlp": StrengthProfile(name="late-mlp", attention=(0.0, 1 / 3), mlp=(0.5, 1.0)),
}
"""The profiles `rf-train tune --profile` knows. On the bundled default's trained delta, ``late-mlp``
fits more detection into the same benign KL (validation TPR 0.879 against 0.793 for ``uniform``,
both at FPR 0.047 and KL <= 0.02): the first half of the layers' attention moved benign text most
for the least detection."""
