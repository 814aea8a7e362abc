"""``insarwatch backfill``: a whole LiCSAR archive through the daemon's steps, on a Ray cluster.

Owns the batch run over history. It lists an archive with ``licsar.discover`` (the
daemon's layout and validity rules), records misfits as the daemon's scan does, and queues
in the same ``state.db`` every interferogram of the selection the store does not already
hold for the model version (``Store.requeue_for_backfill``). The driver is the one writer:
it claims its own keys a few hundred at a time (``Store.claim(keys=...)``, so two
overlapping backfills never take the same one), reads them with ``pipeline.read_safely`` (for
the input the version was trained on, ``describe.input_for``) in Ray tasks, sends their tiles in batches to a pool of Ray actors that each load the model
version once (``describe.load_bundle``) and call ``Bundle.describe``, and finishes each
interferogram with ``pipeline.complete`` and ``pipeline.store_completed``, the daemon's own
transaction, so a backfilled interferogram is indistinguishable from a watched one. Actors
are restarted when their process dies and the batch they held is retried; a frame whose
reading or captioning keeps failing is quarantined after ``watch.max_attempts`` claims.
Alerts get their report pages (the reports-directory channel) but are e-mailed or posted
only with ``notify``. Ray is imported only here, and only when a run starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import notify
from .config import Settings
from .console import Meter
from .describe import Described, input_for, load_bundle
from .errors import InsarwatchError
from .imaging import Tile
from .licsar import Interferogram, Unrecognised, discover
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
from .registry import ModelStore, ModelVersion
from .store import InterferogramRecord, StaleTransition, Store

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray import ObjectRef

log = logging.getLogger(__name__)

# Batches queued on each model actor beyond the one it runs: enough that an actor never
# waits for the driver between batches, few enough that a dead actor's retries stay small.
BATCHES_PER_WORKER = 2
READ_RETRIES = 3
BATCH_RETRIES = 3
WAIT_SECONDS = 1.0
CONNECT_SECONDS = 5.0


@dataclass(frozen=True)
class Selection:
    """Which interferograms of the archive to backfill: by the pair's second (later) date,
    the day the pair could first have been made, and by frame."""

    since: date | None = None
    until: date | None = None
    frames: frozenset[str] = frozenset()

    def wants(self, interferogram: Interferogram) -> bool:
        day = interferogram.secondary
        return ((self.since is None or day >= self.since) and (self.until is None or day <= self.until)
                and (not self.frames or str(interferogram.frame) in self.frames))


@dataclass(frozen=True)
class Cluster:
    """Where the model actors run: ``address`` None starts a local Ray; ``gpus_per_worker``
    None takes one GPU per worker when the cluster has GPUs, else none."""

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float | None = None


@dataclass(frozen=True)
class Summary:
    """What one backfill did; ``counts`` holds this run's outcomes (done by level, rejected,
    quarantined, taken by another process)."""

    model_version: str
    listed: int
    already_held: int
    misfits: int
    queued: int
    counts: dict[str, int]
    tiles: int
    seconds: float
    startup_seconds: float
    workers: int
    gpus_per_worker: float

    def rows(self) -> dict[str, Any]:
        per_second = self.seconds if self.seconds > 0 else float("inf")
        finished = sum(self.counts.values())
        return {
            "model version": self.model_version,
            "interferograms listed": self.listed,
            "already held for this version": self.already_held,
            "misfits recorded (rejected)": self.misfits,
            "queued by this run": self.queued,
            **{f"  {name}": count for name, count in sorted(self.counts.items())},
            "tiles captioned": self.tiles,
            "workers (GPUs each)": f"{self.workers} ({self.gpus_per_worker:g})",
            "seconds": round(self.seconds, 1),
            "of which Ray and model start-up": round(self.startup_seconds, 1),
            "interferograms/s": round(finished / per_second, 3),
            "tiles/s": round(self.tiles / per_second, 2),
        }


class ModelWorker:
    """A Ray actor's body: one model version, loaded once, describing batches of tiles."""

    def __init__(self, version: ModelVersion, settings: Settings) -> None:
        self._bundle = load_bundle(version, settings, require_index=True)
        self._k = settings.retrieval.k

    def version(self) -> str:
        return self._bundle.version.name

    def describe(self, pixels: Sequence[Any]) -> list[Described]:
        return self._bundle.describe(pixels, self._k)


