"""Pixels: safe PNG decoding, P/RGBA → RGB, pixel-based quality checks and tiling.

This module owns everything between a PNG on disk and the HxWx3 ``uint8`` arrays the
captioner sees. Decoding refuses what it cannot trust (zero-byte, truncated, not a PNG, a
chunk whose CRC does not match, palette indices beyond the PLTE, more pixels than
``imaging.max_pixels`` or Pillow's own decompression-bomb limit) with an
``InputError`` naming the file, and it refuses oversized images from the PNG header alone,
before a single pixel is decompressed. Frames that arrive without expert labels get three
checks mirroring the Hephaestus label filters: the no-data fraction (``no_info`` /
``corrupted``), the mean coherence of the ``.geo.cc.png`` sibling (``low_coherence``) and
an embedded colour-bar detector (``image_artifacts``). Validity is per pixel and per tile,
not per frame: a geocoded frame is a rotated swath with 20–40% transparent corners, so
``tile`` lays its tiles along the valid swath and records each tile's valid fraction, and
``usable_tiles`` skips (and counts) the tiles with too much no-data or too little
coherence; a frame is refused for no-data only when no tile is left. Pixel conventions shared with
``synthetic/``: no-data is palette index ``transparency`` (0, black) in P-mode PNGs and
alpha 0 or pure black in RGB(A); the cyclic phase palette never uses pure black; coherence
PNGs are 8-bit grayscale with 0 meaning no data. ``phase_image`` hands a decoded image to
``phase.py``, which owns the colour tables.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .phase import PhaseImage, Unknown, from_rgb

if TYPE_CHECKING:
    from .config import ImagingSettings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CRC_BLOCK = 1 << 20
# Pillow's modes for each PNG colour type (and, for grayscale, bit depth).
_COLOUR_TYPE_MODES = {2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_GRAY_MODES = {1: "1", 2: "L", 4: "L", 8: "L", 16: "I;16"}
# Modes whose pixels mean the same thing in RGB (gray levels, palette colours).
_DIRECT_MODES = ("RGB", "P", "L", "1")
_ALPHA_MODES = ("RGBA", "LA", "PA")

# Colour-bar detector geometry: a legend sits within FRAME_MAX px of the edge (a white
# frame may come first), is BAND_MIN to BAND_MAX px thick (the search looks no deeper than
# that or a quarter of the image); a legend along a quarter of the edge sweeping
# LEGEND_COLOURS distinct colours scores 1.
BAND_MIN = 8
BAND_MAX = 64
FRAME_MAX = 4
LEGEND_MIN_FRACTION = 0.25
LEGEND_COLOURS = 16
WHITE_MIN = 240


@dataclass(frozen=True)
class PngHeader:
    """What the PNG's IHDR chunk says, read without decompressing any pixel data."""

    width: int
    height: int
    bit_depth: int
    colour_type: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def mode(self) -> str:
        """The Pillow mode the image will decode to (``P``, ``RGB``, ``RGBA``, ``L``, ``I;16``...)."""
        if self.colour_type == 0:
            return _GRAY_MODES.get(self.bit_depth, f"gray{self.bit_depth}")
        return _COLOUR_TYPE_MODES.get(self.colour_type, f"colour-type-{self.colour_type}")


@dataclass(frozen=True)
class PngChunks:
    """What the chunk walk learnt beside the CRCs: the PLTE's number of entries, if any."""

    palette_entries: int | None


