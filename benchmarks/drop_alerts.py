"""Synthetic drop: how many quiet interferograms raise an alert, and do the deforming ones?

Writes a synthetic LiCSAR drop (``insarwatch.synthetic.drop.write_drop``: whole frames, half
of them deforming near a volcano, with their truth) for a seed nobody tuned on, registers the
model given (default: the package's shipped model) in a fresh ``var`` directory, runs the
daemon ``--once`` over the drop exactly as ``insarwatch watch --once`` does, and compares each
interferogram's level with the truth (a drop already written under ``--workdir`` for the same
frames, pairs and seed is reused). Printed per truth class (quiet; deforming by intensity):
interferograms, how many were rejected (low coherence: the synthetic drop makes some), how many
alerted, how many were alert-or-review. Issue 11's frame targets: at
most 1 quiet interferogram in 20 alerts (0.05), and every deforming one of at least medium
intensity alerts.

The baseline of the same run is the decision every tile flag used to make on its own: an
interferogram alerts when any one of its tiles is an alert tile (``alerts.min_cluster_tiles =
1`` and an isolated tile always deciding), the "one marginal tile of ~30 decides a frame" rule.
``ratio=`` is the quiet alert rate of that rule over the calibrated decision's (higher is
better; the decision is not worse than the baseline at 1.0). Both decisions are made on the
same captions and neighbours: the daemon runs once and the baseline is recomputed from the
tile evidence it stored.

    python benchmarks/drop_alerts.py                          # the shipped model, 40 frames, seed 2026
    python benchmarks/drop_alerts.py --model /var/lib/insarwatch/models/current --frames 10
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from insarwatch import console as iw_console
from insarwatch.config import Settings
from insarwatch.daemon import Daemon
from insarwatch.registry import SHIPPED, ModelStore
from insarwatch.store import Store, TileResult
from insarwatch.synthetic.drop import TRUTH_FILE, read_truth, write_drop

TARGET_QUIET_ALERT_RATE = 0.05


def register(model: Path, settings: Settings) -> str:
    """Copy the version directory ``model`` into a fresh store and make it current."""
    store = ModelStore(settings.models_dir)
    staged = store.stage()
    shutil.copytree(model, staged, dirs_exist_ok=True)
    return store.register(staged, make_current=True).name


def truth_class(row: dict) -> str:
    return f"deforming, {row['intensity'].lower()}" if row["deformation"] else "quiet"


def any_tile_alerts(tiles: list[TileResult]) -> bool:
    """The old rule: one alert tile alerts its interferogram."""
    return any(tile.decision["level"] == "alert" for tile in tiles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED, help="A model version directory")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=1, help="Interferograms per frame")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workdir", type=Path, default=None, help="Kept for inspection when given")
    args = parser.parse_args(argv)
    if not (args.model / "captioner").is_dir():
        parser.error(f"{args.model}: not a model version directory (no captioner/)")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="drop-alerts-"))
    settings = Settings(var_dir=workdir / "var", drop_dir=workdir / f"drop-{args.frames}x{args.pairs}-{args.seed}")
    truth_file = settings.drop_dir / TRUTH_FILE
    if not truth_file.exists():  # a drop written before is reused: drawing it is most of a CPU run
        with iw_console.progress() as progress:
            task = progress.add_task("synthetic drop", total=args.frames * args.pairs)
            write_drop(settings.drop_dir, args.frames, args.seed, pairs=args.pairs,
                       advance=lambda: progress.advance(task))
    shutil.rmtree(settings.var_dir, ignore_errors=True)
    version = register(args.model, settings)
    Daemon(settings, once=True).run()

    truth = read_truth(settings.drop_dir)
    counts: Counter[tuple[str, str]] = Counter()
    with Store.open_readonly(settings.state_db) as store:
        for row in truth:
            key = row["key"]
            record = store.get(key)
            cls = truth_class(row)
            counts[cls, "n"] += 1
            counts[cls, "rejected"] += record is not None and record.state == "rejected"
            level = record.level if record is not None else None
            counts[cls, "alert"] += level == "alert"
            counts[cls, "alert_or_review"] += level in ("alert", "review")
            counts[cls, "baseline_alert"] += any_tile_alerts(store.results_for(key, version))

    table = Table(title=f"synthetic drop: {args.frames} frames x {args.pairs}, seed {args.seed}, model {args.model} "
                        f"(registered as {version})")
    for name in ("truth", "interferograms", "rejected", "alert", "alert or review", "any-tile rule: alert"):
        table.add_column(name, justify="left" if name == "truth" else "right")
    classes = sorted({cls for cls, _ in counts}, key=lambda cls: (cls != "quiet", cls))
    for cls in classes:
        n = counts[cls, "n"]
        table.add_row(cls, str(n), str(counts[cls, "rejected"]), *(f"{counts[cls, what]} ({counts[cls, what] / n:.2f})"
                                     for what in ("alert", "alert_or_review", "baseline_alert")))
    Console(width=160).print(table)
    quiet = max(counts["quiet", "n"], 1)
    decision, baseline = counts["quiet", "alert"] / quiet, counts["quiet", "baseline_alert"] / quiet
    print(f"quiet alert rate {decision:.3f} (target <= {TARGET_QUIET_ALERT_RATE}), any-tile rule {baseline:.3f}")
    print(f"ratio={(baseline + 1 / quiet) / (decision + 1 / quiet):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
