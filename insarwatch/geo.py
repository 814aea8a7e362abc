"""Georeference: LiCSAR GeoTIFF siblings and frame metadata, read with rasterio.

This module owns the GeoTIFF format and what a georeference means for a frame. LiCSAR
geocodes every product of a frame onto one latitude/longitude grid (WGS84, 0.001° by
default; ``data2geotiff`` in comet-licsar/licsar_proc writes 0.0 as no-data) and draws the
``.geo.diff.png`` preview from ``.geo.diff_pha.tif`` scaled to about 30% (``convert -resize
30%``), so the PNG covers exactly the GeoTIFF's extent on a coarser grid. A ``Grid`` is that
georeference (size, affine transform, CRS, WGS84 bounds); ``Grid.resized`` gives the same
extent at the PNG's size, so a PNG pixel box maps to ``[west, south, east, north]`` through
the ratio of the two grids. Readers turn each sibling into a ``Raster`` (float32, NaN = no
data): wrapped phase in radians (NaN or 0 = no data), coherence (a byte 0–255 = 0–1 since
October 2019, float 0–1 before; 0 = no data), unwrapped phase (0 = no data). Frame
metadata is ``<FRAME>/metadata/``: ``metadata.txt`` (``key=value`` lines written by
licsar_proc, e.g. ``heading``, ``avg_incidence_angle``) and the frame's geocoded rasters
(``<FRAME>.geo.hgt.tif``, ``.geo.{E,N,U}.tif``), whose grid is the frame's georeference when
an interferogram has no GeoTIFF of its own. Every file that cannot be trusted — truncated,
corrupt, not georeferenced, NaN-only, or on a grid whose aspect does not match the PNG — is
an ``InputError`` with a one-line reason; the caller records it and keeps the PNG path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds

from .errors import InputError
from .volcanoes import Bounds

Box = tuple[int, int, int, int]  # left, top, right, bottom pixel edges; right/bottom exclusive
WGS84 = "EPSG:4326"
METADATA_TEXT = "metadata.txt"
# The frame's own geocoded rasters, in the order their grid is trusted as the frame's.
FRAME_RASTERS = (".geo.hgt.tif", ".geo.U.tif", ".geo.E.tif", ".geo.N.tif")
PHASE_TIF, COHERENCE_TIF, UNWRAPPED_TIF = ".geo.diff_pha.tif", ".geo.cc.tif", ".geo.unw.tif"


@dataclass(frozen=True)
class Grid:
    """Where a raster's pixels lie: ``transform`` maps (column, row) pixel edges to ``crs``
    coordinates; ``bounds`` is the whole extent in WGS84 degrees."""

    width: int
    height: int
    transform: Affine
    crs: str
    bounds: Bounds

    def box_bounds(self, box: Sequence[int | float]) -> Bounds:
        """``[west, south, east, north]`` (WGS84) of a pixel box on this grid."""
        left, top, right, bottom = box
        corners = [self.transform @ (column, row) for column in (left, right) for row in (top, bottom)]
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        return _to_wgs84(self.crs, (min(xs), min(ys), max(xs), max(ys)))

    def resized(self, width: int, height: int) -> Grid:
        """The same extent at ``width`` x ``height`` pixels (the PNG preview's grid)."""
        scale = Affine.scale(self.width / width, self.height / height)
        return Grid(width, height, self.transform @ scale, self.crs, self.bounds)

    def to_dict(self) -> dict[str, object]:
        return {"width": self.width, "height": self.height, "transform": list(self.transform)[:6],
                "crs": self.crs, "bounds": list(self.bounds)}


@dataclass(frozen=True)
class Raster:
    """One band of a GeoTIFF sibling: float32 values with NaN wherever there is no data."""

    path: Path
    grid: Grid
    values: np.ndarray = field(repr=False)

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.values)


@dataclass(frozen=True)
class FrameMetadata:
    """What ``<FRAME>/metadata/`` says about a frame; any part may be absent."""

    directory: Path
    heading: float | None  # degrees: satellite track azimuth from north
    incidence: float | None  # degrees: average incidence angle
    values: Mapping[str, str] = field(default_factory=dict)
    grid: Grid | None = None
    grid_source: Path | None = None


def _to_wgs84(crs: str, box: Bounds) -> Bounds:
    if crs == WGS84:
        return box
    return tuple(transform_bounds(CRS.from_user_input(crs), WGS84, *box))  # type: ignore[return-value]


