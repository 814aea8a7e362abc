"""A synthetic LiCSAR drop: whole frames laid out as LiCSAR publishes them, with their truth.

``write_drop`` writes whole frames (``.geo.diff.png`` drawn as LiCSAR draws it: the phase on a
grid three times finer, ``pha.cpt``, shrunk to the preview and bit-reduced to a palette PNG with
transparent no data; a slanted swath's empty corners and, in some frames, masked water; with
``.geo.cc.png`` and the GeoTIFF siblings ``.geo.diff_pha.tif`` and ``.geo.cc.tif``; paths from
``licsar.product_path``) with deformation near a volcano in every other frame, plus
``synth-truth.jsonl`` saying which
interferograms deform, in which tiles, and near which volcano. Each frame is georeferenced
around a real volcano of the GVP catalogue (WGS84, LiCSAR's 0.001° pixels scaled as its 30%
preview), so its tiles get real bounds and a real nearest volcano; the GeoTIFFs are written
at the preview's size to keep drops small (the grid check accepts any common extent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from ..geo import COHERENCE_TIF, PHASE_TIF, grid_around, write_raster
from ..imaging import tile
from ..licsar import COHERENCE_PNG, DIFF_SUFFIX, pair_name, product_path
from ..volcanoes import default_catalogue
from .patches import INTENSITY_FRINGES, PATCH, REPEATS, output_dir, pixel_source, child_rng, deformation_mask
from .physics import ACTIVITY_TYPES, FRINGE, WAVELENGTH, fractal_field, los_field, phase_noise_sigma, scaled, topography
from ..phase import PHA
from .render import PREVIEW_SCALE, png8, preview, write_coherence_png, write_palette_png

FRAME_SIZE = (1200, 1000)  # width, height in pixels
TRUTH_FILE = "synth-truth.jsonl"  # in the drop: one SynthInterferogram.to_dict() per line
PREVIEW_STEP = 0.001 / 0.3  # degrees per preview pixel: LiCSAR's 0.001° grid shown at 30%


@dataclass(frozen=True)
class SynthInterferogram:
    """One written interferogram and the truth a detector should find in it."""

    key: str
    frame: str
    primary: date
    secondary: date
    diff_png: Path
    coherence_png: Path
    deformation: bool
    activity_type: str | None
    intensity: str | None
    volcano: tuple[int, int]  # x, y pixel
    tiles: tuple[int, ...]  # indices of the tiles (imaging.tile order) holding deformation
    low_coherence: bool
    volcano_name: str = ""  # the catalogue volcano the frame is placed around

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key, "frame": self.frame, "primary": f"{self.primary:%Y%m%d}",
            "secondary": f"{self.secondary:%Y%m%d}", "diff_png": str(self.diff_png),
            "deformation": self.deformation, "activity_type": self.activity_type, "intensity": self.intensity,
            "volcano": list(self.volcano), "tiles": list(self.tiles), "low_coherence": self.low_coherence,
            "volcano_name": self.volcano_name,
        }


@dataclass(frozen=True)
class SynthFrame:
    frame: str
    deforming: bool
    interferograms: tuple[SynthInterferogram, ...]


def frame_id(rng: np.random.Generator, direction: str) -> str:
    track, first, second = int(rng.integers(1, 176)), int(rng.integers(0, 100000)), int(rng.integers(0, 1000000))
    return f"{track:03d}{direction}_{first:05d}_{second:06d}"


def deforming_tiles(mask: np.ndarray, valid: np.ndarray, tile_size: int, tile_stride: int,
                    min_pixels: int = 50) -> tuple[int, ...]:
    """Indices of the tiles (``imaging.tile`` order and boxes over the ``valid`` swath, as the
    daemon lays them) with deformation in them."""
    tiles = tile(np.zeros(mask.shape + (1,), dtype=np.uint8), tile_size, tile_stride, valid)
    return tuple(t.index for t in tiles if mask[t.box[1]:t.box[3], t.box[0]:t.box[2]].sum() >= min_pixels)


WATER_RATE = 0.3  # frames with a masked sea or lake
WATER_CLEARANCE = 0.3  # water stays this share of the frame's shorter side away from the volcano


def _frame_phase(rng: np.random.Generator, direction: str, shape: tuple[int, int], volcano: tuple[int, int],
                 activity_type: str | None, intensity: str | None, low_coherence: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unwrapped phase without noise, coherence, no-data and deformation mask of one whole frame."""
    height, width = shape
    deformation = np.zeros(shape)
    if activity_type is not None:
        x, y = np.array(volcano) + rng.normal(0, 10, 2)
        source = pixel_source(rng, activity_type, x, y, height)
        los = los_field([source], direction, shape, stride=4)
        deformation = los / max(np.abs(los).max(), 1e-12) * rng.uniform(*INTENSITY_FRINGES[intensity]) * FRINGE
    relief = topography(rng, shape, volcano)
    # Frame-wide spans of 2-5 fringes leave each 224 px tile the 0.1-2 fringes of atmosphere
    # a training patch has; at 0.5-1.5 the tiles were flatter than anything the model saw.
    delay = scaled(relief, rng.uniform(2.0, 5.0)) + scaled(fractal_field(rng, shape, rng.uniform(3.0, 3.6)),
                                                            rng.uniform(2.0, 5.0))
    coherence = np.clip(rng.uniform(0.55, 0.85) - 0.3 * fractal_field(rng, shape, 3.0), 0.3, 1.0)
    if low_coherence:
        coherence = rng.uniform(0.05, 0.15) + 0.05 * fractal_field(rng, shape, 3.0)
    phase = 4 * np.pi / WAVELENGTH * (deformation + delay)
    # A geocoded swath is slanted: its corners outside the footprint carry no data.
    yy, xx = np.mgrid[0:height, 0:width]
    nodata = (xx + 0.2 * width) < (0.25 * yy) + 0.05 * width
    nodata |= (width - xx + 0.2 * width) < (0.25 * (height - yy)) + 0.05 * width
    # LiCSAR masks water: in some frames a smooth coastline-shaped sea or lake, kept off the volcano.
    if rng.random() < WATER_RATE:
        coast = fractal_field(rng, shape, rng.uniform(4.0, 5.0)) + np.linspace(-1, 1, width)[None, :] * rng.choice([-1, 1])
        water = coast > np.quantile(coast, 1 - rng.uniform(0.08, 0.25))
        nodata |= water & (np.hypot(xx - volcano[0], yy - volcano[1]) > WATER_CLEARANCE * min(shape))
    return phase, coherence, nodata, deformation_mask(deformation)


