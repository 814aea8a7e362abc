"""Watchdog's inotify observer, made to survive a queue overflow on a drop of many folders.

When the kernel's inotify queue overflows (``fs.inotify.max_queued_events``, 16,384 by
default), watchdog 7 drops every watch and adds them all again. Each dropped watch queues
an ``IN_IGNORED`` event, so on a drop holding more interferogram folders than the queue
holds events, the recovery itself overflows the queue, and the observer thread spends the
rest of its life rebuilding watches while the processing loop starves (measured: 10,000
pair folders moved in at once drained at 5–8 tiles/s). Here an overflow keeps the watches
it has and adds one for each folder that appeared unwatched while events were lost, which
queues nothing, and tells the caller that events were lost, so that the intake rescans the
drop at once instead of waiting for the next scheduled scan.
Linux only; imported lazily by ``intake.make_observer``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


@dataclass
class _RewatchingGroup(InotifyWatchGroup):
    on_overflow: Callable[[], None] = field(default=_nothing, kw_only=True)

    def on_queue_overflow(self) -> None:
        with self._lock:
            if not self.is_active:
                return
            self._move_event_grouper.discard_pending_events()
            if self.is_recursive:
                self._watch_new_folders()
        log.warning("inotify queue overflowed below %s: events were lost, rescanning", os.fsdecode(self.path))
        self.on_overflow()

    def _watch_new_folders(self) -> None:
        for root, folders, _ in os.walk(self.path, followlinks=self.follow_symlink):
            for name in folders:
                path = os.path.join(root, name)
                if path not in self._active_callbacks_by_path and (self.follow_symlink or not os.path.islink(path)):
                    self._add_callback(path)  # one that vanished meanwhile is skipped, as watchdog does


class _RewatchingEmitter(InotifyEmitter):
    def __init__(self, *args: Any, on_overflow: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_overflow = on_overflow

    def on_thread_start(self) -> None:
        self._inotify = _RewatchingGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
            on_overflow=self._on_overflow,
        )


class RewatchingObserver(InotifyObserver):
    """An ``InotifyObserver`` whose overflow recovery neither loops nor goes unreported."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        # Watchdog warns each time a folder made with its parents (mkdir -p, a sync tool) is
        # watched twice — once by walking the parent, once by its own event — and the warning
        # carries every watched path: megabytes in the journal on a large drop, for a re-add
        # of the same callback that changes nothing.
        warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning)
        super().__init__()
        self._emitter_class = _RewatchingEmitter
        self._emitter_kwargs["on_overflow"] = on_overflow
