"""The LiCSAR drop layout: frame ids, date pairs, product files and discovery.

LiCSAR publishes ``<FRAME>/interferograms/<D1>_<D2>/<D1>_<D2>.geo.diff.png`` with
siblings (``.geo.cc.png``/``.geo.cc.tif`` coherence, ``.geo.diff_pha.tif`` wrapped phase,
``.geo.unw.tif``); since the October 2025 storage migration older pairs sit in the archive
layout, ``<FRAME>/<D1>_<D2>/<D1>_<D2>.geo.diff.png``, and both are read. Frame metadata
lives in ``<FRAME>/metadata/`` in both (``Interferogram.frame_dir``). This module turns paths into ``Interferogram`` records and says, for
anything that does not fit, exactly why; it never guesses a frame or a date. Paths that
resolve outside the drop directory (through a symlink) are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from .errors import InputError

# Matched whole (fullmatch) and in ASCII digits only: `$` also matches before a trailing
# newline and `\d` any Unicode digit, so "<pair>\n" or fullwidth digits would take a real
# pair's key.
FRAME_RE = re.compile(r"([0-9]{3})([AD])_([0-9]{5})_([0-9]{6})")
PAIR_RE = re.compile(r"([0-9]{8})_([0-9]{8})")
DIFF_SUFFIX = ".geo.diff.png"
COHERENCE_PNG = ".geo.cc.png"
SIBLING_SUFFIXES = (COHERENCE_PNG, ".geo.cc.tif", ".geo.diff_pha.tif", ".geo.unw.tif", ".geo.unw.png")
INTERFEROGRAMS_DIR = "interferograms"


def temporal_baseline_days(primary: date, secondary: date) -> int:
    """Days between the two acquisitions of a pair (what reports show beside the dates)."""
    return (secondary - primary).days


@dataclass(frozen=True)
class FrameId:
    """A LiCSAR frame such as ``124D_04854_171313``: relative orbit (track) and direction."""

    text: str
    track: int
    direction: str  # "ascending" | "descending"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Interferogram:
    """One interferogram in the drop: the wrapped-phase PNG and whichever siblings exist."""

    frame: FrameId
    primary: date
    secondary: date
    diff_png: Path
    coherence: Path | None = None
    siblings: tuple[Path, ...] = ()

    @property
    def pair(self) -> str:
        return pair_name(self.primary, self.secondary)

    @property
    def frame_dir(self) -> Path:
        return frame_dir(self.diff_png)

    @property
    def key(self) -> str:
        """Stable identity used by the state store and alert de-duplication."""
        return f"{self.frame}/{self.pair}"

    @property
    def temporal_baseline_days(self) -> int:
        return temporal_baseline_days(self.primary, self.secondary)


@dataclass(frozen=True)
class Unrecognised:
    """A file in the drop that looks like a product but does not fit the layout."""

    path: Path
    reason: str


def pair_name(primary: date, secondary: date) -> str:
    """``YYYYMMDD_YYYYMMDD``: the pair folder's name and the stem of its products."""
    return f"{primary:%Y%m%d}_{secondary:%Y%m%d}"


def product_path(drop_dir: Path, frame: str, pair: str, suffix: str = DIFF_SUFFIX) -> Path:
    """Where LiCSAR puts a product: ``<FRAME>/interferograms/<PAIR>/<PAIR><suffix>``."""
    return Path(drop_dir) / str(frame) / INTERFEROGRAMS_DIR / pair / f"{pair}{suffix}"


def frame_dir(diff_png: Path) -> Path:
    """``<FRAME>/`` of a product, whichever layout its pair folder sits in."""
    pair_dir = Path(diff_png).parent
    return pair_dir.parent.parent if pair_dir.parent.name == INTERFEROGRAMS_DIR else pair_dir.parent


def sibling_paths(diff_png: Path) -> tuple[Path, ...]:
    """The products beside a ``.geo.diff.png`` that exist, in ``SIBLING_SUFFIXES`` order."""
    stem = Path(diff_png).name[: -len(DIFF_SUFFIX)]
    return tuple(s for suffix in SIBLING_SUFFIXES if (s := Path(diff_png).with_name(stem + suffix)).exists())


def parse_frame_id(text: str) -> FrameId:
    match = FRAME_RE.fullmatch(text)
    if not match:
        raise ValueError(f"frame id {text!r} is not of the form NNN[A|D]_NNNNN_NNNNNN")
    direction = "ascending" if match.group(2) == "A" else "descending"
    return FrameId(text=text, track=int(match.group(1)), direction=direction)


