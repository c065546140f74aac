"""The one progress display of the rfsdk commands: a bar on stderr, opened on the first report.

rfsdk's long-running functions take a callback ``progress(item, done, total)``; pass them
:func:`progress_bar`'s::

    with ExitStack() as stack:
        result = convert(..., progress=progress_bar(stack, "writing"))
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
