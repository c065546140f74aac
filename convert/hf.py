"""Convert a Hugging Face checkpoint folder (config.json, safetensors, tokenizer) to GGUF.

Reads the weights with numpy only (memory-mapped safetensors, one tensor at a time), writes
them with the stream writer, and for K-quant (and legacy 4/5-bit) outputs writes an unquantized
GGUF first and has llama.cpp quantize it (:mod:`.llama_quantize`). Pickled weights are read
only on request (:mod:`.hf_weights`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gguf import (
    GGML_QUANT_VERSION,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
    LlamaFileType,
)
from pydantic import BaseModel

from rfsdk.errors import ConversionError, ModelNotFoundError

from . import keys
from .hf_arch import (
    HParams,
    TensorPlan,
    gguf_hparams,
    ignorable,
    plan_tensors,
    read_hparams,
)
from .hf_vocab import RF_TEXT, HfVocab, load_vocab
from .hf_weights import WeightTensor, index_weights
from .llama_quantize import LLAMA_OUTTYPES, llama_quantize
from .quant import encode
from .writer import GGUFStreamWriter, TensorSpec, check_out_path, encode_field, staged_path

ProgressCallback = Callable[[str, int, int], None]
"""Called after each tensor is written with (tensor name, bytes written so far, total bytes)."""

RF_HF_FORMAT = "rfsdk-hf/1"
"""``rf.format`` of models converted from an HF checkpoint whose tokenizer already has <rf>."""

DIRECT_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
"""Output types written directly (numpy/gguf encodes the data)."""
OUTTYPES = DIRECT_OUTTYPES + tuple(LLAMA_OUTTYPES)
"""Every ``--outtype``; those beyond :data:`DIRECT_OUTTYPES` go through llama.cpp's quantizer."""

_FILE_TYPES = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
}
_MATRIX_TYPES = {
    "f32": GGMLQuantizationType.F32,
    "f16": GGMLQuantizationType.F16,
    "bf16": GGMLQuantizationType.BF16,
    "q8_0": GGMLQuantizationType.Q8_0,
}
_ALIGNMENT = 32


class HfConvertReport(BaseModel):
    """What :func:`convert_hf` did."""

    src: Path
    out: Path
    hf_architecture: str
    architecture: str
    outtype: str
    n_vocab: int
    n_padded: int
    tokenizer_pre: str
    rf_token_id: int | None
    threshold: float | None
    tied_embeddings: bool
    n_tensors: int
    out_bytes: int
    seconds: float


def convert_hf(
    src: Path,
    out: Path,
    *,
    outtype: str = "f16",
    threshold: float | None = None,
    require_rf: bool = True,
    tokenizer_pre: str | None = None,
    force: bool = False,
    allow_pickle: bool = False,
    progress: ProgressCallback | None = None,
) -> HfConvertReport:
    """Write ``out``: the HF checkpoint in folder ``src`` as a GGUF model of ``outtype``.

    ``out`` appears only once complete. Everything is checked (config, tensor names and shapes,
    tokenizer, <rf>) before any output is written.
    """
    started = time.perf_counter()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    config = _read_config(src)
    hp = read_hparams(config, str(src / "config.json"))
    _check_out(src, out, force=force)
    weights = index_weights(src, allow_pickle=allow_pickle)
    plans = plan_tensors(hp)
    _check_tensors(src, hp, plans, weights)
    vocab = load_vocab(src, hp.n_vocab, pre=tokenizer_pre, require_rf=require_rf)
    if threshold is None:
        threshold = _config_threshold(src)

    quantize_to = outtype if outtype in LLAMA_OUTTYPES else None
    direct = _intermediate_type(plans, weights) if quantize_to else outtype
    metadata = _metadata(src, config, hp, vocab, direct, threshold)
    jobs = [(_spec(plan, weights, direct), plan) for plan in plans]

    with staged_path(out, force=force) as staged:
        first = staged.with_name(staged.name + ".unquantized") if quantize_to else staged
        try:
            with first.open("xb") as fh:
                writer = GGUFStreamWriter(fh, _ALIGNMENT)
                writer.write_header(metadata, [spec for spec, _ in jobs])
                total = sum(spec.nbytes for spec, _ in jobs)
                done = 0
                for spec, plan in jobs:
                    writer.write_tensor(_data(plan, weights, spec.qtype))
                    done += spec.nbytes
                    if progress is not None:
                        progress(spec.name, done, total)
            if quantize_to:
                llama_quantize(first, staged, quantize_to)
        finally:
            if quantize_to and first.exists():
                first.unlink()

    return HfConvertReport(
        src=src,
        out=out,
        hf_architecture=hp.hf_arch,
        architecture=hp.arch,
        outtype=outtype,
        n_vocab=len(vocab.tokens),
        n_padded=vocab.n_padded,
        tokenizer_pre=vocab.pre,
        rf_token_id=vocab.rf_id,
        threshold=threshold if vocab.rf_id is not None else None,
        tied_embeddings=hp.tied,
        n_tensors=len(jobs),
        out_bytes=out.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _read_config(src: Path) -> dict[str, Any]:
    if not src.exists():
        raise ModelNotFoundError(f"checkpoint folder not found: {src}. Check the SRC path.")
    if not src.is_dir():
        raise ConversionError(
            f"SRC {src} is a file; pass the Hugging Face checkpoint folder (with config.json and "
            "*.safetensors) instead."
        )
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(
            f"{src} has no config.json, so it is not a Hugging Face checkpoint folder. Pass the folder "
            "that model.save_pretrained() wrote (config.json, *.safetensors, tokenizer files)."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}). Save the model again.") from exc
    if not isinstance(config, dict):
        raise ConversionError(f"{path} is not a JSON object. Save the model again.")
    return config


