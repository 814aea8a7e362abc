"""Model refresh end to end, for any architecture: dataset → train → index → evaluate → register.

``train`` is what ``insarwatch train`` runs. It stages a new version in the model store,
trains into its ``captioner/`` directory (best validation epoch), builds the FAISS index
from the training split with the trained vision encoder, captions the test split exactly
as the service will (``Captioner`` with the configured decoding, one vision pass per image
feeding caption and retrieval), writes ``predictions.jsonl``, ``metrics.json`` and
``train_config.json``, calibrates the frame decision on the quiet tiles of the validation
split (``calibration.json``, ``alerts.FrameCalibration``), and registers the version. ``current`` moves only when evaluation
succeeded, training ran to the end, and (with ``only_if_better``) test ROUGE-L is no worse
than the current model's. ``evaluate`` recomputes the same metrics for any registered model.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image
from rich.progress import Progress
from transformers.utils import logging as hf_logging

from insarwatch import files
from insarwatch.alerts import FrameCalibration, decide_tile
from insarwatch.captioner import Captioner, pick_device
from insarwatch.config import CaptioningSettings, Settings
from insarwatch.describe import Bundle, load_bundle
from insarwatch.errors import InputError, InsarwatchError
from insarwatch.findings import parse_caption
from insarwatch.manifest import Sample, dataset_input
from insarwatch.registry import ModelStore, ModelVersion
from insarwatch.retrieval import IndexRecord, RetrievalIndex

from .dataset import Dataset, load_dataset, load_images
from .factory import Preset, create_from_scratch, load_pretrained
from .loop import FitResult, fit
from .metrics import Prediction, metrics_from_predictions, write_predictions

log = logging.getLogger(__name__)

class TrainingInterrupted(InsarwatchError):
    """Ctrl-C stopped the run; ``checkpoint`` (if any) holds the best epoch so far."""

    exit_code = 130

    def __init__(self, checkpoint: Path | None) -> None:
        self.checkpoint = checkpoint
        where = f"best checkpoint so far left in {checkpoint}" if checkpoint else "no epoch had finished; nothing kept"
        super().__init__(f"interrupted: {where}")


class EvaluationFailed(InsarwatchError):
    """The model trained but could not be indexed or evaluated: registered, never made current."""

    def __init__(self, cause: InsarwatchError, version: ModelVersion) -> None:
        self.exit_code = cause.exit_code
        self.version = version
        super().__init__(f"{cause} (evaluation failed; kept as version {version.name}, current unchanged)")


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]  # numbers, and ``decoding``: the decoding preset's label
    predictions: tuple[Prediction, ...]


@dataclass(frozen=True)
class TrainOutcome:
    version: ModelVersion
    metrics: dict[str, float | int]
    fit: FitResult
    made_current: bool
    reason: str


def index_records(samples: Sequence[Sample]) -> list[IndexRecord]:
    return [
        IndexRecord(sample.caption, sample.deformation, sample.activity_type, sample.intensity, sample.id)
        for sample in samples
    ]


def build_index(
    captioner: Captioner, samples: Sequence[Sample], settings: Settings, progress: Progress
) -> RetrievalIndex:
    """The retrieval index of ``samples`` as ``captioner``'s vision encoder sees them."""
    task = progress.add_task("indexing", total=len(samples))
    embeddings = []
    size = settings.captioning.tiles_per_call
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        embeddings.append(captioner.embed(load_images(chunk), settings.retrieval.feature))
        progress.advance(task, len(chunk))
    progress.remove_task(task)
    return RetrievalIndex.build(np.concatenate(embeddings), index_records(samples), settings.retrieval)


def predict(bundle: Bundle, samples: Sequence[Sample], progress: Progress) -> list[Prediction]:
    """Caption, embed and retrieve for each sample, through the service's own path."""
    task = progress.add_task("evaluating", total=len(samples))
    described = []
    for batch in bundle.describe_batches(load_images(samples), k=1):
        described.extend(batch)
        progress.advance(task, len(batch))
    progress.remove_task(task)
    return [
        Prediction(
            id=sample.id,
            reference=sample.caption,
            generated=item.caption.text,
            retrieved=item.neighbours[0].record.caption if item.neighbours else "",
            similarity=item.neighbours[0].similarity if item.neighbours else 0.0,
            deformation_true=sample.deformation,
        )
        for sample, item in zip(samples, described, strict=True)
    ]