def backfill_settings(settings: Settings, archive: Path, notify_all: bool) -> Settings:
    """The daemon's settings, reading ``archive`` as the drop; without ``notify_all`` the
    only delivery channel left is the reports directory (a volcanologist does not want
    three hundred mails about 2019)."""
    update: dict[str, Any] = {"drop_dir": archive}
    if not notify_all:
        update["notify"] = settings.notify.model_copy(update={"smtp": None, "webhook": None})
    return settings.model_copy(update=update)


def list_archive(archive: Path, selection: Selection, store: Store,
                 now: datetime) -> tuple[list[Interferogram], int]:
    """The selected interferograms of ``archive``, and how many misfits were found (recorded
    as rejected, once, as the daemon's scan records them)."""
    wanted, misfits = [], 0
    with store.transaction():
        for item in discover(archive):
            if isinstance(item, Unrecognised):
                misfits += 1
                if store.record_unrecognised(item.path, item.reason, now):
                    log.warning("rejected %s: %s", item.path, item.reason)
            elif selection.wants(item):
                wanted.append(item)
    return wanted, misfits


def queue_archive(store: Store, interferograms: Sequence[Interferogram], model_version: str, now: datetime,
                  max_attempts: int) -> tuple[list[Interferogram], int]:
    """Track every listed interferogram and queue those not already held for
    ``model_version``; returns the ones waiting in the queue (this run's work, in key order)
    and how many were queued by this call."""
    with store.transaction():
        for item in interferograms:
            store.discover(item.key, item.diff_png, str(item.frame), item.primary, item.secondary, now)
        queued = store.requeue_for_backfill([item.key for item in interferograms], model_version, now,
                                            max_attempts)
    waiting = [item for item in interferograms if (record := store.get(item.key)) and record.state == "queued"]
    return sorted(waiting, key=lambda item: item.key), queued


