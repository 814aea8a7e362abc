"""The model the package ships: made by one command, from synthetic data only.

``python -m training.ship`` writes LiCSAR-looking synthetic patches (``insarwatch.synthetic``),
curates them with ``prepare`` with ``imaging.model_input = "phase"`` (it writes what the model
sees, the canonical rendering), trains the ``offline`` preset, and copies the resulting
version (``captioner/`` safetensors, ``index.faiss``, ``index.jsonl``, the index's whitening
transform, ``calibration.json``, ``metrics.json``, ``train_config.json``, ``checksums.json``)
into ``insarwatch/models/offline``, which ``ModelStore.in_use`` falls back
to while no model is registered. Real interferograms are never used to train it; measure it on
them with ``insarwatch evaluate --tiles`` before committing the weights (issue 11's targets).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from insarwatch import console
from insarwatch.config import Settings
from insarwatch.errors import InsarwatchError
from insarwatch.registry import SHIPPED

from .factory import load_preset
from .pipeline import train

PRESET = "offline"
PATCHES = 1200
SEED = 17
MAX_BYTES = 20 * 2**20


def ship(workdir: Path, patches: int = PATCHES, seed: int = SEED, target: Path = SHIPPED) -> Path:
    """Make the shipped model under ``workdir`` (kept for inspection) and copy it to ``target``."""
    from insarwatch.hephaestus import prepare
    from insarwatch.synthetic.patches import write_dataset

    workdir = Path(workdir).resolve()
    base = Settings(var_dir=workdir / "var", drop_dir=workdir / "drop")
    # The shipped model sees wrapped phase, whatever the rendering (its train_config.json says so).
    settings = base.model_copy(update={"imaging": base.imaging.model_copy(update={"model_input": "phase"})})
    hephaestus, dataset = workdir / "hephaestus", workdir / "dataset"
    with console.progress() as progress:
        task = progress.add_task("synthetic patches", total=patches)
        write_dataset(hephaestus, patches, seed, advance=lambda: progress.advance(task))
        prepare(hephaestus, dataset, settings.imaging)
        outcome = train(dataset, load_preset(PRESET), settings, progress)
    version = outcome.version
    # Everything the version holds (captioner, index and its whitening transform, calibration, metrics,
    # train_config, checksums) but predictions.jsonl, which is evidence, not model.
    shipped = tuple(path for path in sorted(version.path.iterdir()) if path != version.predictions_file)
    size = sum(path.stat().st_size for source in shipped for path in _files(source))
    if size > MAX_BYTES:
        raise InsarwatchError(f"{version.path}: {size / 2**20:.1f} MiB, more than the {MAX_BYTES / 2**20:.0f} MiB "
                              "a package may carry")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for source in shipped:
        if source.is_dir():
            shutil.copytree(source, target / source.name)
        else:
            shutil.copy2(source, target / source.name)
    return target


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("ship-work"), help="Where data and the run go.")
    parser.add_argument("--patches", type=int, default=PATCHES, help="Synthetic patches to make.")
    parser.add_argument("--seed", type=int, default=SEED, help="Seed of the synthetic patches.")
    args = parser.parse_args()
    print(ship(args.workdir, args.patches, args.seed))


if __name__ == "__main__":
    main()
