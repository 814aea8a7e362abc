"""The systemd units, checked by systemd's own tools: ``systemd-analyze verify`` and
``systemd-analyze security --offline=true`` (exposure 2.0 or lower with the GPU allowed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import ENTRY_POINT, INSTALLED_ENTRY_POINT, systemd_analyze, verify

from insarwatch.config import Settings

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def _local_copy(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this checkout's entry point: ``verify`` checks
    that the program exists, and /opt/insarwatch is only there once installed."""
    text = (UNITS / name).read_text()
    assert INSTALLED_ENTRY_POINT in text or name.endswith(".timer")
    copy = tmp_path / name
    copy.write_text(text.replace(INSTALLED_ENTRY_POINT, str(ENTRY_POINT)))
    return copy


def _directives(name: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        current.setdefault(key, []).append(value)
    return sections


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert ENTRY_POINT.exists()
    units = [_local_copy(tmp_path, name)
             for name in ("insarwatch.service", "insarwatch-train.service", "insarwatch-train.timer")]
    result = verify(*units)
    # verify exits 0 on unknown keys and bad values, so any diagnostic at all is a failure.
    assert (result.returncode, result.stderr.strip(), result.stdout.strip()) == (0, "", "")


def test_verify_would_notice_a_broken_unit(tmp_path: Path) -> None:
    broken = _local_copy(tmp_path, "insarwatch.service")
    broken.write_text(broken.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    result = verify(broken)
    assert "Failed to parse service restart specifier" in result.stderr


@pytest.mark.parametrize("name", ["insarwatch.service", "insarwatch-train.service"])
def test_exposure_is_at_most_two(tmp_path: Path, name: str) -> None:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", str(_local_copy(tmp_path, name))],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"{name}: exposure {exposure}")
    assert exposure <= 2.0, result.stdout


def test_daemon_unit_contract() -> None:
    service = _directives("insarwatch.service")["Service"]
    assert service["ExecStart"] == [f"{INSTALLED_ENTRY_POINT} watch"]
    assert (service["Type"], service["NotifyAccess"], service["Restart"]) == (["notify"], ["main"], ["on-failure"])
    assert service["User"] == ["insarwatch"] and "WatchdogSec" in service
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert (service["StateDirectory"], service["ConfigurationDirectory"]) == (["insarwatch"], ["insarwatch"])
    assert service["ReadOnlyPaths"] == [str(Settings().drop_dir)]
    assert f"INSARWATCH_VAR_DIR={Settings().var_dir}" in service["Environment"]
    assert service["CapabilityBoundingSet"] == [""] and service["AmbientCapabilities"] == [""]
    assert (service["DevicePolicy"], service["DeviceAllow"]) == (["closed"], ["char-nvidia* rw"])
    assert service["PrivateDevices"] == ["no"] and service["NoNewPrivileges"] == ["yes"]


def test_training_unit_and_weekly_timer() -> None:
    train = _directives("insarwatch-train.service")["Service"]
    assert train["Type"] == ["oneshot"] and train["User"] == ["insarwatch"]
    (exec_start,) = train["ExecStart"]
    assert exec_start.startswith(f"{INSTALLED_ENTRY_POINT} train --data ") and exec_start.endswith("--only-if-better")
    timer = _directives("insarwatch-train.timer")
    assert timer["Timer"]["Persistent"] == ["true"] and "RandomizedDelaySec" in timer["Timer"]
    assert timer["Timer"]["OnCalendar"][0].startswith("Sun ")
    assert timer["Install"]["WantedBy"] == ["timers.target"]