def connect(cluster: Cluster) -> bool:
    """Join the cluster at ``cluster.address`` (``auto``: the one this node belongs to) or
    start a local Ray; True when this call started Ray (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if cluster.address is None:
            # One logical CPU more than the model actors take, so reading is never starved.
            ray.init(num_cpus=max(os.cpu_count() or 1, cluster.workers + 1), include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=cluster.address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InsarwatchError(f"cannot reach the Ray cluster at {cluster.address or 'a new local Ray'}: {exc}") \
            from None
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds on an address nothing answers at: Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise InsarwatchError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def start_workers(version: ModelVersion, settings: Settings, cluster: Cluster) -> tuple[list[ActorHandle], float]:
    """``cluster.workers`` model actors, each with the version loaded; raises
    ``InsarwatchError`` (one line) when they cannot load it."""
    import ray

    have = ray.cluster_resources()
    gpus = cluster.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if have.get("GPU", 0) >= 1 else 0.0
    # Actors asking for more than the cluster has would wait for ever, silently.
    for resource, per_worker in (("CPU", 1.0), ("GPU", gpus)):
        if per_worker and cluster.workers * per_worker > have.get(resource, 0):
            raise InsarwatchError(f"--workers {cluster.workers} need {cluster.workers * per_worker:g} {resource} "
                                  f"in all; the Ray cluster has {have.get(resource, 0):g}")
    actor = ray.remote(ModelWorker).options(
        num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=BATCH_RETRIES,
    )
    workers = [actor.remote(version, settings) for _ in range(cluster.workers)]
    try:
        ray.get([worker.version.remote() for worker in workers])
    except ray.exceptions.RayError as exc:
        for worker in workers:
            ray.kill(worker)
        cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
        raise InsarwatchError(f"{version.path}: model workers could not load it: {cause}") from None
    return workers, gpus


@dataclass
class _InFlight:
    tiled: Tiled
    described: dict[int, Described] = field(default_factory=dict)


class _Driver:
    """The one writer: claims, hands reading to Ray tasks and tiles to the model actors,
    and stores each finished interferogram."""

    def __init__(self, store: Store, settings: Settings, version: ModelVersion, waiting: Sequence[Interferogram],
                 workers: list[ActorHandle], meter: Meter, clock: Callable[[], datetime]) -> None:
        import ray

        self.ray = ray
        self.store, self.settings, self.version = store, settings, version
        self.meter, self.clock = meter, clock
        self.archive = {item.key: item for item in waiting}
        self.pending: deque[str] = deque(item.key for item in waiting)
        self.reader = ray.remote(read_safely).options(num_cpus=1, max_retries=READ_RETRIES)
        self.model_input = input_for(version, settings)  # what the workers' model was trained on
        self.settings_ref = ray.put(settings)
        self.workers = workers
        self.load: dict[int, int] = {index: 0 for index in range(len(workers))}
        self.reading: dict[ObjectRef, InterferogramRecord] = {}
        self.batches: dict[ObjectRef, tuple[int, list[tuple[_InFlight, Tile]]]] = {}
        self.in_flight: dict[str, _InFlight] = {}
        self.ready: deque[tuple[_InFlight, Tile]] = deque()
        self.counts: Counter[str] = Counter()
        self.tiles = 0

    def run(self) -> None:
        while self.pending or self.reading or self.in_flight:
            self._claim()
            self._dispatch()
            refs = [*self.reading, *self.batches]
            if not refs:
                continue
            self.ray.wait(refs, num_returns=1, timeout=WAIT_SECONDS)
            finished, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in finished:
                if ref in self.reading:
                    self._collect_read(ref)
                else:
                    self._collect_batch(ref)

    # -- claiming and reading ---------------------------------------------------------

    def _claim(self) -> None:
        size = self.settings.batch.tiles
        room = self.settings.watch.queue_max - len(self.reading) - len(self.in_flight)
        if room <= 0 or not self.pending or len(self.ready) >= 2 * size * len(self.workers):
            return
        chunk = [self.pending.popleft() for _ in range(min(room, len(self.pending)))]
        records = {record.key: record for record in self.store.claim(len(chunk), self.clock(), keys=chunk)}
        for key in chunk:
            record = records.get(key)
            if record is None:  # claimed first by another backfill (or the daemon): theirs to finish
                self._finished("taken elsewhere")
                continue
            # Read the file this run found: the row may name where the daemon saw it.
            record = replace(record, path=str(self.archive[key].diff_png))
            self.reading[self.reader.remote(record, self.settings_ref, self.model_input)] = record

    def _collect_read(self, ref: ObjectRef) -> None:
        record = self.reading.pop(ref)
        try:
            result: Tiled | Rejected | Failed = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the reading process died READ_RETRIES times
            result = Failed(record, f"reading worker died: {type(exc).__name__}")
        if isinstance(result, Rejected):
            store_rejected(self.store, result, self.clock())
            self._finished("rejected")
        elif isinstance(result, Failed):
            self._fail({record.key}, result.error)
        else:
            flight = _InFlight(result)
            self.in_flight[record.key] = flight
            self.ready.extend((flight, piece) for piece in result.tiles)

    # -- the model ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        size = self.settings.batch.tiles
        nothing_coming = not self.pending and not self.reading
        while self.ready and (len(self.ready) >= size or nothing_coming):
            index = min(self.load, key=self.load.__getitem__)
            if self.load[index] >= BATCHES_PER_WORKER:
                return
            batch = [self.ready.popleft() for _ in range(min(size, len(self.ready)))]
            ref = self.workers[index].describe.remote([piece.pixels for _, piece in batch])
            self.batches[ref] = (index, batch)
            self.load[index] += 1

    def _collect_batch(self, ref: ObjectRef) -> None:
        index, batch = self.batches.pop(ref)
        self.load[index] -= 1
        try:
            described = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            error = (f"captioning failed: {cause}" if cause is not None else
                     f"model worker died {BATCH_RETRIES + 1} times on this batch: {type(exc).__name__}")
            log.error("a batch of %d tiles failed: %s", len(batch), error)
            self._fail({flight.tiled.record.key for flight, _ in batch}, error)
            return
        completed: list[Completed] = []
        for (flight, piece), found in zip(batch, described, strict=True):
            key = flight.tiled.record.key
            if self.in_flight.get(key) is not flight:
                continue  # failed in another batch meanwhile
            flight.described[piece.index] = found
            if len(flight.described) == len(flight.tiled.tiles):
                del self.in_flight[key]
                tiles = [flight.described[p.index] for p in flight.tiled.tiles]
                completed.append(complete(flight.tiled, tiles, self.settings, self.version.name, self.clock(),
                                          frame_calibration(self.version.calibration())))
        # As the daemon does: reports rendered above, every completion in one commit.
        with self.store.transaction():
            stored = [done for done in completed if store_completed(self.store, done)]
        for done in stored:
            self.tiles += len(done.outcome.tiles)
            self._finished(done.outcome.level, len(done.outcome.tiles))

    def _fail(self, keys: set[str], error: str) -> None:
        """Fail frames; one merely failed goes back to the end of this run's queue, so it is
        tried again until it succeeds or is quarantined after ``watch.max_attempts`` claims."""
        now = self.clock()
        for key in keys:
            self.in_flight.pop(key, None)
            state = store_failed(self.store, key, error, now, self.settings.watch.max_attempts)
            if state == "failed":
                self.store.requeue_for_backfill([key], self.version.name, now, self.settings.watch.max_attempts)
                self.pending.append(key)
            elif state == "quarantined":
                self._finished("quarantined")
        self.ready = deque(item for item in self.ready if item[0].tiled.record.key not in keys)

    def _finished(self, outcome: str, tiles: int = 0) -> None:
        self.counts[outcome] += 1
        self.meter.advance(1, tiles)

    def release(self) -> list[str]:
        """Give back every interferogram this run claimed and did not finish (stopped early)."""
        held = [record.key for record in self.reading.values()] + list(self.in_flight)
        released = []
        for key in held:
            try:
                self.store.release([key], self.clock())
            except StaleTransition:
                continue
            released.append(key)
        return released


def run_backfill(settings: Settings, archive: Path, *, selection: Selection = Selection(), cluster: Cluster = Cluster(),
                 model: str = "current", notify_all: bool = False, clock: Callable[[], datetime],
                 terminal: bool | None = None) -> Summary:
    """Backfill ``archive`` into ``settings.state_db`` with ``model`` (a version name or
    ``current``, pinned for the whole run) and deliver what it recorded."""
    archive = Path(archive).absolute()
    if not archive.is_dir():
        raise InsarwatchError(f"{archive}: archive directory does not exist")
    version = ModelStore(settings.models_dir).resolve(model)
    if cluster.address not in (None, "auto"):
        _check_reachable(cluster.address)  # before anything is queued for a cluster that is not there
    run_settings = backfill_settings(settings, archive, notify_all)
    started = time.monotonic()
    with Store(settings.state_db) as store:
        now = clock()
        listed, misfits = list_archive(archive, selection, store, now)
        waiting, queued = queue_archive(store, listed, version.name, now, settings.watch.max_attempts)
        log.info("%s: %d interferograms selected, %d to process with model %s", archive, len(listed),
                 len(waiting), version.name)
        counts: Counter[str] = Counter()
        tiles, gpus, startup = 0, 0.0, 0.0
        if waiting:
            counts, tiles, gpus, startup = _process(store, run_settings, version, waiting, cluster, clock, terminal)
        # The reports directory always; e-mail and webhook only for what --notify enqueued
        # (and whatever the daemon left pending, which it would send anyway).
        notify.deliver_due(store, settings, clock())
    return Summary(version.name, len(listed), len(listed) - len(waiting), misfits, queued, dict(counts), tiles,
                   time.monotonic() - started, startup, cluster.workers, gpus)


def _process(store: Store, settings: Settings, version: ModelVersion, waiting: Sequence[Interferogram],
             cluster: Cluster, clock: Callable[[], datetime],
             terminal: bool | None) -> tuple[Counter[str], int, float, float]:
    """Counts of outcomes, tiles, GPUs per worker and the seconds Ray and the workers took to start."""
    import ray

    started = time.monotonic()
    previous = signal.getsignal(signal.SIGTERM)
    driver = None
    # Ray's driver threads print what the cluster reports (a worker that died) to stdout,
    # which belongs to the command's result (``--json`` piped into jq): send it to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        owns = connect(cluster)
        try:
            workers, gpus = start_workers(version, settings, cluster)
            startup = time.monotonic() - started
            if _is_main_thread():
                # systemd stops with SIGTERM: leave as Ctrl-C does, giving back what was claimed.
                signal.signal(signal.SIGTERM, _interrupt)
            with Meter("backfill", len(waiting), "interferograms", "tiles", terminal=terminal) as meter:
                driver = _Driver(store, settings, version, waiting, workers, meter, clock)
                driver.run()
            return driver.counts, driver.tiles, gpus, startup
        except KeyboardInterrupt:
            released = driver.release() if driver is not None else []
            raise InsarwatchError(f"backfill stopped; {len(released)} unfinished interferograms went back to "
                                  "the queue (run it again to carry on)") from None
        finally:
            if _is_main_thread():
                signal.signal(signal.SIGTERM, previous)
            if owns:
                ray.shutdown()


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def parse_frames(text: str | None) -> frozenset[str]:
    """``F,F,...`` into frame ids, each checked against the LiCSAR pattern."""
    from .licsar import parse_frame_id

    if not text:
        return frozenset()
    return frozenset(str(parse_frame_id(part.strip())) for part in text.split(",") if part.strip())
