"""The training loop: sampled <rf> positions, the loss terms, checkpoints and resume."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from rfsdk.errors import RfsdkError

from .adversarial import AdversarialConfig, adversarial_terms
from .distributed import SINGLE, Processes
from .loss import HarmfulItem, LossWeights, batch_terms, total
from .rf_model import RfModel

CHECKPOINT = "checkpoint.pt"
TERMS = ("rf", "after_kl", "benign_kl", "benign_start")
"""The loss terms logged each step (0 when a term never came up in the batch); with
adversarial training also ``rf_adv``, the <rf> cross-entropy under attack."""


class CheckpointError(RfsdkError, ValueError):
    """A checkpoint this version cannot resume."""


@dataclass(frozen=True)
class TokenizedExample:
    """A prompt (chat template applied, ending with the assistant header) and its answer."""

    prompt: list[int]
    answer: list[int]


class TrainConfig(BaseModel):
    """How long and how hard to train."""

    model_config = ConfigDict(frozen=True)

    steps: int = Field(300, gt=0)
    batch_size: int = Field(4, gt=0)
    lr: float = Field(2e-4, gt=0)
    rf_lr: float = Field(1e-3, gt=0)
    weights: LossWeights = LossWeights()
    min_offset: int = Field(0, ge=0)
    max_offset: int | None = Field(None, gt=0)
    start_probability: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    checkpoint_every: int = Field(50, gt=0)
    max_seconds: float | None = Field(None, gt=0)
    adversarial: AdversarialConfig | None = None
    base_bf16: bool = False
    """Run the frozen base's pass (the KL's teacher) under bfloat16 autocast (see :mod:`rfsdk.train.precision`)."""


def sample_position(answer_len: int, config: TrainConfig, rng: random.Random) -> int:
    """Where <rf> goes in a harmful answer.

    With probability ``start_probability`` the reply start (0, where prompt-level
    detection reads P(<rf>)), otherwise uniform over [min_offset, max_offset).
    An empty answer always gives 0.
    """
    if answer_len == 0 or rng.random() < config.start_probability:
        return 0
    high = answer_len if config.max_offset is None else min(answer_len, config.max_offset)
    low = min(config.min_offset, high - 1)
    return rng.randrange(low, high)


def train(
    rf: RfModel,
    harmful: Sequence[TokenizedExample],
    benign: Sequence[TokenizedExample],
    config: TrainConfig,
    *,
    out_dir: Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    processes: Processes = SINGLE,
    base_sha256: str | None = None,
) -> list[dict[str, float]]:
    """Train for ``config.steps`` steps; resumes from ``out_dir/checkpoint.pt`` if present.

    Each step takes ``batch_size`` harmful and ``batch_size`` benign examples, shared out
    among ``processes`` (see :mod:`rfsdk.train.distributed`); only the main one saves
    checkpoints. With ``config.max_seconds`` the run also stops (after a checkpoint) once
    that much time has passed. Checkpoints record ``base_sha256`` (see :func:`checkpoint_base_sha256`).
    Returns the mean loss terms of every step run now.
    """
    if not harmful or not benign:
        raise ValueError("training needs at least one harmful and one benign example")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(rf.parameter_groups(config.lr, config.rf_lr))
    start = _resume(rf, optimizer, rng, out_dir)
    history = []
    deadline = None if config.max_seconds is None else time.monotonic() + config.max_seconds
    rf.model.train()
    for step in range(start, config.steps):
        optimizer.zero_grad()
        sums = dict.fromkeys(TERMS + (("rf_adv",) if config.adversarial else ()), 0.0)
        drawn = []
        for index in range(config.batch_size):
            h = harmful[rng.randrange(len(harmful))]
            b = benign[rng.randrange(len(benign))]
            position = sample_position(len(h.answer), config, rng)
            if processes.owns(index):
                drawn.append((HarmfulItem(h.prompt, h.answer, position), (b.prompt, b.answer)))
        if drawn:
            with rf.autocast():
                per_example = batch_terms(rf, [h for h, _ in drawn], [b for _, b in drawn], base_bf16=config.base_bf16)
                examples = [h | b for h, b in zip(per_example[: len(drawn)], per_example[len(drawn) :])]
                loss = torch.stack([total(terms, config.weights) for terms in examples]).sum()
                if config.adversarial is not None:
                    for (item, _), terms in zip(drawn, examples):
                        terms.update(adversarial_terms(rf, item.prompt, item.answer, item.position, config.adversarial))
                        loss = loss + config.adversarial.weight * terms["rf_adv"]
            (loss / config.batch_size).backward()
            for terms in examples:
                for name, value in terms.items():
                    sums[name] += value.item() / config.batch_size
        sums = _combine(rf, processes, sums)
        optimizer.step()
        history.append(sums)
        if on_step is not None:
            on_step(step + 1, sums)
        out_of_time = processes.any(deadline is not None and time.monotonic() > deadline)
        last = out_of_time or step + 1 == config.steps
        if out_dir is not None and ((step + 1) % config.checkpoint_every == 0 or last):
            if processes.is_main:
                _save(rf, optimizer, rng, step + 1, out_dir, base_sha256)
            processes.barrier()
        if out_of_time:
            break
    rf.model.eval()
    return history


def _combine(rf: RfModel, processes: Processes, sums: dict[str, float]) -> dict[str, float]:
    """Sum the gradients and the logged terms of the batch over all processes."""
    if processes.world == 1:
        return sums
    logged = torch.tensor(list(sums.values()), dtype=torch.float64, device=rf.device)
    processes.sum_(_gradients(rf))
    processes.sum_([logged])
    return dict(zip(sums, logged.tolist()))


def _gradients(rf: RfModel) -> list[torch.Tensor]:
    """The gradients training uses: the LoRA matrices' and the <rf> rows'."""
    gradients = []
    for weight in rf.trainable():
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        gradients.append(weight.grad)
    return gradients


def _trainable(rf: RfModel) -> dict[str, torch.Tensor]:
    state = {f"lora.{layer}.{module}.{half}": getattr(m, f"lora_{half}") for (layer, module), m in rf.loras.items() for half in "ab"}
    for i, row in enumerate(rf.rows):
        state[f"rf_row.{i}"] = row
    return state


def _save(rf: RfModel, optimizer: torch.optim.Optimizer, rng: random.Random, step: int, out_dir: Path,
          base_sha256: str | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "step": step,
        "base_sha256": base_sha256,
        "trainable": {k: v.detach().clone() for k, v in _trainable(rf).items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = out_dir / f"{CHECKPOINT}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, out_dir / CHECKPOINT)


def checkpoint_step(out_dir: Path) -> int:
    """The step saved in ``out_dir``'s checkpoint (0 when there is none): all steps trained so far."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return 0
    return int(torch.load(path, weights_only=True, mmap=True)["step"])


