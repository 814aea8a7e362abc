"""The alert's map: the frame's footprint, its flagged tiles and the volcanoes near them.

An observatory's alert host usually reaches no tile server, so the map is drawn from what
the alert itself holds: the frame's WGS84 extent (from its GeoTIFF siblings), each
contributing tile's bounds coloured by level and numbered as on the thumbnail, and the
catalogue volcanoes inside the frame as labelled triangles, on longitude/latitude axes
whose aspect is true at the frame's latitude, with a 10 km scale bar. matplotlib draws it
off-screen (Agg) into a PNG; an alert without a georeference has no map.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

KM_PER_DEGREE = 111.195  # great-circle km per degree of latitude (R = 6371.0088 km)
SIZE_INCHES = 5.0
DPI = 100


def footprint_map(document: Mapping[str, Any], colours: Mapping[str, tuple[int, int, int]]) -> bytes | None:
    """A PNG map of an alert document (``reports.alert_document``), tiles in the report's level
    ``colours`` (RGB 0-255), or None without a footprint."""
    footprint = document.get("footprint")
    if not footprint:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    west, south, east, north = footprint
    figure = Figure(figsize=(SIZE_INCHES, SIZE_INCHES), dpi=DPI)
    axes = figure.add_subplot()
    axes.add_patch(Rectangle((west, south), east - west, north - south, facecolor="#eef2f6",
                             edgecolor="#5a6b7b", linewidth=1.2, label="frame extent"))
    for tile in document.get("tiles", ()):
        bounds = tile.get("bounds")
        if not bounds:
            continue
        colour = tuple(channel / 255 for channel in colours[tile["level"]])
        t_west, t_south, t_east, t_north = bounds
        # Translucent fill, opaque outline: matplotlib's alpha= would fade the outline too.
        axes.add_patch(Rectangle((t_west, t_south), t_east - t_west, t_north - t_south, facecolor=(*colour, 0.35),
                                 edgecolor=colour, linewidth=1.5))
        axes.annotate(f"#{tile['tile_index']}", ((t_west + t_east) / 2, (t_south + t_north) / 2),
                      ha="center", va="center", fontsize=8, color="black")
    for landmark in document.get("landmarks", ()):
        axes.plot(landmark["longitude"], landmark["latitude"], marker="^", color="black", markersize=8)
        axes.annotate(landmark["name"], (landmark["longitude"], landmark["latitude"]), xytext=(4, 4),
                      textcoords="offset points", fontsize=8)
    margin = 0.04 * max(east - west, north - south)
    axes.set_xlim(west - margin, east + margin)
    axes.set_ylim(south - margin, north + margin)
    # One km east is as long on the page as one km north at the frame's latitude.
    axes.set_aspect(1 / max(math.cos(math.radians((south + north) / 2)), 0.05))
    axes.set_xlabel("longitude (°E)")
    axes.set_ylabel("latitude (°N)")
    axes.ticklabel_format(useOffset=False)
    axes.grid(color="#d0d7de", linewidth=0.5)
    _scale_bar(axes, west, south, east, north)
    axes.set_title(f"{document.get('frame', '')} footprint (WGS84)", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _scale_bar(axes: Any, west: float, south: float, east: float, north: float) -> None:
    """10 km along the bottom-left of the frame (longitude degrees shrink with latitude)."""
    latitude = south + 0.06 * (north - south)
    degrees = 10 / (KM_PER_DEGREE * max(math.cos(math.radians(latitude)), 0.05))
    start = west + 0.05 * (east - west)
    axes.plot([start, start + degrees], [latitude, latitude], color="black", linewidth=3)
    axes.annotate("10 km", (start + degrees / 2, latitude), xytext=(0, 4), textcoords="offset points",
                  ha="center", fontsize=8)
