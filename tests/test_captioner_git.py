"""The GIT captioner on a tiny real model: one vision pass per batch, image tokens once per image.

Mirrors ``test_captioner.py`` (BLIP): the same ``Captioner`` loads a ``GitForCausalLM``
directory because its config.json says ``model_type: git``, and its captions are checked
against what transformers' own ``GitForCausalLM.generate(pixel_values=...)`` writes. What
every architecture must do (batching, chosen rows, refusals) is in ``test_captioners.py``.
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
from insarwatch.errors import InputError
from insarwatch.registry import ModelVersion

FAST = CaptioningSettings(max_new_tokens=10, tiles_per_call=4)


@pytest.fixture(scope="module")
def captioner(tiny_git_dir: Path) -> Captioner:
    return Captioner.load(tiny_git_dir, FAST)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    return captioner_tiles()


def generate_texts(captioner: Captioner, images: list[np.ndarray]) -> list[str]:
    """transformers' own recipe: ``GitForCausalLM.generate(pixel_values=...)`` on one batch."""
    with torch.inference_mode():
        tokens = captioner.model.generate(pixel_values=captioner.preprocess(images), **captioner.generation_options())
    return [text.strip() for text in captioner.processor.batch_decode(tokens, skip_special_tokens=True)]


def test_one_vision_pass_per_batch_writes_the_same_text_as_model_generate(captioner, tiles) -> None:
    encoder = captioner.model.git.image_encoder
    with Counter(encoder) as vision:
        captions = captioner.caption(tiles)
    assert vision.calls == [4, 4, 1]  # 9 tiles, batch size 4: each tile encoded exactly once

    expected: list[str] = []
    with Counter(encoder) as upstream:
        for start in range(0, len(tiles), 4):
            expected += generate_texts(captioner, tiles[start:start + 4])
    assert upstream.calls == [20, 20, 5]  # what this fixes: transformers encodes every beam's copy
    assert [c.text for c in captions] == expected
    assert len(set(expected)) > 1, "a model whose captions ignore the image would make this test vacuous"


def test_image_tokens_go_through_the_decoder_once_per_image_not_once_per_beam(captioner, tiles) -> None:
    assert captioner.generation_options()["num_beams"] == 5
    with Counter(captioner.model.git.visual_projection) as projections:
        captioner.caption(tiles)
    assert projections.calls == [4, 4, 1]  # per beam it would be 20, 20, 5


@pytest.mark.parametrize("beams", [1, 3])
def test_greedy_and_narrow_beams_also_equal_model_generate(tiny_git_dir, tiles, beams) -> None:
    captioner = Captioner.load(tiny_git_dir, FAST.model_copy(update={"num_beams": beams, "min_new_tokens": 4}))
    assert [c.text for c in captioner.caption(tiles[:4])] == generate_texts(captioner, tiles[:4])


def test_embeddings_are_unit_norm_mean_vision_tokens_without_decoding(captioner, tiles) -> None:
    with Counter(captioner.model.git.encoder) as decoder:
        embeddings = captioner.embed(tiles, "pooled")
    assert decoder.calls == []
    assert embeddings.shape == (len(tiles), captioner.embedding_dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)

    tokens = captioner.model.git.image_encoder(pixel_values=captioner.preprocess(tiles)).last_hidden_state
    mean = tokens.mean(dim=1).detach().numpy()
    np.testing.assert_allclose(embeddings, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(embeddings, np.stack([c.embedding for c in captioner.caption(tiles)]), atol=1e-5)


def to_hub_snapshot_layout(model_dir: Path) -> None:
    """Rewrite a save_pretrained dir as the microsoft/git-base snapshot is laid out: a
    preprocessor_config.json for CLIPImageProcessor with int sizes, a BertTokenizer
    vocab.txt with special_tokens_map.json, no processor_config.json or tokenizer.json."""
    processor = json.loads((model_dir / "processor_config.json").read_text())
    image = {**processor["image_processor"], "size": 64, "crop_size": 64, "processor_class": "GitProcessor"}
    (model_dir / "preprocessor_config.json").write_text(json.dumps(image))
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    (model_dir / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    (model_dir / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "model_max_length": 512, "processor_class": "GitProcessor",
        "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    (model_dir / "special_tokens_map.json").write_text(json.dumps({
        "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
        "unk_token": "[UNK]"}))
    for name in ("processor_config.json", "tokenizer.json", "generation_config.json"):
        (model_dir / name).unlink()


def test_a_snapshot_in_the_hub_layout_loads_offline_and_captions_alike(
    tiny_git_dir, tmp_path, captioner, tiles, monkeypatch
) -> None:
    snapshot = copy_of(tiny_git_dir, tmp_path)
    to_hub_snapshot_layout(snapshot)
    # Any attempt to reach a hub would fail: nothing listens on the discard port.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    loaded = Captioner.load(snapshot, FAST)
    assert [c.text for c in loaded.caption(tiles[:3])] == [c.text for c in captioner.caption(tiles[:3])]


def test_a_hub_name_is_never_fetched(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="microsoft/git-base: model directory does not exist"):
        Captioner.load("microsoft/git-base", FAST)


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / ModelVersion.CAPTIONER_DIR))


def as_video_git(model_dir: Path, frames: int) -> None:
    """A GIT for clips of ``frames`` images (GIT-base-VATEX's layout): a temporal embedding per frame."""
    from safetensors.torch import load_file, save_file

    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "num_image_with_embedding": frames}))
    tensors = load_file(model_dir / "model.safetensors")
    width = config["vision_config"]["hidden_size"]
    tensors.update({f"git.img_temporal_embedding.{i}": torch.zeros(1, 1, width) for i in range(frames)})
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})


def test_a_video_git_is_a_one_line_input_error(tiny_git_dir, tmp_path) -> None:
    model_dir = copy_of(tiny_git_dir, tmp_path)
    as_video_git(model_dir, frames=2)
    with pytest.raises(InputError) as error:
        Captioner.load(model_dir, FAST)
    assert error.value.path == str(model_dir) and "video GIT" in error.value.reason
    assert "\n" not in str(error.value)
