"""deploy/: the example configuration stays in step with Settings, and the install script's
dry run works and changes nothing."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from insarwatch.config import Settings, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXAMPLE = DEPLOY / "insarwatch.toml"
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
    values["batch"]["size"] = 99
    assert _missing_or_wrong(Settings.model_validate(values), values) == [
        "watch.settle_seconds: missing", "batch.size: shows 99, default is 16"]
