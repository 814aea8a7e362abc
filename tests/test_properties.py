"""Property-based tests (hypothesis): whatever arrives, only the project's one-line errors come out.

Four doors let outside data in: PNG bytes (``imaging`` through ``reading.read_rgb``), names
in the drop (``licsar``), caption text (``findings``) and settings (``config``, from TOML
and the environment). Each property feeds one door arbitrary input and allows exactly the
documented outcomes: a record, or ``InputError`` (for a name, ``Unrecognised``). Examples
are few and the deadline off, so the module runs in seconds in CI; raise
``HYPOTHESIS_PROFILE=long`` for a longer hunt.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from helpers import fringes, save_p
from hypothesis import HealthCheck, given, settings, strategies as st

from insarwatch import licsar
from insarwatch.config import RENAMED, Settings, load_settings
from insarwatch.errors import InputError
from insarwatch.findings import Finding, parse_caption
from insarwatch.imaging import PNG_SIGNATURE
from insarwatch.pipeline import Rejected, Tiled, read_interferogram
from insarwatch.reading import read_rgb
from insarwatch.store import InterferogramRecord

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FRAME = "124D_04854_171313"
PAIR = "20230105_20230117"
NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)
# Small, so a mutated header cannot make a test allocate a giant image.
IMAGING = Settings().imaging.model_copy(update={"max_pixels": 64 * 64, "min_side": 1, "tile_size": 8,
                                               "tile_stride": 8})


# --------------------------------------------------------------------------- PNG bytes


def _seed_png() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return save_p(Path(folder) / "seed.png", fringes(12, 16)).read_bytes()


SEED_PNG = _seed_png()


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return chunks


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Chunks with correct lengths and CRCs, so a mutation reaches Pillow's decoder."""
    return PNG_SIGNATURE + b"".join(struct.pack(">I", len(data)) + kind + data +
                                    struct.pack(">I", zlib.crc32(kind + data)) for kind, data in chunks)


@st.composite
def damaged_pngs(draw: st.DrawFn) -> bytes:
    """The seed PNG with one chunk's data edited (CRC fixed up), or its bytes edited raw."""
    chunks = _chunks(SEED_PNG)
    if draw(st.booleans()):
        index = draw(st.integers(0, len(chunks) - 1))
        kind, data = chunks[index]
        if kind == b"IDAT" and draw(st.booleans()):  # a valid stream of other pixels
            data = zlib.compress(draw(st.binary(max_size=400)))
        else:
            data = bytearray(data)
            for _ in range(draw(st.integers(1, 4))):
                if data:
                    data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            data = bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)
        chunks[index] = (kind, data)
        return _png(chunks)
    raw = bytearray(SEED_PNG)
    for _ in range(draw(st.integers(1, 6))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw[: draw(st.integers(0, len(raw)))]) + draw(st.binary(max_size=20))


def _read(data: bytes) -> None:
    """The daemon's whole reading step on ``data`` as a frame in the drop: tiles or a rejection."""
    with tempfile.TemporaryDirectory() as folder:
        drop = Path(folder) / "drop"
        path = licsar.product_path(drop, FRAME, PAIR)
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        record = InterferogramRecord(key=f"{FRAME}/{PAIR}", path=str(path), frame=FRAME, primary=None,
                                     secondary=None, state="processing", attempts=1, received_at=NOW,
                                     updated_at=NOW)
        read = read_interferogram(record, Settings(var_dir=Path(folder) / "var", drop_dir=drop, imaging=IMAGING))
        if isinstance(read, Rejected):
            assert read.detail.startswith(f"{path}: ") and "\n" not in read.detail
        else:
            assert isinstance(read, Tiled) and read.tiles
            assert all(piece.pixels.dtype == np.uint8 and piece.pixels.shape[2] == 3 for piece in read.tiles)


@given(st.one_of(st.binary(max_size=200), st.binary(max_size=40).map(lambda tail: PNG_SIGNATURE + tail)))
def test_arbitrary_bytes_are_a_frame_or_one_line_error(data: bytes) -> None:
    _read(data)


@given(damaged_pngs())
def test_damaged_pngs_are_a_frame_or_one_line_error(data: bytes) -> None:
    _read(data)


def test_the_seed_png_reads() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.png"
        path.write_bytes(SEED_PNG)
        assert read_rgb(path, IMAGING)[1].shape == (12, 16, 3)


# --------------------------------------------------------------------------- names


# Characters that have fooled name patterns: line ends, escapes, look-alike digits.
NASTY = st.sampled_from(["\n", "\r", "\t", "\x1b", "\x85", "\u2028", "٣", "３", "߃", " ", ".", "_", "/"])


def _near(valid: str) -> st.SearchStrategy[str]:
    """Names like ``valid``: itself, with a character or two replaced or inserted (often one
    of ``NASTY``), or anything at all."""
    edit = st.text(alphabet=st.one_of(NASTY, st.characters()), min_size=1, max_size=2)
    return st.one_of(
        st.just(valid),
        st.tuples(st.integers(0, len(valid)), edit, st.booleans()).map(
            lambda change: valid[:change[0]] + change[1] + valid[change[0] + change[2]:]),
        st.text(max_size=24),
    )


components = st.one_of(_near(FRAME), _near(PAIR)).filter(lambda name: "\x00" not in name)


