"""Captioning PNG files on demand (``insarwatch caption``), outside the daemon and its store.

It owns the caption command's result: ``read_tiles`` reads each file through the daemon's
own steps (``pipeline.read_rgb``: decode, RGB conversion, the same refusals) and cuts it
into ``imaging.tile_size`` tiles, keeping the files it refused; ``describe_tiles`` gives each
tile its caption and nearest indexed examples as ``CaptionedTile``, whose ``to_dict`` is the
JSON line the command prints. No layout or pixel-quality check runs here: a Hephaestus
patch has no coherence file, and a user asking for a caption wants one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ImagingSettings
from .errors import InputError
from .imaging import Tile, tile
from .pipeline import read_rgb
from .describe import Bundle, Described


@dataclass(frozen=True)
class FileTiles:
    """The tiles of every file that could be read, and one error per file that could not."""

    tiles: tuple[tuple[Path, Tile], ...]
    refused: tuple[InputError, ...]


@dataclass(frozen=True)
class CaptionedTile:
    """One tile of one file with its caption and its nearest indexed examples."""

    image: Path
    tile: Tile
    described: Described

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "tile": self.tile.index,
            "box": list(self.tile.box),
            "caption": self.described.caption.text,
            "retrieved": self.described.caption.retrieved,
            "neighbours": [
                {"similarity": round(n.similarity, 4), "caption": n.record.caption, "source": n.record.source,
                 "deformation": n.record.deformation}
                for n in self.described.neighbours
            ],
        }


def read_tiles(paths: Sequence[Path], imaging: ImagingSettings) -> FileTiles:
    """Every readable file of ``paths`` cut into tiles, in order; the others refused."""
    tiles: list[tuple[Path, Tile]] = []
    refused: list[InputError] = []
    for path in paths:
        try:
            _, rgb = read_rgb(path, imaging)
        except InputError as exc:
            refused.append(exc)
            continue
        tiles += [(path, piece) for piece in tile(rgb, imaging.tile_size, imaging.tile_stride)]
    return FileTiles(tuple(tiles), tuple(refused))


def describe_tiles(tiles: Sequence[tuple[Path, Tile]], bundle: Bundle, k: int,
                   advance: Callable[[int], object] = lambda done: None) -> list[CaptionedTile]:
    """Caption ``tiles`` and find their ``k`` nearest examples, calling ``advance(n)`` after
    each model batch of ``n`` tiles."""
    described: list[Described] = []
    for batch in bundle.describe_batches([piece.pixels for _, piece in tiles], k):
        described += batch
        advance(len(batch))
    return [CaptionedTile(path, piece, item) for (path, piece), item in zip(tiles, described, strict=True)]
