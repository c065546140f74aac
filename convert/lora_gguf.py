"""Write an rfsdk adapter's LoRA as a llama.cpp LoRA adapter GGUF (``Llama(lora_path=...)``).

llama.cpp adapters hold ``general.type = "adapter"``, ``adapter.type = "lora"``,
``adapter.lora.alpha`` and, per adapted weight ``W`` [out, in], the tensors ``W.lora_a``
[r, in] and ``W.lora_b`` [out, r]; llama.cpp adds ``alpha / r * B @ A`` to ``W``.

The <rf> token cannot travel in such a file: it is a new vocabulary row (embedding and,
if untied, output row), and adapters only add low-rank deltas to existing matrices. So the
adapter GGUF is for a base that already carries <rf> with this adapter's row: either the
``--base`` given already has it, or ``rf-convert lora --rf-base`` writes one (the base plus
<rf>, the LoRA not merged) next to the adapter.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, Keys, TokenType
from gguf.quants import dequantize
from pydantic import BaseModel

from rfsdk.errors import ConversionError

from . import keys
from .adapter import Adapter, LoraPair, load_adapter, save_adapter
from .merge import ROPE_PERMUTED_ARCHS, check_mergeable, permute_rope_rows
from .patch import patch_gguf
from .reader import architecture, field_value, open_gguf
from .vocab import Vocab
from .writer import GGUFStreamWriter, TensorSpec, check_out_path, encode_field, staged_path

ROW_TOLERANCE = 0.05
"""Largest relative difference (L2) between the base's <rf> row and the adapter's that is accepted."""
_ALIGNMENT = 32


class LoraExportReport(BaseModel):
    """What :func:`lora_to_gguf` did."""

    adapter: Path
    out: Path
    base: Path
    rf_base: Path | None
    architecture: str
    rf_token_id: int
    n_pairs: int
    rank: int
    alpha: float
    out_bytes: int
    seconds: float


def lora_to_gguf(
    adapter: Path, out: Path, *, base: Path, rf_base: Path | None = None, force: bool = False
) -> LoraExportReport:
    """Write ``out``: the LoRA of ``adapter`` as a llama.cpp adapter GGUF for ``base``.

    ``base`` must carry <rf> with the adapter's row, unless ``rf_base`` is given: then
    ``rf_base`` is written as ``base`` plus the adapter's <rf> row (LoRA not merged), and
    the adapter GGUF is meant for it.
    """
    started = time.perf_counter()
    check_out_path(out, {adapter: "the ADAPTER file", base: "the --base file"}, force=force)
    rf = load_adapter(adapter)
    if not any(pair.weight > 0 for pair in rf.loras):
        what = "every LoRA pair at weight 0 (rf.lora_weights)" if rf.loras else "no LoRA tensors"
        raise ConversionError(
            f"{adapter} holds {what}: only its <rf> row(s) change the model, and there is nothing for a llama.cpp "
            "adapter to carry. Use rf-convert patch BASE ADAPTER OUT to add <rf> to the base."
        )
    reader = open_gguf(base)
    arch = architecture(reader)
    check_mergeable(arch)
    rf_id = _base_rf_id(reader, rf)
    if rf_id is None:
        if rf_base is None:
            raise ConversionError(
                f"{base} has no {rf.metadata.rf_token} token, and a LoRA adapter cannot add one: "
                f"{rf.metadata.rf_token} is a new vocabulary row, which llama.cpp adapters cannot carry. "
                "Pass --rf-base RF_BASE.gguf to also write BASE plus the adapter's <rf> row (LoRA not "
                "merged) and use the adapter GGUF with that file, or pass a --base that already has <rf>."
            )
        rf_id = _write_rf_base(base, rf, rf_base, force=force)
    elif rf_base is not None:
        raise ConversionError(
            f"{base} already has {rf.metadata.rf_token} (id {rf_id}); --rf-base is only for bases without it."
        )
    else:
        _check_row(base, reader, rf, rf_id)
    pairs = _gguf_pairs(reader, arch, rf.loras, base)
    metadata = _metadata(reader, arch, rf)
    specs = [TensorSpec(name, array.shape, GGMLQuantizationType.F32) for name, array in pairs]
    del reader
    with staged_path(out, force=force) as staged, staged.open("wb") as fh:
        writer = GGUFStreamWriter(fh, _ALIGNMENT)
        writer.write_header(metadata, specs)
        for _, array in pairs:
            writer.write_tensor(array)
    return LoraExportReport(
        adapter=adapter,
        out=out,
        base=base,
        rf_base=rf_base,
        architecture=arch,
        rf_token_id=rf_id,
        n_pairs=len(pairs) // 2,
        rank=rf.metadata.lora_rank,
        alpha=rf.metadata.lora_scale * rf.metadata.lora_rank,
        out_bytes=out.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _base_rf_id(reader: GGUFReader, rf: Adapter) -> int | None:
    token_id = field_value(reader, keys.RF_TOKEN)
    if isinstance(token_id, int):
        return token_id
    vocab = Vocab.from_reader(reader)
    found = vocab.find(rf.metadata.rf_token)
    if found is not None and vocab.types is not None and vocab.types[found] == TokenType.CONTROL:
        return found
    return None


def _check_row(base: Path, reader: GGUFReader, rf: Adapter, rf_id: int) -> None:
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    row = dequantize(np.asarray(tensor.data[rf_id : rf_id + 1]), tensor.tensor_type).reshape(-1)
    error = float(np.linalg.norm(row - rf.embedding)) / max(float(np.linalg.norm(rf.embedding)), 1e-12)
    if row.shape != rf.embedding.shape or error > ROW_TOLERANCE:
        raise ConversionError(
            f"the {rf.metadata.rf_token} embedding row of {base} (id {rf_id}) differs from the adapter's "
            f"(relative difference {error:.3g}); that base was made with another adapter. Use --rf-base with "
            "the original base model to write a matching one."
        )


def _write_rf_base(base: Path, rf: Adapter, rf_base: Path, *, force: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="rf-lora-") as tmp:
        rows_only = Path(tmp) / "rf-rows.safetensors"
        save_adapter(rows_only, rf.metadata, rf.embedding, rf.output)
        report = patch_gguf(base, rows_only, rf_base, force=force)
    return report.rf_token_id


def _gguf_pairs(
    reader: GGUFReader, arch: str, loras: tuple[LoraPair, ...], base: Path
) -> list[tuple[str, np.ndarray]]:
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}  # [out, in]
    n_head = field_value(reader, Keys.Attention.HEAD_COUNT.format(arch=arch))
    n_head_kv = field_value(reader, Keys.Attention.HEAD_COUNT_KV.format(arch=arch)) or n_head
    out: list[tuple[str, np.ndarray]] = []
    for pair in loras:
        expected = (pair.b.shape[0], pair.a.shape[1])
        if shapes.get(pair.gguf_name) != expected:
            found = shapes.get(pair.gguf_name)
            raise ConversionError(
                f"the adapter's {pair.hf_prefix} makes a {list(expected)} delta but {base} has "
                f"{pair.gguf_name} as {list(found) if found else 'no such tensor'}; the adapter is for another base."
            )
        if pair.weight == 0:  # tuned off
            continue
        b = pair.weight * np.asarray(pair.b, dtype=np.float32)  # one alpha for all pairs: the weight goes into B
        if arch in ROPE_PERMUTED_ARCHS and pair.module in ("q_proj", "k_proj"):
            heads = n_head if pair.module == "q_proj" else n_head_kv
            b = permute_rope_rows(b, _layer_value(heads, pair.layer))
        stem = pair.gguf_name
        out += [(f"{stem}.lora_a", np.ascontiguousarray(pair.a, dtype=np.float32)), (f"{stem}.lora_b", b)]
    return out


def _layer_value(value: object, layer: int) -> int:
    if isinstance(value, list):
        value = value[layer]
    if not isinstance(value, int):
        raise ConversionError("the base model lacks integer attention.head_count metadata.")
    return value


def _metadata(reader: GGUFReader, arch: str, rf: Adapter) -> list[bytes]:
    name = field_value(reader, Keys.General.NAME)
    entries = [
        (Keys.General.ARCHITECTURE, arch, GGUFValueType.STRING),
        (Keys.General.TYPE, "adapter", GGUFValueType.STRING),
        (Keys.General.NAME, f"{name or arch} <rf> LoRA", GGUFValueType.STRING),
        (Keys.Adapter.TYPE, "lora", GGUFValueType.STRING),
        (Keys.Adapter.LORA_ALPHA, rf.metadata.lora_scale * rf.metadata.lora_rank, GGUFValueType.FLOAT32),
        (keys.RF_ADAPTER_SHA256, rf.sha256, GGUFValueType.STRING),
        (keys.RF_BASE_MODEL, rf.metadata.base_model, GGUFValueType.STRING),
        (keys.RF_FORMAT, rf.metadata.format, GGUFValueType.STRING),
    ]
    if rf.metadata.rf_threshold is not None:
        entries.append((keys.RF_THRESHOLD, float(rf.metadata.rf_threshold), GGUFValueType.FLOAT32))
    return [encode_field(key, vtype, value) for key, value, vtype in entries]
