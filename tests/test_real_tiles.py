"""``insarwatch evaluate --tiles``: labelled tile folders scored with the tiny registered model.

The folders hold real PNGs in three renderings (palette, RGBA, grey) written into
``DIR/1`` and ``DIR/0``; the tiny model's index is built from some of the same pixels, so
neighbours are found at similarity 1. Every metric the command prints is recomputed here
from its JSON lines with plain arithmetic, and the real folders are scored when present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import fringes, save_p
from PIL import Image
from rich.progress import Progress
from typer.testing import CliRunner

from insarwatch.cli import app
from insarwatch.config import Settings
from insarwatch.findings import parse_caption
from training.real_tiles import CALLS, evaluate_model_on_tiles

ENV = {"INSARWATCH_CAPTIONING__MAX_NEW_TOKENS": "8", "INSARWATCH_CAPTIONING__TILES_PER_CALL": "4",
       "INSARWATCH_CAPTIONING__NUM_BEAMS": "1", "INSARWATCH_CAPTIONING__DEVICE": "cpu",
       "INSARWATCH_CONFIG": "/dev/null", "INSARWATCH_IMAGING__RGBA_POLICY": "convert"}
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def run(args: list[str], var_dir: Path):
    return CliRunner().invoke(app, ["evaluate", *args], env={**ENV, "INSARWATCH_VAR_DIR": str(var_dir)})


@pytest.fixture
def tiles(tmp_path: Path, tiny_index_tiles) -> Path:
    """DIR/1: two indexed deforming tiles and a palette fringe patch; DIR/0: two indexed quiet
    tiles, an RGBA and a grey patch, and one truncated file."""
    root = tmp_path / "tiles"
    (root / "1").mkdir(parents=True)
    (root / "0").mkdir()
    for i in (0, 2):
        Image.fromarray(tiny_index_tiles[i]).save(root / "1" / f"indexed{i}.png")
    save_p(root / "1" / "fringes.png", fringes(96, 96))
    for i in (1, 3):
        Image.fromarray(tiny_index_tiles[i]).save(root / "0" / f"indexed{i}.png")
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (80, 80, 4), dtype=np.uint8), mode="RGBA").save(root / "0" / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (90, 90), dtype=np.uint8), mode="L").save(root / "0" / "grey.png")
    (root / "0" / "truncated.png").write_bytes((root / "0" / "grey.png").read_bytes()[:50])
    return root


def recomputed(lines: list[dict], call: str) -> dict[str, float]:
    """A call's precision, recall and balanced accuracy from the JSON lines alone."""
    def called(line: dict) -> bool:
        if call == "caption":
            return parse_caption(line["caption"]).deformation
        if call == "vote":
            return line["vote"] is not None and line["vote"] >= line["review_vote"]
        return line["level"] == "alert" if call == "alert" else line["level"] in ("alert", "review")

    tp = sum(called(l) and l["label"] == 1 for l in lines)
    fp = sum(called(l) and l["label"] == 0 for l in lines)
    positives = sum(l["label"] == 1 for l in lines)
    negatives = len(lines) - positives
    recall = tp / positives
    return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": recall,
            "balanced_accuracy": (recall + 1 - fp / negatives) / 2}


def test_every_image_gets_a_line_and_the_table_is_recomputable_from_them(tiny_var_dir, tiles, tmp_path) -> None:
    out = tmp_path / "lines.jsonl"
    result = run(["--tiles", str(tiles), "--out", str(out), "--json"], tiny_var_dir)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    assert [(Path(l["path"]).name, l["label"]) for l in lines] == [
        ("fringes.png", 1), ("indexed0.png", 1), ("indexed2.png", 1),
        ("grey.png", 0), ("indexed1.png", 0), ("indexed3.png", 0), ("rgba.png", 0)]
    assert (summary["deforming"], summary["quiet"], summary["refused"]) == (3, 4, 1)
    assert "truncated.png" in result.stderr
    for line in lines:
        assert line["level"] in ("alert", "review", "quiet")
        assert len(line["similarities"]) == 5 == len(line["neighbour_deformation"])
        assert line["finding"] == parse_caption(line["caption"]).to_dict()
        assert 0 < line["detection"] < 1 and line["unread_rendering"] is None  # the paper's RGB input reads anything
    indexed = next(l for l in lines if l["path"].endswith("indexed0.png"))
    # The tile is in the index: its nearest neighbour is itself, a deforming record.
    assert indexed["similarities"][0] == pytest.approx(1.0, abs=1e-3) and indexed["neighbour_deformation"][0]
    for call in CALLS:
        for name, value in recomputed(lines, call).items():
            assert summary["calls"][call][name] == pytest.approx(value), (call, name)


def test_the_table_names_every_call_and_the_model(tiny_var_dir, tiles) -> None:
    result = run(["--tiles", str(tiles)], tiny_var_dir)
    assert result.exit_code == 0, result.output
    version = (tiny_var_dir / "models" / "current").readlink().name
    assert version in result.stdout and "3 deforming, 4 quiet" in result.stdout
    for call in CALLS:
        assert call in result.stdout


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --data DATASET or --tiles DIR"),
    (["--data", "d", "--tiles", "t"], "give exactly one of --data DATASET or --tiles DIR"),
    (["--data", "d", "--out", "x.jsonl"], "--out goes with --tiles"),
])
def test_data_and_tiles_are_mutually_exclusive(tiny_var_dir, args, message) -> None:
    result = run(args, tiny_var_dir)
    assert result.exit_code != 0
    assert result.stderr.strip() == f"error: {message}"


def test_a_folder_without_both_labels_is_one_line_naming_it(tiny_var_dir, tiles) -> None:
    for path in (tiles / "0").iterdir():
        path.unlink()
    result = run(["--tiles", str(tiles)], tiny_var_dir)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tiles / '0'}: no tiles")


@pytest.mark.parametrize("folder", ["c1", "s1"])
def test_real_folders_lose_only_what_the_reading_step_refuses(tiny_var_dir, folder) -> None:
    root = REALDATA / folder
    if not root.is_dir():
        pytest.skip(f"../shared/realdata absent: {root}")
    settings = Settings(var_dir=tiny_var_dir)
    settings = settings.model_copy(update={"captioning": settings.captioning.model_copy(
        update={"num_beams": 1, "max_new_tokens": 4, "device": "cpu"})})
    with Progress(disable=True) as progress:
        evaluation = evaluate_model_on_tiles("current", root, settings, progress)
    everything = sorted(p for label in "01" for p in (root / label).iterdir())
    # The default rgba_policy 'skip' refuses RGBA crops (the paper's choice) and the reading
    # step reads PNGs only; each refusal names its file.
    unreadable = sorted(p for p in everything if p.suffix != ".png" or Image.open(p).mode == "RGBA")
    assert sorted(Path(error.path) for error in evaluation.refused) == unreadable
    assert sorted(r.captioned.image for r in evaluation.results) == sorted(set(everything) - set(unreadable))
    assert evaluation.confusion("caption").true_positive + evaluation.confusion("caption").false_negative == \
        sum(1 for p in (root / "1").iterdir() if p not in unreadable)
