"""Intake: how interferograms get from the drop directory into the state store's queue.

Two paths feed it and neither is trusted alone. A watchdog observer (inotify, or polling
for network file systems where inotify sees nothing) reports files as they appear; a
reconciliation scan at start-up and every ``rescan_interval`` finds whatever the events
missed (queue overflow, NFS, the daemon being down). Either way a file is only queued once
it is complete: moved into place, or its size and mtime unchanged for ``settle_seconds``,
so a half-written PNG is never read as a bad frame. Files that do not fit the LiCSAR layout
are recorded as rejected with the reason, once. A rejected interferogram whose file has
changed since it was read (a writer that paused past ``settle_seconds``) is queued again.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.api import BaseObserver

from .errors import InputError, printable
from .licsar import DIFF_SUFFIX, SIBLING_SUFFIXES, Interferogram, Unrecognised, discover, interferogram_from_path
from .store import FileStamp, Store

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# What a file arriving looks like. Left out on purpose: opens, reads and closes without a
# write, which the daemon's own decoding of every frame would otherwise feed back to it,
# several events per frame, enough to overflow the kernel's queue under a flood.
ARRIVAL_EVENTS = (FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, DirCreatedEvent,
                  DirMovedEvent)


def make_observer(kind: str, on_overflow: Callable[[], None]) -> BaseObserver:
    """``auto`` takes inotify on Linux, the platform's native observer elsewhere; ``polling``
    is for network file systems. ``on_overflow`` runs (in the observer's thread) when the
    kernel dropped events."""
    if kind == "polling":
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=1.0)
    if kind == "inotify" or sys.platform.startswith("linux"):
        from .inotify import RewatchingObserver

        return RewatchingObserver(on_overflow)
    from watchdog.observers import Observer

    return Observer()


def is_candidate(path: str | Path) -> bool:
    """A PNG in the drop that is not a known sibling product: an interferogram, or a misfit to report."""
    name = os.path.basename(path)
    return name.endswith(".png") and (name.endswith(DIFF_SUFFIX) or not name.endswith(SIBLING_SUFFIXES))


class SettleTracker:
    """Files seen but maybe still being written; ``settled()`` hands back the complete ones.

    A file is complete when its size and mtime have not changed for ``settle_seconds``
    (measured on ``clock``), or at once when it was moved into place (a rename is atomic).
    """

    def __init__(self, settle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[Path, tuple[FileStamp | None, float]] = {}

    def touch(self, path: Path) -> None:
        with self._lock:
            self._pending[path] = (FileStamp.of(path), self._clock())

    def moved_in(self, path: Path) -> None:
        with self._lock:
            self._pending[path] = (FileStamp.of(path), float("-inf"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def settled(self) -> list[Path]:
        now = self._clock()
        ready = []
        with self._lock:
            for path, (seen, since) in list(self._pending.items()):
                current = FileStamp.of(path)
                if current is None:
                    del self._pending[path]  # deleted or renamed away before it settled
                elif current != seen:
                    self._pending[path] = (current, now)
                elif now - since >= self.settle_seconds:
                    del self._pending[path]
                    ready.append(path)
        return sorted(ready)


class Intake(FileSystemEventHandler):
    """Watchdog handler + reconciliation scan, feeding ``store`` through a ``SettleTracker``."""

    def __init__(self, drop_dir: Path, store: Store, settle_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.drop_dir = Path(drop_dir)
        self.store = store
        self.tracker = SettleTracker(settle_seconds, clock)
        self.wake = threading.Event()
        self.rescan_due = threading.Event()

    def watch(self, observer: BaseObserver) -> None:
        observer.schedule(self, str(self.drop_dir), recursive=True, event_filter=list(ARRIVAL_EVENTS))

    def events_lost(self) -> None:
        """The observer's queue overflowed: only a scan can tell what arrived meanwhile."""
        self.rescan_due.set()
        self.wake.set()

    # -- events (watchdog's thread) ----------------------------------------------------

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            # A whole frame directory moved in at once raises no event for the files inside.
            target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            self._walk_into(Path(os.fsdecode(target)))
            return
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        if isinstance(event, FileSystemMovedEvent):
            path = Path(os.fsdecode(event.dest_path))
            if is_candidate(path):
                self.tracker.moved_in(path)
                self.wake.set()
            return
        path = Path(os.fsdecode(event.src_path))
        if is_candidate(path):
            self.tracker.touch(path)

    def _walk_into(self, directory: Path) -> None:
        for current, _, files in os.walk(directory):
            for name in files:
                if is_candidate(name):
                    self.tracker.touch(Path(current) / name)

    # -- the queue's side (the daemon's loop) ---------------------------------------------

    def admit(self, now: datetime | None = None) -> int:
        """Queue every tracked file that has settled; returns how many were queued."""
        settled = self.tracker.settled()
        if not settled:
            return 0
        # One transaction for the lot: a flood of arrivals costs one commit, not three each.
        with self.store.transaction():
            return sum(self._admit_path(path, now or utcnow()) for path in settled)

    def _admit_path(self, path: Path, now: datetime) -> int:
        try:
            interferogram = interferogram_from_path(path, self.drop_dir)
        except InputError as exc:
            if self.store.record_unrecognised(path, exc.reason, now):
                log.warning("rejected %s", exc)
            return 0
        return self._queue(interferogram, now)

    def _queue(self, interferogram: Interferogram, now: datetime) -> int:
        key = interferogram.key
        self.store.discover(key, interferogram.diff_png, str(interferogram.frame), interferogram.primary,
                            interferogram.secondary, now)
        record = self.store.get(key)
        if record is not None and record.state == "rejected":
            if not self.store.reexamine(key, FileStamp.of(interferogram.diff_png), now):
                return 0
            log.info("%s changed since it was rejected (%s); reading it again", key, record.reason)
            return 1
        if record is None or record.state != "discovered":
            return 0
        self.store.queue(key, now)
        log.info("queued %s", key)
        return 1

    def reconcile(self, now: datetime | None = None) -> int:
        """Scan the whole drop: queue complete interferograms the store has not seen, track
        the ones still being written, record misfits. Returns how many were queued."""
        now = now or utcnow()
        settle_ns = int(self.tracker.settle_seconds * 1e9)
        with self.store.transaction():
            queued = self._reconcile_items(now, settle_ns)
        requeued = self.store.requeue_failed(now)
        if queued or requeued:
            log.info("scan of %s queued %d new and %d failed interferograms", self.drop_dir, queued, requeued)
        return queued + requeued

    def _reconcile_items(self, now: datetime, settle_ns: int) -> int:
        queued = 0
        for item in discover(self.drop_dir):
            if isinstance(item, Unrecognised):
                if self.store.record_unrecognised(item.path, item.reason, now):
                    log.warning("rejected %s: %s", printable(item.path), item.reason)
                continue
            record = self.store.get(item.key)
            if record is not None and record.state not in ("discovered", "rejected"):
                continue
            stamp = FileStamp.of(item.diff_png)
            if stamp is not None and time.time_ns() - stamp.mtime_ns >= settle_ns:
                queued += self._queue(item, now)
            else:
                if record is None:
                    self.store.discover(item.key, item.diff_png, str(item.frame), item.primary,
                                        item.secondary, now)
                self.tracker.touch(item.diff_png)
        return queued