def _check_out(src: Path, out: Path, *, force: bool) -> None:
    src_real = src.resolve()
    out_real = out.resolve()
    if out_real == src_real:
        raise ConversionError(f"OUT {out} is the SRC folder. Give the path of the .gguf file to write.")
    if out_real.parent == src_real and out.exists() and not out.name.endswith(".gguf"):
        raise ConversionError(
            f"OUT {out} is one of the checkpoint's own files; rf-convert never overwrites its inputs."
        )
    check_out_path(out, {}, force=force)


def _check_tensors(src: Path, hp: HParams, plans: list[TensorPlan], weights: dict[str, WeightTensor]) -> None:
    wanted = {plan.hf_name for plan in plans if plan.hf_name is not None}
    for plan in plans:
        if plan.hf_name is None:
            continue
        tensor = weights.get(plan.hf_name)
        if tensor is None:
            hint = (
                " The config says tie_word_embeddings=false but there is no lm_head.weight; set it to "
                "true if the model ties its output to the embeddings."
                if plan.hf_name == "lm_head.weight"
                else ""
            )
            raise ConversionError(
                f"tensor {plan.hf_name!r} is missing from the weights in {src}: the checkpoint is "
                f"incomplete or is not a plain {hp.hf_arch}.{hint}"
            )
        if tensor.shape != plan.shape:
            raise ConversionError(
                f"tensor {plan.hf_name!r} has shape {list(tensor.shape)} but config.json implies "
                f"{list(plan.shape)} (hidden_size {hp.n_embd}, heads {hp.n_head}/{hp.n_head_kv}, "
                f"intermediate_size {hp.n_ff}, vocab_size {hp.n_vocab}). The config does not belong to "
                "these weights; save the model and its config together."
            )
        if tensor.dtype not in ("F32", "F16", "BF16"):
            raise ConversionError(
                f"tensor {plan.hf_name!r} is stored as {tensor.dtype}; rf-convert hf reads F32, F16 and "
                "BF16 weights. Dequantize the checkpoint (save it unquantized) first."
            )
    extra = sorted(name for name in weights if name not in wanted and not ignorable(name, hp))
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ConversionError(
            f"the weights in {src} have tensor(s) a plain {hp.hf_arch} does not: {shown}. "
            "Merge adapters into the model (merge_and_unload) and save it again, or use a supported model."
        )


def _config_threshold(src: Path) -> float | None:
    path = src / "rf_config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}). Fix it or pass --threshold.") from exc
    value = data.get("threshold", data.get("rf_threshold")) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConversionError(
            f"{path} must hold {{\"threshold\": P}} with 0 < P <= 1, not {value!r}. Fix it or pass --threshold."
        )
    return float(value)


