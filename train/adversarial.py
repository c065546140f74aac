"""Embedding-space adversarial training for <rf> (the paper's RF-AT).

An attacker who could nudge the prompt's token embeddings tries to keep the model from
emitting <rf> where it must: a few normalised gradient steps on a per-token perturbation,
each token's kept inside an L2 ball of ``epsilon`` times its own embedding norm. The model
is then trained to emit <rf> despite the perturbation. Gradients of the attack never reach
the model's weights; only the final, perturbed cross-entropy does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from .rf_model import RfModel


class AdversarialConfig(BaseModel):
    """Strength of the embedding-space attack and the weight of the term trained on it."""

    model_config = ConfigDict(frozen=True)

    epsilon: float = Field(0.1, gt=0, description="L2 radius per prompt token, relative to its embedding norm.")
    steps: int = Field(4, gt=0, description="Attack steps per example.")
    weight: float = Field(1.0, ge=0, description="Weight of the adversarial <rf> cross-entropy.")


def _rf_log_probability(rf: RfModel, embeds: torch.Tensor) -> torch.Tensor:
    logits = rf.model(inputs_embeds=embeds.unsqueeze(0)).logits[0, -1].float()
    return F.log_softmax(logits, dim=-1)[rf.rf_id]


def attack(rf: RfModel, ids: list[int], n_prompt: int, config: AdversarialConfig) -> torch.Tensor:
    """Embeddings of ``ids`` with the first ``n_prompt`` perturbed to lower P(<rf>) after the last."""
    with torch.no_grad():
        embeds = rf.model.get_input_embeddings()(torch.tensor(ids, device=rf.device)).float()
    radius = config.epsilon * embeds[:n_prompt].norm(dim=-1, keepdim=True)
    step_size = 2.5 * radius / config.steps
    delta = torch.zeros_like(embeds[:n_prompt], requires_grad=True)
    dtype = rf.model.get_input_embeddings().weight.dtype
    for _ in range(config.steps):
        perturbed = torch.cat([embeds[:n_prompt] + delta, embeds[n_prompt:]])
        (grad,) = torch.autograd.grad(_rf_log_probability(rf, perturbed.to(dtype)), delta)
        with torch.no_grad():
            delta -= step_size * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta *= (radius / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return torch.cat([embeds[:n_prompt] + delta.detach(), embeds[n_prompt:]]).to(dtype)


def adversarial_terms(
    rf: RfModel, prompt: list[int], answer: list[int], position: int, config: AdversarialConfig
) -> dict[str, torch.Tensor]:
    """Cross-entropy for <rf> before ``answer[position]`` with the prompt under attack."""
    if not 0 <= position <= max(len(answer) - 1, 0):
        raise ValueError(f"position {position} is outside the answer (length {len(answer)})")
    embeds = attack(rf, prompt + answer[:position], len(prompt), config)
    return {"rf_adv": -_rf_log_probability(rf, embeds)}
