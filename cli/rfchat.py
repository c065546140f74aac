"""rfchat: a guarded terminal chat on GuardedChat."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click

from rfsdk import GuardedChat, RfsdkError, SamplingConfig, default_model
from rfsdk.events import EndEvent, Event

from .render import TextRenderer, json_renderer

HELP = """Commands:
  /help               this help
  /reset              forget the conversation
  /system [TEXT]      show or set the system prompt (empty TEXT clears it)
  /policy [NAME]      show or set the policy: halt, continue, reflect
  /threshold [P]      show or set the P(<rf>) threshold, 0 < P <= 1
  /save FILE          save the conversation as JSON
  /load FILE          load a conversation saved with /save
  /stats              tokens/s and flags so far
  /quit               leave (Ctrl-D works too)
Ctrl-C stops the reply being written; at the prompt it leaves."""


class Session:
    """One rfchat session: the chat plus running statistics."""

    def __init__(self, chat: GuardedChat, render: Callable[[Event], None]) -> None:
        self.chat = chat
        self.render = render
        self.turns = 0
        self.flags = 0
        self.tokens = 0
        self.decode_s = 0.0

    def turn(self, message: str) -> EndEvent | None:
        end = None
        with _cancel_on_sigint(self.chat):
            for event in self.chat.stream(message):
                self.render(event)
                if isinstance(event, EndEvent):
                    end = event
        if end is not None:
            self.turns += 1
            self.flags += len(end.flags)
            self.tokens += end.usage.completion_tokens
            if end.timings.tokens_per_s:
                self.decode_s += end.usage.completion_tokens / end.timings.tokens_per_s
        return end

    def stats(self) -> str:
        rate = self.tokens / self.decode_s if self.decode_s else 0.0
        return (
            f"turns {self.turns}, reply tokens {self.tokens}, {rate:.1f} tokens/s, "
            f"flags {self.flags}, policy {self.chat.policy}, threshold {self.chat.threshold:g}"
        )

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        chat = self.chat
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            click.echo(HELP)
        elif name == "reset":
            chat.reset()
            click.echo("Conversation cleared.")
        elif name == "system":
            if arg or line.rstrip() != "/system":
                chat.system = arg or None
            click.echo(f"System prompt: {chat.system or '(none)'}")
        elif name == "policy":
            if arg:
                chat.policy = arg
            click.echo(f"Policy: {chat.policy}")
        elif name == "threshold":
            if arg:
                chat.threshold = float(arg)
            click.echo(f"Threshold: {chat.threshold:g}")
        elif name == "save":
            _need(arg, "/save FILE")
            chat.save_history(Path(arg).expanduser())
            click.echo(f"Saved {len(chat.history)} messages to {arg}.")
        elif name == "load":
            _need(arg, "/load FILE")
            chat.load_history(Path(arg).expanduser())
            click.echo(f"Loaded {len(chat.history)} messages from {arg}.")
        elif name == "stats":
            click.echo(self.stats())
        else:
            click.echo(f"Unknown command /{name}. Type /help for the list.")
        return True


def _need(arg: str, usage: str) -> None:
    if not arg:
        raise click.UsageError(f"usage: {usage}")


@contextmanager
def _cancel_on_sigint(chat: GuardedChat) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: chat.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _build_chat(
    model: str | None, threshold, policy, system, temperature, max_tokens, n_ctx, n_gpu_layers,
    unguarded, seed, quiet,
) -> GuardedChat:
    if model is None:
        info = default_model()
        model = str(info.path)
        if not quiet:
            click.echo(click.style(f"rfchat: using the {info.description}", dim=True), err=True)
    return GuardedChat(
        model,
        threshold=threshold,
        policy=policy,
        system=system,
        sampling=SamplingConfig(temperature=temperature, max_tokens=max_tokens, seed=seed),
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        allow_unguarded=unguarded,
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", help="GGUF path or hf://org/repo/file.gguf (default: bundled).")
@click.option("--threshold", "-t", type=click.FloatRange(0, 1, min_open=True), help="P(<rf>) threshold.")
@click.option("--policy", "-p", type=click.Choice(["halt", "continue", "reflect"]), default="halt", show_default=True)
@click.option("--system", "-s", help="System prompt.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--n-ctx", type=click.IntRange(min=64), help="Context size (default: model's, at most 4096).")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True, help="Layers to offload to a GPU (-1: all).")
@click.option("--seed", type=int, help="Sampling seed, for repeatable replies.")
@click.option("--once", "once", metavar="PROMPT", help="Answer one prompt and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.option("--allow-unguarded", is_flag=True, help="Chat with a model that has no <rf> token.")
def main(model, threshold, policy, system, temperature, max_tokens, n_ctx, n_gpu_layers, seed, once, as_json, allow_unguarded):
    """Chat with a local model whose replies are watched by the <rf> red-flag guard."""
    interactive = once is None and sys.stdin.isatty()
    try:
        chat = _build_chat(
            model, threshold, policy, system, temperature, max_tokens, n_ctx, n_gpu_layers,
            allow_unguarded, seed, quiet=as_json,
        )
    except (RfsdkError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    session = Session(chat, json_renderer if as_json else TextRenderer())
    if once is not None:
        _turn_or_fail(session, once)
        return
    if not interactive:
        for line in sys.stdin:
            if line.strip():
                _turn_or_fail(session, line.rstrip("\n"))
        return
    click.echo(click.style("Type a message, /help for commands, Ctrl-D to leave.", dim=True))
    while True:
        try:
            line = click.prompt(click.style("you", fg="cyan", bold=True), prompt_suffix="> ", default="", show_default=False)
        except (EOFError, KeyboardInterrupt, click.Abort):
            click.echo()
            return
        if not line.strip():
            continue
        try:
            if line.startswith("/"):
                if not session.command(line.strip()):
                    return
            else:
                session.turn(line)
        except (RfsdkError, ValueError, OSError, click.UsageError) as exc:
            click.echo(click.style(f"error: {exc}", fg="red"), err=True)


def _turn_or_fail(session: Session, message: str) -> None:
    try:
        session.turn(message)
    except (RfsdkError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