@given(frame=_near(FRAME), pair=_near(PAIR), name=_near(f"{PAIR}.geo.diff.png"))
def test_any_path_is_an_interferogram_or_a_reason(frame: str, pair: str, name: str) -> None:
    drop = Path("/srv/licsar")
    path = Path(str(drop), frame.replace("\x00", ""), "interferograms", pair.replace("\x00", ""),
                name.replace("\x00", ""))
    try:
        found = licsar.interferogram_from_path(path, drop)
    except InputError as exc:
        assert exc.path.isprintable() and "\n" not in str(exc)
        return
    # Only plain ASCII names get a key: no look-alike digits, no newline, nothing after.
    assert found.key.isascii() and found.key.isprintable() and found.key == f"{frame}/{pair}"
    assert licsar.product_path(drop, str(found.frame), found.pair) == path


@given(st.lists(st.tuples(components, components), min_size=1, max_size=3))
def test_discover_in_a_real_tree_finds_or_says_why(names: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        drop = Path(folder)
        made = 0
        for frame, pair in names:
            try:
                path = drop / frame / "interferograms" / pair / f"{pair}.geo.diff.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"png")
                made += 1
            except (OSError, ValueError):  # not a name this file system takes ('.', '..', '/', too long)
                continue
        for item in licsar.discover(drop):
            if isinstance(item, licsar.Unrecognised):
                assert item.reason.isprintable()
            else:
                assert item.key.isascii() and item.key.isprintable()


@given(st.text(max_size=40))
def test_frame_ids_and_pairs_parse_or_raise_value_error(text: str) -> None:
    for parse in (licsar.parse_frame_id, licsar.parse_date_pair):
        try:
            parse(text)
        except ValueError:
            continue
        assert text.isascii() and text.isprintable()


# --------------------------------------------------------------------------- captions

caption_words = st.sampled_from(
    "a mogi dyke sill spheroid - type deformation pattern of low medium high intensity can be detected on the "
    "top bottom left right side center of image no turbulent atmospheric stratification wave low coherence "
    "processing error unwrapping . , and two".split())


@given(st.one_of(st.text(max_size=300), st.lists(caption_words, max_size=40).map(" ".join)))
def test_any_caption_text_is_a_finding(text: str) -> None:
    finding = parse_caption(text)
    assert isinstance(finding, Finding)
    assert finding.deformation == bool(finding.patterns)
    assert finding.recognized or not finding.deformation  # text that is not a description never alerts
    json.dumps(finding.to_dict())


# --------------------------------------------------------------------------- settings

SECTIONS = {name: list(field.annotation.model_fields) for name, field in Settings.model_fields.items()
            if hasattr(field.annotation, "model_fields")}
KNOWN_KEYS = [f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys] + list(RENAMED)

scalars = st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.sampled_from(["07:00", "25:99", "7:00", "07:00\n", "auto", "", " ",
                                                           "/tmp/x", "cpu"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.sampled_from(KNOWN_KEYS).map(lambda key: key + ".x"),
                 st.sampled_from(["var_dir", "drop_dir", "volcanoes"]), st.text(max_size=10))


def _toml(value: object) -> str:
    """TOML for JSON-like values: JSON's strings, numbers and booleans are TOML's too."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value)


def _load(config: Path, environ: dict[str, str]) -> Settings | str:
    """The settings, or the one-line error instead."""
    try:
        return load_settings(config, environ=environ)
    except InputError as exc:
        return str(exc)


def _nest(dotted: str, value: object) -> dict[str, object]:
    *tables, last = dotted.split(".") if dotted.count(".") == 1 else [dotted]
    return {tables[0]: {last: value}} if tables else {last: value}


@given(file=st.lists(st.tuples(keys, values), max_size=4), env=st.lists(st.tuples(keys, values), max_size=3),
       other=st.dictionaries(st.one_of(st.just("SMTP_PASSWORD"), st.text(min_size=1, max_size=12)).map(
           lambda name: "INSARWATCH_" + name.upper()).filter(
           lambda name: "__" not in name and name[11:] not in ("VAR_DIR", "DROP_DIR", "CONFIG")),
           st.text(max_size=12), max_size=2))
def test_any_settings_are_settings_or_one_line_naming_the_source(
        file: list[tuple[str, object]], env: list[tuple[str, object]], other: dict[str, str]) -> None:
    document: dict[str, object] = {}
    for dotted, value in file:
        for name, table in _nest(dotted, value).items():
            existing = document.get(name)
            document[name] = {**existing, **table} if isinstance(existing, dict) and isinstance(table, dict) else table
    text = "\n".join(f"{json.dumps(name)} = {_toml(value)}" for name, value in document.items())
    environ = {"INSARWATCH_" + dotted.upper().replace(".", "__"): json.dumps(value) for dotted, value in env}
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "insarwatch.toml"
        config.write_text(text, encoding="utf-8")
        outcome = _load(config, environ)
        # Variables of neither settings form (a password named by password_env) change nothing.
        assert _load(config, {**other, **environ}) == outcome
        if isinstance(outcome, str):
            assert "\n" not in outcome and outcome.startswith((str(config), "environment"))
            return
        loaded = outcome
        assert str(loaded.var_dir).strip() and str(loaded.drop_dir).strip()
        assert 0 <= loaded.digest.hour_minute[0] < 24 and 0 <= loaded.digest.hour_minute[1] < 60
        assert type(loaded.batch.tiles) is int and loaded.batch.tiles >= 1


def test_the_settings_strategy_reaches_every_section() -> None:
    assert {"imaging", "captioning", "watch", "batch", "digest", "notify"} <= set(SECTIONS)
