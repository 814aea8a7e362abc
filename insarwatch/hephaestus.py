"""Hephaestus annotations and the captioning paper's curation, as used by ``insarwatch prepare``.

This module owns the annotation schema (one JSON per interferogram, Bountos et al. 2022),
the curation rules of Yazbeck & Rundle (2026) as pure functions applied in the order
the paper states them (README, "Training and evaluation"), the balancing and the train/val/test split, and ``prepare``, which
turns a Hephaestus-style ROOT into ``DATASET/images/<id>.png`` plus ``DATASET/manifest.jsonl``
and ``DATASET/dataset.json``. The images are what the model will be shown, written through the
service's own reading step (``reading.read_model_image``) for ``imaging.model_input``: ``paper``
reproduces the paper exactly (P-mode PNGs only, as RGB); ``phase`` keeps every mode — the RGBA
frames the paper dropped included — and writes the canonical rendering of each one's phase
(from ``.geo.diff_pha.tif`` when a raw root has it), leaving out, with the reason, an image whose
colours fit no known rendering. ROOT is either flat patches (``annotations/<id>.json`` +
``images/<id>.png``) or the raw LiCSAR layout (``<FRAME>/interferograms/<D1>_<D2>/...`` +
``annotations/*.json``, matched by frame id and dates). Files that cannot be used are
listed with the reason and skipped; only an empty ROOT is an error. With ``dry_run`` it
counts what the annotations alone decide and writes nothing, so it runs on the annotations
without their images (``PrepareReport.to_dict`` is ``prepare --json``).

It stays one module at ~500 lines on purpose: it is the paper's recipe read top to bottom
(schema, rules in the paper's order, balancing, split, the report of what each step removed);
split, a reader checking it against the paper would have to follow it across files.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.table import Table

from . import files, imaging, licsar
from .config import CurationSettings, ImagingSettings, ModelInput
from .errors import InputError, one_line
from .manifest import MANIFEST, Sample, Split, write_dataset_input
from .reading import read_model_image

SEED = 17
TEST_FRACTION = 0.1
VAL_FRACTION = 0.1
DEFORMATION = "Deformation"
EARTHQUAKE = "Earthquake"

# Real files also use 2 and 3 (processing_error, glacier_fringes): any non-zero value flags.
Flag = Annotated[int, Field(ge=0)]
NON_DEFORMATION = ["Non_Deformation"]


class Annotation(BaseModel):
    """One Hephaestus annotation. The named fields are validated; extra keys are kept.

    Lenient where real Hephaestus files vary: ``confidence`` may be a number, a string or
    null, ``phase`` may be null, and the lists may be empty. The values below are those the
    19,919 real annotations use (``Earthquake`` labels carry intensity and phase ``"None"``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    uniqueID: int
    frameID: str
    primary_date: str = Field(pattern=r"^\d{8}$")
    secondary_date: str = Field(pattern=r"^\d{8}$")
    corrupted: Flag
    processing_error: Flag
    glacier_fringes: Flag
    orbital_fringes: Flag
    atmospheric_fringes: int = Field(ge=0, le=3)
    low_coherence: Flag
    no_info: Flag
    image_artifacts: Flag
    is_crowd: Flag
    label: list[Literal["Deformation", "Non_Deformation", "Earthquake"]]
    activity_type: list[Literal["Mogi", "Dyke", "Sill", "Spheroid", "Earthquake", "Unidentified"]]
    intensity_level: list[Literal["Low", "Medium", "High", "None"]]
    phase: Literal["Rest", "Unrest", "Rebound", "None"] | None
    confidence: float | str | None
    segmentation_mask: list[list[float]]
    caption: str = Field(min_length=1)  # a manifest line needs one (manifest.Sample)

    @field_validator("primary_date", "secondary_date")
    @classmethod
    def _real_date(cls, text: str) -> str:
        datetime.strptime(text, "%Y%m%d")  # ValueError names the impossible day
        return text

    @field_validator("segmentation_mask")
    @classmethod
    def _flat_xy_polygons(cls, polygons: list[list[float]]) -> list[list[float]]:
        for polygon in polygons:
            if len(polygon) % 2:
                raise ValueError("each polygon must be a flat [x1, y1, x2, y2, ...] list (even length)")
        return polygons

    @property
    def deformation(self) -> bool:
        # An ["Earthquake"] label is ground deformation too: counting the one clean real
        # ["Earthquake"] annotation (8428) is what makes the paper's 784/634, not 783/633.
        return DEFORMATION in self.label or EARTHQUAKE in self.label

    @property
    def pair(self) -> str:
        return f"{self.primary_date}_{self.secondary_date}"

    @property
    def confidence_value(self) -> float | None:
        """``confidence`` as a number, or None when it is missing or not a number."""
        try:
            return float(self.confidence) if self.confidence is not None else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Rule:
    """One curation rule: ``removes(annotation)`` is True when the paper drops it."""

    name: str
    description: str
    removes: Callable[[Annotation], bool]


# The paper's order; the first rule that removes an annotation is its reason. The first rule
# is the class definition: only a label of exactly ["Non_Deformation"] is non-deforming, so
# an empty label belongs to neither class (no real annotation has one).
RULES: tuple[Rule, ...] = (
    Rule("not_a_class", 'label has neither Deformation nor Earthquake and is not ["Non_Deformation"]',
         lambda a: not a.deformation and a.label != NON_DEFORMATION),
    Rule("corrupted", "corrupted != 0", lambda a: a.corrupted != 0),
    Rule("no_info", "no_info != 0", lambda a: a.no_info != 0),
    Rule("processing_error", "processing_error != 0", lambda a: a.processing_error != 0),
    Rule("low_coherence", "low_coherence != 0", lambda a: a.low_coherence != 0),
    Rule("orbital_fringes", "orbital_fringes != 0", lambda a: a.orbital_fringes != 0),
    Rule("glacier_fringes", "glacier_fringes != 0", lambda a: a.glacier_fringes != 0),
    Rule("atmospheric_fringes", "atmospheric_fringes > 2", lambda a: a.atmospheric_fringes > 2),
    Rule("image_artifacts", "image_artifacts != 0", lambda a: a.image_artifacts != 0),
    Rule("is_crowd", "deforming and is_crowd != 0", lambda a: a.deformation and a.is_crowd != 0),
    Rule("unidentified_activity", "deforming and activity type Unidentified",
         lambda a: a.deformation and "Unidentified" in a.activity_type),
)
NOT_PALETTE = "not_palette"
UNKNOWN = "unknown"  # the mode of an image that is missing or unreadable
MODE_GROUPS = ("P", "RGBA", "other", UNKNOWN)


def confidence_rule(minimum: float) -> Rule:
    """The rule the paper applied without stating it: deforming annotations need ``confidence >= minimum``.

    On the real annotations the stated rules leave 784 deforming ones; ``minimum = 0.8``
    leaves the paper's 634 (README, "Curation on the real annotations").
    """
    return Rule(
        "deforming_confidence",
        f"deforming and confidence < {minimum:g} (curation.deforming_min_confidence)",
        lambda a: a.deformation and not (a.confidence_value is not None and a.confidence_value >= minimum),
    )


def curation_rules(curation: CurationSettings) -> tuple[Rule, ...]:
    """``RULES`` and, unless its minimum is 0, the deforming confidence rule, in that order."""
    minimum = curation.deforming_min_confidence
    return RULES + ((confidence_rule(minimum),) if minimum > 0 else ())


def rejection_reason(annotation: Annotation, rules: Sequence[Rule] = RULES) -> str | None:
    """The name of the first of ``rules`` that removes ``annotation``, or None if it is clean."""
    return next((rule.name for rule in rules if rule.removes(annotation)), None)


def mode_group(mode: str) -> str:
    """``P``, ``RGBA``, ``other`` or ``unknown``: the groups the paper counts, and ours for no image."""
    return mode if mode in ("P", "RGBA", UNKNOWN) else "other"


def load_annotation(path: Path) -> Annotation:
    """Read and validate one annotation JSON; ``InputError`` names the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object, got {type(data).__name__}")
    try:
        return Annotation.model_validate(data)
    except ValidationError as exc:
        raise InputError(path, one_line(exc, "field", missing="missing field")) from None


# --------------------------------------------------------------------------- selection


def balance(deforming: Iterable[int], non_deforming: Iterable[int], seed: int = SEED) -> list[int]:
    """Every deforming id plus as many non-deforming ids, sorted: equal classes.

    Exactly: ``random.Random(seed).sample(sorted(non_deforming), len(deforming))``. In the
    paper non-deforming samples are far more numerous; when they are not (a small
    synthetic set), every non-deforming id is kept and the deforming ids are drawn instead,
    ``random.Random(seed).sample(sorted(deforming), len(non_deforming))``, so the classes
    stay equal.
    """
    deforming, pool = sorted(deforming), sorted(non_deforming)
    rng = random.Random(seed)
    if len(pool) >= len(deforming):
        return sorted(deforming + rng.sample(pool, len(deforming)))
    return sorted(rng.sample(deforming, len(pool)) + pool)


def _train_test(items: Sequence[int], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    n_test = math.ceil(test_fraction * len(items))
    permutation = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in permutation[n_test:]], [items[i] for i in permutation[:n_test]]


def split(ids: Sequence[int], seed: int = SEED) -> dict[int, str]:
    """Assign each id to "train", "val" or "test", as Hugging Face ``datasets`` would.

    Exactly ``Dataset.train_test_split(test_size=0.1, seed=17)`` on ``sorted(ids)``, then the
    same call on the resulting train part for validation. Each call takes
    ``n_test = math.ceil(0.1 * n)`` (float arithmetic),
    ``p = numpy.random.default_rng(17).permutation(n)``, test = items at ``p[:n_test]``,
    train = items at ``p[n_test:]`` in that order. For the paper's 1,162 images this gives
    117 test, 105 val, 940 train.
    """
    train, test = _train_test(sorted(ids), TEST_FRACTION, seed)
    train, val = _train_test(train, VAL_FRACTION, seed)
    return {**{i: "train" for i in train}, **{i: "val" for i in val}, **{i: "test" for i in test}}


# --------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class Skipped:
    """A file ``prepare`` could not use, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A clean annotation with its source image and the image's mode from the PNG header
    (``unknown``, with no image, when the image is missing or unreadable)."""

    annotation: Annotation
    image: Path | None
    mode: str


@dataclass(frozen=True)
class PrepareReport:
    """What ``prepare`` found, removed and wrote; counts keyed by rule, class and split."""

    root: Path
    manifest: Path
    layout: str  # "flat" | "raw"
    model_input: ModelInput  # what the images show (imaging.model_input)
    annotations: int
    malformed: tuple[Skipped, ...]
    rules: tuple[Rule, ...]  # the rules applied, in order
    removed: dict[str, int]  # rule name (``rules`` order, then NOT_PALETTE) → count
    unusable: tuple[Skipped, ...]  # clean annotations whose image is missing or unreadable
    remaining: dict[str, dict[str, int]]  # "deforming"/"non_deforming" → mode group (MODE_GROUPS) → count
    selected: dict[str, int]  # class → count after balancing
    splits: dict[str, int]  # images written (a dry run: that would be written) per split
    renderings: dict[str, int]  # images written per rendering (``reading.ModelImage.rendering``)
    dry_run: bool = False
    selected_unknown_mode: int = 0  # a dry run selects images of unknown mode as if they were P

    def to_dict(self) -> dict[str, object]:
        """``insarwatch prepare --json``: the numbers of the three tables."""
        return {
            "root": str(self.root), "layout": self.layout, "model_input": self.model_input, "dry_run": self.dry_run,
            "annotations": self.annotations,
            "rules": {"malformed": len(self.malformed), **self.removed, "unusable": len(self.unusable)},
            "classes": self.remaining,
            "selected": self.selected,
            "selected_unknown_mode": self.selected_unknown_mode,
            "split": self.splits,
            "renderings": self.renderings,
        }

    def tables(self) -> tuple[Table, Table, Table]:
        """What ``insarwatch prepare`` prints: removals per rule, the clean annotations per
        class and source mode, and the images written per split."""
        descriptions = {rule.name: rule.description for rule in self.rules} | {
            NOT_PALETTE: "source PNG not palette (P) mode"}
        removed = Table(title=f"Curation of {self.annotations} annotations ({self.layout} layout)"
                              f"{' — dry run, nothing written' if self.dry_run else ''}")
        removed.add_column("rule")
        removed.add_column("removes")
        removed.add_column("removed", justify="right")
        removed.add_row("malformed", "annotation JSON unreadable or invalid", str(len(self.malformed)))
        for name, count in self.removed.items():
            if name == NOT_PALETTE:
                removed.add_row("unusable", "image missing or unreadable", str(len(self.unusable)))
            removed.add_row(name, descriptions[name], str(count))
        remaining = Table(title="Clean annotations per class and source mode", caption=(
            f"{self.selected_unknown_mode} selected images of unknown mode (missing) counted as if P"
            if self.selected_unknown_mode else None))
        remaining.add_column("class")
        for mode in MODE_GROUPS:
            remaining.add_column(mode, justify="right")
        remaining.add_column("selected", justify="right")
        for name, counts in self.remaining.items():
            remaining.add_row(name, *(str(counts[mode]) for mode in MODE_GROUPS), str(self.selected.get(name, 0)))
        shown = ", ".join(f"{name} {count}" for name, count in sorted(self.renderings.items()))
        splits = Table(title=f"Dataset {'that would be ' if self.dry_run else ''}written to {self.manifest} "
                             f"({self.model_input} input{': ' + shown if shown else ''})")
        for name in self.splits:
            splits.add_column(name, justify="right")
        splits.add_column("total", justify="right")
        splits.add_row(*(str(count) for count in self.splits.values()), str(sum(self.splits.values())))
        return removed, remaining, splits


def find_annotations(root: Path) -> list[Path]:
    """``ROOT/annotations/*.json``, sorted; ``InputError`` when there are none."""
    root = Path(root)
    paths = sorted((root / "annotations").glob("*.json"))
    if not paths:
        raise InputError(root, "no annotations found (expected annotations/*.json)")
    return paths


def layout_of(root: Path) -> str:
    """``flat`` when ROOT has an ``images/`` directory, otherwise the raw LiCSAR layout."""
    return "flat" if (Path(root) / "images").is_dir() else "raw"


def source_image(annotation: Annotation, root: Path, layout: str) -> Path:
    """The PNG an annotation describes; ``InputError`` when it is missing or leads out of ROOT."""
    if layout == "flat":
        path = root / "images" / f"{annotation.uniqueID}.png"
        if not licsar.is_inside(path, root):
            raise InputError(path, "symlink leads outside the dataset root; refused")
    else:
        path = licsar.product_path(root, annotation.frameID, annotation.pair)
        licsar.interferogram_from_path(path, root)
    if not path.is_file():
        raise InputError(path, f"image missing for annotation {annotation.uniqueID}")
    return path


def curate(
    paths: Sequence[Path], root: Path, layout: str, rules: Sequence[Rule] = RULES
) -> tuple[list[Candidate], tuple[Skipped, ...], dict[str, int], tuple[Skipped, ...]]:
    """Load, validate and filter annotations.

    Returns the clean annotations with their image and its mode (any mode: the P-mode
    filter comes after, so the report can count RGBA and other sources; ``unknown`` when
    the image is unusable), the malformed files, the count each rule removed, and why each
    unusable image is.
    """
    removed = {rule.name: 0 for rule in rules} | {NOT_PALETTE: 0}
    malformed: list[Skipped] = []
    unusable: list[Skipped] = []
    candidates: list[Candidate] = []
    seen: dict[int, Path] = {}
    for path in paths:
        try:
            if not licsar.is_inside(path, root):
                malformed.append(Skipped(path, "symlink leads outside the dataset root; refused"))
                continue
            annotation = load_annotation(path)
        except InputError as exc:
            malformed.append(Skipped(path, exc.reason))
            continue
        if annotation.uniqueID in seen:
            malformed.append(Skipped(path, f"duplicate uniqueID {annotation.uniqueID} (also {seen[annotation.uniqueID].name})"))
            continue
        seen[annotation.uniqueID] = path
        reason = rejection_reason(annotation, rules)
        if reason is not None:
            removed[reason] += 1
            continue
        try:
            image = source_image(annotation, root, layout)
            mode = imaging.read_png_header(image).mode
        except InputError as exc:
            unusable.append(Skipped(Path(exc.path), exc.reason))
            candidates.append(Candidate(annotation, None, UNKNOWN))
            continue
        candidates.append(Candidate(annotation, image, mode))
    return candidates, tuple(malformed), removed, tuple(unusable)


def class_name(deformation: bool) -> str:
    return "deforming" if deformation else "non_deforming"


def manifest_record(annotation: Annotation, image: str, split_name: Split) -> Sample:
    """The manifest line ``insarwatch train`` reads for one curated annotation."""
    return Sample(
        id=str(annotation.uniqueID),
        image=Path(image),
        caption=annotation.caption,
        deformation=annotation.deformation,
        activity_type=annotation.activity_type,
        intensity=annotation.intensity_level,
        split=split_name,
    )


def prepare(
    root: Path,
    out: Path,
    settings: ImagingSettings,
    track: Callable[[Sequence[Candidate]], Iterable[Candidate]] = iter,
    *,
    curation: CurationSettings = CurationSettings(),
    dry_run: bool = False,
) -> PrepareReport:
    """Curate ROOT into OUT: filter, keep P-mode (``paper``) or every mode (``phase``), balance,
    split, write the images as ``settings.model_input`` shows them, the manifest and ``dataset.json``.

    ``track`` wraps the conversion loop (the CLI passes a progress bar). A selected image
    that turns out not to decode, or on the phase input not to fit a known rendering, is
    listed in ``unusable`` and left out of the manifest; the split of every other image is
    unchanged by it. With ``dry_run`` nothing is written:
    images of unknown mode (missing or unreadable) are balanced and split as if they were
    P-mode, and ``selected_unknown_mode`` says how many of the selected they are.
    """
    root, out = Path(root), Path(out)
    paths = find_annotations(root)
    layout = layout_of(root)
    if (out / "images").resolve() == (root / "images").resolve():
        raise InputError(out, f"would overwrite the source images in {root / 'images'}; choose another --out")
    rules = curation_rules(curation)
    candidates, malformed, removed, unusable = curate(paths, root, layout, rules)
    remaining = {name: dict.fromkeys(MODE_GROUPS, 0) for name in ("deforming", "non_deforming")}
    for candidate in candidates:
        remaining[class_name(candidate.annotation.deformation)][mode_group(candidate.mode)] += 1
    model_input = settings.model_input
    palette_only = model_input == "paper"  # the phase input reads every mode, RGBA included
    kept = [c for c in candidates if (c.mode == UNKNOWN and dry_run) or
            (c.mode != UNKNOWN and (c.mode == "P" or not palette_only))]
    removed[NOT_PALETTE] = sum(c.mode not in ("P", UNKNOWN) for c in candidates) if palette_only else 0
    chosen = set(balance([c.annotation.uniqueID for c in kept if c.annotation.deformation],
                         [c.annotation.uniqueID for c in kept if not c.annotation.deformation]))
    selected = sorted((c for c in kept if c.annotation.uniqueID in chosen), key=lambda c: c.annotation.uniqueID)
    assignment = split([c.annotation.uniqueID for c in selected])
    manifest = out / MANIFEST
    written, renderings, failed = (Counter(assignment.values()), Counter(), ()) if dry_run else _write(
        selected, assignment, out, settings, track, root, layout)
    return PrepareReport(
        root=root,
        manifest=manifest,
        layout=layout,
        model_input=model_input,
        annotations=len(paths),
        malformed=malformed,
        rules=rules,
        removed=removed,
        unusable=unusable + failed,
        remaining=remaining,
        selected={name: 0 for name in remaining} | dict(Counter(class_name(c.annotation.deformation) for c in selected)),
        splits={name: written[name] for name in ("train", "val", "test")},
        renderings=dict(renderings),
        dry_run=dry_run,
        selected_unknown_mode=sum(c.mode == UNKNOWN for c in selected),
    )


def _write(
    selected: Sequence[Candidate],
    assignment: dict[int, str],
    out: Path,
    settings: ImagingSettings,
    track: Callable[[Sequence[Candidate]], Iterable[Candidate]],
    root: Path,
    layout: str,
) -> tuple[Counter[str], Counter[str], tuple[Skipped, ...]]:
    """Write the selected images as the model will be shown them (``reading.read_model_image``),
    the manifest and ``dataset.json``: images written per split and per rendering, and the images
    left out (not decoded, or on the phase input in no known rendering)."""
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    failed: list[Skipped] = []
    lines: list[str] = []
    written: Counter[str] = Counter()
    renderings: Counter[str] = Counter()
    phase = settings.model_input == "phase"
    for candidate in track(selected):
        annotation = candidate.annotation
        relative = f"images/{annotation.uniqueID}.png"
        try:
            siblings = _siblings(candidate.image, root) if layout == "raw" and phase else ()
            shown = read_model_image(candidate.image, settings, settings.model_input, *siblings)
        except InputError as exc:
            failed.append(Skipped(candidate.image, exc.reason))
            continue
        if shown.unknown is not None:
            failed.append(Skipped(candidate.image, f"left out of a phase dataset: {shown.unknown}"))
            continue
        Image.fromarray(shown.pixels).save(out / relative, format="PNG")
        renderings[shown.rendering] += 1
        split_name = assignment[annotation.uniqueID]
        lines.append(manifest_record(annotation, relative, split_name).to_line())
        written[split_name] += 1
    files.write_text(out / MANIFEST, "".join(line + "\n" for line in lines))
    write_dataset_input(out, settings.model_input)
    return written, renderings, tuple(failed)


def _siblings(image: Path, root: Path) -> tuple[tuple[Path, ...], Path]:
    """A raw root's ``.geo.diff.png``'s siblings inside ROOT (its ``.geo.diff_pha.tif``) and frame folder."""
    interferogram = licsar.interferogram_from_path(image, root)
    return interferogram.siblings, interferogram.frame_dir
