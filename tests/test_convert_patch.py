"""rf-convert patch: tiny llama GGUFs built here, patched with random adapters, checked numerically."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType, TokenType
from rfsdk.convert.adapter import AdapterMetadata, LoraPair, file_sha256, load_adapter, save_adapter
from rfsdk.cli.convert import main
from rfsdk.convert.merge import permute_rope_rows
from rfsdk.convert.patch import patch_gguf
from rfsdk.convert.safetensors_file import read_safetensors, write_safetensors

from rfsdk.errors import ConversionError, ModelFileError, ModelNotFoundError

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = 32, 2, 1, 64, 2
HEAD_DIM = N_EMBD // N_HEAD
SPECIALS = ["<s>", "</s>", "<|reserved_0|>"]
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_STEM = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: one token per byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


TOKENS = [*_byte_tokens(), "rf", *SPECIALS]
N_VOCAB = len(TOKENS)


def _shape(module: str) -> tuple[int, int]:
    """[out, in] of an HF module in the tiny model."""
    kv = N_HEAD_KV * HEAD_DIM
    return {
        "q_proj": (N_EMBD, N_EMBD),
        "k_proj": (kv, N_EMBD),
        "v_proj": (kv, N_EMBD),
        "o_proj": (N_EMBD, N_EMBD),
        "gate_proj": (N_FF, N_EMBD),
        "up_proj": (N_FF, N_EMBD),
        "down_proj": (N_EMBD, N_FF),
    }[module]


@dataclass
class TinyModel:
    path: Path
    weights: dict[str, np.ndarray]  # float32, numpy order, before quantization


def build_tiny(
    path: Path, *, qtype: Q = Q.F32, untied: bool = False, scores: bool = True, seed: int = 0
) -> TinyModel:
    """A small but complete llama GGUF; 2-D weights stored as ``qtype``."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {"token_embd.weight": rng.standard_normal((N_VOCAB, N_EMBD)) * 0.5}
    weights["output_norm.weight"] = np.ones(N_EMBD)
    if untied:
        weights["output.weight"] = rng.standard_normal((N_VOCAB, N_EMBD)) * 0.5
    for i in range(N_LAYER):
        weights[f"blk.{i}.attn_norm.weight"] = 1 + 0.1 * rng.standard_normal(N_EMBD)
        weights[f"blk.{i}.ffn_norm.weight"] = 1 + 0.1 * rng.standard_normal(N_EMBD)
        for module in MODULES:
            weights[f"blk.{i}.{GGUF_STEM[module]}.weight"] = rng.standard_normal(_shape(module)) * 0.2
    weights = {k: v.astype(np.float32) for k, v in weights.items()}

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_vocab_size(N_VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types([int(TokenType.CONTROL if t in SPECIALS else TokenType.NORMAL) for t in TOKENS])
    if scores:
        writer.add_token_scores([float(-i) for i in range(N_VOCAB)])
    writer.add_token_merges(["r f"])
    writer.add_bos_token_id(TOKENS.index("<s>"))
    writer.add_eos_token_id(TOKENS.index("</s>"))
    writer.add_chat_template(TEMPLATE)
    for name, w in weights.items():
        if w.ndim == 2 and qtype != Q.F32:
            writer.add_tensor(name, _store(w, qtype, rng), raw_dtype=qtype)
        else:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    stored = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in gguf.GGUFReader(path).tensors}
    return TinyModel(
        path, {k: np.asarray(v, dtype=np.float32).reshape(weights[k].shape) for k, v in stored.items()}
    )


