"""Alert reports and digests: what a volcanologist reads, as self-contained HTML and as JSON.

An alert report shows one interferogram's decision with everything behind it — the frame
thumbnail with the flagged tiles outlined, each flagged tile at full size, captions,
parsed findings, retrieved neighbours, the decision's reasons, the quality checks, the
model version and the times — as an HTML page whose images are inlined (it opens from an
e-mail attachment or a file share with no server) and as JSON with a ``schema_version``.
A digest counts, per frame and volcano over a period, what arrived, was rejected (by
reason), was processed and raised a review or an alert, with links to the alert pages.
Building and rendering are pure functions returning records and strings; only
``load_frame_image`` and ``write_report`` touch the disk. Templates live in
``insarwatch/templates/`` and are rendered with autoescaping on, so caption text can
never become markup.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from PIL import Image, ImageDraw, ImageFont

from . import files
from .config import Settings
from .errors import InputError, InsarwatchError
from .geojson import alert_features
from .licsar import temporal_baseline_days
from .maps import DPI, SIZE_INCHES, footprint_map

if TYPE_CHECKING:
    from .alerts import Alert
    from .store import AlertRecord, FrameActivity, Store

SCHEMA_VERSION = 1
THUMBNAIL_MAX_SIDE = 900
LEVEL_COLOURS = {"alert": (220, 20, 60), "review": (255, 165, 0), "quiet": (120, 120, 120)}
FLAGGED_LEVELS = ("alert", "review")


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value) or "—"
    if isinstance(value, Mapping):
        return "; ".join(f"{key}: {_format_value(item)}" for key, item in value.items()) or "—"
    return "—" if value is None else str(value)


def _format_when(value: str | None) -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(value)
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


# Autoescaping is on for every template: captions are model output and must never become markup.
_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("insarwatch", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(fmt=_format_value, when=_format_when,
                            yesno=lambda value: "yes" if value else "no")


@dataclass(frozen=True)
class Figure:
    """One image shown in a report; ``name`` is stable so an e-mail can refer to it by Content-ID."""

    name: str
    alt: str
    data: bytes
    subtype: str  # image/<subtype>: "png" or "jpeg"
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        return f"data:image/{self.subtype};base64," + base64.b64encode(self.data).decode("ascii")

    @property
    def content_id(self) -> str:
        return f"{self.name}@insarwatch"


@dataclass(frozen=True)
class Report:
    """A report: its JSON ``document`` and images. Everything else renders from these, so the
    outbox stores only them and a delivery renders the page when it is sent."""

    kind: str  # "alert" | "digest"
    name: str  # file stem, safe on every file system
    document: dict[str, Any]
    figures: tuple[Figure, ...] = ()
    image_problem: str | None = None  # why an alert's interferogram could not be shown

    @property
    def html(self) -> str:
        """Self-contained: images as data URIs."""
        return _render(self, inline=True)

    @property
    def email_html(self) -> str:
        """Images by Content-ID, because many mail clients refuse data-URI images."""
        return _render(self, inline=False)

    @property
    def subject(self) -> str:
        return alert_subject(self.document) if self.kind == "alert" else digest_subject(self.document)

    @property
    def summary(self) -> str:
        return alert_summary(self.document) if self.kind == "alert" else digest_summary(self.document)


# --------------------------------------------------------------------------- helpers


def safe_name(key: str) -> str:
    """A file stem for ``key``: readable, and distinct for distinct keys (a hash is added
    whenever characters had to be replaced, so ``a/b`` and ``a_b`` never share a file)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "report"
    if cleaned != key:
        cleaned = f"{cleaned[:150]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return cleaned


