"""The one error handler of the rfsdk commands: a deliberate error is one line on stderr and exit 1.

Wrap a command's body in :func:`user_errors`::

    @click.command()
    def main(...):
        with user_errors():
            ...

An :class:`rfsdk.RfsdkError` prints its message (it says what is wrong and what to do) and an
``OSError`` (a file that cannot be read or written, a full disk) its reason and path, both as
click's ``Error: ...`` line with exit status 1; click's own usage errors exit with 2. Anything
else is a bug in rfsdk and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from rfsdk.errors import RfsdkError


@contextmanager
def user_errors(hint: dict[type[RfsdkError], str] | None = None) -> Iterator[None]:
    """Turn rfsdk's errors and OS errors raised in the block into one-line click errors.

    ``hint`` adds a command-specific sentence to errors of the given types (e.g. the option
    that works around them).
    """
    try:
        yield
    except RfsdkError as exc:
        extra = next((f" ({text})" for kind, text in (hint or {}).items() if isinstance(exc, kind)), "")
        raise click.ClickException(f"{exc}{extra}") from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"{exc.strerror or exc}{where}") from None
