"""rf-train fit end to end on a tiny GGUF base: data, on-policy answers, training, export, calibration, card."""

import json
import shutil

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rfsdk import GuardedChat
from rfsdk.demo_model import build_demo_model
from pydantic import ValidationError
from rfsdk.convert.adapter import LoraPair, file_sha256, load_adapter, save_adapter
from rfsdk.train.card import write_model_card
from rfsdk.train.precision import native_bf16
from rfsdk.cli.train import main
from rfsdk.train.strength_profiles import PROFILES, StrengthProfile
from rfsdk.train.tune import Tuning, best_profile


FIT_ARGS = [
    "--steps", "2", "--batch-size", "2", "--onpolicy", "2", "--max-len", "64", "--threads", "1",
    "--after-kl-weight", "0.5", "--benign-start-weight", "0.25", "--adversarial", "--adv-steps", "2",
]


@pytest.fixture(scope="module")
def fitted(demo_model_no_rf_path, tmp_path_factory):
    """A 2-step fit on the tiny base: (base, out folder, the fit command line); the cache stays set."""
    tmp_path = tmp_path_factory.mktemp("fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RFSDK_CACHE", str(tmp_path / "cache"))
        args = ["fit", "--base", str(demo_model_no_rf_path), "--out", str(tmp_path / "run"), *FIT_ARGS]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        yield demo_model_no_rf_path, tmp_path / "run", args


def test_fit_writes_adapter_model_calibration_and_card(fitted):
    demo_model_no_rf_path, out, args = fitted
    assert {p.name for p in out.iterdir()} >= {
        "adapter.safetensors", "model.gguf", "calibration.json", "fit.json", "MODEL_CARD.md", "train_log.jsonl",
    }
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2] and all({"rf_adv", "benign_start"} <= entry.keys() for entry in logged)

    fit = json.loads((out / "fit.json").read_text())
    assert fit["base_sha256"] == file_sha256(demo_model_no_rf_path)
    assert fit["options"]["weights"] == {"rf": 1.0, "benign_kl": 1.0, "after_kl": 0.5, "benign_start": 0.25}
    assert fit["options"]["adversarial"] == {"epsilon": 0.1, "steps": 2, "weight": 1.0}
    assert fit["options"]["base_pass"] == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")  # what ran, not "auto"
    assert fit["steps_total"] == fit["steps_run_now"] == 2
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["target_fpr"] == 0.05 and calibration["validation"]["fpr"] <= 0.05
    assert calibration["n_harmful"] > 100 and calibration["n_benign"] > 100
    assert calibration["near_duplicates_left_out"] > 0  # the validation split has reworded training prompts

    adapter = load_adapter(out / "adapter.safetensors")
    assert adapter.metadata.rf_threshold == calibration["threshold"]
    assert adapter.metadata.base_sha256 == fit["base_sha256"]
    chat = GuardedChat(out / "model.gguf", n_ctx=512)
    assert chat.threshold == pytest.approx(calibration["threshold"], rel=1e-6)  # stored as float32
    assert chat.rf_token_id is not None

    card = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Base", "## Recipe", "## Training data (train split only)", "## Calibration"):
        assert heading in card
    assert f"| left out as near duplicates of training prompts | {calibration['near_duplicates_left_out']} |" in card
    assert (out.parent / "cache" / "onpolicy").is_dir()  # generated data goes to the cache, not the repo

    again = CliRunner().invoke(main, [*args[:5], "--steps", "3", *args[7:]])
    assert again.exit_code == 0, again.output
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # resumed from the step-2 checkpoint
    fit = json.loads((out / "fit.json").read_text())
    assert (fit["steps_total"], fit["steps_run_now"]) == (3, 1)
    assert "| steps in total (all invocations) | 3 |" in (out / "MODEL_CARD.md").read_text()


