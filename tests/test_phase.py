"""Wrapped phase from every rendering (``insarwatch.phase``): inversion round trips, detection of
real LiCSAR tiles and grey-level patches, unknown renderings with their reason, no-data, and the
canonical rendering the model sees."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import rainbow, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from insarwatch import imaging, phase
from insarwatch.synthetic.patches import make_patch, write_patch

# Every image shows one full cycle (as any interferogram with a fringe does), so which table drew it
# is never in doubt; the drawn values are hypothesis's, anywhere in [-pi, pi).
CYCLE = np.linspace(-math.pi, math.pi, 64, endpoint=False)
PHASES = arrays(np.float64, st.integers(1, 200),
                elements=st.floats(-math.pi, math.pi, exclude_max=True, allow_nan=False))


def error(read: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Wrapping-aware absolute phase difference."""
    return np.abs(np.angle(np.exp(1j * (read.astype(np.float64) - truth))))


def drawn(table: phase.ColourTable, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The phases, and one row of them drawn inside a black (no-data) frame: white is then never
    fill along the border (see ``test_transparent_black_and_white_fill_are_not_valid``)."""
    truth = np.concatenate([CYCLE, values])[None, :]
    framed = np.zeros((3, truth.shape[1] + 2, 3), np.uint8)
    framed[1:2, 1:-1] = table.draw(truth)
    return truth, framed


INSIDE = (slice(1, 2), slice(1, -1))


def bit_reduced(rgb: np.ndarray) -> np.ndarray:
    """ImageMagick's PNG8 reduction of LiCSAR previews: the top 3 bits of each channel, replicated."""
    top = rgb >> 5
    return ((top << 5) | (top << 2) | (top >> 1)).astype(np.uint8)


def read_png(path: Path) -> phase.PhaseImage | phase.Unknown:
    image = imaging.decode_png(path, 10**8)
    return imaging.phase_image(image, imaging.to_rgb(image, "convert", path))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("table", phase.TABLES, ids=lambda table: table.name)
@settings(max_examples=60, deadline=None)
@given(values=PHASES)
def test_each_table_round_trips_within_one_bin(table: phase.ColourTable, values: np.ndarray) -> None:
    truth, rgb = drawn(table, values)
    image = phase.from_rgb(rgb)
    assert isinstance(image, phase.PhaseImage) and image.rendering == table.name
    # Grey level 0 (phases within half a level above -pi) is black, the grey patches' no-data.
    assert np.array_equal(image.valid, rgb.any(axis=-1))
    # Within one bin: 8-bit rounding can make two neighbouring colours of a table nearly equal.
    valid = image.valid[INSIDE]
    assert error(image.phase[INSIDE], truth)[valid].max() <= table.step + 1e-6


@pytest.mark.parametrize("table", [phase.PHA, phase.PHAOLD], ids=lambda table: table.name)
@settings(max_examples=40, deadline=None)
@given(values=PHASES)
def test_bit_reduced_licsar_previews_round_trip_within_a_reduced_colour(table, values) -> None:
    truth, rgb = drawn(table, values)
    image = phase.from_rgb(bit_reduced(rgb))
    assert isinstance(image, phase.PhaseImage) and image.rendering == table.name
    assert np.array_equal(image.valid, rgb.any(axis=-1))
    # The quantisation step of a reduced preview: the longest run of bins sharing one reduced colour
    # (each colour must be a single run, or its phase would be ambiguous), plus half a bin of blending.
    reduced = bit_reduced(np.rint(table.colours).astype(np.uint8))
    starts = [k for k in range(len(reduced)) if (reduced[k] != reduced[k - 1]).any()]
    assert len({tuple(reduced[k]) for k in starts}) == len(starts)
    longest = np.diff(starts + [starts[0] + len(reduced)]).max()
    assert error(image.phase[INSIDE], truth).max() <= (longest + 1) * table.step / 2


def test_a_quiet_reduced_tile_whose_red_is_all_255_reads_back() -> None:
    truth = np.tile(np.linspace(0.2, 1.2, 50), (20, 1))
    rgb = bit_reduced(phase.PHA.draw(truth))
    assert (rgb[..., 0] == 255).all()
    image = phase.from_rgb(rgb)
    assert isinstance(image, phase.PhaseImage) and image.rendering == "pha" and image.valid.all()
    assert error(image.phase, truth).max() <= 9 * phase.PHA.step  # half of pha's longest reduced run


def test_synthetic_patches_written_by_the_generator_read_back_in_their_rendering(tmp_path: Path) -> None:
    # The generator writes patches as LiCSAR and the Sentinel-1 set do (pha, phaold, grey levels):
    # each must be detected as the table it was drawn with, and no-data must never read as phase.
    seen = set()
    for index in range(40):
        patch = make_patch(seed=5, index=index)
        if patch.spec.rendering == "rgba" or patch.spec.defect != "none" or patch.spec.rendering in seen:
            continue
        seen.add(patch.spec.rendering)
        image = read_png(write_patch(tmp_path, patch))
        assert isinstance(image, phase.PhaseImage), (index, image)
        assert image.rendering == patch.spec.rendering, index
        assert not (image.valid & patch.nodata).any()
    assert seen == {"pha", "phaold", "grey"}


# --------------------------------------------------------------------------- no data


def test_transparent_black_and_white_fill_are_not_valid(tmp_path: Path) -> None:
    # Bit-reduced as LiCSAR's previews are, where pure white is also the colour of phases near -0.5:
    # a patch of it inside the image is phase, a large region along the border is fill.
    truth = np.tile(np.linspace(0.3, 3, 64), (64, 1))
    truth[30:36, 30:36] = -0.5
    rgb = bit_reduced(phase.PHA.draw(truth))
    assert (rgb[30:36, 30:36] == 255).all()
    rgba = np.dstack([rgb, np.full(truth.shape, 255, np.uint8)])
    rgba[:8, :, 3] = 0  # transparent
    rgba[8:16, :, :3] = 0  # black, GMT's no-data colour flattened
    rgba[-20:, :, :3] = 255  # a crop's white fill along the bottom edge: 31 % of the image
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = read_png(path)
    assert isinstance(image, phase.PhaseImage) and image.rendering == "pha"
    assert not image.valid[:16].any() and not image.valid[-20:].any() and image.valid[16:-20].all()


def test_the_transparency_of_a_palette_png_is_not_valid(tmp_path: Path) -> None:
    truth = np.tile(np.linspace(-3, 3, 48), (32, 1))
    colours, indices = np.unique(phase.PHAOLD.draw(truth).reshape(-1, 3), axis=0, return_inverse=True)
    indices = indices.reshape(truth.shape).astype(np.uint8) + 1
    indices[:, :10] = 0
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 255, 255, *colours.ravel().tolist()])  # transparent index drawn white, as LiCSAR's
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    read = read_png(path)
    assert isinstance(read, phase.PhaseImage) and read.rendering == "phaold"
    assert not read.valid[:, :10].any() and read.valid[:, 10:].all()


