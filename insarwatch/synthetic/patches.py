"""Hephaestus-style labelled patches: what is generated, how it is drawn and how it is labelled.

``write_dataset`` writes 224x224 patches with annotation JSON whose labels say what was
generated: the segmentation polygon surrounds where the LOS deformation exceeds half a
fringe, the intensity is the fringe count (low 1.2-2.2, medium 3-5, high 6-15), the
caption follows the experts' grammar and phrasing (``captions.py``), and about one sample in
ten carries a defect (colour bar, no-data, low coherence, orbital or glacier fringes,
processing error, both atmospheres, crowded or unidentified deformation) with its flag
set, then 8% of the rest are RGBA, so every curation filter has work. Patches look like
LiCSAR's: the phase is made on a grid three times finer than the patch, with random phase
over fractal-edged decorrelated ground, masked water and empty swath corners, then drawn as
a LiCSAR preview (``pha``/``phaold`` tables, shrunk in colour, 3-bit reduced) or as
grey-level phase; quiet patches often carry concentric stratified fringes on a volcanic
edifice or sinuous ones along rugged relief, the hard negatives; RGBA patches are a
rainbow over a SAR amplitude, as LiCSAR's older products are. Everything is deterministic for a seed, and sample ``i`` draws
from its own child seed so it does not depend on how many are made.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..errors import InputError, InsarwatchError
from ..phase import GREY, PHA, PHAOLD, ColourTable
from .captions import (
    FLAG_SENTENCES,
    LOW_COHERENCE_NOISE,
    NO_DEFORMATION,
    SIDES,
    STRATIFICATION,
    STRATIFIED_AND_TURBULENT,
    TURBULENT_AROUND,
    deformation_sentence,
    location_phrase,
    sides_phrase,
)
from .physics import (
    ACTIVITY_TYPES,
    FRINGE,
    PIXEL,
    WAVELENGTH,
    Source,
    draw_source,
    fractal_field,
    los_field,
    phase_noise_sigma,
    scaled,
    topography,
)
from .render import (PREVIEW_SCALE, colour_bar, grey_levels, png8, preview, rainbow_on_amplitude, shrink_phase,
                     write_palette_png, write_rgba_png)

INTENSITY_FRINGES = {"Low": (1.2, 2.2), "Medium": (3.0, 5.0), "High": (6.0, 15.0)}
PATCH = 224


# --------------------------------------------------------------------------- labels

def deformation_mask(los: np.ndarray) -> np.ndarray:
    """Where the deformation moves the ground by more than half a fringe along the LOS."""
    return np.abs(los) >= FRINGE / 2


def mask_polygon(mask: np.ndarray) -> list[float]:
    """Convex hull of the mask pixels as a flat [x1, y1, ...] list (their bounding box when
    the hull is degenerate: a line or a single pixel); empty only for an empty mask."""
    points = np.argwhere(mask & ~ndimage.binary_erosion(mask))[:, ::-1].astype(float)
    if not len(points):
        return []
    corners = np.concatenate([points + offset for offset in ((0, 0), (1, 0), (0, 1), (1, 1))])
    try:
        vertices = corners[ConvexHull(corners).vertices]
    except QhullError:
        (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
        vertices = np.array([(left, top), (right, top), (right, bottom), (left, bottom)])
    return [float(value) for value in vertices.ravel()]


def polygon_mask(polygons: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise flat [x1, y1, ...] polygons (segmentation_mask) to a boolean mask."""
    canvas = Image.new("L", shape[::-1], 0)
    for polygon in polygons:
        if len(polygon) >= 6:
            ImageDraw.Draw(canvas).polygon(polygon, fill=1)
    return np.asarray(canvas).astype(bool)



# --------------------------------------------------------------------------- patches

DEFECTS = ("none", "colour_bar", "no_info", "corrupted", "low_coherence", "orbital", "atmosphere_both",
           "glacier", "processing_error", "crowd", "unidentified")
