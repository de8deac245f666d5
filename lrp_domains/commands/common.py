"""What every command group shares: one-line errors, targets from strings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer


def user_errors() -> tuple[type[BaseException], ...]:
    """Library errors that are the user's to fix: printed as one line, exit status 2.

    Read when a command runs (the core, and with it torch, is not imported for ``--help``)."""
    from lrp_domains.core.coverage import LRPCoverageError

    return (ValueError, FileNotFoundError, ImportError, LRPCoverageError)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the library's errors about input and options into ``error: ...`` and exit status 2."""
    errors = user_errors()
    try:
        yield
    except errors as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error


def parse_target(target: str | None) -> int | str | None:
    """A class index when the string is an integer, else a label name."""
    if target is None:
        return None
    return int(target) if target.lstrip("-").isdigit() else target
