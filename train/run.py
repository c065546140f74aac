"""One training run end to end: data, model, training, adapter, GGUF export, calibration, card."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from rfsdk.convert.adapter import load_adapter
from rfsdk.convert.patch import patch_gguf
from rfsdk.errors import RfsdkError
from rfsdk.model_source import cache_dir

from .adversarial import AdversarialConfig
from .base import BaseMismatchError, base_sha256, check_trained_on, enable_checkpointing, load_model, load_tokenizer
from .calibrate import Calibration, calibrate
from .card import write_model_card
from .data import load_dataset
from .distributed import Processes, joined
from .llama_settings import LlamaSettings, using_llama_settings
from .loop import TrainConfig, checkpoint_base_sha256, checkpoint_step, train
from .loss import LossWeights
from .precision import BasePass, base_pass_bf16
from .prompt_sets import prompt_set
from .recipe import RecipeConfig, build_training_set
from .rf_model import RfModel, check_rf_token

Progress = Callable[[str, int, int], None]


class TrainingDataError(RfsdkError, ValueError):
    """The training set came out empty on one side."""


class FitOptions(BaseModel):
    """Everything ``rf-train fit`` was asked to do."""

    model_config = ConfigDict(frozen=True)

    base: Path
    out: Path
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    rf_lr: float = 1e-2
    rank: int = 16
    alpha: float = 32.0
    slot: str | None = None
    start_probability: float = 0.5
    max_offset: int = 32
    onpolicy: int = 400
    max_len: int = 192
    weights: LossWeights = LossWeights()
    adversarial: AdversarialConfig | None = None
    max_seconds: float | None = None
    target_fpr: float = 0.05
    device: str = "auto"
    dtype: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = False
    base_pass: BasePass = "auto"
    threads: int | None = None
    n_gpu_layers: int = Field(0, ge=-1)
    seed: int = 0
    init_adapter: Path | None = None

    @property
    def is_gguf(self) -> bool:
        """Whether the base is a GGUF file (on-policy answers, export and calibration need one)."""
        return self.base.is_file() and self.base.suffix == ".gguf"


def _check_resumable(out: Path, base: Path, base_sha: str) -> None:
    saved = checkpoint_base_sha256(out)
    if saved is not None and saved != base_sha:
        raise BaseMismatchError(
            f"{out} holds a run trained on another base (sha256 {saved}; {base} has {base_sha}). Pass the same --base "
            "to resume it, or another --out to start a new run."
        )


def _device(name: str, processes: Processes) -> torch.device:
    device = _device_type(name)
    if device.type == "cuda" and processes.world > 1:
        return torch.device("cuda", processes.local_rank)
    return device


def _device_type(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit_model(options: FitOptions, *, progress: Progress | None = None, log: Callable[[str], None] = print) -> dict | None:
    """Run the whole recipe; returns the summary also written to the model card.

    Under ``accelerate launch`` or ``torchrun`` every process trains its share of each
    batch (see :mod:`rfsdk.train.distributed`); the main process alone logs, exports,
    calibrates and returns the summary, the others return None.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    settings = LlamaSettings(n_threads=options.threads, n_gpu_layers=options.n_gpu_layers)
    with joined(_device_type(options.device).type) as processes, using_llama_settings(settings):
        return _fit(options, processes, progress=progress, log=log)


