"""Processing: claimed interferograms → tiles → model batches → decisions → stored results.

``read_interferogram`` reads one interferogram from disk (layout check, ``reading.read_model_image``:
what the model is shown of it, the paper's RGB or the canonical rendering of its phase, as the
model in use was trained; pixel quality checks, tiling) and says either what to caption or why it
was rejected;
``conclude`` turns one interferogram's described tiles into findings, tile decisions, the
interferogram's decision and, when it flags something, an ``Alert``. The daemon's loop
over them is ``processor.Processor``; each finished interferogram is written to the store
in one transaction with its alert and outbox rows (the alert report rendered before it
opens). That last step is ``complete`` (decisions and the rendered alert, before the lock) and
``store_completed`` (the transaction), with ``store_rejected``/``store_failed`` beside
them: the daemon and ``insarwatch backfill`` both finish interferograms through them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import notify
from .alerts import Alert, FrameCalibration, alert_key, decide_interferogram, decide_tile, strength
from .config import ImagingSettings, ModelInput, Settings
from .describe import Described
from .errors import InputError
from .findings import parse_caption
from .geo import Siblings
from .imaging import QualityCheck, Tile, check_quality, coherence_png, tile, usable_tiles
from .licsar import Interferogram, interferogram_from_path
from .reading import Unreadable, read_model_image
from .store import AlertRecord, FileStamp, InterferogramRecord, StaleTransition, State, Store, TileResult
from .volcanoes import Bounds, Volcano, catalogue_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tiled:
    """An interferogram ready for the model: its usable tiles, the quality checks it passed,
    how many tiles were skipped (by reason) and what its siblings add (georeference, phase)."""

    record: InterferogramRecord
    interferogram: Interferogram
    quality: tuple[QualityCheck, ...]
    tiles: tuple[Tile, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    siblings: Siblings = Siblings()
    model_input: ModelInput = "paper"
    input_notes: dict[str, str] = field(default_factory=dict)  # ModelImage.notes

    @property
    def notes(self) -> dict[str, Any]:
        """What the store keeps about the reading: tiles skipped, siblings refused and, on the
        phase input, the rendering read (and why it fell back to RGB)."""
        notes: dict[str, Any] = {"skipped_tiles": {k: n for k, n in self.skipped.items() if n}}
        if self.siblings.problems:
            notes["problems"] = list(self.siblings.problems)
        return notes | self.input_notes


@dataclass(frozen=True)
class Rejected:
    """An interferogram refused before the model, with a short reason and the one-line detail;
    ``read`` is its file as it was read, so that a changed file is read again."""

    record: InterferogramRecord
    reason: str
    detail: str
    read: FileStamp | None = None


@dataclass(frozen=True)
class Failed:
    """Reading broke for a reason that is not the file's fault (an OS error, a bug): retried."""

    record: InterferogramRecord
    error: str


@dataclass(frozen=True)
class Outcome:
    """What the store records for a captioned interferogram."""

    level: str
    tiles: tuple[TileResult, ...]
    alert: Alert | None
    notes: dict[str, Any] = field(default_factory=dict)


def frame_coherence(interferogram: Interferogram, siblings: Siblings,
                    imaging: ImagingSettings) -> np.ndarray | InputError | None:
    """Coherence 0–1 (NaN = no data) from ``.geo.cc.tif`` when it was read, else ``.geo.cc.png``;
    the error that kept the PNG from being read; ``None`` when there is neither."""
    if siblings.coherence is not None:
        return siblings.coherence.values
    if interferogram.coherence is None:
        return None
    try:
        return coherence_png(interferogram.coherence, imaging.max_pixels)
    except InputError as exc:
        return exc


