"""Synthetic interferograms from physics: a LiCSAR-layout drop and Hephaestus-style patches.

This module owns everything synthetic: deformation sources (Mogi point source analytic;
sill and dyke as tensile and earthquakes as shear rectangular dislocations through
``cutde``; a prolate spheroid approximated by a line of Mogi point sources along its axis)
projected onto the Sentinel-1 line of sight, atmosphere (power-law turbulence and
stratification correlated with a synthetic volcano topography), orbital ramps and
decorrelation noise, wrapping to (-pi, pi] and rendering with the shared pixel conventions
(P-mode PNG, palette index 0 = no-data (0, 0, 0) and the PNG's transparency, indices
1..254 the cyclic phase palette, 255 white for legend frames; 8-bit ``.geo.cc.png``
coherence). ``write_drop`` writes whole frames plus ``synth-truth.jsonl``;
``write_dataset`` writes 224x224 patches with annotation JSON whose labels and expert
captions say what was generated. Everything is deterministic for a seed, and sample ``i``
draws from its own child seed so it does not depend on how many samples are made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

WAVELENGTH = 0.05546  # Sentinel-1 C band, metres
FRINGE = WAVELENGTH / 2  # LOS change per 2*pi of phase (2.77 cm)
INCIDENCE = 39.0
HEADINGS = {"A": -10.0, "D": 190.0}
PIXEL = 100.0  # metres per pixel, the LiCSAR geocoded posting
POISSON = 0.25
NODATA = 0
WHITE = 255
PHASE_LEVELS = 254  # palette indices 1..254
ACTIVITY_TYPES = ("Mogi", "Sill", "Dyke", "Spheroid", "Earthquake")
INTENSITY_FRINGES = {"Low": (1.2, 2.2), "Medium": (3.0, 5.0), "High": (6.0, 15.0)}
PATCH = 224

# The paper's phase colours: blue-green-yellow-orange-purple-blue is one fringe towards the satellite.
_ANCHORS = np.array([(40, 80, 230), (40, 200, 120), (240, 230, 50), (245, 140, 40), (170, 60, 200), (40, 80, 230)])


def _cyclic(anchors: np.ndarray, levels: int) -> np.ndarray:
    position = np.arange(levels) / levels * (len(anchors) - 1)
    low = np.floor(position).astype(int)
    weight = (position - low)[:, None]
    return np.round(anchors[low] * (1 - weight) + anchors[low + 1] * weight).astype(np.uint8)


PALETTE = np.zeros((256, 3), dtype=np.uint8)
PALETTE[1:1 + PHASE_LEVELS] = _cyclic(_ANCHORS, PHASE_LEVELS)
PALETTE[WHITE] = (255, 255, 255)
# RGBA products in Hephaestus use another colour scheme; a hue wheel stands in for it.
RGBA_PALETTE = _cyclic(np.array([(230, 40, 40), (230, 230, 40), (40, 230, 40), (40, 230, 230),
                                 (40, 40, 230), (230, 40, 230), (230, 40, 40)]), PHASE_LEVELS)


# --------------------------------------------------------------------------- physics


@dataclass(frozen=True)
class Source:
    """A deformation source in metres (x east, y north of the grid origin, depth positive down).

    ``length``/``width`` size the sill, dyke, fault or spheroid axis; ``strike`` and the
    spheroid's plunge (``dip``) are degrees; ``rake`` is the earthquake slip direction.
    """

    activity_type: str
    east: float
    north: float
    depth: float
    length: float = 0.0
    width: float = 0.0
    strike: float = 0.0
    dip: float = 90.0
    rake: float = 0.0


def los_vector(direction: str, incidence: float = INCIDENCE) -> np.ndarray:
    """Unit (east, north, up) vector from the ground to a right-looking Sentinel-1 satellite."""
    heading = math.radians(HEADINGS[direction])
    theta = math.radians(incidence)
    return np.array([-math.sin(theta) * math.cos(heading), math.sin(theta) * math.sin(heading), math.cos(theta)])


def _mogi(x: np.ndarray, y: np.ndarray, depth: float) -> np.ndarray:
    """Mogi point source scaled to 1 m peak uplift: (3, N) east, north, up."""
    r3 = (x * x + y * y + depth * depth) ** 1.5
    scale = depth * depth / r3
    return np.stack([scale * x, scale * y, scale * depth])


def _rectangle(corners: np.ndarray) -> np.ndarray:
    return np.array([[corners[0], corners[1], corners[2]], [corners[0], corners[2], corners[3]]])


def _dislocation(x: np.ndarray, y: np.ndarray, source: Source) -> np.ndarray:
    import cutde.halfspace

    strike = math.radians(source.strike)
    along = np.array([math.sin(strike), math.cos(strike), 0.0])
    across = np.array([math.cos(strike), -math.sin(strike), 0.0])
    centre = np.array([source.east, source.north, -source.depth])
    half = along * source.length / 2
    if source.activity_type == "Sill":
        side = across * source.width / 2
        corners = np.array([centre - half - side, centre + half - side, centre + half + side, centre - half + side])
        slip = (0.0, 0.0, 1.0)
    else:
        dip = math.radians(90.0 if source.activity_type == "Dyke" else source.dip)
        down = across * math.cos(dip) * source.width + np.array([0, 0, -math.sin(dip) * source.width])
        corners = np.array([centre - half, centre + half, centre + half + down, centre - half + down])
        rake = math.radians(source.rake)
        slip = (0.0, 0.0, 1.0) if source.activity_type == "Dyke" else (math.cos(rake), math.sin(rake), 0.0)
    points = np.ascontiguousarray(np.stack([x, y, np.zeros_like(x)], axis=1))
    slips = np.array([slip, slip])
    return cutde.halfspace.disp_free(points, _rectangle(corners), slips, POISSON).T


def displacement(source: Source, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Surface displacement (3, N) east/north/up in metres for unit strength at points (x, y)."""
    dx, dy = x - source.east, y - source.north
    if source.activity_type == "Mogi":
        return _mogi(dx, dy, source.depth)
    if source.activity_type == "Spheroid":
        strike, plunge = math.radians(source.strike), math.radians(source.dip)
        axis = np.array([math.sin(strike) * math.cos(plunge), math.cos(strike) * math.cos(plunge), math.sin(plunge)])
        total = np.zeros((3, x.size))
        for offset in np.linspace(-0.5, 0.5, 7) * source.length:
            ex, ny, depth = axis * offset
            total += _mogi(dx - ex, dy - ny, source.depth + depth) * (source.depth + depth) ** 2
        return total / source.depth**2
    return _dislocation(x, y, source)


