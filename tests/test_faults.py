"""Faults injected into the real daemon: ``insarwatch watch`` runs as a subprocess (as
systemd runs it) or in-process, and the test does what an unlucky administrator or a
hostile host does to it: a second daemon on the same state, a slow webhook, SIGTERM in the
middle of a batch, a database deleted or corrupted under it, a full disk. After each, the
service's invariant must hold: every interferogram in exactly one terminal state, every
alert delivered once per channel.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from helpers import (INSARWATCH, TERMINAL, NotifySocket, Webhook, drop_all, fill, start, states, wait_for,
                     watch_once, write_config)

from insarwatch.config import load_settings
from insarwatch.daemon import Daemon
from insarwatch.registry import ModelStore
from insarwatch.store import Store


def test_a_second_daemon_on_the_same_var_dir_says_who_holds_it_and_exits_1(
    tmp_path: Path, tiny_var_dir: Path, notify_socket: NotifySocket,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop)
    first = start(config, notify_socket)
    try:
        second = subprocess.run([INSARWATCH, "--config", str(config), "watch"], capture_output=True, text=True,
                                timeout=120)
    finally:
        first.terminate()
        assert first.wait(60) == 0
    assert second.returncode == 1
    (line,) = second.stderr.strip().splitlines()
    assert f"pid {first.pid}" in line and str(tiny_var_dir / "insarwatch.lock") in line


def alert_keys(var_dir: Path) -> list[str]:
    with Store(var_dir / "state.db", readonly=True) as store:
        return [alert.key for alert in store.alerts(datetime(2000, 1, 1), datetime(2100, 1, 1))]


def test_a_slow_webhook_holds_up_no_frame_and_gets_each_alert_once(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], notify_socket: NotifySocket,
    webhook: Webhook,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop,
                          extra=f'[notify.webhook]\nurl = "{webhook.url}"\ntimeout_seconds = 600\n')
    webhook.gate.clear()  # the webhook takes every request and answers none until the test lets it
    daemon = start(config, notify_socket)
    try:
        total = drop_all(frames, drop, lambda n: True)
        wait_for(lambda: len(states(tiny_var_dir)) == total and set(states(tiny_var_dir).values()) <= TERMINAL,
                 180, "every frame finished while the webhook is still answering the first alert")
        assert webhook.arrived.is_set() and len(webhook.bodies) == 1
        webhook.gate.set()
        alerts = alert_keys(tiny_var_dir)
        wait_for(lambda: sorted(webhook.keys()) == sorted(alerts), 120, "each alert posted")
        daemon.terminate()
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert sorted(webhook.keys()) == sorted(alerts) and len(alerts) >= 1


def test_sigterm_mid_batch_with_a_short_shutdown_timeout_requeues_and_exits_0(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], notify_socket: NotifySocket,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, shutdown_timeout_seconds=0.01)
    # Long beams over big batches, so SIGTERM finds the model mid-batch.
    config.write_text(config.read_text().replace("num_beams = 2", "num_beams = 16")
                      .replace("max_new_tokens = 12", "max_new_tokens = 120").replace("tiles = 4", "tiles = 16"))
    daemon = start(config, notify_socket)
    try:
        drop_all(frames, drop, lambda n: True)
        wait_for(lambda: "processing" in states(tiny_var_dir).values(), 120, "a batch under way")
        daemon.terminate()
        code = daemon.wait(120)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = (tmp_path / "daemon.log").read_text()
    assert code == 0, log[-2000:]
    assert "processing" not in states(tiny_var_dir).values()


def dangle_current(var_dir: Path) -> None:
    link = var_dir / "models" / "current"
    link.unlink()
    link.symlink_to("20991231T000000Z")  # a version that was never registered (or was deleted)


def test_status_answers_with_a_dangling_model_link(tmp_path: Path, tiny_var_dir: Path) -> None:
    dangle_current(tiny_var_dir)
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, tmp_path / "drop")
    result = subprocess.run([INSARWATCH, "--config", str(config), "status", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["done"] == 0 and summary["model_version"] is None
    assert "models/current" in summary["model_problem"] and "20991231T000000Z" in summary["model_problem"]


def test_a_dangling_model_link_at_start_up_is_one_line(tmp_path: Path, tiny_var_dir: Path) -> None:
    dangle_current(tiny_var_dir)
    (tmp_path / "drop").mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, tmp_path / "drop")
    result = subprocess.run([INSARWATCH, "--config", str(config), "watch"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "models/current" in line and "Traceback" not in result.stderr


def test_the_running_daemon_keeps_its_model_and_says_once_why_a_new_one_is_refused(
    tmp_path: Path, tiny_var_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "drop").mkdir()
    daemon = Daemon(load_settings(write_config(tmp_path / "insarwatch.toml", tiny_var_dir, tmp_path / "drop")))
    try:
        daemon.check_model()
        dangle_current(tiny_var_dir)
        caplog.clear()  # only what the three checks below say
        with caplog.at_level(logging.ERROR, logger="insarwatch.daemon"):
            for _ in range(3):  # three scheduled model checks
                daemon.check_model()
    finally:
        daemon.store.close()
    # Only this thread's records: a daemon thread another test left winding down may log too.
    said = [record for record in caplog.records
            if record.name == "insarwatch.daemon" and record.thread == threading.get_ident()]
    assert len(said) == 1, [record.getMessage() for record in said]
    (refusal,) = said
    assert "20991231T000000Z" in refusal.getMessage() and "keeping" in refusal.getMessage()


def test_a_state_database_corrupt_beyond_its_first_page_is_one_line_for_status_and_watch(
    tmp_path: Path, tiny_var_dir: Path,
) -> None:
    (tmp_path / "drop").mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, tmp_path / "drop")
    database = tiny_var_dir / "state.db"
    with Store(database) as store:
        for number in range(200):
            store.discover(f"F/{number}", f"/drop/{number}", "F", date(2020, 1, 1), date(2020, 1, 13),
                           datetime(2026, 11, 1, tzinfo=timezone.utc))
    page = 4096
    damaged = bytearray(database.read_bytes())
    damaged[page:] = random.Random(13).randbytes(len(damaged) - page)  # the header page stays intact
    database.write_bytes(bytes(damaged))

    lines = []
    for command in (["status", "--json"], ["watch"]):
        result = subprocess.run([INSARWATCH, "--config", str(config), *command], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.strip().splitlines()
        lines.append(line)
    assert lines[0] == lines[1]
    assert str(database) in lines[0] and "corrupt" in lines[0]
    assert database.read_bytes() == bytes(damaged)  # never recreated over what it still holds


def test_a_state_database_deleted_under_the_daemon_stops_it_with_one_line(
    tmp_path: Path, tiny_var_dir: Path, notify_socket: NotifySocket,
) -> None:
    (tmp_path / "drop").mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, tmp_path / "drop")
    daemon = start(config, notify_socket)
    try:
        for suffix in ("", "-wal", "-shm"):
            (tiny_var_dir / f"state.db{suffix}").unlink(missing_ok=True)
        code = daemon.wait(120)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    last = (tmp_path / "daemon.log").read_text().strip().splitlines()[-1]
    assert code == 1
    assert last.startswith("error: ") and str(tiny_var_dir / "state.db") in last and "deleted or replaced" in last


def test_alerts_are_not_sent_again_after_the_state_database_is_lost(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], webhook: Webhook,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    drop_all(frames, drop, lambda n: True)
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, settle_seconds=0,
                          extra=f'[notify.webhook]\nurl = "{webhook.url}"\ntimeout_seconds = 60\n')
    assert watch_once(config) == 0
    sent = sorted(webhook.keys())
    assert sent and sorted(alert_keys(tiny_var_dir)) == sent

    for suffix in ("", "-wal", "-shm"):  # lost; the reports directory survives
        (tiny_var_dir / f"state.db{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="insarwatch.notify"):
        assert watch_once(config) == 0
    assert sorted(alert_keys(tiny_var_dir)) == sent  # the same stable keys were raised again
    assert sorted(webhook.keys()) == sent  # and none was sent a second time
    assert "not sending it again" in caplog.text
    with Store(tiny_var_dir / "state.db", readonly=True) as store:
        assert store.pending_deliveries() == 0


def test_space_running_out_during_a_commit_requeues_as_soon_as_it_returns(
    tmp_path: Path, tiny_blip_dir: Path, tiny_version_stager, frames: tuple[list[Path], Path], small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The frames are admitted while the disk has room, the disk fills, and only then does a
    model appear (its store lives elsewhere): the first commits, the big ones holding alert
    reports, are refused. Once space returns they must be redone without a restart, and no
    alert is reported queued whose commit was rolled back."""
    var_dir = small_disk / "var"
    var_dir.mkdir()
    (var_dir / "models").symlink_to(tmp_path / "models")
    models = ModelStore(tmp_path / "models")
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path / "insarwatch.toml", var_dir, drop, settle_seconds=0.2, model_check_seconds=0.5,
                          storage_retry_seconds=0.5)
    settings = load_settings(config)
    daemon = Daemon(settings, config)
    runner = threading.Thread(target=daemon.run)
    with caplog.at_level(logging.INFO):
        runner.start()
        try:
            total = drop_all(frames, drop, lambda n: True)
            wait_for(lambda: len(states(var_dir)) == total and "discovered" not in states(var_dir).values(), 120,
                     "every frame admitted")
            ballast = fill(small_disk)
            with ballast.open("r+b") as stream:  # room for the small writes of a claim, not for a result
                stream.truncate(ballast.stat().st_size - (128 << 10))
            models.register(tiny_version_stager(models, tiny_blip_dir), make_current=True)
            wait_for(lambda: "cannot record progress" in caplog.text, 120, "a refused commit")
            time.sleep(3 * settings.watch.storage_retry_seconds)  # the disk stays full while the daemon retries
            ballast.unlink()
            wait_for(lambda: len(states(var_dir)) == total and set(states(var_dir).values()) <= TERMINAL,
                     120, "every frame finished once the disk has room again, without a restart")
        finally:
            daemon.stopping.set()
            runner.join(60)
    queued_lines = caplog.text.count("alert queued for delivery")
    assert queued_lines == len(alert_keys(var_dir)) >= 1


