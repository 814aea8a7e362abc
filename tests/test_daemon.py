"""The daemon end to end: a real watchdog observer, real SQLite, a real tiny BLIP, real signals.

A subprocess runs ``insarwatch watch`` exactly as systemd would (with a notify socket),
frames arrive in the ways they do in a real drop (copied, written slowly in pieces, moved
into place), the daemon is SIGKILLed in the middle of its work and restarted, and every
interferogram must end in exactly one terminal state with its alert delivered once.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import TERMINAL, NotifySocket, drop_all, fill, start, states, wait_for, write_config
from typer.testing import CliRunner

from insarwatch.cli import app
from insarwatch.config import load_settings
from insarwatch.daemon import Daemon
from insarwatch.store import Store


def test_watch_survives_sigkill_and_processes_each_frame_once(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], notify_socket: NotifySocket,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, reader_threads=2)

    daemon = start(config, notify_socket)
    try:
        first = drop_all(frames, drop, lambda n: n % 2 == 0)
        wait_for(lambda: "done" in states(tiny_var_dir).values() and
                 "processing" in states(tiny_var_dir).values(), 120, "a frame done while others process")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert set(states(tiny_var_dir).values()) - TERMINAL, "the kill came after all the work was done"

        total = first + drop_all(frames, drop, lambda n: n % 2 == 1)  # arrive while the daemon is down
        daemon = start(config, notify_socket)
        wait_for(lambda: len(states(tiny_var_dir)) == total and set(states(tiny_var_dir).values()) <= TERMINAL,
                 180, "every interferogram in a terminal state")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: b"configuration reloaded" in (tmp_path / "daemon.log").read_bytes(), 30, "the reload")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()

    messages = notify_socket.drain()
    assert any(m.startswith("WATCHDOG=1") for m in messages)
    assert any("STATUS=" in m and "done" in m for m in messages)
    assert any("STOPPING=1" in m for m in messages)
    with Store(tiny_var_dir / "state.db", readonly=True) as store:
        records = {record.key: record for state in TERMINAL for record in store.in_state(state)}
        assert len(records) == total == 8
        # The truth file marks one low-coherence pair; only it may be refused, and never as
        # a half-written (undecodable) file.
        assert all(r.reason != "decode" for r in records.values())
        done = [key for key, record in records.items() if record.state == "done"]
        for key in done:
            assert len(store.results_for(key, records[key].model_version)) == 4  # 448 px in 224 px tiles
            (alert,) = [a for a in store.alerts(records[key].received_at.replace(year=2000),
                                                 records[key].finished_at.replace(year=2100))
                        if a.interferogram == key]
            deliveries = store.deliveries_for(alert.key)
            assert [d.status for d in deliveries] == ["delivered"]
    reports = list((tiny_var_dir / "reports" / "alerts").glob("*.json"))
    assert len(reports) == len(done)


@pytest.mark.parametrize("rescan_interval, overflow", [(1, False), (3600, True)],
                         ids=["scheduled-rescan", "rescan-on-overflow"])
def test_rescan_finds_frames_the_observer_missed(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], rescan_interval: int, overflow: bool,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop,
                          rescan_interval_seconds=rescan_interval, settle_seconds=0.2)
    daemon = Daemon(load_settings(config), config)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_for(lambda: daemon.observer is not None and daemon.observer.is_alive(), 60, "the observer")
        daemon.observer.stop()
        daemon.observer.join(5)
        total = drop_all(frames, drop, lambda n: True)
        if overflow:  # what the observer reports when the kernel dropped events (tests/test_intake.py)
            daemon.intake.events_lost()
        wait_for(lambda: len(states(tiny_var_dir)) == total and set(states(tiny_var_dir).values()) <= TERMINAL,
                 120, "the rescan to queue and finish every frame")
    finally:
        daemon.stopping.set()
        runner.join(60)
    assert not runner.is_alive()


def test_watch_once_processes_everything_and_never_alerts_twice(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path],
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    total = drop_all(frames, drop, lambda n: True)
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, settle_seconds=0)
    (drop / "124D_04854_171313" / "interferograms" / "20200101_20190101").mkdir(parents=True)
    bad = drop / "124D_04854_171313" / "interferograms" / "20200101_20190101" / "20200101_20190101.geo.diff.png"
    bad.write_bytes(b"")

    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(config), "watch", "--once"])
    assert result.exit_code == 0, result.output
    first = states(tiny_var_dir)
    assert len(first) == total + 1 and set(first.values()) <= TERMINAL
    with Store(tiny_var_dir / "state.db", readonly=True) as store:
        misfit = store.get(str(bad))
        assert misfit.reason == "unrecognised" and "not before" in misfit.error
        sent = store.status_summary(datetime.now(timezone.utc))["alerts_total"]
    assert sent >= 1

    # A second pass over the same drop finds nothing new to process or send.
    again = runner.invoke(app, ["--config", str(config), "watch", "--once"])
    assert again.exit_code == 0, again.output
    with Store(tiny_var_dir / "state.db", readonly=True) as store:
        assert store.status_summary(datetime.now(timezone.utc))["alerts_total"] == sent
        assert store.pending_deliveries() == 0


def test_watch_once_without_a_model_is_a_one_line_error(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tmp_path / "var", drop)
    result = CliRunner().invoke(app, ["--config", str(config), "watch", "--once"])
    assert result.exit_code == 1
    assert "no usable model" in result.output and "insarwatch train" in result.output


def test_daily_digest_is_written_and_delivered_once(tmp_path: Path, tiny_var_dir: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    settings = load_settings(write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop))
    now = [datetime(2026, 11, 23, 7, 0, 5, tzinfo=timezone.utc)]
    daemon = Daemon(settings, clock=lambda: now[0])
    try:
        daemon.digest()
        first = daemon.digest_period()
        now[0] += timedelta(hours=2)
        daemon.digest()  # a late re-run the same day covers the same period: not sent twice
        assert daemon.digest_period() == first
        with Store(settings.state_db, readonly=True) as store:
            assert store.pending_deliveries() == 0
    finally:
        daemon.store.close()
    (digest,) = (tiny_var_dir / "reports" / "digests").glob("*.html")
    assert "digest" in digest.read_text(encoding="utf-8").lower()


def test_a_full_disk_pauses_the_daemon_and_loses_nothing(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    var_dir = small_disk / "var"
    shutil.copytree(tiny_var_dir, var_dir, symlinks=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", var_dir, drop, settle_seconds=0.2, storage_retry_seconds=0.5)
    daemon = Daemon(load_settings(config), config)
    runner = threading.Thread(target=daemon.run)
    with caplog.at_level(logging.ERROR):
        runner.start()
        try:
            wait_for(lambda: daemon.observer is not None and daemon.observer.is_alive(), 60, "the observer")
            ballast = fill(small_disk)
            total = drop_all(frames, drop, lambda n: True)
            wait_for(lambda: "cannot record progress" in caplog.text, 60, "the daemon to notice the full disk")
            assert runner.is_alive()
            ballast.unlink()
            wait_for(lambda: len(states(var_dir)) == total and set(states(var_dir).values()) <= TERMINAL,
                     120, "every frame once the disk has room again")
        finally:
            daemon.stopping.set()
            runner.join(60)
    assert "database or disk is full" in caplog.text
    assert str(var_dir / "state.db") in caplog.text
