"""The BLIP captioner on a tiny real model: one vision pass per tile, batching, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Counter, drop_tensors, pickle_only, truncate
from PIL import Image

from insarwatch.captioner import Captioner
from insarwatch.config import CaptioningSettings
from insarwatch.errors import InputError
from insarwatch.registry import ModelVersion

FAST = CaptioningSettings(max_new_tokens=10, tiles_per_call=4)


@pytest.fixture(scope="module")
def captioner(tiny_blip_dir: Path) -> Captioner:
    return Captioner.load(tiny_blip_dir, FAST)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    noisy = [rng.integers(0, 256, (70 + 5 * i, 90, 3), dtype=np.uint8) for i in range(6)]
    ramps = [np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None] * c, (64, 64, 3)).copy()
             for c in (np.array([1, 0, 0], np.uint8), np.array([0, 1, 1], np.uint8), np.array([1, 1, 1], np.uint8))]
    return noisy + ramps


def test_one_vision_pass_per_batch_feeds_the_same_text_as_model_generate(captioner, tiles) -> None:
    with Counter(captioner.model.vision_model) as vision:
        captions = captioner.caption(tiles)
    assert vision.calls == [4, 4, 1]  # 9 tiles, batch size 4: each tile encoded exactly once

    expected: list[str] = []
    for start in range(0, len(tiles), 4):
        pixels = captioner.preprocess(tiles[start:start + 4])
        with torch.inference_mode():
            tokens = captioner.model.generate(pixel_values=pixels, **captioner.generation_options())
        expected += [text.strip() for text in captioner.processor.batch_decode(tokens, skip_special_tokens=True)]
    assert [c.text for c in captions] == expected
    assert len(set(expected)) > 1, "a model whose captions ignore the image would make this test vacuous"


def test_image_keys_and_values_are_projected_once_per_image_not_once_per_beam(captioner, tiles) -> None:
    assert captioner.generation_options()["num_beams"] == 5
    cross_key = captioner.model.text_decoder.bert.encoder.layer[0].crossattention.self.key
    with Counter(cross_key) as projections:
        captioner.caption(tiles)
    assert projections.calls == [4, 4, 1]  # per beam it would be 20, 20, 5


def test_batched_results_equal_one_tile_at_a_time(captioner, tiles) -> None:
    batched = captioner.caption(tiles)
    single = [captioner.caption([tile])[0] for tile in tiles]
    assert [c.text for c in batched] == [c.text for c in single]
    np.testing.assert_allclose(
        np.stack([c.embedding for c in batched]), np.stack([c.embedding for c in single]), atol=1e-5
    )


def test_embeddings_are_unit_norm_pooled_vision_outputs_without_decoding(captioner, tiles) -> None:
    with Counter(captioner.model.text_decoder) as decoder:
        embeddings = captioner.embed(tiles)
    assert decoder.calls == []
    assert embeddings.shape == (len(tiles), captioner.embedding_dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)

    pooled = captioner.model.vision_model(pixel_values=captioner.preprocess(tiles)).pooler_output.detach().numpy()
    np.testing.assert_allclose(embeddings, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(embeddings, np.stack([c.embedding for c in captioner.caption(tiles)]), atol=1e-5)


def test_pil_images_and_arrays_give_the_same_caption(captioner, tiles) -> None:
    as_pil = [Image.fromarray(tile) for tile in tiles[:3]]
    assert [c.text for c in captioner.caption(as_pil)] == [c.text for c in captioner.caption(tiles[:3])]


def test_captions_for_chosen_rows_reuse_the_vision_pass(captioner, tiles) -> None:
    with Counter(captioner.model.vision_model) as vision:
        (encoded,) = list(captioner.encode(tiles[:4]))
        chosen = captioner.describe(encoded, rows=[1, 3])
    assert vision.calls == [4]
    full = [c.text for c in captioner.caption(tiles[:4])]
    assert chosen == [full[1], full[3]]


def test_no_images_means_no_work(captioner) -> None:
    assert captioner.caption([]) == []
    assert captioner.embed([]).shape == (0, captioner.embedding_dim)


def test_generation_options_come_from_settings(tiny_blip_dir) -> None:
    settings = CaptioningSettings(num_beams=2, max_new_tokens=3, min_new_tokens=3, repetition_penalty=1.3)
    short = Captioner.load(tiny_blip_dir, settings)
    assert short.generation_options() == {
        "num_beams": 2, "max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False, "repetition_penalty": 1.3,
    }
    (caption,) = short.caption([np.zeros((64, 64, 3), np.uint8)])
    assert len(short.processor.tokenizer(caption.text, add_special_tokens=False).input_ids) <= 3
    assert CaptioningSettings().num_beams == 5 and CaptioningSettings().do_sample is False


def test_decoding_longer_than_the_position_table_is_capped(tiny_blip_dir) -> None:
    settings = CaptioningSettings(max_new_tokens=10_000, min_new_tokens=500, num_beams=1)
    captioner = Captioner.load(tiny_blip_dir, settings)
    options = captioner.generation_options()
    assert options["max_new_tokens"] == 127 and options["min_new_tokens"] == 127
    (caption,) = captioner.caption([np.zeros((64, 64, 3), np.uint8)])  # runs to the end of the table
    assert caption.text
    assert captioner.device.type == "cpu"


def to_hub_snapshot_layout(model_dir: Path) -> None:
    """Rewrite a save_pretrained dir as the Salesforce/blip-image-captioning-base snapshot is
    laid out: transformers 4.26 config keys, preprocessor_config.json with an int size,
    a vocab.txt tokenizer with special_tokens_map.json, no generation_config.json."""
    processor = json.loads((model_dir / "processor_config.json").read_text())
    image = {**processor["image_processor"], "size": 64, "processor_class": "BlipProcessor"}
    (model_dir / "preprocessor_config.json").write_text(json.dumps(image))
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    (model_dir / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    (model_dir / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "model_max_length": 512, "name_or_path": "bert-base-uncased",
        "processor_class": "BlipProcessor", "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    (model_dir / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "[DEC]", "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
        "sep_token": "[SEP]", "unk_token": "[UNK]"}))
    for name in ("processor_config.json", "tokenizer.json", "generation_config.json"):
        (model_dir / name).unlink()
    config = json.loads((model_dir / "config.json").read_text())
    legacy = {"transformers_version": "4.26.0.dev0", "torch_dtype": None, "num_beams": 1, "max_length": 20,
              "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
              "tie_encoder_decoder": False, "pruned_heads": {}, "torchscript": False, "use_bfloat16": False}
    for tower in ("text_config", "vision_config"):
        config[tower].update(legacy)
    config.update({"_commit_hash": None, "torch_dtype": "float32", "transformers_version": None})
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))


def test_a_snapshot_in_the_hub_layout_loads_and_captions_alike(tiny_blip_dir, tmp_path, captioner, tiles) -> None:
    snapshot = copy_of(tiny_blip_dir, tmp_path)
    to_hub_snapshot_layout(snapshot)
    loaded = Captioner.load(snapshot, FAST)
    assert [c.text for c in loaded.caption(tiles[:3])] == [c.text for c in captioner.caption(tiles[:3])]


def copy_of(tiny_blip_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_blip_dir, tmp_path / ModelVersion.CAPTIONER_DIR))


DAMAGES = {
    "missing-dir": (lambda d: shutil.rmtree(d), "does not exist"),
    "no-config": (lambda d: (d / "config.json").unlink(), "no config.json"),
    "not-blip": (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "bert"})), "not a BLIP"),
    "no-weights": (lambda d: (d / "model.safetensors").unlink(), "no model weights"),
    "pickle-only": (pickle_only, "refusing pickle weights"),
    "garbage-weights": (lambda d: (d / "model.safetensors").write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00{bad"),
                        "corrupt safetensors"),
    "truncated-weights": (lambda d: truncate(d / "model.safetensors"), "corrupt safetensors"),
    "missing-tensors": (lambda d: drop_tensors(d, "text_decoder"), "missing"),
    "no-tokenizer": (lambda d: [(d / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")],
                     "processor/tokenizer"),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_unusable_model_directory_is_a_one_line_input_error(tiny_blip_dir, tmp_path, damage) -> None:
    harm, reason = damage
    model_dir = copy_of(tiny_blip_dir, tmp_path)
    harm(model_dir)
    with pytest.raises(InputError) as error:
        Captioner.load(model_dir, FAST)
    assert reason in error.value.reason
    assert error.value.path.startswith(str(model_dir))
    assert "\n" not in str(error.value)


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tiny_blip_builder, tmp_path) -> None:
    model_dir = tiny_blip_builder(tmp_path / "m", model_vocab_size=40)
    with pytest.raises(InputError, match="tokenizer has .* tokens but the model's text vocabulary has 40"):
        Captioner.load(model_dir, FAST)


def test_processor_resizing_to_another_size_than_the_model_is_refused(tiny_blip_builder, tmp_path) -> None:
    model_dir = tiny_blip_builder(tmp_path / "m", processor_image_size=96)
    with pytest.raises(InputError, match="processor resizes to 96x96 but the model expects 64x64"):
        Captioner.load(model_dir, FAST)


def test_cpu_threads_setting_limits_torch_threads(tiny_blip_dir) -> None:
    before = torch.get_num_threads()
    wanted = before + 1  # differs from whatever the environment chose
    try:
        Captioner.load(tiny_blip_dir, CaptioningSettings(cpu_threads=wanted, device="cpu"))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


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


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 7, 3), (4, 9, 3), (224, 3, 3)])
def test_arrays_are_read_channels_last_whatever_their_size(captioner, shape: tuple[int, int, int]) -> None:
    # transformers guesses the channel axis of an array from its shape: a tile 1, 3 or 4
    # rows high looked channels-first to it.
    pixels = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    from_array = captioner.preprocess([pixels])
    from_pil = captioner.preprocess([Image.fromarray(pixels)])
    assert torch.equal(from_array, from_pil)