def test_sighup_reschedules_the_jobs_with_the_reloaded_intervals(
    tmp_path: Path, tiny_var_dir: Path, tiny_blip_dir: Path, tiny_version_stager, notify_socket: NotifySocket,
) -> None:
    (tmp_path / "drop").mkdir()
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, tmp_path / "drop", model_check_seconds=3600)
    daemon = start(config, notify_socket)
    log = tmp_path / "daemon.log"
    try:
        write_config(config, tiny_var_dir, tmp_path / "drop", model_check_seconds=0.5)
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: b"configuration reloaded" in log.read_bytes(), 60, "the reload")
        models = ModelStore(tiny_var_dir / "models")
        new = models.register(tiny_version_stager(models, tiny_blip_dir), make_current=True)
        wait_for(lambda: f"to {new.name}".encode() in log.read_bytes(), 120,
                 "the new model, found by the model check at its reloaded interval")
        daemon.terminate()
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_decoded_pixels_in_flight_stay_within_their_budget(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path],
) -> None:
    """A flood of frames, each small on disk and large decoded: however many the queue and the
    reader threads would take, only as many pixels as ``watch.pixels_in_flight`` are held."""
    from insarwatch.describe import load_bundle
    from insarwatch.licsar import interferogram_from_path
    from insarwatch.processor import Processor

    drop = tmp_path / "drop"
    drop.mkdir()
    total = drop_all(frames, drop, lambda n: True)
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, reader_threads=2, queue_max=8,
                          pixels_in_flight=448 * 448)  # one frame of the drop
    settings = load_settings(config)
    bundle = load_bundle(ModelStore(settings.models_dir).current(), settings, require_index=True)
    now = datetime.now(timezone.utc)
    with Store(settings.state_db) as store:
        for path in sorted(drop.rglob("*.geo.diff.png")):
            found = interferogram_from_path(path, drop)
            store.discover(found.key, path, str(found.frame), found.primary, found.secondary, now)
            store.queue(found.key, now)
        processor = Processor(settings, store, lambda: bundle, lambda: datetime.now(timezone.utc))
        most = 0
        try:
            while set(states(tiny_var_dir).values()) - TERMINAL:
                processor.step(True, time.monotonic())
                most = max(most, processor.held)
        finally:
            processor.close()
    assert len(states(tiny_var_dir)) == total and most == 1