def _fit(options: FitOptions, processes: Processes, *, progress: Progress | None, log: Callable[[str], None]) -> dict | None:
    if not processes.is_main:
        progress, log = None, lambda line: None
    out, base = options.out, options.base
    # Everything that can refuse the run is checked before anything is loaded or written.
    base_sha = base_sha256(base)
    _check_resumable(out, base, base_sha)
    tokenizer = load_tokenizer(base)
    check_rf_token(tokenizer, slot=options.slot)
    init = None if options.init_adapter is None else load_adapter(options.init_adapter)
    if options.init_adapter is not None and init is not None:
        check_trained_on(options.init_adapter, init, base, base_sha)
    with processes.main_first():
        dataset = load_dataset()
    log(f"loading {base}" + (f" in {processes.world} processes" if processes.world > 1 else "") + f" ({options.dtype})")
    model = load_model(base, dtype=options.dtype)
    if options.gradient_checkpointing:
        enable_checkpointing(model)
    device = _device(options.device, processes)
    model.to(device)
    base_bf16 = base_pass_bf16(options.base_pass, device, options.dtype)
    torch.manual_seed(options.seed)  # the LoRA initialisation (a resumed run loads its weights instead)
    rf = RfModel.prepare(model, tokenizer, rank=options.rank, alpha=options.alpha, slot=options.slot)
    if init is not None:
        rf.load_trained(init, slot=options.slot)
    if not options.is_gguf:
        log("the base is a checkpoint folder: no on-policy answers and no calibration (both run the base through "
            f"llama.cpp). For them, convert it once (rf-convert hf {base} base.gguf --no-rf) and train on base.gguf.")
    recipe = RecipeConfig(max_len=options.max_len, onpolicy_harmful=options.onpolicy if options.is_gguf else 0, seed=options.seed)
    with processes.main_first():
        data = build_training_set(
            dataset.split("train"), tokenizer, recipe,
            onpolicy_model=base if options.is_gguf else None,
            cache_dir=cache_dir() / "onpolicy" / base.stem,
            progress=progress,
        )
    if not data.harmful or not data.benign:
        raise TrainingDataError(
            f"no training example fits --max-len {options.max_len} with {base}'s chat template ({json.dumps(data.counts)}); "
            "raise --max-len."
        )
    out.mkdir(parents=True, exist_ok=True)
    log(f"training set: {len(data.harmful)} harmful, {len(data.benign)} benign; " + json.dumps(data.counts))
    config = TrainConfig(
        steps=options.steps, batch_size=options.batch_size, lr=options.lr, rf_lr=options.rf_lr,
        start_probability=options.start_probability, max_offset=options.max_offset, seed=options.seed,
        weights=options.weights, adversarial=options.adversarial, checkpoint_every=10,
        max_seconds=options.max_seconds, base_bf16=base_bf16,
    )
    started = time.monotonic()
    if not processes.is_main:
        train(rf, data.harmful, data.benign, config, out_dir=out, processes=processes, base_sha256=base_sha)
        return None
    with (out / "train_log.jsonl").open("a", encoding="utf-8") as log_file:

        def on_step(step: int, terms: dict[str, float]) -> None:
            record = {"step": step, "seconds": round(time.monotonic() - started, 1), **{k: round(v, 5) for k, v in terms.items()}}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if progress is not None:
                progress("training steps", step, config.steps)
            if step % 10 == 0:
                log(" ".join(f"{k}={v}" for k, v in record.items()))

        history = train(rf, data.harmful, data.benign, config, out_dir=out, on_step=on_step, processes=processes,
                        base_sha256=base_sha)
    adapter = out / "adapter.safetensors"
    save = lambda threshold: rf.save_adapter(  # noqa: E731
        adapter, base_model=options.base.name, threshold=threshold, slot=options.slot, base_sha256=base_sha
    )
    save(None)  # a threshold only once it is calibrated
    calibration: Calibration | None = None
    if options.is_gguf:
        gguf = out / "model.gguf"
        patch_gguf(options.base, adapter, gguf, force=True)
        prompts = prompt_set(dataset.split("validation"), seed=options.seed, train_prompts=dataset.prompts("train"))
        calibration = calibrate(gguf, prompts, target_fpr=options.target_fpr, n_threads=options.threads, progress=progress)
        save(calibration.threshold)
        patch_gguf(options.base, adapter, gguf, force=True)
        (out / "calibration.json").write_text(calibration.model_dump_json(indent=1) + "\n", encoding="utf-8")
    result = {
        "base": str(options.base),
        "base_sha256": base_sha,
        "options": json.loads(options.model_dump_json()) | ({} if options.is_gguf else {"onpolicy": 0})
        | {"base_pass": "bf16" if base_bf16 else "fp32"},
        "recipe": json.loads(recipe.model_dump_json()),
        "training_set": data.counts,
        "init_adapter_sha256": None if init is None else init.sha256,
        "steps_total": checkpoint_step(out),
        "steps_run_now": len(history),
        "processes": processes.world,
        "train_seconds": round(time.monotonic() - started, 1),
        "last_losses": history[-1] if history else None,
        "calibration": None if calibration is None else json.loads(calibration.model_dump_json()),
        "dataset_sources": [s.model_dump() for s in dataset.manifest.sources],
    }
    (out / "fit.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    write_model_card(out / "MODEL_CARD.md", result)
    return {k: result[k] for k in ("base", "steps_run_now", "train_seconds", "last_losses", "calibration")}