def test_from_phase_nan_infinite_and_zero_are_no_data_and_the_rest_is_wrapped() -> None:
    values = np.array([[np.nan, 0.0, np.inf, -np.inf], [math.pi, -math.pi, 7.0, -0.5]])
    image = phase.from_phase(values)
    assert image.rendering == "diff_pha" and image.phase.dtype == np.float32
    assert image.valid.tolist() == [[False] * 4, [True] * 4]
    assert error(image.phase[1], values[1]).max() < 1e-6
    assert (image.phase >= -math.pi).all() and (image.phase < math.pi).all()


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, 16, elements=st.floats(-1e4, 1e4, allow_nan=False)))
def test_wrap_is_float32_in_minus_pi_inclusive_to_pi_exclusive(values: np.ndarray) -> None:
    wrapped = phase.wrap(values).astype(np.float64)
    assert (wrapped >= -math.pi).all() and (wrapped < math.pi).all()
    assert error(wrapped, values).max() < 1e-3  # float32 of 1e4 rad keeps ~1e-3 rad


# --------------------------------------------------------------------------- real renderings


@pytest.mark.parametrize(("relative", "rendering"), [
    ("c1/0/20201010_20201022.geo.diff1_2.png", "pha"),  # a coherent tile, flattened to RGB
    ("c1/1/etna_d_20160418_20160605.geo.diff0_2.png", "pha"),  # half decorrelated, white fill on top
    ("c1/0/20150526_20150806.geo.diff.png", "pha"),  # a whole P-mode crop with its transparency
    ("s1/1/southeast_asia_taal_142A_07606_131313_taal_20191230_20200117_1_1_3.png", "grey"),
    ("s1/0/africa_ardoukoba_006D_07728_131313_ardoukoba_20161206_20170324.geo.diff_pha_crop.png", "grey"),
])
def test_real_tiles_are_detected_as_the_table_that_drew_them(relative: str, rendering: str) -> None:
    # The dev folders hold no phaold tile: that table is covered by the round trips above.
    path = shared_path(f"realdata/{relative}")
    image = read_png(path)
    assert isinstance(image, phase.PhaseImage), image
    assert image.rendering == rendering
    assert 0.3 < image.valid.mean()


