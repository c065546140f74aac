"""The ``rf-convert`` command line: inspect, patch and convert (from HF) GGUF models with the <rf> token."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import get_args

import click
from gguf import GGMLQuantizationType

from rfsdk.convert.hf import OUTTYPES, HfConvertReport, convert_hf
from rfsdk.convert.inspect import inspect_gguf, render_table
from rfsdk.convert.llama_quantize import LLAMA_OUTTYPES
from rfsdk.convert.lora_gguf import LoraExportReport, lora_to_gguf
from rfsdk.convert.patch import MergedType, PatchReport, patch_gguf
from rfsdk.convert.quant import can_encode
from rfsdk.convert.verify import render_verify, verify_gguf

from .errors import user_errors
from .progress import progress_bar

_PATH = click.Path(path_type=Path)


@click.group()
def main() -> None:
    """Build and inspect GGUF models that carry the <rf> red-flag token."""


@main.command(short_help="Describe a GGUF model and its <rf> token.")
@click.argument("model", type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def inspect(model: Path, as_json: bool) -> None:
    """Describe MODEL.gguf: shape, quantization, vocabulary and its <rf> token."""
    with user_errors():
        info = inspect_gguf(model)
    click.echo(info.model_dump_json() if as_json else render_table(info))


@main.command(short_help="Add <rf> and merge an adapter into a GGUF model.")
@click.argument("base", type=_PATH)
@click.argument("adapter", type=_PATH)
@click.argument("out", type=_PATH)
@click.option(
    "--force",
    is_flag=True,
    help="Replace OUT if it exists, and patch even if the adapter names another base sha256.",
)
@click.option(
    "--merged-type",
    type=click.Choice(get_args(MergedType)),
    default="auto",
    show_default=True,
    help="How LoRA-merged tensors are stored. auto: Q8_0 where the base has fewer than 8 bits per weight "
    "(a Q4 grid would round most of the LoRA away), else the base's own type; base: always the base's type.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; notes and errors only.")
def patch(base: Path, adapter: Path, out: Path, force: bool, merged_type: MergedType, quiet: bool) -> None:
    """Write OUT.gguf: BASE.gguf plus the <rf> token and LoRA weights of ADAPTER.safetensors.

    BASE is never modified; OUT appears only once it is complete.
    """
    with user_errors(), ExitStack() as stack:
        progress = progress_bar(stack, "patching")

        if not quiet:
            click.echo(f"reading {base} and {adapter} ...", err=True)
        report = patch_gguf(
            base, adapter, out, force=force, merged_type=merged_type, progress=None if quiet else progress
        )
    for note in _notes(report):
        click.echo(f"note: {note}", err=True)
    if not quiet:
        click.echo(_summary(report))


@main.command(short_help="Convert a Hugging Face checkpoint folder with <rf> to GGUF.")
@click.argument("src", type=_PATH)
@click.argument("out", type=_PATH)
@click.option(
    "--outtype",
    type=click.Choice(OUTTYPES, case_sensitive=False),
    default="f16",
    show_default=True,
    help="Tensor storage. f32/f16/bf16/q8_0 are written directly; the others (K-quants, q4_0, ...) "
    "are made from an unquantized file by llama.cpp's quantizer.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    help="rf.threshold to store (default: \"threshold\" of SRC/rf_config.json, else none).",
)
@click.option("--no-rf", is_flag=True, help="Convert even if the tokenizer has no <rf> token.")
@click.option(
    "--tokenizer-pre",
    metavar="NAME",
    help="llama.cpp pre-tokenizer name (e.g. qwen2, llama-bpe, smollm) when it cannot be detected.",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Read pickled PyTorch weights (*.bin) when SRC has no safetensors. Only for trusted files; needs torch.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; errors only.")
def hf(
    src: Path,
    out: Path,
    outtype: str,
    threshold: float | None,
    no_rf: bool,
    tokenizer_pre: str | None,
    allow_pickle: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Write OUT.gguf from SRC, a Hugging Face checkpoint folder.

    SRC holds config.json, *.safetensors (sharded or not) and the tokenizer (tokenizer.json, or
    tokenizer.model for SentencePiece models); the tokenizer must have <rf> as a special token.
    SRC is never modified; OUT appears only once it is complete. Pickled weights (*.bin) are
    refused unless --allow-pickle is given.
    """
    with user_errors(), ExitStack() as stack:
        progress = progress_bar(stack, "writing")

        if not quiet and outtype.lower() in LLAMA_OUTTYPES:
            click.echo(
                f"writing an unquantized GGUF, then llama.cpp quantizes it to {outtype.lower()} "
                "(that step shows no progress) ...",
                err=True,
            )
        report = convert_hf(
            src,
            out,
            outtype=outtype.lower(),
            threshold=threshold,
            require_rf=not no_rf,
            tokenizer_pre=tokenizer_pre,
            force=force,
            allow_pickle=allow_pickle,
            progress=None if quiet else progress,
        )
    if not quiet:
        click.echo(_hf_summary(report))


