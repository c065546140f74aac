"""rfchat as a person uses it: a real terminal (tmux), keys typed in, the screen read back.

Each test starts ``rfchat`` on the demo model in its own tmux server, types with
``send-keys`` and reads the screen with ``capture-pane``. Skipped where tmux is missing.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from rfsdk.demo_model import DEMO_BENIGN_REPLY, DEMO_ENDLESS_PIECE, DEMO_ENDLESS_PREFILL

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

REFUSAL = "I can't help with that."
EXITED = "rfchat exited with status"


class Terminal:
    """One tmux pane running a command: type into it, read its screen and scrollback."""

    def __init__(self, command: str, cwd: Path) -> None:
        self._tmux = ["tmux", "-L", f"rfchat-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        # After rfchat exits, the pane shows its exit status and stays readable.
        shell = f"{command}; echo {EXITED} $?; sleep 600"
        self._run("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "-c", str(cwd), shell)

    def _run(self, *args: str) -> str:
        return subprocess.run([*self._tmux, *args], check=True, capture_output=True, text=True).stdout

    def type(self, text: str) -> None:
        """Type ``text`` literally and press Enter."""
        self._run("send-keys", "-t", "t", "-l", text)
        self._run("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name, e.g. ``C-c``."""
        self._run("send-keys", "-t", "t", *keys)

    def screen(self, *, colours: bool = False) -> str:
        """All the pane's text (scrollback included): wrapped lines joined, trailing blanks cut."""
        text = self._run("capture-pane", "-p", "-J", "-S", "-", "-t", "t", *(["-e"] if colours else []))
        return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n") + "\n"

    def wait_for(self, check: Callable[[str], bool] | str, timeout: float = 20.0) -> str:
        """Poll the screen until ``check`` holds (a string: until it is on the screen)."""
        test = (lambda s: check in s) if isinstance(check, str) else check
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if test(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {check!r}; the screen shows:\n{text}")
            time.sleep(0.1)

    def prompts(self) -> int:
        """How many prompts the screen shows so far."""
        return _prompts(self.screen())

    def say(self, text: str) -> str:
        """Type a line and wait until rfchat prompts again; returns the screen."""
        before = self.prompts()
        self.type(text)
        return self.wait_for(lambda s: _prompts(s) > before)

    def close(self) -> None:
        subprocess.run([*self._tmux, "kill-server"], capture_output=True)


def _prompts(screen: str) -> int:
    return sum(line.startswith("you>") for line in screen.splitlines())


@pytest.fixture
def start(demo_model_path: Path, tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    """Start rfchat on the demo model in a fresh terminal, waiting for its first prompt."""
    rfchat = shutil.which("rfchat")
    if rfchat is None:
        pytest.skip("the rfchat console script is not installed (pip install -e .)")
    terminals: list[Terminal] = []

    def run(*args: str) -> Terminal:
        # A long context so an endless reply runs for seconds: time to press Ctrl-C.
        argv = [rfchat, "--model", str(demo_model_path), "--threads", "1", "--n-ctx", "65536", "--max-tokens", "60000"]
        term = Terminal(shlex.join([*argv, *args]), tmp_path)
        terminals.append(term)
        term.wait_for(lambda s: s.endswith("you>\n"))
        return term

    yield run
    for term in terminals:
        term.close()


def test_banner_prompt_and_reply(start) -> None:
    term = start()
    screen = term.screen()
    assert "demo.gguf · policy halt · threshold 0.5 · 1 thread" in screen
    assert "/help lists commands; Ctrl-C stops a reply; Ctrl-D leaves." in screen
    screen = term.say("hi")
    assert screen.endswith(f"you> hi\n{DEMO_BENIGN_REPLY}\nyou>\n")


def test_flag_marker_is_shown_in_red(start) -> None:
    term = start()
    screen = term.say("how do I make a bomb")
    marker = "⚑ red flag before the reply · P(<rf>)=1.00 · source: prompt · halt: reply stopped"
    assert screen.endswith(f"you> how do I make a bomb\n{marker}\n{REFUSAL}\nyou>\n")
    coloured = next(line for line in term.screen(colours=True).splitlines() if "red flag" in line)
    assert "\x1b[1m" in coloured and "31m" in coloured  # bold red


def test_ctrl_c_cancels_the_reply_not_the_program(start) -> None:
    term = start("--prefill", DEMO_ENDLESS_PREFILL)
    prompts = term.prompts()
    term.type("count for me")
    # The reply streams: it is on the screen and growing while rfchat has not prompted again.
    first = term.wait_for(lambda s: s.count(DEMO_ENDLESS_PIECE) > 50).count(DEMO_ENDLESS_PIECE)
    term.wait_for(lambda s: s.count(DEMO_ENDLESS_PIECE) > first + 50)
    assert term.prompts() == prompts
    term.keys("C-c")
    screen = term.wait_for(lambda s: s.endswith("(reply cancelled)\nyou>\n"), timeout=10)
    assert EXITED not in screen
    assert f"you> count for me\n{DEMO_ENDLESS_PREFILL}{DEMO_ENDLESS_PIECE}" in screen
    term.say("/prefill -")
    assert term.say("hello again").endswith(f"you> hello again\n{DEMO_BENIGN_REPLY}\nyou>\n")
    assert "turns 2 · flags 0 · " in term.say("/stats")


def test_ctrl_c_at_the_prompt_warns_then_leaves(start) -> None:
    term = start()
    term.keys("C-c")
    term.wait_for("(press Ctrl-C again, Ctrl-D or type /quit to leave)")
    assert DEMO_BENIGN_REPLY in term.say("still here?")  # a message in between resets the count
    term.keys("C-c")
    term.wait_for(lambda s: s.count("press Ctrl-C again") == 2)
    term.keys("C-c")
    term.wait_for(f"{EXITED} 0")


@pytest.mark.parametrize("leave", ["/quit", "C-d"])
def test_quit_and_ctrl_d_leave(start, leave: str) -> None:
    term = start()
    term.say("hi")
    if leave.startswith("/"):
        term.type(leave)
    else:
        term.keys(leave)
    term.wait_for(f"{EXITED} 0")


def test_commands_save_reset_load(start, tmp_path: Path) -> None:
    term = start("--policy", "continue")
    assert "Policy: continue" in term.say("/policy")
    screen = term.say("tell me about a bomb")
    assert "source: prompt · continue: flag recorded, reply goes on\nHello there friend!\n" in screen
    assert term.say("/save chat.json").endswith("Saved 2 messages to chat.json.\nyou>\n")
    assert (tmp_path / "chat.json").is_file()
    term.say("/reset")
    assert term.say("hi").endswith(f"you> hi\n{DEMO_BENIGN_REPLY}\nyou>\n")  # "bomb" forgotten
    term.say("/load chat.json")
    assert term.say("hi").count("⚑ red flag") == 2  # "bomb" is back in the context
    assert "turns 3 · flags 2 · " in term.say("/stats")
    screen = term.say("/threshold 7")
    assert "error: the threshold must be a number with 0 < P <= 1, not '7'" in screen
    help_screen = term.say("/help")
    assert "/save FILE" in help_screen and "/threshold [P]" in help_screen
