"""Read and write safetensors files of float tensors with numpy alone.

The format: an 8-byte little-endian header length N, N bytes of JSON naming each
tensor's dtype, shape and byte range in the data that follows, and the raw data.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfsdk.errors import ConversionError, ModelNotFoundError

_READ_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 after reading
}
_WRITE_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (as float32) and ``__metadata__`` strings of the safetensors file ``path``."""
    if not path.exists():
        raise ModelNotFoundError(f"adapter file not found: {path}. Check the path.")
    if not path.is_file():
        raise ConversionError(f"{path} is not a file. Pass the path of a .safetensors adapter.")
    raw = _map(path)
    header, data_start = _parse_header(path, raw)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ConversionError(f"{path}: safetensors __metadata__ must map strings to strings.")
    data = raw[data_start:]
    return {name: _tensor(path, name, info, data) for name, info in header.items()}, metadata


@dataclass(frozen=True)
class LazyTensor:
    """One tensor of a safetensors file: its dtype and shape now, its float32 values on :meth:`load`."""

    path: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    _info: dict[str, Any]
    _data: np.ndarray
    _what: str

    def load(self) -> np.ndarray:
        """The tensor's values as float32 (read from the memory-mapped file only now)."""
        return _tensor(self.path, self.name, self._info, self._data, self._what)


def index_safetensors(path: Path, what: str = "checkpoint") -> dict[str, LazyTensor]:
    """The tensors of safetensors file ``path``, described but not read (``what`` names the file in errors)."""
    if not path.is_file():
        raise ModelNotFoundError(f"{what} file not found: {path}. Check the path.")
    raw = _map(path)
    header, data_start = _parse_header(path, raw, what)
    header.pop("__metadata__", None)
    data = raw[data_start:]
    index = {}
    for name, info in header.items():
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise ConversionError(
                f"{path}: tensor {name!r} lacks dtype, shape or data_offsets; the file is not valid safetensors."
            )
        index[name] = LazyTensor(
            path, name, str(info.get("dtype")), tuple(info["shape"]), info, data, what
        )
    return index


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write float32/float16 ``tensors`` and string ``metadata`` to ``path`` as safetensors."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    blobs: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        dtype = _WRITE_DTYPES.get(np.dtype(array.dtype))
        if dtype is None:
            raise ConversionError(
                f"tensor {name!r} has dtype {array.dtype}; only float32 and float16 can be written."
            )
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for blob in blobs:
            fh.write(blob)


def _map(path: Path) -> np.ndarray:
    return np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)


def _parse_header(path: Path, raw: np.ndarray, what: str = "adapter") -> tuple[dict[str, object], int]:
    not_st = f"{path} is not a safetensors file"
    if raw.size < 8:
        raise ConversionError(f"{not_st} (only {raw.size} bytes). Pass the {what} .safetensors file.")
    (length,) = struct.unpack("<Q", raw[:8].tobytes())
    if length > min(_MAX_HEADER_BYTES, raw.size - 8):
        raise ConversionError(
            f"{not_st} or it is truncated (header claims {length} bytes, file has {raw.size}). "
            f"Pass the {what} .safetensors file."
        )
    try:
        header = json.loads(raw[8 : 8 + length].tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(
            f"{not_st} (its header is not JSON: {exc}). Pass the {what} .safetensors file."
        ) from exc
    if not isinstance(header, dict):
        raise ConversionError(
            f"{not_st} (its header is not a JSON object). Pass the {what} .safetensors file."
        )
    return header, 8 + length


def _tensor(path: Path, name: str, info: object, data: np.ndarray, what: str = "adapter") -> np.ndarray:
    bad = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise ConversionError(f"{bad} lacks dtype, shape or data_offsets; the file is not valid safetensors.")
    dtype = _READ_DTYPES.get(info["dtype"])
    if dtype is None:
        raise ConversionError(
            f"{bad} has dtype {info['dtype']!r}; {what} tensors must be F32, F16 or BF16. "
            "Re-export it as float32."
        )
    shape, offsets = info["shape"], info["data_offsets"]
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
    ):
        raise ConversionError(
            f"{bad} has a malformed shape or data_offsets; the file is not valid safetensors."
        )
    begin, end = offsets
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not 0 <= begin <= end <= data.size or end - begin != expected:
        raise ConversionError(
            f"{bad} has data_offsets {offsets} that do not fit its shape {shape} or the file "
            f"({data.size} data bytes); the file is truncated or corrupt."
        )
    array: np.ndarray = data[begin:end].view(dtype).reshape(shape)
    if info["dtype"] == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32, copy=False)
