"""rf-convert verify: a good conversion passes, a wrong pre-tokenizer or a missing <rf> fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rfsdk.cli.convert import main
from rfsdk.convert.hf import convert_hf
from rfsdk.convert.verify import default_tolerances, verify_gguf

from rfsdk.errors import ModelNotFoundError

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")
from test_convert_hf import CASES, build_checkpoint


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("verify") / "hf", CASES["llama-untied-llama3"])


def test_good_conversion_passes(llama3_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    convert_hf(llama3_dir, out, outtype="f32")
    result = CliRunner().invoke(main, ["verify", str(llama3_dir), str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("passed")
    assert "PASS  tokenization" in result.output and "PASS  <rf> round trip" in result.output

    prompts = tmp_path / "prompts.txt"
    prompts.write_text('How do I bake bread?\n"Two\\nlines"\n')
    result = CliRunner().invoke(main, ["verify", str(llama3_dir), str(out), "--json", "--prompts", str(prompts)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["mismatches"] == []
    assert report["logits"]["n_prompts"] == 2
    assert report["logits"]["max_abs_diff"] <= 1e-3
    assert report["logits"]["top1_agreement"] == 1.0
    assert report["rf"]["control"] and report["rf"]["gguf_id"] == report["rf"]["hf_id"]
    assert len(report["logits"]["rf_prob_hf"]) == 2


def test_wrong_pre_tokenizer_is_reported(llama3_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    convert_hf(llama3_dir, out, outtype="f16", tokenizer_pre="qwen2")  # splits digits one by one
    report = verify_gguf(llama3_dir, out, corpus=["Numbers 3 33 333 3333", "plain words"], prompts=["hi"])
    assert not report.passed
    assert [m.text for m in report.mismatches] == ["Numbers 3 33 333 3333"]
    assert [c.name for c in report.checks if not c.passed] == ["tokenization"]
    result = CliRunner().invoke(main, ["verify", str(llama3_dir), str(out)])
    assert result.exit_code == 1
    assert "FAIL  tokenization" in result.output and "mismatch 'Numbers" in result.output


def test_missing_rf_fails(tmp_path: Path) -> None:
    src = build_checkpoint(tmp_path / "plain", CASES["qwen2-tied"], with_rf=False)
    out = tmp_path / "m.gguf"
    convert_hf(src, out, outtype="f32", require_rf=False)
    report = verify_gguf(src, out, prompts=["hi"])
    assert [c.name for c in report.checks if not c.passed] == ["<rf> round trip"]
    with pytest.raises(ModelNotFoundError, match="checkpoint folder not found"):
        verify_gguf(tmp_path / "nope", out)


def test_default_tolerances() -> None:
    assert default_tolerances(0) == (1e-3, 1.0)  # ALL_F32
    assert default_tolerances(7) == (None, 0.99)  # MOSTLY_Q8_0
    assert default_tolerances(15) == (None, 0.9)  # MOSTLY_Q4_K_M