def jsonable(value: Any) -> Any:
    """Plain JSON types for records, dates, paths and numpy scalars/arrays."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    return str(value)


def _encode(image: Image.Image, subtype: str) -> bytes:
    buffer = io.BytesIO()
    if subtype == "jpeg":
        image.save(buffer, format="JPEG", quality=80)
    else:  # zlib's default level: optimize=True (level 9) made a noisy tile larger (46 KiB against 37) and took twice as long
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _flagged(alert: Alert) -> list[Any]:
    return [tile for tile in alert.decision.tiles if tile.level in FLAGGED_LEVELS]


# --------------------------------------------------------------------------- alert report


def alert_document(alert: Alert) -> dict[str, Any]:
    """The alert as JSON-ready data: the report's content without the images."""
    decision = alert.decision
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "alert",
        "key": alert.key,
        "frame": str(alert.frame),
        "volcano": alert.volcano,
        "volcanoes": list(alert.volcanoes),
        "level": decision.level,
        "severity": decision.severity,
        # Which frame rule decided (cluster, strong isolated tile...) with its numbers: alerts.decide_interferogram.
        "reasons": jsonable(decision.reasons),
        "model_version": alert.model_version,
        "times": {
            "primary": jsonable(alert.primary),
            "secondary": jsonable(alert.secondary),
            "temporal_baseline_days": temporal_baseline_days(alert.primary, alert.secondary),
            "received_at": jsonable(alert.received_at),
            "processed_at": jsonable(alert.processed_at),
        },
        "diff_png": str(alert.diff_png),
        "footprint": list(alert.footprint) if alert.footprint else None,
        "landmarks": [{"name": name, "latitude": latitude, "longitude": longitude}
                      for name, latitude, longitude in alert.landmarks],
        # TileDecision.to_dict and QualityCheck.to_dict are the JSON contracts of alerts/imaging.
        "tiles": [jsonable(tile) for tile in decision.tiles],
        "quality": [jsonable(check) for check in alert.quality],
    }


def alert_figures(alert: Alert, frame: Image.Image, max_side: int = THUMBNAIL_MAX_SIDE) -> tuple[Figure, ...]:
    """The frame thumbnail with flagged tiles outlined and numbered, then each flagged tile
    cropped at full resolution from the original frame."""
    rgb = frame.convert("RGB")
    scale = min(1.0, max_side / max(rgb.size))
    thumbnail = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                           Image.Resampling.LANCZOS) if scale < 1 else rgb.copy()
    draw = ImageDraw.Draw(thumbnail)
    flagged = _flagged(alert)
    line = max(2, round(min(thumbnail.size) / 150))
    font = ImageFont.load_default(size=max(12, line * 6))
    for tile in flagged:
        left, top, right, bottom = (round(coordinate * scale) for coordinate in tile.box)
        colour = LEVEL_COLOURS[tile.level]
        draw.rectangle((left, top, right - 1, bottom - 1), outline=colour, width=line)
        label = f"#{tile.tile_index}"
        origin = (left + line + 2, top + line + 1)
        draw.rectangle(draw.textbbox(origin, label, font=font), fill=(255, 255, 255))
        draw.text(origin, label, fill=colour, font=font)
    # The thumbnail is a JPEG because decorrelated (noisy) phase barely compresses as PNG and
    # the page travels by e-mail; the tiles stay lossless PNG for the pixels a volcanologist reads.
    figures = [Figure("thumbnail", f"Frame {alert.frame} with flagged tiles outlined",
                      _encode(thumbnail, "jpeg"), "jpeg", thumbnail.width, thumbnail.height)]
    for tile in flagged:
        crop = rgb.crop(tuple(tile.box))
        figures.append(Figure(f"tile-{tile.tile_index}", f"Tile #{tile.tile_index} at full size",
                              _encode(crop, "png"), "png", crop.width, crop.height))
    return tuple(figures)


def _link(base_url: str | None, relative: str) -> str:
    return f"{base_url.rstrip('/')}/{relative}" if base_url else relative


def alert_subject(document: Mapping[str, Any]) -> str:
    volcano = f" {document['volcano']}" if document.get("volcano") else ""
    severity = f" ({document['severity']})" if document.get("severity") else ""
    times = document["times"]
    return (f"[insarwatch] {document['level'].upper()}{severity}{volcano} {document['frame']} "
            f"{times['primary']}→{times['secondary']}")


def alert_summary(document: Mapping[str, Any]) -> str:
    """One paragraph for chat tools and plain-text mail: what, where, when and the first caption."""
    flagged = [tile for tile in document["tiles"] if tile["level"] in FLAGGED_LEVELS]
    first = flagged[0]["caption"] if flagged else ""
    text = (f"{alert_subject(document).removeprefix('[insarwatch] ')}: {len(flagged)} flagged tile(s), "
            f"model {document['model_version']}. {first}")
    link = document["report"]["url"]
    return f"{text} {link}".strip() if link else text.strip()


