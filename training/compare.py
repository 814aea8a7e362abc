"""The captioning paper's comparison, rerun on one dataset split: ``insarwatch compare``.

Owns the table that sets the systems side by side on the same test split: each captioner
(BLIP and GIT, trained here from their tiny presets, or reused when WORKDIR already holds a
version trained on this dataset with that preset), retrieval only (the paper's raw exact-match
accuracy: the nearest training example's caption is the reference, character for
character), and insarwatch's hybrid decision (the caption read by ``findings`` and the
neighbours' vote, ``alerts.decide_tile``), each with ROUGE-1/2/L, BLEU, retrieval exact
match, deformation precision/recall/F1 and tiles per second. With real labelled tiles
(``DIR/1`` deforming, ``DIR/0`` not) it adds deformation precision/recall/F1 on those, per
file (a file larger than a tile deforms when any of its tiles does). It also draws the
validation ROUGE/BLEU of every epoch of both captioners (the paper's Figures 12-13) from
each version's ``train_config.json``. A captioner that cannot be built here (a preset or an
architecture this checkout does not know) gets a row saying why, never numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress
from rich.table import Table

from insarwatch import files
from insarwatch.alerts import decide_tile
from insarwatch.caption_files import read_tiles
from insarwatch.config import ModelInput, Settings
from insarwatch.describe import Bundle, Described, load_bundle
from insarwatch.errors import InputError, InsarwatchError
from insarwatch.findings import parse_caption
from insarwatch.manifest import Sample, dataset_input
from insarwatch.registry import ModelStore, ModelVersion

from .dataset import Dataset, load_dataset, load_images
from .factory import Preset, load_preset
from .metrics import Prediction, deformation_scores, metrics_from_predictions
from .pipeline import TrainingInterrupted, evaluate_on, evaluation_settings, train

# (row name, preset) of each captioner, in the paper's order.
CAPTIONERS = (("BLIP", "tiny"), ("GIT", "git-tiny"))
RETRIEVAL = "retrieval only"
HYBRID_ALERT = "insarwatch hybrid (alert)"
HYBRID_SHOWN = "insarwatch hybrid (alert or review)"
TABLE_FILE = "compare.json"
FIGURE_FILE = "compare-validation.png"
# Columns of the table: metric key → header.
COLUMNS = {
    "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU",
    "retrieval_exact_match": "exact match", "deformation_precision": "def. P",
    "deformation_recall": "def. R", "deformation_f1": "def. F1", "tiles_per_second": "tiles/s",
}
REAL_COLUMNS = {"deformation_precision": "real P", "deformation_recall": "real R", "deformation_f1": "real F1"}


@dataclass(frozen=True)
class Row:
    """One system's line: how it was obtained and its numbers (none when it was not built)."""

    system: str
    status: str  # "trained", "reused", "from BLIP <version>", or "not built: <reason>"
    version: str | None
    metrics: dict[str, Any]
    real_tiles: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "status": self.status, "version": self.version,
                "metrics": self.metrics, "real_tiles": self.real_tiles}


@dataclass(frozen=True)
class RealTiles:
    """Labelled real tiles read from ``DIR/1`` and ``DIR/0``: pixels per tile, the file each
    tile came from, the label per file, and the files that could not be read."""

    directory: Path
    pixels: tuple[Any, ...]
    tile_files: tuple[Path, ...]
    labels: dict[Path, bool]
    refused: tuple[InputError, ...]

    def scores(self, positive_tiles: Sequence[bool]) -> dict[str, float]:
        """Deformation P/R/F1 per file: a file is predicted deforming when any of its tiles is."""
        predicted = dict.fromkeys(self.labels, False)
        for path, positive in zip(self.tile_files, positive_tiles, strict=True):
            predicted[path] = predicted[path] or positive
        return deformation_scores([predicted[path] for path in self.labels], list(self.labels.values()))


