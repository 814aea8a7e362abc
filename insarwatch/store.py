"""The service's durable state: one SQLite database (WAL) at ``settings.state_db``.

It owns the delivery outbox (messages and their per-channel deliveries, de-duplicated on
the message key), the per-interferogram state machine (discovered → queued → processing →
done | rejected | failed → quarantined), the per-tile results and the alerts. Every public
method is one transaction; ``Store.transaction()`` groups several into one, so a crash
leaves either all of a change or none of it. Transitions are guarded by the state they
expect, so a stale one raises ``StaleTransition`` instead of being applied twice. The
schema is versioned with ``PRAGMA user_version`` and migrated on open. A read-only
``Store`` (``mode=ro``) reads a snapshot while the daemon writes, without blocking it.
Timestamps are stored as fixed-width UTC ISO strings so they compare as text; naive
datetimes are taken to be UTC.

It stays one module past ~500 lines on purpose: the outbox, the state machine and the
results share one connection, one schema migration list and transactions that span all
three (a finished interferogram, its alert and its deliveries commit together); split,
that atomicity would be spread over modules that each hold half of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from . import stops
from .alerts import Level
from .errors import InsarwatchError

BUSY_TIMEOUT_MS = 10_000
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

MessageKind = Literal["alert", "digest"]
DeliveryStatus = Literal["pending", "delivered", "given_up"]
State = Literal["discovered", "queued", "processing", "done", "rejected", "failed", "quarantined"]
STATES: tuple[State, ...] = ("discovered", "queued", "processing", "done", "rejected", "failed", "quarantined")

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE messages (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('alert', 'digest')),
            payload TEXT NOT NULL,
            created TEXT NOT NULL
        )""",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL REFERENCES messages(key),
            channel TEXT NOT NULL,
            target TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'given_up')),
            attempts INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL,
            next_attempt TEXT,
            finished TEXT,
            last_error TEXT,
            UNIQUE (key, channel, target)
        )""",
        "CREATE INDEX deliveries_due ON deliveries (status, next_attempt)",
    ),
    (
        # frame and dates are NULL only for a rejected file that does not fit the drop layout.
        """CREATE TABLE interferograms (
            key TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            frame TEXT,
            primary_date TEXT,
            secondary_date TEXT,
            state TEXT NOT NULL CHECK (state IN
                ('discovered', 'queued', 'processing', 'done', 'rejected', 'failed', 'quarantined')),
            attempts INTEGER NOT NULL DEFAULT 0,
            received_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT,
            reason TEXT,
            error TEXT,
            level TEXT CHECK (level IN ('alert', 'review', 'quiet')),
            model_version TEXT
        )""",
        "CREATE INDEX interferograms_state ON interferograms (state, received_at)",
        "CREATE INDEX interferograms_received ON interferograms (received_at)",
        "CREATE INDEX interferograms_finished ON interferograms (finished_at)",
        """CREATE TABLE tile_results (
            interferogram TEXT NOT NULL REFERENCES interferograms(key),
            model_version TEXT NOT NULL,
            tile_index INTEGER NOT NULL,
            box TEXT NOT NULL,
            caption TEXT NOT NULL,
            finding TEXT NOT NULL,
            neighbours TEXT NOT NULL,
            decision TEXT NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (interferogram, model_version, tile_index)
        )""",
        """CREATE TABLE alerts (
            key TEXT PRIMARY KEY,
            interferogram TEXT NOT NULL REFERENCES interferograms(key),
            level TEXT NOT NULL CHECK (level IN ('alert', 'review')),
            severity TEXT CHECK (severity IN ('low', 'medium', 'high')),
            model_version TEXT NOT NULL,
            payload TEXT NOT NULL,
            created TEXT NOT NULL
        )""",
        "CREATE INDEX alerts_created ON alerts (created)",
    ),
    (
        # What reading noted about a done interferogram: tiles skipped by reason, siblings refused.
        "ALTER TABLE interferograms ADD COLUMN notes TEXT",
    ),
    (
        # The file as it was read when it was rejected: a scan reads it again once it has
        # changed (a writer that paused past settle_seconds, a frame LiCSAR replaced).
        "ALTER TABLE interferograms ADD COLUMN file_size INTEGER",
        "ALTER TABLE interferograms ADD COLUMN file_mtime_ns INTEGER",
    ),
    (
        # A sender claims a delivery before sending it, so two senders (the daemon's delivery
        # thread, its digest job, `report --send`) never send one message twice. The claim is a
        # lease: a sender that died mid-send leaves a delivery that is retried once it expires.
        "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
        "ALTER TABLE deliveries ADD COLUMN claimed_until TEXT",
    ),
    (
        # An alert's rendered report (inlined images, most of a megabyte) is its message's
        # payload: the message has the alert's key, so it is stored there once, not twice.
        "ALTER TABLE alerts DROP COLUMN payload",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


# rejected/failed/quarantined → queued: a fresh start, forgetting why it stopped last time.
_REQUEUE = ("state = 'queued', attempts = 0, reason = NULL, finished_at = NULL, file_size = NULL,"
            " file_mtime_ns = NULL, updated_at = ?")


def corrupt(path: Path, exc: sqlite3.DatabaseError) -> InsarwatchError:
    """The one wording of a state database SQLite finds damaged: ``status`` and ``watch`` say
    the same line, and neither ever recreates the file over what it still holds."""
    return InsarwatchError(f"{path}: state database is corrupt ({exc}); move it aside and restore a backup "
                           "(insarwatch will not recreate it over your records)")


def _is_corruption(exc: BaseException) -> bool:
    # SQLite reports damage as a bare DatabaseError; its subclasses are other failures
    # (a full disk or a lock is an OperationalError, a constraint an IntegrityError).
    return type(exc) is sqlite3.DatabaseError


class StaleTransition(InsarwatchError):
    """A change was asked of a row that is no longer in the state the caller expected."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _to_text(moment: datetime) -> str:
    """The stored form of a timestamp: fixed-width UTC, so text order is time order."""
    return _utc(moment).strftime(_TIME_FORMAT)


