"""Errors a user can act on, each with the process exit code the CLI returns for it.

Exit codes: 0 success, 1 some inputs failed, 2 usage error, 3 model or data not available.
"""
from __future__ import annotations


class PixpromptError(Exception):
    """An error with a one-line message meant for the user; the CLI prints it without a traceback."""

    exit_code = 1


class UsageError(PixpromptError):
    """Bad arguments, labels, templates or configuration (exit code 2)."""

    exit_code = 2


class UnavailableError(PixpromptError):
    """A model, weights file or dataset that cannot be found or loaded (exit code 3)."""

    exit_code = 3


class InputFailedError(PixpromptError):
    """Some inputs could not be processed (exit code 1)."""

    exit_code = 1


def first_line(error: BaseException, limit: int | None = None) -> str:
    """An exception's first message line (at most `limit` characters), or its type name when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def shown(value: object, limit: int = 60) -> str:
    """A user's value as a message quotes it: its repr (so no line break or control character shows raw), cut to
    `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
