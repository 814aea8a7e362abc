"""What ``Captioner`` promises for every architecture it knows, checked on a tiny real BLIP and GIT.

Batching must not change a caption, chosen rows reuse their batch's vision pass, decoding
stops at the decoder's position table, and every way a model directory can be unusable
is a one-line ``InputError`` naming it. What differs between architectures (how the
vision pass feeds the decoder, how the embedding is pooled, which snapshot layout the hub
uses) is in ``test_captioner.py`` (BLIP) and ``test_captioner_git.py`` (GIT).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Counter, captioner_tiles, drop_tensors, pickle_only, truncate
from PIL import Image

from insarwatch.captioner import Captioner
from insarwatch.config import CaptioningSettings
from insarwatch.errors import InputError
from insarwatch.registry import ModelVersion

FAST = CaptioningSettings(max_new_tokens=10, tiles_per_call=4)
ARCHITECTURES = ("blip", "git")
# Each architecture's vision tower and text decoder, for hooks.
VISION = {"blip": lambda model: model.vision_model, "git": lambda model: model.git.image_encoder}
DECODER = {"blip": lambda model: model.text_decoder, "git": lambda model: model.git.encoder}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model_dir(arch: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"tiny_{arch}_dir")


@pytest.fixture(scope="module")
def builder(arch: str, request: pytest.FixtureRequest):
    return request.getfixturevalue(f"tiny_{arch}_builder")


@pytest.fixture(scope="module")
def captioner(model_dir: Path) -> Captioner:
    return Captioner.load(model_dir, FAST)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    return captioner_tiles()


def test_the_loader_reads_the_architecture_from_config_json(captioner, arch) -> None:
    assert captioner.architecture.model_type == arch == captioner.model.config.model_type


def test_batched_results_equal_one_tile_at_a_time(captioner, tiles) -> None:
    batched = captioner.caption(tiles)
    single = [captioner.caption([tile])[0] for tile in tiles]
    assert [c.text for c in batched] == [c.text for c in single]
    assert len({c.text for c in batched}) > 1, "captions that ignore the image would make this vacuous"
    np.testing.assert_allclose(
        np.stack([c.embedding for c in batched]), np.stack([c.embedding for c in single]), atol=1e-5
    )


def test_embeddings_are_unit_norm_and_need_no_decoding(captioner, arch, tiles) -> None:
    with Counter(DECODER[arch](captioner.model)) as decoder:
        embeddings = captioner.embed(tiles, "pooled")
    assert decoder.calls == []
    assert embeddings.shape == (len(tiles), captioner.embedding_dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeddings, np.stack([c.embedding for c in captioner.caption(tiles)]), atol=1e-5)


def test_pil_images_and_arrays_give_the_same_caption(captioner, tiles) -> None:
    as_pil = [Image.fromarray(tile) for tile in tiles[:3]]
    assert [c.text for c in captioner.caption(as_pil)] == [c.text for c in captioner.caption(tiles[:3])]


def test_captions_for_chosen_rows_reuse_the_vision_pass(captioner, arch, tiles) -> None:
    with Counter(VISION[arch](captioner.model)) as vision:
        (encoded,) = list(captioner.encode(tiles[:4]))
        chosen = captioner.describe(encoded, rows=[1, 3])
    assert vision.calls == [4]
    full = [c.text for c in captioner.caption(tiles[:4])]
    assert chosen == [full[1], full[3]]


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 7, 3), (4, 9, 3), (224, 3, 3)])
def test_arrays_are_read_channels_last_whatever_their_size(captioner, shape: tuple[int, int, int]) -> None:
    # transformers guesses the channel axis of an array from its shape: a tile 1, 3 or 4
    # rows high looked channels-first to it.
    pixels = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    from_array = captioner.preprocess([pixels])
    from_pil = captioner.preprocess([Image.fromarray(pixels)])
    assert torch.equal(from_array, from_pil)


def test_no_images_means_no_work(captioner) -> None:
    assert captioner.caption([]) == []
    assert captioner.embed([], "pooled").shape == (0, captioner.embedding_dim)


def test_decoding_longer_than_the_position_table_is_capped(model_dir) -> None:
    settings = CaptioningSettings(max_new_tokens=10_000, min_new_tokens=500, num_beams=1)
    captioner = Captioner.load(model_dir, settings)
    options = captioner.generation_options()
    assert options["max_new_tokens"] == 127 and options["min_new_tokens"] == 127
    (caption,) = captioner.caption([np.zeros((64, 64, 3), np.uint8)])  # runs to the end of the table
    assert caption.text
    assert captioner.device.type == "cpu"


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / ModelVersion.CAPTIONER_DIR))


# Damage to a model directory → the reason the error gives. A decoder's tensors go missing
# under its architecture's name for them.
DAMAGES = {
    "missing-dir": (lambda d, arch: shutil.rmtree(d), "does not exist"),
    "no-config": (lambda d, arch: (d / "config.json").unlink(), "no config.json"),
    "not-a-captioner": (lambda d, arch: (d / "config.json").write_text(json.dumps({"model_type": "bert"})),
                        "model_type is 'bert', not a BLIP ('blip') or GIT ('git') captioning model"),
    "config-not-json": (lambda d, arch: (d / "config.json").write_text("{model_type: "), "not a model configuration"),
    "no-weights": (lambda d, arch: (d / "model.safetensors").unlink(), "no model weights"),
    "pickle-only": (lambda d, arch: pickle_only(d), "refusing pickle weights"),
    "garbage-weights": (lambda d, arch: (d / "model.safetensors").write_bytes(
        b"\x07\x00\x00\x00\x00\x00\x00\x00{bad"), "corrupt safetensors"),
    "truncated-weights": (lambda d, arch: truncate(d / "model.safetensors"), "corrupt safetensors"),
    "missing-tensors": (lambda d, arch: drop_tensors(d, {"blip": "text_decoder", "git": "git.encoder"}[arch]),
                        "missing"),
    "no-tokenizer": (lambda d, arch: [(d / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")],
                     "processor/tokenizer"),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_unusable_model_directory_is_a_one_line_input_error(model_dir, arch, tmp_path, damage) -> None:
    harm, reason = damage
    damaged = copy_of(model_dir, tmp_path)
    harm(damaged, arch)
    with pytest.raises(InputError) as error:
        Captioner.load(damaged, FAST)
    assert reason in error.value.reason
    assert error.value.path.startswith(str(damaged))
    assert "\n" not in str(error.value)


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(builder, tmp_path) -> None:
    model_dir = builder(tmp_path / "m", model_vocab_size=40)
    with pytest.raises(InputError, match="tokenizer has .* tokens but the model's text vocabulary has 40"):
        Captioner.load(model_dir, FAST)


def test_processor_resizing_to_another_size_than_the_model_is_refused(builder, tmp_path) -> None:
    model_dir = builder(tmp_path / "m", processor_image_size=96)
    with pytest.raises(InputError, match="processor resizes to 96x96 but the model expects 64x64"):
        Captioner.load(model_dir, FAST)


def test_sharded_safetensors_load_and_a_missing_shard_is_named(captioner, tmp_path, tiles) -> None:
    sharded = tmp_path / "sharded"
    captioner.model.save_pretrained(sharded, max_shard_size="100KB")
    captioner.processor.save_pretrained(sharded)
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").is_file()
    assert [c.text for c in Captioner.load(sharded, FAST).caption(tiles[:2])] == [
        c.text for c in captioner.caption(tiles[:2])
    ]

    shards[-1].unlink()
    with pytest.raises(InputError) as error:
        Captioner.load(sharded, FAST)
    assert error.value.path == str(shards[-1]) and "missing" in error.value.reason
