"""rf-train on a user's own model: tiny random Llama, Qwen2 and Llama-3-style (reserved tokens) checkpoints.

Each wrong use of the README's commands is a clear error (exit 1, one line, nothing written),
an adapter is never merged into or checked against the bundled default base silently, and
the metadata says what ran: no threshold when nothing was calibrated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")

from test_convert_hf import CASES, build_checkpoint  # noqa: E402

from rfsdk import GuardedChat  # noqa: E402
from rfsdk.convert.adapter import load_adapter  # noqa: E402
from rfsdk.convert.hf import convert_hf  # noqa: E402
from rfsdk.train.base import base_sha256  # noqa: E402
from rfsdk.cli.train import main  # noqa: E402

RESERVED = "<|reserved_special_token_0|>"
FIT = ["--steps", "2", "--batch-size", "2", "--max-len", "200", "--threads", "1"]


def _llama3_style(folder: Path) -> Path:
    """A Llama-3-style checkpoint (llama-bpe pre-tokenizer, untied, padded vocabulary) with a reserved token."""
    src = build_checkpoint(folder / "plain", CASES["llama-untied-llama3"], with_rf=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    tokenizer.add_special_tokens({"additional_special_tokens": [RESERVED]})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    shutil.rmtree(src)
    return folder / "hf"


def _fit(base: Path | str, out: Path, *extra: str):
    return CliRunner().invoke(main, ["fit", "--base", str(base), "--out", str(out), *FIT, *extra])


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for part in parts:
        assert part in lines[0], result.output


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RFSDK_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module", params=["qwen2-tied", "llama3-slot"])
def fitted(request, cache, tmp_path_factory):
    """A 2-step fit straight from an HF checkpoint folder: (folder, out, slot)."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "llama3-slot":
        base, slot = _llama3_style(folder), ["--slot", RESERVED]
    else:
        base, slot = build_checkpoint(folder / "hf", CASES[request.param], with_rf=False), []
    result = _fit(base, folder / "run", *slot)
    assert result.exit_code == 0, result.output
    return base, folder / "run", slot


def test_a_fit_from_a_folder_records_its_base_and_no_threshold(fitted):
    base, out, slot = fitted
    adapter = load_adapter(out / "adapter.safetensors")
    assert adapter.metadata.base_sha256 == base_sha256(base)
    assert adapter.metadata.rf_threshold is None  # never calibrated
    assert adapter.metadata.slot == (slot[1] if slot else None)
    fit = json.loads((out / "fit.json").read_text())
    assert fit["calibration"] is None and fit["options"]["onpolicy"] == 0 and fit["recipe"]["onpolicy_harmful"] == 0
    card = (out / "MODEL_CARD.md").read_text()
    assert "Not calibrated" in card and "| onpolicy | 0 |" in card and "| onpolicy_harmful | 0 |" in card
    assert "sha256 (of its config, weight and tokenizer files)" in card
    assert not (out / "model.gguf").exists()


def test_merge_needs_the_folder_it_was_trained_on_and_keeps_it_uncalibrated(fitted, tmp_path):
    base, out, _ = fitted
    adapter = out / "adapter.safetensors"
    defaulted = CliRunner().invoke(main, ["merge", str(adapter), str(tmp_path / "a")])
    _one_line_error(defaulted, "not the bundled default base", "pass the model it was trained on as --base")
    other = build_checkpoint(tmp_path / "other", CASES["llama-tied-smollm"], with_rf=False)
    wrong = CliRunner().invoke(main, ["merge", str(adapter), str(tmp_path / "b"), "--base", str(other)])
    _one_line_error(wrong, "trained on another base", "pass that base as --base")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # nothing written

    merged = CliRunner().invoke(main, ["merge", str(adapter), str(tmp_path / "merged"), "--base", str(base)])
    assert merged.exit_code == 0, merged.output
    assert not (tmp_path / "merged" / "rf_config.json").exists()
    report = convert_hf(tmp_path / "merged", tmp_path / "model.gguf", outtype="f32")
    assert report.threshold is None
    chat = GuardedChat(tmp_path / "model.gguf", n_ctx=256, n_threads=1)
    assert chat.calibrated_threshold is None and chat.flag_sampled  # the SDK knows it is uncalibrated


@pytest.mark.parametrize("command", ["tune", "refit-row"])
def test_tune_and_refit_row_ask_for_the_gguf_base(fitted, command, tmp_path):
    base, out, _ = fitted
    result = CliRunner().invoke(main, [command, str(out / "adapter.safetensors"), str(tmp_path / "o"), "--base", str(base)])
    _one_line_error(result, "needs the base as a .gguf file", f"rf-convert hf {base} base.gguf --no-rf")
    assert list(tmp_path.iterdir()) == []


