"""``insarwatch prepare`` end to end through the CLI, on flat-patch and raw LiCSAR roots."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import FRAME, annotation, flat_sample, fringes, palette, save_p, save_rgb, write_annotation
from PIL import Image
from typer.testing import CliRunner

from insarwatch import hephaestus
from insarwatch.cli import app
from insarwatch.config import CurationSettings, ImagingSettings

MANIFEST_KEYS = ["id", "image", "caption", "deformation", "activity_type", "intensity", "split"]
RULE_FIELDS = {
    "corrupted": ({"corrupted": 1}, False),
    "no_info": ({"no_info": 1}, False),
    "processing_error": ({"processing_error": 1}, True),
    "low_coherence": ({"low_coherence": 1}, False),
    "orbital_fringes": ({"orbital_fringes": 1}, False),
    "glacier_fringes": ({"glacier_fringes": 1}, True),
    "atmospheric_fringes": ({"atmospheric_fringes": 3}, False),
    "image_artifacts": ({"image_artifacts": 1}, False),
    "is_crowd": ({"is_crowd": 1}, True),
    "unidentified_activity": ({"activity_type": ["Unidentified"]}, True),
}


def read_manifest(dataset: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture
def flat_root(tmp_path: Path) -> Path:
    """12 deforming + 20 non-deforming clean P patches, some RGBA/RGB, one reject per rule,
    a malformed annotation, a duplicate id and a missing image."""
    root = tmp_path / "heph"
    next_id = iter(range(1, 1000))
    for _ in range(12):
        flat_sample(root, annotation(next(next_id), deformation=True))
    for _ in range(3):
        flat_sample(root, annotation(next(next_id), deformation=True), mode="RGBA")
    for _ in range(20):
        flat_sample(root, annotation(next(next_id)))
    for _ in range(4):
        flat_sample(root, annotation(next(next_id)), mode="RGBA")
    for _ in range(2):
        flat_sample(root, annotation(next(next_id)), mode="RGB")
    for fields, deformation in RULE_FIELDS.values():
        flat_sample(root, annotation(next(next_id), deformation=deformation, **fields))
    (root / "annotations" / "broken.json").write_text('{"uniqueID": 5,', encoding="utf-8")
    write_annotation(root, annotation(1), name="copy-of-1.json")
    write_annotation(root, annotation(900))  # no images/900.png
    return root


def test_prepare_flat_layout(flat_root: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    result = CliRunner().invoke(app, ["prepare", str(flat_root), "--out", str(dataset)])
    assert result.exit_code == 0, result.output
    for rule in RULE_FIELDS:
        assert re.search(rf"│ {rule}\s+│[^│]+│\s+1 │", result.stdout), rule
    assert re.search(r"│ not_palette\s+│[^│]+│\s+9 │", result.stdout)
    assert re.search(r"│ malformed\s+│[^│]+│\s+2 │", result.stdout)
    assert re.search(r"│ deforming\s+│\s+12 │\s+3 │\s+0 │\s+0 │\s+12 │", result.stdout)
    assert re.search(r"│ non_deforming\s+│\s+20 │\s+4 │\s+2 │\s+1 │\s+12 │", result.stdout)
    # 24 images: test ceil(2.4) = 3, val ceil(0.1 * 21) = 3, train 18
    assert re.search(r"│\s+18 │\s+3 │\s+3 │\s+24 │", result.stdout)
    assert "broken.json: not valid JSON" in result.stderr
    assert "copy-of-1.json: duplicate uniqueID 1 (also 1.json)" in result.stderr
    assert f"{flat_root / 'images' / '900.png'}: image missing for annotation 900" in result.stderr

    records = read_manifest(dataset)
    assert [list(r) for r in records] == [MANIFEST_KEYS] * 24
    deforming = [r for r in records if r["deformation"]]
    assert [r["id"] for r in deforming] == list(range(1, 13))
    assert all(r["activity_type"] == ["Mogi"] and r["intensity"] == ["High"] for r in deforming)
    assert all(r["activity_type"] == [] and r["intensity"] == [] for r in records if not r["deformation"])
    assert {r["id"] for r in records if not r["deformation"]} <= set(range(16, 36))
    assert all(r["caption"] == annotation(r["id"], deformation=r["deformation"])["caption"] for r in records)
    assert hephaestus.split([r["id"] for r in records]) == {r["id"]: r["split"] for r in records}
    for record in records:
        assert record["image"] == f"images/{record['id']}.png"
        with Image.open(dataset / record["image"]) as written:
            assert written.mode == "RGB"
            source = np.asarray(Image.open(flat_root / "images" / f"{record['id']}.png"))
            assert np.array_equal(np.asarray(written), palette()[source])


def test_prepare_is_deterministic(flat_root: Path, tmp_path: Path) -> None:
    first = hephaestus.prepare(flat_root, tmp_path / "a", ImagingSettings())
    second = hephaestus.prepare(flat_root, tmp_path / "b", ImagingSettings())
    assert (tmp_path / "a" / "manifest.jsonl").read_text() == (tmp_path / "b" / "manifest.jsonl").read_text()
    assert first.splits == second.splits == {"train": 18, "val": 3, "test": 3}
    assert first.selected == {"deforming": 12, "non_deforming": 12}
    assert first.removed == {"not_a_class": 0, **{rule: 1 for rule in RULE_FIELDS}, "deforming_confidence": 0,
                             "not_palette": 9}


def test_prepare_raw_licsar_layout(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    pairs = ["20210101_20210113", "20210113_20210125", "20210125_20210206", "20210206_20210218"]
    for number, pair in enumerate(pairs, start=1):
        primary, secondary = pair.split("_")
        diff = root / FRAME / "interferograms" / pair / f"{pair}.geo.diff.png"
        save_p(diff, fringes(300, 500, spacing=10 + number))
        write_annotation(root, annotation(number, deformation=number <= 2,
                                          primary_date=primary, secondary_date=secondary))
    write_annotation(root, annotation(10, primary_date="20220101", secondary_date="20220113"))
    write_annotation(root, annotation(11, frameID="bogus"))
    save_rgb(root / "014A_04939_131313" / "interferograms" / pairs[0] / f"{pairs[0]}.geo.diff.png",
             fringes(30, 30), alpha=np.full((30, 30), 255))
    write_annotation(root, annotation(12, frameID="014A_04939_131313"))
    dataset = tmp_path / "dataset"
    report = hephaestus.prepare(root, dataset, ImagingSettings())
    assert report.layout == "raw"
    assert report.remaining == {"deforming": {"P": 2, "RGBA": 0, "other": 0, "unknown": 0},
                                "non_deforming": {"P": 2, "RGBA": 1, "other": 0, "unknown": 2}}
    reasons = {skipped.path.name: skipped.reason for skipped in report.unusable}
    assert reasons["20220101_20220113.geo.diff.png"] == "image missing for annotation 10"
    assert "frame id 'bogus' is not of the form" in reasons[f"{pairs[0]}.geo.diff.png"]
    records = read_manifest(dataset)
    assert sorted(r["id"] for r in records) == [1, 2, 3, 4]
    with Image.open(dataset / "images" / "1.png") as written:
        assert (written.mode, written.size) == ("RGB", (500, 300))


def test_symlinks_leading_out_of_root_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "heph"
    flat_sample(root, annotation(1, deformation=True))
    flat_sample(root, annotation(2))
    outside = save_p(tmp_path / "elsewhere.png", fringes(64, 64))
    write_annotation(root, annotation(3, deformation=True))
    (root / "images" / "3.png").symlink_to(outside)
    write_annotation(tmp_path, annotation(4, deformation=True))
    (root / "annotations" / "4.json").symlink_to(tmp_path / "annotations" / "4.json")
    report = hephaestus.prepare(root, tmp_path / "dataset", ImagingSettings())
    assert [(s.path.name, s.reason) for s in report.unusable] == [
        ("3.png", "symlink leads outside the dataset root; refused")]
    assert [(s.path.name, s.reason) for s in report.malformed] == [
        ("4.json", "symlink leads outside the dataset root; refused")]
    assert sorted(r["id"] for r in read_manifest(tmp_path / "dataset")) == [1, 2]


def test_unreadable_images_are_listed_and_left_out(tmp_path: Path) -> None:
    root = tmp_path / "heph"
    for unique_id in range(1, 6):
        flat_sample(root, annotation(unique_id, deformation=unique_id <= 2))
    zero = root / "images" / "3.png"
    zero.write_bytes(b"")
    cut = root / "images" / "1.png"
    cut.write_bytes(cut.read_bytes()[:-30])
    report = hephaestus.prepare(root, tmp_path / "dataset", ImagingSettings())
    assert {(s.path.name, s.reason.split(" (")[0]) for s in report.unusable} == {
        ("3.png", "empty file"), ("1.png", "truncated PNG")}
    assert [r["id"] for r in read_manifest(tmp_path / "dataset")] == [2, 4, 5]


def test_huge_source_image_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "heph"
    flat_sample(root, annotation(1, deformation=True))
    flat_sample(root, annotation(2))
    report = hephaestus.prepare(root, tmp_path / "dataset", ImagingSettings(max_pixels=100))
    assert {s.reason for s in report.unusable} == {"image too large: 64x64 = 4096 pixels > limit 100"}
    assert read_manifest(tmp_path / "dataset") == []


def test_out_over_the_source_images_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "heph"
    flat_sample(root, annotation(1, deformation=True))
    before = (root / "images" / "1.png").read_bytes()
    result = CliRunner().invoke(app, ["prepare", str(root), "--out", str(root)])
    assert result.exit_code == 2
    assert "would overwrite the source images" in result.stderr
    assert (root / "images" / "1.png").read_bytes() == before


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_root_without_annotations_is_exit_2(tmp_path: Path, make: str) -> None:
    root = tmp_path / "root"
    if make == "empty":
        (root / "annotations").mkdir(parents=True)
        (root / "images").mkdir()
    result = CliRunner().invoke(app, ["prepare", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {root}: no annotations found (expected annotations/*.json)"
    assert not (tmp_path / "out").exists()


def _independent_recount(root: Path) -> tuple[set[int], set[int]]:
    """Clean P-mode ids per class from the raw JSON and the PNG colour-type byte, written
    from DESIGN.md without hephaestus.py: (deforming, non-deforming)."""
    deforming, others = set(), set()
    for path in (root / "annotations").glob("*.json"):
        a = json.loads(path.read_text())
        flags = ("corrupted", "no_info", "processing_error", "low_coherence", "orbital_fringes",
                 "glacier_fringes", "image_artifacts")
        if any(a[flag] != 0 for flag in flags) or a["atmospheric_fringes"] > 2:
            continue
        is_deforming = "Deformation" in a["label"]
        if is_deforming and (a["is_crowd"] != 0 or "Unidentified" in a["activity_type"] or a["confidence"] < 0.8):
            continue
        header = (root / "images" / f"{a['uniqueID']}.png").read_bytes()[:26]
        if header[12:16] == b"IHDR" and header[25] == 3:  # PNG colour type 3 = palette
            (deforming if is_deforming else others).add(a["uniqueID"])
    return deforming, others


def test_synth_dataset_then_prepare_counts(tmp_path: Path) -> None:
    root, dataset = tmp_path / "heph", tmp_path / "dataset"
    made = CliRunner().invoke(app, ["synth-dataset", str(root), "--n", "120", "--seed", "3"])
    assert made.exit_code == 0, made.output
    prepared = CliRunner().invoke(app, ["prepare", str(root), "--out", str(dataset)])
    assert prepared.exit_code == 0, prepared.output

    deforming, others = _independent_recount(root)
    records = read_manifest(dataset)
    kept_deforming = {r["id"] for r in records if r["deformation"]}
    kept_others = {r["id"] for r in records if not r["deformation"]}
    assert len(deforming) > 20 and len(others) > 20
    # Balanced: the smaller clean class whole, the larger drawn with random.Random(17).
    k = min(len(deforming), len(others))
    smaller, larger = (deforming, others) if len(deforming) <= len(others) else (others, deforming)
    kept_smaller, kept_larger = (kept_deforming, kept_others) if smaller is deforming else (kept_others, kept_deforming)
    assert kept_smaller == smaller and len(kept_larger) == k
    assert kept_larger == set(random.Random(17).sample(sorted(larger), k))
    n = len(records)
    n_test = math.ceil(0.1 * n)
    n_val = math.ceil(0.1 * (n - n_test))
    splits = [r["split"] for r in records]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (n - n_test - n_val, n_val, n_test)
    assert re.search(rf"│\s+{n - n_test - n_val} │\s+{n_val} │\s+{n_test} │\s+{n} │", prepared.stdout)
    for record in records:
        with Image.open(root / "images" / f"{record['id']}.png") as source:
            assert source.mode == "P"
        with Image.open(dataset / record["image"]) as written:
            assert written.mode == "RGB" and written.size == (224, 224)
        caption = json.loads((root / "annotations" / f"{record['id']}.json").read_text())["caption"]
        assert record["caption"] == caption


def test_dry_run_counts_without_writing_and_without_images(flat_root: Path, tmp_path: Path) -> None:
    for unique_id in (1, 2, 16):  # two deforming and one non-deforming image go missing
        (flat_root / "images" / f"{unique_id}.png").unlink()
    write_annotation(flat_root, annotation(950, deformation=True, confidence=0.7))
    dataset = tmp_path / "dataset"
    result = CliRunner().invoke(app, ["prepare", str(flat_root), "--out", str(dataset), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert not dataset.exists()
    counts = json.loads(result.stdout)
    assert counts["dry_run"] is True
    assert counts["classes"] == {"deforming": {"P": 10, "RGBA": 3, "other": 0, "unknown": 2},
                                 "non_deforming": {"P": 19, "RGBA": 4, "other": 2, "unknown": 2}}
    assert counts["rules"]["deforming_confidence"] == 1 and counts["rules"]["unusable"] == 4
    # Unknown modes are selected as if P-mode: 12 deforming, 12 of 21 non-deforming.
    assert counts["selected"] == {"deforming": 12, "non_deforming": 12}
    assert counts["split"] == {"train": 18, "val": 3, "test": 3}
    assert 0 < counts["selected_unknown_mode"] <= 4
    for unique_id in (1, 2, 16):
        assert f"{flat_root / 'images' / f'{unique_id}.png'}: image missing for annotation {unique_id}" in result.stderr


def test_real_annotations_reproduce_the_papers_counts(real_annotations_root: Path, tmp_path: Path) -> None:
    """The captioning paper: 634 clean deforming and 6,139 + 5,083 = 11,222 clean non-deforming."""
    args = ["prepare", str(real_annotations_root), "--out", str(tmp_path / "dataset"), "--dry-run", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr[-500:]
    counts = json.loads(result.stdout)
    assert counts["annotations"] == 19919 and counts["rules"]["malformed"] == 0
    assert counts["classes"]["deforming"] == {"P": 0, "RGBA": 0, "other": 0, "unknown": 634}
    assert counts["classes"]["non_deforming"] == {"P": 0, "RGBA": 0, "other": 0, "unknown": 11222}
    assert counts["selected"] == {"deforming": 634, "non_deforming": 634}
    assert sum(counts["split"].values()) == 1268
    # Every clean annotation's image is listed: missing, or (375 Réunion stripmap frames such as
    # 144A_SM_REUN_S6) a frame id that is not LiCSAR's, so no image path can be made for it.
    assert result.stderr.count("\nskipped ") == 634 + 11222
    assert result.stderr.count("is not of the form") == 375


def test_real_annotations_without_the_confidence_rule(real_annotations_root: Path) -> None:
    """The rules the paper states leave 784 deforming annotations: the unstated one removes 150."""
    report = hephaestus.prepare(real_annotations_root, Path("/nonexistent-out"), ImagingSettings(), dry_run=True,
                                curation=CurationSettings(deforming_min_confidence=0))
    assert "deforming_confidence" not in report.removed
    assert report.remaining["deforming"]["unknown"] == 784
    assert report.remaining["non_deforming"]["unknown"] == 11222
