"""``insarwatch backfill`` end to end on a real local Ray, a real tiny BLIP and real SQLite.

One Ray is started for the module (in this process) and the command joins it with
``--address``, as it would join a cluster: the driver is SIGKILLed part-way, run again, and
one of its model actors is SIGKILLed in the second run (Ray replaces it and retries its
batch), and every interferogram must end in exactly one terminal state with the same
per-tile captions and levels as ``insarwatch watch --once`` gives on the same archive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from helpers import wait_for, watch_once

from insarwatch.backfill import Selection, backfill_settings, parse_frames
from insarwatch.config import load_settings
from insarwatch.errors import InsarwatchError
from insarwatch.licsar import discover
from insarwatch.notify import targets_for
from insarwatch.store import STATES, Store
from insarwatch.synthetic.drop import write_drop

INSARWATCH = str(Path(sys.executable).with_name("insarwatch"))
TERMINAL = {"done", "rejected", "quarantined"}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray of three logical CPUs: two model actors and a reading task at a time."""
    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# Issue 15's "few dozen": a kill finds some interferograms done and others processing, in each run.
FRAMES, PAIRS = 8, 3
INTERFEROGRAMS = FRAMES * PAIRS


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``INTERFEROGRAMS`` of 448 px (four tiles each) and one pair whose dates run backwards."""
    root = tmp_path_factory.mktemp("archive")
    write_drop(root, frames=FRAMES, seed=5, size=(448, 448), pairs=PAIRS)
    bad = root / "124D_04854_171313" / "interferograms" / "20200101_20190101"
    bad.mkdir(parents=True)
    (bad / "20200101_20190101.geo.diff.png").write_bytes(b"")
    return root


# review_vote 0: the untrained tiny model writes unrecognised text, so every interferogram
# raises a review and has a report page. The webhook points at a port nothing listens on:
# a backfill without --notify must not even queue a delivery to it.
SECTIONS = {
    "watch": {"settle_seconds": 0},
    "batch": {"tiles": 4, "max_wait_seconds": 0.2, "reader_threads": 0},
    "captioning": {"num_beams": 2, "max_new_tokens": 12},
    "alerts": {"review_vote": 0.0},
    "digest": {"enabled": "false"},
    "notify.webhook": {"url": '"http://127.0.0.1:9/hook"', "timeout_seconds": 1},
}


def write_config(path: Path, var_dir: Path, drop_dir: Path) -> Path:
    lines = [f'var_dir = "{var_dir}"', f'drop_dir = "{drop_dir}"']
    for section, values in SECTIONS.items():
        lines += [f"[{section}]", *(f"{key} = {value}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def snapshot(var_dir: Path) -> dict[str, tuple]:
    """Per interferogram: state, level, reason, model version and every tile's caption and level."""
    rows = {}
    with Store(var_dir / "state.db", readonly=True) as store:
        for state in STATES:
            for record in store.in_state(state):
                tiles = [(tile.tile_index, tile.caption, tile.decision["level"])
                         for tile in store.results_for(record.key, record.model_version or "")]
                rows[record.key] = (record.state, record.level, record.reason, record.model_version, tiles)
    return rows


def backfill(config: Path, archive: Path, address: str, *extra: str) -> list[str]:
    return [INSARWATCH, "--config", str(config), "backfill", str(archive), "--address", address,
            "--workers", "2", *extra]


