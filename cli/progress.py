"""The progress displays of the rfsdk commands, both on stderr.

rfsdk's long-running functions take a callback ``progress(item, done, total)``. A command that
does one long thing (converting a model) passes :func:`progress_bar`'s, a bar opened on the
first report::

    with ExitStack() as stack:
        result = convert(..., progress=progress_bar(stack, "writing"))

A command that runs many named stages for minutes or hours (training, evaluation) passes
:func:`stage_progress`'s, whose lines also read well in a log file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

Progress = Callable[[str, int, int], None]
"""A progress callback: ``(item being worked on, units done, units in all)``."""


def progress_bar(stack: ExitStack, label: str, *, intro: str | None = None) -> Progress:
    """A progress callback that opens a click progress bar on stderr at its first call.

    ``intro`` is printed on its own line first (say, why this takes a while). The bar closes
    with ``stack``. Off a terminal click shows only the label.
    """
    bars: list[ProgressBar[str | None]] = []

    def progress(item: str, done: int, total: int) -> None:
        if not bars:
            if intro:
                click.echo(intro, err=True)
            bar = click.progressbar(length=total, label=label, item_show_func=lambda item: item, file=sys.stderr)
            bars.append(stack.enter_context(bar))
        bars[0].update(done - bars[0].pos, current_item=item)

    return progress


def stage_progress() -> Progress:
    """A progress callback for long runs of named stages (training, evaluation): lines on stderr.

    Its calls are ``(stage, done, total)``. On a terminal each stage's line is redrawn in place;
    off a terminal (a log file under ``nohup``) a line is written when a stage starts, at every
    tenth of it and when it ends, so a log shows how far a run got.
    """

    def progress(stage: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            click.echo(f"\r{stage}: {done}/{total}" + ("\n" if done >= total else ""), nl=False, err=True)
        elif done == 0 or done >= total or done % max(total // 10, 1) == 0:
            click.echo(f"{stage}: {done}/{total}", err=True)

    return progress