def _crs_text(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _failure(exc: Exception) -> str:
    """GDAL's own words: rasterio wraps them as the cause of a generic 'Read failed'."""
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _open(path: Path, kind: str, read: bool) -> tuple[Grid, np.ndarray]:
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                if dataset.crs is None or dataset.transform == Affine.identity():
                    raise InputError(path, f"{kind} GeoTIFF has no georeference (no CRS or geotransform)")
                transform, crs = dataset.transform, _crs_text(dataset.crs)
                width, height = dataset.width, dataset.height
                extent = tuple(dataset.bounds)
                values = dataset.read(1) if read else np.empty((0, 0), dataset.dtypes[0])
    except InputError:
        raise
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"truncated or corrupt {kind} GeoTIFF ({_failure(exc)})") from None
    west, south, east, north = _to_wgs84(crs, extent)  # type: ignore[arg-type]
    if not all(math.isfinite(v) for v in (west, south, east, north)) or south < -90 or north > 90:
        raise InputError(path, f"{kind} GeoTIFF bounds {west, south, east, north} are not on the Earth")
    return Grid(width, height, transform, crs, (west, south, east, north)), values


def read_grid(path: Path, kind: str) -> Grid:
    """A GeoTIFF's grid from its header alone (no pixel is decoded)."""
    return _open(path, kind, read=False)[0]


def read_raster(path: Path, kind: str) -> tuple[Grid, np.ndarray]:
    """Band 1 of a GeoTIFF and its grid; ``InputError`` when it cannot be trusted.

    Every byte is decoded here, so a file cut short fails now, not in a later window read.
    """
    return _open(path, kind, read=True)


def _float_with_nodata(values: np.ndarray) -> np.ndarray:
    """float32 with LiCSAR's no-data (exact 0, and NaN) as NaN."""
    out = values.astype(np.float32, copy=True)
    out[out == 0] = np.nan
    return out


def _require_valid(raster: Raster, what: str) -> Raster:
    if not raster.valid.any():
        raise InputError(raster.path, f"{what} has no valid pixel (all NaN or 0)")
    return raster


def read_phase(path: Path) -> Raster:
    """``.geo.diff_pha.tif``: wrapped phase in radians; NaN or exactly 0 is no data."""
    grid, values = read_raster(path, "phase")
    if not np.issubdtype(values.dtype, np.floating):
        raise InputError(path, f"phase GeoTIFF is {values.dtype}, expected float32 radians")
    return _require_valid(Raster(Path(path), grid, _float_with_nodata(values)), "phase GeoTIFF")


