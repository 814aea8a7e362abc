"""``insarwatch demo`` end to end with a test-sized preset: every step runs for real."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from insarwatch.cli import app
from helpers import MICRO_PRESET


def test_demo_runs_every_step_then_reuses_the_model(tmp_path: Path) -> None:
    preset = tmp_path / "micro.json"
    preset.write_text(json.dumps(MICRO_PRESET), encoding="utf-8")
    workdir = tmp_path / "demo"
    args = ["demo", "--workdir", str(workdir), "--frames", "1", "--patches", "40", "--preset", str(preset)]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "(trained now)" in first.output
    truth = [json.loads(line) for line in (workdir / "drop" / "synth-truth.jsonl").read_text().splitlines()]
    assert len(truth) == 2
    for row in truth:
        assert row["key"] in first.output
    digest = Path(first.output.strip().splitlines()[-1].removeprefix("digest: "))
    assert digest.is_file() and digest.suffix == ".html"
    assert (workdir / "var" / "models" / "current").is_symlink()
    assert (workdir / "dataset" / "manifest.jsonl").is_file()

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "(reused)" in again.output