@dataclass(frozen=True)
class Comparison:
    dataset: Path
    n_test: int
    decoding: str
    rows: tuple[Row, ...]
    real_tiles: RealTiles | None
    table_file: Path
    figure: Path | None

    def to_dict(self) -> dict[str, Any]:
        """What ``compare.json`` holds."""
        real = None
        if self.real_tiles is not None:
            labels = list(self.real_tiles.labels.values())
            real = {"directory": str(self.real_tiles.directory), "files": len(labels),
                    "deforming": sum(labels), "refused": [str(error) for error in self.real_tiles.refused]}
        return {"dataset": str(self.dataset), "n_test": self.n_test, "decoding": self.decoding,
                "real_tiles": real, "figure": str(self.figure) if self.figure else None,
                "rows": [row.to_dict() for row in self.rows]}

    def table(self) -> Table:
        """The rich table ``insarwatch compare`` prints."""
        real = self.real_tiles
        title = f"{self.dataset}: {self.n_test} test images, decoding {self.decoding}"
        if real is not None:
            title += f"; {len(real.labels)} real tiles from {real.directory}"
        table = Table(title=title)
        table.add_column("system")
        columns = {**COLUMNS, **(REAL_COLUMNS if real is not None else {})}
        for header in columns.values():
            table.add_column(header, justify="right")
        table.add_column("status")
        for row in self.rows:
            values = [_cell(row.metrics.get(key)) for key in COLUMNS]
            if real is not None:
                values += [_cell((row.real_tiles or {}).get(key)) for key in REAL_COLUMNS]
            table.add_row(row.system, *values, row.status)
        return table


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if isinstance(value, float) and value > 1 else f"{value:.3f}"