def test_the_real_frame_keeps_its_transparent_corners_invalid() -> None:
    path = shared_path("realdata/frames/mexico_city.geo.diff.png")
    decoded = imaging.decode_png(path, 10**8)
    rgb = imaging.to_rgb(decoded, "convert", path)
    image = imaging.phase_image(decoded, rgb)
    assert isinstance(image, phase.PhaseImage) and image.rendering == "pha"
    corners = imaging.nodata_mask(decoded, rgb)
    assert corners.mean() > 0.3 and not image.valid[corners].any()


@pytest.mark.parametrize("relative", [
    "c1/1/etna_d_20191012_20191018.geo.diff0_2.png",  # rainbow on amplitude, flattened to RGB
    "c1/1/Taal_d_20191204_20200115.geo.diff2_1.png",  # the same, decorrelated over half the tile
    "c1/0/20160920_20161002.geo.diff.png",  # the same as an RGBA crop
])
def test_real_rainbow_on_amplitude_is_read_as_rainbow(relative: str) -> None:
    read = read_png(shared_path(f"realdata/{relative}"))
    assert isinstance(read, phase.PhaseImage), read
    assert read.rendering == "rainbow" and 0.3 < read.valid.mean()


def test_a_real_decorrelated_licsar_tile_is_neither_a_table_nor_a_rainbow() -> None:
    read = read_png(shared_path("realdata/c1/0/20201223_20210104.geo.diff1_1.png"))
    assert isinstance(read, phase.Unknown)
    assert read.reason.startswith("colours fit no known table") and "the hue explains" in read.reason


FRINGES = np.hypot(*np.mgrid[:64, :64] - 32.0) / 3


@settings(max_examples=20, deadline=None)
@given(offset=st.floats(-math.pi, math.pi), seed=st.integers(0, 2**16))
def test_a_rainbow_on_amplitude_round_trips_its_hue(offset: float, seed: int) -> None:
    truth = FRINGES + offset
    amplitude = np.random.default_rng(seed).uniform(0.35, 1.0, truth.shape)
    read = phase.from_rgb(rainbow(truth, amplitude))
    assert isinstance(read, phase.PhaseImage) and read.rendering == "rainbow" and read.valid.all()
    # 8-bit hue (256 steps) then 8-bit RGB at a chroma of at least 0.35 * 0.6 * 255 = 53 steps.
    assert error(read.phase, truth).max() <= 2 * math.pi / 256 + 60 / 53 * math.pi / 180


