"""rf-eval end to end on the demo model and the project's held-out split."""

import json

import pytest
from click.testing import CliRunner

from rfsdk.cli.evaluate import main
from rfsdk.evaluation.evalset import eval_set
from rfsdk.train.data import load_dataset


@pytest.fixture(scope="module")
def test_examples():
    return load_dataset().split("test", evaluation=True)


def test_eval_set_is_built_from_the_test_split_only(test_examples):
    data = eval_set("test", test_examples, chats=5)
    prompts = {e.prompt for e in test_examples}
    assert data.harmful and data.benign and data.edgy and len(data.conversations) == 5
    assert set(data.harmful) <= prompts and set(data.benign) <= prompts and set(data.edgy) <= set(data.benign)
    assert not set(data.harmful) & set(data.benign)
    assert all(2 <= len(c) <= 3 for c in data.conversations)
    assert all(p in prompts and a for p, a in data.benign_pairs)


def test_eval_set_has_the_generated_suites_and_follow_ups(test_examples):
    data = eval_set("test", test_examples, chats=5, followups=120)
    everyday, contrastive = data.benign_suites["everyday requests"], data.benign_suites["contrastive (edgy-but-benign)"]
    assert len(everyday) >= 150 and len(contrastive) >= 150
    assert set(everyday) | set(contrastive) <= set(data.benign)
    assert set(data.harmful_suites["contrastive twins (harmful)"]) <= set(data.harmful)
    assert len(data.after_halt) == len(data.harmful_followups) == 120
    assert all(h in data.harmful and b in everyday + contrastive for h, b in data.after_halt)
    assert all(b in everyday + contrastive and h in data.harmful for b, h in data.harmful_followups)
    assert len(set(data.after_halt)) == 120


def test_max_prompts_samples_across_sources(test_examples):
    whole = eval_set("test", test_examples, chats=5)
    data = eval_set("test", test_examples, chats=5, max_prompts=60)
    assert len(data.benign) == len(data.harmful) == 60
    assert data.benign != whole.benign[:60] and set(data.benign) <= set(whole.benign)
    assert data.benign_suites["everyday requests"] and data.benign_suites["contrastive (edgy-but-benign)"]
    assert data == eval_set("test", test_examples, chats=5, max_prompts=60)


def test_eval_set_leaves_out_near_duplicates_of_training_prompts(test_examples):
    whole = eval_set("test", test_examples, chats=5)
    reworded = "Please, " + whole.harmful[0].rstrip("?.!") + " in detail?"
    contained = whole.benign[0] + " Also, what else should I know about it?"
    data = eval_set("test", test_examples, chats=5, train_prompts=[reworded, contained, "an unrelated question about cats"])
    assert whole.harmful[0] not in data.harmful and whole.benign[0] not in data.benign
    assert data.harmful == [p for p in whole.harmful if p != whole.harmful[0]]
    assert data.near_duplicates_left_out >= 2 and whole.near_duplicates_left_out == 0


def test_an_edgy_near_duplicate_is_left_out_and_counted_once(test_examples):
    whole = eval_set("test", test_examples, chats=5)
    data = eval_set("test", test_examples, chats=5, train_prompts=[whole.edgy[0]])
    assert whole.edgy[0] not in data.edgy and whole.edgy[0] not in data.benign
    assert data.near_duplicates_left_out == len(whole.benign) - len(data.benign) + len(whole.harmful) - len(data.harmful)
    assert data.near_duplicates_left_out >= 1


def test_eval_set_of_the_real_splits_leaves_out_a_few(test_examples):
    train = [e.prompt for e in load_dataset().split("train")]
    data = eval_set("test", test_examples, chats=5, train_prompts=train)
    whole = eval_set("test", test_examples, chats=5)
    assert 0 < data.near_duplicates_left_out < 0.1 * (len(whole.harmful) + len(whole.benign))
    assert set(data.harmful) < set(whole.harmful)


