"""Find and index the weight files of a Hugging Face checkpoint folder.

Safetensors files are memory-mapped with numpy. Pickled PyTorch files (``*.bin``, ``*.pt``)
are refused unless the caller opts in: unpickling can run code, and reading them needs torch
(which is then imported here, lazily, with its restricted ``weights_only`` unpickler).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rfsdk.errors import ConversionError

from .safetensors_file import index_safetensors

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_TORCH_DTYPES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}


class WeightTensor(Protocol):
    """One checkpoint tensor: where it is, its dtype name (F32, F16, BF16, ...) and shape."""

    @property
    def path(self) -> Path: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...

    def load(self) -> np.ndarray:
        """The tensor's values as float32."""
        ...


@dataclass(frozen=True)
class PickledTensor:
    """One tensor of a torch pickle, already loaded (memory-mapped where torch can)."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    _tensor: Any

    def load(self) -> np.ndarray:
        """The tensor's values as float32."""
        return np.asarray(self._tensor.float().numpy(), dtype=np.float32)


def index_weights(src: Path, *, allow_pickle: bool = False) -> dict[str, WeightTensor]:
    """Every weight tensor of checkpoint folder ``src`` by HF name, not yet read.

    Safetensors files are used when present; pickles only when there are none and
    ``allow_pickle`` is set.
    """
    paths = _weight_files(src, "model.safetensors.index.json", ("*.safetensors",))
    if paths:
        return _merge(src, [(p, index_safetensors(p, "checkpoint weights")) for p in paths])
    pickled = _weight_files(src, "pytorch_model.bin.index.json", tuple(f"*{s}" for s in PICKLE_SUFFIXES))
    if not pickled:
        raise ConversionError(
            f"no weights in {src}: there is no *.safetensors file (or model.safetensors.index.json). "
            "Save the model with model.save_pretrained(SRC) (safetensors is the default)."
        )
    if not allow_pickle:
        shown = ", ".join(p.name for p in pickled[:3])
        raise ConversionError(
            f"{src} holds pickled PyTorch weights ({shown}) and no *.safetensors. rf-convert does not "
            "load pickles by default: unpickling an untrusted file can run arbitrary code. If you trust "
            "the file, pass --allow-pickle (allow_pickle=True); otherwise re-save the checkpoint as "
            "safetensors in a sandbox: AutoModelForCausalLM.from_pretrained(SRC).save_pretrained(NEW_DIR)."
        )
    return _merge(src, [(p, _index_pickle(p)) for p in pickled])


def _weight_files(src: Path, index_name: str, patterns: tuple[str, ...]) -> list[Path]:
    index_path = src / index_name
    if not index_path.is_file():
        return sorted({p for pattern in patterns for p in src.glob(pattern) if p.is_file()})
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        files = sorted(set(weight_map.values()))
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(
            f"{index_path} is not a valid weights index ({exc!r}). Save the model again."
        ) from exc
    missing = [name for name in files if not (src / name).is_file()]
    if missing:
        raise ConversionError(
            f"weights shard(s) {', '.join(missing)} named in {index_name} are missing from {src}. "
            "Copy all weight shards of the checkpoint."
        )
    return [src / name for name in files]


def _merge(src: Path, files: list[tuple[Path, dict[str, Any]]]) -> dict[str, WeightTensor]:
    tensors: dict[str, WeightTensor] = {}
    for path, index in files:
        for name, tensor in index.items():
            if name in tensors:
                raise ConversionError(
                    f"tensor {name!r} is in both {tensors[name].path.name} and {path.name}. "
                    f"Remove stale weight files from {src}."
                )
            tensors[name] = tensor
    return tensors


def _index_pickle(path: Path) -> dict[str, PickledTensor]:
    try:
        import torch
    except ImportError as exc:
        raise ConversionError(
            f"reading the pickled weights {path.name} needs torch, which is not installed. "
            "Install it with: pip install 'rfsdk[train]' (or convert a safetensors checkpoint)."
        ) from exc
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format: cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(
            f"{path} could not be read as a PyTorch state dict ({type(exc).__name__}: {exc}). "
            "It is corrupt, not a checkpoint, or holds objects beyond tensors; re-save the model."
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(
            f"{path} does not hold a flat state dict of tensors; save the model with "
            "model.save_pretrained(...) and convert that folder."
        )
    return {
        name: PickledTensor(path, _TORCH_DTYPES.get(str(t.dtype), str(t.dtype)), tuple(t.shape), t)
        for name, t in state.items()
    }
