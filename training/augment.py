"""Physically valid augmentation: the eight flips and rotations of a tile, captions rewritten.

A flip or a rotation of an interferogram is another interferogram that could have been
observed, but its caption's locations move with it: "on the top-left side" under a
quarter turn clockwise is "on the top-right side". The Hephaestus experts name places
with four direction words and their variants (``top``, ``upper``, ``topmost``,
``downside``, ``leftmost``, typos such as ``rigth``), alone or in compounds ("top-left",
"topost left", "central-right"); ``rewrite_caption`` replaces each by the word its
direction becomes, keeps every other word as it was (a word whose direction does not
change is kept letter for letter, typos included), and puts a two-direction compound back
in the experts' vertical-first order ("right-top" → "top-right"). "lower" before
"intensity" is an intensity, not a place. ``Transform.apply`` moves the pixels the same way
(numpy views, so the caption and the image cannot disagree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SIDES = ("top", "right", "bottom", "left")  # clockwise, so a quarter turn is one step
VERTICAL = {"top", "bottom"}

# Every direction word the real captions use (19,919 annotations), and the side it names.
WORDS = {
    "top": "top", "topmost": "top", "topost": "top", "upper": "top", "up": "top",
    "bottom": "bottom", "botton": "bottom", "botto": "bottom", "down": "bottom", "lower": "bottom",
    "downside": "bottom",
    "left": "left", "leftmost": "left", "lef": "left", "lelf": "left",
    "right": "right", "rightmost": "right", "rigth": "right", "rihgt": "right", "rigtht": "right", "ride": "right",
}
# The word written for a side that moved: "most" forms stay "most" forms where experts use them.
_PLAIN = {side: side for side in SIDES}
_MOST = {"top": "topmost", "bottom": "bottom", "left": "leftmost", "right": "rightmost"}
_MOST_WORDS = {"topmost", "topost", "leftmost", "rightmost"}

_WORD = re.compile(r"[A-Za-z]+")
_ANY_SIDE = "|".join(sorted(WORDS, key=len, reverse=True))
_COMPOUND = re.compile(rf"\b({_ANY_SIDE})([- ])({_ANY_SIDE})\b", re.IGNORECASE)


@dataclass(frozen=True)
class Transform:
    """One of the eight symmetries of a square tile: ``mirror`` (left-right) first, then
    ``quarter_turns`` quarter turns clockwise."""

    mirror: bool
    quarter_turns: int

    @property
    def name(self) -> str:
        turn = f"rot{90 * self.quarter_turns}" if self.quarter_turns else ""
        return "+".join(filter(None, ("mirror" if self.mirror else "", turn))) or "identity"

    def side(self, side: str) -> str:
        """Where a place on ``side`` of the tile ends up."""
        if self.mirror and side in ("left", "right"):
            side = "right" if side == "left" else "left"
        return SIDES[(SIDES.index(side) + self.quarter_turns) % 4]

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The tile (H x W [x C]) transformed the same way as its caption."""
        out = pixels[:, ::-1] if self.mirror else pixels
        return np.rot90(out, k=-self.quarter_turns, axes=(0, 1))

    def inverse(self) -> Transform:
        if self.mirror:
            return self  # a mirror followed by turns is its own inverse
        return Transform(False, (4 - self.quarter_turns) % 4)


TRANSFORMS = tuple(Transform(mirror, turns) for mirror in (False, True) for turns in range(4))
IDENTITY = TRANSFORMS[0]


def _is_intensity(text: str, end: int) -> bool:
    return text[end:end + 10].lower() == " intensity"


def rewrite_caption(caption: str, transform: Transform) -> str:
    """``caption`` with every place it names moved by ``transform``."""
    if transform == IDENTITY:
        return caption

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        lower = word.lower()
        side = WORDS.get(lower)
        if side is None or (lower == "lower" and _is_intensity(caption, match.end())):
            return word
        moved = transform.side(side)
        if moved == side:
            return word
        if lower == "downside":
            new = f"{moved} side"
        else:
            new = (_MOST if lower in _MOST_WORDS else _PLAIN)[moved]
        return new.capitalize() if word[0].isupper() else new

    moved = _WORD.sub(replace, caption)
    return _COMPOUND.sub(_vertical_first, moved)


def _vertical_first(match: re.Match[str]) -> str:
    """"right-top" → "top-right": the order the experts write a corner in."""
    first, joiner, second = match.groups()
    one, two = WORDS.get(first.lower()), WORDS.get(second.lower())
    if one in ("left", "right") and two in VERTICAL:
        return f"{second}{joiner}{first}"
    return match.group(0)


def sides_named(caption: str) -> list[str]:
    """The sides a caption names, in order (what ``rewrite_caption`` moves)."""
    return [WORDS[m.group(0).lower()] for m in _WORD.finditer(caption)
            if m.group(0).lower() in WORDS
            and not (m.group(0).lower() == "lower" and _is_intensity(caption, m.end()))]