def los_field(sources: list[Source], direction: str, shape: tuple[int, int], stride: int = 2) -> np.ndarray:
    """LOS displacement (metres, positive towards the satellite) on a pixel grid for unit
    strengths, computed every ``stride`` px and interpolated (deformation is smooth)."""
    height, width = shape
    rows = np.arange(0, height + stride, stride)
    cols = np.arange(0, width + stride, stride)
    grid_y, grid_x = np.meshgrid(rows * PIXEL, cols * PIXEL, indexing="ij")
    los = los_vector(direction)
    coarse = np.zeros(grid_x.shape)
    for source in sources:
        enu = displacement(source, grid_x.ravel(), (height * PIXEL) - grid_y.ravel())
        coarse += (los @ enu).reshape(grid_x.shape)
    yy, xx = np.mgrid[0:height, 0:width] / stride
    return ndimage.map_coordinates(coarse, [yy, xx], order=1, mode="nearest")


def draw_source(rng: np.random.Generator, activity_type: str, east: float, north: float) -> Source:
    """Random but realistic geometry (km-scale, shallow volcanic sources) for a type."""
    uniform = rng.uniform
    if activity_type == "Mogi":
        return Source("Mogi", east, north, uniform(1500, 4000))
    if activity_type == "Sill":
        return Source("Sill", east, north, uniform(1000, 2500), uniform(2500, 6000), uniform(2000, 5000),
                      uniform(0, 180))
    if activity_type == "Dyke":
        return Source("Dyke", east, north, uniform(200, 1000), uniform(3000, 8000), uniform(2000, 5000),
                      uniform(0, 180))
    if activity_type == "Spheroid":
        return Source("Spheroid", east, north, uniform(2500, 4500), uniform(2500, 5000), 0.0, uniform(0, 360),
                      uniform(0, 30))
    return Source("Earthquake", east, north, uniform(500, 2500), uniform(5000, 12000), uniform(3000, 8000),
                  uniform(0, 360), uniform(30, 80), float(rng.choice([0.0, 90.0, 180.0, -90.0])))


