"""The versioned model store under ``<var>/models/``.

Owns the on-disk life of a trained model: a new version is written into a staging
directory inside the store, renamed into place under a UTC timestamp name
(``20261123T221500Z``, with ``-2``, ``-3``... when two land in the same second), and only
then, if asked, made current by atomically replacing the ``current`` symlink. A reader
therefore sees either the old model or the new one, never half of one. ``ModelVersion``
names the files a version holds, once, for the runtime, training and the tests, and
records at registration the SHA-256 of every file loading reads (``checksums.json``), so a
version whose weights were overwritten later is refused instead of captioning nonsense. Loading a
version into a captioner and its index is ``describe.load_bundle``'s job, so reading the
store imports neither torch nor FAISS. The package may carry one version of its own,
``insarwatch/models/offline`` (``python -m training.ship`` makes it): ``in_use`` falls back to it
while nothing is registered, so a new installation runs before it has trained anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from .config import ModelInput, model_input_of
from .errors import InputError, InsarwatchError

log = logging.getLogger(__name__)

CURRENT = "current"
STAGING_PREFIX = ".staging-"
VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
# The model the package ships (present only when its weights met the real-data targets).
SHIPPED = Path(__file__).parent / "models" / "offline"


@dataclass(frozen=True)
class ModelVersion:
    """A model directory: a registered version, or any directory given by path.

    The one place the files inside a version are named; the runtime, training, the
    benchmarks and the tests build their paths through it.
    """

    name: str
    path: Path

    CAPTIONER_DIR: ClassVar[str] = "captioner"
    INDEX_FILE: ClassVar[str] = "index.faiss"
    RECORDS_FILE: ClassVar[str] = "index.jsonl"
    INDEX_TRANSFORM_FILE: ClassVar[str] = "index_transform.safetensors"
    INDEX_DETECTOR_FILE: ClassVar[str] = "index_detector.safetensors"
    METRICS_FILE: ClassVar[str] = "metrics.json"
    CALIBRATION_FILE: ClassVar[str] = "calibration.json"
    PREDICTIONS_FILE: ClassVar[str] = "predictions.jsonl"
    TRAIN_CONFIG_FILE: ClassVar[str] = "train_config.json"
    CHECKSUMS_FILE: ClassVar[str] = "checksums.json"

    @classmethod
    def at(cls, path: str | Path) -> ModelVersion:
        """The directory ``path`` read as a version named after it (staged or unregistered)."""
        return cls(Path(path).name, Path(path))

    @property
    def captioner_dir(self) -> Path:
        """``captioner/`` inside a version; the directory itself for a bare save_pretrained dir."""
        nested = self.path / self.CAPTIONER_DIR
        if not nested.exists() and (self.path / "config.json").is_file():
            return self.path
        return nested

    @property
    def index_file(self) -> Path:
        return self.path / self.INDEX_FILE

    @property
    def records_file(self) -> Path:
        """``index.jsonl``: line *i* describes vector *i* of ``index_file``."""
        return self.path / self.RECORDS_FILE

    @property
    def index_transform_file(self) -> Path:
        """The map from captioner embeddings to index vectors (``retrieval.EmbeddingTransform``);
        absent in versions made before it existed, which search with the identity."""
        return self.path / self.INDEX_TRANSFORM_FILE

    @property
    def index_detector_file(self) -> Path:
        """The index's deformation detector (``retrieval.LinearDetector``); absent in versions
        made before it existed, whose tiles are scored by their neighbours' vote."""
        return self.path / self.INDEX_DETECTOR_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS_FILE

    @property
    def calibration_file(self) -> Path:
        """The frame decision's calibration on the validation split (``alerts.FrameCalibration``)."""
        return self.path / self.CALIBRATION_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / self.PREDICTIONS_FILE

    @property
    def train_config_file(self) -> Path:
        return self.path / self.TRAIN_CONFIG_FILE

    @property
    def checksums_file(self) -> Path:
        """``checksums.json``: relative path → SHA-256 of each file loading reads."""
        return self.path / self.CHECKSUMS_FILE

    def loaded_files(self) -> list[Path]:
        """The files ``describe.load_bundle`` reads: the captioner's and the index's."""
        found = [path for path in sorted(self.captioner_dir.rglob("*")) if path.is_file()]
        index = (self.index_file, self.records_file, self.index_transform_file, self.index_detector_file)
        return found + [path for path in index if path.is_file()]

    def checksums(self) -> dict[str, str]:
        return {path.relative_to(self.path).as_posix(): _sha256(path) for path in self.loaded_files()}

    def record_checksums(self) -> None:
        self.checksums_file.write_text(json.dumps(self.checksums(), indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")

    def verify(self) -> None:
        """Refuse a version whose files differ from those recorded at registration (one line
        naming the file). A version registered before checksums were recorded loads with a warning."""
        if not self.checksums_file.is_file():
            log.warning("%s: no %s (registered before insarwatch recorded checksums); loading it unverified",
                        self.path, self.CHECKSUMS_FILE)
            return
        try:
            recorded = json.loads(self.checksums_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(self.checksums_file, f"not valid JSON ({exc})") from None
        for relative, digest in sorted(recorded.items()):
            path = self.path / relative
            if not path.is_file():
                raise InputError(path, "does not exist, though it was recorded at registration")
            if _sha256(path) != digest:
                raise InputError(path, "SHA-256 differs from the one recorded at registration; "
                                       "the model version is corrupt")

    def metrics(self) -> dict[str, Any]:
        """The evaluation metrics saved with the version; empty when there are none."""
        return _json_object(self.metrics_file, "metrics")

    def calibration(self) -> dict[str, Any]:
        """The calibration saved with the version; empty when there is none (older versions)."""
        return _json_object(self.calibration_file, "calibration")

    @property
    def model_input(self) -> ModelInput | None:
        """What the model was trained to see (``imaging.model_input``), from ``train_config.json``:
        ``paper`` for a version trained before it was recorded (every one of them saw the paper's
        RGB), None for a directory without the file (a bare captioner), which does not say."""
        path = self.train_config_file
        if not path.is_file():
            return None
        return model_input_of(_json_object(path, "train config").get("model_input", "paper"), path)


def _json_object(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"{what} is not a JSON object")
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ModelStore:
    """Versions under ``models_dir`` and the ``current`` pointer."""

    def __init__(self, models_dir: str | Path, clock: Callable[[], datetime] | None = None,
                 shipped: Path = SHIPPED) -> None:
        self.models_dir = Path(models_dir)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.shipped = shipped

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

    def in_use(self) -> ModelVersion | None:
        """``current``, or while none is registered the package's shipped model (when it has one)."""
        current = self.current()
        if current is not None:
            return current
        shipped = ModelVersion(self.shipped.name, self.shipped)
        return shipped if shipped.captioner_dir.is_dir() and shipped.index_file.is_file() else None

    def resolve(self, version_or_dir: str | Path) -> ModelVersion:
        """A version name, ``current``, or a path to a model directory."""
        text = str(version_or_dir)
        if text == CURRENT:
            version = self.in_use()
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
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.models_dir))
        except OSError as exc:  # a read-only mount, a file in the way
            raise InsarwatchError(f"{exc.filename or self.models_dir}: cannot make the model store: "
                                  f"{exc.strerror or exc}") from None

    def discard(self, staged: Path) -> None:
        """Remove a staged version that will not be registered (failed training)."""
        self._check_staged(staged)
        shutil.rmtree(staged)

    def register(self, staged: Path, make_current: bool) -> ModelVersion:
        """Move ``staged`` into place under a new version name; optionally make it current."""
        self._check_staged(staged)
        if not (staged / ModelVersion.CAPTIONER_DIR).is_dir():
            raise InputError(staged, f"staged version has no {ModelVersion.CAPTIONER_DIR}/ directory")
        ModelVersion.at(staged).record_checksums()
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
