"""Synthetic data for day one: a LiCSAR-layout drop and Hephaestus-style labelled patches.

This module owns what is generated and how it is labelled, on top of the forward model in
``interferometry.py``. ``write_drop`` writes whole frames (``.geo.diff.png`` with a
``.geo.cc.png`` sibling) with deformation near a volcano in every other frame, plus
``synth-truth.jsonl`` saying which interferograms deform and in which 224 px tiles.
``write_dataset`` writes 224x224 patches with annotation JSON whose labels say what was
generated: the segmentation polygon surrounds where the LOS deformation exceeds half a
fringe, the intensity is the fringe count (low 1.2-2.2, medium 3-5, high 6-15), the
caption follows a small set of expert templates, and about one sample in ten carries a
defect (colour bar, no-data, low coherence, orbital or glacier fringes, processing error,
both atmospheres, crowded or unidentified deformation) with its flag set, then 8% of the
rest are RGBA, so every curation filter has work. Everything is deterministic for a seed,
and sample ``i`` draws from its own child seed so it does not depend on how many are made.
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

from .errors import InputError, InsarwatchError
from .interferometry import (
    ACTIVITY_TYPES,
    FRINGE,
    NODATA,
    PHASE_LEVELS,
    PIXEL,
    WAVELENGTH,
    Source,
    add_colour_bar,
    draw_source,
    fractal_field,
    los_field,
    phase_noise_sigma,
    phase_to_index,
    scaled,
    topography,
    write_coherence_png,
    write_phase_png,
)

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


# --------------------------------------------------------------------------- captions

_LOCATIONS = {
    (1, 1): "on the central side",
    (0, 1): "on the top side of the image",
    (2, 1): "at the bottom of the image",
    (1, 0): "on the left side of the image",
    (1, 2): "on the right side of the image",
    (0, 0): "on the top-left side of the image",
    (0, 2): "on the top-right side of the image",
    (2, 0): "on the bottom-left side of the image",
    (2, 2): "on the bottom-right side of the image",
}
SIDES = ("top", "right", "bottom", "left")
TURBULENT_AROUND = ("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles "
                    "of the atmosphere can be detected around the area.")
STRATIFICATION = "Vertical stratification caused by atmospheric delays can be detected in high altitude areas."
NO_DEFORMATION = "No deformation activity can be detected."
FLAG_SENTENCES = {
    "image_artifacts": "Image artifacts are detected on image.",
    "low_coherence": "Low coherence can be detected across the image.",
    "orbital_fringes": "Orbital fringes can be detected across the image.",
    "glacier_fringes": "Glacier fringes can be detected on the image.",
    "no_info": "Part of the image contains no information.",
    "processing_error": "Processing errors can be detected on the image.",
}


def polygon_mask(polygons: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise flat [x1, y1, ...] polygons (segmentation_mask) to a boolean mask."""
    canvas = Image.new("L", shape[::-1], 0)
    for polygon in polygons:
        if len(polygon) >= 6:
            ImageDraw.Draw(canvas).polygon(polygon, fill=1)
    return np.asarray(canvas).astype(bool)


