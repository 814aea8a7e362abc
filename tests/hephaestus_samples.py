"""Hephaestus-style annotations and interferogram PNGs built with plain json + Pillow.

Used by the imaging, hephaestus and prepare tests. PNGs follow the pixel conventions
``insarwatch.synthetic.render`` draws: a 256-entry cyclic palette whose index 0 is black and is the PNG's
``transparency`` (no-data) entry, phase mapped to indices 1..255.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FRAME = "124D_04854_171313"


def palette() -> np.ndarray:
    """256x3 uint8: index 0 black (no data), 1..255 around the hue circle, never black."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(1, 256):
        colours[index] = [round(255 * c) for c in colorsys.hsv_to_rgb((index - 1) / 255, 0.8, 0.9)]
    return colours


def phase_indices(phase: np.ndarray) -> np.ndarray:
    """Wrapped phase (any real values, radians) → palette indices 1..255."""
    wrapped = np.mod(phase, 2 * np.pi) / (2 * np.pi)
    return (1 + np.minimum((wrapped * 255).astype(np.int64), 254)).astype(np.uint8)


def fringes(height: int = 224, width: int = 224, spacing: float = 12.0) -> np.ndarray:
    """Concentric (Mogi-like) fringes as palette indices."""
    y, x = np.mgrid[0:height, 0:width]
    return phase_indices(np.hypot(x - width / 2, y - height / 2) / spacing * 2 * np.pi)


def save_p(path: Path, indices: np.ndarray) -> Path:
    """A P-mode PNG with the cyclic palette and index 0 as the transparency entry."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", transparency=0)
    return path


def save_rgb(path: Path, indices: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    """The same picture as RGB, or RGBA when ``alpha`` is given."""
    rgb = palette()[indices]
    array = rgb if alpha is None else np.dstack([rgb, alpha.astype(np.uint8)])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def annotation(unique_id: int, *, deformation: bool = False, **fields: Any) -> dict[str, Any]:
    """A clean annotation (passes every rule); ``fields`` override any key."""
    record: dict[str, Any] = {
        "uniqueID": unique_id,
        "frameID": FRAME,
        "primary_date": "20210101",
        "secondary_date": "20210113",
        "corrupted": 0,
        "processing_error": 0,
        "glacier_fringes": 0,
        "orbital_fringes": 0,
        "atmospheric_fringes": 1,
        "low_coherence": 0,
        "no_info": 0,
        "image_artifacts": 0,
        "is_crowd": 0,
        "label": ["Deformation"] if deformation else ["Non_Deformation"],
        "activity_type": ["Mogi"] if deformation else [],
        "intensity_level": ["High"] if deformation else [],
        "phase": "Unrest" if deformation else "Rest",
        "confidence": 0.8,
        "segmentation_mask": [[10, 10, 60, 10, 60, 60]] if deformation else [],
        "caption": (
            "A mogi-type deformation pattern of high intensity can be detected in the center of the image."
            if deformation
            else "Stratification effect can be detected on the left side. No deformation activity can be detected."
        ),
    }
    record.update(fields)
    return record


def write_annotation(root: Path, record: dict[str, Any], name: str | None = None) -> Path:
    path = root / "annotations" / (name or f"{record['uniqueID']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def flat_sample(root: Path, record: dict[str, Any], mode: str = "P") -> None:
    """Annotation plus ``images/<id>.png`` in the requested mode (P, RGB or RGBA)."""
    write_annotation(root, record)
    image = root / "images" / f"{record['uniqueID']}.png"
    indices = fringes(64, 64, spacing=8.0 + record["uniqueID"] % 5)
    if mode == "P":
        save_p(image, indices)
    elif mode == "RGBA":
        save_rgb(image, indices, alpha=np.full(indices.shape, 255))
    else:
        save_rgb(image, indices)