def read_coherence(path: Path) -> Raster:
    """``.geo.cc.tif`` as coherence 0–1: a byte 0–255 (LiCSAR since October 2019, as
    LiCSBAS02 notes) or a float 0–1 (older products); 0 is no data in both."""
    grid, values = read_raster(path, "coherence")
    if values.dtype == np.uint8:
        coherence = _float_with_nodata(values) / np.float32(255)
    elif np.issubdtype(values.dtype, np.floating):
        coherence = _float_with_nodata(values)
        finite = coherence[np.isfinite(coherence)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise InputError(path, f"coherence GeoTIFF values {finite.min():.3g}..{finite.max():.3g} outside 0..1")
    else:
        raise InputError(path, f"coherence GeoTIFF is {values.dtype}, expected uint8 (0-255) or float (0-1)")
    return _require_valid(Raster(Path(path), grid, coherence), "coherence GeoTIFF")


def read_unwrapped(path: Path) -> Raster:
    """``.geo.unw.tif``: unwrapped phase in radians, median-subtracted; 0 is no data."""
    grid, values = read_raster(path, "unwrapped phase")
    if not np.issubdtype(values.dtype, np.floating):
        raise InputError(path, f"unwrapped phase GeoTIFF is {values.dtype}, expected float32 radians")
    return _require_valid(Raster(Path(path), grid, _float_with_nodata(values)), "unwrapped phase GeoTIFF")


def grid_around(latitude: float, longitude: float, width: int, height: int, x: float, y: float,
                step: float) -> Grid:
    """A north-up WGS84 grid of ``step``-degree pixels whose pixel (x, y) centre is at the point."""
    west, north = longitude - (x + 0.5) * step, latitude + (y + 0.5) * step
    transform = Affine.translation(west, north) @ Affine.scale(step, -step)
    return Grid(width, height, transform, WGS84, (west, north - height * step, west + width * step, north))


def write_raster(path: Path, values: np.ndarray, grid: Grid) -> None:
    """Write one band as a GeoTIFF on ``grid``, as LiCSAR's ``data2geotiff`` does (no-data 0)."""
    with rasterio.open(Path(path), "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
                       dtype=values.dtype, crs=grid.crs, transform=grid.transform, nodata=0) as dataset:
        dataset.write(values, 1)


def check_preview_grid(grid: Grid, width: int, height: int, path: Path) -> Grid:
    """``grid`` at the PNG preview's ``width`` x ``height``, or ``InputError`` when the two
    cannot cover the same extent.

    LiCSAR's preview is the GeoTIFF resized by one factor with each side rounded to whole
    pixels, so the two scale factors agree to within half a pixel per side; twice that
    tolerance still refuses any grid of another frame shape.
    """
    scale_x, scale_y = grid.width / width, grid.height / height
    tolerance = 1 / width + 1 / height
    if abs(scale_x / scale_y - 1) > tolerance:
        raise InputError(
            path,
            f"grid {grid.width}x{grid.height} does not match the preview's {width}x{height} extent "
            f"(scales {scale_x:.4g} and {scale_y:.4g} differ)",
        )
    return grid.resized(width, height)


def parse_metadata_text(text: str) -> dict[str, str]:
    """``key=value`` lines of licsar_proc's ``metadata.txt``; blank lines and others ignored."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def _angle(values: Mapping[str, str], key: str, path: Path) -> float | None:
    if key not in values or not values[key]:
        return None
    try:
        angle = float(values[key])
    except ValueError:
        raise InputError(path, f"{key}={values[key]!r} is not a number") from None
    if not math.isfinite(angle) or abs(angle) > 360:
        raise InputError(path, f"{key}={values[key]!r} is not an angle in degrees")
    return angle


def read_frame_metadata(frame_dir: Path) -> FrameMetadata | None:
    """``<FRAME>/metadata/`` when it exists: heading and incidence from ``metadata.txt`` and
    the grid of the first readable frame raster; ``None`` when there is no such folder."""
    frame_dir = Path(frame_dir)
    directory = frame_dir / "metadata"
    if not directory.is_dir():
        return None
    values: dict[str, str] = {}
    text_path = directory / METADATA_TEXT
    if text_path.is_file():
        try:
            values = parse_metadata_text(text_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(text_path, f"cannot be read as text: {exc}") from None
    heading = _angle(values, "heading", text_path)
    incidence = _angle(values, "avg_incidence_angle", text_path)
    for suffix in FRAME_RASTERS:
        raster = directory / f"{frame_dir.name}{suffix}"
        if raster.is_file():
            return FrameMetadata(directory, heading, incidence, values, read_grid(raster, "frame metadata"), raster)
    return FrameMetadata(directory, heading, incidence, values)


@dataclass(frozen=True)
class Siblings:
    """What an interferogram's GeoTIFF siblings and its frame's metadata add to its PNG.

    ``grid`` is the PNG's own grid (same extent, the PNG's size): the georeference of its
    pixel boxes, from the first sibling that matches the PNG, else the frame metadata.
    ``problems`` has one line per sibling refused; what it would have added is then absent.
    """

    grid: Grid | None = None
    phase: Raster | None = None
    coherence: Raster | None = None
    metadata: FrameMetadata | None = None
    problems: tuple[str, ...] = ()


def read_siblings(siblings: Sequence[Path], frame_dir: Path | None, width: int, height: int) -> Siblings:
    """Read the phase, coherence and unwrapped GeoTIFFs among a ``width`` x ``height`` PNG's
    ``siblings`` and the metadata of its frame folder; anything unreadable or on another
    grid becomes a problem line."""
    problems: list[str] = []
    grids: list[Grid] = []

    def attempt(path: Path | None, read):  # type: ignore[no-untyped-def]
        if path is None:
            return None
        try:
            found = read(path)
            grids.append(check_preview_grid(found if isinstance(found, Grid) else found.grid, width, height, path))
            return found
        except InputError as exc:
            problems.append(str(exc))
            return None

    def sibling(suffix: str) -> Path | None:
        return next((path for path in siblings if path.name.endswith(suffix)), None)

    phase = attempt(sibling(PHASE_TIF), read_phase)
    coherence = attempt(sibling(COHERENCE_TIF), read_coherence)
    if not grids:
        attempt(sibling(UNWRAPPED_TIF), lambda path: read_grid(path, "unwrapped phase"))
    metadata = None
    try:
        metadata = read_frame_metadata(frame_dir) if frame_dir is not None else None
    except InputError as exc:
        problems.append(str(exc))
    if not grids and metadata is not None and metadata.grid is not None:
        attempt(metadata.grid_source, lambda _: metadata.grid)
    return Siblings(grids[0] if grids else None, phase, coherence, metadata, tuple(problems))
