"""Flip/rotate augmentation: pixels and caption locations move together, on every real caption.

The real captions are the 19,919 Hephaestus annotations in ../shared (MIT); each of their
1,374 distinct captions is rewritten under the eight symmetries of a tile and checked against
an independent reading of the sides it names.
"""

from __future__ import annotations

import collections
import json
import re
import tarfile

import numpy as np
import pytest

from tests.helpers import shared_path
from training.augment import (
    IDENTITY,
    TRANSFORMS,
    WORDS,
    Augmenter,
    Transform,
    phase_remap,
    rewrite_caption,
    sides_named,
)

# Where a mark at a side goes, read off the pixels: the ground truth for Transform.side.
SIDE_PIXEL = {"top": (0, 2), "right": (2, 4), "bottom": (4, 2), "left": (2, 0)}


@pytest.fixture(scope="module")
def real_captions() -> list[str]:
    archive = shared_path("hephaestus/annotations.tar.gz")
    captions = set()
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".json"):
                captions.add(json.load(tar.extractfile(member))["caption"])
    assert len(captions) == 1374
    return sorted(captions)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.name)
def test_transform_moves_pixels_where_it_says_sides_go(transform: Transform) -> None:
    for side, (row, col) in SIDE_PIXEL.items():
        tile = np.zeros((5, 5), dtype=np.uint8)
        tile[row, col] = 1
        moved = transform.apply(tile)
        assert tuple(np.argwhere(moved)[0]) == SIDE_PIXEL[transform.side(side)]
        assert np.array_equal(transform.inverse().apply(moved), tile)


def test_quarter_turn_of_the_experts_corner_phrases() -> None:
    clockwise = Transform(False, 1)
    assert rewrite_caption("A dyke-type deformation pattern of high intensity can be detected on the "
                           "top-left side of the image.", clockwise) == (
        "A dyke-type deformation pattern of high intensity can be detected on the top-right side of the image.")
    assert rewrite_caption("Turbulent mixing effect can be detected on the top, right and bottom side.",
                           clockwise) == "Turbulent mixing effect can be detected on the right, bottom and left side."
    assert rewrite_caption("on the leftmost and sill-type of low intensity on the rightmost", clockwise) == \
        "on the topmost and sill-type of low intensity on the bottom"
    assert rewrite_caption("Wave-like patterns can be detected on the downside of the region.", Transform(True, 2)) == \
        "Wave-like patterns can be detected on the top side of the region."
    mirror = Transform(True, 0)
    assert rewrite_caption("detected on the bottom-rihgt and top side", mirror) == "detected on the bottom-left and top side"
    assert rewrite_caption("detected on the top side of the region and with lower intensity in the center",
                           Transform(False, 2)) == "detected on the bottom side of the region and with lower intensity in the center"
    assert rewrite_caption("No deformation activity can be detected.", clockwise) == "No deformation activity can be detected."


def _other_words(caption: str) -> list[str]:
    return [word for word in re.findall(r"[A-Za-z]+", caption.lower()) if word not in WORDS and word != "side"]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.name)
def test_every_real_caption_moves_exactly(real_captions: list[str], transform: Transform) -> None:
    for caption in real_captions:
        rewritten = rewrite_caption(caption, transform)
        expected = collections.Counter(transform.side(side) for side in sides_named(caption))
        assert collections.Counter(sides_named(rewritten)) == expected, (caption, rewritten)
        assert _other_words(rewritten) == _other_words(caption), (caption, rewritten)
        back = rewrite_caption(rewritten, transform.inverse())
        assert collections.Counter(sides_named(back)) == collections.Counter(sides_named(caption))
        if transform == IDENTITY:
            assert rewritten == caption


def test_real_captions_name_places_with_known_words_only(real_captions: list[str]) -> None:
    # Any direction-like word outside WORDS would be left unmoved: list them to be sure there are none.
    unknown = collections.Counter(
        word for caption in real_captions for word in re.findall(r"[a-z]+", caption.lower())
        if re.fullmatch(r"(top|bot|bottom|left|lef|right|rig|rih|up|down|north|south|east|west)\w*", word)
        and word not in WORDS)
    assert unknown == {}


# --------------------------------------------------------------------------- phase offset and sign


def _canonical(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    from insarwatch import phase

    valid = np.ones(values.shape, dtype=bool) if valid is None else valid
    return phase.render(phase.PhaseImage(phase.wrap(values), valid, "synthetic")).astype(np.float64)


def _remapped(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return (matrix @ ((rgb - 127.5) / 127.5).reshape(-1, 3).T).T.reshape(rgb.shape) * 127.5 + 127.5


def test_a_sign_flip_swaps_two_channels_and_thirds_of_a_turn_rotate_them() -> None:
    # Centred canonical channels always sum to 0 (three cosines a third of a turn apart): on that
    # plane, the only one renderings reach, the remap is exactly a channel permutation.
    plane = np.eye(3) - 1 / 3
    assert np.allclose(phase_remap(0.0, True) @ plane, np.eye(3)[[0, 2, 1]] @ plane)
    assert np.allclose(phase_remap(2 * np.pi / 3, False) @ plane, np.eye(3)[[2, 0, 1]] @ plane)
    assert np.allclose(phase_remap(0.0, False) @ plane, plane)


@pytest.mark.parametrize("offset, flip", [(0.7, False), (2.0, True), (-2.9, True), (np.pi, False)])
def test_phase_remap_of_the_canonical_rendering_is_the_rendering_of_the_moved_phase(offset: float,
                                                                                     flip: bool) -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(-np.pi, np.pi, (32, 32))
    valid = rng.random((32, 32)) > 0.2
    moved = _remapped(_canonical(values, valid), phase_remap(offset, flip))
    expected = _canonical((-values if flip else values) + offset, valid)
    assert np.abs(moved - expected).max() <= 1.5  # the renderings' 8-bit rounding, twice
    assert np.allclose(moved[~valid], 128, atol=1)  # no data stays neutral grey


def test_augmenter_moves_normalised_pixels_and_captions_together() -> None:
    import torch

    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    augment = Augmenter(mean, std)
    rng = np.random.default_rng(3)
    values = rng.uniform(-np.pi, np.pi, (2, 16, 16))
    values[:, :4, :4] = 0.0  # a mark in the top-left corner, to follow
    rgb = np.stack([_canonical(v) for v in values])
    pixels = (torch.tensor(rgb / 255, dtype=torch.float32).permute(0, 3, 1, 2)
              - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    caption = "A mogi-type deformation pattern of high intensity can be detected on the top-left side of the image."
    out, captions = augment(pixels, [caption, caption], np.random.default_rng(1))
    draws = np.random.default_rng(1)
    for image, values_i, written in zip(out, values, captions):
        transform = TRANSFORMS[int(draws.integers(len(TRANSFORMS)))]
        offset, flip = float(draws.uniform(0, 2 * np.pi)), bool(draws.integers(2))
        expected = transform.apply(_canonical((-values_i if flip else values_i) + offset))
        back = (image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)).permute(1, 2, 0) * 255
        assert np.abs(back.numpy() - expected).max() <= 2
        assert written == rewrite_caption(caption, transform)
        assert sorted(sides_named(written)) == sorted(transform.side(side) for side in sides_named(caption))
