"""What the model is shown (``insarwatch.reading``), the same for the daemon, ``caption`` and ``prepare``.

On the ``phase`` input a drop frame with a ``.geo.diff_pha.tif`` is shown its GeoTIFF's phase, one
without it the phase inverted from its PNG, and one whose colours fit no known rendering its RGB,
with the reason recorded; the version's recorded input wins over the setting, and frames read for
another input are read again after a model swap. ``caption`` reads a ``.geo.diff_pha.tif`` directly.
``prepare`` on ``phase`` keeps the RGBA frames the paper dropped; on ``paper`` it is the paper's.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import FRAME, annotation, fringes, palette, process, save_p, write_annotation
from PIL import Image

from insarwatch import hephaestus, phase
from insarwatch.caption_files import read_tiles
from insarwatch.config import BatchSettings, CaptioningSettings, ImagingSettings, Settings
from insarwatch.describe import load_bundle
from insarwatch.errors import InputError
from insarwatch.geo import read_phase
from insarwatch.imaging import decode_png, nodata_mask, to_rgb
from insarwatch.intake import Intake
from insarwatch.manifest import dataset_input
from insarwatch.pipeline import Tiled, read_interferogram
from insarwatch.reading import PREVIEW_SCALE, read_model_image
from insarwatch.registry import ModelStore
from insarwatch.store import Store
from insarwatch.synthetic.drop import write_drop

NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)
UNKNOWN_PAIR = "20210101_20210113"


@pytest.fixture
def drop(tmp_path: Path) -> dict[str, Path]:
    """Two synthetic 448x448 frames with their GeoTIFFs (the second's phase GeoTIFF removed) and a
    frame drawn with a hue wheel of constant brightness, which is no known rendering."""
    root = tmp_path / "drop"
    first, second = (frame.interferograms[0].diff_png for frame in write_drop(root, 2, 5, size=(448, 448), pairs=1))
    second.with_name(second.name.replace(".geo.diff.png", ".geo.diff_pha.tif")).unlink()
    unknown = save_p(root / FRAME / "interferograms" / UNKNOWN_PAIR / f"{UNKNOWN_PAIR}.geo.diff.png", fringes(224, 448))
    return {"geotiff": first, "png": second, "unknown": unknown}


def phase_tif(diff_png: Path) -> Path:
    return diff_png.with_name(diff_png.name.replace(".geo.diff.png", ".geo.diff_pha.tif"))


def key(diff_png: Path) -> str:
    return f"{diff_png.parents[2].name}/{diff_png.parent.name}"


def read_all(drop: dict[str, Path], settings: Settings, model_input: str) -> dict[str, Tiled]:
    with Store(settings.state_db) as store:
        Intake(settings.drop_dir, store, settle_seconds=0).reconcile(NOW)
        records = {record.key: record for record in store.claim(10, NOW)} or \
            {record.key: record for record in store.in_state("processing")}
    read = {name: read_interferogram(records[key(path)], settings, model_input) for name, path in drop.items()}
    assert all(isinstance(tiled, Tiled) for tiled in read.values()), read
    return read


def test_the_daemon_shows_a_phase_model_each_frame_as_phase_and_records_the_rendering(
        drop: dict[str, Path], tiny_var_dir: Path) -> None:
    version = ModelStore(tiny_var_dir / "models").current()
    version.train_config_file.write_text(json.dumps({"model_input": "phase"}), encoding="utf-8")
    # The setting says "paper": the version, trained on phase, wins.
    settings = Settings(var_dir=tiny_var_dir, drop_dir=drop["geotiff"].parents[3],
                        batch=BatchSettings(tiles=64, max_wait_seconds=0),
                        captioning=CaptioningSettings(num_beams=1, max_new_tokens=4))
    bundle = load_bundle(version, settings, require_index=True)
    assert bundle.model_input == "phase"
    with Store(settings.state_db) as store:
        assert Intake(settings.drop_dir, store, settle_seconds=0).reconcile(NOW) == 3
        process(settings, store, lambda: bundle, NOW)
        records = {name: store.get(key(path)) for name, path in drop.items()}
        tiles = {name: store.results_for(key(path), version.name) for name, path in drop.items()}
    assert all(record.state == "done" for record in records.values()), records
    assert records["geotiff"].notes["rendering"] == "diff_pha"
    assert records["png"].notes["rendering"] == "pha"  # synthetic drops are drawn with LiCSAR's pha.cpt
    unknown = records["unknown"].notes
    assert unknown["rendering"] == "rgb"
    assert unknown["unknown_rendering"].startswith("colours fit no known table")
    assert "brightness deviation" in unknown["unknown_rendering"]
    # Each of its tiles carries why into its decision (for review at most); the others nothing.
    assert tiles["unknown"] and {tile.decision["reasons"]["unread_rendering"] for tile in tiles["unknown"]} == {
        unknown["unknown_rendering"]}
    assert {tile.decision["reasons"]["unread_rendering"] for tile in tiles["png"]} == {None}


def test_phase_tiles_are_the_canonical_rendering_of_the_geotiff_or_of_the_png(
        drop: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", drop_dir=drop["geotiff"].parents[3])
    from_tif, from_png, unknown = read_all(drop, settings, "phase").values()
    paper = read_all(drop, settings, "paper")["geotiff"]
    geotiff = read_phase(phase_tif(drop["geotiff"]))
    assert geotiff.values.shape == (448, 448)  # the synthetic drop's GeoTIFF lies on its PNG's grid
    shown = phase.render(phase.from_phase(geotiff.values))
    for piece in from_tif.tiles:
        left, top, right, bottom = piece.box
        assert np.array_equal(piece.pixels, shown[top:bottom, left:right])
    image = decode_png(drop["png"], 10**8)
    rgb = to_rgb(image, "convert", drop["png"])
    inverted = phase.from_rgb(rgb, nodata_mask(image, rgb))
    assert isinstance(inverted, phase.PhaseImage)
    for piece in from_png.tiles:
        left, top, right, bottom = piece.box
        assert np.array_equal(piece.pixels, phase.render(inverted)[top:bottom, left:right])
    assert [piece.box for piece in from_tif.tiles] == [piece.box for piece in paper.tiles]
    drawn = palette()[fringes(224, 448)]
    assert all(np.array_equal(piece.pixels, drawn[:, piece.box[0]:piece.box[2]]) for piece in unknown.tiles)
    assert paper.notes == {"skipped_tiles": paper.notes["skipped_tiles"]}  # the paper's path records no rendering


def test_a_model_swap_to_another_input_reads_frames_again(drop: dict[str, Path], tiny_var_dir: Path) -> None:
    settings = Settings(var_dir=tiny_var_dir, drop_dir=drop["geotiff"].parents[3],
                        batch=BatchSettings(tiles=64, max_wait_seconds=0),
                        captioning=CaptioningSettings(num_beams=1, max_new_tokens=4))
    paper = load_bundle(ModelStore(settings.models_dir).current(), settings, require_index=True)
    swapped = dataclasses.replace(paper, model_input="phase")
    bundles = iter([paper])  # the frames are claimed for the paper model, the batch runs with the phase one
    with Store(settings.state_db) as store:
        Intake(settings.drop_dir, store, settle_seconds=0).reconcile(NOW)
        process(settings, store, lambda: next(bundles, swapped), NOW)
        record = store.get(key(drop["geotiff"]))
    assert record.state == "done" and record.notes["rendering"] == "diff_pha"
    assert record.attempts == 1  # released unread, not failed


# --------------------------------------------------------------------------- caption


def test_caption_reads_a_phase_geotiff_as_the_daemon_reads_its_png(drop: dict[str, Path], tmp_path: Path) -> None:
    imaging = ImagingSettings()
    tif = phase_tif(drop["geotiff"])
    read = read_tiles([tif], imaging, "phase")
    daemon = read_tiles([drop["geotiff"]], imaging, "phase")
    assert read.refused == () and [p for p, _ in read.tiles] == [tif] * 4
    assert read.grids[tif] == daemon.grids[drop["geotiff"]]
    for (_, mine), (_, theirs) in zip(read.tiles, daemon.tiles, strict=True):
        assert mine.box == theirs.box and np.array_equal(mine.pixels, theirs.pixels)
    # Alone, it is shown at LiCSAR's preview scale, georeferenced all the same.
    alone = tmp_path / "alone" / tif.name
    alone.parent.mkdir()
    shutil.copyfile(tif, alone)
    image = read_model_image(alone, imaging, "phase")
    assert image.pixels.shape == (round(448 * PREVIEW_SCALE), round(448 * PREVIEW_SCALE), 3)
    assert image.rendering == "diff_pha" and image.siblings.grid.bounds == read.grids[tif].bounds
    # The paper's model is shown the phase as LiCSAR draws its preview, in pha.cpt's colours.
    paper = read_model_image(tif, imaging, "paper")
    drawn = phase.from_rgb(paper.pixels)
    assert paper.rendering == "rgb" and isinstance(drawn, phase.PhaseImage) and drawn.rendering == "pha"


def test_caption_refuses_a_broken_phase_geotiff_in_one_line(tmp_path: Path) -> None:
    tif = tmp_path / "20200103_20200115.geo.diff_pha.tif"
    tif.write_bytes(b"II*\x00 not a tiff")
    read = read_tiles([tif], ImagingSettings(), "phase")
    [refused] = read.refused
    assert str(refused).startswith(f"{tif}: truncated or corrupt phase GeoTIFF") and "\n" not in str(refused)


# --------------------------------------------------------------------------- prepare


def pha_sample(root: Path, unique_id: int, deformation: bool, mode: str) -> None:
    """A flat Hephaestus sample drawn with LiCSAR's pha.cpt: P mode, or RGBA with a transparent corner."""
    write_annotation(root, annotation(unique_id, deformation=deformation))
    y, x = np.mgrid[:64, :64]
    rgb = phase.PHA.draw(np.hypot(x - 30, y - 34) / (4 + unique_id % 3))
    path = root / "images" / f"{unique_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGBA":
        alpha = np.full((64, 64), 255, np.uint8)
        alpha[:10, :10] = 0
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    else:
        colours, indices = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        image = Image.fromarray(indices.reshape(64, 64).astype(np.uint8), "P")
        image.putpalette(colours.ravel().tolist())
        image.save(path)


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """Deforming: 6 P samples (ids 1-6), 4 RGBA (12-15); quiet: 5 P (7-11), 4 RGBA (16-19) and one
    RGBA sample drawn in no known rendering (99). Drawn with pha.cpt, the RGBA ones with a
    transparent corner."""
    root = tmp_path / "heph"
    ids = iter(range(1, 99))
    for mode, count, deformation in (("P", 6, True), ("P", 5, False), ("RGBA", 4, True), ("RGBA", 4, False)):
        for _ in range(count):
            pha_sample(root, next(ids), deformation, mode)
    write_annotation(root, annotation(99))
    alpha = np.full((64, 64), 255, np.uint8)
    Image.fromarray(np.dstack([palette()[fringes(64, 64)], alpha]), "RGBA").save(root / "images" / "99.png")
    return root


def test_prepare_on_phase_keeps_the_rgba_frames_the_paper_dropped(mixed_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "phase"
    report = hephaestus.prepare(mixed_root, out, ImagingSettings(model_input="phase"))
    assert report.model_input == "phase" and report.removed["not_palette"] == 0
    assert report.remaining["deforming"] == {"P": 6, "RGBA": 4, "other": 0, "unknown": 0}
    assert report.selected == {"deforming": 10, "non_deforming": 10}
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(record["id"] for record in records) == list(range(1, 20))  # RGBA frames included
    # The one image in no known rendering is written nowhere, with its reason.
    [left_out] = report.unusable
    assert left_out.path.name == "99.png" and not (out / "images" / "99.png").exists()
    assert left_out.reason.startswith("left out of a phase dataset: colours fit no known table")
    assert report.renderings == {"pha": 19} and sum(report.splits.values()) == 19
    assert dataset_input(out) == "phase"
    for record in records:
        source = mixed_root / "images" / f"{record['id']}.png"
        with Image.open(out / record["image"]) as written:
            assert np.array_equal(np.asarray(written), read_model_image(source, ImagingSettings(), "phase").pixels)
    with Image.open(out / "images" / "12.png") as rgba:  # its transparent corner is no phase: neutral grey
        assert (np.asarray(rgba)[:10, :10] == phase.NEUTRAL).all()


def test_prepare_on_paper_is_the_papers_curation_byte_for_byte(mixed_root: Path, tmp_path: Path) -> None:
    default = hephaestus.prepare(mixed_root, tmp_path / "default", ImagingSettings())
    explicit = hephaestus.prepare(mixed_root, tmp_path / "paper", ImagingSettings(model_input="paper"))
    assert default.model_input == explicit.model_input == "paper" == dataset_input(tmp_path / "paper")
    assert default.removed["not_palette"] == 9 and default.selected == {"deforming": 5, "non_deforming": 5}
    manifest = (tmp_path / "default" / "manifest.jsonl").read_text()
    assert manifest == (tmp_path / "paper" / "manifest.jsonl").read_text()
    records = [json.loads(line) for line in manifest.splitlines()]
    assert all(record["id"] <= 11 for record in records) and len(records) == 10  # P mode only
    for record in records:
        # The paper's conversion: the palette looked up, saved by Pillow as RGB.
        with Image.open(mixed_root / "images" / f"{record['id']}.png") as source:
            expected = io.BytesIO()
            Image.fromarray(np.asarray(source.convert("RGB"))).save(expected, format="PNG")
        for folder in ("default", "paper"):
            assert (tmp_path / folder / record["image"]).read_bytes() == expected.getvalue()


def test_the_phase_input_reads_rgba_whatever_the_rgba_policy(tmp_path: Path) -> None:
    y, x = np.mgrid[:64, :96]
    rgb = phase.PHA.draw(np.hypot(x - 40, y - 20) / 5 - math.pi)
    as_rgba = tmp_path / "a.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(as_rgba)
    as_rgb = tmp_path / "b.png"
    Image.fromarray(rgb).save(as_rgb)
    skip = ImagingSettings(rgba_policy="skip")
    first, second = (read_model_image(path, skip, "phase") for path in (as_rgba, as_rgb))
    assert first.rendering == second.rendering == "pha" and np.array_equal(first.pixels, second.pixels)
    with pytest.raises(InputError, match="RGBA frame skipped by imaging.rgba_policy=skip"):
        read_model_image(as_rgba, skip, "paper")
