"""``insarwatch caption`` reads files through the daemon's own steps: the same PNGs are refused
for the same reasons, in the same words, and the tiles are the daemon's tiles."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from insarwatch.caption_files import read_tiles
from insarwatch.config import ImagingSettings, Settings
from insarwatch.pipeline import Rejected, Tiled, read_interferogram
from insarwatch.reading import Unreadable
from insarwatch.store import InterferogramRecord

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)
PAIR = "20201009_20201021"


def _frame(drop: Path, name: str, image: Image.Image | bytes) -> Path:
    """A LiCSAR-layout diff PNG (frame ``name``) with a fully coherent .geo.cc.png beside it."""
    folder = drop / name / "interferograms" / PAIR
    folder.mkdir(parents=True)
    path = folder / f"{PAIR}.geo.diff.png"
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        image.save(path)
    Image.fromarray(np.full((200, 300), 255, dtype=np.uint8), mode="L").save(folder / f"{PAIR}.geo.cc.png")
    return path


@pytest.fixture
def frames(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(11)
    phase = Image.fromarray(rng.integers(1, 255, (200, 300), dtype=np.uint8), mode="L").convert("P")
    drop = tmp_path / "drop"
    good = _frame(drop, "124D_04854_171313", phase)
    return {
        "good": good,
        "truncated": _frame(drop, "124D_04854_171314", good.read_bytes()[:60]),
        "rgba": _frame(drop, "124D_04854_171315", phase.convert("RGBA")),
        "gray_alpha": _frame(drop, "124D_04854_171316", phase.convert("LA")),
        "one_pixel": _frame(drop, "124D_04854_171317", phase.crop((0, 0, 1, 1))),
        "a_strip": _frame(drop, "124D_04854_171318", phase.crop((0, 0, 300, 3))),
    }


def _daemon_reads(path: Path, settings: Settings) -> Tiled | Rejected:
    record = InterferogramRecord(key=path.stem, path=str(path), frame=None, primary=None, secondary=None,
                                 state="processing", attempts=1, received_at=NOW, updated_at=NOW)
    return read_interferogram(record, settings)


@pytest.mark.parametrize(("name", "reason"), [("truncated", "decode"), ("rgba", "rgba"), ("gray_alpha", "mode"),
                                             ("one_pixel", "too_small"), ("a_strip", "too_small")])
def test_a_file_the_daemon_rejects_is_refused_by_caption_in_the_same_words(
        frames: dict[str, Path], tmp_path: Path, name: str, reason: str) -> None:
    settings = Settings(var_dir=tmp_path / "var", drop_dir=tmp_path / "drop")
    daemon = _daemon_reads(frames[name], settings)
    read = read_tiles([frames[name], frames["good"]], settings.imaging, "paper")

    assert isinstance(daemon, Rejected) and daemon.reason == reason
    (refused,) = read.refused
    assert isinstance(refused, Unreadable) and refused.rejection == reason
    assert str(refused) == daemon.detail and refused.path == str(frames[name])
    assert {path for path, _ in read.tiles} == {frames["good"]}


def test_caption_cuts_the_tiles_the_daemon_would_caption(frames: dict[str, Path], tmp_path: Path) -> None:
    imaging = ImagingSettings(tile_size=128, tile_stride=96)
    settings = Settings(var_dir=tmp_path / "var", drop_dir=tmp_path / "drop", imaging=imaging)
    daemon = _daemon_reads(frames["good"], settings)
    read = read_tiles([frames["good"]], imaging, "paper")

    assert isinstance(daemon, Tiled) and read.refused == ()
    assert [piece.box for _, piece in read.tiles] == [piece.box for piece in daemon.tiles]
    assert len(read.tiles) > 2
    for (_, mine), theirs in zip(read.tiles, daemon.tiles, strict=True):
        assert np.array_equal(mine.pixels, theirs.pixels)


def test_a_frame_smaller_than_the_minimum_says_its_size(frames: dict[str, Path]) -> None:
    read = read_tiles([frames["a_strip"]], ImagingSettings(min_side=3), "paper")
    assert read.refused == () and len(read.tiles) == 2
    (refused,) = read_tiles([frames["a_strip"]], ImagingSettings(), "paper").refused
    assert refused.reason == "frame 300x3 px is smaller than imaging.min_side (56 px on each side)"