def _trained_on(store: ModelStore, dataset: Dataset, preset: Preset) -> ModelVersion | None:
    """The newest version in ``store`` trained on ``dataset`` with exactly ``preset``, if any."""
    for version in reversed(store.versions()):
        try:
            config = json.loads(version.train_config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if config.get("dataset") == str(dataset.root) and config.get("preset") == preset.model_dump():
            return version
    return None


def _captioner_row(
    name: str, preset_name: str, data: Path, dataset: Dataset, settings: Settings, progress: Progress
) -> tuple[Row, ModelVersion | None]:
    """Train (or reuse) one captioner and evaluate it exactly as ``insarwatch train`` does."""
    try:
        preset = load_preset(preset_name)
    except InsarwatchError as exc:
        return Row(name, f"not built: {exc}", None, {}), None
    store = ModelStore(settings.models_dir)
    version = _trained_on(store, dataset, preset)
    try:
        if version is None:
            outcome = train(data, preset, settings, progress)
            version, metrics = outcome.version, outcome.metrics
            status = "trained" + (f" (interrupted: best epoch {outcome.fit.best_epoch})" if outcome.fit.interrupted
                                  else "")
        else:
            bundle = load_bundle(version, evaluation_settings(settings), require_index=True)
            metrics, status = evaluate_on(bundle, dataset, progress).metrics, "reused"
    except TrainingInterrupted:
        raise
    except InsarwatchError as exc:
        return Row(name, f"not built: {exc}", None, {}), None
    return Row(name, status, version.name, _with_speed(metrics)), version


def _with_speed(metrics: dict[str, Any]) -> dict[str, Any]:
    return {**metrics, "tiles_per_second": metrics["n_test"] / metrics["seconds"]}


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = work()
    return result, time.monotonic() - started


def _retrieval_only(bundle: Bundle, test: Sequence[Sample]) -> dict[str, Any]:
    """The paper's retrieval system: each test image takes its nearest training example's caption."""
    def search() -> list[Any]:
        return [row[0] for vision in bundle.captioner.encode(load_images(test))
                for row in bundle.index.search(vision.embeddings, 1)]

    nearest, seconds = _timed(search)
    rows = [Prediction(sample.id, sample.caption, found.record.caption, found.record.caption,
                       found.similarity, sample.deformation) for sample, found in zip(test, nearest, strict=True)]
    return {**metrics_from_predictions(rows), "seconds": round(seconds, 3), "n_test": len(rows)}


def _levels(described: Sequence[Described], settings: Settings) -> list[str]:
    return [decide_tile(0, (0, 0, 0, 0), item.caption.text, parse_caption(item.caption.text), item.neighbours,
                        settings.alerts).level for item in described]


def _hybrid(bundle: Bundle, test: Sequence[Sample], settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """insarwatch's decision as the daemon takes it (captions, ``retrieval.k`` neighbours, triage
    as configured, ``alerts`` thresholds): metrics with "alert", then "alert or review", as positive."""
    def decide() -> tuple[list[Described], list[str]]:
        described = bundle.describe(load_images(test), settings.retrieval.k)
        return described, _levels(described, settings)

    (described, levels), seconds = _timed(decide)
    rows = [Prediction(sample.id, sample.caption, item.caption.text,
                       item.neighbours[0].record.caption if item.neighbours else "",
                       item.neighbours[0].similarity if item.neighbours else 0.0, sample.deformation)
            for sample, item in zip(test, described, strict=True)]
    common = {**metrics_from_predictions(rows), "seconds": round(seconds, 3), "n_test": len(rows)}
    truth = [sample.deformation for sample in test]
    return ({**common, **deformation_scores([level == "alert" for level in levels], truth)},
            {**common, **deformation_scores([level != "quiet" for level in levels], truth)})


def read_real_tiles(directory: Path, settings: Settings, model_input: ModelInput) -> RealTiles:
    """PNG tiles under ``DIR/1`` (deformation) and ``DIR/0`` (none), cut as the service cuts frames
    and shown as it shows them to a model trained on ``model_input``."""
    directory = Path(directory)
    paths = {label: sorted((directory / folder).glob("*.png")) for folder, label in (("1", True), ("0", False))}
    if not paths[True] and not paths[False]:
        raise InputError(directory, "no labelled tiles (expected DIR/1/*.png and DIR/0/*.png)")
    read = read_tiles([*paths[True], *paths[False]], settings.imaging, model_input)
    kept = {path for path, _ in read.tiles}
    labels = {path: label for label, found in paths.items() for path in found if path in kept}
    return RealTiles(directory, tuple(piece.pixels for _, piece in read.tiles),
                     tuple(path for path, _ in read.tiles), labels, read.refused)


def _real_scores(bundle: Bundle, real: RealTiles, settings: Settings) -> dict[str, dict[str, float]]:
    """Deformation P/R/F1 on the real tiles for the captioner alone, retrieval only and the hybrid."""
    described = bundle.describe(list(real.pixels), settings.retrieval.k)
    levels = _levels(described, settings)
    return {
        "captioner": real.scores([parse_caption(item.caption.text).deformation for item in described]),
        RETRIEVAL: real.scores([parse_caption(item.neighbours[0].record.caption).deformation if item.neighbours
                                else False for item in described]),
        HYBRID_ALERT: real.scores([level == "alert" for level in levels]),
        HYBRID_SHOWN: real.scores([level != "quiet" for level in levels]),
    }


def validation_figure(versions: dict[str, ModelVersion], path: Path) -> Path | None:
    """Validation ROUGE-1/ROUGE-L and BLEU per epoch of each captioner (the paper's Figures
    12-13), drawn from the versions' training histories; None when there is nothing to draw."""
    histories = {}
    for name, version in versions.items():
        config = json.loads(version.train_config_file.read_text(encoding="utf-8"))
        epochs = [entry for entry in config.get("history", []) if entry.get("val")]
        if epochs:
            histories[name] = epochs
    if not histories:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (rouge, bleu) = pyplot.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, epochs in histories.items():
        x = [entry["epoch"] for entry in epochs]
        (line,) = rouge.plot(x, [entry["val"]["rougeL"] for entry in epochs], marker="o", label=f"{name} ROUGE-L")
        rouge.plot(x, [entry["val"]["rouge1"] for entry in epochs], linestyle="--", color=line.get_color(),
                   label=f"{name} ROUGE-1")
        bleu.plot(x, [entry["val"]["bleu"] for entry in epochs], marker="o", color=line.get_color(), label=name)
    rouge.set(title="Validation ROUGE per epoch", xlabel="epoch", ylabel="F-measure", ylim=(0, 1))
    bleu.set(title="Validation BLEU per epoch", xlabel="epoch", ylabel="BLEU (0-100)")
    for axes in (rouge, bleu):
        axes.grid(alpha=0.3)
        axes.legend()
    with files.replacing(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    pyplot.close(figure)
    return path


def compare(
    data: Path,
    workdir: Path,
    settings: Settings,
    progress: Progress,
    *,
    tiles: Path | None = None,
    presets: Sequence[tuple[str, str]] = CAPTIONERS,
) -> Comparison:
    """Train or reuse BLIP and GIT in ``workdir/models``, score every system on ``data``'s test
    split (and ``tiles``), write ``workdir/compare.json`` and the validation figure.

    ``presets`` pairs each captioner's row name (``BLIP``, ``GIT``) with its preset name or file."""
    dataset = load_dataset(data)
    test = dataset.split("test")
    if not test:
        raise InputError(dataset.manifest, "no images in the 'test' split to compare on")
    # Every system compared is trained on this dataset, so all are shown its input.
    real = read_real_tiles(tiles, settings, dataset_input(dataset.root)) if tiles is not None else None
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # The comparison's versions live in their own store: the service's `current` never moves.
    settings = settings.model_copy(update={"var_dir": workdir})
    rows: list[Row] = []
    versions: dict[str, ModelVersion] = {}
    bundles: dict[str, Bundle] = {}
    for name, preset in presets:
        row, version = _captioner_row(name, preset, data, dataset, settings, progress)
        if version is not None:
            versions[name] = version
            bundles[name] = load_bundle(version, settings, require_index=True)
        rows.append(row)
    blip = bundles.get("BLIP")
    if blip is not None:
        # Timed like evaluation: reading the test images is part of each system's work.
        source = f"BLIP {blip.version.name}"
        alert, shown = _hybrid(blip, test, settings)
        rows += [Row(RETRIEVAL, f"encoder of {source}", blip.version.name,
                     _with_speed(_retrieval_only(blip, test))),
                 Row(HYBRID_ALERT, f"from {source}", blip.version.name, _with_speed(alert)),
                 Row(HYBRID_SHOWN, f"from {source}", blip.version.name, _with_speed(shown))]
    else:
        rows += [Row(name, "not built: needs the BLIP captioner", None, {})
                 for name in (RETRIEVAL, HYBRID_ALERT, HYBRID_SHOWN)]
    if real is not None:
        rows = _with_real(rows, bundles, real, settings)
    comparison = Comparison(dataset.root, len(test), settings.captioning.decoding_label, tuple(rows), real,
                            workdir / TABLE_FILE, validation_figure(versions, workdir / FIGURE_FILE))
    files.write_text(comparison.table_file, json.dumps(comparison.to_dict(), indent=2) + "\n")
    return comparison


def _with_real(rows: list[Row], bundles: dict[str, Bundle], real: RealTiles, settings: Settings) -> list[Row]:
    """``rows`` with their deformation scores on the real tiles filled in."""
    scores = {name: _real_scores(bundle, real, settings) for name, bundle in bundles.items()}
    blip = scores.get("BLIP", {})
    out = []
    for row in rows:
        found = scores[row.system]["captioner"] if row.system in scores else blip.get(row.system)
        out.append(Row(row.system, row.status, row.version, row.metrics, found))
    return out
