"""Georeference, volcano catalogue and GeoJSON, on real GeoTIFFs written with rasterio.

The grids sit where LiCSAR would put them: WGS84, 0.001° pixels, a frame box around Sierra
Negra (Galápagos). Expected bounds and distances are computed here from the test's own
constants and an independent haversine, never from the code under test.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from insarwatch.config import Settings, Volcano as VolcanoSetting, load_settings
from insarwatch.errors import InputError
from insarwatch.geo import (
    check_preview_grid, read_coherence, read_frame_metadata, read_grid, read_phase, read_unwrapped,
)
from insarwatch.geojson import alert_features
from insarwatch.imaging import tile
from insarwatch.volcanoes import load_catalogue, nearest_volcano

WEST, NORTH, STEP = -91.40, -0.55, 0.001  # frame box corner and LiCSAR's default pixel
TIF_WIDTH, TIF_HEIGHT = 900, 720  # 0.9° x 0.72°
PNG_WIDTH, PNG_HEIGHT = 270, 216  # the preview at 30%, as licsar_proc's `convert -resize 30%`
CATALOGUE = Path(__file__).resolve().parents[1] / "insarwatch" / "data" / "volcanoes.csv"


def write_tif(path: Path, values: np.ndarray, *, west: float = WEST, north: float = NORTH, step: float = STEP,
              crs: str | None = "EPSG:4326") -> Path:
    height, width = values.shape
    transform = Affine.translation(west, north) @ Affine.scale(step, -step) if crs else Affine.identity()
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype=values.dtype,
                       crs=crs, transform=transform) as dataset:
        dataset.write(values, 1)
    return path


def wrapped_phase(width: int = TIF_WIDTH, height: int = TIF_HEIGHT) -> np.ndarray:
    """Fringes around the middle, with a no-data corner as a geocoded swath has."""
    rows, columns = np.mgrid[0:height, 0:width]
    phase = np.angle(np.exp(1j * np.hypot(rows - height / 2, columns - width / 2) / 8)).astype(np.float32)
    phase[columns < (height - rows) / 3] = np.nan
    phase[phase == 0] = 0.1  # keep 0 meaning no data only where the test puts it
    return phase


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle km by the textbook formula, one pair at a time."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def catalogue_rows() -> list[dict[str, str]]:
    with CATALOGUE.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def one_line(error: InputError, path: Path) -> str:
    text = str(error)
    assert "\n" not in text and text.startswith(str(path)), text
    return error.reason


# --------------------------------------------------------------------------- grids and bounds


def test_phase_grid_and_bounds_come_from_the_geotiff(tmp_path: Path) -> None:
    phase = wrapped_phase()
    raster = read_phase(write_tif(tmp_path / "a.geo.diff_pha.tif", phase))
    assert (raster.grid.width, raster.grid.height, raster.grid.crs) == (TIF_WIDTH, TIF_HEIGHT, "EPSG:4326")
    west, south, east, north = raster.grid.bounds
    assert west == pytest.approx(WEST) and north == pytest.approx(NORTH)
    assert east == pytest.approx(WEST + TIF_WIDTH * STEP) and south == pytest.approx(NORTH - TIF_HEIGHT * STEP)
    assert raster.values.dtype == np.float32
    np.testing.assert_array_equal(raster.valid, np.isfinite(phase))
    np.testing.assert_array_equal(raster.values[raster.valid], phase[np.isfinite(phase)])


def test_every_preview_tile_maps_to_its_ground_box_within_one_pixel(tmp_path: Path) -> None:
    grid = read_grid(write_tif(tmp_path / "a.geo.diff_pha.tif", wrapped_phase()), "phase")
    preview = check_preview_grid(grid, PNG_WIDTH, PNG_HEIGHT, tmp_path / "a.geo.diff.png")
    tiles = tile(np.zeros((PNG_HEIGHT, PNG_WIDTH, 3), np.uint8), 64, 48)
    assert len(tiles) > 4
    degrees_per_png_pixel = TIF_WIDTH * STEP / PNG_WIDTH
    for piece in tiles:
        left, top, right, bottom = piece.box
        west, south, east, north = preview.box_bounds(piece.box)
        expected = (WEST + left * degrees_per_png_pixel, NORTH - bottom * degrees_per_png_pixel,
                    WEST + right * degrees_per_png_pixel, NORTH - top * degrees_per_png_pixel)
        assert np.allclose((west, south, east, north), expected, atol=STEP), (piece.box, expected)
        # And back through rasterio's own inverse: the corners land on the GeoTIFF pixels
        # the preview pixels were drawn from.
        row, column = rasterio.transform.rowcol(grid.transform, west + STEP / 2, north - STEP / 2)
        assert abs(column - left * TIF_WIDTH / PNG_WIDTH) <= 1 and abs(row - top * TIF_HEIGHT / PNG_HEIGHT) <= 1


def test_a_rounded_preview_size_still_matches(tmp_path: Path) -> None:
    # 30% of 901 x 719 is 270.3 x 215.7: ImageMagick rounds each side on its own.
    grid = read_grid(write_tif(tmp_path / "a.tif", wrapped_phase(901, 719)), "phase")
    assert check_preview_grid(grid, 270, 216, tmp_path / "a.png").width == 270


def test_a_grid_of_another_shape_is_refused_in_one_line(tmp_path: Path) -> None:
    grid = read_grid(write_tif(tmp_path / "a.geo.diff_pha.tif", wrapped_phase(900, 900)), "phase")
    png = tmp_path / "a.geo.diff.png"
    with pytest.raises(InputError) as caught:
        check_preview_grid(grid, PNG_WIDTH, PNG_HEIGHT, png)
    assert "does not match the preview's 270x216 extent" in one_line(caught.value, png)


def test_a_truncated_geotiff_is_refused_in_one_line(tmp_path: Path) -> None:
    whole = write_tif(tmp_path / "whole.tif", wrapped_phase())
    data = whole.read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 16):
        path = tmp_path / f"cut{cut}.geo.diff_pha.tif"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError) as caught:
            read_phase(path)
        assert "truncated or corrupt phase GeoTIFF" in one_line(caught.value, path), cut


def test_nan_only_or_zero_only_phase_is_refused_in_one_line(tmp_path: Path) -> None:
    for name, fill in (("nan", np.nan), ("zero", 0.0)):
        path = write_tif(tmp_path / f"{name}.geo.diff_pha.tif", np.full((40, 50), fill, np.float32))
        with pytest.raises(InputError) as caught:
            read_phase(path)
        assert one_line(caught.value, path) == "phase GeoTIFF has no valid pixel (all NaN or 0)"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_geotiff_without_georeference_is_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "plain.geo.diff_pha.tif", wrapped_phase(60, 50), crs=None)
    with pytest.raises(InputError) as caught:
        read_phase(path)
    assert "no georeference" in one_line(caught.value, path)


def test_coherence_byte_and_float_both_read_as_zero_to_one(tmp_path: Path) -> None:
    byte = np.array([[0, 51, 255], [128, 0, 1]], np.uint8)
    new = read_coherence(write_tif(tmp_path / "new.geo.cc.tif", byte))
    np.testing.assert_allclose(new.values, [[np.nan, 0.2, 1.0], [128 / 255, np.nan, 1 / 255]], rtol=1e-6)
    old = read_coherence(write_tif(tmp_path / "old.geo.cc.tif", np.array([[0, 0.5], [0.25, 1]], np.float32)))
    np.testing.assert_allclose(old.values, [[np.nan, 0.5], [0.25, 1.0]])
    bad = write_tif(tmp_path / "bad.geo.cc.tif", np.array([[0, 3.5]], np.float32))
    with pytest.raises(InputError) as caught:
        read_coherence(bad)
    assert "outside 0..1" in one_line(caught.value, bad)


def test_unwrapped_phase_zero_is_no_data(tmp_path: Path) -> None:
    values = np.array([[0, -12.5], [3.25, 0]], np.float32)
    raster = read_unwrapped(write_tif(tmp_path / "a.geo.unw.tif", values))
    np.testing.assert_array_equal(raster.valid, [[False, True], [True, False]])


def test_frame_metadata_reads_licsar_keys_and_the_height_grid(tmp_path: Path) -> None:
    frame = tmp_path / "128A_09016_091311"
    (frame / "metadata").mkdir(parents=True)
    # Keys as licsar_proc's metadata script writes them (master, center_time, heading, ...).
    (frame / "metadata" / "metadata.txt").write_text(
        "master=20180113\ncenter_time=11:35:12.5\nheading=-12.83\navg_incidence_angle=39.41\n"
        "azimuth_resolution=13.97\nrange_resolution=2.33\ncentre_range_m=880000\navg_height=412\n"
        "applied_DEM=CopernicusDEM_30m\n", encoding="utf-8")
    write_tif(frame / "metadata" / f"{frame.name}.geo.hgt.tif", np.full((TIF_HEIGHT, TIF_WIDTH), 300, np.float32))
    metadata = read_frame_metadata(frame)
    assert metadata is not None
    assert (metadata.heading, metadata.incidence) == (-12.83, 39.41)
    assert metadata.values["master"] == "20180113"
    assert metadata.grid is not None and metadata.grid.bounds == pytest.approx(
        (WEST, NORTH - TIF_HEIGHT * STEP, WEST + TIF_WIDTH * STEP, NORTH))
    assert read_frame_metadata(tmp_path / "no_such_frame") is None


def test_frame_metadata_with_a_bad_heading_names_the_file(tmp_path: Path) -> None:
    text = tmp_path / "F" / "metadata" / "metadata.txt"
    text.parent.mkdir(parents=True)
    text.write_text("heading=north-ish\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_frame_metadata(tmp_path / "F")
    assert one_line(caught.value, text) == "heading='north-ish' is not a number"


# --------------------------------------------------------------------------- volcanoes


def test_the_catalogue_is_the_gvp_holocene_list() -> None:
    rows = catalogue_rows()
    assert len(rows) == 1250
    catalogue = load_catalogue()
    assert len(catalogue) == 1250
    known = {"Etna": (37.75, 15.00), "Sierra Negra": (-0.83, -91.17), "Taal": (14.01, 121.00),
             "Popocatepetl": (19.02, -98.62)}
    for name, (latitude, longitude) in known.items():
        [volcano] = catalogue.named(name)
        assert volcano.latitude == pytest.approx(latitude, abs=0.05)
        assert volcano.longitude == pytest.approx(longitude, abs=0.05)
    assert catalogue.named("Negra, Sierra") == catalogue.named("sierra negra")  # GVP's own spelling too


def test_nearest_volcano_agrees_with_an_independent_haversine() -> None:
    rows = catalogue_rows()
    places = [(-0.80, -91.14), (37.70, 15.10), (14.10, 120.90), (19.43, -99.13), (64.0, -19.0), (-77.5, 167.2)]
    for latitude, longitude in places:
        name, distance = nearest_volcano(latitude, longitude)
        brute = min(rows, key=lambda row: haversine(latitude, longitude, float(row["latitude"]), float(row["longitude"])))
        assert name == brute["name"]
        assert distance == pytest.approx(
            haversine(latitude, longitude, float(brute["latitude"]), float(brute["longitude"])), rel=1e-9)
    assert nearest_volcano(-0.80, -91.14)[0] == "Sierra Negra"


def test_tile_centres_name_their_nearest_volcano(tmp_path: Path) -> None:
    grid = read_grid(write_tif(tmp_path / "a.tif", wrapped_phase()), "phase")
    preview = check_preview_grid(grid, PNG_WIDTH, PNG_HEIGHT, tmp_path / "a.png")
    catalogue = load_catalogue()
    boxes = [piece.box for piece in tile(np.zeros((PNG_HEIGHT, PNG_WIDTH, 3), np.uint8), 64, 64)]
    centres = []
    for box in boxes:
        west, south, east, north = preview.box_bounds(box)
        centres.append(((south + north) / 2, (west + east) / 2))
    rows = catalogue_rows()
    for (latitude, longitude), (volcano, distance) in zip(centres, catalogue.nearest_each(centres), strict=True):
        best = min(haversine(latitude, longitude, float(r["latitude"]), float(r["longitude"])) for r in rows)
        assert distance == pytest.approx(best, rel=1e-9)
        assert haversine(latitude, longitude, volcano.latitude, volcano.longitude) == pytest.approx(distance, rel=1e-9)


def test_settings_move_add_and_reradius_volcanoes() -> None:
    entries = [
        VolcanoSetting(name="etna", latitude=37.7, longitude=15.1),  # case-insensitive: moves Etna
        VolcanoSetting(name="Test Dome", latitude=-0.5, longitude=-91.0, radius_km=12),
        VolcanoSetting(name="Sierra Negra", radius_km=8),
        VolcanoSetting(name="Somewhere", frames=["128A_09016_091311"]),  # routing only: no position needed
    ]
    catalogue = load_catalogue(entries)
    assert len(catalogue) == 1251
    [etna] = catalogue.named("Etna")
    assert (etna.latitude, etna.longitude, etna.number) == (37.7, 15.1, 211060)
    assert catalogue.nearest(-0.5, -91.0)[0].radius_km == 12
    assert catalogue.named("Sierra Negra")[0].radius_km == 8
    assert catalogue.named("Taal")[0].radius_km == 30  # the default


def test_settings_that_cannot_place_a_volcano_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="names 2 catalogue volcanoes"):
        load_catalogue([VolcanoSetting(name="Sumbing", latitude=-7.4, longitude=110.1)])
    with pytest.raises(InputError, match="not in the catalogue: give its latitude and longitude"):
        load_catalogue([VolcanoSetting(name="Nowhere", radius_km=5)])
    config = tmp_path / "insarwatch.toml"
    config.write_text('[[volcanoes]]\nname = "Half"\nlatitude = 1.0\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_settings(config, environ={})
    assert "needs both latitude and longitude" in one_line(caught.value, config)
    config.write_text('[[volcanoes]]\nname = "Far"\nlatitude = 91\nlongitude = 0\n', encoding="utf-8")
    with pytest.raises(InputError, match="key 'volcanoes.0.latitude'"):
        load_settings(config, environ={})
    # The by-frame routing of existing installations is unchanged.
    settings = Settings(volcanoes=[VolcanoSetting(name="Sierra Negra", frames=["128A_09016_091311"])])
    assert settings.volcano_for("128A_09016_091311") == "Sierra Negra"


# --------------------------------------------------------------------------- GeoJSON


def test_geojson_of_an_alert_round_trips_against_the_tile_bounds(tmp_path: Path) -> None:
    grid = read_grid(write_tif(tmp_path / "a.tif", wrapped_phase()), "phase")
    preview = check_preview_grid(grid, PNG_WIDTH, PNG_HEIGHT, tmp_path / "a.png")
    catalogue = load_catalogue()
    tiles = []
    for piece in tile(np.zeros((PNG_HEIGHT, PNG_WIDTH, 3), np.uint8), 128, 128)[:3]:
        west, south, east, north = preview.box_bounds(piece.box)
        volcano, distance = catalogue.nearest((south + north) / 2, (west + east) / 2)
        tiles.append({"tile_index": piece.index, "box": list(piece.box), "level": "alert", "severity": "high",
                      "caption": "a mogi - type deformation pattern", "finding": {"deformation": True},
                      "bounds": [west, south, east, north],
                      "volcano": {"name": volcano.name, "distance_km": round(distance, 2)}})
    tiles.append({"tile_index": 9, "box": [0, 0, 8, 8], "level": "review", "severity": None, "caption": "x",
                  "finding": {}})  # no georeference: not on the map
    alert = {"key": "128A_09016_091311/20180101_20180113/v1", "frame": "128A_09016_091311", "level": "alert",
             "times": {"primary": "2018-01-01", "secondary": "2018-01-13"}, "tiles": tiles}
    document = json.loads(json.dumps(alert_features(json.loads(json.dumps(alert)))))
    assert document["type"] == "FeatureCollection" and document["alert"]["key"] == alert["key"]
    assert document["alert"]["primary"] == "2018-01-01"
    assert len(document["features"]) == 3
    for feature, source in zip(document["features"], tiles, strict=False):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        [ring] = feature["geometry"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) == 5
        lons, lats = [point[0] for point in ring], [point[1] for point in ring]
        west, south, east, north = source["bounds"]
        assert (min(lons), min(lats), max(lons), max(lats)) == pytest.approx((west, south, east, north), abs=1e-7)
        assert all(-92 < lon < -90 for lon in lons) and all(-2 < lat < 0 for lat in lats)  # [lon, lat] order
        area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))
        assert area > 0  # counter-clockwise exterior ring
        properties = feature["properties"]
        assert properties["level"] == source["level"] and properties["caption"] == source["caption"]
        assert properties["finding"] == source["finding"]
        assert (properties["volcano"], properties["distance_km"]) == (source["volcano"]["name"],
                                                                     source["volcano"]["distance_km"])
