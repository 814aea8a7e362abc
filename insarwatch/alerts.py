"""Alert decisions: a tile's finding + its retrieved neighbours → alert, review or quiet.

Owns the rule that turns what the captioner said (a ``Finding``) and what the nearest
expert-captioned interferograms show (their labels, weighted by similarity) into a level
a volcanologist acts on, with the numbers behind it kept in ``reasons``; the per-
interferogram aggregate (the strongest tile, with every contributing tile and its pixel
box); the de-duplication key (one alert per frame, date pair and model version); and the
``Alert`` record reports and delivery render. Pure functions: the store enforces the
key's uniqueness, the daemon supplies the clock.

Rules, per tile (the vote is the similarity-weighted share of voting neighbours whose
label is deformation; neighbours below ``alerts.min_similarity`` do not vote):
  alert  — the caption reports deformation and vote >= ``alert_vote``;
  review — the caption reports deformation but the neighbours do not confirm it, or the
           caption reports none (or is not an interferogram description) while
           vote >= ``review_vote``;
  quiet  — otherwise: neither reports deformation.
An unrecognised caption never reports deformation, so it is never an alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .config import AlertSettings
from .findings import INTENSITIES, Finding, strongest

if TYPE_CHECKING:
    from .imaging import QualityCheck
    from .retrieval import Neighbour

Level = Literal["alert", "review", "quiet"]
LEVELS: tuple[Level, ...] = ("quiet", "review", "alert")
Box = tuple[int, int, int, int]
Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class TileDecision:
    """One tile's level, with the caption, finding and neighbours it was decided from."""

    tile_index: int
    box: Box
    level: Level
    severity: str | None
    caption: str
    finding: Finding
    neighbours: tuple[Neighbour, ...]
    reasons: dict[str, Any]
    bounds: Bounds | None = None  # [west, south, east, north] WGS84, when georeferenced
    volcano: tuple[str, float] | None = None  # nearest volcano and its distance (km) from the centre

    def to_dict(self) -> dict[str, Any]:
        """The one JSON shape of a tile's decision: the alert report's tiles and the store's results;
        ``bounds`` and ``volcano`` (``{"name", "distance_km"}``) only when the tile is georeferenced."""
        place: dict[str, Any] = {}
        if self.bounds is not None:
            place["bounds"] = [round(side, 6) for side in self.bounds]
        if self.volcano is not None:
            place["volcano"] = {"name": self.volcano[0], "distance_km": round(self.volcano[1], 2)}
        return {
            "tile_index": self.tile_index,
            "box": list(self.box),
            **place,
            "level": self.level,
            "severity": self.severity,
            "caption": self.caption,
            "finding": self.finding.to_dict(),
            "neighbours": [
                {
                    "similarity": float(neighbour.similarity),
                    "caption": neighbour.record.caption,
                    "deformation": bool(neighbour.record.deformation),
                    "activity_type": list(neighbour.record.activity_type),
                    "intensity": list(neighbour.record.intensity),
                    "source": neighbour.record.source,
                }
                for neighbour in self.neighbours
            ],
            "reasons": dict(self.reasons),
        }


@dataclass(frozen=True)
class Decision:
    """An interferogram's level: its strongest tile, with every tile that is not quiet."""

    level: Level
    severity: str | None
    tiles: tuple[TileDecision, ...]


@dataclass(frozen=True)
class Alert:
    """An interferogram's decision with what it was made from, as reports render it."""

    key: str
    frame: str
    volcano: str | None
    primary: date
    secondary: date
    model_version: str
    decision: Decision
    quality: tuple[QualityCheck, ...]
    received_at: datetime
    processed_at: datetime
    diff_png: Path
    volcanoes: tuple[str, ...] = ()  # every volcano a flagged tile is near, strongest tile first
    # Where the frame lies, for the report's map: its WGS84 extent and the volcanoes in it
    # as (name, latitude, longitude); None and () without a georeference.
    footprint: Bounds | None = None
    landmarks: tuple[tuple[str, float, float], ...] = ()


def _rank(intensity: str | None) -> int:
    return INTENSITIES.index(intensity) if intensity in INTENSITIES else -1


def _reported(finding: Finding) -> str:
    """"a high-intensity dyke deformation pattern" / "2 deformation patterns (...)"."""
    described = [" ".join(filter(None, (p.intensity and f"{p.intensity}-intensity", p.type))) for p in finding.patterns]
    if len(described) == 1:
        return f"{'an' if described[0][0] in 'aeiou' else 'a'} {described[0]} deformation pattern"
    return f"{len(described)} deformation patterns ({', '.join(described)})"


