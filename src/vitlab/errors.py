"""Bad input a user can fix: one line naming the key to change, exit code 2, before any work."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix: reported as one line and exit code 2, before any training.

    The message starts with the key the user typed (``task.pretrained: no such file: ...``).
    """


def existing_file(path: str | os.PathLike, key: str) -> Path:
    """``path`` as a ``Path`` when it names a file; a ``UserError`` naming ``key`` otherwise."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise UserError(f"{key}: no such file: {resolved}")
    return resolved


@contextmanager
def exit_on_user_error(report: Callable[[str], object]) -> Iterator[None]:
    """What an entry point does with a ``UserError`` raised inside: ``report``s it as one line,
    ``error: <message>``, and exits with code 2."""
    try:
        yield
    except UserError as error:
        report(f"error: {error}")
        raise SystemExit(2) from None
