"""Backfill scaling: ``insarwatch backfill`` on Ray with 1 and 2 model workers against the daemon's own loop.

A synthetic LiCSAR archive (``synthetic.drop.write_drop``: whole frames, four 224 px tiles
each at 448 x 448) is processed from an empty state database with the same tiny model
version: by ``Daemon(once=True)`` (what ``insarwatch watch --once`` runs: one process,
torch's own threads), then by ``run_backfill`` on a local Ray started once, with each
worker count asked for. Runs are timed end to end and rates are taken after start-up (the
daemon's model load; the backfill's workers up with the model loaded), since that is what
an archive of 10^5 interferograms pays per interferogram; the Ray start is printed on its
own. Every run's per-tile captions and levels are compared with the daemon's. The headline
ratio is the interferograms/s of the last worker count over the daemon's.

The model is daemon_load.py's tiny BLIP (random weights, every caption exactly
``--tokens`` long) with an index of quiet examples.

    python benchmarks/backfill_scale.py                    # 40 frames x 3 pairs = 120 interferograms
    python benchmarks/backfill_scale.py --frames 4 --pairs 2 --workers 1,2
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_load import clean_patches, register_tiny_model  # noqa: E402  (the same tiny model)

from insarwatch.backfill import Cluster, run_backfill  # noqa: E402
from insarwatch.config import CaptioningSettings, Settings, load_settings  # noqa: E402
from insarwatch.daemon import Daemon  # noqa: E402
from insarwatch.describe import load_bundle  # noqa: E402
from insarwatch.registry import ModelStore  # noqa: E402
from insarwatch.store import STATES, Store  # noqa: E402
from insarwatch.synthetic.drop import write_drop  # noqa: E402


@dataclass(frozen=True)
class Run:
    name: str
    interferograms: int
    tiles: int
    seconds: float
    startup: float
    identical: bool | None

    @property
    def rate(self) -> float:
        """Interferograms per second once started: what more interferograms cost."""
        return self.interferograms / (self.seconds - self.startup)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def settings_for(work: Path, name: str, models: Path, archive: Path, args: argparse.Namespace) -> Settings:
    var_dir = work / name
    shutil.copytree(models, var_dir / "models", symlinks=True)
    config = work / f"{name}.toml"
    config.write_text(
        f'var_dir = "{var_dir}"\ndrop_dir = "{archive}"\n'
        f"[watch]\nsettle_seconds = 0\n"
        f"[batch]\ntiles = {args.batch_size}\nmax_wait_seconds = 0.2\n"
        f"[captioning]\nnum_beams = {args.beams}\nmin_new_tokens = {args.tokens}\nmax_new_tokens = {args.tokens}\n"
        "[digest]\nenabled = false\n", encoding="utf-8")
    return load_settings(config)


def results(settings: Settings) -> tuple[dict[str, tuple], int]:
    """Per interferogram its state, level and tiles' captions and levels; and the tile count."""
    rows, tiles = {}, 0
    with Store(settings.state_db, readonly=True) as store:
        for state in STATES:
            for record in store.in_state(state):
                found = [(t.tile_index, t.caption, t.decision["level"])
                         for t in store.results_for(record.key, record.model_version or "")]
                tiles += len(found)
                rows[record.key] = (record.state, record.level, record.reason, found)
    return rows, tiles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40, help="synthetic frames (default 40)")
    parser.add_argument("--pairs", type=int, default=3, help="interferograms per frame (default 3)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated (default 1,2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=12, help="generated tokens per tile, every run")
    parser.add_argument("--beams", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the run here instead of a temp dir")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.workers.split(",")]
    console = Console(width=150)
    logging.getLogger().setLevel(logging.ERROR)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="iw-backfill-"))
    work.mkdir(parents=True, exist_ok=True)
    archive = work / "archive"
    write_drop(archive, frames=args.frames, seed=5, size=(448, 448), pairs=args.pairs)
    generation = CaptioningSettings(num_beams=args.beams, min_new_tokens=args.tokens, max_new_tokens=args.tokens)
    # The index's quiet examples: 32, or one per interferogram of a smaller archive (the
    # search over either is a negligible part of a tile's cost).
    examples = clean_patches(work / "patches", min(32, args.frames * args.pairs), seed=11)
    register_tiny_model(work / "model", examples, generation)
    models = work / "model" / "models"

    runs = []
    daemon_settings = settings_for(work, "daemon", models, archive, args)
    # The daemon's start-up is its one model load; timed here on its own, in this process.
    start = time.perf_counter()
    load_bundle(ModelStore(daemon_settings.models_dir).resolve("current"), daemon_settings, require_index=True)
    loading = time.perf_counter() - start
    start = time.perf_counter()
    Daemon(daemon_settings, once=True).run()
    seconds = time.perf_counter() - start
    expected, tiles = results(daemon_settings)
    runs.append(Run("daemon (watch --once)", len(expected), tiles, seconds, loading, None))

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=max(counts) + 1, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    try:
        for workers in counts:
            settings = settings_for(work, f"ray{workers}", models, archive, args)
            start = time.perf_counter()
            summary = run_backfill(settings, archive, cluster=Cluster(workers=workers, gpus_per_worker=0),
                                   clock=utcnow, terminal=False)
            seconds = time.perf_counter() - start
            found, tiles = results(settings)
            runs.append(Run(f"backfill, {workers} Ray worker{'s' * (workers > 1)}", len(found), tiles, seconds,
                            summary.startup_seconds, found == expected))
    finally:
        ray.shutdown()

    table = Table(title=f"backfill of {len(expected)} interferograms ({args.frames} frames x {args.pairs}), "
                        f"batch {args.batch_size}, {args.beams} beams x {args.tokens} tokens")
    for column in ("run", "interferograms", "tiles", "seconds", "of which start-up", "interferograms/s",
                   "tiles/s", "same results as the daemon"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for run in runs:
        table.add_row(run.name, str(run.interferograms), str(run.tiles), f"{run.seconds:.1f}", f"{run.startup:.1f}",
                      f"{run.rate:.3f}", f"{run.tiles / (run.seconds - run.startup):.2f}",
                      "-" if run.identical is None else str(run.identical))
    console.print(table)
    console.print(f"Ray start (once per backfill, not in the seconds above): {ray_start:.1f} s; "
                  "rates are after start-up (daemon: one model load; backfill: workers up and loaded)")
    print(f"ratio={runs[-1].rate / runs[0].rate:.3f}")
    return 0 if all(run.identical is not False for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
