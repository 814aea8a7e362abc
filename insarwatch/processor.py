"""The daemon's processing loop: claimed interferograms read ahead of the model, tiles batched.

``Processor`` owns what is in flight between the store's queue and its results: it claims
queued interferograms (at most ``watch.queue_max`` of them and ``watch.pixels_in_flight``
decoded pixels, counted from their PNG headers), reads them with ``pipeline.read_safely``
(in threads beside a GPU; between batches on a CPU, see ``reader_threads``), batches the
tiles of several interferograms into one model call (``batch.tiles``, or what is waiting
after ``batch.max_wait_seconds``), and finishes each interferogram through
``pipeline.complete`` and ``pipeline.store_completed`` once all its tiles are described.
The stage functions it calls are in ``pipeline.py``; this module is only their loop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Settings
from .describe import Bundle, Described
from .errors import InputError
from .imaging import Tile, read_png_header
from .pipeline import (
    Completed,
    Failed,
    Rejected,
    Tiled,
    complete,
    frame_calibration,
    read_safely,
    store_completed,
    store_failed,
    store_rejected,
)
from .store import StaleTransition, Store

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    tiled: Tiled
    described: dict[int, Described] = field(default_factory=dict)



class InlineExecutor(Executor):
    """Runs each job when it is submitted, in the submitting thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def reader_threads(settings: Settings) -> int:
    """Threads for ``read_interferogram``: none beside a model on the CPU, which already uses every core.

    Measured on a 2-core host with the tiny model: two threads reading at a tenth of their
    capacity cut its captioning rate by 11-25 %, at full capacity by 98 % (torch's worker
    threads wait on each other whenever a core or the GIL is taken), while reading a
    single-tile frame between batches costs its own 3-4 ms and nothing more.
    """
    if settings.batch.reader_threads is not None:
        return settings.batch.reader_threads
    from .captioner import pick_device

    return 2 if pick_device(settings.captioning.device).type == "cuda" else 0


def _header_pixels(path: str) -> int:
    """Width x height from the PNG header, before any decoding; 0 for a file the read will
    reject anyway (its reason recorded there)."""
    try:
        return read_png_header(Path(path)).pixels
    except (InputError, OSError):
        return 0


