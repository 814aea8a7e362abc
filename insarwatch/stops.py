"""Named stop points, a debugging and fault-injection facility: with
``INSARWATCH_STOP_AT="<moment> <site>"`` in its environment, the process stops itself
(SIGSTOP, every thread at once) the first time it reaches that point, so whoever started it
can SIGKILL it exactly there (a crash at a commit boundary), or fill the disk under it and
let it go on (SIGCONT). The points are the state database's commits (``before``/``after
commit <opener>``, named by the function that opened the outermost transaction, e.g.
``after commit Store.claim``) and atomic file writes (``before write <folder>``, e.g.
``before write sent``). Unset, as in production, a point costs one environment lookup;
nothing else in the service reads this variable.
"""

from __future__ import annotations

import os
import signal
import sys

VARIABLE = "INSARWATCH_STOP_AT"

_stopped = False  # once per process: a process let go on is not stopped again at the next commit


def opener() -> str:
    """The qualified name of the function whose ``with ...transaction()`` is being committed:
    the first caller outside contextlib and the store's private helpers (``Store._transition``
    opens for ``Store.reject``, ``Store.queue`` and the others that call it)."""
    frame = sys._getframe(3)  # past this function, point() and the transaction itself
    while frame.f_back is not None and (
        frame.f_code.co_filename.endswith("contextlib.py")
        or (frame.f_code.co_filename.endswith("store.py") and frame.f_code.co_name.startswith("_")
            and not frame.f_code.co_name.startswith("__"))
    ):
        frame = frame.f_back
    return frame.f_code.co_qualname


def point(moment: str, site: str | None = None) -> None:
    """Stop here if asked to; ``site`` None names the opener of the transaction being committed."""
    global _stopped
    wanted = os.environ.get(VARIABLE)
    if not wanted or _stopped or not wanted.startswith(moment):
        return
    if wanted == f"{moment} {site if site is not None else opener()}":
        _stopped = True
        os.kill(os.getpid(), signal.SIGSTOP)