def _parse_day(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{text!r} is not a real date") from None


def parse_date_pair(text: str) -> tuple[date, date]:
    match = PAIR_RE.fullmatch(text)
    if not match:
        raise ValueError(f"date pair {text!r} is not of the form YYYYMMDD_YYYYMMDD")
    primary, secondary = _parse_day(match.group(1)), _parse_day(match.group(2))
    if primary >= secondary:
        raise ValueError(f"primary date {primary} is not before secondary date {secondary}")
    return primary, secondary


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies under ``root`` (also resolved); a symlink
    loop on the way is an ``InputError``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    except (RuntimeError, OSError):  # RuntimeError up to Python 3.12, OSError (ELOOP) after
        raise InputError(path, "symlink loop; refused") from None
    return True


def interferogram_from_path(path: Path, drop_dir: Path) -> Interferogram:
    """Parse a ``.geo.diff.png`` path under ``drop_dir``; ``InputError`` says why it does not fit."""
    path = Path(path)
    if not path.name.endswith(DIFF_SUFFIX):
        raise InputError(path, f"not an interferogram product (expected a name ending {DIFF_SUFFIX})")
    if not is_inside(path, drop_dir):
        raise InputError(path, "symlink leads outside the drop directory; refused")
    try:
        relative = path.relative_to(drop_dir)
    except ValueError:
        raise InputError(path, f"not under the drop directory {drop_dir}") from None
    if not all(part.isprintable() for part in relative.parts):
        # A newline in a name would end a log line early and begin a forged one.
        raise InputError(path, "name contains a control character; refused")
    parts = relative.parts
    if len(parts) == 4 and parts[1] == INTERFEROGRAMS_DIR:
        frame_text, _, pair_dir, name = parts
    elif len(parts) == 3:  # the archive layout: pair folders directly in the frame folder
        frame_text, pair_dir, name = parts
    else:
        raise InputError(path, "not laid out as <FRAME>/interferograms/<D1>_<D2>/<D1>_<D2>.geo.diff.png "
                               "(or the archive's <FRAME>/<D1>_<D2>/<D1>_<D2>.geo.diff.png)")
    stem = name[: -len(DIFF_SUFFIX)]
    if stem != pair_dir:
        raise InputError(path, f"file name {stem!r} does not match its directory {pair_dir!r}")
    try:
        frame = parse_frame_id(frame_text)
        primary, secondary = parse_date_pair(pair_dir)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    siblings = tuple(sibling for sibling in sibling_paths(path) if is_inside(sibling, drop_dir))
    coherence = next((s for s in siblings if s.name.endswith(COHERENCE_PNG)), None)
    return Interferogram(frame, primary, secondary, path, coherence, siblings)


def _walk(root: Path) -> Iterator[tuple[Path, list[str], Unrecognised | None]]:
    """``os.walk`` that follows symlinked directories only while they stay inside ``root``.

    A directory whose real path is one of its own ancestors' (a symlink loop) is not
    entered again; two symlinks to the same directory are both walked, and ``discover``
    keeps one result per real file.
    """
    root_path = Path(root)
    for current, dirs, files in os.walk(root, followlinks=True):
        current_path = Path(current)
        if not is_inside(current_path, root_path):
            dirs[:] = []
            yield current_path, [], Unrecognised(current_path, "symlink leads outside the drop directory; refused")
            continue
        ancestors = current_path.relative_to(root_path).parents
        if os.path.realpath(current) in {os.path.realpath(root_path / ancestor) for ancestor in ancestors}:
            dirs[:] = []
            continue
        dirs.sort()
        yield current_path, sorted(files), None


def _classify(path: Path, drop_dir: Path) -> Interferogram | Unrecognised | None:
    name = path.name
    if name.endswith(DIFF_SUFFIX):
        try:
            return interferogram_from_path(path, drop_dir)
        except InputError as exc:
            return Unrecognised(path, exc.reason)
    if name.endswith(".png") and not name.endswith(SIBLING_SUFFIXES):
        return Unrecognised(path, "PNG that is not a LiCSAR product (expected *.geo.diff.png)")
    return None


def discover(drop_dir: Path) -> Iterator[Interferogram | Unrecognised]:
    """Every interferogram under ``drop_dir`` and every product-like file that does not fit.

    A file reachable by several paths (through symlinked directories) is reported once:
    through the first path that fits the layout, else as the first path that does not.
    Which directory the walk reaches first must not decide whether a product is found.
    """
    drop_dir = Path(drop_dir)
    by_file: dict[str, list[Interferogram | Unrecognised]] = {}
    for current, files, refused in _walk(drop_dir):
        if refused is not None:
            yield refused
            continue
        for name in files:
            result = _classify(current / name, drop_dir)
            if result is not None:
                by_file.setdefault(os.path.realpath(current / name), []).append(result)
    for results in by_file.values():
        fitting = [result for result in results if isinstance(result, Interferogram)]
        yield (fitting or results)[0]
