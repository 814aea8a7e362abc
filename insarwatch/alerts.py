"""Alert decisions: a tile's finding + its retrieved neighbours → alert, review or quiet.

Owns the rule that turns what the captioner said (a ``Finding``) and what the nearest
expert-captioned interferograms show (their labels, weighted by similarity) into a level
a volcanologist acts on, with the numbers behind it kept in ``reasons``; the per-
interferogram aggregate (the strongest tile, with every contributing tile and its pixel
box); the de-duplication key (one alert per frame, date pair and model version); and the
``Alert`` record reports and delivery render. Pure functions: the store enforces the
key's uniqueness, the daemon supplies the clock.

Rules, per tile (the vote is the similarity-weighted share of voting neighbours whose
label is deformation; neighbours below ``alerts.min_similarity`` do not vote; the tile's
score, which a frame threshold is calibrated on, is the index detector's probability of
deformation when the caption reports deformation — the vote for a model without a
detector — and 0 otherwise):
  alert  — the caption reports deformation and vote >= ``alert_vote``;
  review — the caption reports deformation but the neighbours do not confirm it, or the
           caption reports none (or is not an interferogram description) while
           vote >= ``review_vote``;
  quiet  — otherwise: neither reports deformation.
An unrecognised caption never reports deformation, so it is never an alert; nor is a tile of
a file whose colours fit no known table (a phase model shown raw RGB it was never trained on):
review at most.

Rules, per interferogram (a frame of 30-100 tiles must not alert on one marginal tile):
  alert  — at least ``min_cluster_tiles`` alert tiles touch each other (a coherent
           cluster), or an isolated alert tile's score exceeds the frame
           threshold calibrated on the model's validation split for the frame's size and
           ``frame_false_alarm_rate`` (``FrameCalibration``), or, for a model without a
           calibration, reaches ``isolated_tile_vote``;
  review — otherwise, when any tile is not quiet;
  quiet  — every tile is quiet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .config import AlertSettings
from .findings import INTENSITIES, Finding, strongest
from .volcanoes import Bounds

if TYPE_CHECKING:
    from .imaging import QualityCheck
    from .retrieval import Neighbour

Level = Literal["alert", "review", "quiet"]
LEVELS: tuple[Level, ...] = ("quiet", "review", "alert")
Box = tuple[int, int, int, int]


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

    @property
    def score(self) -> float:
        """The tile's evidence for deformation when the caption reports deformation (the index
        detector's probability, else its neighbours' vote), else 0: the scale a frame threshold
        is calibrated on."""
        if not self.reasons["caption_deformation"]:
            return 0.0
        evidence = self.reasons.get("detection")
        evidence = self.reasons["vote"] if evidence is None else evidence
        return 0.0 if evidence is None else float(evidence)

    def place(self) -> dict[str, Any]:
        """Where the tile lies, as JSON: ``bounds`` and ``volcano`` when georeferenced, else nothing."""
        place: dict[str, Any] = {}
        if self.bounds is not None:
            place["bounds"] = [round(side, 6) for side in self.bounds]
        if self.volcano is not None:
            place["volcano"] = {"name": self.volcano[0], "distance_km": round(self.volcano[1], 2)}
        return place

    def to_dict(self) -> dict[str, Any]:
        """The one JSON shape of a tile's decision: the alert report's tiles and the store's results;
        ``bounds`` and ``volcano`` (``{"name", "distance_km"}``) only when the tile is georeferenced."""
        return {
            "tile_index": self.tile_index,
            "box": list(self.box),
            **self.place(),
            "level": self.level,
            "score": round(self.score, 4),
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
    """An interferogram's level, with every tile that is not quiet and why (``reasons``)."""

    level: Level
    severity: str | None
    tiles: tuple[TileDecision, ...]
    reasons: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class FrameCalibration:
    """The scores of the quiet tiles of a model's validation split, from which the threshold
    an isolated tile must exceed is set for a frame's size and a false-alarm rate.

    Split-conformal: with ``n`` exchangeable quiet scores, a new quiet tile exceeds the
    ``ceil((n + 1)(1 - p))``-th smallest with probability at most ``p``. A frame of ``N``
    quiet tiles then alerts on an isolated tile with probability at most ``rate`` when
    ``p = 1 - (1 - rate) ** (1 / N)``; when ``p`` is finer than ``n`` can resolve, no
    isolated tile alerts alone (infinite threshold): only a cluster can.
    """

    quiet_scores: tuple[float, ...]
    source: str

    def threshold(self, tiles: int, rate: float) -> float:
        per_tile = 1 - (1 - rate) ** (1 / max(tiles, 1))
        scores = sorted(self.quiet_scores)
        rank = math.ceil((len(scores) + 1) * (1 - per_tile))
        return math.inf if rank > len(scores) else scores[rank - 1]

    def to_dict(self) -> dict[str, Any]:
        return {"quiet_scores": list(self.quiet_scores), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameCalibration:
        return cls(tuple(float(score) for score in data["quiet_scores"]), str(data["source"]))


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
    detection: float | None = None,
    unread: str | None = None,
) -> TileDecision:
    """Combine a tile's caption finding with its neighbours' labels into a level; ``bounds``
    and ``volcano`` say where the tile lies, when the frame is georeferenced; ``detection`` is
    the index detector's probability (``describe.Described.detection``), kept for the score;
    ``unread`` says why the file's colours fit no known table (``reading.ModelImage.unknown``)."""
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
        level: Level = "alert" if confirmed and unread is None else "review"
        rule = ("rendering_unknown" if unread is not None else "caption_and_neighbours_agree") if confirmed \
            else "neighbours_do_not_confirm"
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
    if detection is not None:
        explanation += f" The index's detector gives deformation a probability of {detection:.4g}."
    if unread is not None:
        explanation += (f" The colours fit no known table ({unread}): the model saw raw RGB, which it was not "
                        "trained on, so this tile is for review at most.")

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
        "detection": detection,  # unrounded: a frame threshold may sit in its sixth decimal
        "unread_rendering": unread,
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