# Rates of samples every curation filter must remove (about 10% in all; crowd/unidentified
# only for deforming ones), then RGBA for 8% of the otherwise clean ones (the paper's 53/634).
_DEFECT_P = (0.89, 0.02, 0.015, 0.01, 0.015, 0.01, 0.01, 0.005, 0.005, 0.01, 0.01)
RGBA_RATE = 0.08
# Hephaestus is 9 % deforming; curation balances the classes, so more than half the patches
# quiet gives it a choice of hard negatives without making most of them.
DEFORMING_RATE = 0.4
_TYPE_P = (0.22, 0.26, 0.18, 0.17, 0.17)
_INTENSITY_P = (0.4, 0.35, 0.25)
_ATMOSPHERE_P = (0.3, 0.25, 0.45)
# The renderings of real interferograms: LiCSAR's current and older tables and grey-level phase.
RENDERINGS = {"pha": PHA, "phaold": PHAOLD, "grey": GREY}
_RENDERING_P = (0.6, 0.12, 0.28)
REPEATS = (6, 12, 12, 24)  # Sentinel-1 temporal baselines, days
FRAMES = ("124D_04854_171313", "087A_05281_131313", "014A_04939_131313", "160D_05102_081213",
          "044A_05148_131213", "131D_05094_111111", "072A_04902_080808", "175D_05265_101010")
# Decorrelated ground (vegetation, steep slopes): share of patches with some, and with almost
# nothing else (most real Sentinel-1 quiet patches: median coherent share 2 %, benchmarks/README.md).
PATCHY_RATE, INCOHERENT_RATE = 0.55, 0.15
WATER_RATE, SWATH_EDGE_RATE = 0.12, 0.1
# LiCSAR's 100 m grid is already multilooked (about 20 x 4 looks): coherent ground is smooth on it.
LICSAR_LOOKS = 20


@dataclass(frozen=True)
class PatchSpec:
    """What one patch shows, drawn before any pixel: the labels the annotation will carry and
    the rendering it is written in (``pha``, ``phaold``, ``grey`` or ``rgba``)."""

    deformation: bool
    activity_types: tuple[str, ...]  # physical source per pattern (two when crowded)
    intensities: tuple[str, ...]
    atmosphere: int  # 0 none, 1 stratification, 2 turbulence, 3 both
    defect: str
    rendering: str
    direction: str  # "A" | "D"

    @property
    def rgba(self) -> bool:
        return self.rendering == "rgba"


@dataclass(frozen=True)
class SynthPatch:
    """A rendered patch: the pixels as written (RGB, no-data mask), the deformation's LOS field
    (metres, before atmosphere and noise) and the annotation dict (JSON fields)."""

    unique_id: int
    spec: PatchSpec
    rgb: np.ndarray = field(repr=False)
    nodata: np.ndarray = field(repr=False)
    los: np.ndarray = field(repr=False)
    annotation: dict = field(repr=False)


def child_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for item ``index`` of ``seed``: the same whatever the number of items."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_spec(rng: np.random.Generator) -> PatchSpec:
    """Draw the labels of one patch at the dataset's class, defect and atmosphere rates."""
    deforming = bool(rng.random() < DEFORMING_RATE)
    defect = str(rng.choice(DEFECTS, p=_DEFECT_P))
    if not deforming and defect in ("crowd", "unidentified"):
        defect = "none"
    rgba = defect == "none" and bool(rng.random() < RGBA_RATE)
    rendering = "rgba" if rgba else str(rng.choice(list(RENDERINGS), p=_RENDERING_P))
    atmosphere = 3 if defect == "atmosphere_both" else int(rng.choice(3, p=_ATMOSPHERE_P))
    patterns = (2 if defect == "crowd" else 1) if deforming else 0
    types = tuple(str(rng.choice(ACTIVITY_TYPES, p=_TYPE_P)) for _ in range(patterns))
    intensities = tuple(str(rng.choice(list(INTENSITY_FRINGES), p=_INTENSITY_P)) for _ in range(patterns))
    return PatchSpec(deforming, types, intensities, atmosphere, defect, rendering, str(rng.choice(["A", "D"])))


def pixel_source(rng: np.random.Generator, activity_type: str, x: float, y: float, height: int) -> Source:
    return draw_source(rng, activity_type, x * PIXEL, (height - y) * PIXEL)


