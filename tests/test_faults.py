"""Faults injected into the real daemon: ``insarwatch watch`` runs as a subprocess (as
systemd runs it) or in-process, and the test does what an unlucky administrator or a
hostile host does to it: a second daemon on the same state, a slow webhook, SIGTERM in the
middle of a batch, a database deleted or corrupted under it, a full disk. After each, the
service's invariant must hold: every interferogram in exactly one terminal state, every
alert delivered once per channel.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import INSARWATCH, NotifySocket, start, write_config


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
