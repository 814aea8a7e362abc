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
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from .errors import InsarwatchError

BUSY_TIMEOUT_MS = 10_000
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

MessageKind = Literal["alert", "digest"]
DeliveryStatus = Literal["pending", "delivered", "given_up"]

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
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StaleTransition(InsarwatchError):
    """A change was asked of a row that is no longer in the state the caller expected."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def to_text(moment: datetime) -> str:
    """The stored form of a timestamp: fixed-width UTC, so text order is time order."""
    return _utc(moment).strftime(_TIME_FORMAT)


def from_text(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)


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


_DELIVERY_COLUMNS = (
    "d.id, d.key, m.kind, d.channel, d.target, m.payload, d.attempts, d.created, d.next_attempt,"
    " d.status, d.finished, d.last_error"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"], key=row["key"], kind=row["kind"], channel=row["channel"], target=row["target"],
        payload=json.loads(row["payload"]), attempts=row["attempts"], created=from_text(row["created"]),
        next_attempt=from_text(row["next_attempt"]), status=row["status"],
        finished=from_text(row["finished"]), last_error=row["last_error"],
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
                self._db.execute("PRAGMA journal_mode = WAL")
                # FULL: a commit that reported success survives power loss, so an alert
                # already sent is never re-derived from a rolled-back state.
                self._db.execute("PRAGMA synchronous = FULL")
                self._migrate()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise InsarwatchError(f"{self.path}: cannot open state database: {exc}") from None
        if version != SCHEMA_VERSION:
            self._db.close()
            raise InsarwatchError(
                f"{self.path}: state database schema is version {version}, this insarwatch reads "
                f"version {SCHEMA_VERSION} (start the daemon of this version once to migrate it)"
            )

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
    def transaction(self) -> Iterator[None]:
        """Group calls into one transaction; nested use joins the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            # IMMEDIATE takes the write lock up front, so two writers never deadlock on an upgrade.
            self._db.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.transaction():
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self.transaction():
            return self._db.execute(sql, params).fetchone()

    # -- outbox -----------------------------------------------------------------------

    def enqueue_message(
        self, key: str, kind: MessageKind, payload: dict[str, Any], targets: Sequence[tuple[str, str]],
        now: datetime,
    ) -> bool:
        """Store a message and one pending delivery per (channel, target), due now.

        False, and nothing stored, when a message with this key exists: that is how an
        alert is never sent twice.
        """
        created = to_text(now)
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
        """Pending deliveries whose next attempt is due, oldest first."""
        rows = self._all(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN messages m USING (key)"
            " WHERE d.status = 'pending' AND d.next_attempt <= ? ORDER BY d.next_attempt, d.id LIMIT ?",
            (to_text(now), limit),
        )
        return [_delivery(row) for row in rows]

    def _finish_delivery(self, delivery_id: int, sql: str, params: Sequence[Any]) -> None:
        with self.transaction():
            if not self._db.execute(sql + " WHERE id = ? AND status = 'pending'", (*params, delivery_id)).rowcount:
                row = self._db.execute("SELECT status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
                actual = row["status"] if row else "missing"
                raise StaleTransition(f"delivery {delivery_id} is {actual}, not pending")

    def mark_delivered(self, delivery_id: int, now: datetime) -> None:
        self._finish_delivery(
            delivery_id,
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, finished = ?, next_attempt = NULL",
            (to_text(now),),
        )

    def mark_failed(self, delivery_id: int, error: str, now: datetime, next_attempt: datetime | None) -> None:
        """Record a failed attempt: retry at ``next_attempt``, or give up when it is None."""
        if next_attempt is None:
            sql = ("UPDATE deliveries SET status = 'given_up', attempts = attempts + 1, last_error = ?,"
                   " finished = ?, next_attempt = NULL")
            params: tuple[Any, ...] = (error, to_text(now))
        else:
            sql = "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt = ?"
            params = (error, to_text(next_attempt))
        self._finish_delivery(delivery_id, sql, params)

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
