"""rf-train fit end to end on a tiny GGUF base: data, on-policy answers, training, export, calibration, card."""

import json

import pytest
from click.testing import CliRunner

from rfsdk import GuardedChat
from rfsdk.convert.adapter import file_sha256, load_adapter
from rfsdk.train.cli import main


def test_fit_writes_adapter_model_calibration_and_card(demo_model_no_rf_path, tmp_path, monkeypatch):
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = [
        "fit", "--base", str(demo_model_no_rf_path), "--out", str(out), "--steps", "2", "--batch-size", "2",
        "--onpolicy", "2", "--max-len", "64", "--threads", "1", "--after-kl-weight", "0.5",
        "--adversarial", "--adv-steps", "2",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {
        "adapter.safetensors", "model.gguf", "calibration.json", "fit.json", "MODEL_CARD.md", "train_log.jsonl",
    }
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2] and all("rf_adv" in entry for entry in logged)

    fit = json.loads((out / "fit.json").read_text())
    assert fit["base_sha256"] == file_sha256(demo_model_no_rf_path)
    assert fit["options"]["weights"] == {"rf": 1.0, "benign_kl": 1.0, "after_kl": 0.5}
    assert fit["options"]["adversarial"] == {"epsilon": 0.1, "steps": 2, "weight": 1.0}
    assert fit["steps_total"] == fit["steps_run_now"] == 2
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["target_fpr"] == 0.05 and calibration["validation"]["fpr"] <= 0.05
    assert calibration["n_harmful"] > 100 and calibration["n_benign"] > 100

    adapter = load_adapter(out / "adapter.safetensors")
    assert adapter.metadata.rf_threshold == calibration["threshold"]
    assert adapter.metadata.base_sha256 == fit["base_sha256"]
    chat = GuardedChat(out / "model.gguf", n_ctx=512)
    assert chat.threshold == pytest.approx(calibration["threshold"], rel=1e-6)  # stored as float32
    assert chat.rf_token_id is not None

    card = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Base", "## Recipe", "## Training data (train split only)", "## Calibration"):
        assert heading in card
    assert (tmp_path / "cache" / "onpolicy").is_dir()  # generated data goes to the cache, not the repo

    again = CliRunner().invoke(main, [*args[:5], "--steps", "3", *args[7:]])
    assert again.exit_code == 0, again.output
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # resumed from the step-2 checkpoint
    fit = json.loads((out / "fit.json").read_text())
    assert (fit["steps_total"], fit["steps_run_now"]) == (3, 1)
    assert "| steps in total (all invocations) | 3 |" in (out / "MODEL_CARD.md").read_text()


def test_shrink_halves_the_adapter(tmp_path):
    import numpy as np

    from rfsdk.convert.adapter import AdapterMetadata, LoraPair, save_adapter

    rng = np.random.default_rng(0)
    pairs = [LoraPair(0, "q_proj", rng.normal(size=(4, 512)).astype(np.float32), rng.normal(size=(512, 4)).astype(np.float32))]
    meta = AdapterMetadata(base_model="test", lora_alpha=8, lora_rank=4, rf_threshold=0.3)
    save_adapter(tmp_path / "a.safetensors", meta, rng.normal(size=512).astype(np.float32), None, pairs)
    result = CliRunner().invoke(main, ["shrink", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")])
    assert result.exit_code == 0, result.output
    small = load_adapter(tmp_path / "b.safetensors")
    assert small.metadata == meta
    assert np.allclose(small.loras[0].a, pairs[0].a, atol=1e-3) and np.array_equal(small.embedding, load_adapter(tmp_path / "a.safetensors").embedding)
    assert (tmp_path / "b.safetensors").stat().st_size < 0.6 * (tmp_path / "a.safetensors").stat().st_size