@dataclass(frozen=True)
class QualityCheck:
    """One pixel-based check: its value (None when it could not be measured), the threshold
    from ``settings.imaging``, whether the frame passed, and why when it could not be measured."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold,
                "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class Tile:
    """One square (or, at a small frame, smaller) piece of a frame; ``pixels`` is a view.
    ``valid_fraction`` is the share of its pixels that carry phase."""

    index: int
    box: tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive
    pixels: np.ndarray
    valid_fraction: float = 1.0


def read_png_header(path: Path) -> PngHeader:
    """Size and colour type from the IHDR chunk; ``InputError`` when the file is not a PNG."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            head = stream.read(33)
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise InputError(path, "empty file (0 bytes)")
    if not head.startswith(PNG_SIGNATURE):
        raise InputError(path, "not a PNG (bad signature)")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise InputError(path, "truncated PNG (no complete IHDR header)")
    length, width, height, bit_depth, colour_type = struct.unpack(">I4xIIBB", head[8:26])
    if length != 13 or width == 0 or height == 0:
        raise InputError(path, f"corrupt PNG header (IHDR length {length}, size {width}x{height})")
    return PngHeader(width, height, bit_depth, colour_type)


def read_chunks(path: Path) -> PngChunks:
    """Walk every chunk up to IEND checking its CRC, which Pillow does not do for pixel data.

    Pillow decodes a file cut after its last IDAT without complaint, so a file that ends
    before IEND is truncated; bytes after IEND (a transfer tool's padding) are ignored.
    """
    palette_entries = None
    try:
        with path.open("rb") as stream:
            stream.seek(len(PNG_SIGNATURE))
            while True:
                head = stream.read(8)
                if len(head) < 8:
                    raise InputError(path, "truncated PNG (file ends before the IEND chunk)")
                length, kind = struct.unpack(">I4s", head)
                crc = zlib.crc32(kind)
                left = length
                while left:
                    block = stream.read(min(left, _CRC_BLOCK))
                    if not block:
                        raise InputError(path, "truncated PNG (file ends before the IEND chunk)")
                    crc = zlib.crc32(block, crc)
                    left -= len(block)
                stored = stream.read(4)
                if len(stored) < 4:
                    raise InputError(path, "truncated PNG (file ends before the IEND chunk)")
                if struct.unpack(">I", stored)[0] != crc:
                    name = kind.decode("ascii", "backslashreplace")
                    raise InputError(path, f"corrupt PNG (bad CRC in chunk {name} at byte {stream.tell() - length - 12})")
                if kind == b"PLTE":
                    palette_entries = length // 3
                elif kind == b"IEND":
                    return PngChunks(palette_entries)
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None


def pixel_limit(max_pixels: int) -> int:
    """The effective limit: ``max_pixels`` but never above Pillow's decompression-bomb limit."""
    pillow = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow is None else min(max_pixels, pillow)


def decode_png(path: Path, max_pixels: int) -> Image.Image:
    """Fully decode a PNG; ``InputError`` for zero-byte, truncated, not-a-PNG, corrupt (a bad
    CRC, a palette too short for its indices) or too-large files.

    The size is checked from the header against ``pixel_limit(max_pixels)`` first, so an
    oversized image is refused before any pixel is decompressed and Pillow's own
    ``DecompressionBombWarning`` can never fire; a ``DecompressionBombError`` (a lying
    header) is still turned into an ``InputError``.
    """
    path = Path(path)
    header = read_png_header(path)
    limit = pixel_limit(max_pixels)
    if header.pixels > limit:
        raise InputError(
            path, f"image too large: {header.width}x{header.height} = {header.pixels} pixels > limit {limit}"
        )
    chunks = read_chunks(path)
    try:
        with Image.open(path, formats=["PNG"]) as image:
            image.load()
            decoded = image.copy()
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise InputError(path, "not a PNG Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason or isinstance(exc, EOFError):
            reason = f"truncated PNG ({reason})"
        else:
            reason = f"corrupt PNG ({reason})"
        raise InputError(path, reason) from None
    if decoded.mode == "P" and chunks.palette_entries is not None:
        used = int(np.asarray(decoded).max())
        if used >= chunks.palette_entries:
            # Pillow pads a short palette with black, which would read as no-data.
            raise InputError(path, f"corrupt palette (index {used} used, PLTE has {chunks.palette_entries} entries)")
    return decoded


def to_rgb(image: Image.Image, rgba_policy: str, path: Path | str) -> np.ndarray:
    """HxWx3 ``uint8``: P, L and 1 convert directly; RGBA follows ``rgba_policy``.

    ``"skip"`` (the paper's choice) raises ``InputError``; ``"convert"`` composites over
    black, so fully transparent pixels stay no-data (pure black) in RGB. Other modes
    (16-bit gray, gray+alpha, CMYK...) have no meaningful phase colours: ``InputError``.
    """
    mode = image.mode
    if mode == "P" and isinstance(image.info.get("transparency"), bytes):
        # Per-index alpha only marks no-data (nodata_mask reads it); without it Pillow's
        # convert() does a plain palette lookup instead of warning.
        image = image.copy()
        del image.info["transparency"]
    if mode in _DIRECT_MODES:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode == "RGBA":
        if rgba_policy != "convert":
            raise InputError(path, f"RGBA frame skipped by imaging.rgba_policy={rgba_policy}")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, image).convert("RGB"), dtype=np.uint8)
    raise InputError(path, f"unsupported image mode {mode} (expected P, RGB, RGBA or L)")