def decide_tile(
    tile_index: int,
    box: Sequence[int],
    caption: str,
    finding: Finding,
    neighbours: Sequence[Neighbour],
    settings: AlertSettings,
    *,
    bounds: Bounds | None = None,
    volcano: tuple[str, float] | None = None,
) -> TileDecision:
    """Combine a tile's caption finding with its neighbours' labels into a level; ``bounds``
    and ``volcano`` say where the tile lies, when the frame is georeferenced."""
    neighbours = tuple(neighbours)
    voters = [neighbour for neighbour in neighbours if neighbour.similarity >= settings.min_similarity]
    # A negative cosine similarity is evidence of nothing: it weighs zero.
    weights = [max(float(neighbour.similarity), 0.0) for neighbour in voters]
    total = sum(weights)
    deforming_weight = sum(weight for weight, n in zip(weights, voters) if n.record.deformation)
    vote = deforming_weight / total if total > 0 else None
    deforming_voters = [n for n in voters if n.record.deformation]
    caption_deforms = finding.recognized and finding.deformation
    neighbours_deform = vote is not None and vote >= settings.review_vote

    if caption_deforms:
        confirmed = vote is not None and vote >= settings.alert_vote
        level: Level = "alert" if confirmed else "review"
        rule = "caption_and_neighbours_agree" if confirmed else "neighbours_do_not_confirm"
        subject = f"The caption reports {_reported(finding)}"
        link, threshold = ("and", ">=") if confirmed else ("but", "<")
        threshold = f"{threshold} alert_vote {settings.alert_vote:.2f}"
    else:
        level = "review" if neighbours_deform else "quiet"
        recognised = "recognised" if finding.recognized else "unrecognised"
        rule = f"caption_{recognised}_neighbours_{'deform' if neighbours_deform else 'quiet'}"
        subject = ("The caption reports no deformation" if finding.recognized
                   else "The caption is not an interferogram description")
        link = "but" if neighbours_deform and finding.recognized else "and"
        threshold = f"{'>=' if neighbours_deform else '<'} review_vote {settings.review_vote:.2f}"
    if vote is None:
        explanation = f"{subject} {link} no neighbour was similar enough to vote."
    else:
        explanation = (f"{subject} {link} {len(deforming_voters)} of {len(voters)} voting neighbours show "
                       f"deformation (weighted vote {vote:.2f} {threshold}).")

    severity, severity_from = None, None
    if level != "quiet":
        severity, severity_from = finding.severity, "caption"
        if severity is None:
            severity = strongest(word for n in deforming_voters for word in n.record.intensity)
            severity_from = "neighbours" if severity else None

    reasons: dict[str, Any] = {
        "explanation": explanation,
        "rule": rule,
        "caption_recognized": finding.recognized,
        "caption_deformation": caption_deforms,
        "vote": None if vote is None else round(vote, 4),
        "alert_vote": settings.alert_vote,
        "review_vote": settings.review_vote,
        "min_similarity": settings.min_similarity,
        "voters": len(voters),
        "deforming_voters": len(deforming_voters),
        "similarities": [round(float(n.similarity), 4) for n in neighbours],
        "weights": [round(weight, 4) for weight in weights],
        "deforming_weight": round(deforming_weight, 4),
        "total_weight": round(total, 4),
        "severity_from": severity_from,
    }
    return TileDecision(
        tile_index=tile_index, box=tuple(int(side) for side in box), level=level, severity=severity,
        caption=caption, finding=finding, neighbours=neighbours, reasons=reasons, bounds=bounds, volcano=volcano,
    )


def strength(tile: TileDecision) -> tuple[int, int]:
    return LEVELS.index(tile.level), _rank(tile.severity)


def decide_interferogram(tiles: Iterable[TileDecision]) -> Decision:
    """The strongest tile decides (alert > review > quiet, then severity); every tile that
    is not quiet is kept, in tile order, so a report can outline each of them."""
    contributing = tuple(sorted((tile for tile in tiles if tile.level != "quiet"), key=lambda tile: tile.tile_index))
    if not contributing:
        return Decision("quiet", None, ())
    top = max(contributing, key=strength)
    return Decision(top.level, top.severity, contributing)


def alert_key(frame: Any, primary: date | str, secondary: date | str, model_version: str) -> str:
    """``FRAME/YYYYMMDD_YYYYMMDD/MODEL_VERSION``: the same interferogram judged by the same
    model is the same alert, however often it is processed."""
    def day(value: date | str) -> str:
        return value.strftime("%Y%m%d") if isinstance(value, date) else str(value).replace("-", "")

    return f"{frame}/{day(primary)}_{day(secondary)}/{model_version}"
