"""The model the package ships: made by one command, from synthetic data only.

``python -m training.ship`` writes LiCSAR-looking synthetic patches (``insarwatch.synthetic``),
curates them with ``prepare`` with ``imaging.model_input = "phase"`` (it writes what the model
sees, the canonical rendering), trains the ``offline`` preset, calibrates the frame decision
on quiet synthetic patches of another seed (``CALIBRATION_PATCHES``: the validation split's
few dozen quiet tiles can only vouch for frames of a handful of tiles, so in a 30-tile frame
no isolated tile could ever alert; ``--recalibrate VERSION_DIR`` redoes only the steps after
training: the index's detector for a version built without one, and this calibration), and
copies the resulting
version (``captioner/`` safetensors, ``index.faiss``, ``index.jsonl``, the index's whitening
transform and detector, ``calibration.json``, ``metrics.json``, ``train_config.json``, ``checksums.json``)
into ``insarwatch/models/offline``, which ``ModelStore.in_use`` falls back
to while no model is registered. Real interferograms are never used to train it; measure it on
them with ``insarwatch evaluate --tiles`` before committing the weights (issue 11's targets).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from insarwatch import console
from insarwatch.config import Settings
from insarwatch.demo import demo_settings
from insarwatch.errors import InsarwatchError
from insarwatch.registry import SHIPPED, ModelVersion

from .factory import load_preset
from .pipeline import calibrate, evaluation_settings, train, write_calibration

PRESET = "offline"
PATCHES = 3000
SEED = 17
CALIBRATION_PATCHES = 1200
MAX_BYTES = 20 * 2**20


def quiet_patches(patches: int, seed: int, settings: Settings) -> list[Image.Image]:
    """The quiet, defect-free patches among ``patches`` synthetic ones of ``seed``, read as the
    service reads them (``reading.read_model_image``, phase input)."""
    from insarwatch.reading import read_model_image
    from insarwatch.synthetic.patches import make_patch, write_patch

    images = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(patches):
            patch = make_patch(seed, index)
            if patch.spec.deformation or patch.spec.defect != "none":
                continue
            image = read_model_image(write_patch(Path(scratch), patch), settings.imaging, "phase")
            if image.unknown is None:
                images.append(Image.fromarray(image.pixels))
    return images


def recalibrate(version: ModelVersion, settings: Settings, patches: int = CALIBRATION_PATCHES,
                seed: int = SEED + 1) -> None:
    """Give ``version``'s index a detector when it was built before detectors existed (fitted on
    the stored index, as building it would have; its checksums recorded again) and rewrite its
    ``calibration.json`` from quiet synthetic patches it never trained on."""
    from insarwatch.describe import load_bundle
    from insarwatch.retrieval import LinearDetector, RetrievalIndex

    settings = evaluation_settings(settings)
    index = RetrievalIndex.load(version.path, settings=settings.retrieval)
    if index.detector is None:  # a version trained now has one, fitted on these very vectors
        detector = LinearDetector.fit(index.vectors(), [record.deformation for record in index.records])
        if detector is not None:
            detector.save(version.index_detector_file)
            if version.checksums_file.is_file():
                version.record_checksums()
    quiet = quiet_patches(patches, seed, settings)
    with console.progress() as progress:
        calibration = calibrate(load_bundle(version, settings), quiet,
                                f"{len(quiet)} quiet synthetic patches of seed {seed} (python -m training.ship)",
                                settings, progress)
    if calibration is not None:
        write_calibration(version, calibration)


def ship(workdir: Path, patches: int = PATCHES, seed: int = SEED, target: Path = SHIPPED) -> Path:
    """Make the shipped model under ``workdir`` (kept for inspection) and copy it to ``target``."""
    from insarwatch.hephaestus import prepare
    from insarwatch.synthetic.patches import write_dataset

    workdir = Path(workdir).resolve()
    # The demo trains this recipe too: defaults inside the work directory, wrapped phase as the
    # model input whatever the rendering (the version's train_config.json says so).
    settings = demo_settings(workdir)
    hephaestus, dataset = workdir / "hephaestus", workdir / "dataset"
    with console.progress() as progress:
        task = progress.add_task("synthetic patches", total=patches)
        write_dataset(hephaestus, patches, seed, advance=lambda: progress.advance(task))
        prepare(hephaestus, dataset, settings.imaging)
        outcome = train(dataset, load_preset(PRESET), settings, progress)
    version = outcome.version
    recalibrate(version, settings)
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
    parser.add_argument("--recalibrate", type=Path, metavar="VERSION_DIR",
                        help="Only redo what follows training for this version, in place: its index "
                             "detector when it has none, and the frame calibration.")
    args = parser.parse_args()
    if args.recalibrate is not None:
        version = ModelVersion.at(args.recalibrate)
        recalibrate(version, demo_settings(args.workdir.resolve()))
        print(version.calibration_file)
        return
    print(ship(args.workdir, args.patches, args.seed))


if __name__ == "__main__":
    main()