def read_interferogram(record: InterferogramRecord, settings: Settings,
                       model_input: ModelInput = "paper") -> Tiled | Rejected:
    """Read ``record``'s PNG and siblings and decide what the model should see (runs in a worker thread).

    ``model_input`` is what the model in use was trained on (``describe.Bundle.model_input``).
    Validity is per pixel (transparent swath corners, and NaN phase in ``.geo.diff_pha.tif``)
    and per tile: tiles with too much no-data or too little coherence are skipped and counted,
    and the interferogram is refused for that only when no tile is left.
    """
    imaging = settings.imaging
    try:
        interferogram = interferogram_from_path(Path(record.path), settings.drop_dir)
    except InputError as exc:
        return Rejected(record, "layout", str(exc))
    # Stamped before reading: if the writer is still at it, the stamp is older than what was read.
    read = FileStamp.of(interferogram.diff_png)
    try:
        image = read_model_image(interferogram.diff_png, imaging, model_input, interferogram.siblings,
                                 interferogram.frame_dir)
    except Unreadable as exc:
        return Rejected(record, exc.rejection, str(exc), read)
    siblings = image.siblings
    for problem in siblings.problems:
        log.warning("%s: sibling refused, reading on without it: %s", interferogram.key, problem)
    coherence = frame_coherence(interferogram, siblings, imaging)
    assert image.preview is not None  # a .geo.diff.png always has one
    quality = check_quality(image.preview, coherence, imaging)
    failed = [check for check in quality if not check.passed]
    if failed:
        first = failed[0]
        detail = first.detail or f"{first.name} {first.value:.3g} outside threshold {first.threshold:g}"
        return Rejected(record, first.name, f"{interferogram.diff_png}: {detail}", read)
    shape = image.valid.shape
    laid = tile(image.pixels, imaging.tile_size, imaging.tile_stride, image.valid)
    usable = usable_tiles(laid, shape, coherence if isinstance(coherence, np.ndarray) else None, imaging)
    if not usable.tiles:
        return Rejected(record, "usable_tiles", (
            f"{interferogram.diff_png}: no usable tile: of {len(laid)}, {usable.skipped['nodata']} have more than "
            f"{imaging.nodata_max_fraction:.0%} no-data and {usable.skipped['coherence']} a mean coherence "
            f"under {imaging.coherence_min:g}"), read)
    return Tiled(record, interferogram, quality, usable.tiles, usable.skipped, siblings, model_input, image.notes)


def read_safely(record: InterferogramRecord, settings: Settings,
                model_input: ModelInput = "paper") -> Tiled | Rejected | Failed:
    """``read_interferogram`` that turns an unexpected exception into ``Failed`` so one frame
    cannot stop the others."""
    try:
        return read_interferogram(record, settings, model_input)
    except Exception as exc:
        log.exception("reading %s failed", record.key)
        return Failed(record, f"{type(exc).__name__}: {exc}")


def _places(tiled: Tiled, settings: Settings) -> list[tuple[Bounds | None, tuple[Volcano, float] | None]]:
    """Each tile's WGS84 bounds and nearest volcano, when the frame is georeferenced."""
    grid = tiled.siblings.grid
    if grid is None:
        return [(None, None)] * len(tiled.tiles)
    bounds = [grid.box_bounds(piece.box) for piece in tiled.tiles]
    centres = [((south + north) / 2, (west + east) / 2) for west, south, east, north in bounds]
    return list(zip(bounds, catalogue_for(settings.volcanoes).nearest_each(centres), strict=True))


def _near(bounds: Bounds, volcano: Volcano, distance_km: float) -> bool:
    """A tile is near a volcano that lies inside it or within ``radius_km`` of its centre: a
    preview tile spans ~75 km, so its centre can be far from a volcano the tile covers."""
    west, south, east, north = bounds
    inside = west <= volcano.longitude <= east and south <= volcano.latitude <= north
    return inside or distance_km <= volcano.radius_km


def _whereabouts(tiled: Tiled, settings: Settings) -> dict[str, Any]:
    """The frame's extent and the volcanoes inside it, for the alert's map (none without a georeference)."""
    grid = tiled.siblings.grid
    if grid is None:
        return {}
    inside = catalogue_for(settings.volcanoes).inside(grid.bounds)
    return {"footprint": grid.bounds, "landmarks": tuple((v.name, v.latitude, v.longitude) for v in inside)}


