"""The ``rfsdk-adapter/1`` file: what training produces and ``rf-convert patch`` applies.

An adapter is a safetensors file holding

* ``rf.embedding`` float32 ``[n_embd]``: the input-embedding row of the ``<rf>`` token;
* ``rf.output`` float32 ``[n_embd]``: its output (lm_head) row, only for bases with an
  untied ``output.weight`` (with tied embeddings the embedding row is also the output row);
* LoRA pairs in PEFT naming,
  ``base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight`` and
  ``base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight``,
  with A ``[r, in]`` and B ``[out, r]`` (F32, F16 or BF16);
* ``rf.lora_weights`` float32 ``[n_layers, 7]``, optional: a weight per LoRA pair (row: layer,
  column: module in :data:`LORA_MODULES` order) that multiplies its delta on top of the
  strength; absent means 1 everywhere. `rf-train tune` writes it for a strength profile;

and string metadata described by :class:`AdapterMetadata`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from rfsdk.errors import ConversionError

from .safetensors_file import read_safetensors, write_safetensors

ADAPTER_FORMAT: Literal["rfsdk-adapter/1"] = "rfsdk-adapter/1"
EMBEDDING_KEY = "rf.embedding"
OUTPUT_KEY = "rf.output"
LORA_WEIGHTS_KEY = "rf.lora_weights"

LORA_MODULES: dict[str, str] = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
"""HF (PEFT) module name -> GGUF tensor name stem (``blk.{i}.<stem>.weight``)."""
_MODULE_COLUMN = {module: column for column, module in enumerate(LORA_MODULES)}

_MODULE_GROUP = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_LORA_NAME = re.compile(
    r"base_model\.model\.model\.layers\.(?P<layer>0|[1-9]\d*)\.(?P<group>self_attn|mlp)\."
    r"(?P<module>[a-z_]+)\.lora_(?P<half>[AB])\.weight"
)
_LORA_PATTERNS = (
    "base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight, "
    "base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight"
)


class AdapterMetadata(BaseModel):
    """The string metadata of an adapter file (safetensors ``__metadata__``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal["rfsdk-adapter/1"] = ADAPTER_FORMAT
    base_model: str = Field(min_length=1, description="Free text naming the base model.")
    base_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the base GGUF file the adapter is for.",
    )
    lora_alpha: float = Field(allow_inf_nan=False)
    lora_rank: int = Field(gt=0)
    lora_strength: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="Multiplier on the trained LoRA delta, chosen after training (rf-train tune).",
    )
    rf_token: str = Field(default="<rf>", min_length=1)
    rf_threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Calibrated <rf> probability threshold; none when the adapter was never calibrated.",
    )
    slot: str | None = Field(
        default=None, min_length=1, description="Existing token to take over instead of appending."
    )

    @property
    def lora_scale(self) -> float:
        """The scale of ``B @ A`` when merged: ``lora_strength * lora_alpha / lora_rank``."""
        return self.lora_strength * self.lora_alpha / self.lora_rank

    def to_header(self) -> dict[str, str]:
        """The metadata as the safetensors ``__metadata__`` strings."""
        return {key: str(value) for key, value in self.model_dump().items() if value is not None}


@dataclass(frozen=True)
class LoraPair:
    """One LoRA pair: ``delta W = weight * scale * b @ a`` for module ``module`` of layer ``layer``.

    ``weight`` is not trained: `rf-train tune` sets it (0 leaves the module as the base has it).
    """

    layer: int
    module: str
    a: np.ndarray
    b: np.ndarray
    weight: float = 1.0

    @property
    def gguf_name(self) -> str:
        """The GGUF tensor this pair modifies."""
        return f"blk.{self.layer}.{LORA_MODULES[self.module]}.weight"

    @property
    def hf_prefix(self) -> str:
        """The PEFT name of this pair without ``.lora_A.weight``/``.lora_B.weight``."""
        return lora_prefix(self.layer, self.module)


@dataclass(frozen=True)
class Adapter:
    """A loaded, self-consistent adapter (not yet checked against a base model)."""

    metadata: AdapterMetadata
    embedding: np.ndarray
    output: np.ndarray | None
    loras: tuple[LoraPair, ...]
    sha256: str

    def scale_of(self, pair: LoraPair) -> float:
        """The factor on ``b @ a`` when ``pair`` is merged: its weight times ``lora_scale``."""
        return pair.weight * self.metadata.lora_scale


def lora_prefix(layer: int, module: str) -> str:
    """The PEFT tensor name prefix of LoRA ``module`` (e.g. ``"q_proj"``) in layer ``layer``."""
    if module not in LORA_MODULES:
        raise ConversionError(f"unknown LoRA module {module!r}; use one of {', '.join(LORA_MODULES)}.")
    return f"base_model.model.model.layers.{layer}.{_MODULE_GROUP[module]}.{module}"


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    """Read and validate the adapter file ``path``."""
    path = Path(path)
    tensors, header = read_safetensors(path)
    metadata = _parse_metadata(path, header)
    embedding = _row(path, tensors, EMBEDDING_KEY)
    if embedding is None:
        raise ConversionError(
            f"{path} has no {EMBEDDING_KEY!r} tensor; an adapter must carry the <rf> embedding row."
        )
    output = _row(path, tensors, OUTPUT_KEY)
    if output is not None and output.shape != embedding.shape:
        raise ConversionError(
            f"{path}: {OUTPUT_KEY} has {output.shape[0]} values but {EMBEDDING_KEY} has "
            f"{embedding.shape[0]}; both must be rows of n_embd values."
        )
    loras = _lora_pairs(
        path, {k: v for k, v in tensors.items() if k not in (EMBEDDING_KEY, OUTPUT_KEY, LORA_WEIGHTS_KEY)}, metadata
    )
    if LORA_WEIGHTS_KEY in tensors:
        loras = _weighted(path, loras, tensors[LORA_WEIGHTS_KEY])
    return Adapter(
        metadata=metadata, embedding=embedding, output=output, loras=loras, sha256=file_sha256(path)
    )


