"""Read and validate a GGUF file's header (metadata and tensor table) without loading weights."""

from __future__ import annotations

import codecs
import os
import struct
from pathlib import Path
from typing import BinaryIO, Callable, NoReturn, TypeVar

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from pydantic import BaseModel, ConfigDict

from .errors import ModelFileError, ModelNotFoundError

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4
_CHUNK = 1 << 20
_TOKENS_KEY = "tokenizer.ggml.tokens"
_TOKEN_TYPES_KEY = "tokenizer.ggml.token_type"
_RF_TEXT = b"<rf>"

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_STRING, _ARRAY = 8, 9
# GGUF value type -> struct for the scalar types (STRING=8 and ARRAY=9 are handled apart).
_SCALARS = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_BOOL = 7
# Smallest possible encoding of one metadata pair (key length, type, 1-byte value) and one
# tensor-info entry (name length, n_dims, type, offset): bounds the counts a file can claim.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8

MetadataValue = str | int | float | bool
_T = TypeVar("_T", str, int, float)


class GGUFHeader(BaseModel):
    """A well-formed GGUF file's header: metadata and tensor table (any GGUF, adapters included)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    file_size: int
    version: int
    architecture: str | None
    metadata: dict[str, MetadataValue]
    """Scalar and string values by key (arrays are left out; see ``value_types``)."""
    value_types: dict[str, str]
    """Every key's GGUF value type by name: "STRING", "FLOAT32", ..., "ARRAY[UINT32]"."""
    tensor_types: dict[str, int]
    """Tensor name -> GGML type number (see ``gguf.GGMLQuantizationType``)."""
    tensor_shapes: dict[str, tuple[int, ...]]
    """Tensor name -> dimensions in GGML order (``ne[0]``, the row length, first)."""


class GGUFInfo(GGUFHeader):
    """What rfsdk needs to know about a GGUF model, read from its header alone."""

    name: str | None
    context_length: int | None
    n_vocab: int
    tensor_count: int
    tokens: list[bytes]
    """The text of every vocabulary token, by id."""
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    rf_token_id: int | None
    rf_token_type: int | None
    rf_threshold: float | None


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read and check the header of the GGUF model at ``path``.

    Raises ModelNotFoundError when there is no readable file there, and ModelFileError when
    the file is not GGUF, is corrupt, is truncated (its tensor data runs past its end), or
    carries no vocabulary.
    """
    return _read(path, lambda parser: parser.parse())


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read and check the header of any GGUF file at ``path`` (a LoRA adapter, say), as
    :func:`read_gguf_info` does but without asking for a vocabulary."""
    return _read(path, lambda parser: parser.parse_header()[0])


_H = TypeVar("_H", GGUFHeader, GGUFInfo)


def _read(path: str | os.PathLike[str], parse: Callable[[_Parser], _H]) -> _H:
    path = Path(path).expanduser()
    if os.path.isdir(path):
        raise ModelFileError(
            f"{path} is a directory, not a GGUF file. Pass the path of the .gguf file inside it."
        )
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"No GGUF file at {path}. Check the path (or pass hf://org/repo/file.gguf)."
        ) from None
    except OSError as exc:
        raise ModelNotFoundError(
            f"Cannot open {path}: {exc.strerror or exc}. Check that the file is readable by you."
        ) from None
    try:
        with fh:
            return parse(_Parser(path, fh))
    except OSError as exc:
        raise ModelFileError(
            f"Reading {path} failed: {exc.strerror or exc}. Check the disk, or copy the file again."
        ) from None