def test_fit_refuses_an_fp32_base_pass_over_bf16_weights(demo_model_no_rf_path, tmp_path):
    args = ["fit", "--base", str(demo_model_no_rf_path), "--out", str(tmp_path / "run"), "--dtype", "bf16", "--base-pass", "fp32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--base-pass fp32" in result.output and "--dtype fp32" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_a_second_fit_with_the_same_seed_trains_the_same(fitted, tmp_path):
    _, out, args = fitted
    again = tmp_path / "again"
    result = CliRunner().invoke(main, [*args[:4], str(again), *args[5:]])
    assert result.exit_code == 0, result.output

    def first_two(folder):
        return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()][:2]

    # the same LoRA initialisation, examples and <rf> positions, so the same losses
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in first_two(again)] == [
        {k: v for k, v in e.items() if k != "seconds"} for e in first_two(out)
    ]


def test_fit_can_continue_a_trained_adapter(fitted, tmp_path):
    _, out, args = fitted
    trained = load_adapter(out / "adapter.safetensors")
    more = tmp_path / "more"
    still = ["--lr", "1e-30", "--rf-lr", "1e-30", "--steps", "1"]  # Adam steps of about 1e-30: nothing moves
    result = CliRunner().invoke(main, [*args[:4], str(more), *args[5:], *still, "--init-adapter", str(out / "adapter.safetensors")])
    assert result.exit_code == 0, result.output
    continued = load_adapter(more / "adapter.safetensors")
    same = lambda x, y: np.allclose(x, y, rtol=0, atol=1e-20)  # noqa: E731
    assert same(continued.embedding, trained.embedding)
    assert all(same(a.a, b.a) and same(a.b, b.b) for a, b in zip(continued.loras, trained.loras, strict=True))
    assert f"| started from the adapter (sha256) | {trained.sha256} |" in (more / "MODEL_CARD.md").read_text()

    elsewhere = tmp_path / "elsewhere.safetensors"
    meta = trained.metadata.model_copy(update={"base_sha256": "0" * 64})
    save_adapter(elsewhere, meta, trained.embedding, trained.output, trained.loras)
    refused = CliRunner().invoke(main, [*args[:4], str(tmp_path / "no"), *args[5:], "--init-adapter", str(elsewhere)])
    assert refused.exit_code == 1 and "trained on another base file" in refused.output and "--base" in refused.output


def test_shrink_halves_the_adapter(tmp_path):
    from rfsdk.convert.adapter import AdapterMetadata, LoraPair

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


def test_tune_picks_the_strongest_lora_within_the_kl_budget(fitted, tmp_path):
    base, out, _ = fitted
    adapter, tuned = out / "adapter.safetensors", tmp_path / "tuned.safetensors"
    command = ["tune", str(adapter), str(tuned), "--base", str(base), "--pairs", "3", "--steps", "2", "--threads", "1", "--profile", "uniform"]

    def tune(max_kl: float) -> dict:
        result = CliRunner().invoke(main, [*command, "--max-kl", repr(max_kl), "--force"])
        assert result.exit_code == 0, result.output
        return json.loads(tuned.with_suffix(".tune.json").read_text())

    full = tune(100.0)
    assert full["strength"] == 1.0 and [t["strength"] for t in full["tried"]] == [1.0]
    assert full["kl_nats_per_token"] > 0 and full["answer_pairs"] == 3

    budget = full["kl_nats_per_token"] / 2
    half = tune(budget)
    assert [t["strength"] for t in half["tried"]][:2] == [1.0, 0.5] and len(half["tried"]) == 3
    assert 0 < half["strength"] < 1 and half["kl_nats_per_token"] <= budget
    assert max(t["strength"] for t in half["tried"] if t["kl_nats_per_token"] <= budget) == half["strength"]
    metadata = load_adapter(tuned).metadata
    assert metadata.lora_strength == half["strength"]
    assert metadata.rf_threshold == half["calibration"]["threshold"]
    assert load_adapter(adapter).metadata.lora_strength == 1.0  # ADAPTER is kept as it was
    assert not list(tmp_path.glob(".rf-tune-*"))  # the working folder next to OUT is removed

    same = CliRunner().invoke(main, ["tune", str(adapter), str(adapter), "--base", str(base)])
    assert same.exit_code == 2 and "is ADAPTER; rfsdk never overwrites its inputs" in same.output

    fit = {**json.loads((out / "fit.json").read_text()), "tuning": half, "calibration": half["calibration"]}
    write_model_card(tmp_path / "card.md", fit)
    card = (tmp_path / "card.md").read_text()
    assert "## LoRA strength (rf-train tune, validation split)" in card and "profile 'uniform'" in card
    assert f"| uniform | {half['strength']:.4g} | {half['kl_nats_per_token']:.4f} | {half['calibration']['validation']['tpr']:.3f} |" in card


