"""The command line as other tools script it: every command listed with examples, the
``--config`` option before or after the command, and settings errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from insarwatch.cli import app

COMMANDS = ("synth", "synth-dataset", "prepare", "train", "evaluate", "caption", "findings", "watch", "status",
            "report", "demo", "retry", "compare")


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_examples(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Examples" in result.output
    assert f"$ insarwatch {name}" in result.output


def test_config_goes_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "insarwatch.toml"
    config.write_text(f'var_dir = "{tmp_path / "var"}"\n', encoding="utf-8")
    runner = CliRunner()
    for args in (["--config", str(config), "status", "--json"], ["status", "--config", str(config), "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["counts"]["done"] == 0
    assert not (tmp_path / "var" / "state.db").exists()  # status only reads


@pytest.mark.parametrize(("text", "message"), [
    ("[batch]\ntiles = 'many'\n", "key 'batch.tiles'"),
    ("[watch]\nsettle = 3\n", "key 'watch.settle': unknown key"),
    ("var_dir = [\n", "not valid TOML"),
])
def test_bad_settings_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "insarwatch.toml"
    config.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {config}") and message in line


def test_missing_named_config_is_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["watch", "--once", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "configuration file does not exist" in result.output


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "insarwatch.toml"
    config.write_text(f'var_dir = "{tmp_path / "file-var"}"\n', encoding="utf-8")
    env = {"INSARWATCH_VAR_DIR": str(tmp_path / "env-var"), "INSARWATCH_BATCH__TILES": "3"}
    from insarwatch.config import load_settings

    settings = load_settings(config, environ=env)
    assert settings.var_dir == tmp_path / "env-var" and settings.batch.tiles == 3


def test_renamed_keys_keep_working_with_one_deprecation_line_each(tmp_path: Path, caplog) -> None:
    from insarwatch.config import RENAMED, load_settings

    config = tmp_path / "insarwatch.toml"
    config.write_text("[batch]\nsize = 5\nprepare_workers = 1\n[captioning]\nbatch_size = 3\npreprocess_workers = 4\n",
                      encoding="utf-8")
    with caplog.at_level("WARNING", logger="insarwatch.config"):
        settings = load_settings(config, environ={})
    assert (settings.batch.tiles, settings.batch.reader_threads) == (5, 1)
    assert (settings.captioning.tiles_per_call, settings.captioning.resize_threads) == (3, 4)
    lines = [record.getMessage() for record in caplog.records]
    assert sorted(lines) == sorted(f"{config}: setting '{old}' is deprecated, use '{new}'"
                                   for old, new in RENAMED.items())


def test_an_old_key_from_the_environment_is_renamed_too(caplog) -> None:
    from insarwatch.config import load_settings

    with caplog.at_level("WARNING", logger="insarwatch.config"):
        settings = load_settings(environ={"INSARWATCH_CONFIG": "/dev/null", "INSARWATCH_BATCH__SIZE": "7"})
    assert settings.batch.tiles == 7
    assert [record.getMessage() for record in caplog.records] == [
        "/dev/null: setting 'batch.size' is deprecated, use 'batch.tiles'"]


def test_an_old_and_a_new_name_of_one_key_is_one_line_naming_both(tmp_path: Path) -> None:
    config = tmp_path / "insarwatch.toml"
    config.write_text("[batch]\nsize = 5\ntiles = 6\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line == f"error: {config}: key 'batch.size' is the old name of 'batch.tiles': give only 'batch.tiles'"


def test_retry_queues_rejected_and_quarantined_interferograms_on_purpose(tmp_path: Path) -> None:
    from datetime import date, datetime, timezone

    from insarwatch.store import Store

    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    frame = "124D_04854_171313"
    keys = [f"{frame}/2026110{day}_2026111{day}" for day in range(1, 6)]
    with Store(tmp_path / "state.db") as store:
        for number, key in enumerate(keys, start=1):
            store.discover(key, f"/drop/{key}", frame, date(2026, 11, number), date(2026, 11, 10 + number), now)
            store.queue(key, now)
        store.claim(5, now)
        store.reject(keys[0], "decode", now, "truncated PNG")
        store.reject(keys[1], "nodata_fraction", now)
        store.reject(keys[2], "decode", now)
        store.fail(keys[3], "boom", now, max_attempts=1)
        store.record_unrecognised("/drop/stray.png", "PNG that is not a LiCSAR product", now)
    env = {"INSARWATCH_VAR_DIR": str(tmp_path), "INSARWATCH_CONFIG": "/dev/null"}

    def retry(*args: str):
        return CliRunner().invoke(app, ["retry", *args], env=env)

    def state(key: str) -> str:
        with Store(tmp_path / "state.db", readonly=True) as store:
            return store.get(key).state

    by_reason = retry("--reason", "decode", "--json")
    assert by_reason.exit_code == 0, by_reason.output
    assert json.loads(by_reason.stdout) == {"queued": [keys[0], keys[2]]}
    assert [state(key) for key in keys] == ["queued", "rejected", "queued", "quarantined", "processing"]
    assert json.loads(retry("--quarantined", "--json").stdout) == {"queued": [keys[3]]}
    # All or nothing: keys[4] is being processed, so keys[1] stays rejected too.
    busy = retry(keys[1], keys[4])
    assert busy.exit_code == 1
    (line,) = busy.output.strip().splitlines()
    assert line == f"error: {keys[4]}: is processing, not rejected or failed or quarantined"
    assert state(keys[1]) == "rejected"
    assert retry(keys[1]).exit_code == 0 and state(keys[1]) == "queued"
    stray = retry("/drop/stray.png")
    assert stray.exit_code == 1 and "not an interferogram" in stray.output
    assert retry("--reason", "decode").stderr.strip() == "nothing to retry"
    assert retry().exit_code == 2 and retry("--quarantined", "--reason", "decode").exit_code == 2


def test_retry_without_a_state_database_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["retry", "--quarantined"],
                                env={"INSARWATCH_VAR_DIR": str(tmp_path), "INSARWATCH_CONFIG": "/dev/null"})
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'state.db'}: no state database yet; nothing to retry"
    assert not (tmp_path / "state.db").exists()
