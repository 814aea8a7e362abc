"""Captioning PNG files on demand (``insarwatch caption``), outside the daemon and its store.

It owns the caption command's result: ``read_tiles`` reads each file through the daemon's
own step (``reading.read_model_image``: the same refusals, and the input the model was trained
on, the paper's RGB or the canonical rendering of the phase) and cuts it into
``imaging.tile_size`` tiles, keeping the files it refused; a file is a PNG or a
``.geo.diff_pha.tif`` read alone; ``describe_tiles`` gives each
tile its caption, nearest indexed examples and decision (``alerts.decide_tile``, the
daemon's rule) as ``CaptionedTile``, whose ``to_dict`` is the JSON line the command prints. No layout or pixel-quality check runs here: a Hephaestus
patch has no coherence file, and a user asking for a caption wants one. A ``.geo.diff.png``
with GeoTIFF siblings or frame metadata (``geo.read_siblings``), or a ``.geo.diff_pha.tif``,
gives its tiles WGS84 ``bounds`` and their nearest ``volcano``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alerts import TileDecision, decide_tile
from .config import AlertSettings, ImagingSettings, ModelInput
from .describe import Bundle, Described
from .errors import InputError
from .findings import parse_caption
from .geo import Grid
from .imaging import Tile, tile
from .licsar import DIFF_SUFFIX, frame_dir, sibling_paths
from .reading import read_model_image
from .volcanoes import Catalogue


@dataclass(frozen=True)
class FileTiles:
    """The tiles of every file that could be read, and one error per file that could not."""

    tiles: tuple[tuple[Path, Tile], ...]
    refused: tuple[InputError, ...]
    grids: dict[Path, Grid] = field(default_factory=dict)  # the georeferenced files' PNG grids
    problems: tuple[str, ...] = ()  # siblings refused (the PNG was read all the same)
    unread: dict[Path, str] = field(default_factory=dict)  # why a file's colours fit no known table


@dataclass(frozen=True)
class CaptionedTile:
    """One tile of one file with its caption, its nearest indexed examples and its level."""

    image: Path
    tile: Tile
    described: Described
    decision: TileDecision  # its level, and its bounds and nearest volcano when georeferenced

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "tile": self.tile.index,
            "box": list(self.tile.box),
            **self.decision.place(),
            "caption": self.described.caption.text,
            "level": self.decision.level,
            "vote": self.decision.reasons["vote"],
            "detection": self.decision.reasons["detection"],
            "retrieved": self.described.caption.retrieved,
            "neighbours": [
                {"similarity": round(n.similarity, 4), "caption": n.record.caption, "source": n.record.source,
                 "deformation": n.record.deformation}
                for n in self.described.neighbours
            ],
        }


def read_tiles(paths: Sequence[Path], imaging: ImagingSettings, model_input: ModelInput) -> FileTiles:
    """Every readable file of ``paths`` cut into tiles, in order, as ``model_input`` shows it; the others refused."""
    tiles: list[tuple[Path, Tile]] = []
    refused: list[InputError] = []
    grids: dict[Path, Grid] = {}
    problems: list[str] = []
    unread: dict[Path, str] = {}
    for path in paths:
        licsar = Path(path).name.endswith(DIFF_SUFFIX)
        try:
            read = read_model_image(path, imaging, model_input,
                                    *((sibling_paths(path), frame_dir(path)) if licsar else ()))
        except InputError as exc:
            refused.append(exc)
            continue
        problems += read.siblings.problems
        if read.siblings.grid is not None:
            grids[path] = read.siblings.grid
        if read.unknown is not None:
            unread[path] = read.unknown
        tiles += [(path, piece) for piece in tile(read.pixels, imaging.tile_size, imaging.tile_stride)]
    return FileTiles(tuple(tiles), tuple(refused), grids, tuple(problems), unread)


def describe_tiles(tiles: Sequence[tuple[Path, Tile]], bundle: Bundle, k: int, alerts: AlertSettings,
                   advance: Callable[[int], object] = lambda done: None,
                   grids: Mapping[Path, Grid] | None = None, catalogue: Catalogue | None = None,
                   unread: Mapping[Path, str] | None = None) -> list[CaptionedTile]:
    """Caption ``tiles``, find their ``k`` nearest examples and decide each one's level,
    calling ``advance(n)`` after each model batch of ``n`` tiles; tiles of a file in ``grids`` get their bounds and, with a
    ``catalogue``, their nearest volcano; tiles of a file in ``unread`` (``FileTiles.unread``) are for review at most."""
    described: list[Described] = []
    for batch in bundle.describe_batches([piece.pixels for _, piece in tiles], k):
        described += batch
        advance(len(batch))
    captioned = []
    for (path, piece), item in zip(tiles, described, strict=True):
        grid = (grids or {}).get(path)
        bounds = grid.box_bounds(piece.box) if grid is not None else None
        volcano = None
        if bounds is not None and catalogue is not None:
            west, south, east, north = bounds
            nearest, distance = catalogue.nearest((south + north) / 2, (west + east) / 2)
            volcano = (nearest.name, distance)
        decision = decide_tile(piece.index, piece.box, item.caption.text, parse_caption(item.caption.text),
                               item.neighbours, alerts, bounds=bounds, volcano=volcano, detection=item.detection,
                               unread=(unread or {}).get(path))
        captioned.append(CaptionedTile(path, piece, item, decision))
    return captioned