def test_tune_keeps_the_profile_with_the_best_validation_tpr(fitted, tmp_path):
    base, out, _ = fitted
    tuned = tmp_path / "tuned.safetensors"
    command = ["tune", str(out / "adapter.safetensors"), str(tuned), "--base", str(base), "--pairs", "3", "--steps", "1"]
    result = CliRunner().invoke(main, [*command, "--threads", "1", "--profile", "late-mlp", "--profile", "uniform", "--max-kl", "100"])
    assert result.exit_code == 0, result.output
    tuning = Tuning.model_validate_json(tuned.with_suffix(".tune.json").read_text())
    assert [p.profile.name for p in tuning.profiles] == ["late-mlp", "uniform"]
    assert all(p.strength == 1.0 and p.calibration.n_harmful > 0 for p in tuning.profiles)
    best = best_profile(tuning.profiles)
    assert tuning.profile == best.profile and tuning.calibration == best.calibration
    assert f"{best.profile.name}: strength 1.0000" in result.output

    rf = load_adapter(tuned)
    n_layers = max(p.layer for p in rf.loras) + 1
    assert [p.weight for p in rf.loras] == [best.profile.weight(p, n_layers) for p in rf.loras]
    assert rf.metadata.rf_threshold == best.calibration.threshold


def test_strength_profiles_weigh_modules_by_kind_and_layer_half():
    profile = PROFILES["late-mlp"]
    pair = lambda layer, module: LoraPair(layer, module, np.zeros((1, 1)), np.zeros((1, 1)))  # noqa: E731
    assert [profile.weight(pair(layer, "q_proj"), 30) for layer in (0, 14, 15, 29)] == [0.0, 0.0, 1 / 3, 1 / 3]
    assert [profile.weight(pair(layer, "down_proj"), 30) for layer in (0, 14, 15, 29)] == [0.5, 0.5, 1.0, 1.0]
    assert {PROFILES["uniform"].weight(pair(layer, m), 3) for layer in range(3) for m in ("o_proj", "up_proj")} == {1.0}
    with pytest.raises(ValidationError):
        StrengthProfile(name="bad", attention=(-1.0, 1.0), mlp=(1.0, 1.0))


def test_answer_kl_keeps_the_base_side_and_needs_the_base_only_once(fitted, tmp_path):
    from rfsdk.evaluation.utility import AnswerKL

    base, out, _ = fitted
    model = out / "model.gguf"
    pairs = [("how to bake bread", "Mix flour, water and yeast, then bake it."), ("hi", "Hello there friend!")]
    direct = AnswerKL(base, pairs, n_threads=1)(model)
    copy = tmp_path / "base.gguf"
    shutil.copyfile(base, copy)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "base-logprobs-0.npy").write_bytes(b"stale")  # a first call computes, never reads
    measure = AnswerKL(copy, pairs, keep_base_in=kept, n_threads=1)
    first = measure(model)
    copy.unlink()  # later models are compared without reading the base again
    assert measure(model) == first
    assert first[0] > 0 and first[1] == direct[1]
    assert first[0] == pytest.approx(direct[0], rel=1e-4)
    assert sorted(p.name for p in kept.iterdir()) == ["base-logprobs-0.npy", "base-logprobs-1.npy"]



