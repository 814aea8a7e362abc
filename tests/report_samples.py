"""An alert built the way the daemon builds one, for the report and delivery tests.

Captions go through the real ``parse_caption`` and ``decide_tile``/``decide_interferogram``;
neighbours are real ``retrieval.Neighbour`` records; the interferogram is a P-mode PNG
with concentric (Mogi-like) fringes in a cyclic palette, written into a LiCSAR layout.
"""

from __future__ import annotations

import colorsys
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

FRAME = "124D_04854_171313"
VOLCANO = "Etna"
PRIMARY, SECONDARY = date(2026, 11, 2), date(2026, 11, 14)
RECEIVED = datetime(2026, 11, 15, 6, 0, tzinfo=timezone.utc)
PROCESSED = datetime(2026, 11, 15, 6, 2, 30, tzinfo=timezone.utc)
ALERT_CAPTION = "a dyke - type deformation pattern of high intensity can be detected on the top side of the image."
QUIET_CAPTION = "no deformation activity can be detected."
SIZE = (672, 448)  # 3 x 2 tiles of 224 px
FLAGGED_BOX = (224, 0, 448, 224)


def cyclic_palette() -> list[int]:
    """256 colours around the hue circle; index 0 is black, the PNG's no-data colour."""
    palette = [0, 0, 0]
    for index in range(1, 256):
        red, green, blue = colorsys.hsv_to_rgb(index / 255, 0.85, 0.95)
        palette += [round(red * 255), round(green * 255), round(blue * 255)]
    return palette


def write_interferogram(drop: Path) -> Path:
    """Concentric fringes centred in the flagged tile, as a P-mode LiCSAR ``.geo.diff.png``."""
    pair = f"{PRIMARY:%Y%m%d}_{SECONDARY:%Y%m%d}"
    path = drop / FRAME / "interferograms" / pair / f"{pair}.geo.diff.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    radius = np.hypot(x - 336, y - 112)
    phase = (radius / 18) % 1.0
    indices = (1 + phase * 254).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(cyclic_palette())
    image.save(path, transparency=0)
    return path


def neighbours(deforming: bool, caption: str = ALERT_CAPTION) -> tuple:
    from insarwatch.retrieval import IndexRecord, Neighbour

    if deforming:
        records = [IndexRecord(caption, True, ("Dyke",), ("High",), f"hephaestus/{n}") for n in (101, 102, 103)]
    else:
        records = [IndexRecord(QUIET_CAPTION, False, (), (), f"hephaestus/{n}") for n in (201, 202, 203)]
    return tuple(Neighbour(similarity, record) for similarity, record in zip((0.94, 0.91, 0.88), records, strict=True))


def make_alert(drop: Path, *, caption: str = ALERT_CAPTION, model_version: str = "v1", diff_png: Path | None = None):
    """A real decision over a 3 x 2 tiled frame in which one tile reports ``caption``."""
    from insarwatch.alerts import Alert, alert_key, decide_interferogram, decide_tile
    from insarwatch.config import Settings
    from insarwatch.findings import parse_caption
    from insarwatch.imaging import QualityCheck

    settings = Settings()
    path = diff_png if diff_png is not None else write_interferogram(drop)
    tiles = []
    for index in range(6):
        left, top = (index % 3) * 224, (index // 3) * 224
        box = (left, top, left + 224, top + 224)
        text = caption if box == FLAGGED_BOX else QUIET_CAPTION
        tiles.append(decide_tile(index, box, text, parse_caption(text), neighbours(box == FLAGGED_BOX, text),
                                 settings.alerts))
    quality = (
        QualityCheck("nodata_fraction", 0.0, 0.25, True),
        QualityCheck("coherence_mean", 0.71, 0.25, True),
        QualityCheck("artifact_score", 0.02, 0.5, True),
    )
    return Alert(
        key=alert_key(FRAME, PRIMARY, SECONDARY, model_version), frame=FRAME, volcano=VOLCANO,
        primary=PRIMARY, secondary=SECONDARY, model_version=model_version,
        decision=decide_interferogram(tiles), quality=quality, received_at=RECEIVED,
        processed_at=PROCESSED, diff_png=path,
    )