@main.command(short_help="Write an adapter's LoRA as a llama.cpp LoRA adapter GGUF.")
@click.argument("adapter", type=_PATH)
@click.argument("out", type=_PATH)
@click.option("--base", "base", type=_PATH, required=True, help="The GGUF model the adapter is applied to.")
@click.option(
    "--rf-base",
    type=_PATH,
    help="Also write this file: BASE plus the adapter's <rf> row, LoRA not merged (for a BASE without <rf>).",
)
@click.option("--force", is_flag=True, help="Replace OUT (and --rf-base) if they exist; ignore a base sha256 mismatch.")
@click.option("-q", "--quiet", is_flag=True, help="No summary; errors only.")
def lora(adapter: Path, out: Path, base: Path, rf_base: Path | None, force: bool, quiet: bool) -> None:
    """Write OUT.gguf: the LoRA of ADAPTER.safetensors as a llama.cpp adapter (Llama(lora_path=OUT)).

    <rf> itself is a new vocabulary row, which a LoRA adapter cannot add: the adapter GGUF only
    works on a base that already has <rf> with this adapter's row. If BASE has none, pass
    --rf-base RF_BASE.gguf to write BASE plus <rf> (without the LoRA merged) and load the
    adapter on top of that file.
    """
    with user_errors():
        report = lora_to_gguf(adapter, out, base=base, rf_base=rf_base, force=force)
    if not quiet:
        click.echo(_lora_summary(report))


def _lora_summary(report: LoraExportReport) -> str:
    use_with = report.rf_base or report.base
    lines = [
        f"{report.n_pairs} LoRA pair(s), rank {report.rank}, alpha {report.alpha:g}, for {report.architecture}",
        *([f"wrote {report.rf_base}: the base plus <rf> (id {report.rf_token_id}), LoRA not merged"] if report.rf_base else []),
        f"wrote {report.out} ({report.out_bytes / 1e6:.1f} MB) in {report.seconds:.1f} s",
        f"use it with the base that has <rf>: Llama({str(use_with)!r}, lora_path={str(report.out)!r})",
    ]
    return "\n".join(lines)


@main.command(short_help="Compare a converted GGUF with its HF checkpoint (needs transformers).")
@click.argument("src", type=_PATH)
@click.argument("model", type=_PATH)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Tokenize these texts instead of the built-in corpus (one JSON string or plain line per line).",
)
@click.option(
    "--prompts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Compare logits on these user messages instead of the built-in ones (one per line).",
)
@click.option("--max-logit-diff", type=float, help="Fail above this max |logit diff| (default: 1e-3 for f32 only).")
@click.option(
    "--min-top1",
    type=click.FloatRange(0, 1),
    help="Fail below this top-1 agreement (default: 1.0 for f32, 0.99 for f16/bf16/q8_0, 0.9 otherwise).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
def verify(
    src: Path,
    model: Path,
    corpus: Path | None,
    prompts: Path | None,
    max_logit_diff: float | None,
    min_top1: float | None,
    as_json: bool,
) -> None:
    """Check MODEL.gguf against SRC, the HF checkpoint it was converted from.

    Tokenization of a corpus (and of the chat-formatted prompts) must be identical to the HF
    tokenizer's; <rf> must be one CONTROL token that round-trips; next-token logits and P(<rf>)
    at every prompt position are compared with transformers (float32). Exits with status 1
    when a check fails.
    """
    with user_errors():
        report = verify_gguf(
            src,
            model,
            corpus=_lines(corpus),
            prompts=_lines(prompts),
            max_logit_diff=max_logit_diff,
            min_top1=min_top1,
        )
    click.echo(report.model_dump_json() if as_json else render_verify(report))
    if not report.passed:
        sys.exit(1)


def _lines(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = line
        lines.append(value if isinstance(value, str) else line)
    return [line for line in lines if line] or None


def _hf_summary(report: HfConvertReport) -> str:
    rf = (
        f"<rf> is CONTROL token {report.rf_token_id}; threshold: {report.threshold}"
        if report.rf_token_id is not None
        else "no <rf> token (--no-rf)"
    )
    padded = f" ({report.n_padded} [PAD] tokens added)" if report.n_padded else ""
    lines = [
        (
            f"{report.hf_architecture} -> {report.architecture}, {report.n_tensors} tensors as {report.outtype}"
            f"{', tied embeddings' if report.tied_embeddings else ''}"
        ),
        f"vocabulary: {report.n_vocab} tokens{padded}; pre-tokenizer: {report.tokenizer_pre}",
        rf,
        f"wrote {report.out} ({report.out_bytes / 1e6:.1f} MB) in {report.seconds:.1f} s",
    ]
    return "\n".join(lines)


def _notes(report: PatchReport) -> list[str]:
    notes = []
    if report.base_sha256 == "mismatch ignored":
        notes.append("the adapter was made for a base with another sha256; patched anyway (--force).")
    converted: dict[tuple[str, str], list[str]] = defaultdict(list)
    for change in report.changes:
        if change.converted:
            converted[(change.from_type, change.to_type)].append(change.name)
    for (from_type, to_type), names in converted.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        if not can_encode(GGMLQuantizationType[from_type]):
            why = f"because numpy cannot encode {from_type}"
        elif report.merged_type == "auto":
            why = (
                f"so that the merged LoRA survives (re-rounding to {from_type} would undo most of it; "
                f"--merged-type base keeps {from_type})"
            )
        else:
            why = f"as --merged-type {report.merged_type} asks"
        notes.append(f"{len(names)} tensor(s) stored as {from_type} were re-stored as {to_type} {why}: {shown}.")
    return notes


def _summary(report: PatchReport) -> str:
    how = f"took over {report.slot!r} as" if report.slot is not None else "appended"
    merged = [change for change in report.changes if change.action == "LoRA merged"]
    lines = [
        f"{how} {report.rf_token!r} as CONTROL token {report.rf_token_id}; vocabulary: {report.n_vocab} tokens",
        f"merged LoRA into {len(merged)} tensor(s)",
        f"threshold: {report.threshold}; base sha256: {report.base_sha256}",
        f"wrote {report.out} ({report.out_bytes / 1e6:.1f} MB) in {report.seconds:.1f} s",
    ]
    return "\n".join(lines)
