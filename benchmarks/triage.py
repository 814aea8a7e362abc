"""CPU triage: skip the decoder for tiles the index confidently calls quiet.

Generation costs several times the vision pass on a CPU, and most tiles of a real frame
show no deformation. With ``captioning.triage`` on, every tile still gets the vision pass
and the retrieval search, but only tiles whose nearest examples are not a confident,
unanimous "no deformation" are captioned; the others take the nearest example's caption.

This script measures, with the tiny model trained on synthetic data (the demo's, trained
first if the work directory has none), on two synthetic test sets:

- ``frames``: every tile of the demo's synthetic LiCSAR drop — the operational mix, where
  deformation covers a few tiles near the volcano;
- ``patches``: the balanced test and validation splits of the training set (half deforming).

For each triage threshold it prints tiles/s with and without triage and the recall of the
``alert`` + ``review`` decisions with triage relative to without, then picks the fastest
setting that keeps relative recall ≥ 0.99 on both sets (or the closest one) and ends with
``ratio=<its speed-up on frames>``.

    python benchmarks/triage.py                      # uses/makes ./insarwatch-demo
    python benchmarks/triage.py --workdir /tmp/demo --thresholds 0.9 0.95
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from insarwatch import console as iw_console
from insarwatch.alerts import decide_tile
from insarwatch.config import TriageSettings
from insarwatch.demo import demo_settings, ensure_model
from insarwatch.describe import load_bundle
from insarwatch.findings import parse_caption
from insarwatch.imaging import decode_png, tile, to_rgb
from insarwatch.manifest import MANIFEST
from insarwatch.synthetic.drop import TRUTH_FILE, write_drop


def frame_tiles(drop: Path, settings) -> list[np.ndarray]:
    tiles = []
    for path in sorted(drop.rglob("*.geo.diff.png")):
        rgb = to_rgb(decode_png(path, settings.imaging.max_pixels), "skip", path)
        tiles += [piece.pixels for piece in tile(rgb, settings.imaging.tile_size, settings.imaging.tile_stride)]
    return tiles


def patch_tiles(dataset: Path) -> list[np.ndarray]:
    rows = [json.loads(line) for line in (dataset / MANIFEST).read_text().splitlines()]
    return [np.asarray(Image.open(dataset / row["image"]).convert("RGB")) for row in rows
            if row["split"] in ("test", "val")]


def flagged(bundle, settings, tiles: list[np.ndarray]) -> tuple[set[int], float, int]:
    """Indices of tiles decided alert/review, tiles/s, and how many were captioned."""
    start = time.perf_counter()
    described = bundle.describe(tiles, settings.retrieval.k)
    seconds = time.perf_counter() - start
    hits = set()
    for number, found in enumerate(described):
        decision = decide_tile(number, (0, 0, 0, 0), found.caption.text, parse_caption(found.caption.text),
                               found.neighbours, settings.alerts)
        if decision.level != "quiet":
            hits.add(number)
    captioned = sum(not found.caption.retrieved for found in described)
    return hits, len(tiles) / seconds, captioned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("insarwatch-demo"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.80, 0.85, 0.90, 0.95, 0.98])
    parser.add_argument("--neighbours", type=int, default=5, help="triage.min_neighbours")
    parser.add_argument("--frames", type=int, default=4, help="synthetic frames when the drop is made here")
    parser.add_argument("--patches", type=int, default=1200, help="training patches when the model is made here")
    parser.add_argument("--preset", default="tiny", help="model preset when the model is made here")
    args = parser.parse_args(argv)
    out = Console(width=120)
    workdir = args.workdir.resolve()
    settings = demo_settings(workdir)
    with iw_console.progress(transient=True) as bars:
        version, _ = ensure_model(workdir, bars, patches=args.patches, preset=args.preset)
    if not (settings.drop_dir / TRUTH_FILE).exists():
        write_drop(settings.drop_dir, args.frames, 7, pairs=2)
    sets = {"frames": frame_tiles(settings.drop_dir, settings), "patches": patch_tiles(workdir / "dataset")}

    def with_triage(enabled: bool, threshold: float = 1.0):
        triage = TriageSettings(enabled=enabled, min_similarity=threshold, min_neighbours=args.neighbours)
        return settings.model_copy(update={"captioning": settings.captioning.model_copy(update={"triage": triage})})

    plain = load_bundle(version, with_triage(False), require_index=True)
    baseline = {name: flagged(plain, with_triage(False), tiles) for name, tiles in sets.items()}
    table = Table(title=f"triage with model {version.name} (min_neighbours {args.neighbours})")
    for column in ("set", "tiles", "min_similarity", "captioned", "tiles/s", "speed-up", "alert+review",
                   "relative recall"):
        table.add_column(column, justify="right")
    for name, (hits, rate, captioned) in baseline.items():
        table.add_row(name, str(len(sets[name])), "off", str(captioned), f"{rate:.2f}", "1.00", str(len(hits)), "1.000")
    results = {}
    for threshold in args.thresholds:
        bundle = load_bundle(version, with_triage(True, threshold), require_index=True)
        for name, tiles in sets.items():
            hits, rate, captioned = flagged(bundle, with_triage(True, threshold), tiles)
            reference = baseline[name][0]
            recall = len(hits & reference) / len(reference) if reference else 1.0
            results[threshold, name] = (rate / baseline[name][1], recall)
            table.add_row(name, str(len(tiles)), f"{threshold:.2f}", str(captioned), f"{rate:.2f}",
                          f"{rate / baseline[name][1]:.2f}", str(len(hits)), f"{recall:.3f}")
    out.print(table)
    safe = [t for t in args.thresholds if all(results[t, name][1] >= 0.99 for name in sets)]
    chosen = max(safe, key=lambda t: results[t, "frames"][0]) if safe else \
        max(args.thresholds, key=lambda t: min(results[t, name][1] for name in sets))
    speed, recall = results[chosen, "frames"]
    out.print(f"chosen min_similarity {chosen:.2f}: {speed:.2f}x on frames at relative recall {recall:.3f}"
              f"{'' if safe else ' (no threshold kept 0.99 recall; closest shown)'}")
    print(f"ratio={speed:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
