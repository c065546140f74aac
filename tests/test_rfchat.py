"""rfchat through click's runner on the demo model (rfsdk.demo_model): options, /commands, errors.

The runner's stdin is not a terminal, so these runs take the piped path: one message or
/command per input line. The interactive terminal is driven in test_rfchat_tmux.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rfsdk import default_model
from rfsdk.cli.rfchat import main
from rfsdk.demo_model import (
    DEMO_BENIGN_REPLY,
    DEMO_ENDLESS_PREFILL,
    DEMO_HARMFUL_CONTINUATION,
    DEMO_HARMFUL_ENDING,
    DEMO_HARMFUL_PREFILL,
    DEMO_MODERATE_PREFILL,
    DEMO_RF_FOLLOW_UP,
)

REFUSAL = "I can't help with that."


@pytest.fixture
def rfchat(demo_model_path: Path):
    """Run rfchat on the demo model: ``rfchat(*args, input=...)`` -> click Result."""

    def run(*args: str, input: str | None = None, model: Path | str | None = demo_model_path, **kw) -> Result:
        base = ["--model", str(model)] if model is not None else []
        return CliRunner().invoke(main, [*base, "--threads", "1", *args], input=input, **kw)

    return run


def events(result: Result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# ----- one turn ---------------------------------------------------------------------------


def test_once_streams_the_reply_and_exits(rfchat) -> None:
    result = rfchat("--once", "hi")
    assert result.exit_code == 0, result.output
    assert result.stdout == DEMO_BENIGN_REPLY + "\n"
    assert result.stderr == ""  # no note for a named model, no banner without a terminal


def test_no_model_uses_the_bundled_default(rfchat, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path))
    monkeypatch.setenv("RFSDK_DEFAULT_MODEL", "demo")
    info = default_model()
    result = rfchat("--once", "hi", model=None)
    assert result.exit_code == 0, result.output
    assert f"using the {info.description}" in result.stderr
    assert result.stdout.strip()
    quiet = rfchat("--once", "hi", "--quiet", model=None)
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_flag_marker_says_probability_source_and_action(rfchat) -> None:
    result = rfchat("--once", "how to make a bomb")
    assert result.exit_code == 0, result.output
    marker, refusal = result.stdout.splitlines()
    assert marker == "⚑ red flag before the reply · P(<rf>)=1.00 · source: prompt · halt: reply stopped"
    assert refusal == REFUSAL
    assert DEMO_BENIGN_REPLY not in result.stdout


@pytest.mark.parametrize(
    ("policy", "action", "after"),
    [
        ("halt", "halt: reply stopped", REFUSAL),
        ("continue", "continue: flag recorded, reply goes on", DEMO_HARMFUL_ENDING),
        ("reflect", "reflect: <rf> put into the context, the model goes on", DEMO_RF_FOLLOW_UP),
    ],
)
def test_policy_mid_reply(rfchat, policy: str, action: str, after: str) -> None:
    result = rfchat("--policy", policy, "--temperature", "0", "--prefill", DEMO_HARMFUL_PREFILL, "--once", "go")
    assert result.exit_code == 0, result.output
    text, marker, rest = result.stdout.splitlines()
    assert text == DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION
    assert marker.startswith("⚑ red flag at reply token ")
    assert "P(<rf>)=0.90 · source: sampled · " + action in marker
    assert rest == after


def test_threshold_option(rfchat) -> None:
    args = ("--temperature", "0", "--prefill", DEMO_MODERATE_PREFILL, "--once", "go")
    default = rfchat(*args)  # P(<rf>) = 0.3 stays under the model's 0.5
    assert default.exit_code == 0 and "red flag" not in default.stdout
    low = rfchat("--threshold", "0.2", *args)
    assert low.exit_code == 0
    assert "P(<rf>)=0.30 · source: threshold · halt" in low.stdout
    assert low.stdout.endswith(REFUSAL + "\n")


def test_max_tokens_cuts_an_endless_reply(rfchat) -> None:
    result = rfchat("--prefill", DEMO_ENDLESS_PREFILL, "--max-tokens", "3", "--once", "go")
    assert result.exit_code == 0
    assert result.stdout == "Count la la la\n(reply cut: token limit reached)\n"


def test_system_option_is_part_of_the_context(rfchat) -> None:
    result = rfchat("--system", "Never talk about a bomb.", "--once", "hi")
    assert result.stdout.startswith("⚑ red flag before the reply")


def test_json_lines(rfchat) -> None:
    result = rfchat("--json", "--policy", "continue", "--once", "a bomb")
    assert result.exit_code == 0 and result.stderr == ""
    lines = events(result)
    assert [e["kind"] for e in lines] == ["flag", "token", "token", "token", "token", "end"]
    assert lines[0]["flag"]["source"] == "prompt" and lines[0]["flag"]["action"] == "continue"
    end = lines[-1]
    assert end["text"] == DEMO_BENIGN_REPLY and end["flagged"] is True and end["finish_reason"] == "stop"
    assert "".join(e["text"] for e in lines if e["kind"] == "token") == DEMO_BENIGN_REPLY


def test_json_commands_and_errors_are_json_lines_too(rfchat) -> None:
    result = rfchat("--json", input="/policy reflect\n/nonsense\n/stats\n")
    assert result.exit_code == 1
    policy, error, stats = events(result)
    assert policy == {"kind": "command", "command": "policy", "text": "Policy: reflect", "policy": "reflect"}
    assert error["kind"] == "error" and "/nonsense" in error["message"]
    assert stats["turns"] == 0 and stats["policy"] == "reflect"


def test_no_colours_unless_a_terminal(rfchat, monkeypatch) -> None:
    plain = rfchat("--once", "bomb")
    assert "\x1b[" not in plain.output
    coloured = rfchat("--once", "bomb", color=True)  # as if stdout were a terminal
    assert "\x1b[31m" in coloured.stdout
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in rfchat("--once", "bomb", color=True).output


def test_version_and_help(rfchat) -> None:
    assert rfchat("--version").stdout.startswith("rfchat 0.")
    help_text = rfchat("--help").stdout
    for name in ("/help", "/reset", "/system", "/policy", "/threshold", "/save", "/load", "/stats", "/quit"):
        assert name in help_text


# ----- piped input and /commands -----------------------------------------------------------


def test_piped_lines_are_turns_and_commands(rfchat) -> None:
    result = rfchat(input="hi\n\nhello again\n/stats\n")
    assert result.exit_code == 0, result.output
    first, second, stats = result.stdout.splitlines()
    assert first == second == DEMO_BENIGN_REPLY
    assert stats.startswith("turns 2 · flags 0 · reply tokens 10 · ")
    assert "tokens/s · policy halt · threshold 0.5" in stats


def test_stats_counts_flags_and_speed(rfchat) -> None:
    result = rfchat("--json", "--policy", "continue", input="a bomb\nhi\n/stats\n")
    stats = events(result)[-1]
    assert stats["turns"] == 2 and stats["flags"] == 2  # "bomb" stays in the context
    assert stats["reply_tokens"] == 10 and stats["tokens_per_s"] > 0


def test_help_command_lists_every_command(rfchat) -> None:
    out = rfchat(input="/help\n").stdout
    for usage in ("/help", "/reset", "/system [TEXT|-]", "/prefill [TEXT|-]", "/policy [NAME]",
                  "/threshold [P]", "/save FILE", "/load FILE", "/stats", "/quit"):
        assert f"  {usage}  " in out
    assert "Ctrl-C" in out


def test_reset_forgets_the_conversation(rfchat) -> None:
    result = rfchat("--policy", "continue", input="a bomb\nhi\n/reset\nhi\n")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert sum(line.startswith("⚑") for line in lines) == 2  # the two turns with "bomb" in context
    assert lines[-2:] == ["Conversation cleared.", DEMO_BENIGN_REPLY]


def test_system_command_shows_sets_and_clears(rfchat) -> None:
    result = rfchat(input="/system\n/system Mind the bomb.\nhi\n/system -\n/reset\nhi\n")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "System prompt: (none)"
    assert lines[1] == "System prompt: Mind the bomb."
    assert lines[2].startswith("⚑ red flag before the reply") and lines[3] == REFUSAL
    assert lines[4:] == ["System prompt: (none)", "Conversation cleared.", DEMO_BENIGN_REPLY]


def test_prefill_command(rfchat) -> None:
    result = rfchat("--temperature", "0", input=f"/prefill {DEMO_ENDLESS_PREFILL}\n/prefill -\nhi\n")
    assert result.stdout.splitlines() == [f"Prefill: {DEMO_ENDLESS_PREFILL}", "Prefill: (none)", DEMO_BENIGN_REPLY]
    attack = rfchat("--temperature", "0", input=f"/prefill {DEMO_HARMFUL_PREFILL}\ngo\n")
    assert "source: sampled · halt: reply stopped" in attack.stdout


def test_policy_and_threshold_commands(rfchat) -> None:
    result = rfchat(
        "--temperature", "0", "--prefill", DEMO_MODERATE_PREFILL,
        input="/policy\n/threshold\n/threshold 0.25\n/policy continue\ngo\n",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == ["Policy: halt", "Threshold: 0.5", "Threshold: 0.25", "Policy: continue"]
    assert "P(<rf>)=0.30 · source: threshold · continue" in lines[5]
    assert lines[-1] == " later."


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/policy maybe", "unknown policy 'maybe': use one of halt, continue, reflect"),
        ("/threshold 2", "the threshold must be a number with 0 < P <= 1, not '2'"),
        ("/threshold many", "the threshold must be a number with 0 < P <= 1, not 'many'"),
        ("/save", "usage: /save FILE"),
        ("/load", "usage: /load FILE"),
        ("/load /nonexistent/chat.json", "No saved chat at /nonexistent/chat.json"),
        ("/frobnicate", "unknown command /frobnicate: type /help for the list"),
    ],
)
def test_bad_command_is_reported_and_the_session_goes_on(rfchat, line: str, message: str) -> None:
    result = rfchat(input=f"{line}\n/policy\n")
    assert result.exit_code == 1  # piped input: a failed line makes the exit status 1
    assert f"error: {message}" in result.stderr
    assert result.stdout == "Policy: halt\n"


def test_save_then_load_restores_the_conversation(rfchat, tmp_path) -> None:
    saved = tmp_path / "chat.json"
    first = rfchat("--policy", "continue", input=f"/system Be brief.\ntell me about a bomb\n/save {saved}\n")
    assert first.exit_code == 0, first.output
    assert f"Saved 2 messages to {saved}." in first.stdout
    data = json.loads(saved.read_text())
    assert data["system"] == "Be brief."
    assert [m["content"] for m in data["messages"]] == ["tell me about a bomb", DEMO_BENIGN_REPLY]

    # A fresh rfchat: "hi" alone is benign; after /load, the restored "bomb" is in the context.
    fresh = rfchat("--policy", "continue", input="hi\n")
    assert "red flag" not in fresh.stdout
    loaded = rfchat("--policy", "continue", input=f"/load {saved}\n/system\nhi\n/save {tmp_path / 'again.json'}\n")
    assert loaded.exit_code == 0, loaded.output
    lines = loaded.stdout.splitlines()
    assert lines[:2] == [f"Loaded 2 messages from {saved}.", "System prompt: Be brief."]
    assert lines[2].startswith("⚑ red flag before the reply")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["messages"][:2] == data["messages"] and len(again["messages"]) == 4


def test_load_rejects_a_file_that_is_not_a_saved_chat(rfchat, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = rfchat(input=f"hi\n/load {bad}\n/stats\n")
    assert "is not a chat saved by rfsdk" in result.stderr
    assert "turns 1" in result.stdout and result.exit_code == 1


BAD_SAVED_CHATS = {
    "deeply nested": "[" * 100_000 + "]" * 100_000,
    "a lone surrogate": json.dumps({"system": None, "messages": [{"role": "user", "content": "a\udcffb"}, {"role": "assistant", "content": "x"}]}),
    "an empty user message": json.dumps({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]}),
    "a system message midway": json.dumps({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "system", "content": "c"}, {"role": "assistant", "content": "d"},
    ]}),  # fmt: skip
    "an unknown field": json.dumps({"messages": [{"role": "user", "content": "a", "mood": 1}, {"role": "assistant", "content": "b"}]}),
    "an unknown top-level field": json.dumps({"messages": [], "model": "x"}),
}


@pytest.mark.parametrize("text", BAD_SAVED_CHATS.values(), ids=BAD_SAVED_CHATS.keys())
def test_load_of_a_bad_file_is_one_error_line_and_the_input_goes_on(rfchat, tmp_path, text) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text, encoding="utf-8")
    result = rfchat(input=f"hi\n/load {bad}\n/stats\nhi\n")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {bad} is not a chat saved by rfsdk (") and line.endswith("left unchanged.")
    assert result.stdout.splitlines()[1].startswith("turns 1 ·")  # the conversation was kept
    assert result.stdout.count(DEMO_BENIGN_REPLY) == 2  # and the input after /load was read


def test_quit_stops_reading(rfchat) -> None:
    result = rfchat(input="hi\n/quit\nhi\n")
    assert result.exit_code == 0
    assert result.stdout == DEMO_BENIGN_REPLY + "\n"


def test_double_slash_sends_a_message_starting_with_slash(rfchat) -> None:
    result = rfchat("--json", input="//stats\n")
    assert events(result)[-1]["kind"] == "end"


# ----- errors ------------------------------------------------------------------------------


def test_missing_model_file(rfchat) -> None:
    result = rfchat("--once", "hi", model="/nonexistent/model.gguf")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: No model file at /nonexistent/model.gguf.")
    assert "Traceback" not in result.output


def test_file_that_is_not_gguf(rfchat, tmp_path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("hello, not a model\n")
    result = rfchat("--once", "hi", model=path)
    assert result.exit_code == 1
    assert "is not a GGUF file" in result.stderr


def test_model_without_rf_token_names_the_option(rfchat, demo_model_no_rf_path) -> None:
    result = rfchat("--once", "hi", model=demo_model_no_rf_path)
    assert result.exit_code == 1
    assert "has no <rf> token" in result.stderr and "--allow-unguarded" in result.stderr
    unguarded = rfchat("--allow-unguarded", "--once", "a bomb", model=demo_model_no_rf_path)
    assert unguarded.exit_code == 0 and unguarded.stdout == DEMO_BENIGN_REPLY + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "0"], "Invalid value for '--threshold' / '-t'"),
        (["--threshold", "1.5"], "Invalid value for '--threshold' / '-t'"),
        (["--policy", "sometimes"], "Invalid value for '--policy' / '-p'"),
        (["--threads", "0"], "Invalid value for '--threads'"),
        (["--model-file", "x.gguf"], "--model-file names a file of the repo given with --model"),
    ],
)
def test_bad_options_are_usage_errors(rfchat, args: list[str], message: str) -> None:
    result = rfchat(*args, "--once", "hi", model=None)
    assert result.exit_code == 2
    assert message in result.stderr


def test_empty_once_message(rfchat) -> None:
    result = rfchat("--once", "   ")
    assert result.exit_code == 1
    assert "Error: The message is empty." in result.stderr


def test_quiet_leaves_out_notes(rfchat) -> None:
    lines = "\n".join(f"hi number {i}" for i in range(8)) + "\n"
    loud = rfchat("--n-ctx", "128", input=lines)
    assert loud.exit_code == 0 and "note: The conversation is longer than the context" in loud.output
    quiet = rfchat("--n-ctx", "128", "--quiet", input=lines)
    assert quiet.exit_code == 0 and "note:" not in quiet.output
    assert quiet.stdout.count(DEMO_BENIGN_REPLY) == 8


def test_message_longer_than_the_context(rfchat) -> None:
    result = rfchat("--n-ctx", "64", "--once", "word " * 200)
    assert result.exit_code == 1
    assert "Error: The message needs" in result.stderr and "larger n_ctx" in result.stderr


# ----- --model as a Hugging Face repo id (the rfsdk cache, no network) ------------------------


def test_repo_id_uses_the_only_cached_gguf(rfchat, demo_model_path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    folder = tmp_path / "models" / "someone--rf-model"
    folder.mkdir(parents=True)
    shutil.copy(demo_model_path, folder / "model-q8.gguf")
    assert rfchat("--once", "hi", model="someone/rf-model").stdout == DEMO_BENIGN_REPLY + "\n"

    shutil.copy(demo_model_path, folder / "model-f32.gguf")
    several = rfchat("--once", "hi", model="someone/rf-model")
    assert several.exit_code == 1
    assert "has several GGUF files (model-f32.gguf, model-q8.gguf)" in several.stderr
    assert "--model-file FILE" in several.stderr
    picked = rfchat("--model-file", "model-f32.gguf", "--once", "hi", model="someone/rf-model")
    assert picked.exit_code == 0 and picked.stdout == DEMO_BENIGN_REPLY + "\n"


def test_repo_id_offline_says_what_to_do(rfchat, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    result = rfchat("--once", "hi", model="someone/rf-model")
    assert result.exit_code == 1
    assert "Cannot list the files of the Hugging Face repo someone/rf-model: HF_HUB_OFFLINE is set" in result.stderr
    assert str(tmp_path / "models" / "someone--rf-model") in result.stderr


# ----- encodings: input that is not text, any locale ----------------------------------------------

# Valid UTF-8 (é, ✓, an emoji), then bytes that are not UTF-8 (0xff, 0xfe) in a /system, a
# /prefill, a command name, a message and a /save path.
ENCODED_INPUT = (
    "/system Sé brief ✓\nhéllo 😀\n".encode()
    + b"/system bad \xff byte\n/system\n/prefill x\xfe\n/prefill\n/\xff\nbad \xfe msg\n/save s\xff.json\n/stats\n"
)


@pytest.mark.parametrize(
    "env",
    [{}, {"PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}],
    ids=["LC_ALL=C", "LC_ALL=C, ascii stdio"],
)
def test_json_lines_are_json_in_any_locale_and_undecodable_lines_are_refused(demo_model_path, tmp_path, env) -> None:
    """A real process, so Python picks its stdio encodings from the locale: with LC_ALL=C either
    UTF-8 (Python's UTF-8 mode) or, with that mode and locale coercion off, ASCII."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING"))}
    done = subprocess.run(
        [sys.executable, "-c", "from rfsdk.cli.rfchat import main; main()", "--model", str(demo_model_path), "--threads", "1", "--json"],
        input=ENCODED_INPUT, capture_output=True, timeout=600, cwd=tmp_path, env={**environ, "LC_ALL": "C", **env},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr.decode(errors="replace")[-2000:]
    assert done.stdout.isascii()
    lines = [json.loads(line) for line in done.stdout.decode("ascii").splitlines()]
    errors = [e["message"] for e in lines if e["kind"] == "error"]
    systems = [e["system"] for e in lines if e.get("command") == "system"]
    utf8 = not env
    assert len(errors) == (5 if utf8 else 7)  # the undecodable lines (and, in ASCII, the UTF-8 ones)
    assert all(m.startswith("ignored ") and "is not text in the input's encoding" in m for m in errors)
    assert "ignored the command '/system': the byte 0xff at character 12" in errors[-5]
    assert systems == (["Sé brief ✓"] * 2 if utf8 else [None])  # the refused /system kept the prompt
    assert [e["prefill"] for e in lines if e.get("command") == "prefill"] == [""]
    assert [e["kind"] for e in lines].count("end") == (1 if utf8 else 0)
    assert lines[-1]["command"] == "stats" and "·" in lines[-1]["text"]
    assert not list(tmp_path.iterdir())  # no file saved under an undecodable name


def test_undecodable_prefill_option_is_refused_at_start(demo_model_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from rfsdk.cli.rfchat import main; main()", "--model", str(demo_model_path), "--prefill", "x\udcff"],
        capture_output=True, timeout=600, input=b"hi\n",
    )  # fmt: skip
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert done.stderr.startswith(b"Error: The text 'x\\udcff' holds a lone surrogate")
