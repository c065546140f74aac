"""rf-convert lora: an rfsdk adapter as a llama.cpp LoRA GGUF, loaded by llama.cpp on a base with <rf>.

The adapter is made by the training code (RfModel.prepare + save_adapter) on tiny random
checkpoints; the adapter GGUF on the base-plus-<rf> must give the logits of the merged model
that rf-convert patch writes. Needs torch, transformers and llama-cpp-python (skipped without).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rfsdk.convert import keys
from rfsdk.convert.adapter import load_adapter, save_adapter
from rfsdk.cli.convert import main
from rfsdk.convert.hf import convert_hf
from rfsdk.convert.lora_gguf import lora_to_gguf
from rfsdk.convert.patch import patch_gguf
from rfsdk.convert.reader import field_value, open_gguf
from rfsdk.train.strength_profiles import PROFILES

from rfsdk.errors import ConversionError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")
from test_convert_hf import CASES, build_checkpoint  # noqa: E402 - after the importorskips

IDS = [1, 5, 9, 17, 33, 65, 100, 7, 3, 250]


@pytest.fixture(scope="module", params=["llama-tied-smollm", "qwen2-untied"])
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base GGUF without <rf>, rfsdk adapter trained-looking) for one architecture."""
    from rfsdk.train.rf_model import RfModel

    folder = tmp_path_factory.mktemp(request.param)
    src = build_checkpoint(folder / "hf", CASES[request.param], with_rf=False)
    base = folder / "base.gguf"
    convert_hf(src, base, outtype="f32", require_rf=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    rf = RfModel.prepare(model, tokenizer, rank=4, alpha=8.0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.copy_(torch.randn(lora.lora_b.shape, generator=generator) * 0.2)
    adapter = folder / "adapter.safetensors"
    rf.save_adapter(adapter, base_model="tiny", threshold=0.3)
    return base, adapter


def _logits(model: Path, lora: Path | None = None) -> np.ndarray:
    llm = llama_cpp.Llama(
        str(model),
        lora_path=None if lora is None else str(lora),
        n_ctx=64,
        n_batch=64,
        logits_all=True,
        verbose=False,
        n_threads=2,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
    )
    llm.eval(IDS)
    return np.array(llm.scores[: len(IDS)], dtype=np.float32)


def test_lora_gguf_matches_merged_model(made: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = made
    out, rf_base, merged = tmp_path / "lora.gguf", tmp_path / "rf-base.gguf", tmp_path / "merged.gguf"
    result = CliRunner().invoke(main, ["lora", str(adapter), str(out), "--base", str(base), "--rf-base", str(rf_base)])
    assert result.exit_code == 0, result.output
    assert "LoRA not merged" in result.output and "lora_path=" in result.output

    reader = open_gguf(out)
    assert field_value(reader, "general.type") == "adapter"
    assert field_value(reader, "adapter.type") == "lora"
    assert field_value(reader, "adapter.lora.alpha") == pytest.approx(8.0)
    assert field_value(reader, "general.architecture") == field_value(open_gguf(base), "general.architecture")
    assert field_value(reader, keys.RF_ADAPTER_SHA256) == load_adapter(adapter).sha256
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b", "blk.1.ffn_down.weight.lora_b"} <= names
    assert len(names) == 2 * 7 * 2
    del reader
    assert field_value(open_gguf(rf_base), keys.RF_TOKEN) is not None

    patch_gguf(base, adapter, merged)
    with_lora, plain, want = _logits(rf_base, out), _logits(rf_base), _logits(merged)
    assert np.abs(with_lora - want).max() <= 1e-4
    assert np.abs(plain - want).max() > 1e-2  # the adapter really changes the logits

    # the base that now carries <rf> is accepted as --base (its <rf> row matches the adapter's)
    report = lora_to_gguf(adapter, tmp_path / "again.gguf", base=rf_base)
    assert report.rf_base is None and report.n_pairs == 14
    assert (tmp_path / "again.gguf").read_bytes() == out.read_bytes()


def _weighted(adapter: Path, out: Path, *, strength: float) -> Path:
    """``adapter`` at ``strength`` with the late-mlp profile's pair weights (attention in layer 0 off)."""
    rf = load_adapter(adapter)
    profile = PROFILES["late-mlp"]
    loras = [replace(p, weight=profile.weight(p, 2)) for p in rf.loras]
    save_adapter(out, rf.metadata.model_copy(update={"lora_strength": strength}), rf.embedding, rf.output, loras)
    return out


def test_weighted_lora_gguf_matches_the_weighted_merge(made: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = made
    weighted = _weighted(adapter, tmp_path / "weighted.safetensors", strength=1.0)
    report = lora_to_gguf(weighted, tmp_path / "lora.gguf", base=base, rf_base=tmp_path / "rf-base.gguf")
    assert report.n_pairs == 7 * 2 - 4  # the four attention pairs of layer 0 have weight 0
    patch_gguf(base, weighted, tmp_path / "merged.gguf")
    want = _logits(tmp_path / "merged.gguf")
    assert np.abs(_logits(tmp_path / "rf-base.gguf", tmp_path / "lora.gguf") - want).max() <= 1e-4
    patch_gguf(base, adapter, tmp_path / "unweighted.gguf")
    assert np.abs(_logits(tmp_path / "unweighted.gguf") - want).max() > 1e-2


def test_base_without_rf_is_refused(made: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = made
    out = tmp_path / "lora.gguf"
    result = CliRunner().invoke(main, ["lora", str(adapter), str(out), "--base", str(base)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {base} has no <rf> token, and a LoRA adapter cannot add one: <rf> is a new vocabulary row, "
        "which llama.cpp adapters cannot carry. Pass --rf-base RF_BASE.gguf to also write BASE plus the "
        "adapter's <rf> row (LoRA not merged) and use the adapter GGUF with that file, or pass a --base "
        "that already has <rf>.\n"
    )
    assert not out.exists()


def test_other_refusals(made: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = made
    rf_base = tmp_path / "rf-base.gguf"
    lora_to_gguf(adapter, tmp_path / "a.gguf", base=base, rf_base=rf_base)
    with pytest.raises(ConversionError, match=r"already has <rf> \(id \d+\); --rf-base is only for bases without it"):
        lora_to_gguf(adapter, tmp_path / "b.gguf", base=rf_base, rf_base=tmp_path / "c.gguf")

    rf = load_adapter(adapter)
    other = tmp_path / "other.safetensors"
    save_adapter(other, rf.metadata, rf.embedding + 1.0, rf.output, rf.loras)
    with pytest.raises(ConversionError, match=r"embedding row of .* differs from the adapter's"):
        lora_to_gguf(other, tmp_path / "d.gguf", base=rf_base)

    rows_only = tmp_path / "rows.safetensors"
    save_adapter(rows_only, rf.metadata, rf.embedding, rf.output)
    with pytest.raises(ConversionError, match=r"holds no LoRA tensors.*rf-convert patch"):
        lora_to_gguf(rows_only, tmp_path / "e.gguf", base=rf_base)
    switched_off = tmp_path / "off.safetensors"
    save_adapter(switched_off, rf.metadata, rf.embedding, rf.output, [replace(p, weight=0.0) for p in rf.loras])
    with pytest.raises(ConversionError, match=r"every LoRA pair at weight 0.*rf-convert patch"):
        lora_to_gguf(switched_off, tmp_path / "e.gguf", base=rf_base)
    assert not (tmp_path / "e.gguf").exists()

    with pytest.raises(ConversionError, match=r"already exists.*--force"):
        lora_to_gguf(adapter, tmp_path / "a.gguf", base=rf_base)


def test_merged_checkpoint_converts_to_the_patched_model(made: tuple[Path, Path], tmp_path: Path) -> None:
    import json

    from rfsdk.cli.train import main as train_main

    base, adapter = made
    half = _weighted(adapter, tmp_path / "half.safetensors", strength=0.5)
    folder = tmp_path / "merged-hf"
    result = CliRunner().invoke(train_main, ["merge", str(half), str(folder), "--base", str(base.parent / "hf")])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "rf_config.json").read_text()) == {"threshold": 0.3}
    hf_report = convert_hf(folder, tmp_path / "from-hf.gguf", outtype="f32")
    patched = patch_gguf(base, half, tmp_path / "patched.gguf")
    patch_gguf(base, adapter, tmp_path / "full.gguf")

    from_hf, want = _logits(tmp_path / "from-hf.gguf"), _logits(tmp_path / "patched.gguf")
    hf_id, patch_id = hf_report.rf_token_id, patched.rf_token_id
    assert hf_id is not None and hf_id <= patch_id  # a padded vocabulary gives <rf> a padding row's id
    others = [i for i in range(from_hf.shape[1]) if i != hf_id]
    assert np.abs(from_hf[:, others] - want[:, others]).max() <= 1e-4
    assert np.abs(from_hf[:, hf_id] - want[:, patch_id]).max() <= 1e-4
    assert np.abs(_logits(tmp_path / "full.gguf")[:, others] - want[:, others]).max() > 1e-2  # strength and weights applied

    again = CliRunner().invoke(train_main, ["merge", str(half), str(folder), "--base", str(base.parent / "hf")])
    assert again.exit_code == 1 and "is not empty" in again.output


RESERVED = "<|reserved_special_token_0|>"


def _slot_adapter(folder: Path, case: str, slot: str) -> tuple[Path, Path, Path, int]:
    """(HF base with RESERVED, its GGUF, an adapter trained-looking on ``slot``, the slot's id)."""
    from rfsdk.train.rf_model import RfModel

    src = build_checkpoint(folder / "plain", CASES[case], with_rf=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    tokenizer.add_special_tokens({"additional_special_tokens": [RESERVED]})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    hf = folder / "hf"
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    base = folder / "base.gguf"
    convert_hf(hf, base, outtype="f32", require_rf=False)

    rf = RfModel.prepare(model, tokenizer, rank=4, alpha=8.0, slot=slot)
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.copy_(torch.randn(lora.lora_b.shape, generator=torch.Generator().manual_seed(2)) * 0.2)
        rf.rows[0] += 0.5  # a trained row, not the slot token's own
    adapter = folder / "adapter.safetensors"
    rf.save_adapter(adapter, base_model="tiny", threshold=0.3, slot=slot)
    return hf, base, adapter, rf.rf_id


@pytest.mark.parametrize("case", ["llama-tied-smollm", "qwen2-untied"])
def test_a_slot_adapter_merges_with_its_slot_renamed(case: str, tmp_path: Path) -> None:
    """An adapter trained on a reserved token: the merged checkpoint calls that token <rf>, as rf-convert patch does."""
    from rfsdk.cli.train import main as train_main

    hf, base, adapter, slot_id = _slot_adapter(tmp_path, case, RESERVED)
    folder = tmp_path / "merged-hf"
    result = CliRunner().invoke(train_main, ["merge", str(adapter), str(folder), "--base", str(hf)])
    assert result.exit_code == 0, result.output
    assert f"<rf> is token {slot_id}" in result.output and RESERVED in result.output
    merged_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert merged_tokenizer.encode("<rf>", add_special_tokens=False) == [slot_id]
    assert RESERVED not in merged_tokenizer.get_vocab()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial folder left

    hf_report = convert_hf(folder, tmp_path / "from-hf.gguf", outtype="f32")
    patched = patch_gguf(base, adapter, tmp_path / "patched.gguf")
    assert hf_report.rf_token_id == patched.rf_token_id == slot_id
    from_hf, want = _logits(tmp_path / "from-hf.gguf"), _logits(tmp_path / "patched.gguf")
    assert np.abs(from_hf - want).max() <= 1e-4
    assert np.abs(_logits(base) - want).max() > 1e-2  # the adapter really changes the logits


def test_a_slot_on_the_eos_token_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from rfsdk.cli.train import main as train_main
    from rfsdk.train.rf_model import RfModel, RfTokenError

    hf, _, adapter, _ = _slot_adapter(tmp_path, "llama-tied-smollm", RESERVED)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    with pytest.raises(RfTokenError, match="is the tokenizer's eos_token"):
        RfModel.prepare(model, transformers.AutoTokenizer.from_pretrained(hf), slot="<|im_end|>")
    rf = load_adapter(adapter)  # an adapter that names the EOS token anyway
    eos = tmp_path / "eos.safetensors"
    save_adapter(eos, rf.metadata.model_copy(update={"slot": "<|im_end|>"}), rf.embedding, rf.output, rf.loras)
    folder = tmp_path / "merged-hf"
    result = CliRunner().invoke(train_main, ["merge", str(eos), str(folder), "--base", str(hf)])
    assert result.exit_code == 1 and "is the tokenizer's eos_token" in result.output
    assert not folder.exists()
