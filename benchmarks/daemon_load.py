"""Daemon overhead: a flood of single-tile interferograms through the real ``insarwatch watch``.

Drops N single-tile (224 px) interferograms at once into a watched directory, runs the real
daemon as a subprocess (as systemd would) with a tiny model, and waits until every one is in
a terminal state. It reports end-to-end tiles/s, the daemon's peak resident memory (VmHWM),
that each interferogram was processed exactly once and that no frame waited on a lost event,
and — the headline — the ratio of end-to-end tiles/s to the captioner's own tiles/s on the
same tiles, measured in the same run with the same batch size and generation settings.

The tiny model has random weights and every generation is exactly ``--tokens`` long on both
sides (min = max new tokens), so the cost per tile equals a trained tiny model's worst case.
The index holds only "no deformation" examples: most tiles at a real observatory are quiet,
so the run measures the processing path, not the report renderer.

    python benchmarks/daemon_load.py            # 10,000 interferograms
    python benchmarks/daemon_load.py --quick    # 1,000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from insarwatch.captioner import Captioner
from insarwatch.config import CaptioningSettings, RetrievalSettings
from insarwatch.registry import ModelStore, ModelVersion
from insarwatch.retrieval import IndexRecord, RetrievalIndex
from insarwatch.store import STATES, Store
from insarwatch.synthetic.patches import write_dataset

QUIET = ("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere "
         "can be detected around the area. No deformation activity can be detected.")
FLAGS = ("corrupted", "processing_error", "glacier_fringes", "orbital_fringes", "low_coherence", "no_info",
         "image_artifacts")


def clean_patches(directory: Path, wanted: int, seed: int) -> list[Path]:
    """Synthetic P-mode patches with no quality flag: the ones the daemon will caption."""
    write_dataset(directory, wanted * 2, seed)
    kept = []
    for annotation in sorted((directory / "annotations").glob("*.json")):
        data = json.loads(annotation.read_text())
        image = directory / "images" / f"{annotation.stem}.png"
        if any(data[flag] for flag in FLAGS) or Image.open(image).mode != "P":
            continue
        kept.append(image)
    return kept[:wanted]


def register_tiny_model(var_dir: Path, patches: list[Path], settings: CaptioningSettings) -> Path:
    import training

    preset = training.load_preset("tiny")
    model, processor = training.factory.create_from_scratch(preset.model, [QUIET] * 8)
    store = ModelStore(var_dir / "models")
    staged = store.stage()
    checkpoint = staged / ModelVersion.CAPTIONER_DIR
    model.save_pretrained(checkpoint, safe_serialization=True)
    processor.save_pretrained(checkpoint)
    captioner = Captioner.load(checkpoint, settings)
    images = [np.asarray(Image.open(path).convert("RGB")) for path in patches]
    records = [IndexRecord(QUIET, False, (), (), path.stem) for path in patches]
    retrieval = RetrievalSettings()
    RetrievalIndex.build(captioner.embed(images, retrieval.feature), records, retrieval).save(staged)
    return store.register(staged, make_current=True).captioner_dir


def stage_flood(staging: Path, patches: list[Path], count: int) -> list[str]:
    """Lay out ``count`` single-tile interferograms under ``staging``, as LiCSAR would publish them."""
    keys = []
    frames = max(1, count // 100)
    for number in range(count):
        frame = f"{number % frames:03d}A_{number % frames:05d}_000000"
        day = np.datetime64("2019-01-01") + number // frames * 6
        pair = f"{str(day).replace('-', '')}_{str(day + 6).replace('-', '')}"
        folder = staging / frame / "interferograms" / pair
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(patches[number % len(patches)], folder / f"{pair}.geo.diff.png")
        keys.append(f"{frame}/{pair}")
    return keys


def release_flood(staging: Path, drop: Path) -> None:
    """Move every staged frame into the watched drop at once (a rename: each arrives whole)."""
    for frame_dir in sorted(staging.iterdir()):
        os.rename(frame_dir, drop / frame_dir.name)


class CaptionerAlone:
    """``Captioner.caption`` alone on the same tiles, in the daemon's batch size and settings."""

    def __init__(self, model_dir: Path, patches: list[Path], settings: CaptioningSettings, batch_size: int) -> None:
        self.captioner = Captioner.load(model_dir, settings)
        self.images = [np.asarray(Image.open(path).convert("RGB")) for path in patches]
        self.batch_size = batch_size
        self.tiles, self.seconds = 0, 0.0
        self.captioner.caption(self.images[:batch_size])  # warm-up

    def run(self, tiles: int) -> None:
        start = time.perf_counter()
        for first in range(0, tiles, self.batch_size):
            last = min(first + self.batch_size, tiles)
            self.captioner.caption([self.images[i % len(self.images)] for i in range(first, last)])
        self.seconds += time.perf_counter() - start
        self.tiles += tiles

    @property
    def rate(self) -> float:
        return self.tiles / self.seconds


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000, help="interferograms to drop (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 interferograms")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per tile, both sides")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--baseline-tiles", type=int,
                        help="tiles for the captioner-only rate, half before and half after the flood "
                             "(default: as many as the flood)")
    parser.add_argument("--workdir", type=Path, help="keep the run here instead of a temp dir")
    args = parser.parse_args(argv)
    count = 1_000 if args.quick else args.frames
    console = Console(width=120)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="iw-load-"))
    work.mkdir(parents=True, exist_ok=True)
    var_dir, drop = work / "var", work / "drop"
    generation = {"num_beams": args.beams, "min_new_tokens": args.tokens, "max_new_tokens": args.tokens}
    settings = CaptioningSettings(**generation)

    console.print(f"preparing {count} interferograms and a tiny model in {work} ...")
    # 64 distinct tiles (and quiet index examples) for a flood; a smaller one needs no more
    # than one per interferogram (each patch takes ~0.1 s to draw).
    patches = clean_patches(work / "patches", min(64, count), seed=11)
    model_dir = register_tiny_model(var_dir, patches, settings)
    # This host slows down under minutes of sustained load (the captioner alone went from 52 to
    # 33-41 tiles/s over 4 minutes), so the baseline does the same amount of work as the
    # flood, half before it and half after, rather than a short burst on a cool machine.
    alone = CaptionerAlone(model_dir, patches, settings, args.batch_size)
    baseline_tiles = args.baseline_tiles or count
    alone.run(baseline_tiles // 2)

    config = work / "insarwatch.toml"
    config.write_text(
        f'var_dir = "{var_dir}"\ndrop_dir = "{drop}"\n'
        f"[watch]\nsettle_seconds = 1\nrescan_interval_seconds = 3600\n"
        f"[batch]\ntiles = {args.batch_size}\nmax_wait_seconds = 2\n"
        f"[captioning]\n" + "".join(f"{key} = {value}\n" for key, value in generation.items()) +
        "[digest]\nenabled = false\n", encoding="utf-8")
    keys = stage_flood(work / "staging", patches, count)
    drop.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "INSARWATCH_CONFIG": str(config)}
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("insarwatch")), "watch"], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        while not (var_dir / "state.db").exists():
            time.sleep(0.2)
        time.sleep(2)  # let the model load and the observer start before the flood
        start = time.perf_counter()
        release_flood(work / "staging", drop)
        peak = 0.0
        with Store(var_dir / "state.db", readonly=True) as store:
            while True:
                peak = max(peak, peak_rss_mb(daemon.pid))
                counts = store.counts()
                if counts["done"] + counts["rejected"] + counts["quarantined"] >= count:
                    break
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon exited with {daemon.returncode}")
                time.sleep(0.5)
            elapsed = time.perf_counter() - start
            peak = max(peak, peak_rss_mb(daemon.pid))
            states = {state: len(store.in_state(state)) for state in STATES}
            seen = {record.key for state in STATES for record in store.in_state(state)}
            attempts = max(record.attempts for record in store.in_state("done"))
    finally:
        daemon.terminate()
        daemon.wait(60)

    alone.run(baseline_tiles - baseline_tiles // 2)
    baseline = alone.rate
    end_to_end = count / elapsed
    ratio = end_to_end / baseline
    table = Table(title=f"daemon under a flood of {count} single-tile interferograms")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("captioner alone (tiles/s)", f"{baseline:.1f}")
    table.add_row("end to end (tiles/s)", f"{end_to_end:.1f}")
    table.add_row("drain time (s)", f"{elapsed:.1f}")
    table.add_row("peak resident memory (MB)", f"{peak:.0f}")
    table.add_row("done / rejected / other", f"{states['done']} / {states['rejected']} / "
                  f"{count - states['done'] - states['rejected']}")
    table.add_row("every key tracked exactly once", str(seen == set(keys) and len(seen) == count))
    table.add_row("most attempts on one frame", str(attempts))
    table.add_row("end-to-end / captioner", f"{ratio:.3f}")
    console.print(table)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
