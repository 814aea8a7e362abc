"""``insarwatch caption`` through CliRunner on real PNGs with the tiny registered model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from insarwatch.cli import app
from insarwatch.findings import parse_caption

ENV = {"INSARWATCH_CAPTIONING__MAX_NEW_TOKENS": "8", "INSARWATCH_CAPTIONING__TILES_PER_CALL": "2",
       "INSARWATCH_CAPTIONING__DEVICE": "cpu", "INSARWATCH_CONFIG": "/dev/null"}


def run(args: list[str], var_dir: Path):
    return CliRunner().invoke(app, ["caption", *args], env={**ENV, "INSARWATCH_VAR_DIR": str(var_dir)})


@pytest.fixture
def pngs(tmp_path: Path, tiny_index_tiles) -> dict[str, Path]:
    """A 300x200 palette frame (two 224 px tiles), an indexed patch, and a truncated file."""
    rng = np.random.default_rng(5)
    frame = Image.fromarray(rng.integers(1, 255, (200, 300), dtype=np.uint8), mode="L").convert("P")
    paths = {"frame": tmp_path / "frame.geo.diff.png", "patch": tmp_path / "patch.png",
             "broken": tmp_path / "broken.png"}
    frame.save(paths["frame"])
    Image.fromarray(tiny_index_tiles[2]).save(paths["patch"])
    paths["broken"].write_bytes(paths["patch"].read_bytes()[:60])
    return paths


def test_json_lines_give_every_tile_its_caption_and_neighbours(tiny_var_dir, pngs) -> None:
    result = run([str(pngs["frame"]), str(pngs["patch"]), "--json"], tiny_var_dir)
    assert result.exit_code == 0, result.output

    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(r["image"]).name, r["tile"], r["box"]) for r in rows] == [
        ("frame.geo.diff.png", 0, [0, 0, 224, 200]),
        ("frame.geo.diff.png", 1, [76, 0, 300, 200]),
        ("patch.png", 0, [0, 0, 64, 64]),
    ]
    for row in rows:
        assert row["caption"] and row["retrieved"] is False and len(row["neighbours"]) == 5
        assert set(row["neighbours"][0]) == {"similarity", "caption", "source", "deformation"}
    nearest = rows[2]["neighbours"][0]
    assert nearest["source"] == "img2" and nearest["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert nearest["deformation"] is True and "mogi" in nearest["caption"]


def test_table_names_the_model_and_shows_captions(tiny_var_dir, pngs) -> None:
    result = run([str(pngs["patch"])], tiny_var_dir)
    assert result.exit_code == 0, result.output
    version = (tiny_var_dir / "models" / "current").readlink().name
    assert f"captions by model {version}" in result.stdout
    assert "patch.png" in result.stdout and "img2" in result.stdout


def test_a_bad_image_is_one_line_and_exit_2_but_the_others_are_captioned(tiny_var_dir, pngs) -> None:
    result = run([str(pngs["broken"]), str(pngs["patch"]), str(pngs["frame"].with_name("absent.png")), "--json"],
                 tiny_var_dir)
    assert result.exit_code == 2
    assert [Path(json.loads(line)["image"]).name for line in result.stdout.splitlines()] == ["patch.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert str(pngs["broken"]) in errors[0] and "truncated" in errors[0]
    assert "absent.png" in errors[1]
    assert "2 of 3 images could not be captioned" in result.stderr


def test_a_bare_captioner_directory_captions_without_neighbours(tiny_blip_dir, tmp_path, pngs) -> None:
    result = run([str(pngs["patch"]), "--model", str(tiny_blip_dir), "--json"], tmp_path / "empty-var")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["neighbours"] == [] and row["caption"]


def test_no_model_is_a_one_line_error_with_exit_2(tmp_path, pngs) -> None:
    result = run([str(pngs["patch"])], tmp_path / "var")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "no current model" in result.stderr

    missing = run([str(pngs["patch"]), "--model", str(tmp_path / "nowhere")], tmp_path / "var")
    assert missing.exit_code == 2 and "neither a model version" in missing.stderr


def test_json_gives_each_tile_the_daemons_level_and_vote(tiny_var_dir, pngs) -> None:
    result = run([str(pngs["frame"]), str(pngs["patch"]), "--json"], tiny_var_dir)
    assert result.exit_code == 0, result.output
    for row in map(json.loads, result.stdout.splitlines()):
        weights = [max(n["similarity"], 0.0) for n in row["neighbours"]]
        vote = sum(w for w, n in zip(weights, row["neighbours"]) if n["deformation"]) / sum(weights)
        assert row["vote"] == pytest.approx(vote, abs=1e-3)
        deforms = parse_caption(row["caption"]).deformation
        expected = ("alert" if vote >= 0.5 else "review") if deforms else ("review" if vote >= 0.5 else "quiet")
        assert row["level"] == expected
        assert 0 < row["detection"] < 1  # the index's detector, fitted when the index was built