def test_resuming_with_another_base_is_refused(fitted, tmp_path):
    _, out, slot = fitted
    other = build_checkpoint(tmp_path / "other", CASES["qwen2-untied"], with_rf=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = _fit(other, out, *slot)
    _one_line_error(result, "holds a run trained on another base", "Pass the same --base")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_base_without_a_chat_template_is_refused_up_front(cache, tmp_path):
    base = build_checkpoint(tmp_path / "hf", CASES["llama-tied-smollm"], with_rf=False)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    result = _fit(base, tmp_path / "run")
    _one_line_error(result, "has no chat template", "chat_template to tokenizer_config.json")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("slot", "message"), [
    ("ordinary", "is an ordinary token that text can produce"),
    ("<|im_end|>", "is the tokenizer's eos_token"),
    ("<no such token>", "is not a token of this tokenizer"),
])
def test_a_slot_it_cannot_take_over_is_refused_before_training(cache, tmp_path, slot, message):
    base = build_checkpoint(tmp_path / "hf", CASES["qwen2-tied"], with_rf=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    if slot == "ordinary":  # a token of ordinary text, as `--slot hello` names one
        slot = tokenizer.convert_ids_to_tokens(tokenizer.encode("hello", add_special_tokens=False)[0])
    result = _fit(base, tmp_path / "run", "--slot", slot)
    _one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_a_repo_id_is_found_in_the_hugging_face_cache_or_named_with_the_fix(cache, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from rfsdk.train.base import resolve_base

    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    result = _fit("my-org/my-model", tmp_path / "run")
    _one_line_error(result, "my-org/my-model is not in the local cache", "huggingface-cli download my-org/my-model")
    assert not (tmp_path / "run").exists()

    commit = "0" * 40
    snapshot = hub / "models--my-org--my-model" / "snapshots" / commit
    build_checkpoint(snapshot, CASES["qwen2-tied"], with_rf=False)
    (hub / "models--my-org--my-model" / "refs").mkdir()
    (hub / "models--my-org--my-model" / "refs" / "main").write_text(commit)
    assert resolve_base("my-org/my-model") == snapshot


def test_the_folder_checksum_covers_weights_and_tokenizer(tmp_path):
    base = build_checkpoint(tmp_path / "hf", CASES["qwen2-tied"], with_rf=False)
    first = base_sha256(base)
    (base / "README.md").write_text("notes")
    assert base_sha256(base) == first  # other files do not count
    config = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    assert base_sha256(base) != first


RECIPE_SMALL = [
    "--outtype", "f32", "--steps", "2", "--batch-size", "2", "--max-len", "200", "--onpolicy", "2", "--tune-pairs", "2",
    "--tune-steps", "1", "--profile", "uniform", "--max-kl", "100", "--refit-examples", "8", "--refit-onpolicy-benign", "2",
    "--eval-prompts", "4", "--eval-attack-prompts", "2", "--eval-samples", "1", "--eval-utility-prompts", "2",
    "--eval-chats", "1", "--threads", "1",
]


def test_the_recipe_runs_from_a_folder_to_an_evaluated_calibrated_gguf_and_resumes(cache, tmp_path):
    base = build_checkpoint(tmp_path / "hf", CASES["llama-tied-smollm"], with_rf=False)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))  # room for the eval prompts
    out = tmp_path / "runs" / "mine"
    command = ["recipe", "--base", str(base), "--out", str(out), *RECIPE_SMALL]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    for stage in ("convert-base", "data", "fit", "tune", "refit-row", "shrink", "export", "rf-eval"):
        assert f"[recipe] {stage}: " in result.output
    assert f"Next: rfchat {out / 'model.gguf'}" in result.output

    adapter = load_adapter(out / "adapter.safetensors")
    assert adapter.metadata.base_sha256 == base_sha256(out / "base.gguf")  # trained on the converted base
    refit = json.loads((out / "refit.refit.json").read_text())
    assert adapter.metadata.rf_threshold == refit["calibration"]["threshold"]
    chat = GuardedChat(out / "model.gguf", n_ctx=256, n_threads=1)
    assert chat.calibrated_threshold == pytest.approx(refit["calibration"]["threshold"], rel=1e-6)
    card = (out / "MODEL_CARD.md").read_text()
    assert "## LoRA strength (rf-train tune" in card and "## <rf> row re-fit" in card and "## Calibration (validation" in card
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["model"].endswith("model.gguf") and report["utility"] is not None  # measured against base.gguf

    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    for stage in ("convert-base", "fit", "tune", "refit-row", "shrink", "export", "rf-eval"):
        assert f"[recipe] {stage}: done" in again.output

    other = build_checkpoint(tmp_path / "other", CASES["qwen2-tied"], with_rf=False)
    refused = CliRunner().invoke(main, ["recipe", "--base", str(other), "--out", str(out), *RECIPE_SMALL])
    _one_line_error(refused, "holds a recipe run of another base", "another --out")


def test_merge_keeps_a_bfloat16_base_in_bfloat16_and_shards_it(cache, tmp_path):
    src = build_checkpoint(tmp_path / "plain", CASES["qwen2-tied"], with_rf=False)
    base = tmp_path / "bf16"
    transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(base)
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(base)
    assert _fit(base, tmp_path / "run").exit_code == 0
    merged = CliRunner().invoke(main, ["merge", str(tmp_path / "run" / "adapter.safetensors"), str(tmp_path / "merged"),
                                       "--base", str(base), "--max-shard-size", "100KB"])
    assert merged.exit_code == 0, merged.output
    from safetensors import safe_open

    shards = sorted((tmp_path / "merged").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "merged" / "model.safetensors.index.json").is_file()
    for shard in shards:
        with safe_open(shard, "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
    assert convert_hf(tmp_path / "merged", tmp_path / "model.gguf", outtype="f16").threshold is None