def _preview_pixels(rng: np.random.Generator, phase: np.ndarray, coherence: np.ndarray,
                    nodata: np.ndarray) -> np.ndarray:
    """The ``.geo.diff.png`` pixels as LiCSAR makes them: the phase (with its decorrelation noise)
    on a grid ``PREVIEW_SCALE`` times finer, drawn with pha.cpt, shrunk to the preview (where
    decorrelated ground averages to the grey-pink that is on no colour table) and bit-reduced."""
    fine = np.repeat(np.repeat(phase, PREVIEW_SCALE, axis=0), PREVIEW_SCALE, axis=1)
    sigma = np.repeat(np.repeat(phase_noise_sigma(coherence), PREVIEW_SCALE, axis=0), PREVIEW_SCALE, axis=1)
    fine = fine + rng.standard_normal(fine.shape) * sigma
    valid = ~np.repeat(np.repeat(nodata, PREVIEW_SCALE, axis=0), PREVIEW_SCALE, axis=1)
    rgb, _ = preview(fine, valid, PHA, factor=PREVIEW_SCALE)
    return png8(rgb, nodata)


def _write_frame(drop: Path, number: int, seed: int, size: tuple[int, int], volcano: tuple[int, int], pairs: int,
                 tiling: tuple[int, int], advance: Callable[[], None] | None) -> SynthFrame:
    rng = child_rng(seed, number)
    direction = "AD"[number // 2 % 2]
    name = frame_id(rng, direction)
    catalogue = default_catalogue()
    # A generator of its own, so placing the frame leaves the phase drawn for a seed unchanged.
    place = catalogue.volcanoes[int(np.random.default_rng((seed, number, 1)).integers(0, len(catalogue)))]
    grid = grid_around(place.latitude, place.longitude, size[0], size[1], volcano[0], volcano[1], PREVIEW_STEP)
    deforming = number % 2 == 0
    activity_type = str(rng.choice(ACTIVITY_TYPES)) if deforming else None
    day = date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 5 * 365)))
    interferograms = []
    for pair in range(pairs):
        secondary = day + timedelta(days=int(rng.choice(REPEATS)))
        intensity = str(rng.choice(list(INTENSITY_FRINGES))) if deforming else None
        low_coherence = number % 4 == 3 and pair == pairs - 1
        phase, coherence, nodata, mask = _frame_phase(rng, direction, size[::-1], volcano, activity_type, intensity,
                                                      low_coherence)
        pixels = _preview_pixels(rng, phase, coherence, nodata)
        # The GeoTIFF phase carries decorrelation noise at its own (here: the preview's) grid.
        phase = phase + rng.standard_normal(phase.shape) * phase_noise_sigma(coherence)
        diff_png = product_path(drop, name, pair_name(day, secondary), DIFF_SUFFIX)
        coherence_png = product_path(drop, name, pair_name(day, secondary), COHERENCE_PNG)
        # The siblings land first so a watcher that sees the diff PNG also finds them.
        write_coherence_png(coherence_png, coherence, nodata)
        wrapped = np.angle(np.exp(1j * phase)).astype(np.float32)
        wrapped[(wrapped == 0) | nodata] = np.nan  # exact 0 means no data in LiCSAR's GeoTIFFs
        write_raster(product_path(drop, name, pair_name(day, secondary), PHASE_TIF), wrapped, grid)
        write_raster(product_path(drop, name, pair_name(day, secondary), COHERENCE_TIF),
                     np.where(nodata, 0, np.clip(np.round(coherence * 255), 1, 255)).astype(np.uint8), grid)
        write_palette_png(diff_png, pixels, nodata)
        tiles = deforming_tiles(mask & ~nodata, ~nodata, *tiling) if deforming else ()
        interferograms.append(SynthInterferogram(f"{name}/{pair_name(day, secondary)}", name, day, secondary, diff_png, coherence_png,
                                                 deforming, activity_type, intensity, volcano, tiles, low_coherence,
                                                 place.name))
        day = secondary
        if advance is not None:
            advance()
    return SynthFrame(name, deforming, tuple(interferograms))


