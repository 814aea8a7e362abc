"""The model store on a real directory: staging, atomic registration, ``current``, loading."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from insarwatch.config import Settings
from insarwatch.errors import InputError, InsarwatchError
from insarwatch.registry import ModelStore, ModelVersion, load_bundle
from insarwatch.retrieval import INDEX_FILE

T0 = datetime(2026, 11, 23, 22, 15, 0, tzinfo=timezone.utc)
SETTINGS = Settings(captioning={"max_new_tokens": 8, "tiles_per_call": 4})


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "var" / "models", clock=Clock(T0))


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
        (staged / "captioner").mkdir()
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
    (tmp_path / "metrics.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError) as error:
        ModelVersion("v", tmp_path).metrics()
    assert error.value.path == str(tmp_path / "metrics.json")
    assert ModelVersion("v", tmp_path / "absent").metrics() == {}


@pytest.fixture
def registered(store, tiny_blip_dir, tiny_version_stager) -> ModelVersion:
    """The store's current version: the tiny captioner with an index of its own embeddings."""
    return store.register(tiny_version_stager(store, tiny_blip_dir), make_current=True)


def test_load_bundle_gives_a_captioner_and_an_index_that_fit(store, registered, tiny_index_tiles) -> None:
    bundle = load_bundle(store.resolve("current"), SETTINGS)
    assert bundle.version == registered and bundle.index is not None
    assert bundle.index.dim == bundle.captioner.embedding_dim and len(bundle.index) == 6

    (caption,) = bundle.captioner.caption(tiny_index_tiles[:1])
    (neighbours,) = bundle.index.search(caption.embedding[None], SETTINGS.retrieval.k)
    assert neighbours[0].record.source == "img0" and neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_load_bundle_refuses_an_index_built_by_another_model(store, tiny_blip_dir, tiny_version_stager) -> None:
    version = store.register(tiny_version_stager(store, tiny_blip_dir, index_dim=48), make_current=True)
    with pytest.raises(InputError) as error:
        load_bundle(version, SETTINGS)
    assert error.value.path == str(version.path / INDEX_FILE) and "another model" in error.value.reason


def test_load_bundle_of_a_bare_captioner_has_no_index_unless_required(tiny_blip_dir) -> None:
    bare = ModelVersion(tiny_blip_dir.name, tiny_blip_dir)
    assert load_bundle(bare, SETTINGS).index is None
    with pytest.raises(InputError, match="missing"):
        load_bundle(bare, SETTINGS, require_index=True)


def test_load_bundle_of_a_version_with_a_broken_captioner_names_the_directory(registered) -> None:
    (registered.captioner_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError) as error:
        load_bundle(registered, SETTINGS)
    assert error.value.path.startswith(str(registered.captioner_dir))
    shutil.rmtree(registered.captioner_dir)
    with pytest.raises(InputError, match="does not exist"):
        load_bundle(registered, SETTINGS)


def test_describe_captions_each_tile_once_and_attaches_its_neighbours(registered, tiny_index_tiles) -> None:
    bundle = load_bundle(registered, SETTINGS)
    images = tiny_index_tiles[:5]
    calls: list[int] = []
    hook = bundle.captioner.model.vision_model.register_forward_hook(lambda *_: calls.append(1))
    described = bundle.describe(images, k=3)
    hook.remove()

    assert len(calls) == 2  # 5 tiles in batches of 4
    assert [d.caption.text for d in described] == [c.text for c in bundle.captioner.caption(images)]
    for position, item in enumerate(described):
        assert not item.caption.retrieved and len(item.neighbours) == 3
        assert item.neighbours[0].record.source == f"img{position}"
        similarities = [n.similarity for n in item.neighbours]
        assert similarities == sorted(similarities, reverse=True)


def test_triage_copies_the_caption_of_confidently_quiet_tiles_without_decoding(registered, tiny_index_tiles) -> None:
    triage = {"enabled": True, "min_similarity": 0.999, "min_neighbours": 1}
    settings = Settings(captioning={**SETTINGS.captioning.model_dump(), "triage": triage})
    bundle = load_bundle(registered, settings)
    images = tiny_index_tiles  # indexed as deforming at even positions, quiet at odd ones
    quiet = [bundle.index.records[i].caption for i in (1, 3)]
    decoder_calls: list[int] = []
    hook = bundle.captioner.model.text_decoder.register_forward_hook(lambda *_: decoder_calls.append(1))
    quiet_only = bundle.describe([images[1], images[3]], k=2)
    assert decoder_calls == []
    mixed = bundle.describe(images[:2], k=2)
    hook.remove()

    assert [(d.caption.text, d.caption.retrieved) for d in quiet_only] == [(quiet[0], True), (quiet[1], True)]
    assert (mixed[1].caption.text, mixed[1].caption.retrieved) == (quiet[0], True)
    assert not mixed[0].caption.retrieved and decoder_calls
    assert mixed[0].caption.text == bundle.captioner.caption(images[:1])[0].text
