"""Patch a GGUF model with an rfsdk adapter: add the <rf> CONTROL token and merge the LoRA weights."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from gguf import GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFValueType, ReaderTensor
from pydantic import BaseModel

from rfsdk.errors import ConversionError, ModelFileError

from . import keys
from .adapter import Adapter, LoraPair, file_sha256, load_adapter
from .merge import check_mergeable, lora_delta
from .quant import FALLBACK_TYPE, bits_per_weight, can_decode, can_encode, decode, encode
from .reader import architecture, field_value, open_gguf
from .vocab import SCORES_KEY, TOKENS_KEY, TYPES_KEY, Vocab, add_control_token
from .writer import GGUFStreamWriter, TensorSpec, check_out_path, encode_field, raw_field, staged_path

ProgressCallback = Callable[[str, int, int], None]
"""Called after each tensor is written with (tensor name, bytes written so far, total bytes)."""

MergedType = Literal["auto", "base", "Q8_0", "F16", "F32"]
"""How LoRA-merged tensors are stored. "base" keeps each tensor's own type. "auto" does too
at 8 bits per weight or more, and uses Q8_0 below that: re-rounding ``W + delta`` to a coarse
grid such as Q4_1 snaps most of a small LoRA delta back to ``W`` (measured on the default
model, the merged LoRA kept well under half of its effect)."""

_EMBEDDING = "token_embd.weight"
_OUTPUT = "output.weight"


class TensorChange(BaseModel):
    """One tensor that the patch changed."""

    name: str
    action: Literal["row appended", "row replaced", "LoRA merged"]
    from_type: str
    to_type: str

    @property
    def converted(self) -> bool:
        """Whether the tensor had to be stored in another type than it had."""
        return self.from_type != self.to_type


class PatchReport(BaseModel):
    """What :func:`patch_gguf` did."""

    base: Path
    adapter: Path
    out: Path
    architecture: str
    rf_token: str
    rf_token_id: int
    slot: str | None
    n_vocab: int
    threshold: float | None
    base_sha256: Literal["verified", "mismatch ignored", "not given"]
    merged_type: MergedType
    changes: list[TensorChange]
    out_bytes: int
    seconds: float


@dataclass(frozen=True)
class _Job:
    spec: TensorSpec
    make: Callable[[], np.ndarray]


def patch_gguf(
    base: Path,
    adapter: Path,
    out: Path,
    *,
    force: bool = False,
    merged_type: MergedType = "auto",
    progress: ProgressCallback | None = None,
) -> PatchReport:
    """Write ``out``: ``base`` with the <rf> token and the LoRA weights of ``adapter``.

    ``force`` overwrites an existing ``out`` and accepts an adapter made for a base with
    another sha256. ``merged_type`` says how merged tensors are stored (see
    :data:`MergedType`). ``out`` appears only once it is complete.
    """
    started = time.perf_counter()
    check_out_path(out, {base: "the base model", adapter: "the adapter"}, force=force)
    reader = open_gguf(base)
    if reader.endianess != GGUFEndian.LITTLE:
        raise ModelFileError(
            f"{base} is a big-endian GGUF file; rf-convert patch reads little-endian files only."
        )
    rf = load_adapter(adapter)
    sha_state = _check_sha(base, rf, force=force)
    arch = architecture(reader)
    tensors = {tensor.name: tensor for tensor in reader.tensors}

    vocab = Vocab.from_reader(reader)
    if field_value(reader, keys.RF_TOKEN) is not None:
        raise ConversionError(
            f"{base} already has {keys.RF_TOKEN} metadata; it was patched before. "
            "Patch the original base model instead."
        )
    new_vocab, token_id = add_control_token(vocab, rf.metadata.rf_token, rf.metadata.slot)
    appended = rf.metadata.slot is None

    changes: list[TensorChange] = []
    row_jobs = _row_jobs(tensors, rf, len(vocab.tokens), token_id, appended, changes)
    merge_jobs = _merge_jobs(reader, arch, tensors, rf, merged_type, changes)
    jobs = [
        row_jobs.get(t.name) or merge_jobs.get(t.name) or _Job(_spec(t, t.tensor_type), _copy(t))
        for t in reader.tensors
    ]
    metadata = _metadata(reader, arch, new_vocab, token_id, rf)

    with staged_path(out, force=force) as staged, staged.open("xb") as fh:
        writer = GGUFStreamWriter(fh, int(reader.alignment))
        writer.write_header(metadata, [job.spec for job in jobs])
        total = sum(job.spec.nbytes for job in jobs)
        done = 0
        for job in jobs:
            writer.write_tensor(job.make())
            done += job.spec.nbytes
            if progress is not None:
                progress(job.spec.name, done, total)

    return PatchReport(
        base=base,
        adapter=adapter,
        out=out,
        architecture=arch,
        rf_token=rf.metadata.rf_token,
        rf_token_id=token_id,
        slot=rf.metadata.slot,
        n_vocab=len(new_vocab.tokens),
        threshold=rf.metadata.rf_threshold,
        base_sha256=sha_state,
        merged_type=merged_type,
        changes=changes,
        out_bytes=out.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _check_sha(
    base: Path, rf: Adapter, *, force: bool
) -> Literal["verified", "mismatch ignored", "not given"]:
    expected = rf.metadata.base_sha256
    if expected is None:
        return "not given"
    actual = file_sha256(base)
    if actual == expected:
        return "verified"
    if force:
        return "mismatch ignored"
    raise ConversionError(
        f"the adapter was made for a base with sha256 {expected}, but {base} has sha256 {actual}. "
        "Use the base model the adapter was trained for, or pass --force to patch anyway."
    )


def _row_jobs(
    tensors: dict[str, ReaderTensor],
    rf: Adapter,
    n_vocab: int,
    token_id: int,
    appended: bool,
    changes: list[TensorChange],
) -> dict[str, _Job]:
    embedding = tensors.get(_EMBEDDING)
    if embedding is None or len(embedding.shape) != 2:
        raise ModelFileError(
            f"the base model has no 2-D {_EMBEDDING} tensor, so it cannot take a new token row."
        )
    n_embd, n_rows = (int(d) for d in embedding.shape)
    if n_rows != n_vocab:
        raise ConversionError(
            f"the base model's {_EMBEDDING} has {n_rows} rows but its vocabulary has {n_vocab} tokens; "
            "rf-convert patch needs them equal."
        )
    if rf.embedding.shape[0] != n_embd:
        raise ConversionError(
            f"n_embd mismatch: the adapter's rf.embedding has {rf.embedding.shape[0]} values but the base "
            f"model's embedding size is {n_embd}. Use the adapter trained for this base model."
        )
    rows = {_EMBEDDING: rf.embedding}
    output = tensors.get(_OUTPUT)
    if output is None and rf.output is not None:
        raise ConversionError(
            "the adapter has an rf.output row but the base model ties its output to the embeddings "
            "(no output.weight). Use the adapter trained for this base model."
        )
    if output is not None:
        if rf.output is None:
            raise ConversionError(
                "the base model has an untied output.weight but the adapter has no rf.output row. "
                "Use an adapter trained for a base with untied embeddings."
            )
        if [int(d) for d in output.shape] != [n_embd, n_vocab]:
            raise ModelFileError(
                f"the base model's {_OUTPUT} has shape {list(output.shape)} (GGUF order); "
                f"expected {[n_embd, n_vocab]}."
            )
        rows[_OUTPUT] = rf.output
    action: Literal["row appended", "row replaced"] = "row appended" if appended else "row replaced"
    jobs = {}
    for name, row in rows.items():
        tensor = tensors[name]
        to_type = _target_type(tensor)
        changes.append(
            TensorChange(name=name, action=action, from_type=tensor.tensor_type.name, to_type=to_type.name)
        )
        spec = TensorSpec(name, (n_vocab + int(appended), n_embd), to_type)
        jobs[name] = _Job(spec, _with_row(tensor, row, to_type, token_id, appended))
    return jobs


def _merge_jobs(
    reader: GGUFReader,
    arch: str,
    tensors: dict[str, ReaderTensor],
    rf: Adapter,
    merged_type: MergedType,
    changes: list[TensorChange],
) -> dict[str, _Job]:
    if not rf.loras:
        return {}
    check_mergeable(arch)
    n_layer = _int_key(reader, f"{arch}.block_count")
    jobs = {}
    for pair in rf.loras:
        if pair.layer >= n_layer:
            raise ConversionError(
                f"the adapter's {pair.hf_prefix} is for layer {pair.layer}, but the base model has only "
                f"{n_layer} layers (0..{n_layer - 1}). Use the adapter trained for this base model."
            )
        tensor = tensors.get(pair.gguf_name)
        if tensor is None:
            raise ConversionError(
                f"the base model has no tensor {pair.gguf_name} for the adapter's {pair.hf_prefix}. "
                "Use the adapter trained for this base model."
            )
        n_in, n_out = (int(d) for d in tensor.shape)
        if (pair.b.shape[0], pair.a.shape[1]) != (n_out, n_in):
            raise ConversionError(
                f"LoRA shape mismatch at {pair.hf_prefix}: B @ A is {[pair.b.shape[0], pair.a.shape[1]]} "
                f"but the base model's {pair.gguf_name} is {[n_out, n_in]} ([out, in]). "
                "Use the adapter trained for this base model."
            )
        if pair.weight == 0:  # tuned off: the base tensor is copied as it is
            continue
        n_head = _per_layer(reader, f"{arch}.attention.head_count", pair.layer)
        n_head_kv = _per_layer(reader, f"{arch}.attention.head_count_kv", pair.layer, default=n_head)
        to_type = _merged_type(tensor, merged_type)
        changes.append(
            TensorChange(
                name=tensor.name,
                action="LoRA merged",
                from_type=tensor.tensor_type.name,
                to_type=to_type.name,
            )
        )
        make = _merged(tensor, pair, rf.scale_of(pair), arch, n_head, n_head_kv, to_type)
        jobs[tensor.name] = _Job(TensorSpec(tensor.name, (n_out, n_in), to_type), make)
    return jobs


def _target_type(tensor: ReaderTensor) -> GGMLQuantizationType:
    qtype = tensor.tensor_type
    if can_encode(qtype):
        return qtype
    if can_decode(qtype):
        return FALLBACK_TYPE
    raise ConversionError(
        f"the base model stores {tensor.name} as {qtype.name}, which rf-convert can neither decode "
        "nor encode. Use a base model quantized to another type (e.g. Q8_0, Q4_K_M or F16)."
    )


def _merged_type(tensor: ReaderTensor, merged_type: MergedType) -> GGMLQuantizationType:
    if merged_type == "base":
        return _target_type(tensor)
    if merged_type != "auto":
        return GGMLQuantizationType[merged_type]
    if bits_per_weight(tensor.tensor_type) < 8:
        return GGMLQuantizationType.Q8_0
    return _target_type(tensor)


def _spec(tensor: ReaderTensor, qtype: GGMLQuantizationType) -> TensorSpec:
    return TensorSpec(tensor.name, tuple(int(d) for d in reversed(tensor.shape)), qtype)


def _copy(tensor: ReaderTensor) -> Callable[[], np.ndarray]:
    return lambda: tensor.data


def _with_row(
    tensor: ReaderTensor, row: np.ndarray, to_type: GGMLQuantizationType, token_id: int, appended: bool
) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        if to_type == tensor.tensor_type:
            table = tensor.data
        else:
            table = encode(decode(tensor.data, tensor.tensor_type), to_type)
        new_row = encode(row[np.newaxis, :], to_type)
        if appended:
            return np.concatenate([table, new_row])
        table = np.array(table)
        table[token_id] = new_row[0]
        return table

    return make


def _merged(
    tensor: ReaderTensor,
    pair: LoraPair,
    scale: float,
    arch: str,
    n_head: int,
    n_head_kv: int,
    to_type: GGMLQuantizationType,
) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        weights = decode(tensor.data, tensor.tensor_type)
        return encode(weights + lora_delta(pair, scale, arch, n_head, n_head_kv), to_type)

    return make


def _metadata(reader: GGUFReader, arch: str, new_vocab: Vocab, token_id: int, rf: Adapter) -> list[bytes]:
    def same_type(key: str, value: object) -> bytes:
        types = reader.fields[key].types
        return encode_field(key, types[0], value, types[-1] if types[0] == GGUFValueType.ARRAY else None)

    replaced = {
        TOKENS_KEY: same_type(TOKENS_KEY, new_vocab.tokens),
        TYPES_KEY: same_type(TYPES_KEY, new_vocab.types),
    }
    if new_vocab.scores is not None:
        replaced[SCORES_KEY] = same_type(SCORES_KEY, new_vocab.scores)
    vocab_size_key = f"{arch}.vocab_size"
    if vocab_size_key in reader.fields:
        replaced[vocab_size_key] = same_type(vocab_size_key, len(new_vocab.tokens))
    added = {
        key: encode_field(key, vtype, value)
        for key, vtype, value in (
            (keys.RF_TOKEN, GGUFValueType.UINT32, token_id),
            *([] if rf.metadata.rf_threshold is None else [(keys.RF_THRESHOLD, GGUFValueType.FLOAT32, rf.metadata.rf_threshold)]),
            (keys.RF_ADAPTER_SHA256, GGUFValueType.STRING, rf.sha256),
            (keys.RF_BASE_MODEL, GGUFValueType.STRING, rf.metadata.base_model),
            (keys.RF_FORMAT, GGUFValueType.STRING, rf.metadata.format),
        )
    }
    kept = [
        replaced.get(key) or raw_field(field)
        for key, field in reader.fields.items()
        if not key.startswith("GGUF.") and key not in added and key != keys.RF_THRESHOLD  # the adapter's, or none
    ]
    return [*kept, *added.values()]


def _int_key(reader: GGUFReader, key: str) -> int:
    value = field_value(reader, key)
    if not isinstance(value, int):
        raise ModelFileError(
            f"the base model lacks integer metadata {key!r}; it is not a usable {key.split('.')[0]} model."
        )
    return value


def _per_layer(reader: GGUFReader, key: str, layer: int, default: int | None = None) -> int:
    value = field_value(reader, key)
    if value is None and default is not None:
        return default
    if isinstance(value, list) and layer < len(value):
        value = value[layer]
    if not isinstance(value, int):
        raise ModelFileError(f"the base model lacks integer metadata {key!r} for layer {layer}.")
    return value
