"""The model's input: one interferogram file, read as the model is shown it, whoever asks.

This module owns the one reading step that the daemon (``pipeline.read_interferogram``),
``insarwatch caption`` (``caption_files.read_tiles``), ``insarwatch evaluate --tiles`` and
``insarwatch prepare`` (``hephaestus.prepare``) share, so a model is shown in service exactly
what it was trained on. ``read_model_image`` takes a PNG (a LiCSAR ``.geo.diff.png`` with its
GeoTIFF siblings and frame metadata, or any tile) or a ``.geo.diff_pha.tif`` on its own and
returns a ``ModelImage``. The model input decides the pixels: ``paper`` is the captioning
paper's path, the PNG's RGB (``read_rgb``); ``phase`` is the wrapped phase — exactly from
``.geo.diff_pha.tif`` when there is one, else the PNG's colour table inverted (``phase.from_rgb``)
— drawn by ``phase.render``, the canonical rendering, on the PNG's grid. A ``phase`` image whose
colours fit no known rendering is shown as RGB, with a logged warning and the reason kept on
the ``ModelImage`` (the store records it). Which input a model wants is recorded with it
(``registry.ModelVersion.model_input``, from the dataset's ``manifest.dataset_input``) and
carried by ``describe.Bundle.model_input``; ``imaging.model_input`` decides it for ``prepare``
and for a model directory that does not say.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .config import ImagingSettings, ModelInput
from .errors import InputError
from .geo import PHASE_TIF, Grid, Siblings, check_preview_grid, read_phase, read_siblings
from .imaging import decode_png, nodata_mask, phase_image, read_png_header, resample_nearest, to_rgb
from .licsar import DIFF_SUFFIX
from .phase import PHA, PhaseImage, Unknown, from_phase, render

log = logging.getLogger(__name__)

# LiCSAR draws .geo.diff.png from .geo.diff_pha.tif at 30 % of its grid (`convert -resize 30%`, geo.py):
# a phase GeoTIFF read without its PNG is shown at that size, so its tiles cover what the daemon's would.
PREVIEW_SCALE = 0.3
RGB = "rgb"


class Unreadable(InputError):
    """A file the model cannot be shown; ``rejection`` is the short reason the store records."""

    def __init__(self, error: InputError, rejection: str) -> None:
        super().__init__(error.path, error.reason)
        self.rejection = rejection


@dataclass(frozen=True)
class ModelImage:
    """One file as the model is shown it.

    ``pixels`` (HxWx3 ``uint8``) are the PNG's RGB (``rendering`` ``rgb``) or ``phase.render`` of
    its wrapped phase (``rendering`` names the phase's source: ``diff_pha``, ``pha``, ``phaold``,
    ``grey``, ``synthetic``, ``rainbow``); ``unknown`` says why a ``phase`` image is shown as RGB.
    ``valid`` marks the pixels that carry data (not transparent, not NaN phase): tiles are laid
    along it. ``preview`` is the PNG's RGB, which the colour-bar check reads (None for a GeoTIFF
    read alone); ``siblings`` is what its GeoTIFFs and frame metadata add (georeference, phase).
    """

    pixels: np.ndarray
    valid: np.ndarray
    model_input: ModelInput
    rendering: str
    preview: np.ndarray | None = None
    siblings: Siblings = field(default_factory=Siblings)
    unknown: str | None = None

    @property
    def notes(self) -> dict[str, str]:
        """What the store keeps about the input: nothing on the paper's path, else the rendering
        read and, when it fell back to RGB, why."""
        if self.model_input == "paper":
            return {}
        notes = {"rendering": self.rendering}
        if self.unknown is not None:
            notes["unknown_rendering"] = self.unknown
        return notes


def read_rgb(path: Path, imaging: ImagingSettings, model_input: ModelInput = "paper") -> tuple[Image.Image, np.ndarray]:
    """Decode a PNG and convert it to RGB; raises ``Unreadable`` ("decode", "too_small", "rgba" or "mode").

    ``imaging.rgba_policy`` applies to the paper's path; ``phase`` reads RGBA (transparency is no data).
    """
    try:
        image = decode_png(path, imaging.max_pixels)
    except InputError as exc:
        raise Unreadable(exc, "decode") from None
    if min(image.size) < imaging.min_side:
        width, height = image.size
        raise Unreadable(InputError(path, f"frame {width}x{height} px is smaller than imaging.min_side "
                                          f"({imaging.min_side} px on each side)"), "too_small")
    try:
        return image, to_rgb(image, "convert" if model_input == "phase" else imaging.rgba_policy, path)
    except InputError as exc:
        raise Unreadable(exc, "rgba" if image.mode == "RGBA" else "mode") from None


def read_model_image(path: Path, imaging: ImagingSettings, model_input: ModelInput,
                     siblings: Sequence[Path] = (), frame_dir: Path | None = None) -> ModelImage:
    """``path`` as the model is shown it (see the module docstring); raises ``Unreadable``.

    A PNG's ``siblings`` (a ``.geo.diff.png``'s GeoTIFFs) and ``frame_dir`` (its frame's
    ``metadata/``) are read when given; their problems are in ``ModelImage.siblings.problems``.
    """
    path = Path(path)
    if path.name.endswith(PHASE_TIF):
        return _read_phase_tif(path, model_input)
    image, rgb = read_rgb(path, imaging, model_input)
    shape = rgb.shape[:2]
    found = read_siblings(siblings, frame_dir, shape[1], shape[0]) if siblings or frame_dir else Siblings()
    nodata = nodata_mask(image, rgb)
    valid = ~nodata
    if found.phase is not None:
        valid &= resample_nearest(found.phase.valid, shape)
    if model_input == "paper":
        return ModelImage(rgb, valid, model_input, RGB, rgb, found)
    read = from_phase(found.phase.values) if found.phase is not None else phase_image(image, rgb)
    if isinstance(read, Unknown):
        log.warning("%s: shown to the model as RGB: %s", path, read.reason)
        return ModelImage(rgb, valid, model_input, RGB, rgb, found, read.reason)
    return ModelImage(_canonical(read, shape), valid, model_input, read.rendering, rgb, found)


def _canonical(image: PhaseImage, shape: tuple[int, int]) -> np.ndarray:
    """``phase.render`` on the PNG's grid. Rendering is linear in exp(i phase), so shrinking a
    GeoTIFF's phase to the PNG's size averages its complex phase, never the raw angles."""
    return render(image, None if image.phase.shape == shape else shape)


def _read_phase_tif(path: Path, model_input: ModelInput) -> ModelImage:
    """A ``.geo.diff_pha.tif`` read alone, on the grid of its ``.geo.diff.png`` when one lies beside
    it, else at LiCSAR's preview scale. The paper's path is shown what LiCSAR's preview would show:
    the phase drawn with ``pha.cpt``."""
    try:
        raster = read_phase(path)
        grid = _preview_grid(path, raster.grid)
    except InputError as exc:
        raise Unreadable(exc, "decode") from None
    shape = (grid.height, grid.width)
    image = from_phase(raster.values)
    valid = resample_nearest(image.valid, shape)
    found = Siblings(grid=grid, phase=raster)
    if model_input == "paper":
        drawn = Image.fromarray(PHA.draw(image.phase, image.valid)).resize(shape[::-1], Image.Resampling.BOX)
        return ModelImage(np.asarray(drawn), valid, model_input, RGB, None, found)
    return ModelImage(_canonical(image, shape), valid, model_input, image.rendering, None, found)


def _preview_grid(path: Path, grid: Grid) -> Grid:
    """The grid a phase GeoTIFF's preview has (or would have): its PNG's when one lies beside it."""
    preview = path.with_name(path.name[: -len(PHASE_TIF)] + DIFF_SUFFIX)
    if preview.is_file():
        header = read_png_header(preview)
        return check_preview_grid(grid, header.width, header.height, preview)
    return grid.resized(max(1, round(grid.width * PREVIEW_SCALE)), max(1, round(grid.height * PREVIEW_SCALE)))
