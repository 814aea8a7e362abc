"""The versioned model store under ``<var>/models/`` and the one loader everything uses.

Owns the on-disk life of a trained model: a new version is written into a staging
directory inside the store, renamed into place under a UTC timestamp name
(``20261123T221500Z``, with ``-2``, ``-3``... when two land in the same second), and only
then, if asked, made current by atomically replacing the ``current`` symlink. A reader
therefore sees either the old model or the new one, never half of one. ``load_bundle`` is
the single way the caption command, evaluation and the daemon turn a version into a
loaded ``Captioner`` and its ``RetrievalIndex``, with the check that the index was built
by that captioner; ``Bundle.describe`` is the one captioning path (with optional triage).
Torch and FAISS are imported only when a bundle is loaded, so reading the store is cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, InsarwatchError

if TYPE_CHECKING:
    from .captioner import Captioner, TileImage
    from .config import Settings, TriageSettings
    from .retrieval import Neighbour, RetrievalIndex

CURRENT = "current"
STAGING_PREFIX = ".staging-"
VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
CAPTIONER_DIR = "captioner"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class ModelVersion:
    """A model directory: a registered version, or any directory given by path."""

    name: str
    path: Path

    @property
    def captioner_dir(self) -> Path:
        """``captioner/`` inside a version; the directory itself for a bare save_pretrained dir."""
        nested = self.path / CAPTIONER_DIR
        if not nested.exists() and (self.path / "config.json").is_file():
            return self.path
        return nested

    def metrics(self) -> dict[str, Any]:
        """The evaluation metrics saved with the version; empty when there are none."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(path, "metrics are not a JSON object")
        return data


@dataclass(frozen=True)
class Described:
    """One tile's caption with the indexed examples most like it."""

    caption: Caption
    neighbours: tuple[Neighbour, ...]


def confidently_quiet(neighbours: Sequence[Neighbour], triage: TriageSettings) -> bool:
    """Triage: the nearest examples agree, closely enough, that nothing deforms here."""
    nearest = neighbours[: triage.min_neighbours]
    return len(nearest) >= triage.min_neighbours and all(
        n.similarity >= triage.min_similarity and not n.record.deformation for n in nearest
    )


