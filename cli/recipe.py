"""``rf-train recipe``: the whole path from a base model to a calibrated, evaluated <rf> GGUF, in one folder.

Stages, each skipped when its output is already there (so running the command again after
an interruption continues where it stopped; ``fit`` also resumes inside its own run):

1. ``convert-base``: a checkpoint folder (or cached repo id) becomes ``OUT/base.gguf``
   without <rf> (a GGUF base is used where it is); every later stage trains and measures
   against this one file, so on-policy answers, calibration, tune and refit-row all work;
2. ``data``: the dataset from the installed data packages;
3. ``fit``: ``OUT/fit/`` (adapter, checkpoint, log, card);
4. ``tune``: ``OUT/tuned.safetensors``, the strongest LoRA strength within the KL budget;
5. ``refit-row``: ``OUT/refit.safetensors``, the <rf> row fitted again at that strength;
6. ``shrink``: ``OUT/adapter.safetensors``, float16 LoRA;
7. ``export``: ``OUT/model.gguf`` (``rf-convert patch``) and ``OUT/MODEL_CARD.md``;
8. ``rf-eval``: ``OUT/eval/`` against ``OUT/base.gguf``.

Each stage calls the same function as its own command, with the base passed explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from pydantic import BaseModel, ConfigDict, Field

BASE_FILE = "base.gguf"
RECORD_FILE = "recipe.json"
STAGES = ("convert-base", "data", "fit", "tune", "refit-row", "shrink", "export", "rf-eval")


class RecipeOptions(BaseModel):
    """The recipe's settings: the base, the output folder, and the knobs of the stages."""

    model_config = ConfigDict(frozen=True)

    base: Path
    out: Path
    outtype: str = "f16"
    steps: int = Field(300, gt=0)
    batch_size: int = Field(8, gt=0)
    max_len: int = Field(192, gt=8)
    onpolicy: int = Field(400, ge=0)
    slot: str | None = None
    dtype: str = "fp32"
    gradient_checkpointing: bool = False
    device: str = "auto"
    max_kl: float = Field(0.02, gt=0)
    tune_pairs: int = Field(60, gt=0)
    tune_steps: int = Field(5, gt=0)
    profiles: tuple[str, ...] = ("uniform", "late-mlp")
    refit_examples: int = Field(700, gt=0)
    refit_onpolicy_benign: int = Field(500, ge=0)
    eval_prompts: int | None = Field(None, gt=0)
    eval_attack_prompts: int = Field(100, gt=0)
    eval_samples: int = Field(8, gt=0)
    eval_utility_prompts: int = Field(60, gt=0)
    eval_chats: int = Field(40, gt=0)
    threads: int | None = Field(None, gt=0)
    n_gpu_layers: int = Field(0, ge=-1)
    seed: int = 0


