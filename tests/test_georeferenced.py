"""Frames as LiCSAR publishes them, through the daemon's reading step and decisions.

The real Mexico City frame (../shared/realdata) must be tiled along its swath, not rejected
for its corners. A synthetic drop frame given real GeoTIFF siblings (written with rasterio
around Sierra Negra) must carry WGS84 bounds and the nearest volcano on every tile into the
alert JSON and a GeoJSON beside it; bad siblings are one recorded line each and lose nothing.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import ALERT_CAPTION, QUIET_CAPTION, neighbours, process, shared_path

from insarwatch.captioner import Caption
from insarwatch.config import BatchSettings, CaptioningSettings, Settings
from insarwatch.describe import Described, load_bundle
from insarwatch.intake import Intake
from insarwatch.pipeline import Tiled, conclude, read_interferogram
from insarwatch.registry import ModelStore
from insarwatch.reports import build_alert_report, write_report
from insarwatch.store import Store
from insarwatch.synthetic.drop import write_drop

NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)
FRAME, PAIR = "143D_09030_131313", "20200103_20200115"
SIERRA_NEGRA = (-0.83, -91.17)  # GVP 353050
WEST, NORTH, STEP = -91.40, -0.60, 0.001


def claim_one(drop: Path, store: Store) -> object:
    assert Intake(drop, store, settle_seconds=0).reconcile(NOW) >= 1
    [record] = store.claim(1, NOW)
    return record


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def write_tif(path: Path, values: np.ndarray) -> None:
    height, width = values.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype=values.dtype,
                       crs="EPSG:4326", transform=Affine.translation(WEST, NORTH) @ Affine.scale(STEP, -STEP)) as out:
        out.write(values, 1)


# --------------------------------------------------------------------------- the real frame


def test_the_real_mexico_city_frame_is_processed_with_its_corner_tiles_skipped(tmp_path: Path,
                                                                               tiny_var_dir: Path) -> None:
    real = shared_path("realdata/frames/mexico_city.geo.diff.png")
    drop = tmp_path / "drop"
    target = drop / FRAME / "interferograms" / PAIR / f"{PAIR}.geo.diff.png"
    target.parent.mkdir(parents=True)
    shutil.copyfile(real, target)
    settings = Settings(var_dir=tiny_var_dir, drop_dir=drop, batch=BatchSettings(tiles=32, max_wait_seconds=0),
                        captioning=CaptioningSettings(num_beams=1, max_new_tokens=4))
    with Store(settings.state_db) as store:
        tiled = read_interferogram(claim_one(drop, store), settings)
        assert isinstance(tiled, Tiled), tiled  # the frame is 34% transparent corners
        assert tiled.skipped["nodata"] >= 1 and len(tiled.tiles) >= 20
        assert all(piece.valid_fraction >= 0.5 for piece in tiled.tiles)
        store.release([tiled.record.key], NOW)
        bundle = load_bundle(ModelStore(settings.models_dir).current(), settings, require_index=True)
        process(settings, store, lambda: bundle, NOW)
        record = store.get(f"{FRAME}/{PAIR}")
        assert record is not None and record.state == "done", record
        assert record.notes == {"skipped_tiles": {"nodata": tiled.skipped["nodata"]}}
        assert len(store.results_for(record.key, record.model_version)) == len(tiled.tiles)


# --------------------------------------------------------------------------- a georeferenced frame


@pytest.fixture
def georeferenced(tmp_path: Path) -> tuple[Path, Path]:
    """A 448x448 synthetic drop frame with phase and coherence GeoTIFFs at 3x its size."""
    drop = tmp_path / "drop"
    [frame] = write_drop(drop, 1, 5, size=(448, 448), pairs=1)
    diff = frame.interferograms[0].diff_png
    stem = diff.name.removesuffix(".geo.diff.png")
    rows, columns = np.mgrid[0:1344, 0:1344]
    phase = np.angle(np.exp(1j * np.hypot(rows - 600, columns - 700) / 20)).astype(np.float32)
    phase[phase == 0] = 0.5
    write_tif(diff.with_name(f"{stem}.geo.diff_pha.tif"), phase)
    write_tif(diff.with_name(f"{stem}.geo.cc.tif"), np.full((1344, 1344), 200, np.uint8))
    return drop, diff


def described(tiled: Tiled, flagged_index: int) -> list[Described]:
    out = []
    for piece in tiled.tiles:
        deforming = piece.index == flagged_index
        text = ALERT_CAPTION if deforming else QUIET_CAPTION
        out.append(Described(Caption(text, np.zeros(8, np.float32)), neighbours(deforming, text)))
    return out


def test_a_georeferenced_frame_names_bounds_and_volcano_in_the_alert_and_its_geojson(
        georeferenced: tuple[Path, Path], tmp_path: Path) -> None:
    drop, _ = georeferenced
    settings = Settings(var_dir=tmp_path / "var", drop_dir=drop)
    with Store(settings.state_db) as store:
        tiled = read_interferogram(claim_one(drop, store), settings)
    assert isinstance(tiled, Tiled) and tiled.siblings.grid is not None and not tiled.siblings.problems
    assert tiled.siblings.phase is not None and tiled.siblings.coherence is not None
    outcome = conclude(tiled, described(tiled, flagged_index=0), settings, "v1", NOW)
    assert outcome.alert is not None
    report = build_alert_report(outcome.alert, None)
    html_path, json_path = write_report(report, settings.reports_dir)
    document = json.loads(json_path.read_text())
    [tile] = document["tiles"]
    left, top, right, bottom = tile["box"]
    degrees = 1344 * STEP / 448  # one PNG pixel
    expected = (WEST + left * degrees, NORTH - bottom * degrees, WEST + right * degrees, NORTH - top * degrees)
    assert np.allclose(tile["bounds"], expected, atol=STEP)
    west, south, east, north = tile["bounds"]
    centre = ((south + north) / 2, (west + east) / 2)
    assert tile["volcano"]["name"] == "Sierra Negra"
    assert tile["volcano"]["distance_km"] == pytest.approx(haversine(*centre, *SIERRA_NEGRA), abs=0.01)
    assert document["volcano"] == "Sierra Negra" and document["volcanoes"] == ["Sierra Negra"]
    geojson = json.loads(json_path.with_suffix(".geojson").read_text())
    [feature] = geojson["features"]
    [ring] = feature["geometry"]["coordinates"]
    assert ring[0] == ring[-1]
    assert (min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)) \
        == pytest.approx(tuple(tile["bounds"]), abs=1e-7)
    assert feature["properties"]["volcano"] == "Sierra Negra"
    assert feature["properties"]["caption"] == tile["caption"] and feature["properties"]["level"] == tile["level"]
    assert html_path.exists()


@pytest.mark.parametrize("damage", ["truncated", "wrong grid", "nan-only"])
def test_a_bad_sibling_is_one_recorded_line_and_the_png_still_works(georeferenced: tuple[Path, Path],
                                                                    tmp_path: Path, damage: str) -> None:
    drop, diff = georeferenced
    phase = diff.with_name(diff.name.replace(".geo.diff.png", ".geo.diff_pha.tif"))
    if damage == "truncated":
        phase.write_bytes(phase.read_bytes()[: phase.stat().st_size // 2])
    elif damage == "wrong grid":
        write_tif(phase, np.ones((900, 1344), np.float32))
    else:
        write_tif(phase, np.full((1344, 1344), np.nan, np.float32))
    settings = Settings(var_dir=tmp_path / "var", drop_dir=drop)
    with Store(settings.state_db) as store:
        tiled = read_interferogram(claim_one(drop, store), settings)
    assert isinstance(tiled, Tiled)
    [problem] = tiled.siblings.problems
    assert problem.startswith(f"{phase}: ") and "\n" not in problem
    assert {"truncated": "truncated or corrupt", "wrong grid": "does not match the preview",
            "nan-only": "no valid pixel"}[damage] in problem
    assert tiled.siblings.phase is None and tiled.siblings.grid is not None  # the coherence tif still places it
    assert tiled.notes["problems"] == [problem]
    assert len(tiled.tiles) == 4


def test_synthetic_drops_carry_geotiffs_around_a_real_volcano(tmp_path: Path) -> None:
    from insarwatch.geo import read_siblings
    from insarwatch.licsar import frame_dir, sibling_paths
    from insarwatch.volcanoes import default_catalogue

    [frame] = write_drop(tmp_path, 1, 11, size=(448, 336), volcano=(100, 200), pairs=1)
    item = frame.interferograms[0]
    truth = json.loads((tmp_path / "synth-truth.jsonl").read_text())
    siblings = read_siblings(sibling_paths(item.diff_png), frame_dir(item.diff_png), 448, 336)
    assert not siblings.problems and siblings.grid is not None and siblings.phase is not None
    [volcano] = default_catalogue().named(truth["volcano_name"])
    west, south, east, north = siblings.grid.box_bounds((100, 200, 101, 201))  # the volcano's pixel
    assert west <= volcano.longitude <= east and south <= volcano.latitude <= north
    assert (east - west) == pytest.approx(0.001 / 0.3)
    # Corners carry no phase in the GeoTIFF either, exactly where the PNG is transparent.
    from insarwatch.imaging import decode_png, nodata_mask, to_rgb

    image = decode_png(item.diff_png, 10**7)
    assert np.array_equal(~siblings.phase.valid, nodata_mask(image, to_rgb(image, "skip", item.diff_png)))
