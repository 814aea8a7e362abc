"""The state store on real SQLite files: outbox, interferogram state machine, results, reads."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from insarwatch.errors import InsarwatchError
from insarwatch.store import SCHEMA_VERSION, StaleTransition, Store

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
TARGETS = [("email", "ops@example.org"), ("webhook", "https://chat.example.org/hook")]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as opened:
        yield opened


def test_new_database_is_wal_at_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "var" / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    Store(path).close()  # re-opening an up-to-date database migrates nothing


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(InsarwatchError, match="schema is version"):
        Store(path)


def test_enqueue_is_idempotent_on_the_key(store: Store) -> None:
    assert store.enqueue_message("alert:1", "alert", {"n": 1}, TARGETS, T0) is True
    assert store.enqueue_message("alert:1", "alert", {"n": 2}, [("email", "other@example.org")], T0) is False
    deliveries = store.deliveries_for("alert:1")
    assert [(d.channel, d.target) for d in deliveries] == TARGETS
    assert all(d.payload == {"n": 1} and d.kind == "alert" and d.status == "pending" for d in deliveries)
    assert store.pending_deliveries() == 2


def test_due_deliveries_respect_next_attempt_and_limit(store: Store) -> None:
    store.enqueue_message("alert:1", "alert", {}, TARGETS, T0)
    store.enqueue_message("digest:2026-11-20", "digest", {"period": "day"}, [("file", "reports")], T0 + timedelta(minutes=1))
    assert store.due_deliveries(T0 - timedelta(seconds=1)) == []
    assert [d.key for d in store.due_deliveries(T0)] == ["alert:1", "alert:1"]
    assert len(store.due_deliveries(T0 + timedelta(minutes=1))) == 3
    assert len(store.due_deliveries(T0 + timedelta(minutes=1), limit=1)) == 1


def test_retry_bookkeeping_until_delivered(store: Store) -> None:
    store.enqueue_message("alert:1", "alert", {}, TARGETS[:1], T0)
    (first,) = store.due_deliveries(T0)
    retry_at = T0 + timedelta(seconds=30)
    store.mark_failed(first.id, "connection refused", T0, retry_at)
    assert store.due_deliveries(T0 + timedelta(seconds=29)) == []
    (again,) = store.due_deliveries(retry_at)
    assert (again.attempts, again.last_error, again.next_attempt) == (1, "connection refused", retry_at)
    store.mark_delivered(again.id, retry_at)
    (done,) = store.deliveries_for("alert:1")
    assert (done.status, done.attempts, done.finished, done.next_attempt) == ("delivered", 2, retry_at, None)
    assert store.pending_deliveries() == 0
    assert store.due_deliveries(T0 + timedelta(days=1)) == []


def test_giving_up_keeps_the_error_and_stops_retries(store: Store) -> None:
    store.enqueue_message("alert:1", "alert", {}, TARGETS[:1], T0)
    (delivery,) = store.due_deliveries(T0)
    store.mark_failed(delivery.id, "550 mailbox unavailable", T0, None)
    (given_up,) = store.deliveries_for("alert:1")
    assert (given_up.status, given_up.last_error, given_up.attempts) == ("given_up", "550 mailbox unavailable", 1)
    assert store.pending_deliveries() == 0
    assert store.due_deliveries(T0 + timedelta(days=30)) == []


def test_a_finished_delivery_cannot_be_marked_again(store: Store) -> None:
    store.enqueue_message("alert:1", "alert", {}, TARGETS[:1], T0)
    (delivery,) = store.due_deliveries(T0)
    store.mark_delivered(delivery.id, T0)
    with pytest.raises(StaleTransition, match="delivered, not pending"):
        store.mark_delivered(delivery.id, T0)
    with pytest.raises(StaleTransition, match="delivered, not pending"):
        store.mark_failed(delivery.id, "late failure", T0, None)
    with pytest.raises(StaleTransition, match="missing"):
        store.mark_delivered(9999, T0)


def test_outbox_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as first:
        first.enqueue_message("alert:1", "alert", {"caption": "a dyke"}, TARGETS, T0)
    with Store(path) as second:
        assert second.pending_deliveries() == 2
        assert second.enqueue_message("alert:1", "alert", {}, TARGETS, T0) is False
        assert {d.payload["caption"] for d in second.due_deliveries(T0)} == {"a dyke"}


def test_naive_times_are_utc(store: Store) -> None:
    store.enqueue_message("alert:1", "alert", {}, TARGETS[:1], T0.replace(tzinfo=None))
    (delivery,) = store.due_deliveries(T0.astimezone(timezone(timedelta(hours=-5))))
    assert delivery.created == T0
