"""What every command group shares: one-line errors, targets from strings."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import typer

#: File-system failures that are the user's to fix (one line, exit status 2), not bugs.
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def user_errors() -> tuple[type[BaseException], ...]:
    """Library errors that are the user's to fix: printed as one line, exit status 2.

    Read when a command runs (the core, and with it torch, is not imported for ``--help``)."""
    from lrp_domains.core.engine.coverage import LRPCoverageError

    return (ValueError, FileNotFoundError, ImportError, LRPCoverageError)


@contextlib.contextmanager
def one_line_errors(*also: type[BaseException]) -> Iterator[None]:
    """Turn the library's errors about input and options (and those of the types ``also``) into
    ``error: ...`` and exit status 2."""
    errors = user_errors() + also
    try:
        yield
    except errors as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    except OSError as error:  # the disk, not the input: full, over quota, read-only, not ours to write
        if error.errno not in STORAGE_ERRORS:
            raise
        where = f"{error.filename}: " if error.filename else ""
        typer.echo(
            f"error: {where}{error.strerror}; nothing of what was written before is lost. Free some space or "
            "choose another --out, then run the command again",
            err=True,
        )
        raise typer.Exit(2) from error


def parse_target(target: str | None) -> int | str | None:
    """A class index when the string is an integer, else a label name."""
    if target is None:
        return None
    return int(target) if target.lstrip("-").isdigit() else target
