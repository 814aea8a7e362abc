"""``insarwatch demo``: the whole service on built-in synthetic data, in one working directory.

Makes a synthetic LiCSAR drop (frames of both orbit directions, half of them deforming
near a volcano), a synthetic Hephaestus-style training set, curates it with ``prepare``,
trains the ``offline`` recipe on wrapped phase (reused when the working directory already has
one), runs the
daemon ``--once`` over the drop, writes the digest, and compares what the service decided
with the truth the generator recorded. It needs no network, no GPU and no configuration:
settings are the defaults with ``var_dir`` and ``drop_dir`` inside the working directory,
and the only delivery channel is the reports directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.progress import Progress

from .config import Settings
from .manifest import MANIFEST
from .registry import ModelStore, ModelVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoRow:
    """One interferogram of the demo drop: what the generator put in, what the service said."""

    key: str
    truth: str
    state: str
    level: str | None
    detail: str | None


@dataclass(frozen=True)
class DemoSummary:
    workdir: Path
    model_version: str
    trained: bool
    rows: tuple[DemoRow, ...]
    digest_html: Path
    metrics: dict[str, float]
    seconds: float


def demo_settings(workdir: Path) -> Settings:
    """Defaults, inside ``workdir``; the model sees wrapped phase (``imaging.model_input``), as the
    ``offline`` recipe it trains expects (its augmentation moves phase, not colours)."""
    base = Settings(var_dir=workdir / "var", drop_dir=workdir / "drop")
    return base.model_copy(update={"imaging": base.imaging.model_copy(update={"model_input": "phase"})})


def _truth(drop: Path) -> dict[str, dict]:
    from .synthetic.drop import read_truth

    return {row["key"]: row for row in read_truth(drop)}


def _describe_truth(row: dict) -> str:
    if row.get("low_coherence"):
        return "low coherence"
    if not row["deformation"]:
        return "no deformation"
    return f"{row['activity_type'].lower()}, {row['intensity'].lower()}"


def ensure_model(workdir: Path, progress: Progress, *, patches: int = 1200, seed: int = 7,
                 preset: str = "offline") -> tuple[ModelVersion, bool]:
    """The demo's current model: the package's shipped model when it has one, else trained on a
    synthetic training set if there is none yet; returns it and whether it was trained now."""
    from .synthetic.patches import write_dataset
    from .hephaestus import prepare

    workdir = Path(workdir).resolve()
    settings = demo_settings(workdir)
    models = ModelStore(settings.models_dir)
    if models.in_use() is not None:
        return models.in_use(), False
    import training

    hephaestus, dataset = workdir / "hephaestus", workdir / "dataset"
    if not (dataset / MANIFEST).exists():
        task = progress.add_task("synthetic training set", total=patches)
        write_dataset(hephaestus, patches, seed, advance=lambda: progress.advance(task))
        prepare(hephaestus, dataset, settings.imaging)
    outcome = training.train(dataset, training.load_preset(preset), settings, progress)
    log.info("trained %s: %s", outcome.version.name, outcome.reason)
    return models.current(), True


def run_demo(workdir: Path, progress: Progress, *, frames: int = 4, patches: int = 1200, seed: int = 7,
             preset: str = "offline") -> DemoSummary:
    """Run every step of the service once on synthetic data under ``workdir``."""
    from . import reports
    from .synthetic.drop import TRUTH_FILE, write_drop
    from .daemon import Daemon
    from .store import Store

    started = datetime.now(timezone.utc)
    workdir = Path(workdir).resolve()
    settings = demo_settings(workdir)
    drop = settings.drop_dir
    if not (drop / TRUTH_FILE).exists():
        task = progress.add_task("synthetic drop", total=frames * 2)
        write_drop(drop, frames, seed, pairs=2, advance=lambda: progress.advance(task))
    version, trained = ensure_model(workdir, progress, patches=patches, seed=seed, preset=preset)
    Daemon(settings, once=True).run()

    now = datetime.now(timezone.utc)
    truth = _truth(drop)
    with Store(settings.state_db) as store:
        digest = reports.digest_from_store(store, started - timedelta(days=1), now + timedelta(seconds=1), settings)
        html, _ = reports.write_report(reports.build_digest_report(digest, now), settings.reports_dir)
        rows = []
        for key, row in sorted(truth.items()):
            record = store.get(key)
            rows.append(DemoRow(key, _describe_truth(row), record.state if record else "missing",
                                record.level if record else None, record.reason if record else None))
    return DemoSummary(workdir, version.name, trained, tuple(rows), html, version.metrics(),
                       (datetime.now(timezone.utc) - started).total_seconds())