def _intermediate_type(plans: list[TensorPlan], weights: dict[str, WeightTensor]) -> str:
    dtypes = {weights[p.hf_name].dtype for p in plans if p.hf_name is not None}
    if dtypes == {"F16"}:
        return "f16"
    if dtypes == {"BF16"}:
        return "bf16"
    return "f32"


def _spec(plan: TensorPlan, weights: dict[str, WeightTensor], outtype: str) -> TensorSpec:
    qtype = _MATRIX_TYPES[outtype] if len(plan.shape) == 2 else GGMLQuantizationType.F32
    if qtype == GGMLQuantizationType.Q8_0 and plan.shape[-1] % 32 != 0:
        qtype = GGMLQuantizationType.F16  # rows that do not split into q8_0 blocks
    return TensorSpec(plan.gguf_name, plan.shape, qtype)


def _data(plan: TensorPlan, weights: dict[str, WeightTensor], qtype: GGMLQuantizationType) -> np.ndarray:
    values = plan.values if plan.hf_name is None else weights[plan.hf_name].load()
    assert values is not None
    if plan.transform is not None:
        values = plan.transform(values)
    if qtype == GGMLQuantizationType.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if qtype == GGMLQuantizationType.F16:
        return np.ascontiguousarray(values, dtype=np.float16)
    return encode(values, qtype)


def _metadata(
    src: Path, config: dict[str, Any], hp: HParams, vocab: HfVocab, outtype: str, threshold: float | None
) -> list[bytes]:
    entries: list[bytes] = []

    def add(key: str, value: Any, kind: str) -> None:
        vtype = {
            "u32": GGUFValueType.UINT32,
            "f32": GGUFValueType.FLOAT32,
            "str": GGUFValueType.STRING,
            "bool": GGUFValueType.BOOL,
        }[kind]
        entries.append(encode_field(key, vtype, value))

    add(Keys.General.ARCHITECTURE, hp.arch, "str")
    name = config.get("_name_or_path") if isinstance(config.get("_name_or_path"), str) else None
    add(Keys.General.NAME, Path(name).name if name else src.resolve().name, "str")
    add(Keys.General.FILE_TYPE, int(_FILE_TYPES[outtype]), "u32")
    if outtype == "q8_0":
        add(Keys.General.QUANTIZATION_VERSION, GGML_QUANT_VERSION, "u32")
    for key, value, kind in gguf_hparams(hp):
        add(key, value, kind)

    add(Keys.Tokenizer.MODEL, vocab.model, "str")
    add(Keys.Tokenizer.PRE, vocab.pre, "str")
    entries.append(encode_field(Keys.Tokenizer.LIST, GGUFValueType.ARRAY, vocab.tokens, GGUFValueType.STRING))
    if vocab.scores is not None:
        entries.append(
            encode_field(Keys.Tokenizer.SCORES, GGUFValueType.ARRAY, vocab.scores, GGUFValueType.FLOAT32)
        )
    entries.append(
        encode_field(Keys.Tokenizer.TOKEN_TYPE, GGUFValueType.ARRAY, vocab.types, GGUFValueType.INT32)
    )
    if vocab.merges:
        entries.append(
            encode_field(Keys.Tokenizer.MERGES, GGUFValueType.ARRAY, vocab.merges, GGUFValueType.STRING)
        )
    if vocab.add_space_prefix is not None:
        add(Keys.Tokenizer.ADD_PREFIX, vocab.add_space_prefix, "bool")
    for typ, token_id in vocab.special_ids.items():
        add(f"tokenizer.ggml.{typ}_token_id", token_id, "u32")
    for typ, flag in vocab.add_special.items():
        add(f"tokenizer.ggml.add_{typ}_token", flag, "bool")
    template = vocab.chat_template
    if isinstance(template, list):
        named = {str(t.get("name")): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        add(Keys.Tokenizer.CHAT_TEMPLATE, template, "str")

    if vocab.rf_id is not None:
        add(keys.RF_TOKEN, vocab.rf_id, "u32")
        if threshold is not None:
            add(keys.RF_THRESHOLD, threshold, "f32")
        add(keys.RF_FORMAT, RF_HF_FORMAT, "str")
        source = f"rf-convert hf: {hp.hf_arch} checkpoint {src.resolve().name} ({RF_TEXT} in its tokenizer)"
        add(keys.RF_SOURCE, source, "str")
    return entries
