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

A constant phase offset and a sign flip change nothing an expert would write: the canonical
rendering (``phase.render``: channel c is 127.5 + 127.5 cos(phase - 2 pi c / 3)) is linear in
the phasor, so both are one 3x3 matrix on the centred channels (``phase_remap``), exact for
averaged (resized) pixels too and leaving no-data grey grey. ``Augmenter`` draws one of each per
training sample and applies them to a batch of model inputs, caption rewritten.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

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


# --------------------------------------------------------------------------- phase offset and sign

# Rows (cos, sin) of the canonical rendering's channel angles 2 pi c / 3: centred channels u = A (cos, sin).
_CHANNELS = np.array([[math.cos(2 * math.pi * c / 3), math.sin(2 * math.pi * c / 3)] for c in range(3)])


def phase_remap(offset: float, flip: bool) -> np.ndarray:
    """The 3x3 matrix taking a canonical rendering's centred channels (u = (x - 127.5) / 127.5) of
    phase p to those of ``(-p if flip else p) + offset``. A^T A = 3/2 I, so (cos p, sin p) = 2/3 A^T u;
    a flip alone swaps channels 1 and 2 (cos(-p - 2 pi c / 3) = cos(p + 2 pi c / 3))."""
    rotate = np.array([[math.cos(offset), -math.sin(offset)], [math.sin(offset), math.cos(offset)]])
    mirror = np.diag([1.0, -1.0 if flip else 1.0])
    return 2 / 3 * _CHANNELS @ rotate @ mirror @ _CHANNELS.T


@dataclass(frozen=True)
class Augmenter:
    """Random flips/rotations (captions rewritten), phase offsets and sign flips for model inputs
    normalised as ``(x / 255 - mean) / std`` per channel (the image processor's ``mean``/``std``)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, pixels: torch.Tensor, captions: Sequence[str],
                 rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
        """``pixels`` (B, 3, H, W) and their captions, each sample moved by its own draw."""
        mean = torch.tensor(self.mean, dtype=pixels.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype).view(3, 1, 1)
        out, rewritten = [], []
        for image, caption in zip(pixels, captions, strict=True):
            transform = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
            remap = torch.tensor(phase_remap(float(rng.uniform(0, 2 * math.pi)), bool(rng.integers(2))),
                                 dtype=pixels.dtype)
            centred = 2 * (image * std + mean) - 1
            moved = torch.einsum("ij,jhw->ihw", remap, centred)
            if transform.mirror:
                moved = moved.flip(-1)
            moved = torch.rot90(moved, k=-transform.quarter_turns, dims=(1, 2))
            out.append(((moved + 1) / 2 - mean) / std)
            rewritten.append(rewrite_caption(caption, transform))
        return torch.stack(out), rewritten
