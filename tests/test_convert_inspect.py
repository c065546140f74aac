"""rf-convert inspect on small GGUF files built here."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as Q
from gguf import TokenType
from rfsdk.convert.adapter import AdapterMetadata, save_adapter
from rfsdk.cli.convert import main
from rfsdk.convert.inspect import inspect_gguf, render_table
from rfsdk.convert.patch import patch_gguf

from rfsdk.errors import ModelFileError, ModelNotFoundError

N_EMBD, N_LAYER, N_FF = 32, 2, 64
TOKENS = ["<s>", "</s>", "a", "b", "c", "ab"]


def build(
    path: Path,
    *,
    tokens: list[str] = TOKENS,
    types: list[int] | None = None,
    untied: bool = False,
    template: bool = True,
    extra: dict[str, float] | None = None,
) -> Path:
    """A small llama GGUF: Q8_0 matrices, F32 norms."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("mini")
    writer.add_context_length(128)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    types = types or [int(TokenType.CONTROL)] * 2 + [int(TokenType.NORMAL)] * (len(tokens) - 2)
    writer.add_token_types(types)
    if template:
        writer.add_chat_template("{{ messages }}")
    for key, value in (extra or {}).items():
        writer.add_float32(key, value)
    matrices = {"token_embd.weight": (len(tokens), N_EMBD)}
    if untied:
        matrices["output.weight"] = (len(tokens), N_EMBD)
    for i in range(N_LAYER):
        matrices[f"blk.{i}.ffn_up.weight"] = (N_FF, N_EMBD)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32))
    for name, shape in matrices.items():
        data = rng.standard_normal(shape).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(data, Q.Q8_0), raw_dtype=Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_base_model(tmp_path: Path) -> None:
    info = inspect_gguf(build(tmp_path / "m.gguf"))
    assert info.architecture == "llama" and info.name == "mini"
    assert (info.context_length, info.embedding_length, info.block_count) == (128, N_EMBD, N_LAYER)
    assert (info.head_count, info.head_count_kv, info.vocab_size) == (4, 2, len(TOKENS))
    assert info.tensor_types == {"Q8_0": 3, "F32": 2}
    assert info.parameter_count == len(TOKENS) * N_EMBD + N_LAYER * (N_FF * N_EMBD + N_EMBD)
    assert info.file_bytes == (tmp_path / "m.gguf").stat().st_size
    assert info.tied_embeddings and info.chat_template
    assert info.rf_token is None and info.rf_metadata == {} and info.warnings == []


def test_untied_without_template(tmp_path: Path) -> None:
    info = inspect_gguf(build(tmp_path / "m.gguf", untied=True, template=False))
    assert not info.tied_embeddings and not info.chat_template


def test_patched_model_reports_rf(tmp_path: Path) -> None:
    base = build(tmp_path / "m.gguf")
    adapter = tmp_path / "a.safetensors"
    meta = AdapterMetadata(base_model="mini", lora_alpha=1, lora_rank=1, rf_threshold=0.75)
    save_adapter(adapter, meta, np.ones(N_EMBD, np.float32))
    patch_gguf(base, adapter, tmp_path / "rf.gguf")
    info = inspect_gguf(tmp_path / "rf.gguf")
    assert info.rf_token is not None
    assert (info.rf_token.id, info.rf_token.text, info.rf_token.type) == (len(TOKENS), "<rf>", "CONTROL")
    assert info.rf_token.found_by == "rf.token"
    assert info.rf_metadata["rf.token"] == len(TOKENS)
    assert info.rf_metadata["rf.threshold"] == pytest.approx(0.75)
    assert info.rf_metadata["rf.format"] == "rfsdk-adapter/1"
    assert set(info.rf_metadata) == {
        "rf.token",
        "rf.threshold",
        "rf.adapter_sha256",
        "rf.base_model",
        "rf.format",
    }
    assert info.vocab_size == len(TOKENS) + 1 and info.warnings == []


def test_rf_found_by_text_and_not_control(tmp_path: Path) -> None:
    tokens = [*TOKENS, "<rf>"]
    info = inspect_gguf(build(tmp_path / "m.gguf", tokens=tokens, extra={"rf.threshold": 0.5}))
    assert info.rf_token is not None
    assert (info.rf_token.id, info.rf_token.type, info.rf_token.found_by) == (len(TOKENS), "NORMAL", "text")
    assert info.rf_metadata == {"rf.threshold": 0.5}
    assert any("not CONTROL" in w for w in info.warnings)


def test_table_is_aligned(tmp_path: Path) -> None:
    text = render_table(inspect_gguf(build(tmp_path / "m.gguf")))
    lines = text.splitlines()
    column = lines[0].index("/")
    assert all(len(line) > column and line[column - 2 : column] == "  " for line in lines)
    for label in (
        "architecture",
        "context length",
        "embedding size",
        "layers",
        "heads",
        "vocab size",
        "file size",
        "parameters",
        "tensor types",
        "embeddings",
        "chat template",
        "<rf> token",
    ):
        assert any(line.startswith(label + " ") for line in lines), label
    assert "Q8_0 x3, F32 x2" in text and "tied (no output.weight)" in text


def test_cli_json_and_table(tmp_path: Path) -> None:
    model = build(tmp_path / "m.gguf")
    runner = CliRunner()
    as_json = runner.invoke(main, ["inspect", "--json", str(model)])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["architecture"] == "llama" and data["vocab_size"] == len(TOKENS) and data["rf_token"] is None
    table = runner.invoke(main, ["inspect", str(model)])
    assert table.exit_code == 0 and "architecture" in table.stdout and "llama" in table.stdout


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        inspect_gguf(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        inspect_gguf(not_gguf)
    runner = CliRunner()
    for path, message in (
        (not_gguf, "not a GGUF file"),
        (tmp_path / "missing.gguf", "not found"),
        (tmp_path, "is not a file"),
    ):
        result = runner.invoke(main, ["inspect", str(path)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    data = build(tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    result = runner.invoke(main, ["inspect", str(tmp_path / "cut.gguf")])
    assert result.exit_code == 1 and "truncated" in result.output
