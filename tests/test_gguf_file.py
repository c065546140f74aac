"""Tests for rfsdk._gguf_file: header parsing and the errors for damaged or foreign files."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfsdk.errors import ModelFileError, ModelNotFoundError
from rfsdk._gguf_file import read_gguf_header, read_gguf_info

TOKENS = ["<unk>", "<s>", "</s>", "hello", "world", "<rf>"]
TYPES = [2, 3, 3, 1, 1, 3]
TENSOR = np.arange(64, dtype=np.float32)


def write_gguf(
    path: Path, *, tokens: list[str] | None = TOKENS, types: list[int] | None = None, extra=None
) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_context_length(256)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    if tokens is not None:
        writer.add_token_list(tokens)
        writer.add_token_types(TYPES[: len(tokens)] if types is None else types)
        writer.add_token_scores([0.0] * len(tokens))
        writer.add_token_merges(["h e", "l l"])
    if extra is not None:
        extra(writer)
    writer.add_tensor("blk.0.weight", TENSOR)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf")


def mutated(src: Path, dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def test_reads_header(model: Path) -> None:
    info = read_gguf_info(model)
    assert info.path == model
    assert info.file_size == model.stat().st_size
    assert (info.version, info.architecture, info.name) == (3, "llama", "tiny")
    assert (info.context_length, info.bos_token_id, info.eos_token_id) == (256, 1, 2)
    assert (info.n_vocab, info.tensor_count) == (len(TOKENS), 1)
    assert info.chat_template and "messages" in info.chat_template
    assert info.rf_token_id == 5
    assert info.rf_token_type == gguf.TokenType.CONTROL
    assert info.rf_threshold is None
    assert info.metadata["llama.context_length"] == 256
    assert "tokenizer.ggml.tokens" not in info.metadata  # arrays are left out


def test_value_types_and_tensor_shapes(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_float64("x.f64", 1.5)
        w.add_array("x.ids", [1, 2, 3])
        w.add_tensor("blk.0.matrix", np.zeros((3, 32), np.float32))

    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", extra=extra))
    assert info.value_types["general.architecture"] == "STRING"
    assert info.value_types["llama.context_length"] == "UINT32"
    assert info.value_types["x.f64"] == "FLOAT64" and info.metadata["x.f64"] == 1.5
    assert info.value_types["tokenizer.ggml.tokens"] == "ARRAY[STRING]"
    assert info.value_types["x.ids"] == "ARRAY[INT32]"
    assert info.tensor_shapes == {"blk.0.matrix": (32, 3), "blk.0.weight": (64,)}  # GGML order


def test_a_header_without_vocabulary(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "adapter.gguf", tokens=None, extra=lambda w: w.add_string("general.type", "adapter"))
    header = read_gguf_header(path)
    assert header.architecture == "llama" and header.metadata["general.type"] == "adapter"
    assert header.tensor_types == {"blk.0.weight": int(gguf.GGMLQuantizationType.F32)}
    with pytest.raises(ModelFileError, match="no tokenizer.ggml.tokens array"):
        read_gguf_info(path)
    with pytest.raises(ModelFileError, match="truncated"):
        read_gguf_header(mutated(path, tmp_path / "cut.gguf", path.read_bytes()[:-8]))


def test_info_is_frozen(model: Path) -> None:
    info = read_gguf_info(model)
    with pytest.raises(pydantic.ValidationError):
        info.n_vocab = 3  # type: ignore[misc]


def test_no_rf_token(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", tokens=TOKENS[:5]))
    assert info.rf_token_id is None
    assert info.rf_token_type is None


def test_rf_token_by_id_and_threshold(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_uint32("rf.token", 3)
        w.add_float32("rf.threshold", 0.25)

    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", extra=extra))
    assert (info.rf_token_id, info.rf_token_type, info.rf_threshold) == (3, 1, 0.25)


def test_rf_token_by_text(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", extra=lambda w: w.add_string("rf.token", "</s>")))
    assert (info.rf_token_id, info.rf_token_type) == (2, 3)


def test_rf_token_outside_vocab(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", extra=lambda w: w.add_uint32("rf.token", 99))
    with pytest.raises(ModelFileError, match=r"rf\.token is 99, outside the vocabulary of 6 tokens"):
        read_gguf_info(path)


def test_rf_token_text_not_in_vocab(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", extra=lambda w: w.add_string("rf.token", "<flag>"))
    with pytest.raises(ModelFileError, match="not in the vocabulary"):
        read_gguf_info(path)


def test_token_types_must_match_tokens(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", types=[1, 1, 1])
    with pytest.raises(ModelFileError, match="token_type has 3 entries for 6 tokens"):
        read_gguf_info(path)


def test_missing_tokens(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", tokens=None)
    with pytest.raises(ModelFileError, match=r"no tokenizer\.ggml\.tokens") as err:
        read_gguf_info(path)
    assert str(path) in str(err.value)
    assert "re-export" in str(err.value).lower()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="No GGUF file at"):
        read_gguf_info(tmp_path / "absent.gguf")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="is a directory"):
        read_gguf_info(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"is empty \(0 bytes\)"):
        read_gguf_info(path)


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (struct.pack("<Q", 60) + b'{"__metadata__":{"format":"pt"}}' + b" " * 28, "safetensors"),
        (b"\x80\x04\x95" + bytes(40), "pickle"),
        (b"PK\x03\x04" + bytes(40), "zip archive"),
        (b"Hello, this is a README.\nNot a model at all.\n", "text file"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
        (b"tjgg" + bytes(40), "GGML/GGJT"),
        (bytes(range(200, 240)), "unknown binary"),
    ],
)
def test_not_gguf(tmp_path: Path, content: bytes, looks_like: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="is not a GGUF file") as err:
        read_gguf_info(path)
    assert looks_like in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("version", "hint"), [(1, "re-export"), (4, "re-export"), (0x03000000, "big-endian")]
)
def test_unsupported_version(tmp_path: Path, model: Path, version: int, hint: str) -> None:
    data = bytearray(model.read_bytes())
    data[4:8] = struct.pack("<I", version)
    path = mutated(model, tmp_path / "v.gguf", bytes(data))
    with pytest.raises(ModelFileError, match=f"GGUF version {version}, but only versions 2 and 3") as err:
        read_gguf_info(path)
    assert hint in str(err.value)


def test_version_2_is_read(tmp_path: Path, model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    assert read_gguf_info(mutated(model, tmp_path / "v2.gguf", bytes(data))).version == 2


def _sections(model: Path) -> dict[str, int]:
    reader = gguf.GGUFReader(model)
    return {
        "kv": reader.fields["general.architecture"].offset,
        "tokens": reader.fields["tokenizer.ggml.tokens"].offset,
        "tensor_info": reader.tensors[0].field.offset,
        "data": int(reader.tensors[0].data_offset),
    }


@pytest.mark.parametrize(
    ("section", "delta", "where"),
    [
        ("kv", -10, "header"),
        ("kv", 5, "header"),  # too short for the 10 metadata entries the header claims
        ("kv", 150, "metadata section"),
        ("tokens", 40, "metadata section"),
        ("tensor_info", 3, "tensor info section"),
        ("tensor_info", 30, "tensor info section"),
    ],
)
def test_truncated_header(tmp_path: Path, model: Path, section: str, delta: int, where: str) -> None:
    cut = _sections(model)[section] + delta
    path = mutated(model, tmp_path / "cut.gguf", model.read_bytes()[:cut])
    with pytest.raises(ModelFileError, match="truncated") as err:
        read_gguf_info(path)
    assert where in str(err.value)
    assert "re-download or re-export" in str(err.value).lower()


@pytest.mark.parametrize("keep", [0, 1, 100, 255])
def test_truncated_tensor_data(tmp_path: Path, model: Path, keep: int) -> None:
    data = model.read_bytes()
    cut = _sections(model)["data"] + keep
    path = mutated(model, tmp_path / "cut.gguf", data[:cut])
    with pytest.raises(ModelFileError, match="truncated") as err:
        read_gguf_info(path)
    message = str(err.value)
    assert f"need {len(data)} bytes" in message
    assert f"only {cut} bytes ({len(data) - cut} missing)" in message


def test_huge_string_length(tmp_path: Path, model: Path) -> None:
    data = bytearray(model.read_bytes())
    offset = _sections(model)["kv"]
    data[offset : offset + 8] = struct.pack("<Q", 1 << 60)
    path = mutated(model, tmp_path / "huge.gguf", bytes(data))
    with pytest.raises(ModelFileError, match=f"claims {1 << 60} bytes"):
        read_gguf_info(path)


def test_huge_counts(tmp_path: Path, model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[16:24] = struct.pack("<Q", 1 << 40)
    path = mutated(model, tmp_path / "huge.gguf", bytes(data))
    with pytest.raises(ModelFileError, match=f"claims {1 << 40} metadata entries"):
        read_gguf_info(path)


def test_unknown_value_type(tmp_path: Path, model: Path) -> None:
    data = bytearray(model.read_bytes())
    offset = _sections(model)["kv"] + 8 + len("general.architecture")
    data[offset : offset + 4] = struct.pack("<I", 77)
    path = mutated(model, tmp_path / "type.gguf", bytes(data))
    with pytest.raises(ModelFileError, match="unknown type 77") as err:
        read_gguf_info(path)
    assert "general.architecture" in str(err.value)


def test_unknown_tensor_type(tmp_path: Path, model: Path) -> None:
    data = bytearray(model.read_bytes())
    # tensor info: name length, name, n_dims, one dim, type, offset
    offset = _sections(model)["tensor_info"] + 8 + len("blk.0.weight") + 4 + 8
    assert struct.unpack_from("<I", data, offset)[0] == gguf.GGMLQuantizationType.F32
    data[offset : offset + 4] = struct.pack("<I", 4)  # Q4_2: removed from ggml long ago
    path = mutated(model, tmp_path / "type.gguf", bytes(data))
    with pytest.raises(ModelFileError, match=r"tensor 'blk\.0\.weight' of unknown type 4"):
        read_gguf_info(path)


def test_duplicate_key(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_uint32("rf.aaaa", 1)
        w.add_uint32("rf.bbbb", 2)

    data = write_gguf(tmp_path / "m.gguf", extra=extra).read_bytes()
    path = tmp_path / "dup.gguf"
    path.write_bytes(data.replace(b"rf.bbbb", b"rf.aaaa"))
    with pytest.raises(ModelFileError, match="'rf.aaaa' appears twice"):
        read_gguf_info(path)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damage_only_raises_model_file_error(tmp_path: Path, data: st.DataObject) -> None:
    original = _fuzz_source(tmp_path)
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        index = data.draw(st.integers(0, len(raw) - 1), label="index")
        raw[index] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(raw[:cut]))
    try:
        read_gguf_info(path)
    except ModelFileError:
        pass


def _fuzz_source(tmp_path: Path) -> bytes:
    path = tmp_path / "source.gguf"
    if not path.exists():
        write_gguf(path, extra=lambda w: w.add_float32("rf.threshold", 0.5))
    return path.read_bytes()