def _deformation(rng: np.random.Generator, spec: PatchSpec, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Total LOS deformation (m) and one field per pattern, each scaled to its fringe count."""
    fields = []
    first = rng.uniform(0.15, 0.85, size=2) * size
    for pattern, (activity_type, intensity) in enumerate(zip(spec.activity_types, spec.intensities)):
        # A crowded second pattern sits well away from the first.
        away = rng.uniform(0.3, 0.45, size=2) * size * rng.choice([-1, 1], 2)
        x, y = first if pattern == 0 else (first + away) % size
        source = pixel_source(rng, activity_type, x, y, size)
        los = los_field([source], spec.direction, (size, size))
        sign = -1.0 if activity_type in ("Mogi", "Sill", "Spheroid") and rng.random() < 0.2 else 1.0
        peak = np.abs(los).max()
        fields.append(sign * los / max(peak, 1e-12) * rng.uniform(*INTENSITY_FRINGES[intensity]) * FRINGE)
    total = np.sum(fields, axis=0) if fields else np.zeros((size, size))
    return total, fields


def _edifice(rng: np.random.Generator, size: int) -> np.ndarray:
    """Metres: a steep volcanic cone inside the patch (its stratified delay draws concentric
    fringes that are not deformation: Hephaestus labels such Etna interferograms Non_Deformation)."""
    summit = rng.uniform(0.25, 0.75, 2) * size
    yy, xx = np.mgrid[0:size, 0:size]
    cone = np.clip(1 - np.hypot(xx - summit[0], yy - summit[1]) / (rng.uniform(0.2, 0.45) * size), 0, None)
    return cone ** rng.uniform(0.8, 1.6) + 0.15 * fractal_field(rng, (size, size), 3.3)


def _rugged(rng: np.random.Generator, size: int) -> np.ndarray:
    """Metres: rough mountain relief (ridges and valleys, no cone): its stratified delay draws
    sinuous fringes that follow the contours, dense on steep slopes — real quiet interferograms'
    commonest look-alike of deformation after the cone's rings."""
    return rng.uniform(1500, 3500) * fractal_field(rng, (size, size), rng.uniform(2.3, 2.9))


def _atmosphere(rng: np.random.Generator, spec: PatchSpec, size: int,
                deformation: np.ndarray) -> tuple[np.ndarray, str]:
    """Atmospheric LOS delay (m) and the sentence(s) an expert would write about it (real
    phrasing: the commonest sentences of the 19,919 Hephaestus captions)."""
    shape = (size, size)
    if spec.deformation:
        summit = np.unravel_index(np.argmax(np.abs(deformation)), shape)[::-1] + rng.normal(0, 8, 2)
        relief = topography(rng, shape, tuple(summit))
    else:
        relief = _edifice(rng, size) if rng.random() < 0.5 else _rugged(rng, size) if rng.random() < 0.4 else \
            topography(rng, shape, tuple(rng.uniform(0, 1, 2) * size))
    turbulence = fractal_field(rng, shape, rng.uniform(2.6, 3.4))
    # Weak low-intensity deformation stays the strongest signal an expert sees.
    cap = 0.6 if "Low" in spec.intensities else 1.0
    if spec.atmosphere == 0:
        fringes = rng.uniform(0.1, 0.8)
        delay = scaled(0.5 * relief / relief.max() + turbulence, fringes * cap)
        return delay, f"The atmospheric impact is {'very low' if fringes < 0.35 else 'low'}."
    stratified = scaled(relief, rng.uniform(1.0, 2.0) * cap if spec.deformation else rng.uniform(1.5, 4.0))
    if spec.atmosphere == 1:
        return stratified + scaled(turbulence, rng.uniform(0.2, 0.8) * cap), STRATIFICATION
    if spec.deformation and rng.random() < 0.5:
        count = int(rng.integers(1, 4))
        sides = tuple(str(side) for side in rng.choice(SIDES, size=count, replace=False))
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        reach = {"top": 1 - yy, "bottom": yy, "left": 1 - xx, "right": xx}
        envelope = np.clip(np.max([reach[side] for side in sides], axis=0) * 2 - 0.6, 0, 1)
        turbulent = scaled(turbulence * envelope, rng.uniform(1.0, 2.5) * cap)
        sentence = f"Turbulent mixing effect can be detected {sides_phrase(sides)}."
    else:
        turbulent, sentence = scaled(turbulence, rng.uniform(1.0, 3.0) * cap), TURBULENT_AROUND
    if spec.atmosphere == 2:
        return turbulent + scaled(relief, 0.3), sentence
    return turbulent + stratified, STRATIFIED_AND_TURBULENT


# The annotation flags each defect sets (is_crowd for two patterns in one patch).
DEFECT_FLAGS = {
    "colour_bar": ("image_artifacts",), "no_info": ("no_info",), "corrupted": ("corrupted", "no_info"),
    "low_coherence": ("low_coherence",), "orbital": ("orbital_fringes",), "glacier": ("glacier_fringes",),
    "processing_error": ("processing_error",), "crowd": ("is_crowd",),
}
BINARY_FLAGS = ("corrupted", "processing_error", "glacier_fringes", "orbital_fringes", "low_coherence", "no_info",
                "image_artifacts", "is_crowd")


def _extra_phase(rng: np.random.Generator, spec: PatchSpec, size: int) -> np.ndarray:
    """What an orbital or glacier defect adds to the phase before wrapping."""
    yy, xx = np.mgrid[0:size, 0:size]
    if spec.defect == "orbital":
        angle = rng.uniform(0, 2 * np.pi)
        return 2 * np.pi * rng.uniform(3, 6) / size * (xx * np.cos(angle) + yy * np.sin(angle))
    if spec.defect == "glacier":
        centre = rng.uniform(0.2, 0.8, 2) * size
        blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * (size * 0.1) ** 2))
        return 2 * np.pi * 4 * blob * fractal_field(rng, (size, size), 2.0)
    return np.zeros((size, size))


