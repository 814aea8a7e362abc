"""Physics of a synthetic interferogram and the pixel conventions it is rendered with.

This module owns the forward model ``synth.py`` draws from: deformation sources (Mogi
point source, analytic; sill and dyke as tensile and earthquakes as shear rectangular
dislocations in an elastic half-space through ``cutde``, two triangles per rectangle; a
prolate spheroid approximated by a line of seven Mogi point sources along its axis),
their projection onto the Sentinel-1 line of sight (incidence 39 deg, heading -10 deg
ascending / 190 deg descending, right-looking), atmospheric delays (power-law turbulence,
stratification proportional to a synthetic volcano topography), decorrelation noise from
coherence, wrapping to (-pi, pi], and the shared rendering conventions: P-mode PNG with
palette index 0 = no-data (0, 0, 0) and the PNG's transparency, indices 1..254 the cyclic
phase palette (never pure black), 255 white for legend frames; RGBA products in another
colour scheme with alpha 0 = no-data; ``.geo.cc.png`` coherence as 8-bit grayscale
round(coherence*255) with 0 = no data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

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


def _save(image: Image.Image, path: Path, **options: object) -> None:
    """Write under a hidden name, then rename: a watcher never sees a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    image.save(partial, format="PNG", **options)
    os.replace(partial, path)


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