def _describe_foreign(head: bytes) -> str:
    """Guess what kind of file starts with ``head`` (the first bytes of a non-GGUF file)."""
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file (convert it to GGUF with llama.cpp's convert_hf_to_gguf.py)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, such as a PyTorch checkpoint (convert the model to GGUF with llama.cpp)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle, such as a PyTorch checkpoint (convert the model to GGUF with llama.cpp)"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg"):
        return "a model in the old GGML/GGJT format (convert it to GGUF with a current llama.cpp)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the model itself (fetch the real file, e.g. with `git lfs pull`)"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return "an HTML page, perhaps an error page saved instead of the model (download it again)"
    try:
        # An incremental decoder tolerates a character cut in half at the end of the sample.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "an unknown binary file"
    if all(c.isprintable() or c.isspace() for c in text):
        return "a text file"
    return "an unknown binary file"


def _type_name(vtype: int) -> str:
    try:
        return GGUFValueType(vtype).name
    except ValueError:
        return f"type {vtype}"


class _Parser:
    """One pass over a GGUF header through a chunked buffer; never reads tensor data."""

    def __init__(self, path: Path, fh: BinaryIO) -> None:
        self.path = path
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size
        self.buf = b""
        self.pos = 0  # position in buf
        self.base = 0  # file offset of buf[0]
        self.where = "header"

    # -- errors ---------------------------------------------------------------

    def fail(self, problem: str) -> NoReturn:
        raise ModelFileError(
            f"{self.path} is corrupt: {problem} (in the {self.where}). "
            "The file is damaged or was not written by a GGUF exporter; re-download or re-export it."
        )

    def overrun(self, problem: str) -> NoReturn:
        raise ModelFileError(
            f"{self.path} is truncated or corrupt: {problem}, but only {self.remaining()} bytes are left "
            f"in the file (in the {self.where}). Re-download or re-export it."
        )

    def truncated(self) -> NoReturn:
        raise ModelFileError(
            f"{self.path} is truncated: the file ends at byte {self.size} inside the {self.where}. "
            "The download or export was cut short; re-download or re-export it."
        )

    # -- low-level reads ------------------------------------------------------

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int:
        return self.size - self.offset

    def fill(self, n: int) -> None:
        """Make sure ``n`` bytes are buffered at ``pos``; reads whole chunks from the file."""
        rest = self.buf[self.pos :]
        self.base += self.pos
        self.pos = 0
        self.buf = rest + self.fh.read(max(n - len(rest), _CHUNK))
        if len(self.buf) < n:
            self.truncated()

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self.fill(n)
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def unpack(self, st: struct.Struct) -> int | float | bool:
        if self.pos + st.size > len(self.buf):
            self.fill(st.size)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def u32(self) -> int:
        return int(self.unpack(_U32))

    def u64(self) -> int:
        return int(self.unpack(_U64))

    def skip(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        if n > self.remaining():
            self.truncated()
        self.base = self.offset + n
        self.fh.seek(self.base)
        self.buf = b""
        self.pos = 0

    def count(self, n: int, min_item_bytes: int, what: str) -> int:
        """Check that ``n`` items of at least ``min_item_bytes`` each can fit in the rest of the file."""
        if n * min_item_bytes > self.remaining():
            self.overrun(f"it claims {n} {what}")
        return n

    def raw_string(self) -> bytes:
        n = self.u64()
        if n > self.remaining():
            self.overrun(f"a string at byte {self.offset - 8} claims {n} bytes")
        return self.take(n)

    def string(self) -> str:
        raw = self.raw_string()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"the string {raw[:40]!r} is not valid UTF-8")

    def strings(self, n: int, keep: bool) -> list[bytes]:
        """Read (or, when not ``keep``, just step over) ``n`` length-prefixed strings."""
        out: list[bytes] = []
        unpack_len = _U64.unpack_from
        buf, pos, end = self.buf, self.pos, len(self.buf)
        for _ in range(n):
            if pos + 8 > end:
                self.pos = pos
                self.fill(8)
                buf, pos, end = self.buf, self.pos, len(self.buf)
            (length,) = unpack_len(buf, pos)
            pos += 8
            if pos + length > end:
                self.pos = pos
                if length > self.remaining():
                    self.overrun(f"a string at byte {self.offset - 8} claims {length} bytes")
                self.fill(length)
                buf, pos, end = self.buf, self.pos, len(self.buf)
            if keep:
                out.append(buf[pos : pos + length])
            pos += length
        self.pos = pos
        return out

    # -- sections -------------------------------------------------------------

    def parse(self) -> GGUFInfo:
        header, tokens, types = self.parse_header()
        return self.build_info(header, tokens, types)

    def parse_header(self) -> tuple[GGUFHeader, list[bytes] | None, tuple[struct.Struct, bytes] | None]:
        """The header, plus the token texts and raw token types when the file has them."""
        head = self.fh.read(24)
        self.buf = head
        if head[:4] != _MAGIC:
            if not head:
                raise ModelFileError(
                    f"{self.path} is empty (0 bytes), not a GGUF model. Re-download or re-export it."
                )
            raise ModelFileError(
                f"{self.path} is not a GGUF file: it starts with {head[:8]!r}, not {_MAGIC!r}; "
                f"this looks like {_describe_foreign(head + self.fh.read(488))}. "
                "Pass the path of a llama.cpp .gguf model instead."
            )
        self.pos = 4
        version = self.u32()
        if version not in _SUPPORTED_VERSIONS:
            swapped = int.from_bytes(head[4:8], "big")
            hint = (
                "it is a big-endian GGUF; convert it to little-endian with gguf's gguf_convert_endian.py"
                if swapped in _SUPPORTED_VERSIONS
                else "re-export it with a current llama.cpp (convert_hf_to_gguf.py)"
            )
            raise ModelFileError(
                f"{self.path} is GGUF version {version}, but only versions 2 and 3 are supported: {hint}."
            )
        n_tensors = self.u64()
        n_kv = self.u64()
        self.count(n_kv, _MIN_KV_BYTES, "metadata entries")
        self.count(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensors")
        value_types: dict[str, str] = {}
        meta, tokens, types = self.read_metadata(n_kv, value_types)
        tensor_types: dict[str, int] = {}
        tensor_shapes: dict[str, tuple[int, ...]] = {}
        data_end = self.read_tensor_infos(n_tensors, self.alignment(meta), tensor_types, tensor_shapes)
        if data_end > self.size:
            raise ModelFileError(
                f"{self.path} is truncated: its tensors need {data_end} bytes but the file has only "
                f"{self.size} bytes ({data_end - self.size} missing). "
                "The download or export was cut short; re-download or re-export it."
            )
        self.where = "metadata section"
        header = GGUFHeader(
            path=self.path,
            file_size=self.size,
            version=version,
            architecture=self.typed(meta, "general.architecture", str),
            metadata=meta,
            value_types=value_types,
            tensor_types=tensor_types,
            tensor_shapes=tensor_shapes,
        )
        return header, tokens, types

    def read_metadata(
        self, n_kv: int, value_types: dict[str, str]
    ) -> tuple[dict[str, MetadataValue], list[bytes] | None, tuple[struct.Struct, bytes] | None]:
        meta: dict[str, MetadataValue] = {}
        tokens: list[bytes] | None = None
        types: tuple[struct.Struct, bytes] | None = None
        seen: set[str] = set()
        for index in range(n_kv):
            self.where = f"metadata section, entry {index} of {n_kv}"
            key = self.string()
            self.where = f"metadata section, key {key!r}"
            if key in seen:
                self.fail(f"the key {key!r} appears twice")
            seen.add(key)
            vtype = self.u32()
            value_types[key] = _type_name(vtype)
            if vtype in _SCALARS:
                meta[key] = self.unpack(_SCALARS[vtype])
            elif vtype == _STRING:
                meta[key] = self.string()
            elif vtype == _ARRAY:
                elem_type, n = self.u32(), self.u64()
                value_types[key] = f"ARRAY[{_type_name(elem_type)}]"
                if key == _TOKENS_KEY and elem_type != _STRING:
                    self.fail(f"{_TOKENS_KEY} must be an array of strings, not of type {elem_type}")
                if elem_type == _STRING:
                    self.count(n, 8, "strings")
                    kept = self.strings(n, keep=key == _TOKENS_KEY)
                    if key == _TOKENS_KEY:
                        tokens = kept
                elif elem_type in _SCALARS:
                    item = _SCALARS[elem_type]
                    self.count(n, item.size, "array items")
                    if key == _TOKEN_TYPES_KEY:
                        types = (item, self.take(n * item.size))
                    else:
                        self.skip(n * item.size)
                elif elem_type == _ARRAY:
                    self.fail("it holds an array of arrays, which llama.cpp does not support")
                else:
                    self.fail(f"an array has unknown item type {elem_type}")
            else:
                self.fail(f"the value has unknown type {vtype}")
        return meta, tokens, types

    def alignment(self, meta: dict[str, MetadataValue]) -> int:
        value = meta.get("general.alignment", _DEFAULT_ALIGNMENT)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
            self.where = "metadata section"
            self.fail(f"general.alignment is {value!r}, not a positive power of two")
        return value

    def read_tensor_infos(
        self, n_tensors: int, alignment: int, types: dict[str, int], shapes: dict[str, tuple[int, ...]]
    ) -> int:
        """Read the tensor table into ``types`` and ``shapes`` (by name); return the file size its data needs."""
        data_needed = 0
        for index in range(n_tensors):
            self.where = f"tensor info section, tensor {index} of {n_tensors}"
            name = self.string()
            self.where = f"tensor info section, tensor {name!r}"
            if name in types:
                self.fail("this tensor name appears twice")
            n_dims = self.u32()
            if n_dims > _MAX_DIMS:
                self.fail(f"the tensor has {n_dims} dimensions; at most {_MAX_DIMS} are allowed")
            dims = [self.u64() for _ in range(n_dims)]
            ggml_type = self.u32()
            offset = self.u64()
            try:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
            except (ValueError, KeyError):
                raise ModelFileError(
                    f"{self.path} has tensor {name!r} of unknown type {ggml_type}. The file is corrupt, "
                    "or uses a type newer than this gguf package: update gguf (pip install -U gguf) "
                    "or re-export it."
                ) from None
            types[name] = ggml_type
            shapes[name] = tuple(dims)
            if dims and dims[0] % block:
                self.fail(
                    f"its first dimension {dims[0]} is not a multiple of the {block}-element block size"
                )
            if offset % alignment:
                self.fail(f"its data offset {offset} is not a multiple of the alignment {alignment}")
            n_elements = 1
            for dim in dims:
                n_elements *= dim
            data_needed = max(data_needed, offset + n_elements // block * type_size)
        if not n_tensors:
            return 0
        data_start = -(-self.offset // alignment) * alignment
        return data_start + data_needed

    def build_info(
        self,
        header: GGUFHeader,
        tokens: list[bytes] | None,
        types: tuple[struct.Struct, bytes] | None,
    ) -> GGUFInfo:
        self.where = "metadata section"
        if tokens is None:
            raise ModelFileError(
                f"{self.path} has no {_TOKENS_KEY} array, so it carries no vocabulary and cannot be "
                "used for chat. Re-export it with its tokenizer (llama.cpp's convert_hf_to_gguf.py "
                "does this)."
            )
        meta = header.metadata
        rf_id = self.rf_token_id(meta, tokens)
        rf_type = None
        if types is not None:
            item, raw = types
            if len(raw) // item.size != len(tokens):
                self.fail(f"{_TOKEN_TYPES_KEY} has {len(raw) // item.size} entries for {len(tokens)} tokens")
            if rf_id is not None:
                rf_type = int(item.unpack_from(raw, rf_id * item.size)[0])
        architecture = header.architecture
        return GGUFInfo(
            **dict(header),
            name=self.typed(meta, "general.name", str),
            context_length=self.typed(meta, f"{architecture}.context_length", int) if architecture else None,
            n_vocab=len(tokens),
            tensor_count=len(header.tensor_types),
            tokens=tokens,
            chat_template=self.typed(meta, "tokenizer.chat_template", str),
            bos_token_id=self.typed(meta, "tokenizer.ggml.bos_token_id", int),
            eos_token_id=self.typed(meta, "tokenizer.ggml.eos_token_id", int),
            rf_token_id=rf_id,
            rf_token_type=rf_type,
            rf_threshold=self.typed(meta, "rf.threshold", float),
        )

    def typed(self, meta: dict[str, MetadataValue], key: str, kind: type[_T]) -> _T | None:
        value = meta.get(key)
        if value is None:
            return None
        accepted = (int, float) if kind is float else kind
        if isinstance(value, bool) or not isinstance(value, accepted):
            self.fail(f"{key} is {value!r}, but it must be a {kind.__name__}")
        return kind(value)

    def rf_token_id(self, meta: dict[str, MetadataValue], tokens: list[bytes]) -> int | None:
        value = meta.get("rf.token")
        if value is None:
            return tokens.index(_RF_TEXT) if _RF_TEXT in tokens else None
        if isinstance(value, str):
            text = value.encode("utf-8")
            if text not in tokens:
                self.fail(f"rf.token names the token {value!r}, which is not in the vocabulary")
            return tokens.index(text)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"rf.token is {value!r}; it must be a token id or the token's text")
        if not 0 <= value < len(tokens):
            self.fail(f"rf.token is {value}, outside the vocabulary of {len(tokens)} tokens")
        return value
