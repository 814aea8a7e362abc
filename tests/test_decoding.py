"""Decoding presets (``captioning.decoding``): the deterministic default and the paper's sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from insarwatch.captioner import Captioner
from insarwatch.config import CaptioningSettings, load_settings
from insarwatch.errors import InputError


def test_default_is_deterministic_beam_search() -> None:
    settings = CaptioningSettings()
    assert (settings.decoding, settings.decoding_label) == ("deterministic", "deterministic")
    assert (settings.num_beams, settings.do_sample, settings.temperature, settings.top_k, settings.top_p) == (
        5, False, None, None, None)


def test_paper_preset_is_the_papers_settings_and_keys_given_win(tmp_path: Path) -> None:
    config = tmp_path / "insarwatch.toml"
    config.write_text('[captioning]\ndecoding = "paper"\n', encoding="utf-8")
    paper = load_settings(config, environ={}).captioning
    assert (paper.num_beams, paper.do_sample, paper.temperature, paper.top_k, paper.top_p) == (5, True, 0.7, 50, 0.9)
    assert paper.decoding_label == "paper"
    narrowed = load_settings(config, environ={"INSARWATCH_CAPTIONING__NUM_BEAMS": "2"}).captioning
    assert (narrowed.num_beams, narrowed.temperature) == (2, 0.7)
    assert narrowed.decoding_label == "paper, num_beams=2"
    # --beams on train/evaluate copies the settings; the label follows.
    assert paper.model_copy(update={"num_beams": 1}).decoding_label == "paper, num_beams=1"


def test_unknown_preset_is_one_line_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "insarwatch.toml"
    config.write_text('[captioning]\ndecoding = "greedy"\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_settings(config, environ={})
    assert str(caught.value) == (f"{config}: key 'captioning': Value error, unknown decoding preset 'greedy'; "
                                 "known: deterministic, paper")


def test_paper_preset_reaches_generate_and_samples(tiny_blip_dir: Path) -> None:
    captioner = Captioner.load(tiny_blip_dir, CaptioningSettings(decoding="paper", max_new_tokens=8))
    options = captioner.generation_options()
    assert {key: options[key] for key in ("num_beams", "do_sample", "temperature", "top_k", "top_p")} == {
        "num_beams": 5, "do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.9}
    tiles = [np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8) for seed in range(3)]
    torch.manual_seed(0)
    first = [caption.text for caption in captioner.caption(tiles)]
    torch.manual_seed(0)
    assert [caption.text for caption in captioner.caption(tiles)] == first  # sampling follows torch's seed