def save_adapter(
    path: str | os.PathLike[str],
    metadata: AdapterMetadata,
    embedding: np.ndarray,
    output: np.ndarray | None = None,
    loras: Iterable[LoraPair] = (),
    *,
    lora_dtype: type[np.floating] = np.float32,
) -> None:
    """Write an adapter file to ``path``: float32 <rf> rows, LoRA pairs as ``lora_dtype``.

    ``lora_dtype=np.float16`` halves the file (how the bundled default ships). The pairs'
    weights are written as ``rf.lora_weights`` when any of them is not 1.
    """
    loras = tuple(loras)
    tensors: dict[str, np.ndarray] = {EMBEDDING_KEY: np.asarray(embedding, dtype=np.float32)}
    if output is not None:
        tensors[OUTPUT_KEY] = np.asarray(output, dtype=np.float32)
    for pair in loras:
        tensors[f"{pair.hf_prefix}.lora_A.weight"] = np.asarray(pair.a, dtype=lora_dtype)
        tensors[f"{pair.hf_prefix}.lora_B.weight"] = np.asarray(pair.b, dtype=lora_dtype)
    if any(pair.weight != 1.0 for pair in loras):
        weights = np.ones((max(pair.layer for pair in loras) + 1, len(LORA_MODULES)), dtype=np.float32)
        for pair in loras:
            weights[pair.layer, _MODULE_COLUMN[pair.module]] = pair.weight
        tensors[LORA_WEIGHTS_KEY] = weights
    write_safetensors(Path(path), tensors, metadata.to_header())


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_metadata(path: Path, header: dict[str, str]) -> AdapterMetadata:
    found = header.get("format")
    if found != ADAPTER_FORMAT:
        what = "has no 'format' metadata" if found is None else f"has format {found!r}"
        raise ConversionError(
            f"{path} is not an rfsdk adapter: it {what}, expected {ADAPTER_FORMAT!r}. "
            "Pass an adapter written by rfsdk's training code (or rfsdk.convert.adapter.save_adapter)."
        )
    try:
        return AdapterMetadata.model_validate(header)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConversionError(
            f"{path} has bad adapter metadata: {problems}. Fix the adapter's metadata."
        ) from exc


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    return f"{key} = {error['input']!r}: {error['msg']}"


def _row(path: Path, tensors: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    row = tensors.get(key)
    if row is None:
        return None
    if row.ndim != 1 or row.size == 0:
        raise ConversionError(
            f"{path}: {key!r} has shape {list(row.shape)}; it must be one row of n_embd values."
        )
    if not np.isfinite(row).all():
        raise ConversionError(
            f"{path}: {key!r} contains NaN or infinite values; retrain or re-export the adapter."
        )
    return row


def _lora_pairs(
    path: Path, tensors: dict[str, np.ndarray], metadata: AdapterMetadata
) -> tuple[LoraPair, ...]:
    halves: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for name, array in tensors.items():
        match = _LORA_NAME.fullmatch(name)
        if match is None or _MODULE_GROUP.get(match["module"]) != match["group"]:
            raise ConversionError(
                f"{path} has unknown tensor {name!r}. Adapters may hold {EMBEDDING_KEY}, {OUTPUT_KEY}, {LORA_WEIGHTS_KEY} "
                f"and LoRA pairs named {_LORA_PATTERNS}."
            )
        halves.setdefault((int(match["layer"]), match["module"]), {})[match["half"]] = array
    pairs = []
    for (layer, module), half in sorted(halves.items()):
        prefix = lora_prefix(layer, module)
        if set(half) != {"A", "B"}:
            missing = "lora_B" if "A" in half else "lora_A"
            raise ConversionError(
                f"{path} has {prefix} without its {missing}.weight; LoRA tensors come in A/B pairs."
            )
        a, b = half["A"], half["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != metadata.lora_rank or b.shape[1] != metadata.lora_rank:
            raise ConversionError(
                f"{path}: LoRA shape mismatch at {prefix}: lora_A is {list(a.shape)} and lora_B is "
                f"{list(b.shape)}, expected [r, in] and [out, r] with r = lora_rank = {metadata.lora_rank}."
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ConversionError(
                f"{path}: {prefix} contains NaN or infinite values; retrain or re-export the adapter."
            )
        pairs.append(LoraPair(layer=layer, module=module, a=a, b=b))
    return tuple(pairs)


def _weighted(path: Path, pairs: tuple[LoraPair, ...], weights: np.ndarray) -> tuple[LoraPair, ...]:
    rows = max((pair.layer for pair in pairs), default=-1) + 1
    if weights.ndim != 2 or weights.shape[1] != len(LORA_MODULES) or weights.shape[0] < rows:
        raise ConversionError(
            f"{path}: {LORA_WEIGHTS_KEY!r} has shape {list(weights.shape)}; it must be [n_layers, "
            f"{len(LORA_MODULES)}] with a row for every layer with LoRA (at least {rows}), columns "
            f"{', '.join(LORA_MODULES)}. Tune the adapter again (rf-train tune) to rewrite it."
        )
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ConversionError(
            f"{path}: {LORA_WEIGHTS_KEY!r} holds a negative, NaN or infinite weight; LoRA weights are "
            "finite and at least 0. Tune the adapter again (rf-train tune) to rewrite it."
        )
    return tuple(replace(p, weight=float(weights[p.layer, _MODULE_COLUMN[p.module]])) for p in pairs)
