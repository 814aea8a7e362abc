"""The BLIP captioner on a tiny real model: one vision pass per batch, keys/values once per image.

What every architecture must do (batching, chosen rows, refusals) is in ``test_captioners.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Counter, captioner_tiles

from insarwatch.captioner import Captioner
from insarwatch.config import CaptioningSettings
from insarwatch.registry import ModelVersion

FAST = CaptioningSettings(max_new_tokens=10, tiles_per_call=4)


@pytest.fixture(scope="module")
def captioner(tiny_blip_dir: Path) -> Captioner:
    return Captioner.load(tiny_blip_dir, FAST)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    return captioner_tiles()


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


def test_embeddings_are_unit_norm_pooled_vision_outputs_without_decoding(captioner, tiles) -> None:
    with Counter(captioner.model.text_decoder) as decoder:
        embeddings = captioner.embed(tiles, "pooled")
    assert decoder.calls == []
    assert embeddings.shape == (len(tiles), captioner.embedding_dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)

    pooled = captioner.model.vision_model(pixel_values=captioner.preprocess(tiles)).pooler_output.detach().numpy()
    np.testing.assert_allclose(embeddings, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(embeddings, np.stack([c.embedding for c in captioner.caption(tiles)]), atol=1e-5)


def test_patch_mean_embeddings_average_the_image_tokens_without_cls(captioner, tiles) -> None:
    embeddings = captioner.embed(tiles, "patch_mean")
    hidden = captioner.model.vision_model(pixel_values=captioner.preprocess(tiles)).last_hidden_state.detach().numpy()
    mean = hidden[:, 1:].mean(axis=1)
    np.testing.assert_allclose(embeddings, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)


def test_generation_options_come_from_settings(tiny_blip_dir) -> None:
    settings = CaptioningSettings(num_beams=2, max_new_tokens=3, min_new_tokens=3, repetition_penalty=1.3)
    short = Captioner.load(tiny_blip_dir, settings)
    assert short.generation_options() == {
        "num_beams": 2, "max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False, "repetition_penalty": 1.3,
    }
    (caption,) = short.caption([np.zeros((64, 64, 3), np.uint8)])
    assert len(short.processor.tokenizer(caption.text, add_special_tokens=False).input_ids) <= 3
    assert CaptioningSettings().num_beams == 5 and CaptioningSettings().do_sample is False


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


def test_cpu_threads_setting_limits_torch_threads(tiny_blip_dir) -> None:
    before = torch.get_num_threads()
    wanted = before + 1  # differs from whatever the environment chose
    try:
        Captioner.load(tiny_blip_dir, CaptioningSettings(cpu_threads=wanted, device="cpu"))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