def location_phrase(mask: np.ndarray) -> str:
    """Where the mask's centroid lies on a 3x3 grid of the patch, in the experts' words."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    cell = (min(2, int(rows.mean() * 3 // height)), min(2, int(cols.mean() * 3 // width)))
    return _LOCATIONS[cell]


def sides_phrase(sides: tuple[str, ...]) -> str:
    names = [side for side in SIDES if side in sides]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"on the {listed} side"


def deformation_sentence(activity_type: str, intensity: str, location: str) -> str:
    name = activity_type.lower()
    article = "An" if name[0] in "aeiou" else "A"
    return f"{article} {name}-type deformation pattern of {intensity.lower()} intensity can be detected {location}."


# --------------------------------------------------------------------------- patches

DEFECTS = ("none", "colour_bar", "no_info", "corrupted", "low_coherence", "orbital", "atmosphere_both",
           "glacier", "processing_error", "crowd", "unidentified")
# Rates of samples every curation filter must remove (about 10% in all; crowd/unidentified
# only for deforming ones), then RGBA for 8% of the otherwise clean ones (the paper's 53/634).
_DEFECT_P = (0.89, 0.02, 0.015, 0.01, 0.015, 0.01, 0.01, 0.005, 0.005, 0.01, 0.01)
RGBA_RATE = 0.08
DEFORMING_RATE = 0.5
_TYPE_P = (0.22, 0.26, 0.18, 0.17, 0.17)
_INTENSITY_P = (0.4, 0.35, 0.25)
_ATMOSPHERE_P = (0.3, 0.25, 0.45)
REPEATS = (6, 12, 12, 24)  # Sentinel-1 temporal baselines, days
FRAMES = ("124D_04854_171313", "087A_05281_131313", "014A_04939_131313", "160D_05102_081213",
          "044A_05148_131213", "131D_05094_111111", "072A_04902_080808", "175D_05265_101010")


@dataclass(frozen=True)
class PatchSpec:
    """What one patch shows, drawn before any pixel: the labels the annotation will carry."""

    deformation: bool
    activity_types: tuple[str, ...]  # physical source per pattern (two when crowded)
    intensities: tuple[str, ...]
    atmosphere: int  # 0 none, 1 stratification, 2 turbulence, 3 both
    defect: str
    rgba: bool
    direction: str  # "A" | "D"


@dataclass(frozen=True)
class SynthPatch:
    """A rendered patch: palette indices (0 no-data, 255 legend white), the deformation's
    LOS field (metres, before atmosphere and noise) and the annotation dict (JSON fields)."""

    unique_id: int
    spec: PatchSpec
    indices: np.ndarray = field(repr=False)
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
    atmosphere = 3 if defect == "atmosphere_both" else int(rng.choice(3, p=_ATMOSPHERE_P))
    patterns = (2 if defect == "crowd" else 1) if deforming else 0
    types = tuple(str(rng.choice(ACTIVITY_TYPES, p=_TYPE_P)) for _ in range(patterns))
    intensities = tuple(str(rng.choice(list(INTENSITY_FRINGES), p=_INTENSITY_P)) for _ in range(patterns))
    return PatchSpec(deforming, types, intensities, atmosphere, defect, rgba, str(rng.choice(["A", "D"])))


def _pixel_source(rng: np.random.Generator, activity_type: str, x: float, y: float, height: int) -> Source:
    return draw_source(rng, activity_type, x * PIXEL, (height - y) * PIXEL)


def _deformation(rng: np.random.Generator, spec: PatchSpec, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Total LOS deformation (m) and one field per pattern, each scaled to its fringe count."""
    fields = []
    first = rng.uniform(0.15, 0.85, size=2) * size
    for pattern, (activity_type, intensity) in enumerate(zip(spec.activity_types, spec.intensities)):
        # A crowded second pattern sits well away from the first.
        away = rng.uniform(0.3, 0.45, size=2) * size * rng.choice([-1, 1], 2)
        x, y = first if pattern == 0 else (first + away) % size
        source = _pixel_source(rng, activity_type, x, y, size)
        los = los_field([source], spec.direction, (size, size))
        sign = -1.0 if activity_type in ("Mogi", "Sill", "Spheroid") and rng.random() < 0.2 else 1.0
        peak = np.abs(los).max()
        fields.append(sign * los / max(peak, 1e-12) * rng.uniform(*INTENSITY_FRINGES[intensity]) * FRINGE)
    total = np.sum(fields, axis=0) if fields else np.zeros((size, size))
    return total, fields