def _touch(a: Box, b: Box) -> bool:
    """Boxes that overlap or share an edge or a corner."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def clusters(tiles: Sequence[TileDecision]) -> list[tuple[TileDecision, ...]]:
    """Groups of ``tiles`` connected through touching boxes, largest first."""
    groups: list[tuple[TileDecision, ...]] = []
    left = list(tiles)
    while left:
        group = [left.pop(0)]
        for member in group:
            touching = [tile for tile in left if _touch(member.box, tile.box)]
            group += touching
            left = [tile for tile in left if tile not in touching]
        groups.append(tuple(sorted(group, key=lambda tile: tile.tile_index)))
    return sorted(groups, key=len, reverse=True)


def decide_interferogram(tiles: Iterable[TileDecision], settings: AlertSettings | None = None,
                         calibration: FrameCalibration | None = None) -> Decision:
    """The frame rule of the module docstring. Every tile that is not quiet is kept, in tile
    order, so a report can outline each of them; ``reasons`` says which rule decided."""
    settings = settings or AlertSettings()
    tiles = list(tiles)
    contributing = tuple(sorted((tile for tile in tiles if tile.level != "quiet"), key=lambda tile: tile.tile_index))
    if not contributing:
        return Decision("quiet", None, (), {"rule": "all_tiles_quiet", "tiles": len(tiles),
                                            "explanation": f"None of the {len(tiles)} tiles reports deformation."})
    alerting = [tile for tile in contributing if tile.level == "alert"]
    groups = clusters(alerting)
    largest = groups[0] if groups else ()
    if calibration is not None:
        threshold = calibration.threshold(len(tiles), settings.frame_false_alarm_rate)
        threshold_from = (f"calibrated on {len(calibration.quiet_scores)} quiet validation tiles ({calibration.source}) "
                          f"for a frame of {len(tiles)} tiles at false-alarm rate {settings.frame_false_alarm_rate:g}")
    else:
        threshold = settings.isolated_tile_vote
        threshold_from = "alerts.isolated_tile_vote (the model has no calibration)"
    strongest_isolated = max((tile for group in groups for tile in group), key=lambda tile: tile.score, default=None)
    reasons: dict[str, Any] = {
        "tiles": len(tiles), "alert_tiles": [tile.tile_index for tile in alerting],
        "clusters": [[tile.tile_index for tile in group] for group in groups],
        "min_cluster_tiles": settings.min_cluster_tiles,
        "isolated_threshold": None if math.isinf(threshold) else threshold,
        "isolated_threshold_from": threshold_from,
    }
    if len(largest) >= settings.min_cluster_tiles:
        level: Level = "alert"
        top = max(largest, key=strength)
        reasons["rule"] = "coherent_cluster"
        reasons["explanation"] = (f"{len(largest)} adjacent tiles ({', '.join(str(t.tile_index) for t in largest)}) "
                                  f"each have a caption and neighbours that agree on deformation "
                                  f"(at least {settings.min_cluster_tiles} needed).")
    elif strongest_isolated is not None and (strongest_isolated.score > threshold or (
            calibration is None and strongest_isolated.score >= threshold)):
        level, top = "alert", strongest_isolated
        reasons["rule"] = "strong_isolated_tile"
        reasons["explanation"] = (f"Tile {top.tile_index} alone: its score {top.score:.6g} reaches the frame "
                                  f"threshold {threshold:.6g} ({threshold_from}).")
    else:
        level, top = "review", max(contributing, key=strength)
        if alerting:
            reasons["rule"] = "isolated_tiles_below_threshold"
            bound = "no isolated tile can alert alone" if math.isinf(threshold) else f"threshold {threshold:.6g}"
            reasons["explanation"] = (f"{len(alerting)} alert tile(s), none adjacent to another and none above the "
                                      f"frame's {bound} ({threshold_from}): review.")
        else:
            reasons["rule"] = "review_tiles_only"
            reasons["explanation"] = f"{len(contributing)} tile(s) for review, none where caption and neighbours agree."
    return Decision(level, top.severity, contributing, reasons)


def alert_key(frame: Any, primary: date | str, secondary: date | str, model_version: str) -> str:
    """``FRAME/YYYYMMDD_YYYYMMDD/MODEL_VERSION``: the same interferogram judged by the same
    model is the same alert, however often it is processed."""
    def day(value: date | str) -> str:
        return value.strftime("%Y%m%d") if isinstance(value, date) else str(value).replace("-", "")

    return f"{frame}/{day(primary)}_{day(secondary)}/{model_version}"