# --------------------------------------------------------------------------- atmosphere, noise


def fractal_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Gaussian random field with power spectrum k**-beta, scaled to [0, 1]."""
    height, width = shape
    k = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    k[0, 0] = np.inf
    spectrum = (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) * k ** (-beta / 2)
    values = np.fft.irfft2(spectrum, s=shape)
    values -= values.min()
    return values / max(values.max(), 1e-12)


def topography(rng: np.random.Generator, shape: tuple[int, int], summit: tuple[float, float]) -> np.ndarray:
    """Metres: a volcanic cone at ``summit`` (x, y px) on fractal relief."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    radius = rng.uniform(110, 250)
    cone = np.clip(1 - np.hypot(xx - summit[0], yy - summit[1]) / radius, 0, None) ** 1.3
    return rng.uniform(1500, 3000) * cone + rng.uniform(800, 1500) * fractal_field(rng, shape, 3.3)


def scaled(values: np.ndarray, fringes: float) -> np.ndarray:
    """Shift and scale a field so its peak-to-peak LOS spans ``fringes`` fringes (metres)."""
    span = values.max() - values.min()
    return (values - values.min()) / max(span, 1e-12) * fringes * FRINGE


def phase_noise_sigma(coherence: np.ndarray, looks: int = 8) -> np.ndarray:
    """Phase standard deviation (rad) of a multilooked interferogram (Cramer-Rao bound)."""
    gamma = np.clip(coherence, 0.02, 0.999)
    return np.minimum(np.sqrt(1 - gamma**2) / (gamma * math.sqrt(2 * looks)), math.pi)


def wrap(phase: np.ndarray) -> np.ndarray:
    """Wrap to (-pi, pi]."""
    return np.pi - np.mod(np.pi - phase, 2 * np.pi)


# --------------------------------------------------------------------------- rendering


def phase_to_index(phase: np.ndarray) -> np.ndarray:
    """Wrapped phase → palette index 1..254 (index 0 stays free for no-data)."""
    fraction = (wrap(phase) + np.pi) / (2 * np.pi)
    return (1 + np.clip(np.floor(fraction * PHASE_LEVELS), 0, PHASE_LEVELS - 1)).astype(np.uint8)


def index_to_phase(indices: np.ndarray) -> np.ndarray:
    """Palette index → phase at the level's centre; NaN for no-data and legend white."""
    phase = -np.pi + (indices.astype(float) - 0.5) / PHASE_LEVELS * 2 * np.pi
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


def write_phase_png(path: Path, indices: np.ndarray, rgba: bool = False) -> None:
    """P mode with ``PALETTE`` and transparency 0, or RGBA in the other scheme (alpha 0 = no-data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgba:
        pixels = np.zeros(indices.shape + (4,), dtype=np.uint8)
        valid = (indices >= 1) & (indices <= PHASE_LEVELS)
        pixels[valid, :3] = RGBA_PALETTE[indices[valid] - 1]
        pixels[valid, 3] = 255
        Image.fromarray(pixels, "RGBA").save(path)
        return
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette(PALETTE.ravel().tolist())
    image.save(path, transparency=NODATA)


def write_coherence_png(path: Path, coherence: np.ndarray, nodata: np.ndarray) -> None:
    """8-bit grayscale, value round(coherence*255) with 0 reserved for no-data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.clip(np.round(coherence * 255), 1, 255).astype(np.uint8)
    values[nodata] = 0
    Image.fromarray(values, "L").save(path)