# --------------------------------------------------------------------------- commit boundaries and write sites
#
# The daemon is stopped at a named point (insarwatch.stops: INSARWATCH_STOP_AT) the first
# time it reaches it, then either SIGKILLed there (a crash at that exact boundary, then the
# daemon started again: ``watch_once``, in this process) or let go on after the disk under it
# is filled to the brim. Each case drops one interferogram (one alert, so one delivery per
# channel: the reports directory and a loopback webhook).


def drop_one(frames: tuple[list[Path], Path], drop: Path, truncated: bool = False) -> None:
    """The first interferogram of ``frames`` with its siblings; ``truncated``, its PNG cut short
    (a frame the daemon rejects)."""
    relatives, source = frames
    pair = next(path for path in relatives if path.name.endswith(".geo.diff.png")).parent
    for relative in (path for path in relatives if path.parent == pair):
        target = drop / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (source / relative).read_bytes()
        cut = truncated and relative.name.endswith(".geo.diff.png")
        target.write_bytes(data[:len(data) // 2] if cut else data)


def stopped(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` stopped itself (state T in /proc); fails if it exited instead."""
    assert process.poll() is None, f"the daemon exited ({process.returncode}) without reaching its stop point"
    return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def run_until(config: Path, point: str, *args: str) -> subprocess.Popen[bytes]:
    """``insarwatch watch ARGS`` stopped at ``point``, its log in daemon.log beside ``config``."""
    env = {**os.environ, "INSARWATCH_CONFIG": str(config), "INSARWATCH_STOP_AT": point}
    with (config.parent / "daemon.log").open("ab") as log:
        process = subprocess.Popen([INSARWATCH, "watch", *args], env=env, stderr=log)
    try:
        wait_for(lambda: stopped(process), 180, f"the daemon stopped at {point!r}")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def reports_keys(var_dir: Path) -> list[str]:
    """The alert keys of the JSON reports in the reports directory (the directory channel's receiving side)."""
    return sorted(json.loads(path.read_text())["key"] for path in (var_dir / "reports" / "alerts").glob("*.json"))


def check_invariant(var_dir: Path, webhook: Webhook, frames_dropped: int, alerts_expected: int) -> None:
    found = states(var_dir)
    assert len(found) == frames_dropped and set(found.values()) <= TERMINAL, found
    alerts = sorted(alert_keys(var_dir))
    assert len(alerts) == alerts_expected
    assert sorted(webhook.keys()) == alerts  # each alert posted once: no loss, no duplicate
    assert reports_keys(var_dir) == alerts
    with Store(var_dir / "state.db", readonly=True) as store:
        assert store.pending_deliveries() == 0
        assert all(delivery.status == "delivered" for key in alerts for delivery in store.deliveries_for(key))


# (stop point, whether the frame is one the daemon rejects). Admission, claim, the complete
# commit (results + alert + outbox), a rejection, a delivery's claim and its outcome, and
# the start-up requeue of what a killed run left processing.
COMMIT_BOUNDARIES = [
    ("after commit Intake.reconcile", False),
    ("after commit Store.claim", False),
    ("before commit Processor._run_batch", False),
    ("after commit Processor._run_batch", False),
    ("after commit Store.reject", True),
    ("after commit Store.claim_delivery", False),
    ("before commit Store.mark_delivered", False),
    ("after commit Store.mark_delivered", False),
]


@pytest.mark.parametrize(("point", "bad"), COMMIT_BOUNDARIES, ids=[point for point, _ in COMMIT_BOUNDARIES])
def test_a_daemon_killed_at_a_commit_boundary_loses_and_repeats_nothing(
    point: str, bad: bool, tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], webhook: Webhook,
) -> None:
    drop = tmp_path / "drop"
    drop_one(frames, drop, truncated=bad)
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, settle_seconds=0,
                          extra=f'[notify.webhook]\nurl = "{webhook.url}"\ntimeout_seconds = 60\n')
    killed = run_until(config, point, "--once")
    killed.kill()
    killed.wait()
    assert watch_once(config) == 0  # started again
    check_invariant(tiny_var_dir, webhook, 1, 0 if bad else 1)


def test_a_daemon_killed_while_publishing_a_digest_sends_it_once(
    tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], webhook: Webhook,
) -> None:
    drop = tmp_path / "drop"
    drop_one(frames, drop)
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, drop, settle_seconds=0,
                          extra=f'[notify.webhook]\nurl = "{webhook.url}"\ntimeout_seconds = 60\n')
    assert watch_once(config) == 0
    env = {**os.environ, "INSARWATCH_STOP_AT": "after commit Store.enqueue_message"}
    today = datetime.now(timezone.utc).date().isoformat()
    digest = [INSARWATCH, "--config", str(config), "report", "--since", today, "--send"]
    killed = subprocess.Popen(digest, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wait_for(lambda: stopped(killed), 120, "the report command stopped after publishing")
    killed.kill()
    killed.wait()
    assert subprocess.run(digest, capture_output=True, timeout=120).returncode == 0
    assert watch_once(config) == 0
    digests = [body for body in webhook.bodies if body["kind"] == "digest"]
    assert len(digests) == 1
    with Store(tiny_var_dir / "state.db", readonly=True) as store:
        assert store.pending_deliveries() == 0


# Where the disk is found full: the state database's commits (admission, the complete
# commit that holds the alert report, a delivery's outcome) and the files the delivery
# writes (the alert report in the reports directory, the sent record).
WRITE_SITES = [
    "before commit Intake.reconcile",
    "before commit Processor._run_batch",
    "before write alerts",
    "before write sent",
    "before commit Store.mark_delivered",
]


@pytest.mark.parametrize("point", WRITE_SITES)
def test_a_full_disk_at_a_write_site_loses_and_repeats_nothing_once_space_returns(
    point: str, tmp_path: Path, tiny_var_dir: Path, frames: tuple[list[Path], Path], small_disk: Path,
    webhook: Webhook,
) -> None:
    var_dir = small_disk / "var"
    var_dir.mkdir()
    (var_dir / "models").symlink_to(tiny_var_dir / "models")
    drop = tmp_path / "drop"
    drop_one(frames, drop)
    # Short retry intervals: what is awaited is the retry, not the administrator's default wait.
    config = write_config(tmp_path / "insarwatch.toml", var_dir, drop, settle_seconds=0, storage_retry_seconds=0.5,
                          extra=f'[notify]\nretry_base_seconds = 0.5\n[notify.webhook]\nurl = "{webhook.url}"\n'
                                'timeout_seconds = 60\n')
    daemon = run_until(config, point)
    log = tmp_path / "daemon.log"
    try:
        ballast = fill(small_disk)
        written = log.stat().st_size
        daemon.send_signal(signal.SIGCONT)
        wait_for(lambda: b"No space left on device" in log.read_bytes()[written:]
                 or b"database or disk is full" in log.read_bytes()[written:], 120, "a write refused")
        ballast.unlink()
        wait_for(lambda: len(states(var_dir)) == 1 and set(states(var_dir).values()) <= TERMINAL
                 and len(webhook.bodies) >= 1 and not Store(var_dir / "state.db", readonly=True).pending_deliveries(),
                 120, "the frame finished and its alert delivered once space returned")
        daemon.terminate()
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    check_invariant(var_dir, webhook, 1, 1)