def _store(w: np.ndarray, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    if qtype == Q.IQ4_NL:  # numpy cannot quantize it: random blocks with a sane fp16 scale
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, (w.size // block_size, type_size), dtype=np.uint8)
        blocks[:, :2] = np.full((len(blocks), 1), 0.01, dtype=np.float16).view(np.uint8)
        return blocks.reshape(w.shape[0], -1)
    return gguf.quants.quantize(w, qtype)


def make_adapter(
    path: Path,
    base: Path | None = None,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    output: bool = False,
    slot: str | None = None,
    seed: int = 1,
    **meta: object,
) -> tuple[np.ndarray, np.ndarray | None, list[LoraPair]]:
    """A random adapter over every module of every layer of the tiny model."""
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal(N_EMBD).astype(np.float32)
    out_row = rng.standard_normal(N_EMBD).astype(np.float32) if output else None
    pairs = [
        LoraPair(
            i,
            m,
            rng.standard_normal((rank, _shape(m)[1])).astype(np.float32) * 0.3,
            rng.standard_normal((_shape(m)[0], rank)).astype(np.float32) * 0.3,
        )
        for i in range(N_LAYER)
        for m in MODULES
    ]
    fields: dict[str, object] = {
        "base_model": "tiny",
        "lora_alpha": alpha,
        "lora_rank": rank,
        "rf_threshold": 0.25,
        "slot": slot,
    }
    if base is not None:
        fields["base_sha256"] = file_sha256(base)
    fields.update(meta)
    save_adapter(path, AdapterMetadata.model_validate(fields), embedding, out_row, pairs)
    return embedding, out_row, pairs


def _permute_reference(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order, written as an index formula: out[h*d + 2j + s] = in[h*d + s*d/2 + j]."""
    d = rows.shape[0] // n_head
    out = np.empty_like(rows)
    for h in range(n_head):
        for j in range(d // 2):
            for s in range(2):
                out[h * d + 2 * j + s] = rows[h * d + s * (d // 2) + j]
    return out


def _expected_delta(pair: LoraPair, scale: float) -> np.ndarray:
    b = pair.b
    if pair.module == "q_proj":
        b = _permute_reference(b, N_HEAD)
    elif pair.module == "k_proj":
        b = _permute_reference(b, N_HEAD_KV)
    return scale * (b.astype(np.float64) @ pair.a.astype(np.float64))


def _tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _float(t: gguf.ReaderTensor) -> np.ndarray:
    shape = tuple(int(d) for d in reversed(t.shape))
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)


def _field(path: Path, key: str) -> object:
    field = gguf.GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


@pytest.fixture
def tiny(tmp_path: Path) -> TinyModel:
    return build_tiny(tmp_path / "base.gguf")


@pytest.fixture
def adapter(tmp_path: Path, tiny: TinyModel) -> Path:
    path = tmp_path / "adapter.safetensors"
    make_adapter(path, tiny.path)
    return path


def _no_leftovers(folder: Path) -> None:
    assert not list(folder.glob(".*.part"))


# --- numerics ---------------------------------------------------------------------------------


def test_permutation_matches_llama_cpp_row_order() -> None:
    rows = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    for n_head in (1, 2, 4):
        np.testing.assert_array_equal(permute_rope_rows(rows, n_head), _permute_reference(rows, n_head))


def test_f32_merge_is_exact_and_everything_else_is_kept(tmp_path: Path, tiny: TinyModel) -> None:
    adapter_path = tmp_path / "adapter.safetensors"
    embedding, _, pairs = make_adapter(adapter_path, tiny.path)
    out = tmp_path / "out.gguf"
    seen: list[tuple[str, int, int]] = []
    report = patch_gguf(tiny.path, adapter_path, out, progress=lambda *args: seen.append(args))

    base, patched = _tensors(tiny.path), _tensors(out)
    assert list(base) == list(patched)
    merged = set()
    for pair in pairs:
        name = f"blk.{pair.layer}.{GGUF_STEM[pair.module]}.weight"
        expected = tiny.weights[name] + _expected_delta(pair, 8.0 / 4)
        assert patched[name].tensor_type == Q.F32
        assert np.abs(_float(patched[name]) - expected).max() < 1e-5
        merged.add(name)
    for name in set(base) - merged - {"token_embd.weight"}:
        assert patched[name].tensor_type == base[name].tensor_type
        assert bytes(patched[name].data) == bytes(base[name].data)
    table = _float(patched["token_embd.weight"])
    assert table.shape == (N_VOCAB + 1, N_EMBD)
    assert bytes(table[:-1]) == bytes(tiny.weights["token_embd.weight"])
    np.testing.assert_array_equal(table[-1], embedding)

    assert (
        report.rf_token_id == N_VOCAB and report.n_vocab == N_VOCAB + 1 and report.base_sha256 == "verified"
    )
    assert not any(change.converted for change in report.changes)
    assert seen[-1][1] == seen[-1][2] and [s[1] for s in seen] == sorted(s[1] for s in seen)
    _no_leftovers(tmp_path)


def test_vocab_and_metadata(tiny: TinyModel, adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    patch_gguf(tiny.path, adapter, out)
    tokens = _field(out, "tokenizer.ggml.tokens")
    types = _field(out, "tokenizer.ggml.token_type")
    scores = _field(out, "tokenizer.ggml.scores")
    assert isinstance(tokens, list) and isinstance(types, list) and isinstance(scores, list)
    assert tokens == [*TOKENS, "<rf>"]
    assert types[-1] == TokenType.CONTROL and len(types) == N_VOCAB + 1
    assert scores[:-1] == [float(-i) for i in range(N_VOCAB)] and scores[-1] == -1000.0
    assert _field(out, "llama.vocab_size") == N_VOCAB + 1
    assert _field(out, "rf.token") == N_VOCAB
    assert _field(out, "rf.threshold") == pytest.approx(0.25)
    assert _field(out, "rf.adapter_sha256") == file_sha256(adapter)
    assert _field(out, "rf.base_model") == "tiny"
    assert _field(out, "rf.format") == "rfsdk-adapter/1"
    assert gguf.GGUFReader(out).get_field("rf.token").types == [GGUFValueType.UINT32]
    assert gguf.GGUFReader(out).get_field("rf.threshold").types == [GGUFValueType.FLOAT32]
    changed = {
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.scores",
        "llama.vocab_size",
    }
    before, after = gguf.GGUFReader(tiny.path).fields, gguf.GGUFReader(out).fields
    for key, field in before.items():
        if key not in changed and not key.startswith("GGUF."):
            assert [bytes(p) for p in after[key].parts] == [bytes(p) for p in field.parts], key
    assert _field(out, "tokenizer.chat_template") == TEMPLATE


def _assert_within_q8_0_step(stored: np.ndarray, expected: np.ndarray) -> None:
    amax = np.abs(expected).reshape(-1, 32).max(axis=1)
    error = np.abs(stored - expected).reshape(-1, 32).max(axis=1)
    assert (error <= amax / 127 / 2 + amax * 2**-10).all()  # half a step + fp16 scale rounding


def test_q8_0_merge_within_quantization_error(tmp_path: Path) -> None:
    tiny = build_tiny(tmp_path / "base.gguf", qtype=Q.Q8_0)
    adapter_path = tmp_path / "adapter.safetensors"
    embedding, _, pairs = make_adapter(adapter_path, tiny.path)
    out = tmp_path / "out.gguf"
    patch_gguf(tiny.path, adapter_path, out)
    patched = _tensors(out)
    for pair in pairs:
        name = f"blk.{pair.layer}.{GGUF_STEM[pair.module]}.weight"
        expected = tiny.weights[name] + _expected_delta(pair, 2.0)
        assert patched[name].tensor_type == Q.Q8_0
        _assert_within_q8_0_step(_float(patched[name]), expected)
    table = patched["token_embd.weight"]
    assert table.tensor_type == Q.Q8_0
    assert bytes(table.data[:-1]) == bytes(_tensors(tiny.path)["token_embd.weight"].data)
    assert np.abs(_float(table)[-1] - embedding).max() <= np.abs(embedding).max() / 127


def test_coarse_base_merges_into_q8_0_so_a_small_lora_survives(tmp_path: Path) -> None:
    tiny = build_tiny(tmp_path / "base.gguf", qtype=Q.Q4_1)
    adapter_path = tmp_path / "adapter.safetensors"
    _, _, pairs = make_adapter(adapter_path, tiny.path, alpha=0.08)  # scale 0.02: a delta far below a Q4_1 step

    def merge_error(merged_type: str) -> tuple[set[Q], float]:
        out = tmp_path / f"merged-{merged_type}.gguf"
        patch_gguf(tiny.path, adapter_path, out, merged_type=merged_type)  # type: ignore[arg-type]
        patched = _tensors(out)
        names = [f"blk.{pair.layer}.{GGUF_STEM[pair.module]}.weight" for pair in pairs]
        deltas = [_expected_delta(pair, 0.02) for pair in pairs]
        errors = [_float(patched[n]) - tiny.weights[n] - d for n, d in zip(names, deltas)]
        relative = float(np.sqrt(sum((e**2).sum() for e in errors) / sum((d**2).sum() for d in deltas)))
        assert patched["token_embd.weight"].tensor_type == Q.Q4_1  # only merged tensors change type
        return {patched[n].tensor_type for n in names}, relative

    auto_types, auto_error = merge_error("auto")
    base_types, base_error = merge_error("base")
    assert auto_types == {Q.Q8_0} and base_types == {Q.Q4_1}
    assert auto_error < 0.5 < base_error  # Q4_1 re-rounding loses more than the whole delta is worth

    result = CliRunner().invoke(main, ["patch", str(tiny.path), str(adapter_path), str(tmp_path / "cli.gguf")])
    assert result.exit_code == 0, result.output
    assert "re-stored as Q8_0 so that the merged LoRA survives" in " ".join(result.output.split())
    kept = CliRunner().invoke(
        main, ["patch", "--merged-type", "base", "-q", str(tiny.path), str(adapter_path), str(tmp_path / "kept.gguf")]
    )
    assert kept.exit_code == 0 and "re-stored" not in kept.output


def test_lora_strength_scales_the_merged_delta(tmp_path: Path, tiny: TinyModel) -> None:
    adapter_path = tmp_path / "adapter.safetensors"
    _, _, pairs = make_adapter(adapter_path, tiny.path, lora_strength=0.25)
    assert load_adapter(adapter_path).metadata.lora_scale == pytest.approx(0.25 * 8.0 / 4)
    out = tmp_path / "out.gguf"
    patch_gguf(tiny.path, adapter_path, out)
    patched = _tensors(out)
    for pair in pairs:
        name = f"blk.{pair.layer}.{GGUF_STEM[pair.module]}.weight"
        np.testing.assert_allclose(
            _float(patched[name]), tiny.weights[name] + _expected_delta(pair, 0.25 * 8.0 / 4), atol=1e-6
        )


def test_lora_weights_scale_each_pair_and_weight_0_keeps_the_base_tensor(tmp_path: Path, tiny: TinyModel) -> None:
    adapter_path = tmp_path / "adapter.safetensors"
    embedding, _, pairs = make_adapter(adapter_path, tiny.path, lora_strength=0.5)
    metadata = load_adapter(adapter_path).metadata
    weights = {(0, "q_proj"): 0.0, (1, "down_proj"): 0.25}
    weighted = [replace(p, weight=weights.get((p.layer, p.module), 1.0)) for p in pairs]
    weighted_path = tmp_path / "weighted.safetensors"
    save_adapter(weighted_path, metadata, embedding, None, weighted)
    loaded = load_adapter(weighted_path)
    assert {(p.layer, p.module): p.weight for p in loaded.loras if p.weight != 1.0} == weights
    assert load_adapter(adapter_path).loras[0].weight == 1.0  # no weights tensor: 1 everywhere
    assert "rf.lora_weights" not in read_safetensors(adapter_path)[0]

    report = patch_gguf(tiny.path, weighted_path, tmp_path / "out.gguf", merged_type="F32")
    patched, base = _tensors(tmp_path / "out.gguf"), _tensors(tiny.path)
    assert "blk.0.attn_q.weight" not in {c.name for c in report.changes}
    assert patched["blk.0.attn_q.weight"].tensor_type == base["blk.0.attn_q.weight"].tensor_type
    assert np.array_equal(np.asarray(patched["blk.0.attn_q.weight"].data), np.asarray(base["blk.0.attn_q.weight"].data))
    for pair in loaded.loras:
        if pair.weight:
            name = f"blk.{pair.layer}.{GGUF_STEM[pair.module]}.weight"
            expected = tiny.weights[name] + _expected_delta(pair, pair.weight * 0.5 * 8.0 / 4)
            np.testing.assert_allclose(_float(patched[name]), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones((1, 7), np.float32), r"shape \[1, 7\].*at least 2"),
        (np.ones((2, 6), np.float32), r"shape \[2, 6\]"),
        (np.full((2, 7), -0.5, np.float32), "negative, NaN or infinite"),
        (np.full((2, 7), np.nan, np.float32), "negative, NaN or infinite"),
    ],
)
def test_bad_lora_weights_are_refused(tmp_path: Path, adapter: Path, weights: np.ndarray, message: str) -> None:
    bad = _rewrite_adapter(adapter, tmp_path / "bad.safetensors", replace={"rf.lora_weights": weights})
    with pytest.raises(ConversionError, match=message):
        load_adapter(bad)


def test_untied_output_gets_the_output_row(tmp_path: Path) -> None:
    tiny = build_tiny(tmp_path / "base.gguf", untied=True, scores=False)
    adapter_path = tmp_path / "adapter.safetensors"
    embedding, out_row, _ = make_adapter(adapter_path, tiny.path, output=True)
    out = tmp_path / "out.gguf"
    patch_gguf(tiny.path, adapter_path, out)
    patched = _tensors(out)
    np.testing.assert_array_equal(_float(patched["token_embd.weight"])[-1], embedding)
    np.testing.assert_array_equal(_float(patched["output.weight"])[-1], out_row)
    assert _float(patched["output.weight"]).shape == (N_VOCAB + 1, N_EMBD)
    assert _field(out, "tokenizer.ggml.scores") is None


def test_slot_takeover_keeps_shapes(tmp_path: Path, tiny: TinyModel) -> None:
    adapter_path = tmp_path / "adapter.safetensors"
    embedding, _, _ = make_adapter(adapter_path, tiny.path, slot="<|reserved_0|>")
    out = tmp_path / "out.gguf"
    report = patch_gguf(tiny.path, adapter_path, out)
    slot_id = TOKENS.index("<|reserved_0|>")
    assert report.rf_token_id == slot_id and report.n_vocab == N_VOCAB
    tokens = _field(out, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and tokens[slot_id] == "<rf>" and len(tokens) == N_VOCAB
    table = _float(_tensors(out)["token_embd.weight"])
    np.testing.assert_array_equal(table[slot_id], embedding)
    others = np.delete(table, slot_id, axis=0)
    np.testing.assert_array_equal(others, np.delete(tiny.weights["token_embd.weight"], slot_id, axis=0))
    assert _field(out, "rf.token") == slot_id and _field(out, "llama.vocab_size") == N_VOCAB


def test_type_numpy_cannot_encode_is_stored_as_f16_and_reported(tmp_path: Path) -> None:
    tiny = build_tiny(tmp_path / "base.gguf", qtype=Q.IQ4_NL)
    adapter_path = tmp_path / "adapter.safetensors"
    embedding, _, pairs = make_adapter(adapter_path, tiny.path)
    out = tmp_path / "out.gguf"
    report = patch_gguf(tiny.path, adapter_path, out)
    converted = {c.name for c in report.changes if c.converted}
    assert "token_embd.weight" in converted and len(converted) == 1 + len(pairs)
    patched = _tensors(out)
    assert patched["token_embd.weight"].tensor_type == Q.F16
    np.testing.assert_allclose(_float(patched["token_embd.weight"])[-1], embedding, atol=2e-3)
    pair = pairs[0]
    name = f"blk.{pair.layer}.{GGUF_STEM[pair.module]}.weight"
    assert patched[name].tensor_type == Q.Q8_0  # merged: IQ4_NL is under 8 bits, so "auto" picks Q8_0
    expected = tiny.weights[name] + _expected_delta(pair, 2.0)
    _assert_within_q8_0_step(_float(patched[name]), expected)

    result = CliRunner().invoke(
        main, ["patch", str(tiny.path), str(adapter_path), str(tmp_path / "cli.gguf")]
    )
    assert result.exit_code == 0, result.output
    assert "re-stored as F16" in result.output and "IQ4_NL" in result.output


# --- refusals -----------------------------------------------------------------------------------


def _rewrite_adapter(
    src: Path,
    dst: Path,
    *,
    drop: str | None = None,
    rename: tuple[str, str] | None = None,
    replace: dict[str, np.ndarray] | None = None,
    meta: dict[str, str | None] | None = None,
) -> Path:
    """A copy of adapter ``src`` with one thing changed."""
    tensors, header = read_safetensors(src)
    tensors = {k: np.array(v) for k, v in tensors.items() if k != drop}
    if rename is not None:
        tensors[rename[1]] = tensors.pop(rename[0])
    tensors.update(replace or {})
    header = {**header, **(meta or {})}
    write_safetensors(dst, tensors, {k: v for k, v in header.items() if v is not None})
    return dst


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
Q_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"meta": {"format": "other/2"}}, ConversionError, "not an rfsdk adapter"),
        ({"meta": {"format": None}}, ConversionError, "has no 'format' metadata"),
        ({"meta": {"lora_rank": None}}, ConversionError, "missing required key 'lora_rank'"),
        ({"meta": {"rf_threshold": "high"}}, ConversionError, "rf_threshold = 'high'"),
        ({"drop": "rf.embedding"}, ConversionError, "no 'rf.embedding' tensor"),
        ({"replace": {"rf.embedding": np.zeros(16, np.float32)}}, ConversionError, "n_embd mismatch"),
        ({"replace": {Q_A: np.zeros((4, 16), np.float32)}}, ConversionError, "LoRA shape mismatch"),
        ({"replace": {Q_B: np.zeros((32, 3), np.float32)}}, ConversionError, "LoRA shape mismatch"),
        ({"drop": Q_B}, ConversionError, "without its lora_B"),
        (
            {"rename": (Q_A, Q_A.replace("layers.0", "layers.7")), "drop": Q_B},
            ConversionError,
            "without its lora_B",
        ),
        (
            {
                "replace": {
                    Q_A.replace("layers.0", "layers.7"): np.zeros((4, 32), np.float32),
                    Q_B.replace("layers.0", "layers.7"): np.zeros((32, 4), np.float32),
                }
            },
            ConversionError,
            "only 2 layers",
        ),
        (
            {"replace": {Q_A.replace("q_proj", "qkv_proj"): np.zeros((4, 32), np.float32)}},
            ConversionError,
            "unknown tensor",
        ),
        ({"replace": {"lm_head.weight": np.zeros((4, 32), np.float32)}}, ConversionError, "unknown tensor"),
        ({"replace": {"rf.output": np.zeros(32, np.float32)}}, ConversionError, "ties its output"),
        ({"meta": {"base_sha256": "0" * 64}}, ConversionError, "pass --force to patch anyway"),
        ({"meta": {"slot": "<|missing|>"}}, ConversionError, "not in the base model's vocabulary"),
        ({"meta": {"slot": "rf"}}, ConversionError, "NORMAL token"),
        ({"meta": {"rf_token": "<s>"}}, ConversionError, "already has a '<s>' token"),
    ],
)
def test_bad_adapters_are_refused(
    tmp_path: Path, tiny: TinyModel, adapter: Path, change: dict, error: type[Exception], message: str
) -> None:
    bad = _rewrite_adapter(adapter, tmp_path / "bad.safetensors", **change)
    out = tmp_path / "out.gguf"
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        patch_gguf(tiny.path, bad, out)
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_sha_mismatch_is_accepted_with_force(tmp_path: Path, tiny: TinyModel, adapter: Path) -> None:
    bad = _rewrite_adapter(adapter, tmp_path / "bad.safetensors", meta={"base_sha256": "0" * 64})
    report = patch_gguf(tiny.path, bad, tmp_path / "out.gguf", force=True)
    assert report.base_sha256 == "mismatch ignored"


def test_untied_base_needs_an_output_row(tmp_path: Path, adapter: Path) -> None:
    base = build_tiny(tmp_path / "untied.gguf", untied=True).path
    with pytest.raises(ConversionError, match=r"has no rf\.output row"):
        patch_gguf(base, adapter, tmp_path / "out.gguf", force=True)  # force: the adapter is for the tied base


def test_patching_twice_is_refused(tmp_path: Path, tiny: TinyModel, adapter: Path) -> None:
    once = tmp_path / "once.gguf"
    patch_gguf(tiny.path, adapter, once)
    with pytest.raises(ConversionError, match="already has"):
        patch_gguf(once, adapter, tmp_path / "twice.gguf", force=True)


def test_bad_base_files(tmp_path: Path, tiny: TinyModel, adapter: Path) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(ModelNotFoundError, match="not found"):
        patch_gguf(tmp_path / "nope.gguf", adapter, out)
    text = tmp_path / "text.gguf"
    text.write_text("hello, I am not a model\n")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        patch_gguf(text, adapter, out)
    data = tiny.path.read_bytes()
    for cut in (len(data) - 100, 2000, 30):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="truncated"):
            patch_gguf(truncated, adapter, out)
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_bad_adapter_files(tmp_path: Path, tiny: TinyModel) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(ModelNotFoundError, match="adapter file not found"):
        patch_gguf(tiny.path, tmp_path / "nope.safetensors", out)
    junk = tmp_path / "junk.safetensors"
    for content in (
        b"",
        b"short",
        b"\xff" * 64,
        (12).to_bytes(8, "little") + b"not json!!!!",
        tiny.path.read_bytes(),
    ):
        junk.write_bytes(content)
        with pytest.raises(ConversionError, match="not a safetensors file"):
            patch_gguf(tiny.path, junk, out)
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    junk.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        patch_gguf(tiny.path, junk, out)
    assert not out.exists()


def test_out_paths(tmp_path: Path, tiny: TinyModel, adapter: Path) -> None:
    with pytest.raises(ConversionError, match="is the base model"):
        patch_gguf(tiny.path, adapter, tiny.path, force=True)
    with pytest.raises(ConversionError, match="is the base model"):
        patch_gguf(tiny.path, adapter, tmp_path / "." / "base.gguf", force=True)
    with pytest.raises(ConversionError, match="is the adapter"):
        patch_gguf(tiny.path, adapter, adapter, force=True)
    with pytest.raises(ConversionError, match="does not exist"):
        patch_gguf(tiny.path, adapter, tmp_path / "no" / "out.gguf")
    out = tmp_path / "out.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(ConversionError, match="already exists"):
        patch_gguf(tiny.path, adapter, out)
    assert out.read_bytes() == b"precious"
    patch_gguf(tiny.path, adapter, out, force=True)
    assert out.read_bytes()[:4] == b"GGUF"
    _no_leftovers(tmp_path)


def test_adapter_round_trip(tmp_path: Path, adapter: Path) -> None:
    loaded = load_adapter(adapter)
    assert loaded.metadata.lora_scale == 2.0 and loaded.metadata.rf_token == "<rf>"
    assert len(loaded.loras) == N_LAYER * len(MODULES) and loaded.output is None
    assert loaded.sha256 == file_sha256(adapter)
    half = _rewrite_adapter(
        adapter, tmp_path / "f16.safetensors", replace={"rf.embedding": loaded.embedding.astype(np.float16)}
    )
    np.testing.assert_allclose(load_adapter(half).embedding, loaded.embedding, atol=1e-2)
    as_text = str(tmp_path / "text-path.safetensors")  # plain string paths work too
    save_adapter(as_text, loaded.metadata, loaded.embedding, loaded.output, loaded.loras)
    assert load_adapter(as_text).metadata == loaded.metadata


def test_bf16_tensors_are_widened(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 0.15625], np.float32)
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(
        len(header).to_bytes(8, "little") + header + (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    )
    tensors, metadata = read_safetensors(path)
    np.testing.assert_array_equal(tensors["x"], values)
    assert tensors["x"].dtype == np.float32 and metadata == {}


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_patch(tmp_path: Path, tiny: TinyModel, adapter: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out.gguf"
    result = runner.invoke(main, ["patch", str(tiny.path), str(adapter), str(out)])
    assert result.exit_code == 0, result.output
    assert f"CONTROL token {N_VOCAB}" in result.stdout and "merged LoRA into 14 tensor(s)" in result.stdout
    assert "base sha256: verified" in result.stdout

    again = runner.invoke(main, ["patch", str(tiny.path), str(adapter), str(out)])
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output

    quiet = runner.invoke(main, ["patch", "-q", "--force", str(tiny.path), str(adapter), str(out)])
    assert quiet.exit_code == 0 and quiet.output == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["patch", "{tmp}/missing.gguf", "{adapter}", "{tmp}/o.gguf"], "GGUF file not found"),
        (["patch", "{adapter}", "{adapter}", "{tmp}/o.gguf"], "not a GGUF file"),
        (["patch", "{base}", "{base}", "{tmp}/o.gguf"], "not a safetensors file"),
        (["patch", "{base}", "{tmp}", "{tmp}/o.gguf"], "is not a file"),
        (["patch", "{base}", "{adapter}", "{base}"], "never overwrites its inputs"),
        (["patch", "{base}", "{adapter}", "{tmp}"], "is a directory"),
    ],
)
def test_cli_patch_errors(
    tmp_path: Path, tiny: TinyModel, adapter: Path, args: list[str], message: str
) -> None:
    argv = [a.format(tmp=tmp_path, base=tiny.path, adapter=adapter) for a in args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1
    assert message in result.output and "Error:" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


# --- llama.cpp --------------------------------------------------------------------------------------


def test_llama_cpp_loads_the_patched_model(tmp_path: Path, tiny: TinyModel, adapter: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    out = tmp_path / "out.gguf"
    patch_gguf(tiny.path, adapter, out)
    # logits_all: without it llama-cpp-python (0.3.36) keeps no logits in `scores`
    llm = llama_cpp.Llama(str(out), n_ctx=32, n_threads=1, logits_all=True, verbose=False)
    assert llm.n_vocab() == N_VOCAB + 1
    assert llm.tokenize(b"<rf>", add_bos=False, special=True) == [N_VOCAB]
    as_text = llm.tokenize(b"<rf>", add_bos=False, special=False)
    assert N_VOCAB not in as_text and len(as_text) > 1
    llm.eval(llm.tokenize(b"hello <rf>", add_bos=False, special=True))
    last = np.asarray(llm.scores[llm.n_tokens - 1])
    assert np.isfinite(last).all() and last.std() > 0
