"""The caption-and-neighbours stage: a loaded model version describing tiles.

Owns what happens between a tile image and its ``Described`` record: ``load_bundle`` is
the single way the caption command, evaluation and the daemon turn a ``ModelVersion`` into
a loaded ``Captioner`` and its ``RetrievalIndex`` (checked to have been built by that
captioner), with the version's calibration data for the decision stage, and ``Bundle.describe``/``describe_batches`` is the one captioning path, with
the optional triage rule (``confidently_quiet``) that copies the nearest example's caption
instead of decoding. A bundle carries the input its model was trained on (``model_input``):
the version's, else the setting's. Torch and FAISS are imported only when a bundle is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from typing import Any

from .registry import ModelVersion

if TYPE_CHECKING:
    from .captioner import Caption, Captioner, TileImage
    from .config import ModelInput, Settings, TriageSettings
    from .retrieval import Neighbour, RetrievalIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Described:
    """One tile's caption with the indexed examples most like it and, when the index has a
    detector, the probability it gives the tile of showing deformation."""

    caption: Caption
    neighbours: tuple[Neighbour, ...]
    detection: float | None = None


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
    calibration: dict[str, Any] | None = None  # alerts.FrameCalibration.to_dict(), when the version has one
    model_input: ModelInput = "paper"  # what the model was trained to see: reading.read_model_image shows it that

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
            searched = vision.features(self.index.feature) if self.index else vision.embeddings
            found = self.index.search(searched, wanted) if self.index else [[] for _ in range(len(vision))]
            detected = self.index.detect(searched) if self.index else [None] * len(vision)
            quiet = [use_triage and confidently_quiet(row, triage) for row in found]
            generated = iter(self.captioner.describe(vision, [i for i, q in enumerate(quiet) if not q]))
            yield [
                Described(
                    Caption(row[0].record.caption if retrieved else next(generated), embedding, retrieved),
                    tuple(row[:k]),
                    detection,
                )
                for embedding, row, detection, retrieved in zip(searched, found, detected, quiet, strict=True)
            ]


def input_for(version: ModelVersion, settings: Settings) -> ModelInput:
    """What ``version`` must be shown: the input it was trained on, else ``imaging.model_input``
    (a bare captioner directory does not say)."""
    return version.model_input or settings.imaging.model_input


def load_bundle(version: ModelVersion, settings: Settings, require_index: bool = False) -> Bundle:
    """Load a version's captioner and, when it has one, its index (checked to fit the captioner),
    after checking its files against the checksums recorded when it was registered.

    The model is shown the input it was trained on: the version's ``model_input`` wins over
    ``imaging.model_input`` (a warning says so when they differ), which decides only for a
    directory that does not say (a bare captioner).
    """
    from .captioner import Captioner
    from .retrieval import RetrievalIndex

    version.verify()
    model_input = input_for(version, settings)
    captioner = Captioner.load(version.captioner_dir, settings.captioning)
    index = None
    if require_index or RetrievalIndex.exists(version.path):
        index = RetrievalIndex.load(version.path, expected_dim=captioner.embedding_dim, settings=settings.retrieval)
    if model_input != settings.imaging.model_input:
        log.warning("model %s was trained on the %r input: showing it that, not imaging.model_input=%r",
                    version.name, model_input, settings.imaging.model_input)
    return Bundle(version, captioner, index, version.calibration() or None, model_input)