def phase_image(image: Image.Image, rgb: np.ndarray) -> PhaseImage | Unknown:
    """The wrapped phase a decoded image shows (``phase.from_rgb`` on ``to_rgb``'s array), with its
    transparency as no data; ``Unknown`` with the reason when no known colour table drew it."""
    return from_rgb(rgb, nodata_mask(image, rgb))


# --------------------------------------------------------------------------- quality


def nodata_mask(image: Image.Image, rgb: np.ndarray) -> np.ndarray:
    """Boolean HxW: the transparency index in P mode, alpha 0 with alpha, pure black otherwise."""
    transparency = image.info.get("transparency") if image.mode == "P" else None
    if isinstance(transparency, int):
        return np.asarray(image) == transparency
    black = ~rgb.any(axis=-1)
    if isinstance(transparency, bytes):
        clear = [index for index, alpha in enumerate(transparency) if alpha == 0]
        return np.isin(np.asarray(image), clear) | black
    if image.mode in _ALPHA_MODES:
        return (np.asarray(image.getchannel("A")) == 0) | black
    return black


def nodata_fraction(image: Image.Image, rgb: np.ndarray) -> float:
    mask = nodata_mask(image, rgb)
    return float(mask.mean()) if mask.size else 1.0


def coherence_png(path: Path, max_pixels: int) -> np.ndarray:
    """An 8-bit grayscale ``.geo.cc.png`` as coherence 0–1, NaN where it is 0 (no data)."""
    image = decode_png(path, max_pixels)
    if image.mode != "L":
        raise InputError(path, f"coherence PNG is mode {image.mode}, expected 8-bit grayscale (L)")
    values = np.asarray(image).astype(np.float32) / np.float32(255)
    values[values == 0] = np.nan
    if np.isnan(values).all():
        raise InputError(path, "coherence PNG has no valid (nonzero) pixels")
    return values


