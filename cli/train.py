"""The ``rf-train`` command: build the data, train <rf>, tune, re-fit the row, export, calibrate, merge.

Each command is a thin layer over a function of :mod:`rfsdk.train`; errors go through
:func:`rfsdk.cli.errors.user_errors` and progress through :func:`rfsdk.cli.progress.stage_progress`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from rfsdk.convert.writer import check_out_path
from rfsdk.errors import ConversionError
from rfsdk.model_source import default_base_model_path

from rfsdk.train.data import DEFAULT_SHAREGPT_LIMIT, load_dataset, summary
from rfsdk.train.llama_settings import LlamaSettings, using_llama_settings
from rfsdk.train.strength_profiles import PROFILES

from .errors import user_errors
from .progress import stage_progress

ADAPTER_FILE = "adapter.safetensors"
MODEL_FILE = "model.gguf"
LOG_FILE = "train_log.jsonl"
CALIBRATION_FILE = "calibration.json"
CARD_FILE = "MODEL_CARD.md"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train a model to emit the red-flag token <rf> (arXiv 2502.16366)."""


@main.command()
@click.option("--summary/--no-summary", "show", default=True, help="Print counts per source, kind and split.")
@click.option("--rebuild", is_flag=True, help="Rebuild even if a current cached copy exists.")
@click.option("--sharegpt-limit", type=int, default=DEFAULT_SHAREGPT_LIMIT, show_default=True)
def data(show: bool, rebuild: bool, sharegpt_limit: int) -> None:
    """Build (or load) the dataset from the installed data packages."""
    with user_errors():
        dataset = load_dataset(sharegpt_limit=sharegpt_limit or None, rebuild=rebuild)
        if show:
            click.echo(summary(dataset))


