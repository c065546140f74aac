"""One training run end to end: data, model, training, adapter, GGUF export, calibration, card."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from rfsdk.convert.adapter import file_sha256, load_adapter
from rfsdk.convert.patch import patch_gguf
from rfsdk.model_source import cache_dir

from .adversarial import AdversarialConfig
from .base import check_trained_on, load_base
from .calibrate import Calibration, calibrate
from .card import write_model_card
from .data import load_dataset
from .distributed import Processes, joined
from .loop import TrainConfig, checkpoint_step, train
from .loss import LossWeights
from .prompt_sets import prompt_set
from .recipe import RecipeConfig, build_training_set
from .rf_model import RfModel

PROVISIONAL_THRESHOLD = 0.5
Progress = Callable[[str, int, int], None]


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
    threads: int | None = None
    seed: int = 0
    init_adapter: Path | None = None


def _start_from(rf: RfModel, path: Path, slot: str | None, base: Path, base_sha: str | None) -> str:
    init = load_adapter(path)
    check_trained_on(path, init, base, base_sha)
    rf.load_trained(init, slot=slot)
    return init.sha256


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
    with joined(_device_type(options.device).type) as processes:
        return _fit(options, processes, progress=progress, log=log)


def _fit(options: FitOptions, processes: Processes, *, progress: Progress | None, log: Callable[[str], None]) -> dict | None:
    if not processes.is_main:
        progress, log = None, lambda line: None
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    with processes.main_first():
        dataset = load_dataset()
    log(f"loading {options.base}" + (f" in {processes.world} processes" if processes.world > 1 else ""))
    model, tokenizer = load_base(options.base)
    model.to(_device(options.device, processes))
    torch.manual_seed(options.seed)  # the LoRA initialisation (a resumed run loads its weights instead)
    rf = RfModel.prepare(model, tokenizer, rank=options.rank, alpha=options.alpha, slot=options.slot)
    is_gguf = options.base.suffix == ".gguf"
    base_sha = file_sha256(options.base) if is_gguf else None
    init_sha = None if options.init_adapter is None else _start_from(rf, options.init_adapter, options.slot, options.base, base_sha)
    recipe = RecipeConfig(max_len=options.max_len, onpolicy_harmful=options.onpolicy, seed=options.seed)
    with processes.main_first():
        data = build_training_set(
            dataset.split("train"), tokenizer, recipe,
            onpolicy_model=options.base if is_gguf else None,
            cache_dir=cache_dir() / "onpolicy" / options.base.stem,
            progress=progress,
        )
    log(f"training set: {len(data.harmful)} harmful, {len(data.benign)} benign; " + json.dumps(data.counts))
    config = TrainConfig(
        steps=options.steps, batch_size=options.batch_size, lr=options.lr, rf_lr=options.rf_lr,
        start_probability=options.start_probability, max_offset=options.max_offset, seed=options.seed,
        weights=options.weights, adversarial=options.adversarial, checkpoint_every=10,
        max_seconds=options.max_seconds,
    )
    started = time.monotonic()
    if not processes.is_main:
        train(rf, data.harmful, data.benign, config, out_dir=out, processes=processes)
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

        history = train(rf, data.harmful, data.benign, config, out_dir=out, on_step=on_step, processes=processes)
    adapter = out / "adapter.safetensors"
    save = lambda threshold: rf.save_adapter(  # noqa: E731
        adapter, base_model=options.base.name, threshold=threshold, slot=options.slot, base_sha256=base_sha
    )
    save(PROVISIONAL_THRESHOLD)
    calibration: Calibration | None = None
    if is_gguf:
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
        "options": json.loads(options.model_dump_json()),
        "recipe": json.loads(recipe.model_dump_json()),
        "training_set": data.counts,
        "init_adapter_sha256": init_sha,
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