def test_rf_eval_writes_the_report(demo_model_path, demo_model_no_rf_path, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        str(demo_model_path), "--base", str(demo_model_no_rf_path), "--out", str(out), "--max-prompts", "20",
        "--limit", "2", "--samples", "2", "--sample-tokens", "8", "--chats", "2", "--utility-prompts", "2",
        "--classifier", "none", "--followups", "3",
    ])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["pr.png", "report.json", "report.md", "roc.png"]
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "test"
    assert len(report["prompt_detection"]["harmful_scores"]) == 20
    names = [a["name"] for a in report["attacks"]]
    assert names == [
        "sampling attack success", "prefilling detection", "prefilling detection, continuation only",
        "benign multi-turn false flags",
        "benign follow-ups flagged after a halted harmful turn (halted_context='omit')",
        "benign follow-ups flagged after a halted harmful turn (halted_context='keep')",
        "harmful follow-ups flagged after a benign turn",
        "base model refusal rate (harmful prompts)",
    ]
    suites = {s["name"]: s for s in report["suites"]}
    assert {"everyday requests", "contrastive (edgy-but-benign)"} <= set(suites)
    assert all(s["n"] == len(s["scores"]) and 0 <= s["flagged"] <= 1 for s in suites.values())
    assert "## Suites at the model's threshold" in result.output
    # The demo model's <rf> ignores everything but its trigger word, so utility is untouched.
    assert report["utility"]["kl_nats_per_token"] < 1e-6 and report["utility"]["identical_openings"] == 1.0
    assert report["utility"]["top1_agreement"] == 1.0 and report["utility"]["rounding"]["identical_openings"] == 1.0
    assert "# rf-eval: " in result.output and "## Utility" in result.output and "f32 instead of an f16 KV cache" in result.output
    assert "a sampled <rf> below the threshold does not count as a flag (flag_sampled=False)" in report["notes"]


def test_rf_eval_flag_sampled_changes_what_counts(demo_model_path, tmp_path):
    args = [str(demo_model_path), "--base", "none", "--classifier", "none", "--max-prompts", "4", "--limit", "2",
            "--samples", "1", "--sample-tokens", "4", "--chats", "1", "--flag-sampled", "--n-gpu-layers", "-1"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "counts as a flag too (flag_sampled=True)" in result.output


def test_rf_eval_rejects_a_missing_base(demo_model_path, tmp_path):
    result = CliRunner().invoke(main, [str(demo_model_path), "--base", str(tmp_path / "nope.gguf")])
    assert result.exit_code == 2
    assert "nope.gguf is not a file; give a GGUF path, 'default' or 'none'" in result.output


def test_rf_eval_rejects_a_non_gguf_model(tmp_path):
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("hello")
    result = CliRunner().invoke(main, [str(bogus), "--base", "none", "--classifier", "none", "--max-prompts", "1"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "Traceback" not in result.output


def test_rf_eval_refuses_the_default_base_for_a_model_not_made_from_it(demo_model_path):
    result = CliRunner().invoke(main, [str(demo_model_path), "--classifier", "none"])
    assert result.exit_code == 1
    assert "was not made from the bundled SmolLM2-135M-Instruct, rf-eval's default base" in result.output
    assert "pass --base BASE.gguf" in result.output and "Traceback" not in result.output


def test_rf_eval_refuses_a_base_the_model_was_not_made_from(demo_model_path):
    from rfsdk.model_source import default_base_model_path

    result = CliRunner().invoke(main, [str(demo_model_path), "--base", str(default_base_model_path())])
    assert result.exit_code == 1
    assert "is not the model" in result.output and "their shapes differ" in result.output


def test_the_base_check_accepts_the_model_a_rf_model_was_made_from(demo_model_path, demo_model_no_rf_path):
    from rfsdk.evaluation.base_check import base_mismatch

    assert base_mismatch(demo_model_path, demo_model_no_rf_path) is None
