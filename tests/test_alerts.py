"""Alert decisions: each level and rule at and around its thresholds, severity, the
interferogram aggregate, the de-duplication key and the JSON form of an ``Alert``."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

import numpy as np

from insarwatch.alerts import (Alert, Decision, FrameCalibration, TileDecision, alert_key, clusters,
                               decide_interferogram, decide_tile)
from insarwatch.config import AlertSettings, load_settings
from insarwatch.findings import parse_caption
from insarwatch.imaging import QualityCheck
from insarwatch.reports import alert_document
from insarwatch.retrieval import IndexRecord, Neighbour

SETTINGS = AlertSettings()
BOX = (224, 0, 448, 224)
DYKE_HIGH = "a dyke - type deformation pattern of high intensity can be detected on the top side of the image."
SILL_LOW = "a sill - type deformation pattern of low intensity can be detected on the central side."
QUIET = "no deformation activity can be detected."
UNTUNED = "arafed image of a map of italy with a red circle"


def deforming(similarity: float, intensity: str = "Medium", kind: str = "Sill") -> Neighbour:
    caption = f"A {kind.lower()}-type deformation pattern of {intensity.lower()} intensity can be detected."
    return Neighbour(similarity, IndexRecord(caption, True, (kind,), (intensity,), f"hephaestus/{kind}{similarity}"))


def quiet(similarity: float) -> Neighbour:
    return Neighbour(similarity, IndexRecord(QUIET, False, (), (), f"hephaestus/quiet{similarity}"))


def decide(caption: str, neighbours: list[Neighbour], settings: AlertSettings = SETTINGS, index: int = 1,
           box: tuple[int, int, int, int] = BOX, detection: float | None = None) -> TileDecision:
    return decide_tile(index, box, caption, parse_caption(caption), neighbours, settings, detection=detection)


def test_caption_confirmed_by_neighbours_is_an_alert_with_its_numbers() -> None:
    tile = decide(DYKE_HIGH, [deforming(0.9), deforming(0.6), quiet(0.5)])
    assert (tile.level, tile.severity, tile.box, tile.tile_index) == ("alert", "high", BOX, 1)
    assert tile.reasons == {
        "explanation": "The caption reports a high-intensity dyke deformation pattern and 2 of 3 voting neighbours "
                       "show deformation (weighted vote 0.75 >= alert_vote 0.50).",
        "rule": "caption_and_neighbours_agree",
        "caption_recognized": True,
        "caption_deformation": True,
        "vote": 0.75,
        "detection": None,
        "unread_rendering": None,
        "alert_vote": 0.5,
        "review_vote": 0.5,
        "min_similarity": 0.0,
        "voters": 3,
        "deforming_voters": 2,
        "similarities": [0.9, 0.6, 0.5],
        "weights": [0.9, 0.6, 0.5],
        "deforming_weight": 1.5,
        "total_weight": 2.0,
        "severity_from": "caption",
    }


def test_a_vote_exactly_at_alert_vote_alerts_and_just_below_asks_for_review() -> None:
    at = decide(SILL_LOW, [deforming(0.8), quiet(0.8)])
    below = decide(SILL_LOW, [deforming(0.8), quiet(0.8001)])
    assert (at.level, at.reasons["vote"]) == ("alert", 0.5)
    assert (below.level, below.reasons["rule"]) == ("review", "neighbours_do_not_confirm")
    assert below.reasons["explanation"].endswith("(weighted vote 0.50 < alert_vote 0.50).")
    assert below.severity == "low"


def test_caption_deformation_without_any_neighbour_is_review_not_alert() -> None:
    tile = decide(DYKE_HIGH, [])
    assert (tile.level, tile.severity, tile.reasons["vote"], tile.reasons["voters"]) == ("review", "high", None, 0)
    assert tile.reasons["explanation"] == ("The caption reports a high-intensity dyke deformation pattern but no "
                                           "neighbour was similar enough to vote.")


def test_quiet_caption_with_deforming_neighbours_is_review_with_their_severity() -> None:
    tile = decide(QUIET, [deforming(0.9, "Low"), deforming(0.85, "High"), quiet(0.8)])
    assert (tile.level, tile.severity) == ("review", "high")
    assert (tile.reasons["rule"], tile.reasons["severity_from"]) == (
        "caption_recognised_neighbours_deform", "neighbours")
    assert tile.reasons["explanation"].startswith("The caption reports no deformation but 2 of 3 voting neighbours")


def test_review_vote_is_inclusive_for_a_quiet_caption() -> None:
    settings = AlertSettings(review_vote=0.4)
    assert decide(QUIET, [deforming(0.4), quiet(0.6)], settings).level == "review"
    assert decide(QUIET, [deforming(0.4), quiet(0.6001)], settings).level == "quiet"


def test_neither_reporting_deformation_is_quiet_without_severity() -> None:
    tile = decide(QUIET, [quiet(0.95), quiet(0.9), deforming(0.3, "High")])
    assert (tile.level, tile.severity, tile.reasons["rule"]) == ("quiet", None, "caption_recognised_neighbours_quiet")
    assert tile.reasons["severity_from"] is None


def test_unrecognised_caption_with_deforming_neighbours_is_review() -> None:
    tile = decide(UNTUNED, [deforming(0.9, "Medium"), deforming(0.8, "Low")])
    assert (tile.level, tile.severity) == ("review", "medium")
    assert tile.reasons["rule"] == "caption_unrecognised_neighbours_deform"
    assert tile.reasons["caption_recognized"] is False
    assert tile.reasons["explanation"].startswith("The caption is not an interferogram description and 2 of 2")


def test_unrecognised_caption_is_never_an_alert_even_with_zero_thresholds() -> None:
    eager = AlertSettings(alert_vote=0.0, review_vote=0.0)
    for caption in (UNTUNED, "", "a close up of a map of italy"):
        assert decide(caption, [deforming(0.99, "High")] * 5, eager).level == "review"


def test_unrecognised_caption_with_quiet_neighbours_is_quiet() -> None:
    tile = decide(UNTUNED, [quiet(0.9)])
    assert (tile.level, tile.reasons["rule"]) == ("quiet", "caption_unrecognised_neighbours_quiet")


def test_neighbours_below_min_similarity_do_not_vote() -> None:
    strict = AlertSettings(min_similarity=0.7)
    tile = decide(SILL_LOW, [quiet(0.9), deforming(0.69), deforming(0.5)], strict)
    assert (tile.level, tile.reasons["voters"], tile.reasons["vote"]) == ("review", 1, 0.0)
    assert tile.reasons["similarities"] == [0.9, 0.69, 0.5] and tile.reasons["weights"] == [0.9]
    assert decide(SILL_LOW, [quiet(0.9), deforming(0.69), deforming(0.5)]).level == "alert"
    alone = decide(QUIET, [deforming(0.6)], strict)
    assert (alone.level, alone.reasons["vote"]) == ("quiet", None)
    assert alone.reasons["explanation"] == (
        "The caption reports no deformation and no neighbour was similar enough to vote.")


def test_negative_similarity_weighs_nothing() -> None:
    tile = decide(SILL_LOW, [deforming(0.5), quiet(-0.9)], AlertSettings(min_similarity=-1))
    assert (tile.level, tile.reasons["vote"], tile.reasons["voters"], tile.reasons["weights"]) == (
        "alert", 1.0, 2, [0.5, 0.0])


def test_alert_vote_comes_from_settings() -> None:
    settings = load_settings(Path("/dev/null"), environ={"INSARWATCH_ALERTS__ALERT_VOTE": "0.8"}).alerts
    assert decide(DYKE_HIGH, [deforming(0.9), deforming(0.9), quiet(0.9)], settings).level == "review"
    assert decide(DYKE_HIGH, [deforming(0.9)] * 4 + [quiet(0.9)], settings).level == "alert"


def test_severity_is_the_strongest_caption_intensity_before_the_neighbours() -> None:
    caption = ("A sill-type deformation pattern of low intensity can be detected on the left side. A mogi-type "
               "deformation pattern of high intensity can be detected on the right side. A dyke-type deformation "
               "pattern of medium intensity can be detected at the bottom.")
    assert decide(caption, [deforming(0.9, "Low")]).severity == "high"
    assert decide(SILL_LOW, [deforming(0.9, "High")]).severity == "low"
    no_intensity = decide("an earthquake - type deformation pattern can be detected on the right side.",
                          [deforming(0.9, "Medium", "Earthquake"), quiet(0.8)])
    assert (no_intensity.level, no_intensity.severity, no_intensity.reasons["severity_from"]) == (
        "alert", "medium", "neighbours")
    assert no_intensity.reasons["explanation"].startswith("The caption reports an earthquake deformation pattern")


def test_several_patterns_are_named_in_the_explanation() -> None:
    caption = ("Two deformation patterns can be detected on the right side. A dyke-type of high intensity on the "
               "leftmost and sill-type of low intensity on the rightmost.")
    assert decide(caption, [deforming(0.9)]).reasons["explanation"].startswith(
        "The caption reports 2 deformation patterns (high-intensity dyke, low-intensity sill) and 1 of 1")


def box(index: int) -> tuple[int, int, int, int]:
    return ((index % 3) * 224, (index // 3) * 224, (index % 3) * 224 + 224, (index // 3) * 224 + 224)


def test_interferogram_takes_the_strongest_level_and_keeps_every_contributing_tile() -> None:
    tiles = [
        decide(QUIET, [quiet(0.9)], index=0, box=box(0)),
        decide(QUIET, [deforming(0.9, "High")], index=1, box=box(1)),
        decide(SILL_LOW, [deforming(0.9)], index=2, box=box(2)),
        decide(UNTUNED, [quiet(0.9)], index=3, box=box(3)),
        decide(DYKE_HIGH, [], index=4, box=box(4)),
    ]
    decision = decide_interferogram(reversed(tiles))
    assert (decision.level, decision.severity) == ("alert", "low")
    assert [(tile.tile_index, tile.box, tile.level) for tile in decision.tiles] == [
        (1, (224, 0, 448, 224), "review"), (2, (448, 0, 672, 224), "alert"), (4, (224, 224, 448, 448), "review")]


def test_among_equal_levels_the_higher_severity_decides() -> None:
    tiles = [decide(SILL_LOW, [deforming(0.9)], index=0), decide(DYKE_HIGH, [deforming(0.9)], index=1),
             decide(QUIET, [deforming(0.9, "Medium")], index=2)]
    decision = decide_interferogram(tiles)
    assert (decision.level, decision.severity, len(decision.tiles)) == ("alert", "high", 3)
    reviews = decide_interferogram([tiles[2], decide(DYKE_HIGH, [], index=3)])
    assert (reviews.level, reviews.severity) == ("review", "high")


def test_an_all_quiet_or_empty_interferogram_is_quiet_with_no_tiles() -> None:
    assert decide_interferogram([decide(QUIET, [quiet(0.9)], index=i) for i in range(4)]) == Decision("quiet", None, ())
    assert decide_interferogram([]) == Decision("quiet", None, ())


def test_alert_key_is_stable_and_distinct_per_model_version_and_pair() -> None:
    key = alert_key("124D_04854_171313", date(2026, 11, 2), date(2026, 11, 14), "20261120T101500Z")
    assert key == "124D_04854_171313/20261102_20261114/20261120T101500Z"
    assert alert_key("124D_04854_171313", "20261102", "2026-11-14", "20261120T101500Z") == key
    assert alert_key("124D_04854_171313", date(2026, 11, 2), date(2026, 11, 14), "20261122T090000Z") != key
    assert alert_key("124D_04854_171313", date(2026, 11, 2), date(2026, 11, 26), "20261120T101500Z") != key
    assert alert_key("087A_05372_131313", date(2026, 11, 2), date(2026, 11, 14), "20261120T101500Z") != key


def test_the_alert_document_is_plain_json_with_everything_a_report_shows(tmp_path: Path) -> None:
    tiles = [decide(QUIET, [quiet(0.9)], index=0, box=box(0)), decide(DYKE_HIGH, [deforming(0.93, "High", "Dyke")])]
    alert = Alert(
        key=alert_key("124D_04854_171313", date(2026, 11, 2), date(2026, 11, 14), "v1"),
        frame="124D_04854_171313", volcano="Etna", primary=date(2026, 11, 2), secondary=date(2026, 11, 14),
        model_version="v1", decision=decide_interferogram(tiles),
        quality=(QualityCheck("coherence_mean", 0.71, 0.25, True),),
        received_at=datetime(2026, 11, 15, 6, 0, tzinfo=timezone.utc),
        processed_at=datetime(2026, 11, 15, 6, 2, 30, tzinfo=timezone.utc),
        diff_png=tmp_path / "20261102_20261114.geo.diff.png",
    )
    document = json.loads(json.dumps(alert_document(alert)))
    document.update({key: document["times"][key] for key in ("primary", "secondary", "received_at")})
    assert {key: document[key] for key in ("key", "frame", "volcano", "primary", "secondary", "level", "severity",
                                           "received_at", "diff_png")} == {
        "key": "124D_04854_171313/20261102_20261114/v1", "frame": "124D_04854_171313", "volcano": "Etna",
        "primary": "2026-11-02", "secondary": "2026-11-14", "level": "alert", "severity": "high",
        "received_at": "2026-11-15T06:00:00+00:00", "diff_png": str(tmp_path / "20261102_20261114.geo.diff.png")}
    (tile,) = document["tiles"]
    assert (tile["tile_index"], tile["box"], tile["caption"]) == (1, list(BOX), DYKE_HIGH)
    assert tile["finding"] == parse_caption(DYKE_HIGH).to_dict()
    assert tile["neighbours"] == [{"similarity": 0.93, "caption": deforming(0.93, "High", "Dyke").record.caption,
                                   "deformation": True, "activity_type": ["Dyke"], "intensity": ["High"],
                                   "source": "hephaestus/Dyke0.93"}]
    assert tile["reasons"]["rule"] == "caption_and_neighbours_agree"
    assert document["quality"] == [{"name": "coherence_mean", "value": 0.71, "threshold": 0.25, "passed": True,
                                    "detail": ""}]


def test_decisions_are_frozen() -> None:
    tile = decide(DYKE_HIGH, [deforming(0.9)])
    with pytest.raises(AttributeError):
        tile.level = "quiet"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        decide_interferogram([tile]).level = "quiet"  # type: ignore[misc]


def grid(alerting: dict[int, list[Neighbour]], columns: int = 6, rows: int = 5) -> list[TileDecision]:
    """A frame of ``columns`` x ``rows`` 224 px tiles, quiet except the ``alerting`` ones (index → neighbours)."""
    tiles = []
    for index in range(columns * rows):
        left, top = (index % columns) * 224, (index // columns) * 224
        caption, neighbours = (SILL_LOW, alerting[index]) if index in alerting else (QUIET, [quiet(0.9)])
        tiles.append(decide(caption, neighbours, index=index, box=(left, top, left + 224, top + 224)))
    return tiles


MARGINAL = [deforming(0.9), deforming(0.9), deforming(0.9), quiet(0.9), quiet(0.9)]  # vote 0.6


def test_a_quiet_frame_with_one_marginal_tile_asks_for_review_not_alert() -> None:
    tiles = grid({14: MARGINAL})
    assert tiles[14].level == "alert" and tiles[14].score == pytest.approx(0.6)
    calibration = FrameCalibration(tuple([0.0] * 60 + [0.6, 0.8]), "test")
    for decision in (decide_interferogram(tiles, SETTINGS), decide_interferogram(tiles, SETTINGS, calibration)):
        assert decision.level == "review"
        assert decision.reasons["rule"] == "isolated_tiles_below_threshold"
        assert decision.reasons["alert_tiles"] == [14] and decision.reasons["clusters"] == [[14]]
        assert [tile.tile_index for tile in decision.tiles] == [14]
    # 62 validation scores cannot vouch for 1 false alarm in 20 frames of 30 tiles.
    assert decide_interferogram(tiles, SETTINGS, calibration).reasons["isolated_threshold"] is None


def test_a_coherent_cluster_alerts_with_its_tiles_named() -> None:
    # Tiles 14 and 21 touch at a corner (one row down, one column right).
    decision = decide_interferogram(grid({14: MARGINAL, 21: MARGINAL, 3: MARGINAL}), SETTINGS)
    assert json.loads(json.dumps(decision.reasons)) == decision.reasons
    assert (decision.level, decision.severity) == ("alert", "low")
    assert decision.reasons["rule"] == "coherent_cluster"
    assert decision.reasons["clusters"] == [[14, 21], [3]]
    assert "2 adjacent tiles (14, 21)" in decision.reasons["explanation"]
    strict = AlertSettings(min_cluster_tiles=3)
    assert decide_interferogram(grid({14: MARGINAL, 21: MARGINAL}), strict).level == "review"


def test_an_isolated_tile_alerts_alone_only_above_the_calibrated_threshold() -> None:
    unanimous = [deforming(0.9)] * 5
    calibration = FrameCalibration(tuple([0.0] * 95 + [0.6] * 5), "test")
    # A one-tile frame at 5 %: the 96th smallest of 100 quiet scores, 0.6, must be exceeded.
    assert calibration.threshold(1, 0.05) == 0.6
    single = [decide(SILL_LOW, unanimous, index=0, box=(0, 0, 224, 224))]
    decided = decide_interferogram(single, SETTINGS, calibration)
    assert (decided.level, decided.reasons["rule"]) == ("alert", "strong_isolated_tile")
    assert decide_interferogram([decide(SILL_LOW, MARGINAL, index=0)], SETTINGS, calibration).level == "review"
    # Uncalibrated, an isolated tile needs alerts.isolated_tile_vote.
    assert decide_interferogram(single, AlertSettings(isolated_tile_vote=1.0)).level == "alert"
    assert decide_interferogram(grid({14: MARGINAL}), AlertSettings(isolated_tile_vote=0.6)).level == "alert"


def test_with_a_detector_a_strong_isolated_tile_stands_above_quiet_tiles_whose_vote_saturates_too() -> None:
    """Unanimous neighbours vote 1.0 for deforming tiles and for the top quiet ones alike; the
    index detector's probability is the score then, and separates them."""
    unanimous = [deforming(0.9)] * 5
    quiet_top = decide(SILL_LOW, unanimous, detection=0.93)
    assert quiet_top.score == 0.93 and quiet_top.reasons["vote"] == 1.0
    assert "probability of 0.93" in quiet_top.reasons["explanation"]
    assert decide(QUIET, unanimous, detection=0.99).score == 0.0  # the caption reports none
    calibration = FrameCalibration(tuple([0.0] * 590 + [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93]), "test")

    def frame(detection: float) -> list[TileDecision]:  # 30 tiles, tile 14 flagged
        tiles = grid({})
        tiles[14] = decide(SILL_LOW, unanimous, index=14, box=tiles[14].box, detection=detection)
        return tiles

    decided = decide_interferogram(frame(0.9999), SETTINGS, calibration)
    assert (decided.level, decided.reasons["rule"]) == ("alert", "strong_isolated_tile")
    # 598 quiet scores, 30 tiles at 5 %: the largest quiet score must be exceeded.
    assert "score 0.9999 reaches the frame threshold 0.93" in decided.reasons["explanation"]
    assert decide_interferogram(frame(0.92), SETTINGS, calibration).level == "review"
    # Without the detector both would score their vote, 1.0: alike.
    assert decide(SILL_LOW, unanimous).score == 1.0