def write_drop(drop: Path, frames: int, seed: int, *, size: tuple[int, int] = FRAME_SIZE,
               volcano: tuple[int, int] | None = None, pairs: int = 3, tile_size: int = PATCH,
               tile_stride: int = PATCH, advance: Callable[[], None] | None = None) -> list[SynthFrame]:
    """Write ``frames`` LiCSAR frames (``pairs`` consecutive interferograms each) under ``drop``.

    ``size`` is (width, height). Frames alternate ascending/descending in pairs;
    even-numbered frames deform near ``volcano`` (x, y px; default the centre) in every
    pair, odd ones do not; every fourth frame's last pair is low-coherence. Each
    interferogram gets a ``.geo.cc.png`` sibling and a line in ``drop/synth-truth.jsonl``
    whose ``tiles`` follow ``imaging.tile(rgb, tile_size, tile_stride)``. Frame ``k``
    depends only on the seed and ``k``.
    """
    volcano = volcano or (size[0] // 2, size[1] // 2)
    with output_dir(drop) as drop:
        written = [_write_frame(drop, number, seed, size, volcano, pairs, (tile_size, tile_stride), advance)
                   for number in range(frames)]
        lines = [json.dumps(item.to_dict()) for frame in written for item in frame.interferograms]
        (drop / TRUTH_FILE).write_text("".join(line + "\n" for line in lines))
    return written


def read_truth(drop: Path) -> list[dict]:
    """The drop's truth, one ``SynthInterferogram.to_dict()`` per interferogram, in writing order."""
    return [json.loads(line) for line in (Path(drop) / TRUTH_FILE).read_text(encoding="utf-8").splitlines()]
