"""Loading a model version and describing tiles with it: the index check, batching, triage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from insarwatch.config import Settings
from insarwatch.describe import load_bundle
from insarwatch.errors import InputError
from insarwatch.registry import ModelStore, ModelVersion

SETTINGS = Settings(captioning={"max_new_tokens": 8, "tiles_per_call": 4})


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "var" / "models")


@pytest.fixture
def registered(store, tiny_blip_dir, tiny_version_stager) -> ModelVersion:
    """The store's current version: the tiny captioner with an index of its own embeddings."""
    return store.register(tiny_version_stager(store, tiny_blip_dir), make_current=True)


def test_load_bundle_gives_a_captioner_and_an_index_that_fit(store, registered, tiny_index_tiles) -> None:
    bundle = load_bundle(store.resolve("current"), SETTINGS)
    assert bundle.version == registered and bundle.index is not None
    assert bundle.index.dim == bundle.captioner.embedding_dim and len(bundle.index) == 6

    # The index says which vision output it was built from; searched with that, a tile finds itself.
    assert bundle.index.feature == SETTINGS.retrieval.feature
    embedding = bundle.captioner.embed(tiny_index_tiles[:1], bundle.index.feature)
    (neighbours,) = bundle.index.search(embedding, SETTINGS.retrieval.k)
    assert neighbours[0].record.source == "img0" and neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)
    (described,) = bundle.describe(tiny_index_tiles[:1], SETTINGS.retrieval.k)
    assert described.neighbours[0].record.source == "img0"


def test_load_bundle_refuses_an_index_built_by_another_model(store, tiny_blip_dir, tiny_version_stager) -> None:
    version = store.register(tiny_version_stager(store, tiny_blip_dir, index_dim=48), make_current=True)
    with pytest.raises(InputError) as error:
        load_bundle(version, SETTINGS)
    assert error.value.path == str(version.index_file) and "another model" in error.value.reason


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