def deformation_mask(los: np.ndarray) -> np.ndarray:
    """Where the deformation moves the ground by more than half a fringe along the LOS."""
    return np.abs(los) >= FRINGE / 2


def mask_polygon(mask: np.ndarray) -> list[float]:
    """Convex hull of the mask pixels as a flat [x1, y1, ...] list (empty when too small)."""
    edge = mask & ~ndimage.binary_erosion(mask)
    points = np.argwhere(edge)[:, ::-1].astype(float)
    if len(points) < 3:
        return []
    corners = np.concatenate([points + offset for offset in ((0, 0), (1, 0), (0, 1), (1, 1))])
    try:
        hull = ConvexHull(corners)
    except QhullError:
        return []
    height, width = mask.shape
    vertices = corners[hull.vertices]
    vertices[:, 0] = np.clip(vertices[:, 0], 0, width)
    vertices[:, 1] = np.clip(vertices[:, 1], 0, height)
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
    """A rendered patch: palette indices (0 no-data, 255 legend white), mode and annotation."""

    unique_id: int
    spec: PatchSpec
    indices: np.ndarray = field(repr=False)
    los: np.ndarray = field(repr=False)  # deformation LOS in metres, for checks
    annotation: dict = field(repr=False)


def child_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_spec(rng: np.random.Generator) -> PatchSpec:
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


def _atmosphere(rng: np.random.Generator, spec: PatchSpec, size: int, deformation: np.ndarray) -> tuple[np.ndarray, str]:
    """Atmospheric LOS delay (m) and the sentence(s) an expert would write about it."""
    shape = (size, size)
    if spec.deformation:
        summit = np.unravel_index(np.argmax(np.abs(deformation)), shape)[::-1] + rng.normal(0, 8, 2)
    else:
        summit = rng.uniform(-0.2, 1.2, 2) * size
    relief = topography(rng, shape, tuple(summit))
    turbulence = fractal_field(rng, shape, rng.uniform(2.8, 3.4))
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


