"""Alert pages and digests: content, self-containment, escaping, files, the ``report`` command."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from helpers import FLAGGED_BOX, FRAME, PRIMARY, SECONDARY, VOLCANO, make_alert
from typer.testing import CliRunner

from insarwatch import reports
from insarwatch.cli import app
from insarwatch.config import Settings, Volcano
from insarwatch.errors import InputError, InsarwatchError
from insarwatch.store import AlertRecord, Store, TileResult

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def alert(tmp_path: Path):
    return make_alert(tmp_path / "drop")


def _rendered(alert, base_url: str | None = None) -> reports.Report:
    frame, problem = reports.load_frame_image(alert, Settings().imaging.max_pixels)
    assert problem is None
    return reports.build_alert_report(alert, frame, base_url=base_url)


def test_alert_page_is_self_contained(alert) -> None:
    html = _rendered(alert).html
    resources = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, flags=re.IGNORECASE)
    assert resources, "the page has images"
    assert all(resource.startswith("data:image/") for resource in resources)
    assert not re.search(r"<(?:link|script|iframe|object)\b", html, flags=re.IGNORECASE)
    assert "url(" not in html
    flagged = [tile for tile in alert.decision.tiles if tile.level in ("alert", "review")]
    assert html.count("<img ") == 1 + len(flagged)


def test_alert_page_shows_what_a_volcanologist_needs(alert) -> None:
    html = _rendered(alert).html
    tile = next(tile for tile in alert.decision.tiles if tuple(tile.box) == FLAGGED_BOX)
    for expected in (FRAME, VOLCANO, "v1", str(PRIMARY), str(SECONDARY), "2026-11-15 06:00:00 UTC",
                     "2026-11-15 06:02:30 UTC", tile.caption, "hephaestus/101", "0.940", "coherence mean",
                     "passed", "dyke"):
        assert expected in html, expected
    assert f">{alert.decision.level}<" in html
    # The frame rule that decided, in words (alerts.decide_interferogram).
    assert alert.decision.reasons["explanation"].split(":")[0] in html


def test_caption_markup_is_shown_as_text(tmp_path: Path) -> None:
    hostile = ("a dyke - type deformation pattern of high intensity can be detected on the top side "
               "<script>alert('x')</script>")
    alert = make_alert(tmp_path / "drop", caption=hostile)
    report = _rendered(alert)
    for html in (report.html, report.email_html):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert report.document["tiles"][[t["box"] for t in report.document["tiles"]].index(list(FLAGGED_BOX))][
        "caption"] == hostile


def test_alert_json_carries_the_same_content(alert) -> None:
    document = json.loads(json.dumps(_rendered(alert).document))
    assert document["schema_version"] == reports.SCHEMA_VERSION
    assert document["kind"] == "alert"
    assert document["key"] == alert.key
    assert (document["frame"], document["volcano"], document["model_version"]) == (FRAME, VOLCANO, "v1")
    assert document["level"] == alert.decision.level
    assert document["reasons"] == alert.decision.reasons and document["reasons"]["rule"]
    assert document["times"] == {
        "primary": "2026-11-02", "secondary": "2026-11-14", "temporal_baseline_days": 12,
        "received_at": "2026-11-15T06:00:00+00:00", "processed_at": "2026-11-15T06:02:30+00:00",
    }
    flagged = next(tile for tile in document["tiles"] if tile["box"] == list(FLAGGED_BOX))
    assert flagged["finding"]["deformation"] is True
    assert flagged["finding"]["patterns"][0]["type"] == "dyke"
    assert [n["similarity"] for n in flagged["neighbours"]] == pytest.approx([0.94, 0.91, 0.88])
    assert flagged["neighbours"][0]["activity_type"] == ["Dyke"]
    assert flagged["reasons"]
    assert [check["name"] for check in document["quality"]] == ["nodata_fraction", "coherence_mean", "artifact_score"]


def test_flagged_tiles_are_outlined_and_shown_at_full_size(alert) -> None:
    report = _rendered(alert)
    figures = {figure.name: figure for figure in report.figures}
    frame = Image.open(alert.diff_png).convert("RGB")
    tile = next(tile for tile in alert.decision.tiles if tuple(tile.box) == FLAGGED_BOX)
    crop = Image.open(io.BytesIO(figures[f"tile-{tile.tile_index}"].data))
    assert crop.size == (224, 224)
    assert np.array_equal(np.asarray(crop.convert("RGB")), np.asarray(frame.crop(FLAGGED_BOX)))
    thumbnail = np.asarray(Image.open(io.BytesIO(figures["thumbnail"].data)).convert("RGB")).astype(int)
    assert thumbnail.shape[:2] == (448, 672)  # the frame is smaller than the thumbnail limit
    outline = np.array(reports.LEVEL_COLOURS[tile.level])
    # The middle of the outline's bottom edge, clear of the tile-number label.
    assert np.abs(thumbnail[222, 336] - outline).max() < 40
    assert np.abs(thumbnail[300, 100] - np.asarray(frame)[300, 100]).max() < 40


def test_large_frames_are_thumbnailed(tmp_path: Path, alert) -> None:
    big = Image.new("RGB", (3000, 2000), (40, 90, 160))
    figures = reports.alert_figures(alert, big, max_side=900)
    assert (figures[0].width, figures[0].height) == (900, 600)
    assert all((figure.width, figure.height) == (224, 224) for figure in figures[1:])


def test_missing_interferogram_still_gives_a_page(tmp_path: Path) -> None:
    alert = make_alert(tmp_path / "drop", diff_png=tmp_path / "gone.geo.diff.png")
    frame, problem = reports.load_frame_image(alert, Settings().imaging.max_pixels)
    assert frame is None and "gone.geo.diff.png" in problem
    report = reports.build_alert_report(alert, frame, image_problem=problem)
    assert report.figures == ()
    assert "cannot be shown" in report.html and "gone.geo.diff.png" in report.html


def test_written_under_reports_alerts_with_a_safe_name(tmp_path: Path, alert) -> None:
    html_path, json_path = reports.write_report(_rendered(alert), tmp_path / "reports")
    assert html_path.parent == tmp_path / "reports" / "alerts"
    assert html_path.stem == json_path.stem == reports.safe_name(alert.key)
    assert "/" not in html_path.name and html_path.read_text().startswith("<!DOCTYPE html>")
    assert json.loads(json_path.read_text())["key"] == alert.key
    geojson = json_path.with_suffix(".geojson")
    assert sorted(p.name for p in html_path.parent.iterdir()) == sorted([html_path.name, json_path.name, geojson.name])
    # The sample frame has no georeference: a valid, empty FeatureCollection for the same alert.
    assert json.loads(geojson.read_text())["features"] == [] and json.loads(geojson.read_text())["alert"]["key"] == alert.key


def test_safe_names_never_collide() -> None:
    keys = ["124D_04854_171313/20261102_20261114/v1", "124D_04854_171313_20261102_20261114_v1", "a:b", "a_b", "../x"]
    names = [reports.safe_name(key) for key in keys]
    assert len(set(names)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) and not name.startswith(".") for name in names)


def test_unwritable_reports_dir_is_one_line_error(tmp_path: Path, alert) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("not a directory")
    with pytest.raises(InsarwatchError, match="cannot write report"):
        reports.write_report(_rendered(alert), blocker)


# --------------------------------------------------------------------------- digest


def _interferogram(store: Store, frame: str, n: int, at: datetime) -> str:
    primary = PRIMARY + timedelta(days=n)
    secondary = primary + timedelta(days=12)
    pair = f"{primary:%Y%m%d}_{secondary:%Y%m%d}"
    key = f"{frame}/{pair}"
    store.discover(key, f"/drop/{key}/{pair}.geo.diff.png", frame, primary, secondary, at)
    store.queue(key, at)
    store.claim(10, at)
    return key


def _populate(store: Store, alert_payload: dict) -> None:
    other = "022A_05301_131313"
    for n in range(3):
        _interferogram(store, FRAME, n, T0 + timedelta(hours=n))
    alert_key = f"{FRAME}/alert"
    keys = [f"{FRAME}/{PRIMARY + timedelta(days=n):%Y%m%d}_{PRIMARY + timedelta(days=n + 12):%Y%m%d}"
            for n in range(3)]
    tile = TileResult(0, (0, 0, 224, 224), "x", {}, [], {})
    store.complete(keys[0], [tile], "v1", "alert", T0 + timedelta(hours=3),
                   AlertRecord(alert_key, keys[0], "alert", "high", "v1", alert_payload, T0 + timedelta(hours=3)), [])
    store.complete(keys[1], [tile], "v1", "quiet", T0 + timedelta(hours=3))
    store.reject(keys[2], "coherence_mean", T0 + timedelta(hours=3), "mean coherence 0.1 below 0.25")
    for n in range(2):
        key = _interferogram(store, other, n, T0)
        store.reject(key, "nodata_fraction", T0 + timedelta(minutes=5))
    late = _interferogram(store, other, 5, T0 + timedelta(days=30))
    store.complete(late, [tile], "v1", "quiet", T0 + timedelta(days=30))


def _settings(tmp_path: Path, **notify) -> Settings:
    return Settings(var_dir=tmp_path / "var", drop_dir=tmp_path / "drop",
                    volcanoes=[Volcano(name=VOLCANO, frames=[FRAME])], notify=notify)


def test_digest_counts_per_frame_and_volcano(tmp_path: Path, alert) -> None:
    settings = _settings(tmp_path)
    payload = {"document": reports.alert_document(alert)}
    with Store(tmp_path / "state.db") as store:
        _populate(store, payload)
        digest = reports.digest_from_store(store, T0 - timedelta(days=1), T0 + timedelta(days=1), settings)
    by_frame = {frame.frame: frame for frame in digest.frames}
    etna, other = by_frame[FRAME], by_frame["022A_05301_131313"]
    assert digest.frames[0].frame == FRAME  # volcanoes first, then frames with no volcano
    assert (etna.volcano, etna.arrived, etna.processed, etna.alert, etna.review) == (VOLCANO, 3, 2, 1, 0)
    assert etna.rejected == {"coherence_mean": 1}
    assert (other.volcano, other.arrived, other.processed, other.rejected) == (None, 2, 0, {"nodata_fraction": 2})
    assert [link.href for link in etna.alerts] == [f"../alerts/{reports.safe_name(FRAME + '/alert')}.html"]
    assert etna.alerts[0].pair == "2026-11-02 → 2026-11-14"

    report = reports.build_digest_report(digest, T0 + timedelta(days=1))
    assert report.document["schema_version"] == reports.SCHEMA_VERSION
    assert report.document["totals"] == {"arrived": 5, "processed": 2, "rejected": 3, "quarantined": 0,
                                         "review": 0, "alert": 1}
    assert [group["volcano"] for group in report.document["volcanoes"]] == [VOLCANO, "—"]
    assert f'href="../alerts/{reports.safe_name(FRAME + "/alert")}.html"' in report.html
    assert "2 × nodata_fraction" in report.html
    assert "1 alert(s)" in report.subject


def test_digest_links_use_the_report_server_when_configured(tmp_path: Path, alert) -> None:
    settings = _settings(tmp_path, report_base_url="https://observatory.example/insarwatch/")
    with Store(tmp_path / "state.db") as store:
        _populate(store, {"document": reports.alert_document(alert)})
        digest = reports.digest_from_store(store, T0 - timedelta(days=1), T0 + timedelta(days=1), settings)
    link = next(frame for frame in digest.frames if frame.alerts).alerts[0]
    assert link.href == f"https://observatory.example/insarwatch/alerts/{reports.safe_name(FRAME + '/alert')}.html"


def test_digest_period_parsing() -> None:
    now = datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc)
    assert reports.digest_period("2026-11-01", None, now) == (datetime(2026, 11, 1, tzinfo=timezone.utc), now)
    assert reports.digest_period("2026-11-01", "2026-11-07", now)[1] == datetime(2026, 11, 8, tzinfo=timezone.utc)
    with pytest.raises(InputError, match="not a date"):
        reports.digest_period("2026-13-01", None, now)
    with pytest.raises(InputError, match="ends before it starts"):
        reports.digest_period("2026-11-07", "2026-11-01", now)


def test_report_command_writes_the_digest(tmp_path: Path, alert) -> None:
    settings = _settings(tmp_path)
    with Store(settings.state_db) as store:
        _populate(store, {"document": reports.alert_document(alert)})
    env = {"INSARWATCH_VAR_DIR": str(settings.var_dir), "INSARWATCH_CONFIG": str(tmp_path / "insarwatch.toml")}
    (tmp_path / "insarwatch.toml").write_text(f'[[volcanoes]]\nname = "{VOLCANO}"\nframes = ["{FRAME}"]\n')
    result = CliRunner().invoke(app, ["report", "--since", "2026-11-09", "--until", "2026-11-10"], env=env)
    assert result.exit_code == 0, result.output
    html_path, json_path = (Path(line) for line in result.stdout.split())
    assert html_path.parent == settings.reports_dir / "digests"
    document = json.loads(json_path.read_text())
    assert document["totals"]["arrived"] == 5 and document["totals"]["alert"] == 1
    assert document["until"] == "2026-11-11T00:00:00+00:00"
    assert VOLCANO in html_path.read_text()

    bad = CliRunner().invoke(app, ["report", "--since", "yesterday"], env=env)
    assert bad.exit_code == 2
    assert "yesterday: not a date" in bad.output


def test_report_command_without_a_database_gives_an_empty_digest(tmp_path: Path) -> None:
    env = {"INSARWATCH_VAR_DIR": str(tmp_path / "var"), "INSARWATCH_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    result = CliRunner().invoke(app, ["report", "--since", "2026-11-01"], env=env)
    assert result.exit_code == 0, result.output
    document = json.loads(Path(result.stdout.split()[1]).read_text())
    assert document["frames"] == [] and document["totals"]["arrived"] == 0
    assert not (tmp_path / "var" / "state.db").exists()


# --------------------------------------------------------------------------- where: map and coordinates


def test_a_georeferenced_alert_page_shows_coordinates_a_map_and_the_volcano(tmp_path: Path) -> None:
    from insarwatch.synthetic.drop import write_drop
    from insarwatch.synthetic.truth import truth_alert
    from insarwatch.volcanoes import default_catalogue, haversine_km

    frame = write_drop(tmp_path / "drop", frames=1, seed=3, pairs=1, size=(672, 448), volcano=(336, 224))[0]
    truth = frame.interferograms[0]
    settings = Settings(var_dir=tmp_path / "var", drop_dir=tmp_path / "drop")
    alert = truth_alert(truth, settings, "v1", datetime(2026, 11, 29, tzinfo=timezone.utc))
    report = reports.build_alert_report(alert, Image.open(truth.diff_png))
    document = report.document

    west, south, east, north = document["footprint"]
    assert west < east and south < north
    place = default_catalogue().named(truth.volcano_name)[0]
    assert west <= place.longitude <= east and south <= place.latitude <= north
    assert truth.volcano_name in [landmark["name"] for landmark in document["landmarks"]]
    assert truth.volcano_name in alert.volcanoes  # the deforming tiles cover the volcano they were placed around
    flagged = [t for t in document["tiles"] if t["level"] in ("alert", "review")]
    assert flagged and all(t["bounds"] and t["volcano"] for t in flagged)
    for t in flagged:
        t_west, t_south, t_east, t_north = t["bounds"]
        distance = float(haversine_km(np.radians((t_south + t_north) / 2), np.radians((t_west + t_east) / 2),
                                      np.radians(place.latitude), np.radians(place.longitude)))
        if t["volcano"]["name"] == place.name:
            assert t["volcano"]["distance_km"] == pytest.approx(distance, abs=0.01)

    figure = next(f for f in report.figures if f.name == "map")
    drawn = Image.open(io.BytesIO(figure.data))
    assert drawn.size == (figure.width, figure.height) and drawn.format == "PNG"
    pixels = np.asarray(drawn.convert("RGB")).reshape(-1, 3)
    red = np.array(reports.LEVEL_COLOURS[flagged[0]["level"]])
    assert (np.abs(pixels.astype(int) - red).sum(axis=1) < 60).any()  # a flagged tile is drawn in its colour
    page = report.html
    assert "<h2>Where</h2>" in page and truth.volcano_name in page and "km from" in page
    assert f"{(flagged[0]['bounds'][1] + flagged[0]['bounds'][3]) / 2:.4f}" in page


def test_an_alert_without_georeference_has_no_map(alert) -> None:
    report = _rendered(alert)
    assert report.document["footprint"] is None and report.document["landmarks"] == []
    assert "map" not in {figure.name for figure in report.figures} and "<h2>Where</h2>" not in report.html


def test_digest_groups_an_unconfigured_frame_under_the_volcano_its_alert_names(tmp_path: Path, alert) -> None:
    settings = Settings(var_dir=tmp_path / "var", drop_dir=tmp_path / "drop")  # no [[volcanoes]] by frame
    document = reports.alert_document(alert) | {"volcano": "Sierra Negra"}
    with Store(tmp_path / "state.db") as store:
        _populate(store, {"document": document})
        digest = reports.digest_from_store(store, T0 - timedelta(days=1), T0 + timedelta(days=1), settings)
    by_frame = {frame.frame: frame for frame in digest.frames}
    assert by_frame[FRAME].volcano == "Sierra Negra"
    assert by_frame["022A_05301_131313"].volcano is None  # no alert names a volcano for it
    groups = reports.build_digest_report(digest, T0 + timedelta(days=1)).document["volcanoes"]
    assert [group["volcano"] for group in groups] == ["Sierra Negra", "—"]
