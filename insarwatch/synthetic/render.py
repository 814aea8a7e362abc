"""How synthetic phase is drawn to files: as LiCSAR draws its previews, and the PNG writers.

``preview`` draws wrapped phase the way LiCSAR makes a ``.geo.diff.png``: every grid pixel in
its colour-table slice (GMT ``grdimage -C pha.cpt``), then shrunk in RGB (ImageMagick
``-resize 30%``: decorrelated speckle averages into off-table grey-pink), no data transparent,
then the PNG8 low-bit reduction (``phase.reduce_bits``). ``grey_levels`` draws phase as the
Sentinel-1 grey patches do (complex phase averaged to the tile, then -pi..pi → 0..255). Both
are written as P-mode PNGs with palette index 0 the transparent no-data black, so they go
through the same reading path as real previews (``phase.from_rgb``). RGBA products (a hue
wheel, alpha 0 = no data) stand for renderings no table explains. ``.geo.cc.png`` coherence
is 8-bit grayscale round(coherence*255) with 0 = no data. Each file is written under a
hidden name and then renamed, so a watcher never sees half of one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..files import replacing
from ..phase import GREY, SYNTHETIC, ColourTable, cyclic_colours, reduce_bits

NODATA = 0
# LiCSAR shows its 0.001 deg grid at 30 %: about three grid pixels per preview pixel.
PREVIEW_SCALE = 3
# The PNG8 step keeps 3 bits a channel; when that still leaves more than a palette holds, blue keeps 2.
LICSAR_BITS = ((3, 3, 3), (3, 3, 2))
# A preview pixel is transparent when most of the grid pixels it covers are no data.
NODATA_SHARE = 0.5
# RGBA products in Hephaestus use another colour scheme; a hue wheel stands in for it.
RGBA_PALETTE = cyclic_colours(np.array([(230, 40, 40), (230, 230, 40), (40, 230, 40), (40, 230, 230),
                                        (40, 40, 230), (230, 40, 230), (230, 40, 40)]), len(SYNTHETIC.colours))


# --------------------------------------------------------------------------- rendering


def _codes(colours: np.ndarray) -> np.ndarray:
    """One integer per RGB colour (N x 3 uint8): np.unique on these is far faster than on rows."""
    wide = colours.reshape(-1, 3).astype(np.uint32)
    return wide[:, 0] << 16 | wide[:, 1] << 8 | wide[:, 2]


def _blocks(values: np.ndarray, factor: int) -> np.ndarray:
    height, width = values.shape[0] // factor, values.shape[1] // factor
    cut = values[:height * factor, :width * factor]
    return cut.reshape(height, factor, width, factor, *values.shape[2:])


def preview(phase: np.ndarray, valid: np.ndarray, table: ColourTable,
            factor: int = PREVIEW_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """LiCSAR's preview of grid ``phase`` before ``png8``: (HxWx3 uint8, HxW no-data) at 1/``factor`` size."""
    colours = table.draw(phase, valid).astype(np.float64)
    weight = _blocks(valid.astype(np.float64), factor)
    total = weight.sum(axis=(1, 3))
    # ImageMagick averages only the opaque pixels (no data was made transparent before the resize).
    mean = (_blocks(colours, factor) * weight[..., None]).sum(axis=(1, 3)) / np.maximum(total, 1)[..., None]
    nodata = total < NODATA_SHARE * factor * factor
    rgb = np.rint(mean).astype(np.uint8)
    rgb[nodata] = 0
    return rgb, nodata