def render_patch(unique_id: int, spec: PatchSpec, rng: np.random.Generator, size: int = PATCH) -> SynthPatch:
    """Generate the phase for ``spec``, render it to palette indices and write its annotation."""
    shape = (size, size)
    deformation, patterns = _deformation(rng, spec, size)
    delay, atmosphere_sentence = _atmosphere(rng, spec, size, deformation)
    phase = 4 * np.pi / WAVELENGTH * (deformation + delay)
    flags = dict.fromkeys(("corrupted", "processing_error", "glacier_fringes", "orbital_fringes", "low_coherence",
                           "no_info", "image_artifacts", "is_crowd"), 0)
    yy, xx = np.mgrid[0:size, 0:size]
    if spec.defect == "orbital":
        angle = rng.uniform(0, 2 * np.pi)
        phase = phase + 2 * np.pi * rng.uniform(3, 6) / size * (xx * np.cos(angle) + yy * np.sin(angle))
        flags["orbital_fringes"] = 1
    if spec.defect == "glacier":
        centre = rng.uniform(0.2, 0.8, 2) * size
        blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * (size * 0.1) ** 2))
        phase = phase + 2 * np.pi * 4 * blob * fractal_field(rng, shape, 2.0)
        flags["glacier_fringes"] = 1
    coherence = np.clip(rng.uniform(0.55, 0.9) - 0.3 * fractal_field(rng, shape, 3.0), 0.3, 1.0)
    if spec.defect == "low_coherence":
        coherence = rng.uniform(0.05, 0.15) + 0.05 * fractal_field(rng, shape, 3.0)
        flags["low_coherence"] = 1
    phase = phase + rng.standard_normal(shape) * phase_noise_sigma(coherence)
    indices = phase_to_index(phase)
    if spec.defect == "processing_error":
        top = int(rng.integers(0, size // 2))
        indices[top:top + size // 3] = np.roll(indices[top:top + size // 3], size // 5, axis=1) // 2 + 1
        flags["processing_error"] = 1
    if spec.defect == "no_info":
        angle = rng.uniform(0, 2 * np.pi)
        along = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)
        indices[along > np.quantile(along, 1 - rng.uniform(0.35, 0.6))] = NODATA
        flags["no_info"] = 1
    if spec.defect == "corrupted":
        rows = rng.permutation(size // 8)[: size // 20] * 8
        for row in rows:
            indices[row:row + 8] = rng.integers(1, PHASE_LEVELS + 1, size=(8, size), dtype=np.uint8)
        indices[:, : int(size * rng.uniform(0.3, 0.5))] = NODATA
        flags.update(corrupted=1, no_info=1)
    if spec.defect == "colour_bar":
        add_colour_bar(indices, rng)
        flags["image_artifacts"] = 1
    flags["is_crowd"] = int(spec.defect == "crowd")

    polygons, sentences = [], [] if spec.atmosphere == 0 else [atmosphere_sentence]
    labelled = ("Unidentified",) if spec.defect == "unidentified" else spec.activity_types
    for activity_type, intensity, los in zip(labelled, spec.intensities, patterns):
        polygons.append(mask_polygon(deformation_mask(los)))
        # The location is read off the annotated polygon, as anyone checking the label would.
        location = location_phrase(polygon_mask([polygons[-1]], shape))
        sentences.append(deformation_sentence(activity_type, intensity, location))
    if not spec.deformation:
        sentences.append(NO_DEFORMATION)
    if spec.atmosphere == 0:
        sentences.append(atmosphere_sentence)
    sentences.extend(FLAG_SENTENCES[flag] for flag in FLAG_SENTENCES if flags[flag])

    frame = FRAMES[int(rng.integers(len(FRAMES)))]
    primary = date(2018, 1, 1) + timedelta(days=int(rng.integers(0, 6 * 365)))
    secondary = primary + timedelta(days=int(rng.choice([6, 12, 12, 24])))
    deflating = spec.deformation and float(deformation[np.unravel_index(np.argmax(np.abs(deformation)), shape)]) < 0
    annotation = {
        "uniqueID": unique_id,
        "frameID": frame,
        "primary_date": f"{primary:%Y%m%d}",
        "secondary_date": f"{secondary:%Y%m%d}",
        "corrupted": flags["corrupted"],
        "processing_error": flags["processing_error"],
        "glacier_fringes": flags["glacier_fringes"],
        "orbital_fringes": flags["orbital_fringes"],
        "atmospheric_fringes": spec.atmosphere,
        "low_coherence": flags["low_coherence"],
        "no_info": flags["no_info"],
        "image_artifacts": flags["image_artifacts"],
        "label": ["Deformation"] if spec.deformation else ["Non_Deformation"],
        "activity_type": list(labelled),
        "intensity_level": list(spec.intensities),
        "phase": ("Rebound" if deflating else "Unrest") if spec.deformation else "Rest",
        "confidence": round(float(rng.uniform(0.7, 1.0)), 2) if spec.deformation else 1.0,
        "segmentation_mask": [polygon for polygon in polygons if polygon],
        "is_crowd": flags["is_crowd"],
        "caption": " ".join(sentences),
    }
    return SynthPatch(unique_id, spec, indices, deformation, annotation)


def make_patch(seed: int, index: int, size: int = PATCH) -> SynthPatch:
    """Sample ``index`` of the dataset for ``seed`` (independent of how many are made)."""
    rng = child_rng(seed, index)
    return render_patch(index, draw_spec(rng), rng, size)


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
    for index in range(n):
        patch = make_patch(seed, index, size)
        write_patch(Path(root), patch)
        counts["deforming" if patch.spec.deformation else "non_deforming"] += 1
        counts["rgba"] += patch.spec.rgba
        counts["flagged"] += patch.spec.defect != "none"
        if advance is not None:
            advance()
    return counts


# --------------------------------------------------------------------------- LiCSAR drop

FRAME_SIZE = (1200, 1000)  # width, height in pixels
REPEATS = (6, 12, 12, 24)  # Sentinel-1 temporal baselines, days


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
    return f"{int(rng.integers(1, 176)):03d}{direction}_{int(rng.integers(0, 100000)):05d}_{int(rng.integers(0, 1000000)):06d}"


def deforming_tiles(mask: np.ndarray, tile_size: int, min_pixels: int = 50) -> tuple[int, ...]:
    """Indices of the tiles (``imaging.tile`` order and boxes) with deformation in them."""
    from .imaging import tile

    tiles = tile(np.zeros(mask.shape + (1,), dtype=np.uint8), tile_size, tile_size)
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
    delay = scaled(relief, rng.uniform(0.5, 1.5)) + scaled(fractal_field(rng, shape, rng.uniform(2.8, 3.4)),
                                                            rng.uniform(0.5, 1.5))
    coherence = np.clip(rng.uniform(0.55, 0.85) - 0.3 * fractal_field(rng, shape, 3.0), 0.3, 1.0)
    if low_coherence:
        coherence = rng.uniform(0.05, 0.15) + 0.05 * fractal_field(rng, shape, 3.0)
    phase = 4 * np.pi / WAVELENGTH * (deformation + delay) + rng.standard_normal(shape) * phase_noise_sigma(coherence)
    # A geocoded swath is slanted: its corners outside the footprint carry no data.
    yy, xx = np.mgrid[0:height, 0:width]
    nodata = (xx + 0.2 * width) < (0.25 * yy) + 0.05 * width
    nodata |= (width - xx + 0.2 * width) < (0.25 * (height - yy)) + 0.05 * width
    return phase, coherence, nodata, deformation_mask(deformation)


def write_drop(drop: Path, frames: int, seed: int, *, size: tuple[int, int] = FRAME_SIZE,
               volcano: tuple[int, int] | None = None, pairs: int = 3, tile_size: int = PATCH,
               advance: Callable[[], None] | None = None) -> list[SynthFrame]:
    """Write ``frames`` LiCSAR frames (``pairs`` consecutive interferograms each) under ``drop``.

    Even-numbered frames deform near ``volcano`` (x, y px; default the centre) in every
    pair; odd ones do not; every fourth frame's last pair is low-coherence. Each
    interferogram gets a ``.geo.cc.png`` sibling and a line in ``drop/synth-truth.jsonl``.
    """
    drop = Path(drop)
    width, height = size
    volcano = volcano or (width // 2, height // 2)
    written = []
    for number in range(frames):
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
            phase, coherence, nodata, mask = _frame_phase(rng, direction, (height, width), volcano, activity_type,
                                                          intensity, low_coherence)
            stem = f"{day:%Y%m%d}_{secondary:%Y%m%d}"
            folder = drop / name / "interferograms" / stem
            indices = phase_to_index(phase)
            indices[nodata] = NODATA
            diff_png, coherence_png = folder / f"{stem}.geo.diff.png", folder / f"{stem}.geo.cc.png"
            write_phase_png(diff_png, indices)
            write_coherence_png(coherence_png, coherence, nodata)
            mask &= ~nodata
            interferograms.append(SynthInterferogram(
                f"{name}/{stem}", name, day, secondary, diff_png, coherence_png, deforming, activity_type, intensity,
                volcano, deforming_tiles(mask, tile_size) if deforming else (), low_coherence))
            day = secondary
            if advance is not None:
                advance()
        written.append(SynthFrame(name, deforming, tuple(interferograms)))
    drop.mkdir(parents=True, exist_ok=True)
    with open(drop / "synth-truth.jsonl", "w") as truth:
        for frame in written:
            for interferogram in frame.interferograms:
                truth.write(json.dumps(interferogram.to_dict()) + "\n")
    return written
