"""Soak: frames arriving at a steady rate for N minutes while faults hit the real daemon.

``insarwatch watch`` runs as a subprocess (as systemd runs it) with a tiny model and a
webhook on loopback that records every POST. One single-tile interferogram arrives every
``60 / --rate`` seconds; every ``--fault-every`` seconds one fault, drawn at random, hits
the service: SIGKILL (then a restart, as systemd's Restart= would), SIGTERM (then a
restart), or a second daemon started on the same state (it must refuse and exit 1). At the
end the daemon drains what is left and the run reports frames lost (dropped but not in a
terminal state), duplicates (an alert POSTed more than once), refusals of the second
daemon, peak resident memory (VmHWM of each daemon process) and the growth of resident
memory per hour (a least-squares slope over the samples of the longest-lived process
after its first 30 s, which must stay flat; nan when no process lived a minute). The last
line is ``ratio=`` frames accounted for / frames dropped.

    python benchmarks/soak.py --minutes 5                                 # benchmarks/README.md
    python benchmarks/soak.py --minutes 0.25 --rate 40 --fault-every 3 --seed 1   # the CI smoke
"""

from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from insarwatch.config import CaptioningSettings
from insarwatch.store import STATES, Store

LOAD = runpy.run_path(str(Path(__file__).with_name("daemon_load.py")), run_name="daemon_load")
TERMINAL = ("done", "rejected", "quarantined")
INSARWATCH = str(Path(sys.executable).with_name("insarwatch"))


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.keys.append(body[body["kind"]]["key"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def memory_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


WARM_UP_SECONDS = 30.0  # model load and first batches: growth that is not a leak


def growth_mb_per_hour(samples: list[tuple[float, int]]) -> float:
    """The resident-memory slope of one daemon process after its warm-up; nan when it did
    not live long enough past it to say."""
    samples = [sample for sample in samples if sample[0] - samples[0][0] >= WARM_UP_SECONDS] if samples else []
    if len(samples) < 3 or samples[-1][0] - samples[0][0] < WARM_UP_SECONDS:
        return float("nan")
    seconds, kilobytes = np.array(samples, dtype=float).T
    return float(np.polyfit(seconds, kilobytes, 1)[0]) * 3600 / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="interferograms per minute")
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, help="keep the run here instead of a temp dir")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    console = Console(width=120)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="iw-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    var_dir, drop, staging = work / "var", work / "drop", work / "staging"
    count = max(1, round(args.minutes * args.rate))
    patches = LOAD["clean_patches"](work / "patches", min(16, count), seed=11)  # ~0.1 s each to draw
    LOAD["register_tiny_model"](var_dir, patches, CaptioningSettings(num_beams=1, max_new_tokens=4))
    keys = LOAD["stage_flood"](staging, patches, count)
    arrivals = sorted(staging.glob("*/interferograms/*"))
    drop.mkdir(parents=True, exist_ok=True)

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    hook.keys = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    config = work / "insarwatch.toml"
    # review_vote 0: every tile of the untrained model goes to review, so every frame raises
    # one alert to deliver and a duplicate delivery would show in the webhook's log.
    config.write_text(
        f'var_dir = "{var_dir}"\ndrop_dir = "{drop}"\n[watch]\nsettle_seconds = 0.5\n'
        "rescan_interval_seconds = 30\nshutdown_timeout_seconds = 5\n[batch]\ntiles = 4\nmax_wait_seconds = 0.5\n"
        "[captioning]\nnum_beams = 1\nmax_new_tokens = 4\n[alerts]\nreview_vote = 0.0\n[digest]\nenabled = false\n"
        f'[notify.webhook]\nurl = "http://127.0.0.1:{hook.server_port}/soak"\ntimeout_seconds = 10\n',
        encoding="utf-8")
    env = {**os.environ, "INSARWATCH_CONFIG": str(config)}
    log = (work / "daemon.log").open("ab")

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen([INSARWATCH, "watch"], env=env, stderr=log)

    daemon = launch()
    lives: list[list[tuple[float, int]]] = [[]]
    peak_kb, faults, refusals = 0, {"sigkill": 0, "sigterm": 0, "second daemon": 0}, 0
    start = time.monotonic()
    next_fault = start + args.fault_every
    try:
        for number, arrival in enumerate(arrivals):
            while time.monotonic() < start + number * 60 / args.rate:
                rss = memory_kb(daemon.pid, "VmRSS")
                if rss is not None:
                    lives[-1].append((time.monotonic(), rss))
                peak_kb = max(peak_kb, memory_kb(daemon.pid, "VmHWM") or 0)
                if time.monotonic() >= next_fault:
                    next_fault += args.fault_every
                    fault = rng.choice(list(faults))
                    faults[fault] += 1
                    if fault == "second daemon":
                        refusals += subprocess.run([INSARWATCH, "watch"], env=env, capture_output=True,
                                                   timeout=120).returncode == 1
                    else:
                        daemon.kill() if fault == "sigkill" else daemon.terminate()
                        daemon.wait(120)
                        daemon = launch()
                        lives.append([])
                time.sleep(0.1)
            target = drop / arrival.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(arrival, target)  # arrives whole, as LiCSAR's sync moves it in
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with Store(var_dir / "state.db", readonly=True) as store:
                counts = store.counts()
                pending = store.pending_deliveries()
            if sum(counts[state] for state in TERMINAL) >= count and not pending:
                break
            peak_kb = max(peak_kb, memory_kb(daemon.pid, "VmHWM") or 0)
            time.sleep(0.5)
    finally:
        daemon.terminate()
        daemon.wait(120)
        hook.shutdown()
        log.close()

    with Store(var_dir / "state.db", readonly=True) as store:
        seen = {record.key: record.state for state in STATES for record in store.in_state(state)}
    lost = sum(1 for key in keys if seen.get(key) not in TERMINAL)
    duplicates = len(hook.keys) - len(set(hook.keys))
    growth = growth_mb_per_hour(max(lives, key=len))
    ratio = (count - lost) / count
    table = Table(title=f"soak: {count} interferograms over {args.minutes:g} min, a fault every "
                        f"{args.fault_every:g} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("faults (sigkill / sigterm / second daemon)",
                  " / ".join(str(faults[name]) for name in ("sigkill", "sigterm", "second daemon")))
    table.add_row("second daemon refused", f"{refusals} of {faults['second daemon']}")
    table.add_row("frames dropped", str(count))
    table.add_row("frames lost", str(lost))
    table.add_row("alerts posted / distinct", f"{len(hook.keys)} / {len(set(hook.keys))}")
    table.add_row("duplicates", str(duplicates))
    table.add_row("peak resident memory (MB)", f"{peak_kb / 1024:.0f}")
    table.add_row("resident memory growth (MB/h)", f"{growth:.1f}")
    console.print(table)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