def calibrate(bundle: Bundle, quiet: Sequence[Image.Image], source: str, settings: Settings,
              progress: Progress) -> FrameCalibration | None:
    """The scores the service gives ``quiet`` tiles the model never trained on (None without any):
    what an isolated tile of a quiet frame scores, for ``alerts.decide_interferogram``."""
    if not quiet:
        log.warning("no quiet tiles to calibrate on: the frame decision stays uncalibrated")
        return None
    task = progress.add_task("calibrating", total=len(quiet))
    scores = []
    for batch in bundle.describe_batches(list(quiet), settings.retrieval.k):
        scores += [decide_tile(0, (0, 0, 1, 1), item.caption.text, parse_caption(item.caption.text), item.neighbours,
                               settings.alerts, detection=item.detection).score for item in batch]
        progress.advance(task, len(batch))
    progress.remove_task(task)
    return FrameCalibration(tuple(scores), source)


def write_calibration(version: ModelVersion, calibration: FrameCalibration) -> None:
    """``version``'s ``calibration.json``, written whole or not at all."""
    _write_json(version.calibration_file, calibration.to_dict())


def evaluation_settings(settings: Settings) -> Settings:
    """``settings`` with triage off: evaluation scores what the model writes for every image."""
    triage = settings.captioning.triage.model_copy(update={"enabled": False})
    captioning = settings.captioning.model_copy(update={"triage": triage})
    return settings.model_copy(update={"captioning": captioning})


def _test_split(dataset: Dataset) -> tuple[Sample, ...]:
    test = dataset.split("test")
    if not test:
        raise InputError(dataset.manifest, "no images in the 'test' split to evaluate on")
    return test


def evaluate_on(bundle: Bundle, dataset: Dataset, progress: Progress) -> Evaluation:
    started = time.monotonic()
    rows = predict(bundle, _test_split(dataset), progress)
    metrics: dict[str, Any] = dict(metrics_from_predictions(rows))
    metrics["seconds"] = round(time.monotonic() - started, 3)
    metrics["decoding"] = bundle.captioner.settings.decoding_label
    return Evaluation(metrics, tuple(rows))


def evaluate(model: str, data: Path, settings: Settings, progress: Progress) -> tuple[ModelVersion, Evaluation]:
    """Recompute the test metrics of a registered model (a version name or a directory)."""
    dataset = load_dataset(data)
    _test_split(dataset)
    version = ModelStore(settings.models_dir).resolve(model)
    bundle = load_bundle(version, evaluation_settings(settings), require_index=True)
    shown = dataset_input(dataset.root)
    if shown != bundle.model_input:  # its images would be shown as the model never saw anything
        raise InputError(dataset.manifest, f"holds {shown!r} images; model {version.name} was trained on "
                                           f"{bundle.model_input!r} input (prepare it with imaging.model_input = "
                                           f"{bundle.model_input!r})")
    return version, evaluate_on(bundle, dataset, progress)


def _write_json(path: Path, data: Any) -> None:
    files.write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _train_config(
    preset: Preset, dataset: Dataset, base: Path | None, result: FitResult, settings: CaptioningSettings
) -> dict[str, Any]:
    return {
        "architecture": preset.model.architecture,
        "preset": preset.model_dump(),
        "base": str(base) if base else None,
        "dataset": str(dataset.root),
        "model_input": dataset_input(dataset.root),  # what the service must show it: registry.ModelVersion.model_input
        "samples": {split: len(dataset.split(split)) for split in ("train", "val", "test")},
        "best_epoch": result.best_epoch,
        "interrupted": result.interrupted,
        "history": [asdict(stats) for stats in result.history],
        "test_decoding": {"preset": settings.decoding_label,
                          **settings.model_dump(include={"num_beams", "max_new_tokens", "do_sample",
                                                         "temperature", "top_k", "top_p"})},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }


