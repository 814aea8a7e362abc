"""Evaluation on folders of labelled real tiles (``insarwatch evaluate --tiles DIR``).

Owns the measure of a model on interferograms nobody made for it: ``DIR/1/*`` show
deformation, ``DIR/0/*`` do not, in any rendering the reading step accepts. Each image is
read exactly as the daemon reads a frame (``reading.read_model_image``, for the input the model
was trained on) and shown to the model
whole, as one tile, as a labelled training patch is (the processor resizes it); it is then
captioned, searched in the index and decided by the daemon's own rule
(``caption_files.describe_tiles`` → ``alerts.decide_tile``). Four calls are scored against
the folder labels: the caption's deformation call, the neighbour vote alone (vote ≥
``alerts.review_vote``), the decision at level alert, and at alert or review. Files that
cannot be read are kept as one-line errors and counted, never dropped silently.
``insarwatch compare --tiles`` reuses ``evaluate_tiles``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from insarwatch import files
from insarwatch.caption_files import CaptionedTile, describe_tiles
from insarwatch.config import AlertSettings, Settings
from insarwatch.describe import Bundle, load_bundle
from insarwatch.errors import InputError
from insarwatch.imaging import Tile
from insarwatch.reading import read_model_image
from insarwatch.registry import ModelStore

from .metrics import Confusion
from .pipeline import evaluation_settings

LABELS = {"1": True, "0": False}
CALLS = ("caption", "vote", "alert", "alert_or_review")


@dataclass(frozen=True)
class TileResult:
    """One labelled image, what the model said of it and the four calls made from that."""

    label: bool
    captioned: CaptionedTile
    review_vote: float

    @property
    def calls(self) -> dict[str, bool]:
        decision = self.captioned.decision
        vote = decision.reasons["vote"]
        return {
            "caption": bool(decision.reasons["caption_deformation"]),
            "vote": vote is not None and vote >= self.review_vote,
            "alert": decision.level == "alert",
            "alert_or_review": decision.level != "quiet",
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON line of one image; every call can be recomputed from it."""
        decision = self.captioned.decision
        return {
            "path": str(self.captioned.image),
            "label": int(self.label),
            "caption": decision.caption,
            "finding": decision.finding.to_dict(),
            "vote": decision.reasons["vote"],
            "review_vote": self.review_vote,
            "level": decision.level,
            "detection": decision.reasons["detection"],
            "unread_rendering": decision.reasons["unread_rendering"],  # why a level was held at review
            "similarities": decision.reasons["similarities"],
            "neighbour_deformation": [bool(n.record.deformation) for n in decision.neighbours],
        }


@dataclass(frozen=True)
class TileEvaluation:
    """Every labelled image of a folder with its result, and the files that could not be read."""

    version: str
    root: Path
    results: tuple[TileResult, ...]
    refused: tuple[InputError, ...]

    def confusion(self, call: str) -> Confusion:
        return Confusion.of([r.calls[call] for r in self.results], [r.label for r in self.results])

    def table(self) -> dict[str, dict[str, float | int]]:
        """Per call: precision, recall, false-alarm rate, balanced accuracy and the counts."""
        rows = {}
        for call in CALLS:
            c = self.confusion(call)
            rows[call] = {"precision": c.precision, "recall": c.recall, "false_alarm_rate": c.false_alarm_rate,
                          "balanced_accuracy": c.balanced_accuracy, "tp": c.true_positive,
                          "fp": c.false_positive, "tn": c.true_negative, "fn": c.false_negative}
        return rows

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version, "tiles": str(self.root),
            "deforming": sum(r.label for r in self.results), "quiet": sum(not r.label for r in self.results),
            "refused": len(self.refused), "calls": self.table(),
        }


def labelled_files(root: Path) -> list[tuple[Path, bool]]:
    """``root/1/*`` (deformation) then ``root/0/*`` (none), each sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a directory of labelled tiles")
    found = []
    for name, label in LABELS.items():
        folder = root / name
        paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if folder.is_dir() else []
        if not paths:
            raise InputError(folder, "no tiles: --tiles needs DIR/1/* (deformation) and DIR/0/* (none)")
        found += [(path, label) for path in paths]
    return found


def evaluate_tiles(bundle: Bundle, root: Path, settings: Settings,
                   advance: Callable[[int], object] = lambda done: None) -> TileEvaluation:
    """Caption, search and decide every labelled image under ``root`` (see the module docstring)."""
    pieces: list[tuple[Path, Tile]] = []
    labels: list[bool] = []
    refused: list[InputError] = []
    unread: dict[Path, str] = {}
    for path, label in labelled_files(root):
        try:
            read = read_model_image(path, settings.imaging, bundle.model_input)
        except InputError as exc:
            refused.append(exc)
            continue
        pixels = read.pixels
        if read.unknown is not None:
            unread[path] = read.unknown
        height, width = pixels.shape[:2]
        pieces.append((path, Tile(0, (0, 0, width, height), pixels)))
        labels.append(label)
    alerts: AlertSettings = settings.alerts
    captioned = describe_tiles(pieces, bundle, settings.retrieval.k, alerts, advance, unread=unread)
    results = tuple(TileResult(label, item, alerts.review_vote) for label, item in zip(labels, captioned, strict=True))
    return TileEvaluation(bundle.version.name, Path(root), results, tuple(refused))


def evaluate_model_on_tiles(model: str, root: Path, settings: Settings, progress: Progress) -> TileEvaluation:
    """``evaluate_tiles`` for a registered version (a name, ``current`` or a directory),
    loaded as ``insarwatch evaluate`` loads it: triage off, every tile decoded."""
    version = ModelStore(settings.models_dir).resolve(model)
    settings = evaluation_settings(settings)
    labelled_files(root)  # a bad folder is reported before the model loads
    bundle = load_bundle(version, settings, require_index=True)
    task = progress.add_task(f"evaluating {version.name} on {root}", total=None)
    try:
        return evaluate_tiles(bundle, root, settings, lambda done: progress.advance(task, done))
    finally:
        progress.remove_task(task)


def write_lines(evaluation: TileEvaluation, path: Path) -> None:
    """One JSON object per image, in folder order."""
    with files.replacing(path) as temporary, temporary.open("w", encoding="utf-8") as out:
        for result in evaluation.results:
            out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
