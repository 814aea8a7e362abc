"""config.py: what a settings file and the environment may say, and the one line for what they may not."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from insarwatch.cli import app
from insarwatch.config import load_settings
from insarwatch.errors import InputError


def settings_file(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "insarwatch.toml"
    config.write_text(text, encoding="utf-8")
    return config


def test_insarwatch_variables_that_are_not_settings_keys_are_left_alone(tmp_path: Path) -> None:
    # deploy/insarwatch.toml suggests this name for the SMTP password.
    config = settings_file(tmp_path, '[notify.smtp]\npassword_env = "INSARWATCH_SMTP_PASSWORD"\n')
    environ = {"INSARWATCH_SMTP_PASSWORD": "s3cret", "INSARWATCH_LOG": "debug",
               "INSARWATCH_VAR_DIR": str(tmp_path / "var"), "INSARWATCH_WATCH__SETTLE_SECONDS": "3"}
    settings = load_settings(config, environ=environ)
    assert settings.notify.smtp.password_env == "INSARWATCH_SMTP_PASSWORD"
    assert settings.var_dir == tmp_path / "var" and settings.watch.settle_seconds == 3


def test_a_misspelt_key_of_the_settings_form_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="key 'watch.settle': unknown key"):
        load_settings(settings_file(tmp_path, ""), environ={"INSARWATCH_WATCH__SETTLE": "3"})


@pytest.mark.parametrize("time", ["25:99", "24:00", "07:60", "7:00", "07:00\n", "０７:００", "07:00:00", ""])
def test_a_digest_time_is_a_real_time_of_day(tmp_path: Path, time: str) -> None:
    config = settings_file(tmp_path, f'[digest]\ntime = "{time.encode("unicode_escape").decode()}"\n')
    with pytest.raises(InputError, match="key 'digest.time': .*HH:MM"):
        load_settings(config, environ={})


@pytest.mark.parametrize("time,hour_minute", [("00:00", (0, 0)), ("23:59", (23, 59)), ("07:05", (7, 5))])
def test_a_good_digest_time_is_its_hour_and_minute(tmp_path: Path, time: str, hour_minute: tuple[int, int]) -> None:
    settings = load_settings(settings_file(tmp_path, f'[digest]\ntime = "{time}"\n'), environ={})
    assert settings.digest.hour_minute == hour_minute


@pytest.mark.parametrize("text,key", [
    ("[batch]\ntiles = true\n", "batch.tiles"),
    ("[batch]\nsize = true\n", "batch.tiles"),  # the old name, renamed first
    ("[watch]\nsettle_seconds = false\n", "watch.settle_seconds"),
    ("[captioning]\nnum_beams = 2.5\n", "captioning.num_beams"),
    ("[captioning]\ndo_sample = 1\n", "captioning.do_sample"),
])
def test_a_number_is_not_a_boolean_nor_a_boolean_a_number(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(InputError, match=f"key '{key}'"):
        load_settings(settings_file(tmp_path, text), environ={})


def test_a_float_setting_takes_an_integer(tmp_path: Path) -> None:
    settings = load_settings(settings_file(tmp_path, "[watch]\nsettle_seconds = 3\n"), environ={})
    assert settings.watch.settle_seconds == 3.0


@pytest.mark.parametrize("key", ["var_dir", "drop_dir"])
def test_an_empty_directory_is_not_the_current_one(tmp_path: Path, key: str) -> None:
    with pytest.raises(InputError, match=f"key '{key}': .*empty"):
        load_settings(settings_file(tmp_path, f'{key} = ""\n'), environ={})
    with pytest.raises(InputError, match=f"key '{key}': .*empty"):
        load_settings(settings_file(tmp_path, ""), environ={f"INSARWATCH_{key.upper()}": ""})


@pytest.mark.parametrize("var_dir", ["a-file", "a-file/state"])
def test_a_var_dir_that_cannot_be_made_is_one_line(tmp_path: Path, var_dir: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "drop").mkdir()
    env = {"INSARWATCH_VAR_DIR": str(tmp_path / var_dir), "INSARWATCH_DROP_DIR": str(tmp_path / "drop"),
           "INSARWATCH_CONFIG": str(settings_file(tmp_path, ""))}
    result = CliRunner().invoke(app, ["watch", "--once"], env=env)
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / var_dir}") and "Traceback" not in line


@pytest.mark.parametrize("names", [("INSARWATCH_BATCH__TILES", "INSARWATCH_BATCH__TILES__X"),
                                   ("INSARWATCH_BATCH__TILES__X", "INSARWATCH_BATCH__TILES")])
def test_a_key_set_whole_and_in_part_is_one_line_whatever_the_order(tmp_path: Path, names: tuple[str, str]) -> None:
    # Found by tests/test_properties.py: one order raised TypeError, the other dropped a variable.
    with pytest.raises(InputError, match="environment: INSARWATCH_BATCH__TILES.* sets part of a key"):
        load_settings(settings_file(tmp_path, ""), environ=dict.fromkeys(names, "2"))


def test_a_key_with_a_newline_is_still_one_line(tmp_path: Path) -> None:
    # Found by tests/test_properties.py.
    with pytest.raises(InputError) as caught:
        load_settings(settings_file(tmp_path, '"evil\\nkey" = 1\n'), environ={})
    assert str(caught.value) == f"{tmp_path / 'insarwatch.toml'}: key 'evil\\nkey': unknown key"
