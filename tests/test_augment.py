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
from training.augment import IDENTITY, TRANSFORMS, WORDS, Transform, rewrite_caption, sides_named

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
