"""The error contract: every public constructor, setter and command refuses bad input with an
RfsdkError (one line from the commands, exit status 1 or 2), never another exception type.

Each case below is one bad input to one public entry point. A case passes when the call
raises an RfsdkError (the commands: exit 1 or 2, one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import llama_cpp
import pytest
from click.testing import CliRunner

from rfsdk import (
    CrossCheckConfig,
    FunctionClassifier,
    GuardConfig,
    GuardedChat,
    LlamaJudge,
    Message,
    RfsdkError,
    SamplingConfig,
    TextClassifier,
)
from rfsdk.calibration import threshold_for_fpr
from rfsdk.cli.convert import main as rf_convert
from rfsdk.cli.rfchat import main as rfchat

SURROGATE = "a\ud800b"


@pytest.fixture(scope="module")
def llm(demo_model_path):
    return llama_cpp.Llama(model_path=str(demo_model_path), n_ctx=2048, n_threads=1, verbose=False)


@pytest.fixture(scope="module")
def chat(llm):
    return GuardedChat(llm, sampling=SamplingConfig(temperature=0.0, max_tokens=16))


def _refused(call) -> RfsdkError:
    try:
        call()
    except RfsdkError as exc:
        assert str(exc).strip(), "an error without a message"
        return exc
    except BaseException as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{type(exc).__name__} escaped instead of an RfsdkError: {exc}")
    pytest.fail("the bad input was accepted")


CHAT_KWARGS = [
    {"threshold": 2.0},
    {"threshold": 0.0},
    {"threshold": math.nan},
    {"threshold": "high"},
    {"flag_sampled": "yes"},
    {"check_prefill": "maybe"},
    {"policy": "stop"},
    {"policy": 3},
    {"refusal": 3},
    {"max_reflections": -1},
    {"on_flag": 3},
    {"on_token": "print"},
    {"system": 3},
    {"system": SURROGATE},
    {"sampling": {"temperature": 0}},
    {"guard_config": {"threshold": 0.3}},
    {"overflow": "drop"},
    {"classifier": "llama-guard"},
    {"cross_check": "veto"},
    {"cross_check": 3},
    {"check_every": -1},
    {"check_every": 1.5},
    {"classifier_timeout": 0},
    {"classifier_timeout": "soon"},
    {"chat_template": "{% for %}"},
    {"n_ctx": -5},
    {"n_ctx": "big"},
    {"n_threads": 0},
    {"n_gpu_layers": "all"},
    {"llama_kwargs": {"n_bacth": 8}},
    {"llama_kwargs": {"n_ctx": 8}},
    {"llama_kwargs": 3},
]


@pytest.mark.parametrize("kwargs", CHAT_KWARGS, ids=lambda kw: f"{next(iter(kw))}={next(iter(kw.values()))!r}")
def test_bad_chat_settings(demo_model_path, kwargs):
    _refused(lambda: GuardedChat(demo_model_path, **{"n_threads": 1, **kwargs}))


@pytest.mark.parametrize("model", [3, None, "/nonexistent/model.gguf", "hf://org", "README.md", "."])
def test_bad_models(model):
    path = Path(__file__).parent.parent / model if model in ("README.md", ".") else model
    _refused(lambda: GuardedChat(path))


def test_a_model_without_rf(demo_model_no_rf_path):
    _refused(lambda: GuardedChat(demo_model_no_rf_path, n_threads=1))


SETTERS = [
    ("threshold", 1.5),
    ("flag_sampled", 1),
    ("check_prefill", None),
    ("policy", "ignore"),
    ("refusal", None),
    ("max_reflections", "one"),
    ("guard_config", None),
    ("cross_check_config", "confirm"),
    ("sampling", None),
    ("overflow", "wrap"),
    ("system", SURROGATE),
    ("on_token", 1),
    ("on_flag", 1),
    ("classifier", 42),
]


@pytest.mark.parametrize(("name", "value"), SETTERS, ids=[name for name, _ in SETTERS])
def test_bad_setters_leave_the_setting_unchanged(chat, name, value):
    before = getattr(chat, name)
    _refused(lambda: setattr(chat, name, value))
    assert getattr(chat, name) == before


@pytest.mark.parametrize(
    "call",
    [
        lambda chat: chat.send(3),
        lambda chat: chat.send(" "),
        lambda chat: chat.send(SURROGATE),
        lambda chat: chat.send("hi", prefill=3),
        lambda chat: chat.send("hi", max_tokens=0),
        lambda chat: chat.send("hi", max_tokens=True),
    ],
)
def test_bad_turn_arguments(chat, call):
    _refused(lambda: call(chat))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1},
        {"top_p": 0},
        {"top_k": -1},
        {"min_p": 2},
        {"repeat_penalty": 0},
        {"temperature": float("inf")},
        {"repeat_penalty": float("inf")},
        {"min_p": float("nan")},
        {"max_tokens": 0},
        {"seed": "x"},
        {"temprature": 0.5},
    ],
)
def test_bad_sampling(kwargs):
    _refused(lambda: SamplingConfig(**kwargs))


@pytest.mark.parametrize(
    "make",
    [
        lambda: GuardConfig(threshold=-1),
        lambda: GuardConfig(policy=None),
        lambda: GuardConfig(treshold=0.3),
        lambda: CrossCheckConfig(mode="veto"),
        lambda: CrossCheckConfig(check_every=-3),
        lambda: FunctionClassifier(3),
        lambda: TextClassifier.load(threshold=2.0),
        lambda: threshold_for_fpr([0.1, 0.2], target_fpr=1.5),
    ],
)
def test_bad_configs_and_classifiers(make):
    _refused(make)


@pytest.mark.parametrize("kwargs", [{"format": "llama-guard-9"}, {"threshold": 2.0}])
def test_bad_judges(llm, kwargs):
    _refused(lambda: LlamaJudge(llm, **kwargs))


def test_a_judge_that_does_not_exist():
    _refused(lambda: LlamaJudge("/nonexistent/judge.gguf"))


HISTORIES = {
    "starts with the assistant": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}],
    "ends with the user": [{"role": "user", "content": "hi"}],
    "a system message inside": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
    "a system message midway": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "system", "content": "c"}, {"role": "assistant", "content": "d"},
    ],  # fmt: skip
    "a lone surrogate in a reply": [{"role": "user", "content": "a"}, {"role": "assistant", "content": SURROGATE}],
    "flagged not a bool": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "flagged": "yes"}],
    "an unknown finish_reason": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "finish_reason": "done"}],
    "two users in a row": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "empty user content": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}],
    "a lone surrogate": [{"role": "user", "content": SURROGATE}, {"role": "assistant", "content": "x"}],
    "an unknown field": [{"role": "user", "content": "a", "mood": 1}, {"role": "assistant", "content": "x"}],
    "a number as content": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}],
    "not a list": "hello",
    "not messages": [3, 4],
}


@pytest.mark.parametrize("messages", HISTORIES.values(), ids=HISTORIES.keys())
def test_bad_histories_are_refused_and_leave_the_chat_unchanged(chat, tmp_path, messages):
    chat.set_history([Message(role="user", content="q"), Message(role="assistant", content="a")], system="S")
    before = (chat.history, chat.system)
    _refused(lambda: chat.set_history(messages, system="other"))
    assert (chat.history, chat.system) == before
    saved = tmp_path / "chat.json"
    saved.write_text(json.dumps({"system": None, "messages": messages}), encoding="utf-8")
    _refused(lambda: chat.load_history(saved))
    assert (chat.history, chat.system) == before


@pytest.mark.parametrize(
    "text",
    [
        "", "not json", "[]", '{"messages": 3}', '{"system": 3, "messages": []}', "[" * 100_000 + "]" * 100_000,
        '{"messages": [' + "[" * 100_000 + "]" * 100_000 + "]}", '{"system": "\\udcff", "messages": []}',
        '{"messages": [], "model": "x"}',
    ],
    ids=[
        "empty", "not json", "a list", "messages not a list", "system not text", "deeply nested",
        "deeply nested message", "a lone surrogate system", "an unknown field",
    ],
)  # fmt: skip
def test_bad_history_files(chat, tmp_path, text):
    saved = tmp_path / "chat.json"
    saved.write_text(text, encoding="utf-8")
    _refused(lambda: chat.load_history(saved))
    _refused(lambda: chat.load_history(tmp_path / "missing.json"))
    _refused(lambda: chat.load_history(tmp_path))


def test_a_failed_save_names_the_path_and_leaves_no_temporary_file(chat, tmp_path):
    target = tmp_path / "no-such-folder" / "chat.json"
    error = _refused(lambda: chat.save_history(target))
    assert str(target) in str(error)
    taken = tmp_path / "taken"
    taken.mkdir()
    _refused(lambda: chat.save_history(taken))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_save_that_cannot_encode_leaves_no_temporary_file(chat, tmp_path):
    chat._history = [Message(role="user", content="a" + SURROGATE), Message(role="assistant", content="b")]  # past the checks
    target = tmp_path / "out.json"
    error = _refused(lambda: chat.save_history(target))
    assert f"Cannot save the chat to {target} (UnicodeEncodeError" in str(error)
    assert list(tmp_path.iterdir()) == []
    chat._history = []


def test_a_history_file_that_is_not_utf8_is_refused(chat, tmp_path):
    saved = tmp_path / "chat.json"
    saved.write_bytes(b'{"messages": [], "system": "\xff"}')
    assert "UnicodeDecodeError" in str(_refused(lambda: chat.load_history(saved)))


def test_set_history_keeps_the_system_prompt_unless_given(chat):
    chat.system = "Be brief."
    chat.set_history([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}])
    assert chat.system == "Be brief." and [m.role for m in chat.history] == ["user", "assistant"]
    chat.set_history([], system=None)
    assert chat.system is None and chat.history == []


# ----- the commands ---------------------------------------------------------------------------


def _one_line_error(result) -> None:
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    assert not isinstance(result.exception, RfsdkError) or result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error:"), result.stderr


RFCHAT_ARGS = [
    ["--model", "/nonexistent/model.gguf", "--once", "hi"],
    ["--model", "README.md", "--once", "hi"],
    ["--model", "{demo}", "--threshold", "2", "--once", "hi"],
    ["--model", "{demo}", "--policy", "stop", "--once", "hi"],
    ["--model", "{demo}", "--threads", "1", "--once", " "],
    ["--model", "{demo}", "--threads", "1", "--n-ctx", "10", "--once", "hi"],
    ["--model", "{no_rf}", "--threads", "1", "--once", "hi"],
    ["--model-file", "x.gguf"],
    ["--temperature", "-1"],
]


@pytest.mark.parametrize("args", RFCHAT_ARGS, ids=lambda args: " ".join(args))
def test_rfchat_bad_input(args, demo_model_path, demo_model_no_rf_path):
    args = [a.format(demo=demo_model_path, no_rf=demo_model_no_rf_path) for a in args]
    _one_line_error(CliRunner().invoke(rfchat, args))


def test_rfchat_bad_lines_are_one_line_each_and_exit_1(demo_model_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[" * 50_000, encoding="utf-8")
    lines = ["/load /nonexistent.json", f"/load {bad}", f"/save {tmp_path}/no/such/file.json", "/threshold 7", "/nope"]
    result = CliRunner().invoke(rfchat, ["--model", str(demo_model_path), "--threads", "1"], input="\n".join(lines))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line.startswith("error: ") for line in result.stderr.splitlines()] == [True] * len(lines)


RF_CONVERT_ARGS = [
    ["inspect", "/nonexistent/model.gguf"],
    ["inspect", "README.md"],
    ["inspect", "."],
    ["patch", "/nonexistent/base.gguf", "/nonexistent/adapter.safetensors", "{tmp}/out.gguf"],
    ["patch", "{demo}", "README.md", "{tmp}/out.gguf"],
    ["patch", "{demo}", "{demo}", "{demo}"],
    ["verify", "/nonexistent", "{demo}"],
    ["patch", "--merged-type", "q2", "{demo}", "{demo}", "{tmp}/out.gguf"],
]


@pytest.mark.parametrize("args", RF_CONVERT_ARGS, ids=lambda args: " ".join(args))
def test_rf_convert_bad_input(args, demo_model_path, tmp_path):
    args = [a.format(demo=demo_model_path, tmp=tmp_path) for a in args]
    _one_line_error(CliRunner().invoke(rf_convert, args))


RF_TRAIN_ARGS = [
    ["fit", "--base", "/nonexistent/model.gguf", "--out", "{tmp}/run"],
    ["fit", "--base", "{demo}", "--out", "{demo}"],
    ["recipe", "--base", "/nonexistent/model", "--out", "{tmp}/run"],
    ["tune", "README.md", "{tmp}/tuned.safetensors", "--base", "{demo}"],
    ["refit-row", "README.md", "{tmp}/refit.safetensors", "--base", "{demo}"],
    ["merge", "README.md", "{tmp}/merged", "--base", "{demo}"],
    ["shrink", "README.md", "{tmp}/small.safetensors"],
    ["shrink", "/nonexistent/adapter.safetensors", "{tmp}/small.safetensors"],
    ["text-classifier", "--target-fpr", "2"],
]
RF_EVAL_ARGS = [
    ["/nonexistent/model.gguf"],
    ["{demo}", "--base", "/nonexistent/base.gguf"],
    ["{demo}", "--split", "train"],
]


@pytest.mark.parametrize("args", RF_TRAIN_ARGS, ids=lambda args: " ".join(args))
def test_rf_train_bad_input(args, demo_model_path, tmp_path):
    from rfsdk.cli.train import main as rf_train

    args = [a.format(demo=demo_model_path, tmp=tmp_path) for a in args]
    _one_line_error(CliRunner().invoke(rf_train, args))


@pytest.mark.parametrize("args", RF_EVAL_ARGS, ids=lambda args: " ".join(args))
def test_rf_eval_bad_input(args, demo_model_path):
    from rfsdk.cli.evaluate import main as rf_eval

    _one_line_error(CliRunner().invoke(rf_eval, [a.format(demo=demo_model_path) for a in args]))