def _threshold(field: np.ndarray, share: float) -> np.ndarray:
    return field > np.quantile(field, 1 - share)


def _incoherent(rng: np.random.Generator, spec: PatchSpec, size: int, keep: np.ndarray) -> np.ndarray:
    """Decorrelated ground: fractal-edged regions of random phase (none, patches, or nearly all),
    never over the deformation a label promises (``keep``)."""
    if spec.defect == "low_coherence" or (not spec.deformation and rng.random() < INCOHERENT_RATE):
        return np.ones((size, size), dtype=bool) if spec.defect == "low_coherence" else \
            _threshold(fractal_field(rng, (size, size), rng.uniform(2.0, 3.0)), rng.uniform(0.85, 1.0)) & ~keep
    if rng.random() < PATCHY_RATE:
        return _threshold(fractal_field(rng, (size, size), rng.uniform(2.2, 3.2)), rng.uniform(0.05, 0.6)) & ~keep
    return np.zeros((size, size), dtype=bool)


def _nodata(rng: np.random.Generator, size: int, keep: np.ndarray) -> np.ndarray:
    """Masked water (smooth coastline-shaped regions) and a geocoded swath's empty corner."""
    nodata = np.zeros((size, size), dtype=bool)
    if rng.random() < WATER_RATE:
        nodata |= _threshold(fractal_field(rng, (size, size), rng.uniform(4.0, 5.0)), rng.uniform(0.1, 0.4))
    if rng.random() < SWATH_EDGE_RATE:
        yy, xx = np.mgrid[0:size, 0:size] / size
        corner = rng.integers(0, 4)
        along = (xx if corner % 2 else 1 - xx) * rng.uniform(2.5, 5) + (yy if corner // 2 else 1 - yy)
        nodata |= along < rng.uniform(0.3, 1.2)
    return nodata & ~keep


def _grid_phase(rng: np.random.Generator, spec: PatchSpec, smooth: np.ndarray,
                keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The LiCSAR grid (``PREVIEW_SCALE`` times finer than the patch): smooth phase, noise from
    coherence, random phase where decorrelated; and where it has data."""
    size = smooth.shape[0]
    scale = PREVIEW_SCALE
    incoherent = np.repeat(np.repeat(_incoherent(rng, spec, size, keep), scale, 0), scale, 1)
    valid = ~np.repeat(np.repeat(_nodata(rng, size, keep), scale, 0), scale, 1)
    coherence = ndimage.zoom(np.clip(rng.uniform(0.55, 0.95) - 0.3 * fractal_field(rng, (size, size), 3.0),
                                     0.3, 1.0), scale, order=1)
    fine = ndimage.zoom(smooth, scale, order=1)
    fine = fine + rng.standard_normal(fine.shape) * phase_noise_sigma(coherence, looks=LICSAR_LOOKS)
    fine = np.where(incoherent, rng.uniform(-np.pi, np.pi, fine.shape), fine)
    return fine, valid


def _draw(rng: np.random.Generator, spec: PatchSpec, grid: np.ndarray,
          valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, ColourTable]:
    """The patch as its rendering shows it: LiCSAR previews shrink colours, the others phase."""
    if spec.rendering in ("pha", "phaold"):
        table = RENDERINGS[spec.rendering]
        rgb, nodata = preview(grid, valid, table)
        return rgb, nodata, table
    phase, nodata = shrink_phase(grid, valid)
    if spec.rendering == "grey":
        return grey_levels(phase, nodata), nodata, GREY
    return rainbow_on_amplitude(phase, nodata, _amplitude(rng, phase.shape[0])), nodata, GREY


def _amplitude(rng: np.random.Generator, size: int) -> np.ndarray:
    """A SAR amplitude image (0-1): fractal relief lit from one side (slopes facing the radar are
    bright) times multilooked speckle (gamma, 4 looks)."""
    relief = fractal_field(rng, (size, size), rng.uniform(2.6, 3.4)) * rng.uniform(20, 60)
    slope_y, slope_x = np.gradient(relief)
    azimuth = rng.uniform(0, 2 * np.pi)
    shade = np.clip(0.6 + slope_x * np.cos(azimuth) + slope_y * np.sin(azimuth), 0.05, None)
    amplitude = shade * rng.gamma(4.0, 0.25, (size, size))
    return np.clip(0.3 + 0.7 * amplitude / np.quantile(amplitude, 0.9), 0, 1)


def _damage(rng: np.random.Generator, defect: str, rgb: np.ndarray, nodata: np.ndarray, table: ColourTable) -> None:
    """Paint the pixel defects: processing-error block, no-data areas, garbage rows, legend."""
    size = rgb.shape[0]
    if defect == "processing_error":
        top = int(rng.integers(0, size // 2))
        rgb[top:top + size // 3] = np.roll(rgb[top:top + size // 3], size // 5, axis=1)
    elif defect == "no_info":
        yy, xx = np.mgrid[0:size, 0:size]
        angle = rng.uniform(0, 2 * np.pi)
        along = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)
        nodata |= along > np.quantile(along, 1 - rng.uniform(0.35, 0.6))
    elif defect == "corrupted":
        for row in rng.permutation(size // 8)[: size // 20] * 8:
            rgb[row:row + 8] = table.draw(rng.uniform(-np.pi, np.pi, (8, size)))
        nodata[:, : int(size * rng.uniform(0.3, 0.5))] = True
    elif defect == "colour_bar":
        colour_bar(rgb, table, rng)
    rgb[nodata] = 0


def render_patch(unique_id: int, spec: PatchSpec, rng: np.random.Generator, size: int = PATCH) -> SynthPatch:
    """Generate the phase for ``spec``, draw it as its rendering does and write its annotation."""
    deformation, patterns = _deformation(rng, spec, size)
    delay, atmosphere_sentence = _atmosphere(rng, spec, size, deformation)
    smooth = 4 * np.pi / WAVELENGTH * (deformation + delay) + _extra_phase(rng, spec, size)
    grid, valid = _grid_phase(rng, spec, smooth, ndimage.binary_dilation(deformation_mask(deformation), iterations=4))
    rgb, nodata, table = _draw(rng, spec, grid, valid)
    _damage(rng, spec.defect, rgb, nodata, table)
    if spec.rendering in ("pha", "phaold"):
        rgb = png8(rgb, nodata)
    flags = {flag: int(flag in DEFECT_FLAGS.get(spec.defect, ())) for flag in BINARY_FLAGS}

    polygons, sentences = [], [] if spec.atmosphere == 0 else [atmosphere_sentence]
    labelled = ("Unidentified",) if spec.defect == "unidentified" else spec.activity_types
    for activity_type, intensity, los in zip(labelled, spec.intensities, patterns):
        polygons.append(mask_polygon(deformation_mask(los)))
        # The location is read off the annotated polygon, as anyone checking the label would.
        location = location_phrase(polygon_mask([polygons[-1]], (size, size)))
        sentences.append(deformation_sentence(activity_type, intensity, location, rng))
    if flags["low_coherence"]:
        sentences.append(LOW_COHERENCE_NOISE)
    if not spec.deformation:
        sentences.append(NO_DEFORMATION)
    elif spec.atmosphere == 0:
        sentences.append(atmosphere_sentence)
    sentences.extend(FLAG_SENTENCES[flag] for flag in FLAG_SENTENCES if flags[flag] and flag != "low_coherence")

    primary = date(2018, 1, 1) + timedelta(days=int(rng.integers(0, 6 * 365)))
    secondary = primary + timedelta(days=int(rng.choice(REPEATS)))
    deflating = spec.deformation and deformation.flat[np.argmax(np.abs(deformation))] < 0
    annotation = {
        "uniqueID": unique_id,
        "frameID": FRAMES[int(rng.integers(len(FRAMES)))],
        "primary_date": f"{primary:%Y%m%d}",
        "secondary_date": f"{secondary:%Y%m%d}",
        **{flag: flags[flag] for flag in ("corrupted", "processing_error", "glacier_fringes", "orbital_fringes")},
        "atmospheric_fringes": spec.atmosphere,
        **{flag: flags[flag] for flag in ("low_coherence", "no_info", "image_artifacts")},
        "label": ["Deformation"] if spec.deformation else ["Non_Deformation"],
        "activity_type": list(labelled),
        "intensity_level": list(spec.intensities),
        "phase": ("Rebound" if deflating else "Unrest") if spec.deformation else "Rest",
        # At least the curation's deforming_min_confidence (0.8): only the flags make a synthetic patch unclean.
        "confidence": round(float(rng.uniform(0.8, 1.0)), 2) if spec.deformation else 1.0,
        "segmentation_mask": polygons,
        "is_crowd": flags["is_crowd"],
        "caption": " ".join(sentences),
    }
    return SynthPatch(unique_id, spec, rgb, nodata, deformation, annotation)


def make_patch(seed: int, index: int, size: int = PATCH) -> SynthPatch:
    """Sample ``index`` of the dataset for ``seed`` (independent of how many are made)."""
    rng = child_rng(seed, index)
    return render_patch(index, draw_spec(rng), rng, size)


@contextmanager
def output_dir(root: Path) -> Iterator[Path]:
    """Create ``root``; a root that cannot be a directory is bad input, a write that fails
    later (disk full) a runtime failure, each one line naming the file."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(root, f"cannot create the output directory ({exc.strerror or exc})") from None
    try:
        yield root
    except OSError as exc:
        raise InsarwatchError(f"{exc.filename or root}: {exc.strerror or exc}") from None


def write_patch(root: Path, patch: SynthPatch) -> Path:
    image = root / "images" / f"{patch.unique_id}.png"
    (write_rgba_png if patch.spec.rgba else write_palette_png)(image, patch.rgb, patch.nodata)
    annotation = root / "annotations" / f"{patch.unique_id}.json"
    annotation.parent.mkdir(parents=True, exist_ok=True)
    annotation.write_text(json.dumps(patch.annotation, indent=1) + "\n")
    return image


def write_dataset(root: Path, n: int, seed: int, size: int = PATCH,
                  advance: Callable[[], None] | None = None) -> dict[str, int]:
    """Write ``n`` Hephaestus-style patches under ``root``; returns counts by outcome."""
    counts = {"deforming": 0, "non_deforming": 0, "rgba": 0, "flagged": 0}
    with output_dir(root) as root:
        for index in range(n):
            patch = make_patch(seed, index, size)
            write_patch(root, patch)
            counts["deforming" if patch.spec.deformation else "non_deforming"] += 1
            counts["rgba"] += patch.spec.rgba
            counts["flagged"] += patch.spec.defect != "none"
            if advance is not None:
                advance()
    return counts