class Processor:
    """Claims queued interferograms, reads them ahead of the model, batches their tiles.

    ``step()`` does one unit of work and says whether it did anything, so the daemon's loop
    can heartbeat and check for shutdown between steps. Memory is bounded: at most
    ``watch.queue_max`` interferograms, and ``watch.pixels_in_flight`` decoded pixels (from
    their PNG headers, before decoding), are claimed and held at a time.
    """

    def __init__(self, settings: Settings, store: Store, bundle: Callable[[], Bundle | None],
                 clock: Callable[[], datetime], wake: threading.Event | None = None) -> None:
        self.settings = settings
        self.store = store
        self._bundle = bundle
        # Set when a frame read ahead is ready, so an idle loop resumes at once instead of
        # sleeping out its poll interval while the model could be working.
        self._wake = wake or threading.Event()
        self._clock = clock
        workers = reader_threads(settings)
        self._inline = workers == 0
        self._pool: Executor = (InlineExecutor() if self._inline else
                                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="insarwatch-read"))
        self._reading: deque[Future[Tiled | Rejected | Failed]] = deque()
        self._ready: deque[tuple[_InFlight, Tile]] = deque()
        self._in_flight: dict[str, _InFlight] = {}
        self._oldest_ready: float | None = None
        self._closed = False
        self._pixels: dict[str, int] = {}  # header pixels of each interferogram held

    @property
    def held(self) -> int:
        """Interferograms claimed from the queue and not yet finished."""
        return len(self._reading) + len(self._in_flight)

    @property
    def mid_interferogram(self) -> bool:
        """Some interferogram has tiles described and tiles still waiting: a model swap now
        would mix two versions in one decision."""
        return any(0 < len(f.described) < len(f.tiled.tiles) for f in self._in_flight.values())

    def step(self, flush: bool, monotonic: float) -> bool:
        """Claim, collect frames read ahead, and run a batch when it is full (or ``flush``)."""
        worked = self._claim()
        worked |= self._collect()
        size = self.settings.batch.tiles
        if self._ready and self._oldest_ready is None:
            self._oldest_ready = monotonic
        waited = self._oldest_ready is not None and monotonic - self._oldest_ready >= \
            self.settings.batch.max_wait_seconds
        if len(self._ready) >= size or (self._ready and (flush or waited or self._nothing_coming())):
            bundle = self._bundle()
            if bundle is not None:
                self._run_batch(bundle)
                self._oldest_ready = monotonic if self._ready else None
                worked = True
        return worked

    def _nothing_coming(self) -> bool:
        """No frame is being read or waiting in the queue: a partial batch is all there is."""
        return not self._reading and not self.store.in_state("queued", limit=1)

    def _claim(self) -> bool:
        bundle = self._bundle()
        if self._closed or bundle is None:
            return False  # no model yet: leave frames queued rather than holding them
        size = self.settings.batch.tiles
        room = self.settings.watch.queue_max - self.held
        if self._inline:  # read now, in this thread: only what the next batch needs
            room = min(room, size - len(self._ready))
        if room <= 0 or len(self._ready) >= 2 * size:
            return False
        room = self._room_for_pixels(room)
        if room <= 0:
            return False
        records = self.store.claim(room, self._clock())
        for record in records:
            self._pixels[record.key] = _header_pixels(record.path)
        for record in records:
            future = self._pool.submit(read_safely, record, self.settings, bundle.model_input)
            future.add_done_callback(lambda _: self._wake.set())
            self._reading.append(future)
        return bool(records)

    @property
    def pixels_held(self) -> int:
        """Decoded pixels of the interferograms claimed and not finished (from their headers)."""
        return sum(self._pixels.values())

    def _room_for_pixels(self, room: int) -> int:
        """How many of the next ``room`` queued interferograms fit ``watch.pixels_in_flight``
        beside those held; one when nothing is held, however large it is."""
        budget = self.settings.watch.pixels_in_flight - self.pixels_held
        fits = 0
        for record in self.store.in_state("queued", limit=room):  # claim() takes them in this order
            budget -= _header_pixels(record.path)
            if budget < 0 and (fits or self._pixels):
                break
            fits += 1
        return fits

    def _collect(self) -> bool:
        worked = False
        while self._reading and self._reading[0].done():
            result = self._reading.popleft().result()
            worked = True
            if not isinstance(result, Tiled):
                self._pixels.pop(result.record.key, None)
            if isinstance(result, Rejected):
                store_rejected(self.store, result, self._clock())
            elif isinstance(result, Failed):
                self._fail_frames({result.record.key}, result.error)
            else:
                flight = _InFlight(result)
                self._in_flight[result.record.key] = flight
                self._ready.extend((flight, piece) for piece in result.tiles)
        return worked

    def _reread_stale(self, bundle: Bundle) -> None:
        """Frames read for another input than this model's (a model swap changed it) go back to
        the queue to be read again; a swap waits for whole interferograms, so none is half described."""
        stale = [key for key, flight in self._in_flight.items() if flight.tiled.model_input != bundle.model_input]
        for key in stale:
            del self._in_flight[key]
            try:
                self.store.release([key], self._clock())
            except StaleTransition as exc:
                log.warning("%s", exc)
                continue
            log.info("%s: read again for model %s's input (%s)", key, bundle.version.name, bundle.model_input)
        self._ready = deque(item for item in self._ready if item[0].tiled.record.key in self._in_flight)

    def _run_batch(self, bundle: Bundle) -> None:
        self._reread_stale(bundle)
        batch = [self._ready.popleft() for _ in range(min(self.settings.batch.tiles, len(self._ready)))]
        if not batch:
            return
        try:
            described = bundle.describe([piece.pixels for _, piece in batch], self.settings.retrieval.k)
        except Exception as exc:  # the model failed on this batch: fail its frames, keep running
            log.exception("captioning a batch of %d tiles failed", len(batch))
            self._fail_frames({flight.tiled.record.key for flight, _ in batch}, f"captioning failed: {exc}")
            return
        completed = []
        for (flight, piece), found in zip(batch, described, strict=True):
            flight.described[piece.index] = found
            if len(flight.described) == len(flight.tiled.tiles):
                completed.append(self._complete(flight, bundle))
        # Alert reports are rendered above, before the write lock is taken; every interferogram
        # the batch completes is then stored in one commit (each in its own savepoint, so one
        # refused transition does not undo the others).
        with self.store.transaction():
            said: list[Callable[[], None]] = []
            for done in completed:
                store_completed(self.store, done, said)
        # Said only once committed: a commit refused (a full disk) raises above, and its
        # interferograms are redone, so no alert is reported queued that was rolled back.
        for say in said:
            say()

    def _fail_frames(self, keys: set[str], error: str) -> None:
        now = self._clock()
        for key in keys:
            self._in_flight.pop(key, None)
            self._pixels.pop(key, None)
            store_failed(self.store, key, error, now, self.settings.watch.max_attempts)
        self._ready = deque(item for item in self._ready if item[0].tiled.record.key not in keys)

    def _complete(self, flight: _InFlight, bundle: Bundle) -> Completed:
        tiled = flight.tiled
        self._in_flight.pop(tiled.record.key, None)  # gone already when shutdown released it mid-batch
        self._pixels.pop(tiled.record.key, None)
        described = [flight.described[piece.index] for piece in tiled.tiles]
        return complete(tiled, described, self.settings, bundle.version.name, self._clock(),
                        frame_calibration(bundle.calibration))

    def release_all(self) -> list[str]:
        """Give back every claimed interferogram not finished yet (shutdown).

        Only this processor claims, so "processing" in the store is exactly what it holds.
        One still being finished by a hung batch is then refused by the store's guarded
        transition instead of being stored twice.
        """
        for future in self._reading:
            future.cancel()
        released = []
        for record in self.store.in_state("processing"):
            try:
                self.store.release([record.key], self._clock())
            except StaleTransition:
                continue
            released.append(record.key)
        self._reading.clear()
        self._ready.clear()
        self._in_flight.clear()
        self._pixels.clear()
        self._oldest_ready = None
        return released

    def stop_claiming(self) -> None:
        """Shutdown: a loop still running a batch past its time must not claim more once the
        claimed frames have been given back."""
        self._closed = True

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
