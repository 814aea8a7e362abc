"""Terminal and journal output: logging set-up and progress bars.

Under systemd stderr is not a terminal, so log lines are plain (journald adds the
timestamp and priority); on a terminal they go through rich. Progress bars are rich
and vanish on their own when there is no terminal to draw them on.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True)
stdout = Console()


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("PIL", "watchdog", "apscheduler", "urllib3", "filelock", "mail.log", "absl", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def progress(transient: bool = False) -> Progress:
    """A rich progress bar on stderr; use as a context manager around long work."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
    )