def _edge_strips(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Each edge as (along, depth, 3): depth 0 is the outermost line of pixels."""
    height, width = rgb.shape[:2]
    vertical = min(width, max(2 * BAND_MIN + FRAME_MAX, min(width // 4, BAND_MAX)))
    horizontal = min(height, max(2 * BAND_MIN + FRAME_MAX, min(height // 4, BAND_MAX)))
    return {
        "left": rgb[:, :vertical],
        "right": rgb[:, ::-1][:, :vertical],
        "top": rgb[:horizontal].transpose(1, 0, 2),
        "bottom": rgb[::-1][:horizontal].transpose(1, 0, 2),
    }


def _band_score(strip: np.ndarray) -> float:
    """How much ``strip`` looks like a legend band: lines across it single-coloured from a
    common start to a common inner edge, and the colours along it sweeping the palette."""
    along, depth = strip.shape[:2]
    if depth <= BAND_MIN or along == 0:
        return 0.0
    colours = strip.astype(np.uint32)
    packed = (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]
    white = np.all(strip >= WHITE_MIN, axis=-1)
    lines = np.arange(along)
    starts = np.argmin(white[:, : FRAME_MAX + 1], axis=1)
    starts_white = white[lines, starts]
    # A line's run is its start pixel's colour repeated inwards, up to the first change.
    changes = (packed[:, 1:] != packed[:, :-1]) & (np.arange(depth - 1) >= starts[:, None])
    ends = np.where(changes.any(axis=1), changes.argmax(axis=1), depth - 1) + 1
    runs = ends - starts
    start_colour = packed[lines, starts]
    candidate = (~starts_white) & (start_colour != 0) & (runs >= BAND_MIN) & (ends < depth)
    if not candidate.any():
        return 0.0
    geometry = starts.astype(np.int64) * depth + ends
    values, counts = np.unique(geometry[candidate], return_counts=True)
    matching = candidate & (geometry == values[np.argmax(counts)])
    # The longest stretch of consecutive matching lines (the first, on a tie).
    edges = np.flatnonzero(np.diff(np.concatenate(([0], matching.view(np.int8), [0]))))
    first, last = edges[::2], edges[1::2]
    longest = int(np.argmax(last - first))
    best_length = int(last[longest] - first[longest])
    best_colours = len(np.unique(start_colour[first[longest]:last[longest]]))
    length_score = min(1.0, best_length / (LEGEND_MIN_FRACTION * along))
    sweep_score = min(1.0, best_colours / LEGEND_COLOURS)
    return length_score * sweep_score


def colour_bar_score(rgb: np.ndarray) -> float:
    """Score in [0, 1] for an embedded legend along any edge (the strongest edge counts).

    A legend is a band at least ``BAND_MIN`` px thick along one edge, optionally behind a
    white frame up to ``FRAME_MAX`` px, in which every line across the band is one colour
    and the colours along it sweep the palette. The score is the product of the legend's
    length relative to a quarter of the edge and its number of distinct colours relative to
    ``LEGEND_COLOURS`` (both capped at 1). Interferogram fringes, noise, flat no-data
    borders and axis-aligned ramps score near 0: their lines do not stop at a common inner
    edge, or their colours do not sweep.
    """
    return max(_band_score(strip) for strip in _edge_strips(rgb).values())


def check_quality(
    rgb: np.ndarray, coherence: np.ndarray | InputError | None, settings: ImagingSettings
) -> tuple[QualityCheck, ...]:
    """The frame-wide pixel checks for a frame without expert labels, thresholds from ``settings``.

    ``coherence`` is the frame's coherence (0–1, NaN = no data, on any grid of the frame's
    extent), the error that kept the sibling from being read (the check then fails with its
    reason), or ``None`` when the frame has no coherence sibling (no check). No-data is not
    checked here: it is per tile (``usable_tiles``).
    """
    checks = []
    if isinstance(coherence, InputError):
        checks.append(QualityCheck("mean_coherence", None, settings.coherence_min, False, str(coherence)))
    elif coherence is not None:
        mean = float(np.nanmean(coherence))
        checks.append(QualityCheck("mean_coherence", mean, settings.coherence_min, mean >= settings.coherence_min))
    score = colour_bar_score(rgb)
    checks.append(QualityCheck("colour_bar", score, settings.artifact_max_score,
                               score <= settings.artifact_max_score))
    return tuple(checks)


# --------------------------------------------------------------------------- tiling


def _starts(low: int, high: int, size: int, stride: int) -> list[int]:
    """Tile origins covering [low, high); the last is moved back to end exactly at ``high``."""
    if high - low <= size:
        return [low]
    starts = list(range(low, high - size + 1, stride))
    if starts[-1] + size < high:
        starts.append(high - size)
    return starts


def _span(flags: np.ndarray, length: int, size: int) -> tuple[int, int]:
    """[first, last + 1) of the True entries, widened to one tile where the frame allows."""
    found = np.flatnonzero(flags)
    if found.size == 0:
        return 0, length
    low, high = int(found[0]), int(found[-1]) + 1
    low = max(0, min(low, length - size))
    return low, max(high, min(length, low + size))


def swath_boxes(valid: np.ndarray, size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Tile boxes that follow the valid swath, row of tiles by row of tiles.

    Rows of tiles span the rows holding any valid pixel; each row of tiles spans the columns
    holding a valid pixel within its band. A geocoded swath is a rotated rectangle, so the
    tiles shift with it instead of sitting on the transparent corners; a frame valid
    everywhere gets exactly the plain grid.
    """
    if size <= 0 or stride <= 0 or stride > size:
        raise ValueError(f"tile stride {stride} must be in 1..size ({size}) so tiles cover the frame")
    height, width = valid.shape
    boxes = []
    for top in _starts(*_span(valid.any(axis=1), height, size), size, stride):
        bottom = min(top + size, height)
        band = valid[top:bottom].any(axis=0)
        if not band.any():
            continue
        for left in _starts(*_span(band, width, size), size, stride):
            boxes.append((left, top, min(left + size, width), bottom))
    return boxes