def _promotion(store: ModelStore, metrics: dict[str, float | int], only_if_better: bool) -> tuple[bool, str]:
    """Whether the new version should become ``current``, and why (or why not)."""
    current = store.current()
    if not only_if_better or current is None:
        return True, "evaluation succeeded"
    previous = current.metrics()
    if not previous or "rougeL" not in previous:
        return True, f"current version {current.name} has no test ROUGE-L to beat"
    if metrics["rougeL"] >= previous["rougeL"]:
        return True, f"test ROUGE-L {metrics['rougeL']:.4f} >= {previous['rougeL']:.4f} of {current.name}"
    return False, f"test ROUGE-L {metrics['rougeL']:.4f} < {previous['rougeL']:.4f} of current {current.name}"


def train(
    data: Path,
    preset: Preset,
    settings: Settings,
    progress: Progress,
    *,
    base: Path | None = None,
    only_if_better: bool = False,
) -> TrainOutcome:
    """Train, index, evaluate and register a new model version (see the module docstring)."""
    dataset = load_dataset(data)
    train_split, val_split = dataset.split("train"), dataset.split("val")
    if not train_split:
        raise InputError(dataset.manifest, "no images in the 'train' split to learn from")
    _test_split(dataset)
    recipe = preset.training
    hf_logging.disable_progress_bar()
    torch.manual_seed(recipe.seed)
    if base is None:
        model, processor = create_from_scratch(preset.model, [sample.caption for sample in train_split])
    else:
        model, processor = load_pretrained(base, settings.captioning)
        if model.config.model_type != preset.model.architecture:
            raise InputError(base, f"is a {model.config.model_type!r} model but preset {preset.name!r} "
                                   f"is for {preset.model.architecture!r}")
    log.info(
        "training %s (%.1fM parameters) on %d images, validating on %d",
        f"from {base}" if base else f"preset {preset.name} from scratch",
        sum(p.numel() for p in model.parameters()) / 1e6, len(train_split), len(val_split),
    )
    device = pick_device(settings.captioning.device)
    if device.type == "cpu" and settings.captioning.cpu_threads is not None:
        torch.set_num_threads(settings.captioning.cpu_threads)
    store = ModelStore(settings.models_dir)
    staged = store.stage()
    checkpoint = staged / ModelVersion.CAPTIONER_DIR
    try:
        result = fit(
            model, processor, train_split, val_split, recipe,
            max_caption_tokens=preset.model.max_caption_tokens,
            device=device, checkpoint_dir=checkpoint,
            captioning=evaluation_settings(settings).captioning, progress=progress,
        )
    except BaseException:
        store.discard(staged)
        raise
    if result.best_epoch is None:
        store.discard(staged)
        raise TrainingInterrupted(None)
    del model  # what gets indexed and evaluated is the best checkpoint on disk; free the last epoch's copy
    try:
        return _finish(store, staged, dataset, preset, base, result, settings, progress, only_if_better)
    except KeyboardInterrupt:
        raise TrainingInterrupted(checkpoint) from None


def _finish(
    store: ModelStore,
    staged: Path,
    dataset: Dataset,
    preset: Preset,
    base: Path | None,
    result: FitResult,
    settings: Settings,
    progress: Progress,
    only_if_better: bool,
) -> TrainOutcome:
    layout = ModelVersion.at(staged)
    _write_json(layout.train_config_file, _train_config(preset, dataset, base, result, settings.captioning))
    settings = evaluation_settings(settings)
    try:
        # The checkpoint is loaded back as the service will load it, so evaluation also proves it loads.
        captioner = Captioner.load(layout.captioner_dir, settings.captioning)
        index = build_index(captioner, dataset.split("train"), settings, progress)
        index.save(staged)
        bundle = Bundle(layout, captioner, index)
        evaluation = evaluate_on(bundle, dataset, progress)
        quiet = [sample for sample in dataset.split("val") if not sample.deformation]
        calibration = calibrate(bundle, load_images(quiet), f"{len(quiet)} quiet tiles of the validation split of "
                                f"{dataset.root}", settings, progress)
    except InsarwatchError as exc:
        raise EvaluationFailed(exc, store.register(staged, make_current=False)) from exc
    if calibration is not None:
        write_calibration(layout, calibration)
    write_predictions(evaluation.predictions, layout.predictions_file)
    _write_json(layout.metrics_file, evaluation.metrics)
    if result.interrupted:
        make_current, reason = False, "training was interrupted"
    else:
        make_current, reason = _promotion(store, evaluation.metrics, only_if_better)
    version = store.register(staged, make_current=make_current)
    return TrainOutcome(version, evaluation.metrics, result, make_current, reason)