def build_alert_report(alert: Alert, frame: Image.Image | None, *, image_problem: str | None = None,
                       base_url: str | None = None) -> Report:
    """The report of an alert; ``frame`` is the interferogram (``None`` when it could not be
    read, with ``image_problem`` saying why — the page then has no pictures)."""
    document = alert_document(alert)
    name = safe_name(alert.key)
    link = _link(base_url, f"alerts/{name}.html") if base_url else None
    document["report"] = {"html": f"alerts/{name}.html", "url": link}
    figures = alert_figures(alert, frame) if frame is not None else ()
    drawn = footprint_map(document, LEVEL_COLOURS)
    if drawn is not None:
        side = round(SIZE_INCHES * DPI)
        figures += (Figure("map", f"Map of frame {alert.frame} with its flagged tiles and nearby volcanoes",
                           drawn, "png", side, side),)
    return Report("alert", name, document, figures, image_problem)


def _render(report: Report, inline: bool) -> str:
    document = report.document
    if report.kind == "digest":
        return _environment.get_template("digest.html.j2").render(doc=document, counts=COUNTS)
    return _environment.get_template("alert.html.j2").render(
        doc=document,
        flagged=[tile for tile in document["tiles"] if tile["level"] in FLAGGED_LEVELS],
        image_problem=report.image_problem,
        colours={level: "rgb({},{},{})".format(*colour) for level, colour in LEVEL_COLOURS.items()},
        images={figure.name: figure for figure in report.figures},
        inline=inline,
    )


# --------------------------------------------------------------------------- digest


@dataclass(frozen=True)
class AlertLink:
    key: str
    level: str
    severity: str | None
    pair: str
    href: str


@dataclass(frozen=True)
class FrameSummary:
    """One frame's activity over the digest period."""

    frame: str
    volcano: str | None
    arrived: int
    processed: int
    rejected: dict[str, int]
    quarantined: int
    review: int
    alert: int
    alerts: tuple[AlertLink, ...]


@dataclass(frozen=True)
class Digest:
    since: datetime
    until: datetime
    frames: tuple[FrameSummary, ...]

    @property
    def key(self) -> str:
        return f"digest/{self.since:%Y%m%dT%H%M}_{self.until:%Y%m%dT%H%M}"


COUNTS = ("arrived", "processed", "rejected", "quarantined", "review", "alert")
UNKNOWN_FRAME = "(not a LiCSAR product)"


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, datetime.min.time())
    else:
        moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _alert_link(alert: AlertRecord, base_url: str | None) -> AlertLink:
    times = alert.payload.get("document", {}).get("times", {})
    pair = f"{times.get('primary', '?')} → {times.get('secondary', '?')}"
    relative = f"alerts/{safe_name(alert.key)}.html"
    # Digests live in reports/digests/, beside reports/alerts/.
    href = _link(base_url, relative) if base_url else f"../{relative}"
    return AlertLink(alert.key, alert.level, alert.severity, pair, href)


def build_digest(activity: Iterable[FrameActivity], alerts: Iterable[AlertRecord], since: datetime, until: datetime,
                 volcano_for: Callable[[str], str | None], base_url: str | None = None) -> Digest:
    """Assemble the digest from the store's per-frame ``activity`` (``Store.activity``:
    frame, arrived, processed, rejected by reason, quarantined, review, alert, alert_keys)
    and the ``alerts`` raised in the period (``Store.alerts``: key, level, severity, payload)."""
    alerts = list(alerts)
    links: dict[str, AlertLink] = {alert.key: _alert_link(alert, base_url) for alert in alerts}
    # A georeferenced alert names the volcano its flagged tiles are near; the configured
    # [[volcanoes]] frames come first, then that name.
    named = {alert.key: alert.payload.get("document", {}).get("volcano") for alert in alerts}
    frames = []
    for row in activity:
        frame = row.frame or UNKNOWN_FRAME
        frame_links = tuple(links[key] for key in row.alert_keys if key in links)
        near = next((named[key] for key in row.alert_keys if named.get(key)), None)
        frames.append(FrameSummary(
            frame=frame, volcano=(volcano_for(frame) or near) if row.frame else None, arrived=row.arrived,
            processed=row.processed, rejected=dict(sorted(row.rejected.items(), key=lambda item: str(item[0]))),
            quarantined=row.quarantined, review=row.review, alert=row.alert, alerts=frame_links))
    frames.sort(key=lambda summary: (summary.volcano is None, summary.volcano or "", summary.frame))
    return Digest(_as_datetime(since), _as_datetime(until), tuple(frames))


