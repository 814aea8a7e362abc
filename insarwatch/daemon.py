"""The service's lifecycle: ``insarwatch watch`` under systemd, or ``--once`` from cron.

Owns the side effects that make the pieces a service: the watchdog observer and the
start-up scan (``intake``), the processing loop (``processor.Processor``) in a worker
thread, delivery in a thread of its own (so a slow channel never holds up frames; the loop
wakes it when a commit adds a message, and it retries what is due every
``DELIVERY_INTERVAL_SECONDS``, or every ``notify.retry_base_seconds`` when that is shorter),
the APScheduler jobs (batch flush, rescan, the daily digest, the model check that swaps a
newly registered ``models/current`` in between batches), signals (SIGTERM/SIGINT stop intake
and finish or requeue the running batch within ``shutdown_timeout``; SIGHUP reloads the
configuration), and systemd's notify protocol (READY once the model is loaded and the first
scan is queued, WATCHDOG heartbeats from the processing loop so a hung GPU call gets the
service restarted, a STATUS line).
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import sdnotify
from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.observers.api import BaseObserver

from . import notify
from .config import Settings, load_settings
from .describe import Bundle, load_bundle
from .errors import InsarwatchError
from .intake import Intake, make_observer, utcnow
from .lock import VarDirLock
from .processor import Processor
from .registry import ModelStore
from .store import Store

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
IDLE_WAIT_SECONDS = 0.2
DELIVERY_INTERVAL_SECONDS = 15.0


class Daemon:
    """One running service: build it, then ``run()`` until stopped (or, ``once``, until idle)."""

    def __init__(self, settings: Settings, config_path: Path | None = None, *, once: bool = False,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.config_path = config_path
        self.once = once
        self.clock = clock
        self.stopping = threading.Event()
        self._reload = threading.Event()
        self._flush = threading.Event()
        self._deliver_now = threading.Event()
        self._bundle: Bundle | None = None
        self._next_bundle: Bundle | None = None
        self._bundle_lock = threading.Lock()
        self._jobs: BackgroundScheduler | None = None
        self._refused: str | None = None  # why the current model was last refused, said once
        self._notifier = sdnotify.SystemdNotifier()
        self._last_heartbeat = 0.0
        self._loop_error: BaseException | None = None
        # Set when run() returns with the loop still inside a batch it could not finish in time.
        self.abandoned_batch = False
        self.observer: BaseObserver | None = None
        self.store = Store(settings.state_db)
        self.models = ModelStore(settings.models_dir)
        self.intake = Intake(settings.drop_dir, self.store, settings.watch.settle_seconds)
        self.processor = Processor(settings, self.store, lambda: self._bundle, clock, self.intake.wake)

    # -- model ---------------------------------------------------------------------------

    def check_model(self) -> None:
        """Load ``models/current`` (the shipped model while none is registered) if it is not the
        model in use; the loop swaps it in. A version that cannot be used (a dangling link, a failed load or checksum) is refused
        with its reason logged once, not at every check, and the model in use stays."""
        in_use = self._bundle.version.name if self._bundle else None
        try:
            current = self.models.in_use()
            if current is None or current.name == in_use:
                self._refused = None
                return
            if self._next_bundle is not None and self._next_bundle.version.name == current.name:
                return
            bundle = load_bundle(current, self.settings, require_index=True)
        except InsarwatchError as exc:
            if str(exc) != self._refused:
                self._refused = str(exc)
                log.error("new model refused, keeping %s: %s", in_use or "none", exc)
            return
        self._refused = None
        with self._bundle_lock:
            self._next_bundle = bundle
        log.info("model %s loaded; it takes over between batches", current.name)

    def _swap_model(self) -> None:
        with self._bundle_lock:
            if self._next_bundle is None or self.processor.mid_interferogram:
                return
            previous = self._bundle.version.name if self._bundle else "none"
            self._bundle, self._next_bundle = self._next_bundle, None
        log.info("model version changed from %s to %s", previous, self._bundle.version.name)

    # -- systemd -------------------------------------------------------------------------

    def _status_line(self) -> str:
        counts = self.store.counts()
        version = self._bundle.version.name if self._bundle else "none"
        return (f"queued {counts['queued']}, processing {counts['processing']}, settling {len(self.intake.tracker)}, "
                f"done {counts['done']}, rejected {counts['rejected']}, failed {counts['failed']}, "
                f"quarantined {counts['quarantined']}; model {version}")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            self._notifier.notify(f"WATCHDOG=1\nSTATUS={self._status_line()}")

    # -- jobs ----------------------------------------------------------------------------

    def deliver(self) -> None:
        try:
            notify.deliver_due(self.store, self.settings, self.clock())
        except (InsarwatchError, sqlite3.Error, OSError) as exc:
            log.error("delivery run failed: %s", exc)

    def digest_period(self) -> tuple[datetime, datetime]:
        """The 24 hours ending at the latest scheduled digest time: the same period (and so
        the same outbox key) however late or often the job runs that day."""
        now = self.clock().astimezone()
        hour, minute = self.settings.digest.hour_minute
        until = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if until > now:
            until -= timedelta(days=1)
        return until - timedelta(days=1), until

    def digest(self) -> None:
        since, until = self.digest_period()
        notify.publish_digest(self.store, self.settings, since, until, self.clock())
        self.deliver()

    def rescan(self) -> None:
        try:
            self.intake.reconcile(self.clock())
        except (sqlite3.Error, OSError) as exc:
            # Soon, not at the next scheduled rescan: a refused start-up scan (a full disk)
            # would otherwise leave the drop unread for rescan_interval_seconds.
            retry_seconds = self.settings.watch.storage_retry_seconds
            log.error("rescan of %s failed (%s); trying again in %g s", self.settings.drop_dir, exc, retry_seconds)
            retry = threading.Timer(retry_seconds, self.intake.events_lost)  # a scan is due
            retry.daemon = True
            retry.start()
        self.intake.wake.set()

    def _scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            timezone=datetime.now().astimezone().tzinfo,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self._schedule_jobs(scheduler)
        return scheduler

    def _schedule_jobs(self, scheduler: BackgroundScheduler) -> None:
        """(Re)schedule every job from the current settings; a reload calls it again."""
        settings = self.settings
        for job in scheduler.get_jobs():
            job.remove()
        scheduler.add_job(self._flush.set, "interval", seconds=max(settings.batch.max_wait_seconds, 0.5),
                          id="batch-flush")
        scheduler.add_job(self.rescan, "interval", seconds=settings.watch.rescan_interval_seconds, id="rescan")
        scheduler.add_job(self.check_model, "interval", seconds=settings.watch.model_check_seconds,
                          id="model-check")
        if settings.digest.enabled:
            hour, minute = settings.digest.hour_minute
            # A digest missed while the server was down is still worth sending the same day.
            scheduler.add_job(self.digest, "cron", hour=hour, minute=minute, id="digest",
                              misfire_grace_time=6 * 3600)

    # -- signals -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            log.info("received %s: stopping intake and finishing the running batch", signal.Signals(signum).name)
            self.stopping.set()
            self.intake.wake.set()

        def reload(_signum: int, _frame: object) -> None:
            self._reload.set()
            self.intake.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _reload_settings(self) -> None:
        self._reload.clear()
        try:
            fresh = load_settings(self.config_path)
        except InsarwatchError as exc:
            log.error("configuration not reloaded: %s", exc)
            return
        old = self.settings
        if (fresh.drop_dir, fresh.var_dir) != (old.drop_dir, old.var_dir):
            log.warning("drop_dir and var_dir changes take effect only after a restart")
            fresh = fresh.model_copy(update={"drop_dir": old.drop_dir, "var_dir": old.var_dir})
        # Set when the observer and the reader threads were built: a restart applies them.
        needs_restart = [name for name, before, after in (
            ("watch.observer", old.watch.observer, fresh.watch.observer),
            ("batch.reader_threads", old.batch.reader_threads, fresh.batch.reader_threads),
        ) if before != after]
        if needs_restart:
            log.warning("%s take effect only after a restart", ", ".join(needs_restart))
        self.settings = self.processor.settings = fresh
        self.intake.tracker.settle_seconds = fresh.watch.settle_seconds
        if self._jobs is not None:  # intervals and the digest time as the file now says
            self._schedule_jobs(self._jobs)
        log.info("configuration reloaded from %s", self.config_path or "the default location")

    # -- the loop ------------------------------------------------------------------------

    def _idle(self) -> bool:
        return (not self.processor.held and not len(self.intake.tracker)
                and not self.store.in_state("queued", limit=1))

    def _pause_for_storage(self, exc: Exception) -> None:
        """The state database cannot be written (a full disk, most often). Results are only
        ever stored whole, so nothing half-done remains: every ``watch.storage_retry_seconds``
        try to give the claimed frames back to the queue and rescan for files whose
        admission failed, and carry on as soon as that write succeeds."""
        retry_seconds = self.settings.watch.storage_retry_seconds
        log.error("%s: cannot record progress (%s); retrying every %g s — unfinished frames will be redone",
                  self.settings.state_db, exc, retry_seconds)
        while not self.stopping.wait(retry_seconds):
            try:
                self.processor.release_all()
                self.intake.reconcile(self.clock())
            except (sqlite3.Error, OSError):
                continue
            log.info("%s: writable again; unfinished frames requeued and the drop rescanned", self.settings.state_db)
            self.intake.wake.set()
            return

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.store.check_identity()
            self._heartbeat()
            if self._reload.is_set():
                self._reload_settings()
            self._swap_model()
            if self.intake.rescan_due.is_set():
                self.intake.rescan_due.clear()
                self.rescan()
            flush = self._flush.is_set()
            self._flush.clear()
            try:
                self.intake.admit(self.clock())
                # Not the pending count: the sender may finish as many meanwhile as this step adds.
                before = self.store.newest_delivery()
                worked = self.processor.step(flush, time.monotonic())
                if self.store.newest_delivery() > before:
                    self._deliver_now.set()
            except (sqlite3.Error, OSError) as exc:
                self._pause_for_storage(exc)
                continue
            if self.once and self._idle():
                return
            if not worked:
                self.intake.wake.wait(IDLE_WAIT_SECONDS)
                self.intake.wake.clear()

    def run(self) -> int:
        """Run until stopped (exit status 0), or with ``once`` until everything present is done."""
        settings = self.settings
        lock = VarDirLock(settings.var_dir)
        try:
            # Before anything is requeued: those frames may be another daemon's work in flight.
            lock.acquire()
        except InsarwatchError:
            self.store.close()
            raise
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> int:
        settings = self.settings
        try:
            requeued = self.store.requeue_processing(self.clock(), settings.watch.max_attempts)
        except sqlite3.Error as exc:
            raise InsarwatchError(f"{settings.state_db}: cannot record progress: {exc}") from None
        if requeued:
            log.info("%d interferograms left in processing by the last run went back to the queue", requeued)
        if notify.release_dead_claims(self.store):
            log.info("deliveries a killed run was sending are due again")
        self.models.current()  # a dangling `current` at start-up is a one-line error, not a wait
        self.check_model()
        self._swap_model()
        if self._bundle is None:
            message = f"no usable model under {self.models.models_dir}; run `insarwatch train` to register one"
            if self.once:
                raise InsarwatchError(message)
            log.error("%s — frames wait in the queue until one appears", message)
        if not self.once:
            self.observer = make_observer(settings.watch.observer, self.intake.events_lost)
            self.intake.watch(self.observer)
            self.observer.start()  # before the scan, so nothing can arrive unseen between the two
        self.rescan()
        scheduler = self._jobs = None if self.once else self._scheduler()
        if scheduler is not None:
            scheduler.start()
        if threading.current_thread() is threading.main_thread():
            self._install_signals()
        self._notifier.notify(f"READY=1\nSTATUS={self._status_line()}")
        log.info("watching %s with model %s", settings.drop_dir,
                 self._bundle.version.name if self._bundle else "none")
        worker = threading.Thread(target=self._guarded_loop, name="insarwatch-loop", daemon=True)
        worker.start()
        sender = threading.Thread(target=self._delivery_loop, name="insarwatch-deliver", daemon=True)
        if not self.once:  # --once delivers everything when the work is done
            self._deliver_now.set()  # what the last run left pending goes now, not at the first interval
            sender.start()
        try:
            while worker.is_alive() and not self.stopping.is_set():
                worker.join(0.5)
            self.stopping.set()
            self.intake.wake.set()
            self._deliver_now.set()
            worker.join(settings.watch.shutdown_timeout_seconds)
            self.abandoned_batch = worker.is_alive()
            if self.abandoned_batch:
                log.error("the running batch did not finish within %.0f s; requeueing it",
                          settings.watch.shutdown_timeout_seconds)
        finally:
            self._notifier.notify("STOPPING=1")
            if self.observer is not None:
                self.observer.stop()
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            self.processor.stop_claiming()
            released = self.processor.release_all()
            if released:
                log.info("%d unfinished interferograms went back to the queue", len(released))
            if sender.ident is not None:
                sender.join(1.0)  # it was only waiting, unless a slow channel holds it mid-send
            if not sender.is_alive():  # mid-send, its claims keep its deliveries for the next start
                self.deliver()
            self.processor.close()
            self.store.close()
        if self._loop_error is not None and not self.abandoned_batch:  # else it failed after we let it go
            raise self._loop_error
        return 0

    def _delivery_loop(self) -> None:
        """The one sender of this daemon: woken by a commit that adds a message, or every
        ``DELIVERY_INTERVAL_SECONDS`` for retries that have come due. No retry comes due sooner
        than ``retry_base_seconds`` after a failure, so a shorter base is honoured by looking
        that often (a failed run whose outcome could not even be recorded is tried again then too)."""
        while not self.stopping.is_set():
            self._deliver_now.wait(min(DELIVERY_INTERVAL_SECONDS, self.settings.notify.retry_base_seconds))
            self._deliver_now.clear()
            if not self.stopping.is_set():
                self.deliver()

    def _guarded_loop(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by run() in the main thread
            if isinstance(exc, InsarwatchError):  # a condition the service names in one line
                log.error("the processing loop stopped: %s", exc)
            else:
                log.exception("the processing loop stopped")
            self._loop_error = exc
            self.stopping.set()


def run_daemon(settings: Settings, config_path: Path | None = None, *, once: bool = False) -> int:
    """Entry point for ``insarwatch watch``."""
    daemon = Daemon(settings, config_path, once=once)
    code = daemon.run()
    if daemon.abandoned_batch:
        # The loop thread is still inside torch; a normal interpreter exit would tear the
        # runtime down under it (std::terminate, rc 134). Its frames are requeued and the
        # store closed, so nothing is left to finish: leave now, with the status we meant.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
