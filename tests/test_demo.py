"""``insarwatch demo`` end to end with a test-sized preset: every step runs for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from insarwatch.cli import app


def test_demo_runs_every_step_then_reuses_the_model(micro_demo: tuple[Path, list[str], str], tmp_path: Path) -> None:
    made, args, first = micro_demo  # the session's first run, on an empty work directory
    assert "(trained now)" in first
    truth = [json.loads(line) for line in (made / "drop" / "synth-truth.jsonl").read_text().splitlines()]
    assert len(truth) == 2
    for row in truth:
        assert row["key"] in first
    digest = Path(first.strip().splitlines()[-1].removeprefix("digest: "))
    assert digest.is_file() and digest.suffix == ".html"
    assert (made / "var" / "models" / "current").is_symlink()
    assert (made / "dataset" / "manifest.jsonl").is_file()

    workdir = tmp_path / "demo"
    shutil.copytree(made, workdir, symlinks=True)
    again = CliRunner().invoke(app, [str(workdir) if arg == str(made) else arg for arg in args])
    assert again.exit_code == 0, again.output
    assert "(reused)" in again.output
