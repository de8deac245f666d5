"""What the command-line tests share: run a command in-process, and check a one-line error."""

from __future__ import annotations

from typer.testing import CliRunner

from lrp_domains.cli import app


def run(*args: object):
    """``lrp-domains ARGS`` in this process (arguments as strings)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments: str) -> None:
    """The command failed with exit status 2 and an ``error: ...`` line holding every fragment,
    no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error: " in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