@dataclass(frozen=True)
class Bundle:
    """What captioning needs from one model version, loaded and checked against each other."""

    version: ModelVersion
    captioner: Captioner
    index: RetrievalIndex | None

    def describe(self, images: Sequence[TileImage], k: int) -> list[Described]:
        """Caption ``images`` and find each one's ``k`` nearest indexed examples."""
        return [item for batch in self.describe_batches(images, k) for item in batch]

    def describe_batches(self, images: Sequence[TileImage], k: int) -> Iterator[list[Described]]:
        """``describe``, one model batch at a time (for progress bars and streaming).

        One vision pass per batch feeds the search and the decoder. With
        ``captioning.triage.enabled`` the decoder only runs for tiles that are not
        ``confidently_quiet``; the others take their nearest example's caption, marked
        ``retrieved``.
        """
        from .captioner import Caption

        triage = self.captioner.settings.triage
        use_triage = triage.enabled and self.index is not None
        wanted = max(k, triage.min_neighbours) if use_triage else k
        for vision in self.captioner.encode(images):
            found = self.index.search(vision.embeddings, wanted) if self.index else [[] for _ in range(len(vision))]
            quiet = [use_triage and confidently_quiet(row, triage) for row in found]
            generated = iter(self.captioner.describe(vision, [i for i, q in enumerate(quiet) if not q]))
            yield [
                Described(
                    Caption(row[0].record.caption if retrieved else next(generated), embedding, retrieved),
                    tuple(row[:k]),
                )
                for embedding, row, retrieved in zip(vision.embeddings, found, quiet, strict=True)
            ]


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ModelStore:
    """Versions under ``models_dir`` and the ``current`` pointer."""

    def __init__(self, models_dir: str | Path, clock: Callable[[], datetime] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    @property
    def current_link(self) -> Path:
        return self.models_dir / CURRENT

    def versions(self) -> list[ModelVersion]:
        """Registered versions, oldest first."""
        if not self.models_dir.is_dir():
            return []
        names = [
            entry.name for entry in self.models_dir.iterdir()
            if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".")
        ]
        return [ModelVersion(name, self.models_dir / name) for name in sorted(names, key=_version_order)]

    def current(self) -> ModelVersion | None:
        """The version ``current`` points at, or None before the first one is made current."""
        link = self.current_link
        if not os.path.lexists(link):
            return None
        target = self.models_dir / os.readlink(link)
        if not target.is_dir():
            raise InputError(link, f"points at {os.readlink(link)}, which is not a model directory")
        return ModelVersion(target.name, target)

    def resolve(self, version_or_dir: str | Path) -> ModelVersion:
        """A version name, ``current``, or a path to a model directory."""
        text = str(version_or_dir)
        if text == CURRENT:
            version = self.current()
            if version is None:
                raise InputError(self.current_link, "no current model yet; run `insarwatch train` first")
            return version
        if os.sep not in text and not text.startswith(".") and (self.models_dir / text).is_dir():
            return ModelVersion(text, self.models_dir / text)
        path = Path(version_or_dir).expanduser()
        if path.is_dir():
            path = path.resolve()
            return ModelVersion(path.name, path)
        raise InputError(text, f"neither a model version in {self.models_dir} nor a model directory")

    def stage(self) -> Path:
        """A fresh directory inside the store to write a new version into."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.models_dir))

    def discard(self, staged: Path) -> None:
        """Remove a staged version that will not be registered (failed training)."""
        self._check_staged(staged)
        shutil.rmtree(staged)

    def register(self, staged: Path, make_current: bool) -> ModelVersion:
        """Move ``staged`` into place under a new version name; optionally make it current."""
        self._check_staged(staged)
        if not (staged / CAPTIONER_DIR).is_dir():
            raise InputError(staged, f"staged version has no {CAPTIONER_DIR}/ directory")
        version = self._reserve_name()
        # Renaming onto the reserved empty directory replaces it atomically (POSIX rename).
        os.rename(staged, version.path)
        _fsync_dir(self.models_dir)
        if make_current:
            self.make_current(version)
        return version

    def make_current(self, version: ModelVersion) -> None:
        """Atomically point ``current`` at a registered version."""
        if version.path.parent.resolve() != self.models_dir.resolve() or not version.path.is_dir():
            raise InsarwatchError(f"{version.path} is not a version in {self.models_dir}")
        temporary = self.models_dir / f".{CURRENT}-{os.getpid()}-{version.name}"
        if os.path.lexists(temporary):
            temporary.unlink()
        # Relative, so the whole var directory can be moved or restored from backup.
        os.symlink(version.name, temporary)
        os.replace(temporary, self.current_link)
        _fsync_dir(self.models_dir)

    def _check_staged(self, staged: Path) -> None:
        staged = Path(staged)
        if staged.parent.resolve() != self.models_dir.resolve() or not staged.name.startswith(STAGING_PREFIX):
            raise InsarwatchError(f"{staged} was not staged by this model store ({self.models_dir})")
        if not staged.is_dir():
            raise InputError(staged, "staged version directory does not exist")

    def _reserve_name(self) -> ModelVersion:
        base = self._clock().astimezone(timezone.utc).strftime(VERSION_FORMAT)
        for attempt in range(1, 1000):
            name = base if attempt == 1 else f"{base}-{attempt}"
            try:
                (self.models_dir / name).mkdir()
            except FileExistsError:
                continue
            return ModelVersion(name, self.models_dir / name)
        raise InsarwatchError(f"{self.models_dir}: no free version name for {base}")


def _version_order(name: str) -> tuple[str, int]:
    """``20261123T221500Z-10`` sorts after ``-9``: compare the timestamp, then the counter."""
    stamp, _, counter = name.partition("-")
    return stamp, int(counter) if counter.isdigit() else 1


def load_bundle(version: ModelVersion, settings: Settings, require_index: bool = False) -> Bundle:
    """Load a version's captioner and, when it has one, its index (checked to fit the captioner)."""
    from .captioner import Captioner
    from .retrieval import RetrievalIndex

    captioner = Captioner.load(version.captioner_dir, settings.captioning)
    index = None
    if require_index or RetrievalIndex.exists(version.path):
        index = RetrievalIndex.load(version.path, expected_dim=captioner.embedding_dim, settings=settings.retrieval)
    return Bundle(version, captioner, index)
