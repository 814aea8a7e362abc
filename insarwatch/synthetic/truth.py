"""An alert made from a synthetic drop's truth instead of a model, through the daemon's own path.

For pictures and tests of what a volcanologist receives without training anything: the
interferogram is read exactly as the daemon reads it (``pipeline.read_interferogram``:
siblings, georeference, per-tile validity), each tile gets the caption an expert would
write from the synthetic truth (the source type and intensity where the truth says the
tile deforms, "No deformation activity can be detected." elsewhere) and neighbours that
agree with it, and ``pipeline.conclude`` turns that into the decision and the ``Alert``,
with bounds, nearest volcanoes and the frame's footprint as a real alert has them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from ..alerts import Alert
from ..captioner import Caption
from ..config import Settings
from ..describe import Described
from ..errors import InsarwatchError
from ..pipeline import Rejected, conclude, read_interferogram
from ..retrieval import IndexRecord, Neighbour
from ..store import InterferogramRecord
from .captions import NO_DEFORMATION, deformation_sentence, location_phrase
from .drop import SynthInterferogram

NEIGHBOURS = 5


def _caption(truth: SynthInterferogram, box: tuple[int, int, int, int]) -> str:
    """The expert-style sentence for a deforming tile, placed where the volcano lies in it."""
    left, top, right, bottom = box
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    mask[min(max(truth.volcano[1] - top, 0), bottom - top - 1), min(max(truth.volcano[0] - left, 0),
                                                                       right - left - 1)] = True
    return deformation_sentence(truth.activity_type, truth.intensity, location_phrase(mask))


def _agreeing(caption: str, truth: SynthInterferogram, deforming: bool) -> tuple[Neighbour, ...]:
    record = IndexRecord(caption, deforming, (truth.activity_type,) if deforming else (),
                         (truth.intensity,) if deforming else (), "synthetic-truth")
    return tuple(Neighbour(0.9 - 0.02 * rank, record) for rank in range(NEIGHBOURS))


def truth_alert(truth: SynthInterferogram, settings: Settings, model_version: str, received: datetime) -> Alert:
    """The alert the daemon would raise on ``truth`` if its model saw exactly what was made."""
    record = InterferogramRecord(truth.key, str(truth.diff_png), truth.frame, truth.primary, truth.secondary,
                                 "processing", 1, received, received)
    tiled = read_interferogram(record, settings)
    if isinstance(tiled, Rejected):
        raise InsarwatchError(f"{truth.diff_png}: the daemon would reject it ({tiled.detail})")
    described = []
    for piece in tiled.tiles:
        deforming = truth.deformation and piece.index in truth.tiles
        caption = _caption(truth, piece.box) if deforming else NO_DEFORMATION
        described.append(Described(Caption(caption, np.zeros(1, np.float32)), _agreeing(caption, truth, deforming)))
    outcome = conclude(tiled, described, settings, model_version, received + timedelta(seconds=95))
    if outcome.alert is None:
        raise InsarwatchError(f"{truth.diff_png}: the truth flags no tile, so there is no alert")
    return outcome.alert