def _atmosphere(rng: np.random.Generator, spec: PatchSpec, size: int,
                deformation: np.ndarray) -> tuple[np.ndarray, str]:
    """Atmospheric LOS delay (m) and the sentence(s) an expert would write about it."""
    shape = (size, size)
    if spec.deformation:
        summit = np.unravel_index(np.argmax(np.abs(deformation)), shape)[::-1] + rng.normal(0, 8, 2)
    else:
        summit = rng.uniform(-0.2, 1.2, 2) * size
    relief = topography(rng, shape, tuple(summit))
    turbulence = fractal_field(rng, shape, rng.uniform(3.0, 3.6))
    # Weak low-intensity deformation stays the strongest signal an expert sees.
    cap = 0.6 if "Low" in spec.intensities else 1.0
    if spec.atmosphere == 0:
        fringes = rng.uniform(0.1, 0.7)
        delay = scaled(0.5 * relief / relief.max() + turbulence, fringes * cap)
        return delay, f"The atmospheric impact is {'very low' if fringes < 0.35 else 'low'}."
    stratified = scaled(relief, rng.uniform(1.0, 2.0) * cap)
    if spec.atmosphere == 1:
        return stratified + scaled(turbulence, 0.2), STRATIFICATION
    if rng.random() < 0.5:
        turbulent, sentence = scaled(turbulence, rng.uniform(1.0, 2.0) * cap), TURBULENT_AROUND
    else:
        count = int(rng.integers(1, 4))
        sides = tuple(str(side) for side in rng.choice(SIDES, size=count, replace=False))
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        reach = {"top": 1 - yy, "bottom": yy, "left": 1 - xx, "right": xx}
        envelope = np.clip(np.max([reach[side] for side in sides], axis=0) * 2 - 0.6, 0, 1)
        turbulent = scaled(turbulence * envelope, rng.uniform(1.0, 2.0) * cap)
        sentence = f"Turbulent mixing effect can be detected {sides_phrase(sides)}."
    if spec.atmosphere == 2:
        return turbulent + scaled(relief, 0.2), sentence
    return turbulent + stratified, f"{STRATIFICATION} {sentence}"


# The annotation flags each defect sets (is_crowd for two patterns in one patch).
DEFECT_FLAGS = {
    "colour_bar": ("image_artifacts",), "no_info": ("no_info",), "corrupted": ("corrupted", "no_info"),
    "low_coherence": ("low_coherence",), "orbital": ("orbital_fringes",), "glacier": ("glacier_fringes",),
    "processing_error": ("processing_error",), "crowd": ("is_crowd",),
}
BINARY_FLAGS = ("corrupted", "processing_error", "glacier_fringes", "orbital_fringes", "low_coherence", "no_info",
                "image_artifacts", "is_crowd")


def _noisy_phase(rng: np.random.Generator, spec: PatchSpec, los: np.ndarray) -> np.ndarray:
    """Phase of the LOS delay plus what the defect adds before wrapping, and decorrelation noise."""
    size = los.shape[0]
    phase = 4 * np.pi / WAVELENGTH * los
    yy, xx = np.mgrid[0:size, 0:size]
    if spec.defect == "orbital":
        angle = rng.uniform(0, 2 * np.pi)
        phase = phase + 2 * np.pi * rng.uniform(3, 6) / size * (xx * np.cos(angle) + yy * np.sin(angle))
    elif spec.defect == "glacier":
        centre = rng.uniform(0.2, 0.8, 2) * size
        blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * (size * 0.1) ** 2))
        phase = phase + 2 * np.pi * 4 * blob * fractal_field(rng, los.shape, 2.0)
    if spec.defect == "low_coherence":
        coherence = rng.uniform(0.05, 0.15) + 0.05 * fractal_field(rng, los.shape, 3.0)
    else:
        coherence = np.clip(rng.uniform(0.55, 0.9) - 0.3 * fractal_field(rng, los.shape, 3.0), 0.3, 1.0)
    return phase + rng.standard_normal(los.shape) * phase_noise_sigma(coherence)


