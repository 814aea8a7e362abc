"""How synthetic phase is drawn to files: the palette, the PNG conventions, the writers.

The phase colours are ``phase.SYNTHETIC``, the runtime's table, so the service reads them back. P-mode PNG with palette index 0 = no-data (0, 0, 0) and the PNG's transparency, indices
1..254 the cyclic phase palette (never pure black), 255 white for legend frames; RGBA
products in another colour scheme with alpha 0 = no-data; ``.geo.cc.png`` coherence as
8-bit grayscale round(coherence*255) with 0 = no data. Patches and drops are written by
the same functions, each file under a hidden name and then renamed, so a watcher never
sees half of one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..files import replacing
from ..phase import SYNTHETIC, cyclic_colours

NODATA = 0
WHITE = 255
PHASE_LEVELS = len(SYNTHETIC.colours)  # palette indices 1..254

PALETTE = np.zeros((256, 3), dtype=np.uint8)
PALETTE[1:1 + PHASE_LEVELS] = np.rint(SYNTHETIC.colours)
PALETTE[WHITE] = (255, 255, 255)
# RGBA products in Hephaestus use another colour scheme; a hue wheel stands in for it.
RGBA_PALETTE = cyclic_colours(np.array([(230, 40, 40), (230, 230, 40), (40, 230, 40), (40, 230, 230),
                                        (40, 40, 230), (230, 40, 230), (230, 40, 40)]), PHASE_LEVELS)


# --------------------------------------------------------------------------- rendering


def phase_to_index(phase: np.ndarray) -> np.ndarray:
    """Wrapped phase → palette index 1..254 (index 0 stays free for no-data)."""
    return (1 + SYNTHETIC.index(phase)).astype(np.uint8)


def index_to_phase(indices: np.ndarray) -> np.ndarray:
    """Palette index → phase at the level's centre; NaN for no-data and legend white."""
    phase = SYNTHETIC.centres[np.clip(indices.astype(int) - 1, 0, PHASE_LEVELS - 1)]
    return np.where((indices >= 1) & (indices <= PHASE_LEVELS), phase, np.nan)


def add_colour_bar(indices: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a legend band (10-14 px, sweeping the palette, framed in white) along one edge."""
    edge = str(rng.choice(["top", "bottom", "left", "right"]))
    view = indices if edge in ("top", "bottom") else indices.T
    if edge in ("bottom", "right"):
        view = view[::-1]
    along = view.shape[1]
    length = int(along * rng.uniform(0.6, 0.9))
    start = int(rng.integers(0, along - length + 1))
    thickness = int(rng.integers(10, 15))
    view[: thickness + 4, start:start + length] = WHITE
    sweep = np.linspace(1, PHASE_LEVELS, length - 4).astype(np.uint8)
    view[2:thickness + 2, start + 2:start + length - 2] = sweep[None, :]


def _save(image: Image.Image, path: Path, **options: object) -> None:
    """Write atomically under a hidden name: a watcher never sees a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as partial:
        image.save(partial, format="PNG", **options)


def write_phase_png(path: Path, indices: np.ndarray, rgba: bool = False) -> None:
    """P mode with ``PALETTE`` and transparency 0, or RGBA in the other scheme (alpha 0 = no-data)."""
    if rgba:
        pixels = np.zeros(indices.shape + (4,), dtype=np.uint8)
        valid = (indices >= 1) & (indices <= PHASE_LEVELS)
        pixels[valid, :3] = RGBA_PALETTE[indices[valid] - 1]
        pixels[valid, 3] = 255
        _save(Image.fromarray(pixels, "RGBA"), path)
        return
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette(PALETTE.ravel().tolist())
    _save(image, path, transparency=NODATA)


def write_coherence_png(path: Path, coherence: np.ndarray, nodata: np.ndarray) -> None:
    """8-bit grayscale, value round(coherence*255) with 0 reserved for no-data."""
    values = np.clip(np.round(coherence * 255), 1, 255).astype(np.uint8)
    values[nodata] = 0
    _save(Image.fromarray(values, "L"), path)
