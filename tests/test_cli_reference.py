"""docs/cli.md is the `--help` of every command as this version prints it.

If a command's help changed, rewrite the page with ``python tests/test_cli_reference.py``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

PAGE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = {  # program name: module of its click command (the console scripts in pyproject.toml)
    "rfchat": "rfsdk.cli.rfchat",
    "rf-convert": "rfsdk.cli.convert",
    "rf-train": "rfsdk.cli.train",
    "rf-eval": "rfsdk.cli.evaluate",
    "rf-serve": "rfsdk.cli.serve",
}
INTRO = """# Command-line reference

The `--help` of every command, as printed by this version (written by
`python tests/test_cli_reference.py`; a test checks it is current). Background:
[converting.md](converting.md), [training.md](training.md), [server.md](server.md); rfchat in
use: the [README](../README.md#rfchat).

All command-line code lives in `cli/` (installed as `rfsdk.cli`) and shares one error handling
(`cli/errors.py`): a deliberate error is one line, `Error: ...`, on stderr with exit status 1
(2 for a usage error), never a traceback. Long runs (rf-train, rf-eval) report progress on
stderr, one line per tenth of a stage when stderr is a file.
"""


def _sections(name: str, command: click.Command, parent: click.Context | None = None) -> list[str]:
    context = click.Context(command, info_name=name, parent=parent, terminal_width=80, max_content_width=80)
    title = context.command_path
    sections = [f"## {title}\n\n```\n{command.get_help(context)}\n```\n"]
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(context):
            sub = command.get_command(context, sub_name)
            if sub is not None and not sub.hidden:
                sections += _sections(sub_name, sub, context)
    return sections


def reference() -> str:
    """The page's text: the intro, then one section per command and subcommand."""
    sections = [INTRO]
    for name, module in COMMANDS.items():
        sections += _sections(name, importlib.import_module(module).main)
    return "\n".join(sections)


def test_the_command_reference_is_current() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference(), "docs/cli.md is stale: run python tests/test_cli_reference.py"


def test_the_reference_covers_every_installed_command() -> None:
    from importlib.metadata import entry_points

    installed = {e.name: e.value.split(":")[0] for e in entry_points(group="console_scripts") if e.value.startswith("rfsdk.")}
    assert installed == COMMANDS


if __name__ == "__main__":
    PAGE.write_text(reference(), encoding="utf-8")
    print(f"wrote {PAGE}", file=sys.stderr)
