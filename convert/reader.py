"""Open GGUF files for reading, with clear errors, and read their metadata values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import GGUFReader, GGUFValueType

from rfsdk.errors import ModelFileError, ModelNotFoundError

_GGUF_MAGIC = b"GGUF"
_MIN_HEADER_BYTES = 24  # magic, version, tensor count, metadata count


def open_gguf(path: Path) -> GGUFReader:
    """Open ``path`` as a GGUF file, checking that it is one and that no tensor runs past its end."""
    if not path.exists():
        raise ModelNotFoundError(f"GGUF file not found: {path}. Check the path.")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file. Pass the path of a .gguf model file.")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(len(_GGUF_MAGIC))
    if head != _GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF file (it starts with {head!r}, not {_GGUF_MAGIC!r}). "
            "Pass a llama.cpp .gguf model file."
        )
    if size < _MIN_HEADER_BYTES:
        raise ModelFileError(f"{path} is truncated ({size} bytes). Download or convert it again.")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises many kinds on damaged files
        raise ModelFileError(
            f"{path} is truncated or corrupt and cannot be read as GGUF ({exc}). "
            "Download or convert it again."
        ) from exc
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelFileError(
                f"{path} is truncated: tensor {tensor.name!r} ends at byte "
                f"{tensor.data_offset + tensor.n_bytes} but the file has {size} bytes. "
                "Download or convert it again."
            )
    return reader


def field_value(reader: GGUFReader, key: str) -> Any:
    """The value of metadata ``key`` as a Python object (str, int, float, bool or list), or None."""
    field = reader.get_field(key)
    if field is None:
        return None
    main_type = field.types[0]
    if main_type == GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", errors="replace")
    if main_type == GGUFValueType.ARRAY and field.types[-1] == GGUFValueType.STRING:
        return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
    return field.contents()


def string_array(reader: GGUFReader, key: str) -> list[bytes] | None:
    """The raw bytes of each string in array ``key``, or None when the key is absent."""
    field = reader.get_field(key)
    if field is None:
        return None
    if field.types != [GGUFValueType.ARRAY, GGUFValueType.STRING]:
        raise ModelFileError(
            f"metadata {key!r} should be an array of strings but is {_type_name(field.types)}."
        )
    return [bytes(field.parts[i]) for i in field.data]


def architecture(reader: GGUFReader) -> str:
    """The model architecture named by ``general.architecture``."""
    arch = field_value(reader, "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelFileError(
            "the GGUF file has no general.architecture metadata; it is not a usable model file."
        )
    return arch


def _type_name(types: list[GGUFValueType]) -> str:
    return "[" + ", ".join(t.name for t in types) + "]"
