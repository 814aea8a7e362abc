"""Intake: the settle rule on a driven clock, and a real inotify observer on a temp drop.

The overflow test lowers the kernel's ``fs.inotify.max_queued_events`` just while the
observer's inotify instance is created (the limit is fixed per instance at creation), so
a burst of ordinary file creations really overflows the queue; it needs root and is
skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent
from watchdog.observers.api import BaseObserver

from insarwatch.intake import Intake, SettleTracker, make_observer
from insarwatch.store import Store
from helpers import wait_for

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
PAIR = "124D_04854_171313/interferograms/20190101_20190113"
PNG = "20190101_20190113.geo.diff.png"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_file_settles_only_after_it_stops_changing(tmp_path: Path) -> None:
    clock = Clock()
    tracker = SettleTracker(2.0, clock)
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    tracker.touch(path)
    clock.now = 1.9
    assert tracker.settled() == []
    path.write_bytes(b"xy")  # still being written: the wait starts again
    clock.now = 3.0
    assert tracker.settled() == []
    clock.now = 4.9
    assert tracker.settled() == []
    clock.now = 5.0
    assert tracker.settled() == [path]
    assert len(tracker) == 0


def test_a_moved_in_file_is_complete_at_once_and_a_vanished_one_is_forgotten(tmp_path: Path) -> None:
    tracker = SettleTracker(60.0, Clock())
    moved, gone = tmp_path / "moved.png", tmp_path / "gone.png"
    moved.write_bytes(b"x")
    gone.write_bytes(b"x")
    tracker.moved_in(moved)
    tracker.touch(gone)
    gone.unlink()
    assert tracker.settled() == [moved]
    assert len(tracker) == 0


class RecordingIntake(Intake):
    """The real handler, keeping every event watchdog hands it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[FileSystemEvent] = []

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events.append(event)
        super().on_any_event(event)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state.db") as opened:
        yield opened


def start(intake: Intake, observer: BaseObserver) -> BaseObserver:
    intake.watch(observer)
    observer.start()
    return observer


def stop(observer: BaseObserver) -> None:
    observer.stop()
    observer.join(10)


@linux_only
def test_the_daemons_own_reads_of_a_frame_raise_no_events(tmp_path: Path, store: Store) -> None:
    drop = tmp_path / "drop"
    (drop / PAIR).mkdir(parents=True)
    frame = drop / PAIR / PNG
    frame.write_bytes(b"\x89PNG" + bytes(1000))
    intake = RecordingIntake(drop, store, settle_seconds=0)
    observer = start(intake, make_observer("inotify", intake.events_lost))
    try:
        for _ in range(20):
            frame.read_bytes()
        marker = drop / PAIR / "later.geo.diff.png"
        marker.write_bytes(b"x")  # events arrive in order: once this one is seen, the reads were too
        wait_for(lambda: any(e.src_path == str(marker) for e in intake.events), 10, "the marker's event")
    finally:
        stop(observer)
    about_frame = {e.event_type for e in intake.events if str(frame) in (e.src_path, getattr(e, "dest_path", ""))}
    assert about_frame == set(), about_frame
    # The marker's first event can come before its bytes are written; it settles once they are.
    wait_for(lambda: intake.tracker.settled() == [marker], 10, "the marker to settle")


@pytest.fixture
def small_queue() -> Iterator[Callable[[Callable[[], None]], BaseObserver]]:
    """Builds observers whose inotify instance holds at most 16 events (root only)."""
    if os.geteuid() != 0 or not QUEUE_LIMIT.exists():
        pytest.skip("changing fs.inotify.max_queued_events needs root on Linux")

    def build(on_overflow: Callable[[], None]) -> BaseObserver:
        previous = QUEUE_LIMIT.read_text()
        QUEUE_LIMIT.write_text("16\n")
        try:
            return make_observer("inotify", on_overflow)
        finally:
            QUEUE_LIMIT.write_text(previous)

    return build


def burst_while_the_observer_waits(directory: Path, files: int) -> None:
    """Make ``files`` files while the observer's thread cannot read its queue.

    touch(1) makes them at C speed while this thread keeps the GIL, which the observer's
    thread needs to read each batch of events; a Python loop, releasing the GIL at every
    syscall, would let it read them as fast as they come and the queue might never fill.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        touch = subprocess.Popen(["touch", *(f"{number}.txt" for number in range(files))], cwd=directory)
        until = time.perf_counter() + 1.0
        while time.perf_counter() < until:
            pass
    finally:
        sys.setswitchinterval(interval)
    assert touch.wait(30) == 0


@linux_only
def test_an_overflow_is_reported_and_recovered_from_once(
    tmp_path: Path, store: Store, small_queue: Callable[[Callable[[], None]], BaseObserver],
) -> None:
    drop = tmp_path / "drop"
    # More watched folders than the queue holds events: a recovery that drops and re-adds
    # every watch queues an IN_IGNORED per folder and overflows again, for ever.
    for number in range(100):
        (drop / "124D_04854_171313" / "interferograms" / f"old{number:03d}").mkdir(parents=True)
    # Watched from the start: a folder made later is watched only once its own event has been
    # read, and a burst inside it that finishes first queues nothing.
    burst = drop / "burst"
    burst.mkdir()
    intake = Intake(drop, store, settle_seconds=0)
    overflows: list[float] = []

    def lost() -> None:
        overflows.append(time.monotonic())
        intake.events_lost()

    observer = start(intake, small_queue(lost))
    try:
        burst_while_the_observer_waits(burst, 3000)
        (drop / PAIR).mkdir(parents=True)  # made while events are being lost
        wait_for(lambda: bool(overflows), 10, "the overflow to be reported")
        assert intake.rescan_due.is_set() and intake.wake.is_set()

        def settled() -> bool:
            seen = len(overflows)
            time.sleep(1.0)
            return len(overflows) == seen

        wait_for(settled, 30, "the observer to stop overflowing")
        frame = drop / PAIR / PNG
        frame.write_bytes(b"x")
        wait_for(lambda: intake.tracker.settled() == [frame], 10, "an event from a folder made during the overflow")
    finally:
        stop(observer)


def test_a_self_referencing_symlink_is_rejected_and_the_scan_goes_on(tmp_path: Path, store: Store,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    drop = tmp_path / "drop"
    good = drop / PAIR / PNG
    good.parent.mkdir(parents=True)
    good.write_bytes(b"png")
    os.utime(good, (0, 0))
    looped = drop / "124D_04854_171313/interferograms/20190201_20190213/20190201_20190213.geo.diff.png"
    looped.parent.mkdir(parents=True)
    looped.symlink_to(looped.name)
    named = drop / "124D_04854_171313/interferograms/20190301_20190313\nforged/x.geo.diff.png"
    named.parent.mkdir(parents=True)
    named.write_bytes(b"png")
    intake = Intake(drop, store, settle_seconds=0)
    assert intake.reconcile() == 1
    assert store.get("124D_04854_171313/20190101_20190113").state == "queued"
    refused = store.get(str(looped))
    assert (refused.state, refused.error) == ("rejected", "symlink loop; refused")
    assert store.get(str(named)).state == "rejected"
    assert all("\n" not in record.getMessage() for record in caplog.records)
    assert any("20190301_20190313\\nforged" in record.getMessage() for record in caplog.records)
