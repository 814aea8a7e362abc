"""Error types shared by every module.

An ``InputError`` is bad input the user can fix (a corrupt PNG, a malformed annotation, a
model directory without weights): it always names the file and the reason in one line and
maps to exit code 2. Anything else the service raises on purpose is an ``InsarwatchError``
(exit code 1). The CLI turns both into a single line on stderr, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class InsarwatchError(Exception):
    """A runtime failure with a message fit for one line on stderr."""

    exit_code = 1


class InputError(InsarwatchError):
    """Bad input: names the offending path and why it was refused."""

    exit_code = 2

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