def _from_text(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class FileStamp:
    """A file's size and modification time: unchanged for a while means written in full, and
    changed since a rejection means worth reading again."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path | str) -> FileStamp | None:
        """The stamp of ``path`` now; None when it cannot be stat'ed (gone, a symlink loop)."""
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        return cls(stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class Delivery:
    """One message to one target on one channel, with its delivery bookkeeping."""

    id: int
    key: str
    kind: MessageKind
    channel: str
    target: str
    payload: dict[str, Any]
    attempts: int
    created: datetime
    next_attempt: datetime | None
    status: DeliveryStatus = "pending"
    finished: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class InterferogramRecord:
    """An interferogram as the store tracks it through the state machine."""

    key: str
    path: str
    frame: str | None
    primary: date | None
    secondary: date | None
    state: State
    attempts: int
    received_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    reason: str | None = None
    error: str | None = None
    level: Level | None = None
    model_version: str | None = None
    # {"skipped_tiles": {reason: n}, "problems": [line, ...]}, and on the phase input "rendering" (and
    # "unknown_rendering": why it was shown as RGB): pipeline.Tiled.notes
    notes: dict[str, Any] | None = None


@dataclass(frozen=True)
class TileResult:
    """What the model and the decision rules made of one tile, in JSON-ready form."""

    tile_index: int
    box: tuple[int, int, int, int]
    caption: str
    finding: dict[str, Any]
    neighbours: list[dict[str, Any]]
    decision: dict[str, Any]

    @classmethod
    def from_document(cls, tile: Mapping[str, Any], retrieved: bool) -> TileResult:
        """The stored form of ``TileDecision.to_dict()``: its decision fields grouped under
        ``decision``, with whether the caption was copied from a neighbour (triage) and, when
        georeferenced, the tile's ``bounds`` and nearest ``volcano``."""
        place = {name: tile[name] for name in ("bounds", "volcano") if name in tile}
        return cls(
            tile_index=tile["tile_index"],
            box=tuple(tile["box"]),
            caption=tile["caption"],
            finding=tile["finding"],
            neighbours=tile["neighbours"],
            decision={"level": tile["level"], "severity": tile["severity"], "reasons": tile["reasons"],
                      "retrieved": retrieved, **place},
        )


@dataclass(frozen=True)
class AlertRecord:
    """One alert (or review request) raised for an interferogram; ``key`` de-duplicates it."""

    key: str
    interferogram: str
    level: Literal["alert", "review"]
    severity: Literal["low", "medium", "high"] | None
    model_version: str
    payload: dict[str, Any]
    created: datetime


@dataclass(frozen=True)
class FrameActivity:
    """What happened to one frame's interferograms in a period (for the digest)."""

    frame: str | None
    arrived: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    processed: int = 0
    review: int = 0
    alert: int = 0
    quarantined: int = 0
    alert_keys: tuple[str, ...] = ()


def _day(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


def _record(row: sqlite3.Row) -> InterferogramRecord:
    return InterferogramRecord(
        key=row["key"], path=row["path"], frame=row["frame"], primary=_day(row["primary_date"]),
        secondary=_day(row["secondary_date"]), state=row["state"], attempts=row["attempts"],
        received_at=_from_text(row["received_at"]), updated_at=_from_text(row["updated_at"]),
        finished_at=_from_text(row["finished_at"]), reason=row["reason"], error=row["error"],
        level=row["level"], model_version=row["model_version"],
        notes=json.loads(row["notes"]) if row["notes"] else None,
    )


def _alert(row: sqlite3.Row) -> AlertRecord:
    return AlertRecord(
        key=row["key"], interferogram=row["interferogram"], level=row["level"], severity=row["severity"],
        model_version=row["model_version"], payload=json.loads(row["payload"]), created=_from_text(row["created"]),
    )


def _marks(count: int) -> str:
    return ", ".join("?" * count)


_DELIVERY_COLUMNS = (
    "d.id, d.key, m.kind, d.channel, d.target, m.payload, d.attempts, d.created, d.next_attempt,"
    " d.status, d.finished, d.last_error"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"], key=row["key"], kind=row["kind"], channel=row["channel"], target=row["target"],
        payload=json.loads(row["payload"]), attempts=row["attempts"], created=_from_text(row["created"]),
        next_attempt=_from_text(row["next_attempt"]), status=row["status"],
        finished=_from_text(row["finished"]), last_error=row["last_error"],
    )


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.absolute()))}"
    db = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError:
        db.close()
        # A reader that may not create the WAL index beside a stopped daemon's database
        # (no write access to its directory) reads the file as it is: with no daemon
        # running, nothing can change it underneath.
        db = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                             check_same_thread=False)
    return db