def _totals(frames: Iterable[FrameSummary]) -> dict[str, int]:
    totals = dict.fromkeys(COUNTS, 0)
    for frame in frames:
        for name in COUNTS:
            value = getattr(frame, name)
            totals[name] += sum(value.values()) if isinstance(value, dict) else value
    return totals


def digest_document(digest: Digest, generated_at: datetime) -> dict[str, Any]:
    by_volcano: dict[str, list[FrameSummary]] = defaultdict(list)
    for frame in digest.frames:
        by_volcano[frame.volcano or "—"].append(frame)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "digest",
        "key": digest.key,
        "since": jsonable(digest.since),
        "until": jsonable(digest.until),
        "generated_at": jsonable(generated_at),
        "totals": _totals(digest.frames),
        "volcanoes": [{"volcano": volcano, "totals": _totals(frames), "frames": [jsonable(f) for f in frames]}
                      for volcano, frames in by_volcano.items()],
        "frames": [jsonable(frame) for frame in digest.frames],
    }


def build_digest_report(digest: Digest, generated_at: datetime) -> Report:
    name = safe_name(f"digest-{digest.since:%Y%m%dT%H%M}_{digest.until:%Y%m%dT%H%M}")
    return Report("digest", name, digest_document(digest, generated_at))


def digest_subject(document: Mapping[str, Any]) -> str:
    since, until = (datetime.fromisoformat(document[end]).astimezone(timezone.utc) for end in ("since", "until"))
    totals = document["totals"]
    return (f"[insarwatch] Digest {since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC: "
            f"{totals['alert']} alert(s), {totals['review']} for review")


def digest_summary(document: Mapping[str, Any]) -> str:
    totals = document["totals"]
    return (f"{digest_subject(document).removeprefix('[insarwatch] ')}; {totals['arrived']} interferogram(s) "
            f"arrived, {totals['processed']} processed, {totals['rejected']} rejected.")


def parse_day(text: str) -> datetime:
    """``YYYY-MM-DD`` (or a full ISO timestamp) as an aware UTC datetime."""
    try:
        return _as_datetime(datetime.fromisoformat(text))
    except ValueError:
        raise InputError(text, "not a date (expected YYYY-MM-DD)") from None


def digest_period(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``--since``/``--until`` as a half-open UTC period; a bare ``--until`` day is included whole."""
    start = parse_day(since)
    if until is None:
        end = now
    else:
        end = parse_day(until)
        if len(until) == 10:
            end += timedelta(days=1)
    if end <= start:
        raise InputError(until or now.isoformat(), f"period ends before it starts ({start:%Y-%m-%d})")
    return start, end


# --------------------------------------------------------------------------- edges


def load_frame_image(alert: Alert, max_pixels: int) -> tuple[Image.Image | None, str | None]:
    """The interferogram behind ``alert``, or ``None`` and the reason it cannot be shown
    (the drop may have been cleaned since the frame was processed)."""
    from .imaging import decode_png

    try:
        return decode_png(Path(alert.diff_png), max_pixels), None
    except InputError as exc:
        return None, str(exc)


def digest_from_store(store: Store, since: datetime, until: datetime, settings: Settings) -> Digest:
    """The digest for ``[since, until)`` from the state database."""
    return build_digest(store.activity(since, until), store.alerts(since, until), since, until,
                        settings.volcano_for, settings.notify.report_base_url)


def write_report(report: Report, reports_dir: Path) -> tuple[Path, Path]:
    """Write ``<reports_dir>/<kind>s/<name>.html`` and ``.json`` atomically, and for an alert
    its flagged tiles as ``.geojson`` beside them; returns the HTML and JSON paths."""
    directory = Path(reports_dir) / f"{report.kind}s"
    paths = []
    outputs = [(".html", report.html), (".json", json.dumps(report.document, indent=2, ensure_ascii=False) + "\n")]
    if report.kind == "alert":
        outputs.append((".geojson", json.dumps(alert_features(report.document), ensure_ascii=False) + "\n"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for suffix, text in outputs:
            target = directory / f"{report.name}{suffix}"
            files.write_text(target, text)
            paths.append(target)
    except OSError as exc:
        raise InsarwatchError(f"{directory}: cannot write report: {exc.strerror or exc}") from None
    return paths[0], paths[1]
