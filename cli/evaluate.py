"""The ``rf-eval`` command: every measurement of a <rf> model on the held-out split (:mod:`rfsdk.evaluation`)."""

from __future__ import annotations

from pathlib import Path

import click

from rfsdk.model_source import default_base_model_path
from rfsdk.evaluation.base_check import check_base
from rfsdk.evaluation.run import EvalOptions, evaluate

from .errors import user_errors
from .progress import stage_progress


def _classifier(name: str):  # noqa: ANN202 - a Classifier or None
    if name == "none":
        return None
    from rfsdk.classifiers import TextClassifier

    try:
        return TextClassifier.load()
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot load the text classifier ({error}); pass --classifier none to skip it") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--base",
    default="default",
    show_default=True,
    help="The model before <rf> training (GGUF), for utility and the base refusal rate: a path, "
    "'default' (the bundled SmolLM2-135M-Instruct) or 'none'. Refused unless MODEL was made from it "
    "(same shape, same vocabulary but <rf>).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder [default: rf-eval-MODEL].")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--max-prompts", type=int,
              help="Use a seeded sample of N harmful and N benign prompts for detection (quick runs).")
@click.option("--limit", type=int, default=100, show_default=True, help="Harmful prompts used by the attacks.")
@click.option("--samples", type=int, default=8, show_default=True, help="Samples at temperature 1 per prompt.")
@click.option("--sample-tokens", type=int, default=64, show_default=True)
@click.option("--utility-prompts", type=int, default=60, show_default=True)
@click.option("--chats", type=int, default=40, show_default=True, help="Benign multi-turn chats.")
@click.option("--followups", type=int, default=100, show_default=True,
              help="Conversations of each follow-up kind (benign after a halted harmful turn, harmful after benign).")
@click.option("--target-fpr", type=float, default=0.05, show_default=True)
@click.option(
    "--classifier",
    type=click.Choice(["text", "none"]),
    default="text",
    show_default=True,
    help="Baseline reported beside <rf>: the shipped text classifier, or none.",
)
@click.option(
    "--flag-sampled/--no-flag-sampled",
    default=None,
    help="Whether a sampled <rf> below the threshold counts as a flag [default: as GuardedChat decides].",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for llama.cpp (1 on a machine busy with other work).")
@click.option("--n-gpu-layers", type=click.IntRange(min=-1), default=0, show_default=True,
              help="Layers llama.cpp offloads to the GPU in every measurement (-1: all).")
def main(
    model: Path, base: str, out: Path | None, split: str, max_prompts: int | None, limit: int, samples: int, sample_tokens: int,
    utility_prompts: int, chats: int, followups: int, target_fpr: float, classifier: str, flag_sampled: bool | None, threads: int | None,
    n_gpu_layers: int,
) -> None:
    """Evaluate MODEL (a GGUF with <rf>) through llama.cpp on the held-out split.

    Prompt-level detection (TPR, FPR, F1, ROC-AUC), the sampling attack, the prefilling
    attack, false flags on benign multi-turn chats, utility against the base, and a text
    classifier baseline. Writes OUT/report.json, OUT/report.md, OUT/roc.png and OUT/pr.png.
    The data comes from the dataset packages (`make test` installs them; see `rf-train data`).
    """
    with user_errors():
        from rfsdk.train.data import load_dataset
        from rfsdk.evaluation.evalset import eval_set

        base_path = None if base == "none" else default_base_model_path() if base == "default" else Path(base)
        if base_path is not None and not base_path.is_file():
            raise click.BadParameter(f"{base_path} is not a file; give a GGUF path, 'default' or 'none'", param_hint="--base")
        if base_path is not None:
            check_base(model, base_path, defaulted=base == "default")
        dataset = load_dataset()
        examples = dataset.split(split, evaluation=True)
        train_prompts = dataset.prompts("train")
        data = eval_set(split, examples, chats=chats, max_prompts=max_prompts, train_prompts=train_prompts,
                        followups=followups)
        options = EvalOptions(
            target_fpr=target_fpr, attack_prompts=limit, samples=samples, sample_tokens=sample_tokens,
            utility_prompts=utility_prompts, flag_sampled=flag_sampled, n_threads=threads, n_gpu_layers=n_gpu_layers,
        )
        report = evaluate(model, base_path, data, options, classifier=_classifier(classifier), progress=stage_progress())
        folder = out or Path(f"rf-eval-{model.stem}")
        for path in report.write(folder):
            click.echo(f"wrote {path}", err=True)
    click.echo(report.to_markdown())
