"""imaging.py: safe decoding, RGB conversion, pixel quality checks and tiling, on real PNGs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import fringes, palette, phase_indices, save_p, save_rgb
from PIL import Image

from insarwatch import imaging
from insarwatch.config import ImagingSettings, load_settings
from insarwatch.errors import InputError

SETTINGS = ImagingSettings()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- decoding


def test_decode_keeps_mode_and_transparency(tmp_path: Path) -> None:
    path = save_p(tmp_path / "f.png", fringes(40, 60))
    image = imaging.decode_png(path, SETTINGS.max_pixels)
    assert (image.mode, image.size, image.info["transparency"]) == ("P", (60, 40), 0)
    assert imaging.read_png_header(path) == imaging.PngHeader(60, 40, 8, 3)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.zeros((4, 4, 3), np.uint8), "RGB"),
        (np.zeros((4, 4, 4), np.uint8), "RGBA"),
        (np.zeros((4, 4), np.uint8), "L"),
        (np.zeros((4, 4), np.uint16), "I;16"),
        (np.zeros((4, 4, 2), np.uint8), "LA"),
    ],
)
def test_header_mode_matches_what_pillow_decodes(tmp_path: Path, array: np.ndarray, expected: str) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(array))
    assert imaging.read_png_header(path).mode == expected
    assert imaging.decode_png(path, SETTINGS.max_pixels).mode == expected


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png: empty file \(0 bytes\)"):
        imaging.decode_png(path, SETTINGS.max_pixels)


@pytest.mark.parametrize("keep", [20, 40, 0.5, -12])
def test_truncated_png_is_refused(tmp_path: Path, keep: float) -> None:
    data = save_p(tmp_path / "whole.png", fringes(64, 64)).read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.png"
    path.write_bytes(data[:cut])
    with pytest.raises(InputError, match="truncated PNG") as caught:
        imaging.decode_png(path, SETTINGS.max_pixels)
    assert caught.value.path == str(path)


def test_corrupt_pixel_data_is_refused(tmp_path: Path) -> None:
    data = bytearray(save_p(tmp_path / "whole.png", fringes(64, 64)).read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = b"\x00" * 40
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="bad.png: (corrupt|truncated) PNG"):
        imaging.decode_png(path, SETTINGS.max_pixels)


@pytest.mark.parametrize("content", [b"GIF89a not a png at all", b'{"json": true}', b"\xff\xd8\xff\xe0JFIF"])
def test_not_a_png_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a PNG"):
        imaging.decode_png(path, SETTINGS.max_pixels)


def test_huge_image_is_refused_from_the_header_without_decoding(tmp_path: Path) -> None:
    data = bytearray(png_bytes(np.zeros((100, 100, 3), np.uint8)))
    # Garbage pixel data: were the pixels decoded, the error would be "corrupt", not "too large".
    start = data.index(b"IDAT") + 4
    data[start:start + 10] = b"\xde\xad" * 5
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as caught:
        imaging.decode_png(path, max_pixels=9_999)
    assert str(caught.value) == f"{path}: image too large: 100x100 = 10000 pixels > limit 9999"


def test_pillows_bomb_limit_is_kept_when_settings_allow_more() -> None:
    assert imaging.pixel_limit(10**12) == Image.MAX_IMAGE_PIXELS
    assert imaging.pixel_limit(1000) == 1000


def test_unreadable_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.png: cannot be read"):
        imaging.decode_png(tmp_path / "missing.png", SETTINGS.max_pixels)


# --------------------------------------------------------------------------- RGB


def test_palette_converts_to_its_colours(tmp_path: Path) -> None:
    indices = fringes(32, 48)
    image = imaging.decode_png(save_p(tmp_path / "p.png", indices), SETTINGS.max_pixels)
    rgb = imaging.to_rgb(image, "skip", "p.png")
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, palette()[indices])


def test_rgba_is_skipped_by_default_policy(tmp_path: Path) -> None:
    path = save_rgb(tmp_path / "a.png", fringes(16, 16), alpha=np.full((16, 16), 255))
    image = imaging.decode_png(path, SETTINGS.max_pixels)
    with pytest.raises(InputError) as caught:
        imaging.to_rgb(image, SETTINGS.rgba_policy, path)
    assert str(caught.value) == f"{path}: RGBA frame skipped by imaging.rgba_policy=skip"


def test_rgba_convert_composites_transparent_pixels_to_nodata_black(tmp_path: Path) -> None:
    indices = fringes(16, 16)
    alpha = np.full((16, 16), 255)
    alpha[:4] = 0
    image = imaging.decode_png(save_rgb(tmp_path / "a.png", indices, alpha), SETTINGS.max_pixels)
    rgb = imaging.to_rgb(image, "convert", "a.png")
    assert np.array_equal(rgb[4:], palette()[indices][4:])
    assert not rgb[:4].any()


def test_gray_converts_and_sixteen_bit_or_gray_alpha_are_refused(tmp_path: Path) -> None:
    gray = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert np.array_equal(imaging.to_rgb(gray, "skip", "g.png")[..., 1], np.asarray(gray))
    for image in (Image.fromarray(np.zeros((4, 4), np.uint16)), Image.new("LA", (4, 4)),
                  Image.new("CMYK", (4, 4))):
        with pytest.raises(InputError, match=f"x.png: unsupported image mode {image.mode}"):
            imaging.to_rgb(image, "convert", "x.png")


# --------------------------------------------------------------------------- quality


def test_nodata_is_per_tile_a_frame_of_corners_keeps_its_swath_tiles(tmp_path: Path) -> None:
    indices = fringes(200, 100)
    indices[:50] = 0  # a quarter of the frame is transparent
    image = imaging.decode_png(save_p(tmp_path / "p.png", indices), SETTINGS.max_pixels)
    rgb = imaging.to_rgb(image, "skip", "p.png")
    assert imaging.nodata_fraction(image, rgb) == 0.25
    assert [c.name for c in imaging.check_quality(rgb, None, SETTINGS)] == ["colour_bar"]  # no frame-wide no-data check
    valid = ~imaging.nodata_mask(image, rgb)
    tiles = imaging.tile(rgb, 50, 50, valid)
    assert [t.box[1] for t in tiles] == [50, 50, 100, 100, 150, 150]  # rows start where the swath does
    assert all(t.valid_fraction == 1.0 for t in tiles)
    valid[:5, :5] = True  # a speck of phase in the corner pulls the first row of tiles up to row 0
    laid = imaging.tile(rgb, 60, 60, valid)
    usable = imaging.usable_tiles(laid, valid.shape, None, ImagingSettings(nodata_max_fraction=0.5))
    assert usable.skipped == {"nodata": 2, "coherence": 0}  # that row: 625 of 3,600 pixels valid
    assert [t.box[1] for t in usable.tiles] == [60, 60, 120, 120, 140, 140]


def test_tiles_follow_a_rotated_swath_and_skip_what_is_mostly_corner() -> None:
    rows, columns = np.mgrid[0:600, 0:500]
    valid = (np.abs((columns - 250) + 0.3 * (rows - 300)) < 180) & (np.abs(rows - 300 - 0.3 * (columns - 250)) < 260)
    rgb = np.zeros((600, 500, 3), np.uint8)
    swath = imaging.tile(rgb, 100, 100, valid)
    grid = imaging.tile(rgb, 100, 100)
    for piece in swath:
        left, top, right, bottom = piece.box
        assert piece.valid_fraction == pytest.approx(valid[top:bottom, left:right].mean())
    covered = np.zeros_like(valid)
    for piece in swath:
        left, top, right, bottom = piece.box
        covered[top:bottom, left:right] = True
    assert covered[valid].all()
    grid_fractions = [valid[t:b, l:r].mean() for l, t, r, b in (piece.box for piece in grid)]
    assert len(swath) < len(grid)
    assert np.mean([t.valid_fraction for t in swath]) > np.mean(grid_fractions) + 0.1
    usable = imaging.usable_tiles(swath, valid.shape, None, ImagingSettings(nodata_max_fraction=0.5))
    assert len(usable.tiles) > sum(fraction >= 0.5 for fraction in grid_fractions)


def test_a_decorrelated_valley_skips_its_tiles_not_the_frame() -> None:
    coherence = np.full((200, 200), 0.7, np.float32)
    coherence[:, 100:] = 0.1
    tiles = imaging.tile(np.zeros((60, 60, 3), np.uint8), 30, 30)  # the PNG at 30% of the coherence grid
    usable = imaging.usable_tiles(tiles, (60, 60), coherence, SETTINGS)
    assert [t.box[0] for t in usable.tiles] == [0, 0] and usable.skipped == {"nodata": 0, "coherence": 2}
    assert imaging.check_quality(np.zeros((60, 60, 3), np.uint8), coherence, SETTINGS)[0].passed  # mean 0.4


def test_nodata_fraction_with_a_per_index_alpha_table_or_no_transparency(tmp_path: Path) -> None:
    indices = fringes(10, 10)
    indices[:, :2] = 5  # an index the alpha table makes fully transparent
    indices[:, 9] = 0  # black palette entry, opaque in the table, still no-data by colour
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette().ravel().tolist())
    image.save(tmp_path / "t.png", transparency=bytes([255] * 5 + [0, 128] + [255] * 249))
    decoded = imaging.decode_png(tmp_path / "t.png", SETTINGS.max_pixels)
    assert isinstance(decoded.info["transparency"], bytes)
    assert imaging.nodata_fraction(decoded, imaging.to_rgb(decoded, "skip", "t.png")) == pytest.approx(0.3)
    image.save(tmp_path / "plain.png")
    plain = imaging.decode_png(tmp_path / "plain.png", SETTINGS.max_pixels)
    assert "transparency" not in plain.info
    assert imaging.nodata_fraction(plain, imaging.to_rgb(plain, "skip", "plain.png")) == pytest.approx(0.1)


def test_nodata_fraction_from_alpha_and_from_black(tmp_path: Path) -> None:
    indices = fringes(10, 10)
    alpha = np.full((10, 10), 255)
    alpha[:, :3] = 0
    rgba = imaging.decode_png(save_rgb(tmp_path / "a.png", indices, alpha), SETTINGS.max_pixels)
    assert imaging.nodata_fraction(rgba, imaging.to_rgb(rgba, "convert", "a.png")) == pytest.approx(0.3)
    rgb = palette()[indices]
    rgb[7:] = 0
    assert imaging.nodata_fraction(Image.fromarray(rgb), rgb) == pytest.approx(0.3)


def _coherence_png(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def test_mean_coherence_over_valid_pixels_from_sibling(tmp_path: Path) -> None:
    values = np.zeros((20, 20))
    values[:, 10:] = 51  # coherence 0.2 on the valid half; the zero half is no data
    values[:, 15:] = 153  # 0.6
    sibling = _coherence_png(tmp_path / "x.geo.cc.png", values)
    rgb = palette()[fringes(20, 20)]
    coherence = imaging.coherence_png(sibling, SETTINGS.max_pixels)
    checks = {c.name: c for c in imaging.check_quality(rgb, coherence, SETTINGS)}
    assert checks["mean_coherence"].value == pytest.approx(0.4)
    assert checks["mean_coherence"].passed and checks["mean_coherence"].threshold == 0.25
    strict = ImagingSettings(coherence_min=0.5)
    check = imaging.check_quality(rgb, coherence, strict)[0]
    assert check == imaging.QualityCheck("mean_coherence", pytest.approx(0.4), 0.5, False)


def test_no_sibling_means_no_coherence_check(tmp_path: Path) -> None:
    rgb = palette()[fringes(20, 20)]
    names = [c.name for c in imaging.check_quality(rgb, None, SETTINGS)]
    assert names == ["colour_bar"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG"),
        ("rgb", "coherence PNG is mode RGB, expected 8-bit grayscale (L)"),
        ("zeros", "coherence PNG has no valid (nonzero) pixels"),
    ],
)
def test_unreadable_coherence_sibling_fails_the_check_with_a_reason(tmp_path: Path, content: object,
                                                                     reason: str) -> None:
    sibling = tmp_path / "x.geo.cc.png"
    if content == "rgb":
        sibling.write_bytes(png_bytes(np.full((4, 4, 3), 100, np.uint8)))
    elif content == "zeros":
        _coherence_png(sibling, np.zeros((4, 4)))
    else:
        sibling.write_bytes(content)  # type: ignore[arg-type]
    rgb = palette()[fringes(20, 20)]
    with pytest.raises(InputError) as caught:
        imaging.coherence_png(sibling, SETTINGS.max_pixels)
    check = imaging.check_quality(rgb, caught.value, SETTINGS)[0]
    assert (check.name, check.value, check.passed) == ("mean_coherence", None, False)
    assert check.detail.startswith(f"{sibling}: {reason}")


def with_legend(rgb: np.ndarray, edge: str, framed: bool) -> np.ndarray:
    """Draw a legend band (12 px thick, along 60% of ``edge``) sweeping the palette."""
    out = rgb.copy() if edge in ("left", "right") else rgb.transpose(1, 0, 2).copy()
    along = out.shape[0]
    first, last = along // 5, along // 5 + int(0.6 * along)
    sweep = palette()[phase_indices(np.linspace(-np.pi, np.pi, last - first, endpoint=False))]
    band = out if edge in ("left", "top") else out[:, ::-1]
    if framed:
        band[first - 2:last + 2, 0:16] = 255
        band[first:last, 2:14] = sweep[:, None, :]
    else:
        band[first:last, 0:12] = sweep[:, None, :]
    return out if edge in ("left", "right") else out.transpose(1, 0, 2)


@pytest.mark.parametrize("edge", ["left", "right", "top", "bottom"])
@pytest.mark.parametrize("framed", [True, False])
def test_colour_bar_detected_on_every_edge(edge: str, framed: bool) -> None:
    rgb = with_legend(palette()[fringes(224, 300)], edge, framed)
    check = imaging.check_quality(rgb, None, SETTINGS)[-1]
    assert check.name == "colour_bar" and check.value == 1.0 and not check.passed


def _plain_images() -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:224, 0:224]
    rng = np.random.default_rng(3)
    nodata_border = palette()[fringes()]
    nodata_border[:, :30] = 0
    return {
        "fringes": palette()[fringes()],
        "noise": palette()[rng.integers(1, 256, (224, 224))],
        "ramp": palette()[phase_indices(y / 15.0)],
        "tilted ramp": palette()[phase_indices(y / 15.0 + x / 2000.0)],
        "flat": palette()[np.full((224, 224), 40)],
        "no-data border": nodata_border,
        "turbulence": palette()[phase_indices(np.cumsum(np.cumsum(rng.normal(size=(224, 224)), 0), 1) / 300)],
    }


@pytest.mark.parametrize("name", list(_plain_images()))
def test_colour_bar_not_detected_on_plain_interferograms(name: str) -> None:
    rgb = _plain_images()[name]
    assert imaging.colour_bar_score(rgb) < 0.1


def test_short_legend_scores_in_proportion_and_tiny_frames_do_not_crash() -> None:
    rgb = palette()[fringes(224, 224)]
    rgb[100:114, 0:12] = palette()[phase_indices(np.linspace(0, 6, 14))][:, None, :]
    assert 0 < imaging.colour_bar_score(rgb) < SETTINGS.artifact_max_score
    assert imaging.colour_bar_score(palette()[fringes(5, 7)]) == 0.0


# --------------------------------------------------------------------------- tiling


def test_tiles_of_a_500x300_frame_edge_aligned() -> None:
    rgb = np.zeros((300, 500, 3), np.uint8)
    boxes = [t.box for t in imaging.tile(rgb, 224, 224)]
    assert boxes == [(0, 0, 224, 224), (224, 0, 448, 224), (276, 0, 500, 224),
                     (0, 76, 224, 300), (224, 76, 448, 300), (276, 76, 500, 300)]
    strided = [t.box for t in imaging.tile(rgb, 224, 112)]
    assert strided == [(0, 0, 224, 224), (112, 0, 336, 224), (224, 0, 448, 224), (276, 0, 500, 224),
                       (0, 76, 224, 300), (112, 76, 336, 300), (224, 76, 448, 300), (276, 76, 500, 300)]


@pytest.mark.parametrize(("height", "width", "size", "stride"),
                         [(300, 500, 224, 224), (448, 672, 224, 224), (1000, 1200, 224, 160), (225, 223, 224, 1)])
def test_tiles_cover_every_pixel_with_views_of_the_frame(height: int, width: int, size: int, stride: int) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    covered = np.zeros((height, width), bool)
    tiles = imaging.tile(rgb, size, stride)
    for index, piece in enumerate(tiles):
        left, top, right, bottom = piece.box
        assert piece.index == index
        assert (right - left, bottom - top) == (min(size, width), min(size, height))
        assert np.array_equal(piece.pixels, rgb[top:bottom, left:right])
        covered[top:bottom, left:right] = True
    assert covered.all()


def test_small_frame_is_one_tile() -> None:
    rgb = np.zeros((100, 150, 3), np.uint8)
    (only,) = imaging.tile(rgb, 224, 224)
    assert (only.index, only.box, only.pixels.shape) == (0, (0, 0, 150, 100), (100, 150, 3))
    assert [t.box for t in imaging.tile(np.zeros((100, 300, 3), np.uint8), 224, 224)] == [
        (0, 0, 224, 100), (76, 0, 300, 100)]


def test_stride_larger_than_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="stride"):
        imaging.tile(np.zeros((10, 10, 3), np.uint8), 4, 5)
    with pytest.raises(InputError, match="key 'imaging': .*tile_stride 300 exceeds tile_size 224"):
        load_settings(None, {"INSARWATCH_IMAGING__TILE_STRIDE": "300"})


# --------------------------------------------------------------------------- chunks


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_palette_shorter_than_the_indices_used_is_a_corrupt_palette(tmp_path: Path) -> None:
    # 4x4 P image using indices 0..15 with a PLTE of two entries.
    header = imaging.PNG_SIGNATURE + chunk(b"IHDR", bytes.fromhex("00000004000000040803000000"))
    rows = b"".join(b"\x00" + bytes(range(4 * row, 4 * row + 4)) for row in range(4))
    data = header + chunk(b"PLTE", b"\x10\x20\x30\x40\x50\x60") + chunk(b"IDAT", zlib.compress(rows)) + \
        chunk(b"IEND", b"")
    path = tmp_path / "short.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match=r"short\.png: corrupt palette \(index 15 used, PLTE has 2 entries\)"):
        imaging.decode_png(path, SETTINGS.max_pixels)


def test_a_bad_checksum_in_the_pixel_data_is_refused(tmp_path: Path) -> None:
    data = bytearray(save_p(tmp_path / "whole.png", fringes(64, 64)).read_bytes())
    start = data.index(b"IDAT")
    length = int.from_bytes(data[start - 4:start], "big")
    data[start + 4 + length] ^= 0xFF  # the CRC's first byte: the pixels still decode
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"crc\.png: corrupt PNG \(bad CRC in chunk IDAT"):
        imaging.decode_png(path, SETTINGS.max_pixels)


def test_bytes_after_iend_are_not_truncation(tmp_path: Path) -> None:
    whole = save_p(tmp_path / "whole.png", fringes(64, 64))
    path = tmp_path / "trailing.png"
    path.write_bytes(whole.read_bytes() + b"\x00" * 100 + b"appended by a transfer tool")
    image = imaging.decode_png(path, SETTINGS.max_pixels)
    assert np.array_equal(np.asarray(image), np.asarray(imaging.decode_png(whole, SETTINGS.max_pixels)))