class Store:
    """The state database; safe to share between threads (one writer at a time)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0
        try:
            if readonly:
                self._db = _connect_readonly(self.path)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                # A writer checks the whole file once, at open: damage beyond the first page
                # is otherwise found only by the query that happens to read it.
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check(1)")]
                if problems != ["ok"]:  # SQLite's own words for it, as a query that met the damage says
                    raise sqlite3.DatabaseError("database disk image is malformed")
                self._db.execute("PRAGMA journal_mode = WAL")
                # FULL: a commit that reported success survives power loss, so an alert
                # already sent is never re-derived from a rolled-back state.
                self._db.execute("PRAGMA synchronous = FULL")
                self._migrate()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                raise corrupt(self.path, exc) from None
            raise InsarwatchError(f"{self.path}: cannot open state database: {exc}") from None
        except OSError as exc:  # its directory cannot be made: a read-only mount, a file in the way
            raise InsarwatchError(f"{exc.filename or self.path.parent}: cannot make the state directory: "
                                  f"{exc.strerror or exc}") from None
        # Which file this connection writes to: one deleted or replaced under a running
        # daemon would otherwise swallow its work unseen (``check_identity``).
        self._identity = self._file_identity()
        if version != SCHEMA_VERSION:
            self._db.close()
            raise InsarwatchError(
                f"{self.path}: state database schema is version {version}, this insarwatch reads "
                f"version {SCHEMA_VERSION} (start the daemon of this version once to migrate it)"
            )

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def check_identity(self) -> None:
        """Raise when the database file this store opened is no longer at its path (deleted,
        or replaced by another file): what it writes from then on would reach no reader."""
        if self.readonly or str(self.path) == ":memory:":
            return
        if self._file_identity() != self._identity:
            raise InsarwatchError(f"{self.path}: the state database was deleted or replaced while the daemon "
                                  "was running; stopping so no work is recorded where nobody will find it")

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """A read-only snapshot of the database at ``path``, safe beside a running daemon; with
        no database there yet, an empty one in memory (the schema, no rows), so readers need
        no special case and nothing is created on disk."""
        return cls(path, readonly=True) if Path(path).exists() else cls(Path(":memory:"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self.transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                return
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[None]:
        """Group calls into one transaction. A nested one is a savepoint: when it fails it
        is undone on its own, and the outer transaction may carry on."""
        with self._lock:
            if self._depth:
                name = f"nested_{self._depth}"
                self._db.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    raise
                finally:
                    self._depth -= 1
                    self._db.execute(f"RELEASE {name}")
                return
            # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading
            # a read lock; a read-only snapshot needs no lock at all under WAL.
            self._db.execute("BEGIN IMMEDIATE" if write and not self.readonly else "BEGIN")
            self._depth = 1
            try:
                yield
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if _is_corruption(exc):
                    raise corrupt(self.path, exc) from None
                raise
            else:
                stops.point("before commit")
                self._db.execute("COMMIT")
                stops.point("after commit")
            finally:
                self._depth = 0

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise corrupt(self.path, exc) from None
                raise

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    # -- outbox -----------------------------------------------------------------------

    def enqueue_message(
        self, key: str, kind: MessageKind, payload: dict[str, Any], targets: Sequence[tuple[str, str]],
        now: datetime,
    ) -> bool:
        """Store a message and one pending delivery per (channel, target), due now.

        False, and nothing stored, when a message with this key exists: that is how an
        alert is never sent twice.
        """
        created = _to_text(now)
        with self.transaction():
            inserted = self._db.execute(
                "INSERT INTO messages (key, kind, payload, created) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, kind, json.dumps(payload, sort_keys=True), created),
            ).rowcount
            if not inserted:
                return False
            self._db.executemany(
                "INSERT INTO deliveries (key, channel, target, created, next_attempt) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key, channel, target) DO NOTHING",
                [(key, channel, target, created, created) for channel, target in targets],
            )
            return True

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is due and that no live sender holds, oldest first."""
        stamp = _to_text(now)
        rows = self._all(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN messages m USING (key)"
            " WHERE d.status = 'pending' AND d.next_attempt <= ?"
            " AND (d.claimed_until IS NULL OR d.claimed_until <= ?) ORDER BY d.next_attempt, d.id LIMIT ?",
            (stamp, stamp, limit),
        )
        return [_delivery(row) for row in rows]

    def claim_delivery(self, delivery_id: int, sender: str, now: datetime, until: datetime) -> bool:
        """Take a pending delivery for ``sender`` until ``until`` (its lease); False when it is
        no longer pending or another sender holds an unexpired claim on it."""
        stamp = _to_text(now)
        with self.transaction():
            return bool(self._db.execute(
                "UPDATE deliveries SET claimed_by = ?, claimed_until = ? WHERE id = ? AND status = 'pending'"
                " AND (claimed_until IS NULL OR claimed_until <= ?)",
                (sender, _to_text(until), delivery_id, stamp),
            ).rowcount)

    def claimants(self) -> list[str]:
        """The senders holding claims on pending deliveries."""
        rows = self._all("SELECT DISTINCT claimed_by FROM deliveries WHERE status = 'pending'"
                         " AND claimed_by IS NOT NULL ORDER BY claimed_by")
        return [row[0] for row in rows]

    def release_claims(self, senders: Sequence[str]) -> int:
        """Drop the claims of ``senders`` (known to be dead) so their deliveries are due again."""
        with self.transaction():
            return self._db.execute(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL WHERE status = 'pending'"
                f" AND claimed_by IN ({_marks(len(senders))})", tuple(senders),
            ).rowcount

    def _finish_delivery(self, delivery_id: int, sql: str, params: Sequence[Any]) -> None:
        with self.transaction():
            sql += ", claimed_by = NULL, claimed_until = NULL WHERE id = ? AND status = 'pending'"
            if not self._db.execute(sql, (*params, delivery_id)).rowcount:
                row = self._db.execute("SELECT status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
                actual = row["status"] if row else "missing"
                raise StaleTransition(f"delivery {delivery_id} is {actual}, not pending")

    def mark_delivered(self, delivery_id: int, now: datetime) -> None:
        self._finish_delivery(
            delivery_id,
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, finished = ?, next_attempt = NULL",
            (_to_text(now),),
        )

    def mark_failed(self, delivery_id: int, error: str, now: datetime, next_attempt: datetime | None) -> None:
        """Record a failed attempt: retry at ``next_attempt``, or give up when it is None."""
        if next_attempt is None:
            sql = ("UPDATE deliveries SET status = 'given_up', attempts = attempts + 1, last_error = ?,"
                   " finished = ?, next_attempt = NULL")
            params: tuple[Any, ...] = (error, _to_text(now))
        else:
            sql = "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt = ?"
            params = (error, _to_text(next_attempt))
        self._finish_delivery(delivery_id, sql, params)

    def newest_delivery(self) -> int:
        """The id of the newest delivery (0 before the first): it grows with every message
        stored, however many deliveries a sender finishes meanwhile."""
        row = self._one("SELECT max(id) FROM deliveries")
        return row[0] or 0 if row else 0

    def pending_deliveries(self) -> int:
        row = self._one("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        return row[0] if row else 0

    def deliveries_for(self, key: str) -> list[Delivery]:
        """Every delivery of one message, whatever its status, in the order they were made."""
        rows = self._all(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN messages m USING (key) WHERE d.key = ? ORDER BY d.id",
            (key,),
        )
        return [_delivery(row) for row in rows]

    # -- interferogram state machine --------------------------------------------------

    def discover(
        self, key: str, path: Path | str, frame: str, primary: date, secondary: date, received_at: datetime,
    ) -> bool:
        """Start tracking an interferogram; False, and nothing changed, when it is already known."""
        stamp = _to_text(received_at)
        with self.transaction():
            return bool(self._db.execute(
                "INSERT INTO interferograms (key, path, frame, primary_date, secondary_date, state, received_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, 'discovered', ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, str(path), frame, primary.isoformat(), secondary.isoformat(), stamp, stamp),
            ).rowcount)

    def record_unrecognised(self, path: Path | str, reason: str, now: datetime) -> bool:
        """Record a file that does not fit the drop layout as rejected (keyed by its path), once."""
        stamp = _to_text(now)
        with self.transaction():
            return bool(self._db.execute(
                "INSERT INTO interferograms (key, path, state, received_at, updated_at, finished_at, reason, error)"
                " VALUES (?, ?, 'rejected', ?, ?, ?, 'unrecognised', ?) ON CONFLICT (key) DO NOTHING",
                (str(path), str(path), stamp, stamp, stamp, reason),
            ).rowcount)

    def get(self, key: str) -> InterferogramRecord | None:
        row = self._one("SELECT * FROM interferograms WHERE key = ?", (key,))
        return None if row is None else _record(row)

    def in_state(self, state: State, limit: int | None = None) -> list[InterferogramRecord]:
        """Interferograms in one state, first received first."""
        rows = self._all(
            "SELECT * FROM interferograms WHERE state = ? ORDER BY received_at, key LIMIT ?",
            (state, -1 if limit is None else limit),
        )
        return [_record(row) for row in rows]

    def _transition(self, key: str, expected: tuple[State, ...], assignments: str, params: Sequence[Any]) -> None:
        """Apply ``assignments`` to ``key`` only if it is in one of the ``expected`` states."""
        with self.transaction():
            changed = self._db.execute(
                f"UPDATE interferograms SET {assignments} WHERE key = ? AND state IN ({_marks(len(expected))})",
                (*params, key, *expected),
            ).rowcount
            if not changed:
                row = self._db.execute("SELECT state FROM interferograms WHERE key = ?", (key,)).fetchone()
                actual = row["state"] if row else "unknown"
                raise StaleTransition(f"{key}: is {actual}, not {' or '.join(expected)}")

    def queue(self, key: str, now: datetime) -> None:
        """discovered → queued: the file is complete and may be processed."""
        self._transition(key, ("discovered",), "state = 'queued', updated_at = ?", (_to_text(now),))

    def claim(self, limit: int, now: datetime, keys: Sequence[str] | None = None) -> list[InterferogramRecord]:
        """Atomically move up to ``limit`` queued interferograms (first received first) to processing.

        Each claim counts as an attempt, so a frame that crashes the daemon again and again
        is quarantined by ``requeue_processing`` instead of crashing it for ever. With
        ``keys`` (a backfill's own, at most a few hundred at a time) only those are claimed:
        whichever another process claimed first is not.
        """
        only = "" if keys is None else f" AND key IN ({_marks(len(keys))})"
        with self.transaction():
            rows = self._db.execute(
                "UPDATE interferograms SET state = 'processing', attempts = attempts + 1, updated_at = ?"
                f" WHERE key IN (SELECT key FROM interferograms WHERE state = 'queued'{only}"
                " ORDER BY received_at, key LIMIT ?) RETURNING *",
                (_to_text(now), *(keys or ()), limit),
            ).fetchall()
        return sorted((_record(row) for row in rows), key=lambda record: (record.received_at, record.key))

    def release(self, keys: Sequence[str], now: datetime) -> None:
        """processing → queued without using up an attempt: the daemon stopped before trying."""
        with self.transaction():
            for key in keys:
                self._transition(
                    key, ("processing",), "state = 'queued', attempts = max(attempts - 1, 0), updated_at = ?",
                    (_to_text(now),),
                )

    def requeue_processing(self, now: datetime, max_attempts: int | None = None) -> int:
        """On start-up: whatever a previous run left in processing goes back to queued.

        With ``max_attempts``, one that has already been claimed that many times is
        quarantined instead (it probably took the daemon down with it). Returns how many
        went back to the queue.
        """
        stamp = _to_text(now)
        with self.transaction():
            if max_attempts is not None:
                self._db.execute(
                    "UPDATE interferograms SET state = 'quarantined', updated_at = ?, finished_at = ?,"
                    " error = 'interrupted while processing ' || attempts || ' times'"
                    " WHERE state = 'processing' AND attempts >= ?",
                    (stamp, stamp, max_attempts),
                )
            return self._db.execute(
                "UPDATE interferograms SET state = 'queued', updated_at = ? WHERE state = 'processing'", (stamp,),
            ).rowcount

    def requeue_for_backfill(self, keys: Sequence[str], model_version: str, now: datetime,
                             max_attempts: int) -> int:
        """Put a backfill's ``keys`` back in the queue where they need (re)doing by ``model_version``:
        failed ones; ones done by another model version (re-judged, attempts reset); ones left
        in processing by a killed run (quarantined instead once claimed ``max_attempts``
        times, as ``requeue_processing`` does). Returns how many went back to the queue."""
        stamp = _to_text(now)
        queued = 0
        with self.transaction():
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = _marks(len(chunk))
                self._db.execute(
                    "UPDATE interferograms SET state = 'quarantined', updated_at = ?, finished_at = ?,"
                    " error = 'interrupted while processing ' || attempts || ' times'"
                    f" WHERE state = 'processing' AND attempts >= ? AND key IN ({marks})",
                    (stamp, stamp, max_attempts, *chunk),
                )
                queued += self._db.execute(
                    "UPDATE interferograms SET state = 'queued', updated_at = ?,"
                    " attempts = CASE WHEN state = 'done' THEN 0 ELSE attempts END"
                    " WHERE (state IN ('processing', 'failed', 'discovered')"
                    f" OR (state = 'done' AND model_version IS NOT ?)) AND key IN ({marks})",
                    (stamp, model_version, *chunk),
                ).rowcount
        return queued

    def reject(self, key: str, reason: str, now: datetime, detail: str | None = None,
               read: FileStamp | None = None) -> None:
        """→ rejected: ``reason`` is a short category the digest groups by (a quality check's
        name, ``decode``, ``rgba``); ``detail`` the one-line message naming file and reason;
        ``read`` the file as it was read, for ``reexamine``."""
        stamp = _to_text(now)
        self._transition(
            key, ("discovered", "queued", "processing"),
            "state = 'rejected', reason = ?, error = ?, updated_at = ?, finished_at = ?, file_size = ?,"
            " file_mtime_ns = ?",
            (reason, detail, stamp, stamp, None if read is None else read.size,
             None if read is None else read.mtime_ns),
        )

    def reexamine(self, key: str, current: FileStamp | None, now: datetime) -> bool:
        """rejected → queued when the file is no longer what was read and rejected: True if so.

        A frame whose writer paused past ``settle_seconds`` was read half-written and
        rejected as truncated; once its writer finishes it is read again, once.
        """
        if current is None:
            return False
        with self.transaction():
            return bool(self._db.execute(
                f"UPDATE interferograms SET {_REQUEUE} WHERE key = ? AND state = 'rejected'"
                " AND file_size IS NOT NULL AND (file_size != ? OR file_mtime_ns != ?)",
                (_to_text(now), key, current.size, current.mtime_ns),
            ).rowcount)

    def fail(self, key: str, error: str, now: datetime, max_attempts: int) -> State:
        """processing → failed, or → quarantined once it has been tried ``max_attempts`` times."""
        stamp = _to_text(now)
        with self.transaction():
            record = self.get(key)
            attempts = record.attempts if record else 0
            state: State = "quarantined" if attempts >= max_attempts else "failed"
            self._transition(
                key, ("processing",), "state = ?, error = ?, updated_at = ?, finished_at = ?",
                (state, error, stamp, stamp if state == "quarantined" else None),
            )
        return state

    def requeue_failed(self, now: datetime) -> int:
        """failed → queued for another attempt (the daemon calls this on its rescan)."""
        with self.transaction():
            return self._db.execute(
                "UPDATE interferograms SET state = 'queued', updated_at = ? WHERE state = 'failed'", (_to_text(now),),
            ).rowcount

    def retry(self, key: str, now: datetime) -> None:
        """An operator's second chance: rejected, failed or quarantined → queued, attempts reset.
        A file that never fitted the drop layout has nothing to retry."""
        record = self.get(key)
        if record is not None and record.frame is None:
            raise StaleTransition(f"{key}: not an interferogram ({record.error}); nothing to retry")
        self._transition(key, ("rejected", "failed", "quarantined"), _REQUEUE, (_to_text(now),))

    def retry_all(self, state: Literal["rejected", "quarantined"], now: datetime,
                  reason: str | None = None) -> list[str]:
        """``retry`` for every interferogram in ``state`` (rejected ones only of ``reason``,
        when given); returns their keys, first received first."""
        with self.transaction():
            rows = self._db.execute(
                f"UPDATE interferograms SET {_REQUEUE} WHERE state = ? AND frame IS NOT NULL"
                " AND (? IS NULL OR reason = ?) RETURNING key, received_at",
                (_to_text(now), state, reason, reason),
            ).fetchall()
        return [row["key"] for row in sorted(rows, key=lambda row: (row["received_at"], row["key"]))]

    # -- results and alerts -------------------------------------------------------------

    def record_results(self, key: str, tiles: Sequence[TileResult], model_version: str, now: datetime) -> None:
        """Store the tiles' results for an interferogram being processed (replacing a previous
        run of the same model version)."""
        stamp = _to_text(now)
        with self.transaction():
            self._transition(key, ("processing",), "updated_at = ?", (stamp,))
            self._db.executemany(
                "INSERT OR REPLACE INTO tile_results (interferogram, model_version, tile_index, box, caption,"
                " finding, neighbours, decision, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (key, model_version, tile.tile_index, json.dumps(list(tile.box)), tile.caption,
                     json.dumps(tile.finding, sort_keys=True), json.dumps(tile.neighbours, sort_keys=True),
                     json.dumps(tile.decision, sort_keys=True), stamp)
                    for tile in tiles
                ],
            )

    def record_alert(self, alert: AlertRecord, targets: Sequence[tuple[str, str]]) -> bool:
        """Store an alert and enqueue its message (which holds its payload) in one transaction;
        False when the key exists."""
        with self.transaction():
            inserted = self._db.execute(
                "INSERT INTO alerts (key, interferogram, level, severity, model_version, created)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (alert.key, alert.interferogram, alert.level, alert.severity, alert.model_version,
                 _to_text(alert.created)),
            ).rowcount
            if not inserted:
                return False
            return self.enqueue_message(alert.key, "alert", alert.payload, targets, alert.created)

    def finish(self, key: str, level: Level, model_version: str, now: datetime,
               notes: Mapping[str, Any] | None = None) -> None:
        """processing → done, noting the interferogram's decision level, the model that made it
        and what reading it noted (``notes``: tiles skipped, siblings refused)."""
        stamp = _to_text(now)
        self._transition(
            key, ("processing",),
            "state = 'done', level = ?, model_version = ?, error = NULL, updated_at = ?, finished_at = ?, notes = ?",
            (level, model_version, stamp, stamp, json.dumps(notes) if notes else None),
        )

    def complete(
        self, key: str, tiles: Sequence[TileResult], model_version: str, level: Level, now: datetime,
        alert: AlertRecord | None = None, targets: Sequence[tuple[str, str]] = (),
        notes: Mapping[str, Any] | None = None,
    ) -> bool:
        """Results, alert, outbox messages and processing → done as ONE transaction.

        A crash before the commit leaves the interferogram in processing with nothing
        stored (it is requeued and redone); after it, everything is there once. Returns
        whether a new alert was enqueued.
        """
        with self.transaction():
            self.record_results(key, tiles, model_version, now)
            enqueued = self.record_alert(alert, targets) if alert is not None else False
            self.finish(key, level, model_version, now, notes)
        return enqueued

    def results_for(self, key: str, model_version: str) -> list[TileResult]:
        rows = self._all(
            "SELECT * FROM tile_results WHERE interferogram = ? AND model_version = ? ORDER BY tile_index",
            (key, model_version),
        )
        return [
            TileResult(
                tile_index=row["tile_index"], box=tuple(json.loads(row["box"])), caption=row["caption"],
                finding=json.loads(row["finding"]), neighbours=json.loads(row["neighbours"]),
                decision=json.loads(row["decision"]),
            )
            for row in rows
        ]

    def alerts(self, since: datetime, until: datetime) -> list[AlertRecord]:
        """Alerts raised in [since, until), oldest first."""
        rows = self._all(
            "SELECT a.*, m.payload FROM alerts a JOIN messages m USING (key)"
            " WHERE a.created >= ? AND a.created < ? ORDER BY a.created, a.key",
            (_to_text(since), _to_text(until)),
        )
        return [_alert(row) for row in rows]

    # -- reading ------------------------------------------------------------------------

    def counts(self) -> dict[State, int]:
        """Interferograms per state; every state is present."""
        rows = self._all("SELECT state, count(*) AS n FROM interferograms GROUP BY state")
        found = {row["state"]: row["n"] for row in rows}
        return {state: found.get(state, 0) for state in STATES}

    def status_summary(self, now: datetime) -> dict[str, Any]:
        """One consistent snapshot for ``insarwatch status``, the systemd STATUS line and the digest."""
        with self.transaction(write=False):
            counts = self.counts()
            alerts_total, alerts_7d = self._db.execute(
                "SELECT count(*), count(*) FILTER (WHERE created >= ?) FROM alerts",
                (_to_text(now - timedelta(days=7)),),
            ).fetchone()
            last = self._db.execute(
                "SELECT key, finished_at, model_version FROM interferograms WHERE state = 'done'"
                " ORDER BY finished_at DESC, key LIMIT 1"
            ).fetchone()
            error = self._db.execute(
                "SELECT key, error, updated_at FROM interferograms WHERE state IN ('failed', 'quarantined')"
                " ORDER BY updated_at DESC, key LIMIT 1"
            ).fetchone()
            given_up = self._db.execute("SELECT count(*) FROM deliveries WHERE status = 'given_up'").fetchone()[0]
            return {
                "counts": counts,
                "queue_length": counts["discovered"] + counts["queued"] + counts["processing"],
                "alerts_total": alerts_total,
                "alerts_7d": alerts_7d,
                "pending_deliveries": self.pending_deliveries(),
                "given_up_deliveries": given_up,
                "last_processed": None if last is None else {"key": last["key"], "at": last["finished_at"]},
                "last_model_version": None if last is None else last["model_version"],
                "last_error": None if error is None else {
                    "key": error["key"], "error": error["error"], "at": error["updated_at"],
                },
            }

    def activity(self, since: datetime, until: datetime) -> list[FrameActivity]:
        """Per frame, what happened in [since, until): arrivals by receipt time; rejections,
        completions and quarantines by when they happened; alerts by when they were raised."""
        window = (_to_text(since), _to_text(until))
        per_frame: dict[str | None, dict[str, Any]] = {}

        def entry(frame: str | None) -> dict[str, Any]:
            return per_frame.setdefault(frame, {"rejected": {}, "alert_keys": []})

        with self.transaction(write=False):
            for row in self._db.execute(
                "SELECT frame, count(*) AS n FROM interferograms WHERE received_at >= ? AND received_at < ?"
                " GROUP BY frame", window,
            ):
                entry(row["frame"])["arrived"] = row["n"]
            for row in self._db.execute(
                "SELECT frame, state, reason, level, count(*) AS n FROM interferograms"
                " WHERE finished_at >= ? AND finished_at < ? GROUP BY frame, state, reason, level", window,
            ):
                counts = entry(row["frame"])
                if row["state"] == "rejected":
                    counts["rejected"][row["reason"]] = counts["rejected"].get(row["reason"], 0) + row["n"]
                elif row["state"] == "quarantined":
                    counts["quarantined"] = counts.get("quarantined", 0) + row["n"]
                elif row["state"] == "done":
                    counts["processed"] = counts.get("processed", 0) + row["n"]
                    if row["level"] in ("review", "alert"):
                        counts[row["level"]] = counts.get(row["level"], 0) + row["n"]
            for row in self._db.execute(
                "SELECT i.frame, a.key FROM alerts a JOIN interferograms i ON i.key = a.interferogram"
                " WHERE a.created >= ? AND a.created < ? ORDER BY a.created, a.key", window,
            ):
                entry(row["frame"])["alert_keys"].append(row["key"])
        return [
            FrameActivity(frame=frame, **{**values, "alert_keys": tuple(values["alert_keys"])})
            for frame, values in sorted(per_frame.items(), key=lambda item: item[0] or "")
        ]
