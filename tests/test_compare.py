"""``insarwatch compare``: every system on one split, the table as JSON, the validation figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import MICRO_GIT_PRESET, MICRO_PRESET
from PIL import Image
from typer.testing import CliRunner

from insarwatch.cli import app

SYSTEMS = ["BLIP", "GIT", "retrieval only", "insarwatch hybrid (alert)", "insarwatch hybrid (alert or review)"]
METRICS = {"rouge1", "rouge2", "rougeL", "bleu", "retrieval_exact_match", "deformation_precision",
           "deformation_recall", "deformation_f1", "tiles_per_second"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    runner = CliRunner()
    assert runner.invoke(app, ["synth-dataset", str(root / "heph"), "--n", "60", "--seed", "2"]).exit_code == 0
    made = runner.invoke(app, ["prepare", str(root / "heph"), "--out", str(root / "dataset")])
    assert made.exit_code == 0, made.output
    return root / "dataset"


def labelled_tiles(dataset: Path, directory: Path) -> Path:
    """The dataset's test images as DIR/1 (deforming) and DIR/0 (not), as real labelled tiles are laid out."""
    for line in (dataset / "manifest.jsonl").read_text().splitlines():
        sample = json.loads(line)
        if sample["split"] == "test":
            target = directory / ("1" if sample["deformation"] else "0") / Path(sample["image"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(dataset / sample["image"], target)
    return directory


def test_compare_prints_every_system_and_writes_table_and_figure(dataset: Path, tmp_path: Path) -> None:
    preset, git_preset = tmp_path / "micro.json", tmp_path / "micro-git.json"
    preset.write_text(json.dumps(MICRO_PRESET), encoding="utf-8")
    git_preset.write_text(json.dumps(MICRO_GIT_PRESET), encoding="utf-8")
    tiles = labelled_tiles(dataset, tmp_path / "tiles")
    (tiles / "0" / "broken.png").write_bytes(b"not a png")
    workdir = tmp_path / "work"
    args = ["compare", "--data", str(dataset), "--workdir", str(workdir), "--tiles", str(tiles),
            "--blip-preset", str(preset), "--git-preset", str(git_preset), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert table == json.loads((workdir / "compare.json").read_text())
    rows = {row["system"]: row for row in table["rows"]}
    assert list(rows) == SYSTEMS
    assert table["decoding"] == "deterministic"
    for name in SYSTEMS:
        metrics = rows[name]["metrics"]
        assert METRICS <= set(metrics), name
        assert metrics["n_test"] == table["n_test"] and metrics["tiles_per_second"] > 0
        assert set(rows[name]["real_tiles"]) == {"deformation_precision", "deformation_recall", "deformation_f1"}
    for name in ("BLIP", "GIT"):
        assert rows[name]["status"] == "trained" and rows[name]["metrics"]["decoding"] == "deterministic"
    # Retrieval only writes what it retrieves: its exact match is its caption's.
    retrieval = rows["retrieval only"]["metrics"]
    assert retrieval["retrieval_exact_match"] == rows["BLIP"]["metrics"]["retrieval_exact_match"]
    # The hybrid's captions are BLIP's; only the decision differs.
    for key in ("rougeL", "bleu"):
        assert rows["insarwatch hybrid (alert)"]["metrics"][key] == pytest.approx(rows["BLIP"]["metrics"][key])
    hybrid = [rows[name]["metrics"]["deformation_recall"] for name in SYSTEMS[3:]]
    assert hybrid[0] <= hybrid[1]  # counting reviews as positive can only find more
    assert table["real_tiles"]["files"] == table["n_test"]
    assert table["real_tiles"]["refused"] and "broken.png" in table["real_tiles"]["refused"][0]
    with Image.open(table["figure"]) as figure:
        assert figure.format == "PNG" and figure.size[0] > 600

    # Trained models are reused; a captioner that cannot be built says why and has no numbers.
    again = CliRunner().invoke(app, [*args[:-2], "no-such-preset", "--json"])
    assert again.exit_code == 0, again.output
    rows = {row["system"]: row for row in json.loads(again.stdout)["rows"]}
    assert rows["BLIP"]["status"] == "reused"
    assert rows["GIT"]["status"].startswith("not built: no-such-preset: unknown preset")
    assert rows["GIT"]["metrics"] == {} and rows["GIT"]["real_tiles"] is None


def test_compare_without_a_dataset_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "--data", str(tmp_path / "none"), "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'none'}: dataset directory does not exist"