@main.command()
@click.option("--base", help="GGUF file, HF checkpoint folder, or the id of a repo in the local Hugging Face cache (default: the bundled SmolLM2-135M-Instruct). Only a GGUF gets on-policy answers, model.gguf and a calibrated threshold.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output folder (resumes if it holds a checkpoint of the same base).")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Harmful and benign examples per step (each).")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="LoRA learning rate.")
@click.option("--rf-lr", type=float, default=1e-2, show_default=True, help="Learning rate of the <rf> row(s).")
@click.option("--rank", type=int, default=16, show_default=True)
@click.option("--alpha", type=float, default=32.0, show_default=True)
@click.option("--slot", help="Take over this existing (reserved) token instead of adding <rf>.")
@click.option("--start-probability", type=float, default=0.5, show_default=True, help="Share of <rf> targets at the reply start.")
@click.option("--max-offset", type=int, default=32, show_default=True, help="Other <rf> targets: uniform over the first N answer tokens.")
@click.option("--onpolicy", type=int, default=400, show_default=True, help="Harmful prompts the base answers itself (GGUF base only).")
@click.option("--max-len", type=int, default=192, show_default=True, help="Longest training example in tokens.")
@click.option("--rf-weight", type=float, default=1.0, show_default=True, help="Weight of the <rf> cross-entropy term (0: off).")
@click.option("--benign-kl-weight", type=float, default=1.0, show_default=True, help="Weight of the KL to the base on benign answers.")
@click.option("--after-kl-weight", type=float, default=1.0, show_default=True, help="Weight of the KL on harmful tokens after <rf>.")
@click.option("--benign-start-weight", type=float, default=0.0, show_default=True, help="Weight of -log(1 - P(<rf>)) where a benign reply starts (0: off, the paper's loss).")
@click.option("--adversarial", is_flag=True, help="Also train <rf> under an embedding-space attack on the prompt (the paper's RF-AT).")
@click.option("--adv-epsilon", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True, help="Attack radius per prompt token, relative to its embedding norm.")
@click.option("--adv-steps", type=click.IntRange(min=1), default=4, show_default=True, help="Attack steps per harmful example.")
@click.option("--adv-weight", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Weight of the <rf> cross-entropy under attack.")
@click.option("--max-minutes", type=float, help="Stop (after a checkpoint) once this much training time has passed.")
@click.option("--target-fpr", type=float, default=0.05, show_default=True, help="Benign false-positive rate the threshold is chosen for.")
@click.option("--device", default="auto", show_default=True, help="torch device: auto, cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="Base weights in float32, or bfloat16 with autocast (half the memory; LoRA and <rf> rows stay float32).")
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute layer activations in the backward pass: much less memory for longer steps.")
@click.option("--base-pass", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True, help="Precision of the frozen base's pass (the KL's teacher, no gradients): bf16 autocast is about 1.7x as fast where the device computes bfloat16 natively, at KL 0.0006 nats/token from fp32; auto picks bf16 there (CUDA, x86 with AVX512-BF16 or AMX), else fp32.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch and llama.cpp.")
@click.option("--n-gpu-layers", type=click.IntRange(min=-1), default=0, show_default=True, help="Layers llama.cpp offloads to the GPU in the on-policy and calibration steps (-1: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--init-adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Start from this trained adapter's LoRA and <rf> rows (as trained: its tuned strength and profile weights are not applied) instead of a fresh LoRA.")
def fit(base: str | None, out: Path, steps: int, batch_size: int, lr: float, rf_lr: float, rank: int, alpha: float,
        slot: str | None, start_probability: float, max_offset: int, onpolicy: int, max_len: int,
        rf_weight: float, benign_kl_weight: float, after_kl_weight: float, benign_start_weight: float, adversarial: bool, adv_epsilon: float,
        adv_steps: int, adv_weight: float, max_minutes: float | None,
        target_fpr: float, device: str, dtype: str, gradient_checkpointing: bool, base_pass: str, threads: int | None,
        n_gpu_layers: int, seed: int, init_adapter: Path | None) -> None:
    """Train LoRA + the <rf> row on the train split, then export and calibrate.

    Writes OUT/adapter.safetensors (the rfsdk-adapter/1 file `rf-convert patch` applies) and
    OUT/MODEL_CARD.md, and for a GGUF base also OUT/model.gguf with the threshold chosen on
    the validation split and OUT/calibration.json. From a checkpoint folder the adapter has
    no threshold (it was never calibrated). Interrupt it at any time: running
    it again with the same OUT resumes from the last checkpoint. Runs unchanged under
    `accelerate launch` or `torchrun` in several processes (each trains its share of a batch).
    """
    if dtype == "bf16" and base_pass == "fp32":
        raise click.BadParameter("bfloat16 weights give a bfloat16 pass; use --dtype fp32 for an fp32 one.", param_hint="--base-pass fp32")
    with user_errors():
        from rfsdk.train.adversarial import AdversarialConfig
        from rfsdk.train.loss import LossWeights
        from rfsdk.train.base import resolve_base
        from rfsdk.train.run import FitOptions, fit_model

        options = FitOptions(
            base=default_base_model_path() if base is None else resolve_base(base), out=out, steps=steps, batch_size=batch_size, lr=lr, rf_lr=rf_lr,
            rank=rank, alpha=alpha, slot=slot, start_probability=start_probability, max_offset=max_offset,
            onpolicy=onpolicy, max_len=max_len,
            weights=LossWeights(rf=rf_weight, benign_kl=benign_kl_weight, after_kl=after_kl_weight, benign_start=benign_start_weight),
            adversarial=AdversarialConfig(epsilon=adv_epsilon, steps=adv_steps, weight=adv_weight) if adversarial else None,
            max_seconds=None if max_minutes is None else max_minutes * 60,
            target_fpr=target_fpr, device=device, dtype=dtype, gradient_checkpointing=gradient_checkpointing,
            base_pass=base_pass, threads=threads, n_gpu_layers=n_gpu_layers, seed=seed, init_adapter=init_adapter,
        )
        started = time.monotonic()
        result = fit_model(options, progress=stage_progress(), log=lambda line: click.echo(line, err=True))
        if result is not None:  # the main process (the only one under accelerate launch / torchrun)
            click.echo(json.dumps(result, indent=1))
            click.echo(f"done in {(time.monotonic() - started) / 60:.1f} min; files in {out}", err=True)



@main.command()
@click.argument("adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--base", help="The GGUF the adapter was trained on (default: the bundled SmolLM2-135M-Instruct, if it was trained on that).")
@click.option("--max-kl", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True, help="Utility budget: mean KL(base || <rf> model) per benign answer token, in nats.")
@click.option("--target-fpr", type=float, default=0.05, show_default=True, help="Benign false-positive rate the threshold is chosen for.")
@click.option("--pairs", type=click.IntRange(min=1), default=60, show_default=True, help="Validation benign (prompt, answer) pairs the KL is measured on (their base log-probabilities are kept next to OUT while tuning: about 1.6 GB for 60).")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Bisection steps (precision 1/2**steps).")
@click.option("--profile", "profiles", type=click.Choice(list(PROFILES)), multiple=True, default=list(PROFILES), show_default=True, help="Strength profile to try (repeatable); the one with the highest validation TPR is kept. uniform: every LoRA module alike; late-mlp: MLP over attention, second half of the layers over the first.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for llama.cpp.")
@click.option("--n-gpu-layers", type=click.IntRange(min=-1), default=0, show_default=True, help="Layers llama.cpp offloads to the GPU when calibrating (-1: all).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def tune(adapter: Path, out: Path, base: str | None, max_kl: float, target_fpr: float, pairs: int, steps: int, profiles: tuple[str, ...], threads: int | None,
         n_gpu_layers: int, force: bool) -> None:
    """Write OUT: ADAPTER at the strongest LoRA strength whose benign KL is within --max-kl.

    Measures through llama.cpp on the validation split, for each --profile: the KL of each
    strength tried (1, then bisection), then the threshold calibrated at the chosen strength.
    Keeps the profile with the highest validation TPR. Writes OUT and OUT's .tune.json;
    ADAPTER is left as it is.
    """
    with user_errors(), using_llama_settings(LlamaSettings(n_threads=threads, n_gpu_layers=n_gpu_layers)):
        from rfsdk.evaluation.evalset import benign_answer_pairs

        from rfsdk.train.prompt_sets import prompt_set
        from rfsdk.train.tune import tune_strength

        gguf = _base_path(base, "rf-train tune")
        _check_out(adapter, out, force=force, base=gguf)
        _check_trained_on(adapter, gguf, defaulted=base is None)
        dataset = load_dataset()
        examples = dataset.split("validation")
        tuning = tune_strength(
            adapter, gguf, out,
            answer_pairs=benign_answer_pairs(examples)[:pairs],
            prompts=prompt_set(examples, train_prompts=dataset.prompts("train")),
            max_kl=max_kl, target_fpr=target_fpr, profiles=[PROFILES[name] for name in dict.fromkeys(profiles)],
            steps=steps, n_threads=threads, progress=stage_progress(),
        )
        for p in tuning.profiles:
            for t in p.tried:
                click.echo(f"{p.profile.name}: strength {t.strength:.4f}: KL {t.kl_nats_per_token:.4f} nats/token", err=True)
            v = p.calibration.validation
            click.echo(f"{p.profile.name}: validation TPR {v.tpr:.3f} at FPR {v.fpr:.3f}, ROC-AUC {v.roc_auc:.3f}", err=True)
        v = tuning.calibration.validation
        click.echo(
            f"{out}: profile {tuning.profile.name}, strength {tuning.strength:.4f} (KL {tuning.kl_nats_per_token:.4f} <= {max_kl:g}), "
            f"threshold {tuning.calibration.threshold:.6g}: validation TPR {v.tpr:.3f} at FPR {v.fpr:.3f}, ROC-AUC {v.roc_auc:.3f}"
        )


@main.command("refit-row")
@click.argument("adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--base", help="The GGUF the adapter was trained on (default: the bundled SmolLM2-135M-Instruct, if it was trained on that).")
@click.option("--examples", type=click.IntRange(min=1), default=700, show_default=True, help="Harmful and benign training examples drawn (each).")
@click.option("--onpolicy-benign", type=click.IntRange(min=0), default=500, show_default=True, help="Further benign training prompts the tuned model answers itself (96 tokens, about a second each).")
@click.option("--onpolicy", type=click.IntRange(min=0), default=400, show_default=True, help="Harmful prompts with the base's own answers, as for rf-train fit (its cache is reused).")
@click.option("--max-len", type=int, default=192, show_default=True, help="Longest training example in tokens, as for rf-train fit.")
@click.option("--pull", type=click.FloatRange(min=0), default=0.1, show_default=True, help="Weight of the L2 pull toward the trained row.")
@click.option("--target-fpr", type=float, default=0.05, show_default=True, help="Benign false-positive rate the threshold is chosen for.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch and llama.cpp.")
@click.option("--n-gpu-layers", type=click.IntRange(min=-1), default=0, show_default=True, help="Layers llama.cpp offloads to the GPU when calibrating (-1: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def refit_row_command(adapter: Path, out: Path, base: str | None, examples: int, onpolicy_benign: int, onpolicy: int, max_len: int,
                      pull: float, target_fpr: float, threads: int | None, n_gpu_layers: int, seed: int, force: bool) -> None:
    """Write OUT: ADAPTER (tuned) with its <rf> output row re-fitted to the guard's rule.

    Fits the row on the tuned model's final hidden states, at the reply start and over
    each reply (the model's own benign replies included), then calibrates the threshold
    on the validation split. The LoRA stays as it is. Writes OUT and OUT's .refit.json;
    ADAPTER is left as it is.
    """
    with user_errors(), using_llama_settings(LlamaSettings(n_threads=threads, n_gpu_layers=n_gpu_layers)):
        import torch

        from rfsdk.train.prompt_sets import prompt_set
        from rfsdk.train.recipe import RecipeConfig
        from rfsdk.train.refit_row import refit_row

        gguf = _base_path(base, "rf-train refit-row")
        _check_out(adapter, out, force=force, base=gguf)
        _check_trained_on(adapter, gguf, defaulted=base is None)
        if threads is not None:
            torch.set_num_threads(threads)
        dataset = load_dataset()
        result = refit_row(
            adapter, gguf, out,
            train_examples=dataset.split("train"), recipe=RecipeConfig(max_len=max_len, onpolicy_harmful=onpolicy, seed=seed),
            prompts=prompt_set(dataset.split("validation"), seed=seed, train_prompts=dataset.prompts("train")),
            examples=examples, onpolicy=onpolicy_benign, pull=pull, target_fpr=target_fpr, seed=seed, n_threads=threads,
            progress=stage_progress(),
        )
        v = result.calibration.validation
        click.echo(
            f"{out}: <rf> row moved by {result.row_change:.3f} (norm {result.row_norm_before:.3f}), threshold "
            f"{result.calibration.threshold:.6g}: validation TPR {v.tpr:.3f} at FPR {v.fpr:.3f}, ROC-AUC {v.roc_auc:.3f}"
        )


@main.command()
@click.argument("adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", help="HF checkpoint folder, GGUF or cached repo id the adapter was trained on (default: the bundled SmolLM2-135M-Instruct, if it was trained on that).")
@click.option("--max-shard-size", default="2GB", show_default=True, help="Largest safetensors shard written (transformers' max_shard_size).")
def merge(adapter: Path, out: Path, base: str | None, max_shard_size: str) -> None:
    """Write folder OUT: the base as a full HF checkpoint with <rf> and ADAPTER's LoRA merged.

    The result converts with `rf-convert hf OUT model.gguf` (any --outtype, or llama.cpp's
    own tools); rf_config.json carries the adapter's threshold. An adapter trained with
    --slot keeps the slot's id, and the saved tokenizer calls that token <rf>. The weights are
    saved in the base's own dtype (bfloat16 stays bfloat16; a GGUF base gives float32).
    """
    with user_errors():
        from rfsdk.train.merge_hf import merge_into_checkpoint

        path = _base_path(base)
        _check_trained_on(adapter, path, defaulted=base is None)
        rf_id, slot = merge_into_checkpoint(adapter, path, out, max_shard_size=max_shard_size)
        renamed = f" (the slot {slot!r}, renamed)" if slot not in (None, "<rf>") else ""
        click.echo(f"{out}: merged checkpoint, <rf> is token {rf_id}{renamed}; convert it with: rf-convert hf {out} model.gguf")


@main.command()
@click.argument("adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def shrink(adapter: Path, out: Path, force: bool) -> None:
    """Write ADAPTER to OUT with float16 LoRA weights: half the size, as the bundled default ships."""
    import numpy as np

    from rfsdk.convert.adapter import file_sha256, load_adapter, save_adapter

    with user_errors():
        _check_out(adapter, out, force=force)
        rf = load_adapter(adapter)
        save_adapter(out, rf.metadata, rf.embedding, rf.output, rf.loras, lora_dtype=np.float16)
        click.echo(f"{out}: {out.stat().st_size / 1e6:.1f} MB (was {adapter.stat().st_size / 1e6:.1f} MB), sha256 {file_sha256(out)}")

@main.command()
@click.option("--base", required=True, help="HF checkpoint folder, GGUF (without <rf>), or the id of a repo in the local Hugging Face cache.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Run folder (running again continues where it stopped).")
@click.option("--outtype", default="f16", show_default=True, help="GGUF type the checkpoint folder is converted to (rf-convert hf --outtype).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="rf-train fit --steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="rf-train fit --batch-size.")
@click.option("--max-len", type=click.IntRange(min=9), default=192, show_default=True, help="rf-train fit --max-len.")
@click.option("--onpolicy", type=click.IntRange(min=0), default=400, show_default=True, help="rf-train fit --onpolicy.")
@click.option("--slot", help="rf-train fit --slot: a reserved token to take over instead of adding <rf>.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="rf-train fit --dtype.")
@click.option("--gradient-checkpointing", is_flag=True, help="rf-train fit --gradient-checkpointing.")
@click.option("--device", default="auto", show_default=True, help="rf-train fit --device.")
@click.option("--max-kl", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True, help="rf-train tune --max-kl.")
@click.option("--tune-pairs", type=click.IntRange(min=1), default=60, show_default=True, help="rf-train tune --pairs.")
@click.option("--tune-steps", type=click.IntRange(min=1), default=5, show_default=True, help="rf-train tune --steps.")
@click.option("--profile", "profiles", type=click.Choice(list(PROFILES)), multiple=True, default=list(PROFILES), show_default=True, help="rf-train tune --profile.")
@click.option("--refit-examples", type=click.IntRange(min=1), default=700, show_default=True, help="rf-train refit-row --examples.")
@click.option("--refit-onpolicy-benign", type=click.IntRange(min=0), default=500, show_default=True, help="rf-train refit-row --onpolicy-benign.")
@click.option("--eval-prompts", type=click.IntRange(min=1), help="rf-eval --max-prompts (default: all).")
@click.option("--eval-attack-prompts", type=click.IntRange(min=1), default=100, show_default=True, help="rf-eval --limit.")
@click.option("--eval-samples", type=click.IntRange(min=1), default=8, show_default=True, help="rf-eval --samples.")
@click.option("--eval-utility-prompts", type=click.IntRange(min=1), default=60, show_default=True, help="rf-eval --utility-prompts.")
@click.option("--eval-chats", type=click.IntRange(min=1), default=40, show_default=True, help="rf-eval --chats.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch and llama.cpp.")
@click.option("--n-gpu-layers", type=click.IntRange(min=-1), default=0, show_default=True, help="Layers llama.cpp offloads to the GPU (-1: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def recipe(ctx: click.Context, base: str, **settings) -> None:
    """The whole recipe in OUT: convert-base, data, fit, tune, refit-row, shrink, export, rf-eval.

    Every stage uses OUT/base.gguf (BASE converted without <rf>, or BASE itself when it is a
    GGUF), so each is checked against the same base and the threshold is calibrated. A stage
    whose output exists is skipped: run the same command again to continue. Ends with
    OUT/model.gguf, OUT/MODEL_CARD.md and OUT/eval/report.md.
    """
    with user_errors():
        from rfsdk.train.base import resolve_base
        from .recipe import RecipeOptions, run_recipe

        options = RecipeOptions(base=resolve_base(base), **settings)
        say = lambda line: click.echo(f"[recipe] {line}", err=True)  # noqa: E731
        model = run_recipe(ctx, options, say)
        say(f"done: {model} (card {options.out / 'MODEL_CARD.md'}, evaluation {options.out / 'eval' / 'report.md'}). "
            f"Next: rfchat {model}")


@main.command("text-classifier")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Weights file to write [default: the shipped file].")
@click.option("--target-fpr", type=click.FloatRange(0, 1), default=0.05, show_default=True, help="Validation FPR the threshold must meet.")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Optimiser steps.")
def text_classifier(out: Path | None, target_fpr: float, steps: int) -> None:
    """Train the text classifier (the cross-check baseline) on the dataset and write its weights.

    Fits on the train split, picks the threshold on the validation split, prints validation and
    test figures. Needs only numpy (about 4 minutes on 2 CPU cores).
    """
    with user_errors():
        from rfsdk.classifiers.text import default_weights_path
        from rfsdk.train.text_classifier import figures_table, train

        started = time.monotonic()
        classifier, figures = train(target_fpr=target_fpr, steps=steps)
        path = classifier.save(out or default_weights_path())
        click.echo(figures_table(figures))
        click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {time.monotonic() - started:.0f} s", err=True)


def _base_path(base: str | None, gguf_for: str | None = None) -> Path:
    """``--base`` resolved (a GGUF when ``gguf_for`` names the command), or the bundled default."""
    from rfsdk.train.base import require_gguf, resolve_base

    path = default_base_model_path() if base is None else resolve_base(base)
    if gguf_for is not None:
        require_gguf(path, gguf_for)
    return path


def _check_trained_on(adapter: Path, base: Path, *, defaulted: bool) -> None:
    """Refuse, before any work, a base ADAPTER was not trained on (``defaulted``: the bundled default, no --base given)."""
    from rfsdk.convert.adapter import load_adapter

    from rfsdk.train.base import check_trained_on

    check_trained_on(adapter, load_adapter(adapter), base, defaulted=defaulted)


def _check_out(adapter: Path, out: Path, *, force: bool, base: Path | None = None) -> None:
    inputs = {adapter: "ADAPTER"} | ({base: "the --base model"} if base is not None else {})
    try:
        check_out_path(out, inputs, force=force)
    except ConversionError as error:
        raise click.BadParameter(str(error), param_hint="OUT") from None
