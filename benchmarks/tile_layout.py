"""Tile layouts on a real swath: how much valid ground they caption, and whether a pattern near a tile edge is lost.

A geocoded LiCSAR frame is a rotated swath with transparent corners. This script lays tiles
over the valid-pixel mask of a real frame (default ``../shared/realdata/frames/
mexico_city.geo.diff.png``: 935 x 1220 px, 34% corners) in five ways:

- ``grid``: today's plain grid over the whole image (``imaging.tile`` without a mask);
- ``swath``: ``imaging.tile`` with the mask (tiles follow the swath);
- ``swath+offset``: ``swath`` plus a second swath grid shifted half a tile both ways;
- ``swath/overlap 3/4``, ``swath/overlap 1/2``: ``swath`` at strides of 3/4 and 1/2 a tile.

Tiles with more no-data than ``nodata_max_fraction`` are skipped as the daemon skips them.
For deformation patterns of radius R placed uniformly over the valid pixels (seeded), a
pattern counts as seen whole when some captioned tile contains its whole disc: a fringe
pattern cut by a tile edge is half a pattern to the captioner. Prints tiles captioned,
valid pixels covered and the share of patterns seen whole per layout and radius, then
``ratio=<patterns seen whole by swath/overlap 1/2 / by grid at R = tile/4>``.

    python benchmarks/tile_layout.py
    python benchmarks/tile_layout.py --frame some.geo.diff.png --patterns 4000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from insarwatch.config import ImagingSettings
from insarwatch.imaging import decode_png, nodata_mask, tile, to_rgb, usable_tiles

DEFAULT_FRAME = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "frames" / "mexico_city.geo.diff.png"


def layouts(rgb: np.ndarray, valid: np.ndarray, size: int) -> dict[str, list]:
    half = size // 2
    shifted = np.zeros_like(valid)
    shifted[half:, half:] = valid[half:, half:]  # the second grid starts half a tile in
    offset = [piece for piece in tile(rgb, size, size, shifted) if piece.box[0] >= half and piece.box[1] >= half]
    return {
        "grid": [(piece.box, float(valid[piece.box[1]:piece.box[3], piece.box[0]:piece.box[2]].mean()))
                 for piece in tile(rgb, size, size)],
        "swath": tile(rgb, size, size, valid),
        "swath+offset": tile(rgb, size, size, valid) + offset,
        "swath/overlap 3/4": tile(rgb, size, size * 3 // 4, valid),
        "swath/overlap 1/2": tile(rgb, size, half, valid),
    }


def captioned_boxes(pieces: list, valid: np.ndarray, settings: ImagingSettings) -> list[tuple[int, int, int, int]]:
    if pieces and isinstance(pieces[0], tuple):  # the plain grid: valid fraction measured here
        return [box for box, fraction in pieces if 1 - fraction <= settings.nodata_max_fraction]
    return [piece.box for piece in usable_tiles(pieces, valid.shape, None, settings).tiles]


def seen_whole(boxes: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> float:
    inside = ((boxes[:, 0][None] <= xs[:, None] - radius) & (boxes[:, 2][None] >= xs[:, None] + radius)
              & (boxes[:, 1][None] <= ys[:, None] - radius) & (boxes[:, 3][None] >= ys[:, None] + radius))
    return float(inside.any(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=Path, default=DEFAULT_FRAME)
    parser.add_argument("--patterns", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = ImagingSettings()
    image = decode_png(args.frame, settings.max_pixels)
    rgb = to_rgb(image, "convert", args.frame)
    valid = ~nodata_mask(image, rgb)
    size = settings.tile_size
    ys, xs = np.nonzero(valid)
    pick = np.random.default_rng(args.seed).integers(0, ys.size, args.patterns)
    ys, xs = ys[pick], xs[pick]
    radii = (size // 8, size // 4, size * 3 // 8)
    table = Table(title=f"{args.frame.name}: {valid.shape[1]}x{valid.shape[0]} px, "
                        f"{1 - valid.mean():.1%} no-data; tile {size}, nodata_max_fraction {settings.nodata_max_fraction}")
    for column in ("layout", "tiles laid", "captioned", "valid px covered", *(f"seen whole R={r}" for r in radii)):
        table.add_column(column, justify="right")
    results = {}
    for name, pieces in layouts(rgb, valid, size).items():
        boxes = np.array(captioned_boxes(pieces, valid, settings))
        covered = np.zeros_like(valid)
        for left, top, right, bottom in boxes:
            covered[top:bottom, left:right] = True
        whole = [seen_whole(boxes, ys, xs, radius) for radius in radii]
        results[name] = whole
        table.add_row(name, str(len(pieces)), str(len(boxes)), f"{(covered & valid).sum() / valid.sum():.3f}",
                      *(f"{value:.3f}" for value in whole))
    Console(width=130).print(table)
    print(f"ratio={results['swath/overlap 1/2'][1] / results['grid'][1]:.3f}")


if __name__ == "__main__":
    main()