def test_backfill_killed_part_way_and_resumed_matches_watch_once(
    tmp_path: Path, tiny_var_dir: Path, archive: Path, ray_address: str,
) -> None:
    watched = tmp_path / "watched"
    shutil.copytree(tiny_var_dir / "models", watched / "models", symlinks=True)  # the same model version
    config = write_config(tmp_path / "backfill.toml", tiny_var_dir, archive)
    log = tmp_path / "backfill.log"

    with log.open("ab") as stream:
        driver = subprocess.Popen(backfill(config, archive, ray_address), stderr=stream, stdout=stream)
    try:
        wait_for(lambda: {"done", "processing"} <= {row[0] for row in snapshot_if_any(tiny_var_dir).values()},
                 240, "an interferogram done while others are processing")
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
    killed = snapshot(tiny_var_dir)
    assert {row[0] for row in killed.values()} - TERMINAL, "the kill came after all the work was done"

    # Run again, and SIGKILL one model actor's process while it works: Ray starts another
    # and retries its batch, so no interferogram needs a claim more than the two runs'.
    output = tmp_path / "resumed.json"
    with log.open("ab") as stream, output.open("wb") as out:
        driver = subprocess.Popen(backfill(config, archive, ray_address, "--json"), stderr=stream, stdout=out)
    try:
        wait_for(lambda: len(model_workers()) == 2 and done_count(tiny_var_dir) > done_count_of(killed), 240,
                 "both model actors up and working")
        os.kill(model_workers()[0], signal.SIGKILL)
        assert driver.wait(600) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    resumed = json.loads(output.read_text())
    done_before = sum(row[0] in TERMINAL for key, row in killed.items() if not key.startswith("/"))
    assert resumed["already held for this version"] == done_before
    assert sum(resumed["counts"].values()) == INTERFEROGRAMS - done_before

    assert watch_once(write_config(tmp_path / "watch.toml", watched, archive)) == 0  # the daemon's results

    backfilled, expected = snapshot(tiny_var_dir), snapshot(watched)
    assert len(backfilled) == INTERFEROGRAMS + 1 and {row[0] for row in backfilled.values()} <= TERMINAL
    assert backfilled == expected
    assert all(row[4] for row in backfilled.values() if row[0] == "done")
    with Store(tiny_var_dir / "state.db", readonly=True) as store:
        assert max(record.attempts for record in store.in_state("done")) <= 2
        assert store.pending_deliveries() == 0
        raised = sum(row[0] == "done" and row[1] != "quiet" for row in backfilled.values())
        assert store.status_summary(datetime.now(timezone.utc))["alerts_total"] == raised
    # The same alert pages, JSON and GeoJSON, as the daemon writes.
    reports = sorted(path.name for path in (tiny_var_dir / "reports" / "alerts").iterdir())
    assert any(name.endswith(".geojson") for name in reports)
    assert reports == sorted(path.name for path in (watched / "reports" / "alerts").iterdir())

    # A third run finds everything held for this model version and starts no Ray at all.
    third = subprocess.run([INSARWATCH, "--config", str(config), "backfill", str(archive), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads(third.stdout)["already held for this version"] == INTERFEROGRAMS
    assert "Ray" not in third.stderr
    assert snapshot(tiny_var_dir) == backfilled


def snapshot_if_any(var_dir: Path) -> dict[str, tuple]:
    """``snapshot`` while the backfill may still be creating the database."""
    try:
        return snapshot(var_dir) if (var_dir / "state.db").exists() else {}
    except InsarwatchError:  # created, not yet migrated
        return {}


def done_count_of(rows: dict[str, tuple]) -> int:
    return sum(row[0] == "done" for row in rows.values())


def done_count(var_dir: Path) -> int:
    return done_count_of(snapshot(var_dir))


def model_workers() -> list[int]:
    """Pids of this module's Ray model actors: processes under this one titled ``ray::ModelWorker``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [os.getpid()]
    while stack:
        for pid in children.get(stack.pop(), []):
            stack.append(pid)
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::ModelWorker"):
                found.append(pid)
    return sorted(found)


def test_without_notify_alerts_only_reach_the_reports_directory(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path / "insarwatch.toml", tmp_path / "var", tmp_path))
    document = {"kind": "alert", "frame": "124D_04854_171313", "volcano": None}
    assert [channel for channel, _ in targets_for(document, settings)] == ["file", "webhook"]
    assert targets_for(document, backfill_settings(settings, tmp_path, notify_all=False)) == [
        ("file", str(settings.reports_dir))]
    assert targets_for(document, backfill_settings(settings, tmp_path, notify_all=True)) == \
        targets_for(document, settings)


def test_selection_by_second_date_and_frame(archive: Path) -> None:
    found = [item for item in discover(archive) if hasattr(item, "secondary")]
    frame = str(found[0].frame)
    last = max(item.secondary for item in found if str(item.frame) == frame)
    chosen = [item for item in found if Selection(since=last, frames=parse_frames(frame)).wants(item)]
    assert [(str(item.frame), item.secondary) for item in chosen] == [(frame, last)]
    assert not [item for item in found if Selection(until=date(2000, 1, 1)).wants(item)]
    with pytest.raises(ValueError, match="NNN"):
        parse_frames("not-a-frame")


def test_a_bad_address_is_one_line(tmp_path: Path, tiny_var_dir: Path, archive: Path) -> None:
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, archive)
    frame = next(str(item.frame) for item in discover(archive) if hasattr(item, "frame"))
    result = subprocess.run([INSARWATCH, "--config", str(config), "backfill", str(archive), "--frames", frame,
                             "--address", "127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach the Ray cluster at 127.0.0.1:9")


def test_more_workers_than_the_cluster_can_place_is_one_line(
    tmp_path: Path, tiny_var_dir: Path, archive: Path, ray_address: str,
) -> None:
    config = write_config(tmp_path / "insarwatch.toml", tiny_var_dir, archive)
    frame = next(str(item.frame) for item in discover(archive) if hasattr(item, "frame"))
    result = subprocess.run([INSARWATCH, "--config", str(config), "backfill", str(archive), "--frames", frame,
                             "--address", ray_address, "--workers", "1", "--gpus-per-worker", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: --workers 1 need 1 GPU in all; the Ray cluster has 0"
