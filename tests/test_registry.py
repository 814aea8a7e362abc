"""The model store on a real directory: staging, atomic registration, ``current``."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from insarwatch.errors import InputError, InsarwatchError
from insarwatch.registry import ModelStore, ModelVersion

T0 = datetime(2026, 11, 23, 22, 15, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    # No shipped model: what the store does must not depend on whether the package carries one.
    return ModelStore(tmp_path / "var" / "models", clock=Clock(T0), shipped=tmp_path / "no-shipped-model")


def test_stage_gives_a_private_directory_inside_the_store(store) -> None:
    staged = store.stage()
    assert staged.is_dir() and staged.parent == store.models_dir
    assert store.versions() == [] and store.current() is None


def test_current_moves_only_when_asked(tmp_path, tiny_blip_dir, tiny_version_stager) -> None:
    clock = Clock(T0)
    store = ModelStore(tmp_path / "models", clock=clock)
    first = store.register(tiny_version_stager(store, tiny_blip_dir), make_current=True)
    assert first.name == "20261123T221500Z"
    assert store.current() == first
    assert os.readlink(store.current_link) == first.name  # relative: the var dir can move

    clock.now = T0 + timedelta(hours=1)
    failed_evaluation = store.register(
        tiny_version_stager(store, tiny_blip_dir, metrics={"rougeL": 0.1}), make_current=False
    )
    assert store.current() == first
    assert [v.name for v in store.versions()] == [first.name, failed_evaluation.name]

    clock.now = T0 + timedelta(hours=2)
    better = store.register(tiny_version_stager(store, tiny_blip_dir, metrics={"rougeL": 0.9}), make_current=True)
    assert store.current() == better and better.metrics() == {"rougeL": 0.9}
    assert sorted(p.name for p in store.models_dir.iterdir()) == sorted(
        [first.name, failed_evaluation.name, better.name, "current"]
    ), "no staging directories or temporary links left behind"


def test_versions_registered_in_the_same_second_get_distinct_ordered_names(store) -> None:
    names = []
    for _ in range(11):
        staged = store.stage()
        (staged / ModelVersion.CAPTIONER_DIR).mkdir()
        names.append(store.register(staged, make_current=False).name)
    assert names[:3] == ["20261123T221500Z", "20261123T221500Z-2", "20261123T221500Z-3"]
    assert [v.name for v in store.versions()] == names  # -10 sorts after -9


def test_resolve_accepts_a_name_current_or_a_directory(store, tiny_blip_dir, tiny_version_stager) -> None:
    version = store.register(tiny_version_stager(store, tiny_blip_dir), make_current=True)
    assert store.resolve(version.name) == version
    assert store.resolve("current") == version
    by_path = store.resolve(str(version.path))
    assert by_path.name == version.name and by_path.captioner_dir == version.captioner_dir

    bare = store.resolve(tiny_blip_dir)
    assert bare.captioner_dir == tiny_blip_dir.resolve()


def test_resolve_refuses_unknown_names_and_an_empty_store(store, tmp_path) -> None:
    with pytest.raises(InputError, match="no current model"):
        store.resolve("current")
    with pytest.raises(InputError, match="neither a model version"):
        store.resolve("20990101T000000Z")
    with pytest.raises(InputError, match="neither a model version"):
        store.resolve(tmp_path / "nowhere")


def test_a_dangling_current_link_is_an_input_error(store, tiny_blip_dir, tiny_version_stager) -> None:
    version = store.register(tiny_version_stager(store, tiny_blip_dir), make_current=True)
    shutil.rmtree(version.path)
    with pytest.raises(InputError) as error:
        store.current()
    assert error.value.path == str(store.current_link)


def test_register_refuses_directories_it_did_not_stage(store, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(InsarwatchError, match="not staged by this model store"):
        store.register(elsewhere, make_current=True)
    with pytest.raises(InputError, match="no captioner/ directory"):
        store.register(store.stage(), make_current=True)
    assert store.current() is None and store.versions() == []


def test_discard_removes_a_staged_version(store) -> None:
    staged = store.stage()
    (staged / "partial.bin").write_bytes(b"x")
    store.discard(staged)
    assert not staged.exists()


def test_corrupt_metrics_are_an_input_error(tmp_path) -> None:
    ModelVersion.at(tmp_path).metrics_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError) as error:
        ModelVersion("v", tmp_path).metrics()
    assert error.value.path == str(tmp_path / ModelVersion.METRICS_FILE)
    assert ModelVersion("v", tmp_path / "absent").metrics() == {}


def test_a_model_store_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where var_dir should be")
    with pytest.raises(InsarwatchError, match=r"/var/models: cannot make the model store: Not a directory"):
        ModelStore(tmp_path / "var" / "models").stage()


def test_a_version_whose_weights_were_overwritten_is_refused_in_one_line(
    tmp_path: Path, tiny_var_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from insarwatch.config import Settings
    from insarwatch.describe import load_bundle

    settings = Settings(var_dir=tiny_var_dir, drop_dir=tmp_path)
    version = ModelStore(settings.models_dir).current()
    load_bundle(version, settings)  # intact: loads
    (weights,) = version.captioner_dir.glob("*.safetensors")
    header = 8 + int.from_bytes(weights.read_bytes()[:8], "little")  # safetensors: length, JSON header, data
    data = bytearray(weights.read_bytes())
    data[header:header + 4096] = bytes(4096)  # the header stays intact; weights are zeroed
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError) as refused:
        load_bundle(version, settings)
    assert refused.value.path == str(weights) and "SHA-256 differs" in refused.value.reason
    assert "\n" not in str(refused.value)

    version.checksums_file.unlink()  # as a version registered before checksums were recorded
    with caplog.at_level("WARNING", logger="insarwatch.registry"):
        load_bundle(version, settings)
    assert "loading it unverified" in caplog.text


def test_a_version_says_which_input_it_was_trained_on(tmp_path) -> None:
    version = ModelVersion("v", tmp_path)
    assert version.model_input is None  # a bare directory does not say: the setting decides
    version.train_config_file.write_text('{"preset": {}}', encoding="utf-8")
    assert version.model_input == "paper"  # trained before the input was recorded: the paper's RGB
    version.train_config_file.write_text('{"model_input": "phase"}', encoding="utf-8")
    assert version.model_input == "phase"
    version.train_config_file.write_text('{"model_input": "hsv"}', encoding="utf-8")
    with pytest.raises(InputError) as error:
        version.model_input
    assert str(error.value) == f"{version.train_config_file}: model_input 'hsv' is none of paper, phase"


def test_the_shipped_model_is_in_use_until_one_is_registered(tmp_path, tiny_blip_dir, tiny_version_stager) -> None:
    package = ModelStore(tmp_path / "package")
    shipped = package.register(tiny_version_stager(package, tiny_blip_dir), make_current=False).path
    store = ModelStore(tmp_path / "var" / "models", clock=Clock(T0), shipped=shipped)
    assert store.current() is None
    assert store.in_use().path == shipped and store.resolve("current").path == shipped
    trained = store.register(tiny_version_stager(store, tiny_blip_dir), make_current=True)
    assert store.in_use() == trained == store.resolve("current")


def test_a_shipped_model_without_its_index_is_not_used(tmp_path, tiny_blip_dir, tiny_version_stager) -> None:
    package = ModelStore(tmp_path / "package")
    shipped = package.register(tiny_version_stager(package, tiny_blip_dir), make_current=False)
    shipped.index_file.unlink()
    store = ModelStore(tmp_path / "var" / "models", shipped=shipped.path)
    assert store.in_use() is None
    with pytest.raises(InputError, match="no current model yet"):
        store.resolve("current")