def test_refit_row_changes_only_the_rf_row_and_recalibrates(fitted, tmp_path):
    base, out, _ = fitted
    adapter, refit = out / "adapter.safetensors", tmp_path / "refit.safetensors"
    command = ["refit-row", str(adapter), str(refit), "--base", str(base), "--examples", "12", "--onpolicy-benign", "4",
               "--onpolicy", "2", "--threads", "1"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    record = json.loads(refit.with_suffix(".refit.json").read_text())
    assert record["harmful_replies"] == record["benign_replies"] == 12 and record["onpolicy_benign_replies"] == 4
    before, after = load_adapter(adapter), load_adapter(refit)
    # The tiny base does not tie its embeddings: the output row moves, the input row stays.
    assert np.array_equal(after.embedding, before.embedding) and not np.array_equal(after.output, before.output)
    assert np.linalg.norm(after.output - before.output) == pytest.approx(record["row_change"], rel=1e-4)
    assert [(p.hf_prefix, p.weight) for p in after.loras] == [(p.hf_prefix, p.weight) for p in before.loras]
    assert all(np.array_equal(p.a, q.a) and np.array_equal(p.b, q.b) for p, q in zip(after.loras, before.loras))
    assert after.metadata.lora_strength == before.metadata.lora_strength
    assert after.metadata.rf_threshold == record["calibration"]["threshold"] and record["calibration"]["n_harmful"] > 100
    assert not list(tmp_path.glob(".rf-refit-*"))  # the working folder next to OUT is removed
    assert "on-policy benign replies: 4/4" in result.output
    again = CliRunner().invoke(main, [*command, "--force"])  # the model's own replies come from the cache now
    assert again.exit_code == 0 and "on-policy benign replies" not in again.output, again.output
    assert np.array_equal(load_adapter(refit).output, after.output)

    fit = {**json.loads((out / "fit.json").read_text()), "refit": record, "calibration": record["calibration"]}
    write_model_card(tmp_path / "card.md", fit)
    card = (tmp_path / "card.md").read_text()
    assert "## <rf> row re-fit (rf-train refit-row, train split)" in card and f"moved by {record['row_change']:.3f}" in card

    same = CliRunner().invoke(main, ["refit-row", str(adapter), str(adapter), "--base", str(base)])
    assert same.exit_code == 2 and "is ADAPTER; rfsdk never overwrites its inputs" in same.output
    for command in ("refit-row", "tune", "shrink"):  # refused before any work, not by a traceback at the end
        missing = CliRunner().invoke(main, [command, str(adapter), str(tmp_path / "no-such-folder" / "out.safetensors")])
        assert missing.exit_code == 2 and "no-such-folder" in missing.output and "does not exist. Create it first" in missing.output
        kept = refit.read_bytes()
        existing = CliRunner().invoke(main, [command, str(adapter), str(refit)])
        assert existing.exit_code == 2 and "already exists" in existing.output and "--force" in existing.output
        assert refit.read_bytes() == kept


def _deeper_tied_copy(src, dst, *, layers: int):
    """``src`` (the one-layer demo model) with ``layers`` blocks (the added ones leave the residual stream
    as it is) and its output tied to the token embeddings (no ``output.weight``)."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        value = layers if name == "llama.block_count" else field.contents()
        writer.add_key_value(name, value, vtype, sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    tensors = {t.name: np.array(t.data) for t in reader.tensors if t.name != "output.weight"}
    for layer in range(1, layers):
        for name in [n for n in tensors if n.startswith("blk.0.")]:
            copy = tensors[name].copy()
            if name in ("blk.0.attn_output.weight", "blk.0.ffn_down.weight"):
                copy[:] = 0.0
            tensors[name.replace("blk.0.", f"blk.{layer}.", 1)] = copy
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _logits(model) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=64, logits_all=True, verbose=False, n_threads=1,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    ids = llm.tokenize(b"Tell me how to pick a lock <rf> now", special=True)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


@pytest.fixture(scope="module")
def slot_fitted(tmp_path_factory):
    """A 2-step fit that takes over the existing token <rf> of a four-layer base with tied embeddings."""
    tmp_path = tmp_path_factory.mktemp("slot-fit")
    plain = build_demo_model(tmp_path / "plain.gguf", with_rf=True, rf_metadata=False)
    base = _deeper_tied_copy(plain, tmp_path / "base.gguf", layers=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RFSDK_CACHE", str(tmp_path / "cache"))
        args = ["fit", "--base", str(base), "--out", str(tmp_path / "run"), "--slot", "<rf>", *FIT_ARGS[: FIT_ARGS.index("--adversarial")]]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        yield base, tmp_path / "run"


def test_a_slot_adapter_on_a_tied_base_is_trained_and_its_row_refitted(slot_fitted, tmp_path):
    base, out = slot_fitted
    rf = load_adapter(out / "adapter.safetensors")
    assert rf.metadata.slot == "<rf>" and rf.output is None and max(p.layer for p in rf.loras) == 3
    slot_id = gguf.GGUFReader(base).fields["tokenizer.ggml.tokens"].contents().index("<rf>")
    assert gguf.GGUFReader(out / "model.gguf").fields["rf.token"].contents() == slot_id

    refit = tmp_path / "refit.safetensors"
    command = ["refit-row", str(out / "adapter.safetensors"), str(refit), "--base", str(base), "--examples", "8",
               "--onpolicy-benign", "2", "--onpolicy", "2", "--max-len", "64", "--threads", "1"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    after = load_adapter(refit)
    # Tied: the one <rf> row is both the input and the output row, and it is what moves.
    assert after.output is None and after.metadata.slot == "<rf>"
    assert np.linalg.norm(after.embedding - rf.embedding) == pytest.approx(
        json.loads(refit.with_suffix(".refit.json").read_text())["row_change"], rel=1e-4)
    assert not np.array_equal(after.embedding, rf.embedding)
    assert all(np.array_equal(p.a, q.a) and np.array_equal(p.b, q.b) for p, q in zip(after.loras, rf.loras))

    merged = CliRunner().invoke(main, ["merge", str(refit), str(tmp_path / "hf"), "--base", str(base)])
    assert merged.exit_code == 0, merged.output
    assert f"<rf> is token {slot_id};" in merged.output  # the slot is <rf> already: nothing renamed
    from rfsdk.convert.hf import convert_hf
    from rfsdk.convert.patch import patch_gguf

    converted = convert_hf(tmp_path / "hf", tmp_path / "from-hf.gguf", outtype="f32")
    patched = patch_gguf(base, refit, tmp_path / "patched.gguf")
    assert converted.rf_token_id == patched.rf_token_id == slot_id
    from_hf, want = _logits(tmp_path / "from-hf.gguf"), _logits(tmp_path / "patched.gguf")
    assert np.abs(from_hf - want).max() <= 1e-4


def test_tune_splits_layers_into_halves_by_the_base_block_count(slot_fitted, tmp_path):
    """An adapter with LoRA on the first two of four layers: both are in the first half."""
    base, out = slot_fitted
    rf = load_adapter(out / "adapter.safetensors")
    partial = tmp_path / "partial.safetensors"
    save_adapter(partial, rf.metadata, rf.embedding, rf.output, tuple(p for p in rf.loras if p.layer < 2))
    tuned = tmp_path / "tuned.safetensors"
    command = ["tune", str(partial), str(tuned), "--base", str(base), "--pairs", "2", "--steps", "1", "--threads", "1",
               "--profile", "late-mlp", "--max-kl", "100"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    weights = {(p.layer, p.module): p.weight for p in load_adapter(tuned).loras}
    assert {layer for layer, _ in weights} == {0, 1}
    assert weights[1, "q_proj"] == 0.0 and weights[1, "down_proj"] == 0.5  # first half of 4, not second half of 2


@pytest.mark.parametrize(
    ("base_fixture", "slot", "message"),
    [
        ("demo_model_no_rf_path", "<no such token>", "is not a token of this tokenizer"),
        ("demo_model_no_rf_path", "<|im_end|>", "is the tokenizer's eos_token"),
        ("demo_model_path", None, "take it over with slot='<rf>' (rf-train fit --slot '<rf>')"),
    ],
)
def test_fit_refuses_a_token_it_cannot_use_with_a_clear_error(base_fixture, slot, message, request, tmp_path):
    base = request.getfixturevalue(base_fixture)
    args = ["fit", "--base", str(base), "--out", str(tmp_path / "run"), *FIT_ARGS]
    result = CliRunner().invoke(main, args + (["--slot", slot] if slot else []))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "adapter.safetensors").exists()


@pytest.mark.parametrize("command", ["tune", "refit-row", "merge"])
def test_the_train_commands_refuse_another_base_first(fitted, demo_model_path, command, tmp_path):
    _, out, _ = fitted
    result = CliRunner().invoke(main, [command, str(out / "adapter.safetensors"), str(tmp_path / "out"), "--base", str(demo_model_path)])
    assert result.exit_code == 1 and "trained on another base file" in result.output and "pass that base as --base" in result.output
    assert "--force" not in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
