"""Stream a little-endian GGUF v3 file: header, metadata, tensor infos, then tensor data one by one.

Metadata entries are passed as encoded bytes, so entries copied from another file
(:func:`raw_field`) stay byte-for-byte identical.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from gguf import GGUF_MAGIC, GGMLQuantizationType, GGUFValueType, ReaderField

from rfsdk.errors import ConversionError

from .quant import n_bytes

_GGUF_VERSION = 3
_SCALAR_DTYPES: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
    GGUFValueType.BOOL: "<u1",
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, element shape (numpy order: rows last) and storage type of one output tensor."""

    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor's data."""
        return n_bytes(self.shape, self.qtype)


def raw_field(field: ReaderField) -> bytes:
    """The exact bytes of metadata entry ``field`` as stored in the file it was read from."""
    return b"".join(part.tobytes() for part in field.parts)


def encode_field(
    key: str, vtype: GGUFValueType, value: object, sub_type: GGUFValueType | None = None
) -> bytes:
    """One metadata entry: a scalar, a string (str or bytes) or an array of scalars or strings."""
    out = _string(key) + struct.pack("<I", vtype)
    if vtype == GGUFValueType.ARRAY:
        assert sub_type is not None and isinstance(value, Sequence)
        out += struct.pack("<IQ", sub_type, len(value))
        if sub_type == GGUFValueType.STRING:
            return out + b"".join(_string(item) for item in value)
        return out + np.asarray(value, dtype=_SCALAR_DTYPES[sub_type]).tobytes()
    if vtype == GGUFValueType.STRING:
        assert isinstance(value, (str, bytes))
        return out + _string(value)
    return out + np.asarray(value, dtype=_SCALAR_DTYPES[vtype]).tobytes()


class GGUFStreamWriter:
    """Writes a GGUF file to ``fh``; call :meth:`write_header` once, then :meth:`write_tensor` per tensor."""

    def __init__(self, fh: BinaryIO, alignment: int) -> None:
        self._fh = fh
        self._alignment = alignment
        self._pending: list[TensorSpec] = []

    def write_header(self, metadata: Sequence[bytes], tensors: Sequence[TensorSpec]) -> None:
        """Write the header, the encoded ``metadata`` entries and the infos of ``tensors``."""
        self._fh.write(struct.pack("<IIQQ", GGUF_MAGIC, _GGUF_VERSION, len(tensors), len(metadata)))
        for entry in metadata:
            self._fh.write(entry)
        offset = 0
        for spec in tensors:
            self._fh.write(_string(spec.name) + struct.pack("<I", len(spec.shape)))
            self._fh.write(struct.pack(f"<{len(spec.shape)}Q", *reversed(spec.shape)))
            self._fh.write(struct.pack("<IQ", spec.qtype, offset))
            offset += _padded(spec.nbytes, self._alignment)
        self._pad()
        self._pending = list(reversed(tensors))

    def write_tensor(self, data: np.ndarray) -> None:
        """Write the data of the next tensor announced in :meth:`write_header`."""
        spec = self._pending.pop()
        if data.nbytes != spec.nbytes:
            raise ValueError(
                f"tensor {spec.name!r}: got {data.nbytes} bytes of data, its info says {spec.nbytes}"
            )
        self._fh.write(np.ascontiguousarray(data).reshape(-1).view(np.uint8).data)
        self._pad()

    def _pad(self) -> None:
        self._fh.write(b"\0" * (-self._fh.tell() % self._alignment))


def _string(value: str | bytes) -> bytes:
    encoded = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack("<Q", len(encoded)) + encoded


def _padded(size: int, alignment: int) -> int:
    return size + (-size % alignment)


def check_out_path(out: Path, inputs: dict[Path, str], *, force: bool) -> None:
    """Refuse an OUT path that is one of ``inputs`` (path -> what it is), a folder, in a
    missing folder, or an existing file without ``force``."""
    for path, what in inputs.items():
        if out.resolve() == path.resolve() or (out.exists() and path.exists() and out.samefile(path)):
            raise ConversionError(f"OUT {out} is {what}; rfsdk never overwrites its inputs. Pick another OUT path.")
    if out.is_dir():
        raise ConversionError(f"OUT {out} is a directory. Give the path of the .gguf file to write.")
    if not out.parent.is_dir():
        raise ConversionError(f"the folder of OUT {out} does not exist. Create it first.")
    if out.exists() and not force:
        raise ConversionError(f"OUT {out} already exists. Pick another path, or pass --force to replace it.")


@contextmanager
def staged_path(out: Path, *, force: bool) -> Iterator[Path]:
    """A path beside ``out`` that becomes ``out`` when the block succeeds and is removed otherwise."""
    staging = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        yield staging
        if not staging.is_file():
            raise ConversionError(f"nothing was written to {staging}; nothing was changed.")
        with staging.open("rb+") as fh:
            os.fsync(fh.fileno())
        if out.exists() and not force:
            raise ConversionError(
                f"OUT {out} appeared while writing. Pick another path, or pass --force to replace it."
            )
        os.replace(staging, out)
    finally:
        if staging.exists():
            staging.unlink()