def conclude(tiled: Tiled, described: Sequence[Described], settings: Settings, model_version: str,
             now: datetime, calibration: FrameCalibration | None = None) -> Outcome:
    """Findings and decisions for every tile, the interferogram's decision and its alert.

    The alert names every volcano a flagged tile lies within ``radius_km`` of (strongest tile
    first), else the volcano the settings give the frame.
    """
    decisions = []
    results = []
    near: dict[int, str] = {}
    for piece, found, (bounds, nearest) in zip(tiled.tiles, described, _places(tiled, settings), strict=True):
        finding = parse_caption(found.caption.text)
        decision = decide_tile(piece.index, piece.box, found.caption.text, finding, found.neighbours,
                               settings.alerts, bounds=bounds,
                               volcano=None if nearest is None else (nearest[0].name, nearest[1]),
                               detection=found.detection, unread=tiled.input_notes.get("unknown_rendering"))
        if nearest is not None and _near(bounds, *nearest):
            near[piece.index] = nearest[0].name
        decisions.append(decision)
        results.append(TileResult.from_document(decision.to_dict(), found.caption.retrieved))
    decision = decide_interferogram(decisions, settings.alerts, calibration)
    alert = None
    if decision.level != "quiet":
        ifg = tiled.interferogram
        flagged = sorted(decision.tiles, key=strength, reverse=True)
        volcanoes = tuple(dict.fromkeys(near[t.tile_index] for t in flagged if t.tile_index in near))
        named = volcanoes[0] if volcanoes else settings.volcano_for(str(ifg.frame))
        alert = Alert(
            key=alert_key(str(ifg.frame), ifg.primary, ifg.secondary, model_version),
            frame=str(ifg.frame),
            volcano=named,
            primary=ifg.primary,
            secondary=ifg.secondary,
            model_version=model_version,
            decision=decision,
            quality=tiled.quality,
            received_at=tiled.record.received_at,
            processed_at=now,
            diff_png=ifg.diff_png,
            volcanoes=volcanoes or ((named,) if named else ()),
            **_whereabouts(tiled, settings),
        )
    return Outcome(decision.level, tuple(results), alert, tiled.notes)


@dataclass(frozen=True)
class Completed:
    """One interferogram's outcome with its alert rendered, ready to be written."""

    key: str
    model_version: str
    outcome: Outcome
    now: datetime
    alert_record: AlertRecord | None
    targets: tuple[tuple[str, str], ...]


def frame_calibration(data: dict[str, Any] | None) -> FrameCalibration | None:
    """A model version's calibration of the frame decision (``ModelVersion.calibration()``), if any."""
    return FrameCalibration.from_dict(data) if data else None


def complete(tiled: Tiled, described: Sequence[Described], settings: Settings, model_version: str,
             now: datetime, calibration: FrameCalibration | None = None) -> Completed:
    """``conclude`` and, when it raises an alert, its report rendered as the outbox payload:
    the work done before the write lock is taken (the daemon and the backfill both)."""
    outcome = conclude(tiled, described, settings, model_version, now, calibration)
    key = tiled.record.key
    if outcome.alert is None:
        return Completed(key, model_version, outcome, now, None, ())
    payload, targets = notify.alert_outbox(outcome.alert, settings)
    record = AlertRecord(outcome.alert.key, key, outcome.alert.decision.level,
                         outcome.alert.decision.severity, model_version, payload, now)
    return Completed(key, model_version, outcome, now, record, tuple(targets))


def store_completed(store: Store, done: Completed, said: list[Callable[[], None]] | None = None) -> bool:
    """Results, alert, outbox rows and processing → done in one transaction; False when the
    interferogram was no longer this caller's to finish (released, or finished by another
    process), in which case nothing is stored. Inside a caller's larger transaction, pass
    ``said``: the outcome's log line is appended there, to be said once that commits."""
    key, outcome = done.key, done.outcome
    try:
        enqueued = store.complete(key, outcome.tiles, done.model_version, outcome.level, done.now,
                                  done.alert_record, done.targets, outcome.notes)
    except StaleTransition as exc:
        log.warning("%s (released or finished elsewhere; not stored twice)", exc)
        return False
    if outcome.alert is not None:
        say = functools.partial(log.warning, "%s %s: %s", outcome.level.upper(), key,
                                "alert queued for delivery" if enqueued else "already alerted for this model version")
    else:
        say = functools.partial(log.info, "done %s: %s", key, outcome.level)
    if said is None:
        say()
    else:
        said.append(say)
    return True


def store_rejected(store: Store, rejected: Rejected, now: datetime) -> bool:
    """→ rejected with its reason; False when the interferogram was no longer this caller's."""
    try:
        store.reject(rejected.record.key, rejected.reason, now, rejected.detail, rejected.read)
    except StaleTransition as exc:
        log.warning("%s", exc)
        return False
    log.warning("rejected %s", rejected.detail)
    return True


def store_failed(store: Store, key: str, error: str, now: datetime, max_attempts: int) -> State | None:
    """→ failed (or quarantined after ``max_attempts`` claims); None when it was no longer
    this caller's."""
    try:
        state = store.fail(key, error, now, max_attempts)
    except StaleTransition as exc:
        log.warning("%s", exc)
        return None
    log.error("%s %s: %s", key, state, error)
    return state
