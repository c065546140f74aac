"""Check a GGUF conversion against its Hugging Face checkpoint: tokenization, <rf>, logits.

The checkpoint is run with transformers (float32) and the GGUF with llama.cpp (float32 KV
cache, so the cache adds no rounding of its own); both get the same token ids. transformers
and torch are imported only here, when a verification runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from gguf import LlamaFileType
from pydantic import BaseModel

from rfsdk.errors import ConversionError, ModelNotFoundError

from . import keys
from .reader import field_value, open_gguf
from .verify_texts import CORPUS, PROMPTS

RF_TEXT = "<rf>"
_STRICT = {LlamaFileType.ALL_F32: (1e-3, 1.0)}
_CLOSE = (LlamaFileType.MOSTLY_F16, LlamaFileType.MOSTLY_BF16, LlamaFileType.MOSTLY_Q8_0)


class TokenMismatch(BaseModel):
    """One text that llama.cpp and the HF tokenizer split differently."""

    text: str
    hf: list[int]
    gguf: list[int]


class RfCheck(BaseModel):
    """How <rf> looks on both sides."""

    gguf_id: int | None
    hf_id: int | None
    single_token: bool
    control: bool
    round_trip: bool


class LogitStats(BaseModel):
    """Next-token logits of the GGUF against transformers over every prompt position."""

    n_prompts: int
    n_positions: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    top1_last: float  # at the last position of each prompt: the reply's first token
    max_rf_prob_diff: float
    rf_prob_hf: list[float]
    rf_prob_gguf: list[float]


class Check(BaseModel):
    """One pass/fail line of the summary."""

    name: str
    passed: bool
    detail: str


class VerifyReport(BaseModel):
    """Everything :func:`verify_gguf` measured, and whether the conversion passes."""

    src: Path
    model: Path
    file_type: str
    n_texts: int
    mismatches: list[TokenMismatch]
    rf: RfCheck
    logits: LogitStats
    checks: list[Check]
    passed: bool


def default_tolerances(file_type: int | None) -> tuple[float | None, float]:
    """(max |logit diff| or None for no bound, minimum top-1 agreement) for a GGUF ``general.file_type``."""
    if file_type is not None and LlamaFileType(file_type) in _STRICT:
        return _STRICT[LlamaFileType(file_type)]
    if file_type is not None and LlamaFileType(file_type) in _CLOSE:
        return None, 0.99
    return None, 0.9


def verify_gguf(
    src: Path,
    model: Path,
    *,
    corpus: list[str] | None = None,
    prompts: list[str] | None = None,
    max_logit_diff: float | None = None,
    min_top1: float | None = None,
) -> VerifyReport:
    """Compare GGUF ``model`` with the HF checkpoint folder ``src`` it was converted from.

    ``max_logit_diff``/``min_top1`` default to :func:`default_tolerances` of the file type.
    """
    if not src.is_dir():
        raise ModelNotFoundError(f"checkpoint folder not found: {src}. Pass the folder the GGUF was converted from.")
    reader = open_gguf(model)
    file_type = field_value(reader, "general.file_type")
    gguf_rf = field_value(reader, keys.RF_TOKEN)
    del reader
    default_diff, default_top1 = default_tolerances(file_type)
    max_diff = default_diff if max_logit_diff is None else max_logit_diff
    top1_min = default_top1 if min_top1 is None else min_top1

    tokenizer, hf_model = _load_hf(src)
    rendered = [_render(tokenizer, p) for p in (prompts or list(PROMPTS))]
    sequences = [list(tokenizer.encode(t, add_special_tokens=False)) for t in rendered]
    llm = _load_llama(model, max(len(ids) for ids in sequences) + 16)
    texts = [*(corpus or list(CORPUS)), *rendered]
    mismatches = _tokenization(tokenizer, llm, texts)
    rf = _rf_check(tokenizer, llm, gguf_rf)
    stats = _logits(hf_model, llm, sequences, rf.hf_id)

    checks = [
        Check(
            name="tokenization",
            passed=not mismatches,
            detail=f"{len(texts) - len(mismatches)}/{len(texts)} texts tokenize identically",
        ),
        Check(
            name="<rf> round trip",
            passed=rf.gguf_id is not None and rf.gguf_id == rf.hf_id and rf.single_token and rf.control
            and rf.round_trip,
            detail=f"id {rf.gguf_id} (HF {rf.hf_id}); one token: {rf.single_token}; CONTROL: {rf.control}; "
            f"detokenizes to {RF_TEXT}: {rf.round_trip}",
        ),
        Check(
            name="top-1 agreement",
            passed=stats.top1_agreement >= top1_min,
            detail=f"{stats.top1_agreement:.2%} of {stats.n_positions} positions (need >= {top1_min:.0%}); "
            f"{stats.top1_last:.2%} at the end of the {stats.n_prompts} prompts",
        ),
        Check(
            name="max |logit diff|",
            passed=max_diff is None or stats.max_abs_diff <= max_diff,
            detail=f"{stats.max_abs_diff:.3g} (mean {stats.mean_abs_diff:.3g}; "
            + ("reported only for this file type)" if max_diff is None else f"need <= {max_diff:g})"),
        ),
    ]
    return VerifyReport(
        src=src,
        model=model,
        file_type=LlamaFileType(file_type).name if file_type is not None else "unknown",
        n_texts=len(texts),
        mismatches=mismatches,
        rf=rf,
        logits=stats,
        checks=checks,
        passed=all(c.passed for c in checks),
    )


def render_verify(report: VerifyReport, *, show: int = 5) -> str:
    """A human-readable summary of ``report``, showing up to ``show`` tokenization mismatches."""
    lines = [f"verify {report.model} ({report.file_type}) against {report.src}"]
    for mismatch in report.mismatches[:show]:
        lines.append(f"  mismatch {mismatch.text[:60]!r}: HF {mismatch.hf[:12]} vs GGUF {mismatch.gguf[:12]}")
    s = report.logits
    lines.append(
        f"P(<rf>) max |diff| {s.max_rf_prob_diff:.3g} over {s.n_positions} positions of {s.n_prompts} prompts"
    )
    lines += [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in report.checks]
    lines.append("passed" if report.passed else "FAILED")
    return "\n".join(lines)


def _load_hf(src: Path) -> tuple[Any, Any]:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ConversionError(
            "rf-convert verify runs the HF checkpoint with transformers and torch, which are not installed. "
            "Install them with: pip install 'rfsdk[train]'."
        ) from exc
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    hf_model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, dtype=torch.float32).eval()
    return tokenizer, hf_model


def _load_llama(model: Path, n_ctx: int) -> Any:
    import llama_cpp

    return llama_cpp.Llama(
        str(model),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        logits_all=True,
        verbose=False,
        n_threads=os.cpu_count() or 1,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
    )


def _render(tokenizer: Any, prompt: str) -> str:
    if tokenizer.chat_template is None:
        return prompt
    return str(
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    )


def _tokenization(tokenizer: Any, llm: Any, texts: list[str]) -> list[TokenMismatch]:
    mismatches = []
    for text in texts:
        expected = list(tokenizer.encode(text, add_special_tokens=False))
        got = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        if got != expected:
            mismatches.append(TokenMismatch(text=text, hf=expected, gguf=got))
    return mismatches


def _rf_check(tokenizer: Any, llm: Any, gguf_id: int | None) -> RfCheck:
    import llama_cpp

    hf_id = tokenizer.convert_tokens_to_ids(RF_TEXT)
    hf_id = hf_id if isinstance(hf_id, int) and hf_id != tokenizer.unk_token_id else None
    if gguf_id is None:
        return RfCheck(gguf_id=None, hf_id=hf_id, single_token=False, control=False, round_trip=False)
    attr = llama_cpp.llama_vocab_get_attr(llm._model.vocab, gguf_id)
    return RfCheck(
        gguf_id=gguf_id,
        hf_id=hf_id,
        single_token=list(llm.tokenize(RF_TEXT.encode(), add_bos=False, special=True)) == [gguf_id]
        and gguf_id not in llm.tokenize(RF_TEXT.encode(), add_bos=False, special=False),
        control=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL),
        round_trip=llm.detokenize([gguf_id], special=True) == RF_TEXT.encode()
        and tokenizer.decode([gguf_id]) == RF_TEXT,
    )


def _logits(hf_model: Any, llm: Any, sequences: list[list[int]], rf_id: int | None) -> LogitStats:
    import torch

    diffs, agree, rf_diffs, rf_hf, rf_gguf = [], [], [], [], []
    for ids in sequences:
        with torch.no_grad():
            expected = hf_model(torch.tensor([ids])).logits[0].float().numpy()
        llm.reset()
        llm.eval(ids)
        got = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
        diffs.append(np.abs(got - expected))
        agree.append(got.argmax(-1) == expected.argmax(-1))
        if rf_id is not None:
            p_hf, p_gguf = _softmax(expected)[:, rf_id], _softmax(got)[:, rf_id]
            rf_diffs.append(np.abs(p_hf - p_gguf))
            rf_hf.append(float(p_hf[-1]))
            rf_gguf.append(float(p_gguf[-1]))
    all_diffs, all_agree = np.concatenate([d.ravel() for d in diffs]), np.concatenate(agree)
    return LogitStats(
        n_prompts=len(sequences),
        n_positions=int(all_agree.size),
        max_abs_diff=float(all_diffs.max()),
        mean_abs_diff=float(all_diffs.mean()),
        top1_agreement=float(all_agree.mean()),
        top1_last=float(np.mean([a[-1] for a in agree])),
        max_rf_prob_diff=float(max((d.max() for d in rf_diffs), default=0.0)),
        rf_prob_hf=rf_hf,
        rf_prob_gguf=rf_gguf,
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)
