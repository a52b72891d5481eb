"""Errors that reach the user as one clear sentence.

Library code raises these; the CLI turns them into a message on stderr and an exit code,
with no traceback. Anything else escaping is a bug in compress.
"""

from __future__ import annotations


class CompressError(Exception):
    """Base class for errors that are explained to the user."""

    exit_code = 2


class BadInput(CompressError):
    """The user's input (file, option, recipe, data) is wrong: exit code 2."""


class Unsupported(CompressError):
    """The input is valid but compress cannot handle it (an architecture, an operator): exit code 2."""


class Unavailable(CompressError):
    """A runtime, device or export is not there: reported as an 'unavailable' row with this reason."""


def quoted(name: str) -> str:
    """A name (a tensor's, a key's) for a one-line message: in quotes, escaped if it holds control
    characters, so a corrupt file cannot break the message over several lines."""
    return f"'{name}'" if name.isprintable() else ascii(name)