def checkpoint_base_sha256(out_dir: Path) -> str | None:
    """The checksum of the base ``out_dir``'s checkpoint was trained on (None: no checkpoint, or none recorded)."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True, mmap=True).get("base_sha256")


def _resume(rf: RfModel, optimizer: torch.optim.Optimizer, rng: random.Random, out_dir: Path | None) -> int:
    path = None if out_dir is None else out_dir / CHECKPOINT
    if path is None or not path.is_file():
        return 0
    payload = torch.load(path, weights_only=True)
    saved_shapes = [tuple(s["exp_avg"].shape) for s in payload["optimizer"]["state"].values() if "exp_avg" in s]
    if any(shape not in {tuple(p.shape) for p in rf.trainable()} for shape in saved_shapes):
        raise CheckpointError(
            f"{path} was written by an older rf-train (its optimizer state is for the whole embedding matrix); "
            "start a new run in another --out, or continue its adapter with --init-adapter."
        )
    with torch.no_grad():
        for name, tensor in _trainable(rf).items():
            tensor.copy_(payload["trainable"][name])
    # The saved moments carry on, at the learning rates asked for now (the card records those).
    rates = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(payload["optimizer"])
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr
    rng.setstate(payload["rng"])
    torch.set_rng_state(payload["torch_rng"])
    return int(payload["step"])
