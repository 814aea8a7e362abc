"""Terminal and journal output: logging set-up and progress bars.

Under systemd stderr is not a terminal, so log lines are plain (journald adds the
timestamp and priority); on a terminal they go through rich. Progress bars are rich
and vanish on their own when there is no terminal to draw them on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stderr = Console(stderr=True)
stdout = Console()
log = logging.getLogger(__name__)


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


class RateColumn(ProgressColumn):
    """Items per second over the recent past, in the task's own unit (``fields['unit']``)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        return Text("-" if task.speed is None else f"{task.speed:.1f} {unit}/s", style="progress.data.speed")


class Meter:
    """Work done against a total, with a second count riding along (tiles beside interferograms).

    On a terminal it is a rich bar with both rates and the ETA; elsewhere (systemd, a pipe,
    a test) a plain log line every ``interval`` seconds and one at the end, so a journal
    shows progress without a bar's control characters. Use as a context manager.
    """

    def __init__(self, what: str, total: int, unit: str, extra_unit: str, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, terminal: bool | None = None) -> None:
        self.what, self.total, self.unit, self.extra_unit = what, total, unit, extra_unit
        self.done = self.extra = 0
        self._interval, self._clock = interval, clock
        self._started = self._last_line = clock()
        self._logged: tuple[int, int] | None = None
        self._bar: Progress | None = None
        if sys.stderr.isatty() if terminal is None else terminal:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=stderr)
            self._main = self._bar.add_task(what, total=total, unit=unit)
            self._side = self._bar.add_task(extra_unit, total=None, unit=extra_unit)

    def __enter__(self) -> Meter:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._logged != (self.done, self.extra):
            self._log()

    def advance(self, done: int = 0, extra: int = 0) -> None:
        self.done += done
        self.extra += extra
        if self._bar is not None:
            self._bar.advance(self._main, done)
            self._bar.advance(self._side, extra)
        elif self._clock() - self._last_line >= self._interval:
            self._log()

    def _log(self) -> None:
        self._last_line, self._logged = self._clock(), (self.done, self.extra)
        log.info("%s", self.line())

    def line(self) -> str:
        """``what: done/total unit, rate unit/s, rate extra/s, ETA``, over the whole run so far."""
        seconds = max(self._clock() - self._started, 1e-9)
        rate = self.done / seconds
        left = self.total - self.done
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and left > 0 else ("finished" if left <= 0 else "ETA unknown")
        return (f"{self.what}: {self.done}/{self.total} {self.unit}, {rate:.2f} {self.unit}/s, "
                f"{self.extra / seconds:.1f} {self.extra_unit}/s, {eta}")
