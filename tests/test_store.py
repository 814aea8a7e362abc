"""The state store on real SQLite files: outbox, interferogram state machine, results, reads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from insarwatch.cli import app
from insarwatch.errors import InsarwatchError
from insarwatch.store import SCHEMA_VERSION, STATES, AlertRecord, StaleTransition, Store, TileResult

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


def test_an_older_database_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    from insarwatch.store import _MIGRATIONS

    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    for statement in _MIGRATIONS[0]:  # the outbox-only schema of version 1
        db.execute(statement)
    db.execute("INSERT INTO messages VALUES ('alert:1', 'alert', '{}', '2026-11-20T12:00:00.000000Z')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.enqueue_message("alert:1", "alert", {}, TARGETS, T0) is False
        assert store.counts()["queued"] == 0
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


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


def test_the_newest_delivery_grows_with_each_message_while_the_pending_count_may_not(store: Store) -> None:
    """The daemon wakes its sender when a step stores a message; a sender finishing two
    deliveries while the step stores two more leaves the pending count where it was."""
    assert store.newest_delivery() == 0
    store.enqueue_message("alert:1", "alert", {}, TARGETS, T0)
    before, pending = store.newest_delivery(), store.pending_deliveries()
    for delivery in store.due_deliveries(T0):
        store.mark_delivered(delivery.id, T0)
    store.enqueue_message("alert:2", "alert", {}, TARGETS, T0)
    assert store.pending_deliveries() == pending
    assert store.newest_delivery() == before + len(TARGETS)
    assert store.enqueue_message("alert:2", "alert", {}, TARGETS, T0) is False
    assert store.newest_delivery() == before + len(TARGETS)


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


# -- interferogram state machine -------------------------------------------------------

FRAME = "124D_04854_171313"


def _key(n: int, frame: str = FRAME) -> str:
    return f"{frame}/202611{n:02d}_202611{n + 6:02d}"


def _discover(store: Store, n: int, frame: str = FRAME, at: datetime = T0) -> str:
    key = _key(n, frame)
    store.discover(key, f"/drop/{key}.geo.diff.png", frame, date(2026, 11, n), date(2026, 11, n + 6),
                   at + timedelta(minutes=n))
    return key


def _queued(store: Store, *numbers: int, frame: str = FRAME) -> list[str]:
    keys = [_discover(store, n, frame) for n in numbers]
    for key in keys:
        store.queue(key, T0)
    return keys


def _tiles(caption: str = "a dyke - type deformation pattern of high intensity") -> list[TileResult]:
    return [
        TileResult(index, (index * 224, 0, index * 224 + 224, 224), caption,
                   {"recognized": True, "deformation": True}, [{"similarity": 0.9, "caption": caption}],
                   {"level": "alert", "severity": "high"})
        for index in range(2)
    ]


def _alert(key: str, at: datetime = T0, model: str = "v1") -> AlertRecord:
    return AlertRecord(f"alert:{key}:{model}", key, "alert", "high", model, {"interferogram": key}, at)


def test_discover_is_idempotent(store: Store) -> None:
    key = _discover(store, 1)
    assert store.discover(key, "/elsewhere.png", FRAME, date(2026, 11, 1), date(2026, 11, 7), T0) is False
    record = store.get(key)
    assert (record.state, record.path, record.primary, record.attempts) == (
        "discovered", f"/drop/{key}.geo.diff.png", date(2026, 11, 1), 0)
    assert store.get(_key(2)) is None


def test_happy_path_through_every_state(store: Store) -> None:
    (key,) = _queued(store, 1)
    assert store.get(key).state == "queued"
    (claimed,) = store.claim(10, T0)
    assert (claimed.key, claimed.state, claimed.attempts) == (key, "processing", 1)
    new_alert = store.complete(key, _tiles(), "v1", "alert", T0 + timedelta(seconds=5), _alert(key), TARGETS)
    done = store.get(key)
    assert new_alert and (done.state, done.level, done.model_version, done.finished_at) == (
        "done", "alert", "v1", T0 + timedelta(seconds=5))
    assert store.results_for(key, "v1") == _tiles()
    assert [d.key for d in store.deliveries_for(f"alert:{key}:v1")] == [f"alert:{key}:v1"] * 2
    assert store.alerts(T0, T0 + timedelta(days=1)) == [_alert(key)]


def test_claim_is_first_received_first_and_bounded(store: Store) -> None:
    keys = _queued(store, 3, 1, 2)
    first = store.claim(2, T0)
    assert [r.key for r in first] == [_key(1), _key(2)]
    assert [r.key for r in store.claim(2, T0)] == [_key(3)]
    assert store.claim(2, T0) == []
    assert store.counts()["processing"] == len(keys)


def test_in_state_lists_first_received_first(store: Store) -> None:
    _queued(store, 3, 1, 2)
    _discover(store, 4)
    assert [r.key for r in store.in_state("queued")] == [_key(1), _key(2), _key(3)]
    assert [r.key for r in store.in_state("queued", limit=1)] == [_key(1)]
    assert [r.key for r in store.in_state("discovered")] == [_key(4)]
    assert store.in_state("done") == []


def test_stale_transitions_are_refused_and_change_nothing(store: Store) -> None:
    (key,) = _queued(store, 1)
    with pytest.raises(StaleTransition, match="is queued, not processing"):
        store.finish(key, "quiet", "v1", T0)
    with pytest.raises(StaleTransition, match="is queued, not discovered"):
        store.queue(key, T0)
    store.claim(1, T0)
    store.complete(key, _tiles(), "v1", "alert", T0, _alert(key), TARGETS)
    # A second worker finishing the same interferogram after it was done: nothing is added.
    with pytest.raises(StaleTransition, match="is done, not processing"):
        store.complete(key, _tiles("other"), "v2", "alert", T0, _alert(key, model="v2"), TARGETS)
    assert store.results_for(key, "v2") == [] and store.deliveries_for(f"alert:{key}:v2") == []
    with pytest.raises(StaleTransition, match="is done"):
        store.reject(key, "coherence", T0)
    with pytest.raises(StaleTransition, match="unknown"):
        store.queue(_key(9), T0)
    assert store.get(key).state == "done"


def test_rejection_keeps_reason_and_detail(store: Store) -> None:
    discovered = _discover(store, 1)
    (processing,) = _queued(store, 2)
    store.claim(1, T0)
    store.reject(discovered, "decode", T0, f"{discovered}: zero-byte file")
    store.reject(processing, "coherence", T0, "mean coherence 0.12 < 0.25")
    assert (store.get(processing).state, store.get(processing).reason, store.get(processing).error) == (
        "rejected", "coherence", "mean coherence 0.12 < 0.25")
    assert store.counts()["rejected"] == 2


def test_unrecognised_files_are_recorded_once(store: Store) -> None:
    assert store.record_unrecognised("/drop/x/notes.png", "not a LiCSAR product", T0) is True
    assert store.record_unrecognised("/drop/x/notes.png", "not a LiCSAR product", T0) is False
    record = store.get("/drop/x/notes.png")
    assert (record.state, record.reason, record.error, record.frame) == (
        "rejected", "unrecognised", "not a LiCSAR product", None)
    with pytest.raises(StaleTransition, match="not an interferogram"):
        store.retry("/drop/x/notes.png", T0)


def test_failures_retry_then_quarantine_after_max_attempts(store: Store) -> None:
    (key,) = _queued(store, 1)
    for attempt in (1, 2):
        (claimed,) = store.claim(1, T0)
        assert claimed.attempts == attempt
        assert store.fail(key, f"CUDA error {attempt}", T0, max_attempts=3) == "failed"
        assert store.claim(1, T0) == []  # failed frames wait for the retry pass
        assert store.requeue_failed(T0) == 1
    store.claim(1, T0)
    assert store.fail(key, "CUDA error 3", T0 + timedelta(hours=1), max_attempts=3) == "quarantined"
    record = store.get(key)
    assert (record.state, record.error, record.attempts) == ("quarantined", "CUDA error 3", 3)
    assert store.requeue_failed(T0) == 0
    store.retry(key, T0)
    assert (store.get(key).state, store.get(key).attempts) == ("queued", 0)


def test_requeue_processing_on_start_up(store: Store) -> None:
    keys = _queued(store, 1, 2)
    store.claim(2, T0)
    assert store.requeue_processing(T0 + timedelta(minutes=1)) == 2
    assert [store.get(key).state for key in keys] == ["queued", "queued"]
    assert [r.attempts for r in store.claim(2, T0)] == [2, 2]


def test_a_frame_that_keeps_killing_the_daemon_is_quarantined(store: Store) -> None:
    (poison,) = _queued(store, 1)
    for _ in range(3):
        store.claim(1, T0)
        store.requeue_processing(T0, max_attempts=3)
    record = store.get(poison)
    assert (record.state, record.error) == ("quarantined", "interrupted while processing 3 times")


def test_release_does_not_use_up_an_attempt(store: Store) -> None:
    (key,) = _queued(store, 1)
    store.claim(1, T0)
    store.release([key], T0)
    assert (store.get(key).state, store.get(key).attempts) == ("queued", 0)


def test_an_alert_key_is_recorded_and_enqueued_once(store: Store) -> None:
    (key,) = _queued(store, 1)
    store.claim(1, T0)
    assert store.complete(key, _tiles(), "v1", "alert", T0, _alert(key), TARGETS) is True
    assert store.record_alert(_alert(key, at=T0 + timedelta(hours=1)), [("email", "late@example.org")]) is False
    assert store.alerts(T0, T0 + timedelta(days=1)) == [_alert(key)]
    assert len(store.deliveries_for(_alert(key).key)) == len(TARGETS)


# -- concurrency and crashes -----------------------------------------------------------


def test_reader_sees_a_snapshot_while_the_writer_holds_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as writer:
        _queued(writer, 1)
        with Store(path, readonly=True) as reader:
            with writer.transaction():
                _queued(writer, 2, 3)
                writer.claim(1, T0)
                # The reader is not blocked by the open write transaction and sees none of it.
                assert reader.counts()["queued"] == 1
                assert reader.status_summary(T0)["queue_length"] == 1
            assert reader.counts()["queued"] == 2 and reader.counts()["processing"] == 1
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader.discover("x", "x", FRAME, date(2026, 1, 1), date(2026, 1, 7), T0)


def test_open_readonly_reads_a_snapshot_or_an_empty_schema_without_creating_anything(tmp_path: Path) -> None:
    absent = tmp_path / "var" / "state.db"
    with Store.open_readonly(absent) as empty:
        assert set(empty.counts().values()) == {0}
        assert empty.status_summary(T0)["last_processed"] is None
    assert not absent.parent.exists()
    path = tmp_path / "state.db"
    with Store(path) as writer:
        _queued(writer, 1, 2)
    with Store.open_readonly(path) as reader:
        assert reader.counts()["queued"] == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.discover("x", "x", FRAME, date(2026, 1, 1), date(2026, 1, 7), T0)


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as store, Store(path, readonly=True) as other:
        (key,) = _queued(store, 1)
        store.claim(1, T0)
        with pytest.raises(StaleTransition), store.transaction():
            store.record_results(key, _tiles(), "v1", T0)
            store.record_alert(_alert(key), TARGETS)
            store.finish(_key(9), "alert", "v1", T0)
        for view in (store, other):
            assert view.get(key).state == "processing"
            assert view.results_for(key, "v1") == [] and view.alerts(T0, T0 + timedelta(days=1)) == []
            assert view.pending_deliveries() == 0


def test_a_failed_step_inside_a_batch_is_undone_alone(store: Store) -> None:
    done, stale = _queued(store, 1, 2)
    store.claim(2, T0)
    store.reject(stale, "coherence", T0)  # another worker got there first
    with store.transaction():
        assert store.complete(done, _tiles(), "v1", "alert", T0, _alert(done), TARGETS) is True
        with pytest.raises(StaleTransition), store.transaction():
            store.record_alert(_alert(stale), TARGETS)
            store.finish(stale, "alert", "v1", T0)
    assert store.get(done).state == "done" and store.get(stale).state == "rejected"
    assert store.results_for(stale, "v1") == [] and store.deliveries_for(_alert(stale).key) == []
    assert [a.key for a in store.alerts(T0, T0 + timedelta(days=1))] == [_alert(done).key]


def _run_and_kill(path: Path, commit: bool) -> None:
    """Complete an interferogram in a child process that SIGKILLs itself before or after the commit."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import T0, TARGETS, _alert, _key, _tiles
        from insarwatch.store import Store
        store = Store({str(path)!r})
        key = _key(1)
        store.claim(1, T0)
        with store.transaction():
            store.complete(key, _tiles(), "v1", "alert", T0, _alert(key), TARGETS)
            if not {commit}:
                os.kill(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr


def test_killed_before_commit_loses_nothing_and_sends_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as store:
        (key,) = _queued(store, 1)
    _run_and_kill(path, commit=False)
    with Store(path) as store:
        assert store.get(key).state == "processing"
        assert store.results_for(key, "v1") == [] and store.pending_deliveries() == 0
        assert store.requeue_processing(T0, max_attempts=3) == 1
        store.claim(1, T0)
        assert store.complete(key, _tiles(), "v1", "alert", T0, _alert(key), TARGETS) is True
        assert store.pending_deliveries() == len(TARGETS)


def test_killed_after_commit_keeps_everything_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as store:
        (key,) = _queued(store, 1)
    _run_and_kill(path, commit=True)
    with Store(path) as store:
        assert store.requeue_processing(T0) == 0
        assert store.get(key).state == "done"
        assert store.results_for(key, "v1") == _tiles()
        assert [a.key for a in store.alerts(T0, T0 + timedelta(days=1))] == [_alert(key).key]
        assert store.pending_deliveries() == len(TARGETS)


# -- reading ---------------------------------------------------------------------------


def _populate(store: Store) -> dict[str, str]:
    """Two frames: an alert, a quiet frame, a rejection, a quarantine, a queued and a pending one."""
    other = "087A_05372_131313"
    alert, quiet, rejected, broken, waiting = _queued(store, 1, 2, 3, 4, 5)
    (later,) = _queued(store, 6, frame=other)
    store.claim(4, T0)
    store.complete(alert, _tiles(), "v1", "alert", T0 + timedelta(hours=1), _alert(alert, T0 + timedelta(hours=1)),
                   TARGETS)
    store.complete(quiet, _tiles("no deformation activity can be detected"), "v1", "quiet", T0 + timedelta(hours=2))
    store.reject(rejected, "coherence", T0 + timedelta(hours=1), "mean coherence 0.1 < 0.25")
    store.fail(broken, "CUDA out of memory", T0 + timedelta(hours=3), max_attempts=1)
    return {"alert": alert, "quiet": quiet, "rejected": rejected, "broken": broken, "waiting": waiting, "other": later}


def test_status_summary_of_an_empty_store(store: Store) -> None:
    summary = store.status_summary(T0)
    assert summary["counts"] == {state: 0 for state in
                                 ("discovered", "queued", "processing", "done", "rejected", "failed", "quarantined")}
    assert (summary["alerts_total"], summary["alerts_7d"], summary["pending_deliveries"]) == (0, 0, 0)
    assert (summary["queue_length"], summary["last_processed"], summary["last_error"]) == (0, None, None)


def test_status_summary_of_a_busy_store(store: Store) -> None:
    keys = _populate(store)
    summary = store.status_summary(T0 + timedelta(days=1))
    assert summary["counts"] == {"discovered": 0, "queued": 2, "processing": 0, "done": 2, "rejected": 1,
                                 "failed": 0, "quarantined": 1}
    assert (summary["alerts_total"], summary["alerts_7d"], summary["pending_deliveries"]) == (1, 1, 2)
    assert summary["queue_length"] == 2
    assert summary["last_processed"] == {"key": keys["quiet"], "at": "2026-11-20T14:00:00.000000Z"}
    assert summary["last_model_version"] == "v1"
    assert summary["last_error"] == {"key": keys["broken"], "error": "CUDA out of memory",
                                     "at": "2026-11-20T15:00:00.000000Z"}
    assert store.status_summary(T0 + timedelta(days=8))["alerts_7d"] == 0


def test_activity_per_frame_for_the_digest(store: Store) -> None:
    keys = _populate(store)
    store.record_unrecognised("/drop/stray.png", "not a LiCSAR product", T0 + timedelta(hours=1))
    (unrecognised, other, mine) = store.activity(T0, T0 + timedelta(days=1))
    assert (unrecognised.frame, unrecognised.arrived, unrecognised.rejected) == (None, 1, {"unrecognised": 1})
    assert mine.frame == FRAME
    assert (mine.arrived, mine.rejected, mine.processed, mine.review, mine.alert, mine.quarantined) == (
        5, {"coherence": 1}, 2, 0, 1, 1)
    assert mine.alert_keys == (_alert(keys["alert"]).key,)
    assert (other.frame, other.arrived, other.processed, other.alert_keys) == ("087A_05372_131313", 1, 0, ())
    later = store.activity(T0 + timedelta(hours=1, minutes=30), T0 + timedelta(days=1))
    assert [(a.frame, a.arrived, a.processed, a.alert, a.quarantined) for a in later] == [(FRAME, 0, 1, 0, 1)]



# -- insarwatch status -----------------------------------------------------------------


def _status(var_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["status", *args], env={"INSARWATCH_VAR_DIR": str(var_dir)})
    return result.exit_code, result.output


def test_status_of_an_empty_var_dir_is_all_zeros_and_creates_nothing(tmp_path: Path) -> None:
    var = tmp_path / "var"
    code, output = _status(var, "--json")
    assert code == 0, output
    summary = json.loads(output)
    assert summary["counts"] == {state: 0 for state in STATES}
    assert (summary["alerts_total"], summary["pending_deliveries"], summary["model_version"]) == (0, 0, None)
    code, output = _status(var)
    assert code == 0 and "pending deliveries" in output and "never" in output
    assert not var.exists()


def test_status_of_a_running_installation(tmp_path: Path) -> None:
    var = tmp_path / "var"
    (var / "models" / "20261120-0700").mkdir(parents=True)
    (var / "models" / "current").symlink_to("20261120-0700")
    with Store(var / "state.db") as daemon:
        keys = _populate(daemon)
        with daemon.transaction():  # the daemon is mid-write while status reads
            daemon.claim(1, T0)
            code, output = _status(var, "--json")
    assert code == 0, output
    summary = json.loads(output)
    assert {"counts", "alerts_total", "pending_deliveries", "model_version", "queue_length", "alerts_7d",
            "last_processed", "last_error"} <= summary.keys()
    assert (summary["counts"]["done"], summary["counts"]["queued"], summary["counts"]["processing"]) == (2, 2, 0)
    assert (summary["alerts_total"], summary["pending_deliveries"]) == (1, 2)
    assert summary["model_version"] == "20261120-0700"
    assert summary["last_processed"]["key"] == keys["quiet"]
    code, output = _status(var)
    assert code == 0 and "20261120-0700" in output and "CUDA out of" in output


def test_status_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("not sqlite at all, just some text " * 50)
    code, output = _status(tmp_path)
    assert code == 1
    assert "state.db: state database is corrupt (file is not a database)" in output


def test_a_claim_by_keys_takes_only_those_still_queued(store: Store) -> None:
    keys = _queued(store, 1, 2, 3)
    assert [r.key for r in store.claim(10, T0, keys=[keys[2], keys[0]])] == [keys[0], keys[2]]
    # A second backfill over an overlapping range gets only what the first has not taken.
    assert [r.key for r in store.claim(10, T0, keys=keys)] == [keys[1]]
    assert store.claim(10, T0, keys=keys) == []


def test_requeue_for_backfill_redoes_what_this_model_version_has_not_finished(store: Store) -> None:
    new, failed, other_model, same_model, interrupted, poison, rejected = (
        _discover(store, n) for n in range(1, 8))
    store.queue(poison, T0)
    for _ in range(2):  # it took two runs down with it already
        store.claim(1, T0, keys=[poison])
        store.requeue_processing(T0)
    for key in (failed, other_model, same_model, interrupted, rejected):
        store.queue(key, T0)
    store.claim(10, T0)  # a third run, killed with these in processing
    store.fail(failed, "OSError", T0, max_attempts=3)
    store.complete(other_model, _tiles(), "v1", "quiet", T0)
    store.complete(same_model, _tiles(), "v2", "quiet", T0)
    store.reject(rejected, "coherence", T0)
    everything = [new, failed, other_model, same_model, interrupted, poison, rejected]
    assert store.requeue_for_backfill(everything, "v2", T0, max_attempts=3) == 4
    states = {key: (store.get(key).state, store.get(key).attempts) for key in everything}
    assert states == {
        new: ("queued", 0), failed: ("queued", 1), other_model: ("queued", 0), interrupted: ("queued", 1),
        same_model: ("done", 1), poison: ("quarantined", 3), rejected: ("rejected", 1),
    }
    assert store.get(poison).error == "interrupted while processing 3 times"


def test_an_alert_payload_is_stored_once_and_a_version_2_database_keeps_its_alerts(tmp_path: Path) -> None:
    from insarwatch.store import _MIGRATIONS

    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    for statement in (*_MIGRATIONS[0], *_MIGRATIONS[1]):  # version 2: the payload in both tables
        db.execute(statement)
    stamp = "2026-11-20T12:00:00.000000Z"
    payload = json.dumps({"figures": "x" * 100_000})
    db.execute("INSERT INTO messages VALUES ('F/a/v1', 'alert', ?, ?)", (payload, stamp))
    db.execute("INSERT INTO interferograms (key, path, state, received_at, updated_at) VALUES"
               " ('F/a', '/drop/a', 'done', ?, ?)", (stamp, stamp))
    db.execute("INSERT INTO alerts VALUES ('F/a/v1', 'F/a', 'alert', 'high', 'v1', ?, ?)", (payload, stamp))
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with Store(path) as store:
        (old,) = store.alerts(T0 - timedelta(days=30), T0 + timedelta(days=30))
        assert old.payload == json.loads(payload)
        store.discover("F/b", "/drop/b", "F", date(2026, 11, 2), date(2026, 11, 14), T0)
        store.queue("F/b", T0)
        store.claim(1, T0)
        big = {"figures": "y" * 200_000}
        store.complete("F/b", [], "v1", "alert", T0, AlertRecord("F/b/v1", "F/b", "alert", "high", "v1", big, T0),
                       TARGETS)
        window = (T0 - timedelta(days=30), T0 + timedelta(days=30))
        assert [a.payload for a in store.alerts(*window) if a.key == "F/b/v1"] == [big]
    db = sqlite3.connect(path)
    stored = sum(len(text) for (text,) in db.execute("SELECT payload FROM messages"))
    columns = [row[1] for row in db.execute("PRAGMA table_info(alerts)")]
    db.close()
    assert "payload" not in columns and stored == len(payload) + len(json.dumps(big, sort_keys=True))