def run_recipe(ctx: click.Context, options: RecipeOptions, say: Callable[[str], None]) -> Path:
    """Run every stage not done yet; returns ``OUT/model.gguf``."""
    from . import train as rf_train
    from .evaluate import main as rf_eval

    from rfsdk.train.data import load_dataset

    out = options.out
    _check_same_source(options)
    base = _converted_base(options, say)
    dataset = load_dataset()
    say(f"data: {', '.join(f'{len(dataset.split(name))} {name}' for name in ('train', 'validation'))} examples "
        f"from {', '.join(s.name for s in dataset.manifest.sources)}")
    knobs = {"threads": options.threads, "n_gpu_layers": options.n_gpu_layers}
    fit_dir = out / "fit"
    if _fit_done(fit_dir, options.steps):
        say(f"fit: done ({fit_dir})")
    else:
        say(f"fit: training <rf> into {base} -> {fit_dir}")
        ctx.invoke(
            rf_train.fit, base=str(base), out=fit_dir, steps=options.steps, batch_size=options.batch_size, max_len=options.max_len,
            onpolicy=options.onpolicy, slot=options.slot, dtype=options.dtype, gradient_checkpointing=options.gradient_checkpointing,
            device=options.device, seed=options.seed, **knobs,
        )
    tuned, refit, adapter, model = out / "tuned.safetensors", out / "refit.safetensors", out / "adapter.safetensors", out / "model.gguf"
    _stage("tune", tuned, say, lambda: ctx.invoke(
        rf_train.tune, adapter=fit_dir / "adapter.safetensors", out=tuned, base=str(base), max_kl=options.max_kl,
        pairs=options.tune_pairs, steps=options.tune_steps, profiles=options.profiles, **knobs,
    ))
    _stage("refit-row", refit, say, lambda: ctx.invoke(
        rf_train.refit_row_command, adapter=tuned, out=refit, base=str(base), examples=options.refit_examples,
        onpolicy_benign=options.refit_onpolicy_benign, onpolicy=options.onpolicy, max_len=options.max_len, seed=options.seed, **knobs,
    ))
    _stage("shrink", adapter, say, lambda: ctx.invoke(rf_train.shrink, adapter=refit, out=adapter))
    _stage("export", model, say, lambda: _export(base, adapter, model, out))
    report = out / "eval" / "report.json"
    _stage("rf-eval", report, say, lambda: ctx.invoke(
        rf_eval, model=model, base=str(base), out=out / "eval", max_prompts=options.eval_prompts,
        limit=options.eval_attack_prompts, samples=options.eval_samples, utility_prompts=options.eval_utility_prompts,
        chats=options.eval_chats, threads=options.threads, n_gpu_layers=options.n_gpu_layers,
    ))
    return model


def _check_same_source(options: RecipeOptions) -> None:
    """Refuse an OUT that holds a recipe run of another base; record the base in a new one."""
    from rfsdk.train.base import BaseMismatchError, base_sha256

    record = options.out / RECORD_FILE
    source_sha = base_sha256(options.base)
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["base_sha256"] != source_sha:
            raise BaseMismatchError(
                f"{options.out} holds a recipe run of another base ({saved['base']}, sha256 {saved['base_sha256']}; "
                f"{options.base} has {source_sha}). Pass that --base to continue it, or another --out to start a new run."
            )
        return
    options.out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"base": str(options.base), "base_sha256": source_sha}, indent=1) + "\n", encoding="utf-8")


def _converted_base(options: RecipeOptions, say: Callable[[str], None]) -> Path:
    from rfsdk.convert.hf import convert_hf

    if options.base.is_file():
        say(f"convert-base: {options.base} is a GGUF already")
        return options.base
    target = options.out / BASE_FILE
    if target.is_file():
        say(f"convert-base: done ({target})")
        return target
    say(f"convert-base: {options.base} -> {target} ({options.outtype}, without <rf>)")
    convert_hf(options.base, target, outtype=options.outtype, require_rf=False)
    return target


def _fit_done(fit_dir: Path, steps: int) -> bool:
    record = fit_dir / "fit.json"
    return record.is_file() and json.loads(record.read_text(encoding="utf-8"))["steps_total"] >= steps


def _stage(name: str, output: Path, say: Callable[[str], None], run: Callable[[], object]) -> None:
    if output.exists():
        say(f"{name}: done ({output})")
        return
    say(f"{name}: -> {output}")
    run()


def _export(base: Path, adapter: Path, model: Path, out: Path) -> None:
    """``model.gguf`` and the model card of everything that ran."""
    from rfsdk.convert.patch import patch_gguf

    from rfsdk.train.card import write_model_card

    patch_gguf(base, adapter, model)
    fit = json.loads((out / "fit" / "fit.json").read_text(encoding="utf-8"))
    tuning = json.loads((out / "tuned.tune.json").read_text(encoding="utf-8"))
    refit = json.loads((out / "refit.refit.json").read_text(encoding="utf-8"))
    write_model_card(out / "MODEL_CARD.md", {**fit, "tuning": tuning, "refit": refit, "calibration": refit["calibration"]})