def test_a_rainbow_reads_only_its_saturated_pixels() -> None:
    amplitude = np.random.default_rng(2).uniform(0.35, 1.0, FRINGES.shape)
    rgb = rainbow(FRINGES, amplitude)
    grey = np.rint(amplitude[:, :20] * 255).astype(np.uint8)
    rgb[:, :20] = grey[..., None]  # decorrelated ground: amplitude, no phase
    read = phase.from_rgb(rgb)
    assert isinstance(read, phase.PhaseImage) and read.rendering == "rainbow"
    assert not read.valid[:, :20].any() and read.valid[:, 20:].all()


@pytest.mark.parametrize(("make", "reason"), [
    (lambda rng: rng.integers(0, 256, (64, 64, 3)).astype(np.uint8), "hue continuity"),  # random colours
    (lambda rng: rainbow(FRINGES, np.full(FRINGES.shape, 0.8)), "brightness deviation"),  # an unknown hue table
    (lambda rng: rainbow(FRINGES, 0.5 + 0.4 * np.cos(FRINGES)), "the hue explains"),  # brightness follows phase
], ids=["random", "constant brightness", "brightness tied to hue"])
def test_what_is_not_a_rainbow_on_amplitude_is_unknown_with_its_reason(make, reason: str) -> None:
    read = phase.from_rgb(make(np.random.default_rng(3)))
    assert isinstance(read, phase.Unknown)
    assert read.reason.startswith("colours fit no known table") and reason in read.reason


def test_neutral_greys_on_a_reduced_grid_are_unknown_rather_than_grey_phase() -> None:
    # A decorrelated colour preview bit-reduced to greys looks like grey-level phase; say so.
    rng = np.random.default_rng(0)
    levels = np.array([36, 73, 109, 146, 182, 219])
    grey = np.repeat(rng.choice(levels, size=(32, 32))[..., None], 3, axis=-1).astype(np.uint8)
    read = phase.from_rgb(grey)
    assert isinstance(read, phase.Unknown) and "cannot be told apart" in read.reason


def test_nothing_to_read_is_unknown() -> None:
    read = phase.from_rgb(np.zeros((4, 4, 3), np.uint8))
    assert isinstance(read, phase.Unknown) and "no pixel" in read.reason


# --------------------------------------------------------------------------- the canonical rendering


def test_render_is_cyclic_distinct_and_neutral_where_invalid() -> None:
    values = np.array([[-math.pi, -math.pi / 2, 0.0, math.pi / 2, math.pi - 1e-6, 1.0]])
    valid = np.array([[True, True, True, True, True, False]])
    rgb = phase.render(phase.PhaseImage(values.astype(np.float32), valid, "synthetic")).astype(int)
    assert np.abs(rgb[0, 0] - rgb[0, 4]).max() <= 1  # no edge at the wrap
    assert len({tuple(colour) for colour in rgb[0, :4]}) == 4
    assert tuple(rgb[0, 5]) == (phase.NEUTRAL,) * 3


def test_render_then_shrink_equals_shrink_then_render() -> None:
    y, x = np.mgrid[:96, :96]
    rng = np.random.default_rng(1)
    values = np.hypot(x - 40, y - 50) / 4 + rng.uniform(-math.pi, math.pi, (96, 96)) * (x > 70)
    image = phase.from_phase(phase.wrap(values) + np.float32(1e-3))  # no exact zero: all valid
    image = phase.PhaseImage(image.phase, image.valid & (y > 8), "diff_pha")
    shrunk = phase.render(image, (32, 32)).astype(int)
    full = Image.fromarray(phase.render(image))
    assert np.abs(shrunk - np.asarray(full.resize((32, 32), Image.Resampling.BOX), dtype=int)).max() <= 2
    # Decorrelated phase averages towards the neutral grey of no data.
    assert np.abs(shrunk[:, 26:] - phase.NEUTRAL).mean() < np.abs(shrunk[4:, :20] - phase.NEUTRAL).mean() / 2