def tile(rgb: np.ndarray, size: int, stride: int, valid: np.ndarray | None = None) -> list[Tile]:
    """Split a frame into ``size``-square tiles every ``stride`` px, row by row.

    Every valid pixel is covered: the last row and column of tiles are aligned to the edge of
    the swath (overlapping their neighbours when it is not a multiple of the stride), and a
    frame smaller than ``size`` along an axis gets one tile spanning it. Without ``valid``
    (a boolean mask of the pixels carrying phase) every pixel is valid.
    """
    height, width = rgb.shape[:2]
    if valid is None:
        valid = np.ones((height, width), dtype=bool)
    tiles = []
    for left, top, right, bottom in swath_boxes(valid, size, stride):
        tiles.append(Tile(len(tiles), (left, top, right, bottom), rgb[top:bottom, left:right],
                          float(valid[top:bottom, left:right].mean())))
    return tiles


def resample_nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``values`` on a grid of the same extent at ``shape`` (height, width), each new pixel
    taking the old pixel under its centre."""
    rows = ((np.arange(shape[0]) + 0.5) * values.shape[0] / shape[0]).astype(int)
    columns = ((np.arange(shape[1]) + 0.5) * values.shape[1] / shape[1]).astype(int)
    return values[rows[:, None], columns[None, :]]


def box_mean(values: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> float | None:
    """Mean of ``values`` (NaN = no data) over a pixel box of an image of ``shape`` (height,
    width) covering the same extent at another resolution; ``None`` when it holds no data."""
    scale_y, scale_x = values.shape[0] / shape[0], values.shape[1] / shape[1]
    left, top, right, bottom = box
    window = values[int(top * scale_y):max(int(top * scale_y) + 1, round(bottom * scale_y)),
                    int(left * scale_x):max(int(left * scale_x) + 1, round(right * scale_x))]
    finite = window[np.isfinite(window)]
    return float(finite.mean()) if finite.size else None


@dataclass(frozen=True)
class UsableTiles:
    """The tiles worth captioning and how many were skipped, by reason."""

    tiles: tuple[Tile, ...]
    skipped: dict[str, int]

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def usable_tiles(tiles: Sequence[Tile], shape: tuple[int, int], coherence: np.ndarray | None,
                 settings: ImagingSettings) -> UsableTiles:
    """Skip the tiles with more no-data than ``nodata_max_fraction`` (corners, water, NaN
    phase) or a mean coherence under ``coherence_min`` (a decorrelated valley), counting each."""
    kept, skipped = [], {"nodata": 0, "coherence": 0}
    for piece in tiles:
        if 1 - piece.valid_fraction > settings.nodata_max_fraction:
            skipped["nodata"] += 1
            continue
        if coherence is not None:
            mean = box_mean(coherence, piece.box, shape)
            if mean is None or mean < settings.coherence_min:
                skipped["coherence"] += 1
                continue
        kept.append(piece)
    return UsableTiles(tuple(kept), skipped)
