"""GeoJSON (RFC 7946): an alert's flagged tiles as polygons a GIS opens.

This module owns the GeoJSON an alert directory gains beside the alert JSON: a
FeatureCollection with one Polygon per flagged tile that has geographic bounds, carrying the
tile's level, severity, caption, finding, nearest volcano and its distance. It is built from
the alert's JSON document (what reports write), so the two cannot disagree. Coordinates are
``[longitude, latitude]`` WGS84 degrees (RFC 7946 §3.1.1), rings are closed and run
counter-clockwise (§3.1.6), rounded to 7 decimals (1 cm; §11.2 warns against more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DECIMALS = 7


def bounds_polygon(bounds: Sequence[float]) -> dict[str, Any]:
    """A closed counter-clockwise Polygon around ``[west, south, east, north]``."""
    west, south, east, north = (round(float(side), DECIMALS) for side in bounds)
    if not (west < east and south < north):
        raise ValueError(f"bounds {list(bounds)} are not [west, south, east, north] with west < east, south < north")
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def alert_features(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The FeatureCollection of an alert document's tiles that carry ``bounds``.

    Tiles without a georeference (a PNG with no GeoTIFF or frame metadata) have no place on
    a map and are left out; the collection is then empty, which is still valid GeoJSON.
    """
    times = alert.get("times", {})
    features = []
    for tile in alert.get("tiles", ()):
        if tile.get("bounds") is None:
            continue
        volcano = tile.get("volcano") or {}
        features.append({
            "type": "Feature",
            "id": tile["tile_index"],
            "geometry": bounds_polygon(tile["bounds"]),
            "properties": {
                "tile_index": tile["tile_index"],
                "level": tile["level"],
                "severity": tile.get("severity"),
                "caption": tile["caption"],
                "finding": tile["finding"],
                "volcano": volcano.get("name"),
                "distance_km": volcano.get("distance_km"),
            },
        })
    return {
        "type": "FeatureCollection",
        # A foreign member (RFC 7946 §6.1): which alert these tiles belong to.
        "alert": {"key": alert.get("key"), "frame": alert.get("frame"), "level": alert.get("level"),
                  "volcano": alert.get("volcano"), "primary": times.get("primary"),
                  "secondary": times.get("secondary")},
        "features": features,
    }