def _damage(rng: np.random.Generator, defect: str, indices: np.ndarray) -> None:
    """Paint the pixel defects: processing-error block, no-data areas, garbage rows, legend."""
    size = indices.shape[0]
    if defect == "processing_error":
        top = int(rng.integers(0, size // 2))
        indices[top:top + size // 3] = np.roll(indices[top:top + size // 3], size // 5, axis=1) // 2 + 1
    elif defect == "no_info":
        yy, xx = np.mgrid[0:size, 0:size]
        angle = rng.uniform(0, 2 * np.pi)
        along = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)
        indices[along > np.quantile(along, 1 - rng.uniform(0.35, 0.6))] = NODATA
    elif defect == "corrupted":
        for row in rng.permutation(size // 8)[: size // 20] * 8:
            indices[row:row + 8] = rng.integers(1, PHASE_LEVELS + 1, size=(8, size), dtype=np.uint8)
        indices[:, : int(size * rng.uniform(0.3, 0.5))] = NODATA
    elif defect == "colour_bar":
        add_colour_bar(indices, rng)


def render_patch(unique_id: int, spec: PatchSpec, rng: np.random.Generator, size: int = PATCH) -> SynthPatch:
    """Generate the phase for ``spec``, render it to palette indices and write its annotation."""
    deformation, patterns = _deformation(rng, spec, size)
    delay, atmosphere_sentence = _atmosphere(rng, spec, size, deformation)
    indices = phase_to_index(_noisy_phase(rng, spec, deformation + delay))
    _damage(rng, spec.defect, indices)
    flags = {flag: int(flag in DEFECT_FLAGS.get(spec.defect, ())) for flag in BINARY_FLAGS}

    polygons, sentences = [], [] if spec.atmosphere == 0 else [atmosphere_sentence]
    labelled = ("Unidentified",) if spec.defect == "unidentified" else spec.activity_types
    for activity_type, intensity, los in zip(labelled, spec.intensities, patterns):
        polygons.append(mask_polygon(deformation_mask(los)))
        # The location is read off the annotated polygon, as anyone checking the label would.
        location = location_phrase(polygon_mask([polygons[-1]], (size, size)))
        sentences.append(deformation_sentence(activity_type, intensity, location))
    if not spec.deformation:
        sentences.append(NO_DEFORMATION)
    if spec.atmosphere == 0:
        sentences.append(atmosphere_sentence)
    sentences.extend(FLAG_SENTENCES[flag] for flag in FLAG_SENTENCES if flags[flag])

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
        "confidence": round(float(rng.uniform(0.7, 1.0)), 2) if spec.deformation else 1.0,
        "segmentation_mask": polygons,
        "is_crowd": flags["is_crowd"],
        "caption": " ".join(sentences),
    }
    return SynthPatch(unique_id, spec, indices, deformation, annotation)


def make_patch(seed: int, index: int, size: int = PATCH) -> SynthPatch:
    """Sample ``index`` of the dataset for ``seed`` (independent of how many are made)."""
    rng = child_rng(seed, index)
    return render_patch(index, draw_spec(rng), rng, size)


@contextmanager
def _output_dir(root: Path) -> Iterator[Path]:
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
    write_phase_png(image, patch.indices, rgba=patch.spec.rgba)
    annotation = root / "annotations" / f"{patch.unique_id}.json"
    annotation.parent.mkdir(parents=True, exist_ok=True)
    annotation.write_text(json.dumps(patch.annotation, indent=1) + "\n")
    return image


def write_dataset(root: Path, n: int, seed: int, size: int = PATCH,
                  advance: Callable[[], None] | None = None) -> dict[str, int]:
    """Write ``n`` Hephaestus-style patches under ``root``; returns counts by outcome."""
    counts = {"deforming": 0, "non_deforming": 0, "rgba": 0, "flagged": 0}
    with _output_dir(root) as root:
        for index in range(n):
            patch = make_patch(seed, index, size)
            write_patch(root, patch)
            counts["deforming" if patch.spec.deformation else "non_deforming"] += 1
            counts["rgba"] += patch.spec.rgba
            counts["flagged"] += patch.spec.defect != "none"
            if advance is not None:
                advance()
    return counts


# --------------------------------------------------------------------------- LiCSAR drop

FRAME_SIZE = (1200, 1000)  # width, height in pixels


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

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key, "frame": self.frame, "primary": f"{self.primary:%Y%m%d}",
            "secondary": f"{self.secondary:%Y%m%d}", "diff_png": str(self.diff_png),
            "deformation": self.deformation, "activity_type": self.activity_type, "intensity": self.intensity,
            "volcano": list(self.volcano), "tiles": list(self.tiles), "low_coherence": self.low_coherence,
        }


@dataclass(frozen=True)
class SynthFrame:
    frame: str
    deforming: bool
    interferograms: tuple[SynthInterferogram, ...]


def frame_id(rng: np.random.Generator, direction: str) -> str:
    track, first, second = int(rng.integers(1, 176)), int(rng.integers(0, 100000)), int(rng.integers(0, 1000000))
    return f"{track:03d}{direction}_{first:05d}_{second:06d}"


def deforming_tiles(mask: np.ndarray, tile_size: int, tile_stride: int, min_pixels: int = 50) -> tuple[int, ...]:
    """Indices of the tiles (``imaging.tile`` order and boxes) with deformation in them."""
    from .imaging import tile

    tiles = tile(np.zeros(mask.shape + (1,), dtype=np.uint8), tile_size, tile_stride)
    return tuple(t.index for t in tiles if mask[t.box[1]:t.box[3], t.box[0]:t.box[2]].sum() >= min_pixels)


def _frame_phase(rng: np.random.Generator, direction: str, shape: tuple[int, int], volcano: tuple[int, int],
                 activity_type: str | None, intensity: str | None, low_coherence: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Wrapped phase, coherence, no-data and deformation mask of one whole frame."""
    height, width = shape
    deformation = np.zeros(shape)
    if activity_type is not None:
        x, y = np.array(volcano) + rng.normal(0, 10, 2)
        source = _pixel_source(rng, activity_type, x, y, height)
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
    phase = 4 * np.pi / WAVELENGTH * (deformation + delay) + rng.standard_normal(shape) * phase_noise_sigma(coherence)
    # A geocoded swath is slanted: its corners outside the footprint carry no data.
    yy, xx = np.mgrid[0:height, 0:width]
    nodata = (xx + 0.2 * width) < (0.25 * yy) + 0.05 * width
    nodata |= (width - xx + 0.2 * width) < (0.25 * (height - yy)) + 0.05 * width
    return phase, coherence, nodata, deformation_mask(deformation)


def _write_frame(drop: Path, number: int, seed: int, size: tuple[int, int], volcano: tuple[int, int], pairs: int,
                 tiling: tuple[int, int], advance: Callable[[], None] | None) -> SynthFrame:
    rng = child_rng(seed, number)
    direction = "AD"[number // 2 % 2]
    name = frame_id(rng, direction)
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
        stem = f"{day:%Y%m%d}_{secondary:%Y%m%d}"
        folder = drop / name / "interferograms" / stem
        indices = phase_to_index(phase)
        indices[nodata] = NODATA
        diff_png, coherence_png = folder / f"{stem}.geo.diff.png", folder / f"{stem}.geo.cc.png"
        # The sibling lands first so a watcher that sees the diff PNG also finds its coherence.
        write_coherence_png(coherence_png, coherence, nodata)
        write_phase_png(diff_png, indices)
        tiles = deforming_tiles(mask & ~nodata, *tiling) if deforming else ()
        interferograms.append(SynthInterferogram(f"{name}/{stem}", name, day, secondary, diff_png, coherence_png,
                                                 deforming, activity_type, intensity, volcano, tiles, low_coherence))
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
    with _output_dir(drop) as drop:
        written = [_write_frame(drop, number, seed, size, volcano, pairs, (tile_size, tile_stride), advance)
                   for number in range(frames)]
        lines = [json.dumps(item.to_dict()) for frame in written for item in frame.interferograms]
        (drop / "synth-truth.jsonl").write_text("".join(line + "\n" for line in lines))
    return written
