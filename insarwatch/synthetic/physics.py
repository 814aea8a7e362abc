"""The forward model of a synthetic interferogram: sources, line of sight, atmosphere, noise.

Deformation sources (Mogi point source, analytic; sill and dyke as tensile and earthquakes as
shear rectangular dislocations in an elastic half-space through ``cutde``, two triangles per
rectangle; a prolate spheroid approximated by a line of seven Mogi point sources along its
axis), their projection onto the Sentinel-1 line of sight (incidence 39 deg, heading -10 deg
ascending / 190 deg descending, right-looking), atmospheric delays (power-law turbulence,
stratification proportional to a synthetic volcano topography), decorrelation noise from
coherence, and wrapping to (-pi, pi]. Pure numpy/scipy: nothing here touches the disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WAVELENGTH = 0.05546  # Sentinel-1 C band, metres
FRINGE = WAVELENGTH / 2  # LOS change per 2*pi of phase (2.77 cm)
INCIDENCE = 39.0
HEADINGS = {"A": -10.0, "D": 190.0}
PIXEL = 100.0  # metres per pixel, the LiCSAR geocoded posting
POISSON = 0.25
ACTIVITY_TYPES = ("Mogi", "Sill", "Dyke", "Spheroid", "Earthquake")


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
