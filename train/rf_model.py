"""A causal LM prepared for red-flag training: <rf> token, trainable <rf> row(s), LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfsdk.convert.adapter import Adapter, AdapterMetadata, LoraPair, save_adapter
from rfsdk.errors import RfsdkError

from .base import AdapterMismatchError
from .lora import LoRALinear, adapters_disabled, add_lora
from .tokenizer_files import special_role

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NEVER_LOGIT = -1.0e4  # the frozen base never emits <rf>: its logit is pinned far below the rest
CausalLM = Any
"""A transformers causal LM (``PreTrainedModel``); typed loosely, as ``nn.Module`` attribute access types as ``Tensor | Module``."""


class RfTokenError(RfsdkError, ValueError):
    """The <rf> token cannot be added, or the named slot cannot be taken over, in this tokenizer."""


def check_rf_token(tokenizer, *, token: str = "<rf>", slot: str | None = None) -> None:
    """Refuse a ``slot`` this tokenizer lacks, that ordinary text produces, or that has a special role;
    without a slot, refuse a tokenizer that already has ``token``."""
    if slot is None:
        if token in tokenizer.get_vocab():
            raise RfTokenError(
                f"the tokenizer already has {token!r}; take it over with slot={token!r} (rf-train fit --slot {token!r})."
            )
        return
    rf_id = tokenizer.convert_tokens_to_ids(slot)
    if rf_id is None or rf_id == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(rf_id) != slot:
        raise RfTokenError(f"slot {slot!r} is not a token of this tokenizer; name an existing reserved token.")
    role = special_role(tokenizer, slot)
    if role is not None:
        raise RfTokenError(
            f"slot {slot!r} is the tokenizer's {role}; taking it over would break the chat format. "
            "Name an unused reserved token, or leave the slot out to add <rf>."
        )
    if slot not in tokenizer.get_added_vocab():
        raise RfTokenError(
            f"slot {slot!r} (id {rf_id}) is an ordinary token that text can produce; taking it over would corrupt "
            "tokenization. Name a reserved (added, special) token, or leave the slot out to add <rf>."
        )


class RfModel:
    """The network being trained plus the switches to run it as the frozen base.

    The <rf> row(s) are their own small parameters (``rows``: the input row, and the output
    row when the output is untied), spliced into the frozen embedding's output and the
    output head's logits by forward hooks, so the optimizer keeps state for them alone.
    """

    def __init__(self, model: CausalLM, rf_id: int, loras: dict[tuple[int, str], LoRALinear], rows: list[nn.Parameter]) -> None:
        self.model = model
        self.rf_id = rf_id
        self.loras = loras
        self.rows = rows
        self.tied = len(rows) == 1
        self._hooks = [
            model.get_input_embeddings().register_forward_hook(self._splice_input_row),
            model.get_output_embeddings().register_forward_hook(self._splice_output_row),
        ]

    @classmethod
    def prepare(
        cls,
        model: CausalLM,
        tokenizer,
        *,
        rank: int = 8,
        alpha: float = 16.0,
        targets: tuple[str, ...] = DEFAULT_TARGETS,
        token: str = "<rf>",
        slot: str | None = None,
    ) -> "RfModel":
        """Add ``token`` (or take over the existing token ``slot``), freeze the model, add LoRA.

        The <rf> row(s) start at the mean of the other rows; only they and the LoRA matrices
        are trained. LoRA and rows are float32 whatever the model's dtype.
        """
        check_rf_token(tokenizer, token=token, slot=slot)
        if slot is not None:
            rf_id = tokenizer.convert_tokens_to_ids(slot)
        else:
            tokenizer.add_special_tokens({"additional_special_tokens": [token]})
            rf_id = tokenizer.convert_tokens_to_ids(token)
            if rf_id >= model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(rf_id + 1, mean_resizing=False)
        for param in model.parameters():
            param.requires_grad_(False)
        loras = add_lora(model, rank, alpha, targets)
        matrices = [model.get_input_embeddings().weight]
        if model.get_output_embeddings().weight is not matrices[0]:
            matrices.append(model.get_output_embeddings().weight)
        with torch.no_grad():
            rows = [
                nn.Parameter(torch.cat([w[:rf_id], w[rf_id + 1 :]]).float().mean(dim=0)) for w in matrices
            ]
        return cls(model, rf_id, loras, rows)

    def _splice_input_row(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        at_rf = (args[0] == self.rf_id).unsqueeze(-1)
        return torch.where(at_rf, self.rows[0].to(output.dtype), output)

    def _splice_output_row(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        output[..., self.rf_id] = (args[0] @ self.rows[-1].to(args[0].dtype)).to(output.dtype)  # no copy of the logits
        return output

    def autocast(self) -> torch.autocast:
        """The context to run the network in: bfloat16 autocast for a bfloat16 base (the trained
        parameters stay float32), nothing for a float32 one."""
        dtype = self.model.get_input_embeddings().weight.dtype
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return self.model.get_input_embeddings().weight.device

    def trainable(self) -> list[nn.Parameter]:
        """Every trained parameter: the LoRA matrices, then the <rf> row(s)."""
        return [p for m in self.loras.values() for p in (m.lora_a, m.lora_b)] + self.rows

    def parameter_groups(self, lr: float, rf_lr: float) -> list[dict]:
        """Optimizer groups: LoRA matrices at ``lr``, the <rf> row(s) at ``rf_lr``."""
        lora = [p for m in self.loras.values() for p in (m.lora_a, m.lora_b)]
        return [
            {"params": lora, "lr": lr, "weight_decay": 0.0},
            {"params": self.rows, "lr": rf_lr, "weight_decay": 0.0},
        ]

    def logits(self, ids: list[int]) -> torch.Tensor:
        """Logits of the trained network, one row per position: ``[len(ids), vocab]``."""
        return self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float()

    @torch.no_grad()
    def base_logits(self, ids: list[int]) -> torch.Tensor:
        """Logits of the frozen base (adapters off, <rf> never emitted)."""
        with adapters_disabled(self.loras):
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float()
        logits[:, self.rf_id] = NEVER_LOGIT
        return logits

    def _rank_alpha(self) -> tuple[int, float]:
        first = next(iter(self.loras.values()))
        return first.lora_a.shape[0], first.scale * first.lora_a.shape[0]

    @torch.no_grad()
    def load_trained(self, adapter: Adapter, *, slot: str | None = None) -> None:
        """Start from ``adapter``'s trained weights: its LoRA matrices and <rf> row(s).

        The adapter must have been trained on this architecture with the same rank, alpha,
        LoRA targets and slot. Its ``lora_strength`` and pair weights are not applied: both are
        chosen after training (``rf-train tune``), so the run continues from the weights as trained.
        """
        meta = adapter.metadata
        rank, alpha = self._rank_alpha()
        if (meta.lora_rank, meta.lora_alpha) != (rank, alpha):
            raise AdapterMismatchError(
                f"the adapter has LoRA rank {meta.lora_rank} and alpha {meta.lora_alpha:g}, this run "
                f"rank {rank} and alpha {alpha:g}; pass --rank {meta.lora_rank} --alpha {meta.lora_alpha:g}."
            )
        if meta.slot != slot:
            raise AdapterMismatchError(f"the adapter's <rf> slot is {meta.slot!r}, this run's {slot!r}; pass the same --slot.")
        pairs = {(pair.layer, pair.module): pair for pair in adapter.loras}
        if pairs.keys() != self.loras.keys():
            raise AdapterMismatchError(
                f"the adapter has LoRA on {len(pairs)} modules, this model {len(self.loras)}; "
                "it was trained on another architecture."
            )
        if (adapter.output is not None) == self.tied:
            raise AdapterMismatchError(
                f"the adapter has {'an' if self.tied else 'no'} <rf> output row, but this model's output "
                f"embeddings are {'tied' if self.tied else 'untied'}; it was trained on another model."
            )
        rows = list(zip(self.rows, [adapter.embedding, adapter.output]))
        n_embd = rows[0][0].shape[0]
        if adapter.embedding.shape != (n_embd,):
            raise AdapterMismatchError(f"the adapter's <rf> row has {adapter.embedding.shape[0]} values, this model's {n_embd}.")
        for key, lora in self.loras.items():
            if pairs[key].a.shape != tuple(lora.lora_a.shape) or pairs[key].b.shape != tuple(lora.lora_b.shape):
                raise AdapterMismatchError(f"the adapter's LoRA for layer {key[0]} {key[1]} has other shapes than this model's.")
        # Checked in full first, so a refused adapter leaves the model as it was.
        for param, row in rows:
            param.copy_(torch.tensor(row).to(param))
        for key, lora in self.loras.items():
            lora.lora_a.copy_(torch.tensor(pairs[key].a).to(lora.lora_a))
            lora.lora_b.copy_(torch.tensor(pairs[key].b).to(lora.lora_b))

    def save_adapter(
        self, path: Path, *, base_model: str, threshold: float | None, slot: str | None = None, base_sha256: str | None = None
    ) -> None:
        """Write the LoRA and <rf> rows as an ``rfsdk-adapter/1`` safetensors file (``threshold`` None: not calibrated)."""
        rank, alpha = self._rank_alpha()
        embedding = self.rows[0]
        output = None if self.tied else self.rows[1]
        pairs = [
            LoraPair(layer=layer, module=module, a=m.lora_a.detach().float().numpy(), b=m.lora_b.detach().float().numpy())
            for (layer, module), m in sorted(self.loras.items())
        ]
        metadata = AdapterMetadata(
            base_model=base_model,
            base_sha256=base_sha256,
            lora_alpha=alpha,
            lora_rank=rank,
            rf_threshold=threshold,
            slot=slot,
        )
        save_adapter(
            path,
            metadata,
            embedding.detach().float().numpy(),
            None if output is None else output.detach().float().numpy(),
            pairs,
        )
