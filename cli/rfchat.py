"""rfchat: a guarded terminal chat on GuardedChat."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from rfsdk import Action, _constants, GuardedChat, MissingRfTokenError, SamplingConfig, default_model
from rfsdk._policies import ACTIONS
from rfsdk._prompt import check_text

from .commands import KEYS, command_table
from .console import banner, interact
from .errors import user_errors
from .model_arg import resolve_model_arg
from .progress import progress_bar
from .render import JsonUi, TextUi
from .session import Session

_ASSEMBLY_INTRO = "rfchat: first use, assembling the default model (base + the shipped <rf> adapter)..."
_EPILOG = f"""\b
Examples:
  rfchat                                  chat with the default model
  rfchat -m model.gguf -p continue -t 0.3
  rfchat -m org/repo                      the only .gguf file of a Hugging Face repo
  rfchat --once 'Hello' --json            one turn, events as JSON lines
  printf 'Hello\\n/stats\\n' | rfchat       one message or /command per line
  rfchat --prefill 'Sure, here is'        test a prefilling attack

\b
Commands:
{command_table()}

{KEYS.replace(chr(10), " ")}
"""


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.option("--model", "-m", metavar="MODEL", help="GGUF file, hf://org/repo/file.gguf, or a Hugging Face repo id org/repo.  [default: the bundled model]")
@click.option("--model-file", metavar="FILE", help="With a repo id: which .gguf file of the repo.")
@click.option("--policy", "-p", type=click.Choice(ACTIONS), default="halt", show_default=True, help="What to do when the guard fires.")
@click.option("--threshold", "-t", type=click.FloatRange(0, 1, min_open=True), metavar="P", help="Fire when P(<rf>) >= P.  [default: the model's calibrated value, else 0.5]")
@click.option("--system", "-s", metavar="TEXT", help="System prompt.")
@click.option("--prefill", metavar="TEXT", default="", help="Start every reply with TEXT (to test prefilling attacks).")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True, help="Sampling temperature; 0 is greedy.")
@click.option("--repeat-penalty", type=click.FloatRange(min=0, min_open=True), default=1.1, show_default=True, metavar="R", help="Penalise tokens already in the reply (1: off); small models loop without it.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True, help="Longest reply, in tokens.")
@click.option("--seed", type=int, help="Sampling seed, for repeatable replies.")
@click.option("--n-ctx", type=click.IntRange(min=64), help="Context size in tokens.  [default: the model's, at most 4096]")
@click.option("--threads", type=click.IntRange(min=1), metavar="N", help="CPU threads for llama.cpp.  [default: half the cores]")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True, metavar="N", help="Layers to offload to a GPU (-1: all; needs a GPU build of llama-cpp-python).")
@click.option("--once", metavar="MESSAGE", help="Answer one message and exit.")
@click.option("--json", "as_json", is_flag=True, help="Write events and command results as JSON lines.")
@click.option("--quiet", "-q", is_flag=True, help="No banner or notes, only the conversation.")
@click.option("--allow-unguarded", is_flag=True, help="Chat with a model that has no <rf> token (no guard).")
@click.version_option(package_name="rfsdk", prog_name="rfchat", message="%(prog)s %(version)s")
@click.pass_context
def main(
    ctx: click.Context,
    model: str | None,
    model_file: str | None,
    policy: Action,
    threshold: float | None,
    system: str | None,
    prefill: str,
    temperature: float,
    repeat_penalty: float,
    max_tokens: int,
    seed: int | None,
    n_ctx: int | None,
    threads: int | None,
    n_gpu_layers: int,
    once: str | None,
    as_json: bool,
    quiet: bool,
    allow_unguarded: bool,
) -> None:
    """Chat with a local model whose replies are watched by the <rf> red-flag guard.

    Type a message to get a reply, or a /command (listed below). With --once, or with
    input piped in, rfchat runs without a prompt and exits when done; the exit status
    is 1 if any line failed. Colours are used only on a terminal, and never with NO_COLOR set.
    """
    if model_file is not None and model is None:
        raise click.UsageError("--model-file names a file of the repo given with --model org/repo.")
    if _constants.no_color():
        ctx.color = False
    quiet = quiet or as_json
    with user_errors(hint={MissingRfTokenError: "In rfchat: --allow-unguarded."}), ExitStack() as stack:
        check_text("--prefill", prefill)  # refused now, not at every turn
        if model is None:
            progress = progress_bar(stack, "assembling", intro=_ASSEMBLY_INTRO)
            info = default_model(progress=None if quiet else progress)
            path = info.path
            if not quiet:
                click.echo(click.style(f"rfchat: using the {info.description}", dim=True), err=True)
        else:
            path = resolve_model_arg(model, model_file)
        chat = GuardedChat(
            path,
            threshold=threshold,
            policy=policy,
            system=system,
            sampling=SamplingConfig(temperature=temperature, repeat_penalty=repeat_penalty, max_tokens=max_tokens, seed=seed),
            n_ctx=n_ctx,
            n_threads=threads,
            n_gpu_layers=n_gpu_layers,
            allow_unguarded=allow_unguarded,
        )
    session = Session(chat, JsonUi() if as_json else TextUi(notes=not quiet), prefill=prefill)
    if once is not None:
        with user_errors():
            session.turn(once)
    elif sys.stdin.isatty():
        if not quiet:
            banner(session)
        interact(session, color=ctx.color is not False and sys.stdout.isatty())
    else:
        for line in sys.stdin:
            if not session.handle(line):
                break
    chat.close()
    if session.errors:
        ctx.exit(1)