def test_a_tile_of_colours_that_fit_no_known_table_is_for_review_at_most() -> None:
    unanimous = [deforming(0.9)] * 5
    why = "colours fit no known table: pixels on each table's curve pha 3% (need 20%)"
    tile = decide_tile(1, BOX, DYKE_HIGH, parse_caption(DYKE_HIGH), unanimous, SETTINGS, unread=why)
    assert (tile.level, tile.reasons["rule"], tile.reasons["unread_rendering"]) == ("review", "rendering_unknown", why)
    assert why in tile.reasons["explanation"] and "review at most" in tile.reasons["explanation"]
    assert decide(DYKE_HIGH, unanimous).level == "alert"  # the same tile, read through a known table
    assert decide_tile(1, BOX, QUIET, parse_caption(QUIET), [quiet(0.9)], SETTINGS, unread=why).level == "quiet"


def test_the_calibrated_threshold_keeps_quiet_frames_below_the_target_rate() -> None:
    rng = np.random.default_rng(11)
    quiet_scores = rng.beta(0.5, 4, size=3000)  # continuous, mostly near 0, as a good model's quiet tiles
    calibration = FrameCalibration(tuple(quiet_scores), "simulated")
    rate, tiles = 0.1, 10
    threshold = calibration.threshold(tiles, rate)
    frames = rng.beta(0.5, 4, size=(20000, tiles))
    alarms = float(np.mean(frames.max(axis=1) > threshold))
    assert 0.05 < alarms <= rate + 0.01
    assert calibration.threshold(tiles, rate / 2) > threshold
    assert FrameCalibration.from_dict(calibration.to_dict()).threshold(tiles, rate) == pytest.approx(threshold)


def test_clusters_join_tiles_through_edges_and_corners_only() -> None:
    tiles = grid({0: MARGINAL, 1: MARGINAL, 7: MARGINAL, 9: MARGINAL})
    assert [[t.tile_index for t in group] for group in clusters([tiles[i] for i in (0, 1, 7, 9)])] == [[0, 1, 7], [9]]