def png8(rgb: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """LiCSAR's last step, ``convert ... PNG8:``: the low-bit reduction, to fit a 256-colour palette."""
    for bits in LICSAR_BITS:
        reduced = reduce_bits(rgb, bits)
        reduced[nodata] = 0
        if len(np.unique(_codes(reduced[~nodata]))) < 256:
            break
    return reduced


def shrink_phase(phase: np.ndarray, valid: np.ndarray, factor: int = PREVIEW_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Grid phase averaged as complex numbers over ``factor`` x ``factor`` blocks (multilooking)."""
    phasor = np.where(valid, np.exp(1j * phase), 0)
    total = _blocks(valid.astype(np.float64), factor).sum(axis=(1, 3))
    return np.angle(_blocks(phasor, factor).sum(axis=(1, 3))), total < NODATA_SHARE * factor * factor


def grey_levels(phase: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """Phase as grey levels (the Sentinel-1 patches): HxWx3, no data black."""
    return GREY.draw(phase, ~nodata)


def hue_wheel(phase: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """The RGBA products' colour scheme: HxWx3 (no data black)."""
    rgb = RGBA_PALETTE[SYNTHETIC.index(phase)]
    rgb[nodata] = 0
    return rgb


def rainbow_on_amplitude(phase: np.ndarray, nodata: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """LiCSAR's older RGBA products: the phase as the hue, the SAR amplitude (0-1) as the brightness,
    full saturation; HxWx3, no data black. Reading them back (``phase.from_rgb``'s rainbow path)
    loses the phase where the amplitude is dark, as it does on the real ones."""
    hsv = np.stack([np.mod(phase + np.pi, 2 * np.pi) / (2 * np.pi) * 255, np.full(phase.shape, 255.0),
                    np.clip(amplitude, 0, 1) * 255], axis=-1)
    rgb = np.asarray(Image.fromarray(np.rint(hsv).astype(np.uint8), "HSV").convert("RGB")).copy()
    rgb[nodata] = 0
    return rgb


def colour_bar(rgb: np.ndarray, table: ColourTable, rng: np.random.Generator) -> None:
    """Paint a legend band (10-14 px, sweeping ``table``, framed in white) along one edge."""
    edge = str(rng.choice(["top", "bottom", "left", "right"]))
    view = rgb if edge in ("top", "bottom") else rgb.transpose(1, 0, 2)
    if edge in ("bottom", "right"):
        view = view[::-1]
    along = view.shape[1]
    length = int(along * rng.uniform(0.6, 0.9))
    start = int(rng.integers(0, along - length + 1))
    thickness = int(rng.integers(10, 15))
    view[: thickness + 4, start:start + length] = 255
    sweep = table.draw(np.linspace(-np.pi, np.pi, length - 4, endpoint=False)[None, :])
    view[2:thickness + 2, start + 2:start + length - 2] = sweep


# --------------------------------------------------------------------------- writers


def _save(image: Image.Image, path: Path, **options: object) -> None:
    """Write atomically under a hidden name: a watcher never sees a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as partial:
        image.save(partial, format="PNG", **options)


def write_palette_png(path: Path, rgb: np.ndarray, nodata: np.ndarray) -> None:
    """P mode, as LiCSAR's PNG8: palette index 0 is the transparent no-data black, the others
    the image's colours (at most 255; black pixels are no data)."""
    nodata = nodata | ~rgb.any(axis=-1)
    codes, inverse = np.unique(_codes(rgb[~nodata]), return_inverse=True)
    colours = np.stack([codes >> 16, codes >> 8 & 255, codes & 255], axis=1)
    if len(colours) > 255:
        raise ValueError(f"{len(colours)} colours do not fit a PNG8 palette")
    indices = np.zeros(nodata.shape, dtype=np.uint8)
    indices[~nodata] = 1 + inverse.ravel()
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1:1 + len(colours)] = colours
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette(palette.ravel().tolist())
    _save(image, path, transparency=NODATA)


def write_rgba_png(path: Path, rgb: np.ndarray, nodata: np.ndarray) -> None:
    """RGBA with alpha 0 = no data."""
    pixels = np.concatenate([rgb, np.where(nodata, 0, 255).astype(np.uint8)[..., None]], axis=-1)
    pixels[nodata, :3] = 0
    _save(Image.fromarray(pixels, "RGBA"), path)


def write_coherence_png(path: Path, coherence: np.ndarray, nodata: np.ndarray) -> None:
    """8-bit grayscale, value round(coherence*255) with 0 reserved for no-data."""
    values = np.clip(np.round(coherence * 255), 1, 255).astype(np.uint8)
    values[nodata] = 0
    _save(Image.fromarray(values, "L"), path)
