"""Error types shared by every module.

An ``InputError`` is bad input the user can fix (a corrupt PNG, a malformed annotation, a
model directory without weights): it always names the file and the reason in one line and
maps to exit code 2. Anything else the service raises on purpose is an ``InsarwatchError``
(exit code 1). The CLI turns both into a single line on stderr, never a traceback.
A path with control characters is shown escaped (``printable``), so a file named with a
newline cannot forge a log line. ``one_line`` is the one wording of a pydantic ``ValidationError`` (settings, presets,
annotations, manifest lines) as such a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class InsarwatchError(Exception):
    """A runtime failure with a message fit for one line on stderr."""

    exit_code = 1


class InputError(InsarwatchError):
    """Bad input: names the offending path and why it was refused."""

    exit_code = 2

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = printable(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def printable(text: str | Path) -> str:
    """``text`` with every non-printable character (newline, escape, a byte that is not
    UTF-8) written as its Python escape, so it stays on one line and shows what it is."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for char in str(text))


def one_line(error: ValidationError, noun: str, *, missing: str | None = None, extra: str | None = None) -> str:
    """The first problem in ``error`` as ``<noun> 'a.b': why``, counting the others.

    ``missing`` and ``extra`` replace pydantic's wording for an absent or an unknown
    ``noun`` where the caller has a plainer one.
    """
    problems = error.errors()
    first = problems[0]
    if first["type"] == "json_invalid":
        return f"not valid JSON: {first['msg']}"
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = {"missing": missing, "extra_forbidden": extra}.get(first["type"]) or first["msg"]
    more = len(problems) - 1
    # printable: a key, or an input quoted in the message, may hold a newline.
    return printable(f"{noun} '{where}': {message}" + (f" (and {more} more problems)" if more else ""))
