"""deploy/: the example configuration stays in step with Settings, and the install script's
dry run works and changes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from insarwatch.config import Settings, load_settings
from helpers import ENTRY_POINT, INSTALLED_ENTRY_POINT, verify

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXAMPLE = DEPLOY / "insarwatch.toml"
INSTALL = DEPLOY / "install.sh"
# A commented-out setting is "#" directly followed by a key or a table header; "# text" is prose.
SETTING = re.compile(r"^#(?=[A-Za-z_\[])", re.MULTILINE)


def _uncommented() -> dict[str, Any]:
    return tomllib.loads(SETTING.sub("", EXAMPLE.read_text()))


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (directly, optionally, or as a list), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _missing_or_wrong(settings: BaseModel, raw: dict[str, Any], where: str = "") -> list[str]:
    """Keys of ``settings``' model absent from the file's ``raw`` table, or shown with a
    value other than their default."""
    problems = []
    for name, field in type(settings).model_fields.items():
        path = f"{where}{name}"
        if name not in raw:
            problems.append(f"{path}: missing")
            continue
        value = getattr(settings, name)
        if _section_type(field.annotation) is not None:
            pairs = zip(value, raw[name]) if isinstance(value, list) else [(value, raw[name])]
            problems += [p for section, table in pairs for p in _missing_or_wrong(section, table, f"{path}.")]
            continue
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        # Required keys, and None or empty defaults, cannot be shown in TOML: those lines show an example.
        if default not in (None, [], {}) and value != default:
            problems.append(f"{path}: shows {raw[name]!r}, default is {default!r}")
    return problems


def test_example_config_as_shipped_changes_nothing() -> None:
    assert load_settings(EXAMPLE, environ={}) == Settings()


def test_example_config_lists_every_key_with_its_default() -> None:
    values = _uncommented()
    # Validation also refuses any key that Settings does not know.
    assert _missing_or_wrong(Settings.model_validate(values), values) == []


def test_the_key_check_notices_a_missing_key_and_a_wrong_default() -> None:
    values = _uncommented()
    del values["watch"]["settle_seconds"]
    values["batch"]["tiles"] = 99
    assert _missing_or_wrong(Settings.model_validate(values), values) == [
        "watch.settle_seconds: missing", "batch.tiles: shows 99, default is 16"]


# -- install.sh --------------------------------------------------------------------------


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True)


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every path under ``root`` with its mode, owner, group and (for files) content."""
    return {
        str(path.relative_to(root)): (
            path.lstat().st_mode, path.lstat().st_uid, path.lstat().st_gid,
            path.read_bytes() if path.is_file() and not path.is_symlink() else b"",
        )
        for path in sorted(root.rglob("*"))
    }


def _empty_root(tmp_path: Path) -> Path:
    """A target root with the user database useradd --root expects."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    return root


def test_dry_run_says_what_it_would_do_and_changes_nothing(tmp_path: Path) -> None:
    root = _empty_root(tmp_path)
    before = _tree(root)
    result = _install(root, "--dry-run", "--drop-dir", "/data/licsar",
                      "--torch", "torch --index-url https://download.pytorch.org/whl/cpu")
    assert result.returncode == 0, result.stderr
    assert _tree(root) == before
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("dry run:") and lines[-1].endswith("nothing was changed")
    would = "\n".join(line for line in lines if line.startswith("would: "))
    assert "useradd --system" in would and f"--root {root} insarwatch" in would
    for path in ("/var/lib/insarwatch", "/etc/insarwatch/insarwatch.toml", "/data/licsar",
                 "/etc/systemd/system/insarwatch.service", "/etc/systemd/system/insarwatch-train.timer",
                 "/etc/systemd/system/insarwatch.service.d/drop-dir.conf", "/opt/insarwatch/venv"):
        assert f"{root}{path}" in would, path
    assert "pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu" in would
    assert "enable insarwatch.service" in would and "enable insarwatch-train.timer" in would


def test_bad_options_are_refused_with_exit_code_2(tmp_path: Path) -> None:
    result = _install(tmp_path, "--dry-run", "--drop-dir", "relative/dir")
    assert (result.returncode, result.stderr.strip()) == (
        2, 'install.sh: --drop-dir must be an absolute path without | " or \\: relative/dir')
    assert _install(tmp_path, "--frobnicate").returncode == 2


def test_install_into_a_root_then_again_changes_nothing(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "installing creates a user and chowns: the tests run as root"
    root = _empty_root(tmp_path)
    first = _install(root, "--skip-venv", "--drop-dir", "/data/licsar")
    assert first.returncode == 0, first.stdout + first.stderr
    uid = int((root / "etc/passwd").read_text().split(":")[2])
    state = (root / "var/lib/insarwatch").stat()
    assert (state.st_uid, oct(state.st_mode & 0o777)) == (uid, "0o750")
    assert (root / "data/licsar").is_dir()
    assert load_settings(root / "etc/insarwatch/insarwatch.toml", environ={}).drop_dir == Path("/data/licsar")
    dropin = (root / "etc/systemd/system/insarwatch.service.d/drop-dir.conf").read_text()
    assert "ReadOnlyPaths=\nReadOnlyPaths=/data/licsar" in dropin
    assert (root / "etc/systemd/system/multi-user.target.wants/insarwatch.service").is_symlink()
    assert (root / "etc/systemd/system/timers.target.wants/insarwatch-train.timer").is_symlink()

    site_config = root / "etc/insarwatch/insarwatch.toml"
    site_config.write_text('drop_dir = "/data/licsar"\n[batch]\ntiles = 4\n')
    installed = _tree(root)
    again = _install(root, "--skip-venv", "--drop-dir", "/data/licsar")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "done: 0 change(s)" in again.stdout
    assert _tree(root) == installed  # the site's configuration included
    assert "nothing was changed" in _install(root, "--dry-run", "--skip-venv", "--drop-dir", "/data/licsar").stdout

    # The installed units with the drop-dir drop-in still pass systemd's own check.
    units = root / "etc/systemd/system"
    for unit in units.glob("*.service"):
        unit.write_text(unit.read_text().replace(INSTALLED_ENTRY_POINT, str(ENTRY_POINT)))
    result = verify(units / "insarwatch.service", units / "insarwatch-train.timer")
    assert (result.returncode, result.stderr.strip()) == (0, "")
