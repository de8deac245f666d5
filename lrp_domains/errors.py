"""The error type for bad input."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the file, record, row or option and says what to do.

    A ``ValueError``, so code that catches those keeps working; the command line prints it as one
    ``error: ...`` line.
    """
