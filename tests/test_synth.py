"""Synthetic interferograms (``insarwatch.synthetic``: the forward model, rendering, patches, drops): determinism, the LiCSAR drop, annotation contract, labels that
agree with the rendered fringes, captions that agree with the labels, flagged samples that
carry their pixel defects, and the LOS geometry. Real files, real CLI, real imaging checks."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage
from typer.testing import CliRunner

from insarwatch import imaging, phase
from insarwatch.findings import parse_caption
from insarwatch.synthetic import captions, drop, patches, physics, render
from insarwatch.cli import app
from insarwatch.licsar import Interferogram, Unrecognised, discover

ANNOTATION_TYPES = {
    "uniqueID": int, "frameID": str, "primary_date": str, "secondary_date": str, "corrupted": int,
    "processing_error": int, "glacier_fringes": int, "orbital_fringes": int, "atmospheric_fringes": int,
    "low_coherence": int, "no_info": int, "image_artifacts": int, "label": list, "activity_type": list,
    "intensity_level": list, "phase": str, "confidence": float, "segmentation_mask": list, "is_crowd": int,
    "caption": str,
}
BINARY_FLAGS = patches.BINARY_FLAGS
DEFORMATION_SENTENCE = re.compile(
    r"An? (mogi|sill|dyke|spheroid|earthquake|unidentified)-type deformation pattern of (low|medium|high) "
    r"intensity (?:can be|is) detected (on the central side|on the top side of the image|at the bottom of the image|"
    r"on the (?:left|right|top-left|top-right|bottom-left|bottom-right) side of the image)\.")
TURBULENT_SIDES = re.compile(r"Turbulent mixing effect can be detected on the (top|right|bottom|left)"
                             r"((, (top|right|bottom|left))* and (top|right|bottom|left))? side\.")
runner = CliRunner()
SEED = 11
N = 48


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("patches")
    result = runner.invoke(app, ["synth-dataset", str(root), "--n", str(N), "--seed", str(SEED)])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def annotations(dataset: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((dataset / "annotations").glob("*.json"))]


def _clean(annotation: dict) -> bool:
    return not any(annotation[flag] for flag in BINARY_FLAGS) and annotation["atmospheric_fringes"] <= 2


def _mask(annotation: dict, size: int = patches.PATCH) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    for polygon in annotation["segmentation_mask"]:
        ImageDraw.Draw(canvas).polygon(polygon, fill=1)
    return np.asarray(canvas).astype(bool)


def _read(path: Path) -> phase.PhaseImage:
    """The patch as the service reads it."""
    image = imaging.decode_png(path, 10**6)
    read = imaging.phase_image(image, imaging.to_rgb(image, "convert", path))
    assert isinstance(read, phase.PhaseImage), (path, read)
    return read


def _fringe_energy(read: phase.PhaseImage) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel phase-gradient magnitude of the read phase, speckle averaged out, and where the
    averaged phasor is coherent enough (random phase averages to almost nothing) to say."""
    phasor = np.where(read.valid, np.exp(1j * read.phase), 0)
    smooth = ndimage.uniform_filter(phasor.real, 5) + 1j * ndimage.uniform_filter(phasor.imag, 5)
    down = np.angle(smooth[1:, :-1] * np.conj(smooth[:-1, :-1]))
    across = np.angle(smooth[:-1, 1:] * np.conj(smooth[:-1, :-1]))
    energy = np.pad(np.hypot(down, across), ((0, 1), (0, 1)), mode="edge")
    return energy, np.abs(smooth) > 0.7


def _spec(**changes: object) -> patches.PatchSpec:
    base = patches.PatchSpec(True, ("Mogi",), ("Medium",), 0, "none", "pha", "A")
    return replace(base, **changes)


# --------------------------------------------------------------------------- determinism


def test_patch_i_depends_only_on_seed_and_i(tmp_path: Path) -> None:
    first, again = patches.make_patch(SEED, 5), patches.make_patch(SEED, 5)
    assert np.array_equal(first.rgb, again.rgb) and first.annotation == again.annotation
    assert not np.array_equal(first.rgb, patches.make_patch(SEED + 1, 5).rgb)
    for n, root in ((3, tmp_path / "few"), (6, tmp_path / "more")):
        assert runner.invoke(app, ["synth-dataset", str(root), "--n", str(n), "--seed", "4"]).exit_code == 0
    for index in range(3):
        for folder, suffix in (("images", "png"), ("annotations", "json")):
            name = f"{folder}/{index}.{suffix}"
            assert (tmp_path / "few" / name).read_bytes() == (tmp_path / "more" / name).read_bytes()


def test_drop_is_deterministic(tmp_path: Path) -> None:
    for name in ("one", "two"):
        args = ["synth", str(tmp_path / name), "--frames", "1", "--pairs", "1", "--size", "300x260", "--seed", "9"]
        assert runner.invoke(app, args).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 5  # diff PNG, cc PNG, diff_pha and cc GeoTIFFs, truth
    for relative in files:
        if relative.suffix in (".png", ".tif"):
            assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes()


# --------------------------------------------------------------------------- LiCSAR drop


def test_synth_writes_a_licsar_drop_with_truth(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    result = runner.invoke(app, ["synth", str(drop), "--frames", "4", "--pairs", "2", "--size", "448x448",
                                 "--seed", "3", "--volcano", "230,210"])
    assert result.exit_code == 0, result.output
    found = list(discover(drop))
    assert not [item for item in found if isinstance(item, Unrecognised)]
    interferograms = {item.key: item for item in found if isinstance(item, Interferogram)}
    assert len(interferograms) == 8
    assert {item.frame.direction for item in interferograms.values()} == {"ascending", "descending"}
    assert all(item.temporal_baseline_days in patches.REPEATS for item in interferograms.values())
    truth = [json.loads(line) for line in (drop / "synth-truth.jsonl").read_text().splitlines()]
    assert {line["key"] for line in truth} == set(interferograms)
    assert {line["deformation"] for line in truth} == {True, False}
    tiles = imaging.tile(np.zeros((448, 448, 3), dtype=np.uint8), 224, 224)
    volcano_tile = next(t.index for t in tiles if t.box[0] <= 230 < t.box[2] and t.box[1] <= 210 < t.box[3])
    for line in truth:
        item = interferograms[line["key"]]
        image = imaging.decode_png(item.diff_png, 10**7)
        assert (image.mode, image.size, image.info.get("transparency")) == ("P", (448, 448), 0)
        coherence = np.nanmean(imaging.coherence_png(item.coherence, 10**7))
        assert (coherence < 0.25) == line["low_coherence"]
        assert line["volcano"] == [230, 210]
        if line["deformation"]:
            assert line["activity_type"] in physics.ACTIVITY_TYPES and line["intensity"] in patches.INTENSITY_FRINGES
            assert volcano_tile in line["tiles"]
        else:
            assert (line["activity_type"], line["intensity"], line["tiles"]) == (None, None, [])
    assert any(line["low_coherence"] for line in truth)


def test_truth_tiles_follow_the_configured_tiling(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path), "--frames", "1", "--pairs", "1", "--size", "448x448",
                                 "--volcano", "224,224"], env={"INSARWATCH_IMAGING__TILE_STRIDE": "112"})
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "synth-truth.jsonl").read_text())
    tiles = imaging.tile(np.zeros((448, 448, 3), dtype=np.uint8), 224, 112)
    centre = next(t.index for t in tiles if t.box == (112, 112, 336, 336))
    assert len(tiles) == 9 and centre in truth["tiles"] and set(truth["tiles"]) <= {t.index for t in tiles}


def test_drop_frames_pass_the_pixel_checks(tmp_path: Path) -> None:
    from insarwatch.config import ImagingSettings

    drop.write_drop(tmp_path, 1, 5, size=(448, 448), pairs=1)
    item = next(item for item in discover(tmp_path) if isinstance(item, Interferogram))
    image = imaging.decode_png(item.diff_png, 10**7)
    rgb = imaging.to_rgb(image, "skip", item.diff_png)
    settings = ImagingSettings()
    coherence = imaging.coherence_png(item.coherence, settings.max_pixels)
    checks = imaging.check_quality(rgb, coherence, settings)
    assert all(check.passed for check in checks), checks
    laid = imaging.tile(rgb, settings.tile_size, settings.tile_stride, ~imaging.nodata_mask(image, rgb))
    assert imaging.usable_tiles(laid, rgb.shape[:2], coherence, settings).tiles


@pytest.mark.parametrize("command", [["synth", "--frames", "1", "--size", "64x64"], ["synth-dataset", "--n", "1"]])
def test_an_output_path_that_is_a_file_is_bad_input(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    result = runner.invoke(app, [command[0], str(blocker / "out"), *command[1:]])
    assert result.exit_code == 2
    assert f"{blocker / 'out'}: cannot create the output directory" in result.output
    assert "Traceback" not in result.output


def test_bad_sizes_are_usage_errors(tmp_path: Path) -> None:
    assert runner.invoke(app, ["synth", str(tmp_path), "--size", "12"]).exit_code == 2
    assert runner.invoke(app, ["synth", str(tmp_path), "--size", "300x300", "--volcano", "400,10"]).exit_code == 2
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- annotations


def test_annotations_have_exactly_the_agreed_fields(dataset: Path, annotations: list[dict]) -> None:
    assert len(annotations) == N
    assert {a["uniqueID"] for a in annotations} == set(range(N))
    for annotation in annotations:
        assert list(annotation) == list(ANNOTATION_TYPES)
        for key, kind in ANNOTATION_TYPES.items():
            assert type(annotation[key]) is kind, (key, annotation[key])
        assert all(annotation[flag] in (0, 1) for flag in BINARY_FLAGS)
        assert annotation["atmospheric_fringes"] in (0, 1, 2, 3)
        assert re.fullmatch(r"\d{3}[AD]_\d{5}_\d{6}", annotation["frameID"])
        assert annotation["primary_date"] < annotation["secondary_date"]
        assert 0 <= annotation["confidence"] <= 1
        deforming = annotation["label"] == ["Deformation"]
        assert annotation["label"] in (["Deformation"], ["Non_Deformation"])
        assert annotation["phase"] in (("Unrest", "Rebound") if deforming else ("Rest",))
        assert set(annotation["activity_type"]) <= {*physics.ACTIVITY_TYPES, "Unidentified"}
        assert set(annotation["intensity_level"]) <= {"Low", "Medium", "High"}
        assert bool(annotation["activity_type"]) == bool(annotation["segmentation_mask"]) == deforming
        for polygon in annotation["segmentation_mask"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            assert all(isinstance(v, float) and 0 <= v <= patches.PATCH for v in polygon)
        image = Image.open(dataset / "images" / f"{annotation['uniqueID']}.png")
        assert image.size == (patches.PATCH, patches.PATCH) and image.mode in ("P", "RGBA")


def test_deformation_is_where_the_mask_says(dataset: Path, annotations: list[dict]) -> None:
    ratios = []
    for annotation in annotations:
        image = Image.open(dataset / "images" / f"{annotation['uniqueID']}.png")
        if image.mode != "P" or not _clean(annotation):
            continue
        mask = _mask(annotation)
        if annotation["label"] == ["Non_Deformation"]:
            assert not mask.any()
            continue
        energy, coherent = _fringe_energy(_read(dataset / "images" / f"{annotation['uniqueID']}.png"))
        ratios.append(energy[mask & coherent].mean() / energy[~mask & coherent].mean())
    assert len(ratios) >= 10
    assert min(ratios) > 1.25 and np.median(ratios) > 2, ratios


def test_captions_follow_the_labels(annotations: list[dict]) -> None:
    for annotation in annotations:
        caption = annotation["caption"]
        patterns = DEFORMATION_SENTENCE.findall(caption)
        assert [kind for kind, _, _ in patterns] == [t.lower() for t in annotation["activity_type"]], caption
        assert [level for _, level, _ in patterns] == [i.lower() for i in annotation["intensity_level"]]
        assert ("No deformation activity can be detected." in caption) == (annotation["label"] == ["Non_Deformation"])
        if len(patterns) == 1:
            mask = _mask(annotation)
            assert patterns[0][2] == captions.location_phrase(mask)
        code = annotation["atmospheric_fringes"]
        both = captions.STRATIFIED_AND_TURBULENT in caption
        stratified = captions.STRATIFICATION in caption or both
        turbulent = captions.TURBULENT_AROUND in caption or bool(TURBULENT_SIDES.search(caption)) or both
        impact = bool(re.search(r"The atmospheric impact is (very )?low\.", caption))
        deforming = annotation["label"] == ["Deformation"]
        assert (impact, stratified, turbulent) == (code == 0 and deforming, code in (1, 3), code in (2, 3)), caption
        for flag, sentence in captions.FLAG_SENTENCES.items():
            written = captions.LOW_COHERENCE_NOISE if flag == "low_coherence" else sentence
            assert (written in caption) == bool(annotation[flag])
        # What the service reads in the caption is what the label says.
        finding = parse_caption(caption)
        assert finding.recognized and finding.deformation == deforming, caption
        assert [p.type for p in finding.patterns] == [t.lower() for t in annotation["activity_type"]], caption


def test_location_phrase_uses_a_3x3_grid() -> None:
    mask = np.zeros((224, 224), dtype=bool)
    mask[10:40, 180:220] = True
    assert captions.location_phrase(mask) == "on the top-right side of the image"
    mask[:] = False
    mask[100:120, 100:120] = True
    assert captions.location_phrase(mask) == "on the central side"
    mask[:] = False
    mask[200:224, 90:130] = True
    assert captions.location_phrase(mask) == "at the bottom of the image"


def test_every_activity_type_renders_visible_fringes() -> None:
    rng = np.random.default_rng(0)
    for activity_type in physics.ACTIVITY_TYPES:
        for intensity, (low, high) in patches.INTENSITY_FRINGES.items():
            patch = patches.render_patch(0, _spec(activity_types=(activity_type,), intensities=(intensity,)), rng)
            fringes = np.abs(patch.los).max() / physics.FRINGE
            assert low <= fringes <= high
            assert patch.annotation["segmentation_mask"]
            assert f"{activity_type.lower()}-type deformation pattern of {intensity.lower()}" in \
                patch.annotation["caption"]


# --------------------------------------------------------------------------- flagged samples


@pytest.mark.parametrize("defect, flags", [
    ("colour_bar", {"image_artifacts"}),
    ("no_info", {"no_info"}),
    ("corrupted", {"corrupted", "no_info"}),
    ("low_coherence", {"low_coherence"}),
    ("orbital", {"orbital_fringes"}),
    ("glacier", {"glacier_fringes"}),
    ("processing_error", {"processing_error"}),
    ("crowd", {"is_crowd"}),
    ("none", set()),
])
def test_flagged_samples_carry_their_defect(tmp_path: Path, defect: str, flags: set[str]) -> None:
    types = ("Mogi", "Sill") if defect == "crowd" else ("Mogi",)
    spec = _spec(defect=defect, activity_types=types, intensities=("Medium",) * len(types))
    patch = patches.render_patch(7, spec, np.random.default_rng(1))
    assert {flag for flag in BINARY_FLAGS if patch.annotation[flag]} == flags
    path = patches.write_patch(tmp_path, patch)
    image = imaging.decode_png(path, 10**6)
    rgb = imaging.to_rgb(image, "skip", path)
    assert (imaging.colour_bar_score(rgb) > 0.5) == (defect == "colour_bar")
    # Water and swath corners are no data in any patch; the no-data defects add a third or more.
    assert imaging.nodata_fraction(image, rgb) == pytest.approx(patch.nodata.mean())
    if defect in ("no_info", "corrupted"):
        assert patch.nodata.mean() > 0.25
    # Decorrelated everywhere: LiCSAR's shrunk speckle is off every table (grey-pink), nothing to read.
    assert isinstance(imaging.phase_image(image, rgb), phase.Unknown) == (defect == "low_coherence")
    if defect == "crowd":
        assert len(patch.annotation["segmentation_mask"]) == 2 and patch.annotation["activity_type"] == list(types)


def test_unidentified_and_both_atmospheres_are_labelled() -> None:
    patch = patches.render_patch(0, _spec(defect="unidentified"), np.random.default_rng(2))
    assert patch.annotation["activity_type"] == ["Unidentified"]
    assert "An unidentified-type deformation pattern" in patch.annotation["caption"]
    patch = patches.render_patch(0, _spec(atmosphere=3), np.random.default_rng(2))
    assert patch.annotation["atmospheric_fringes"] == 3
    assert captions.STRATIFIED_AND_TURBULENT in patch.annotation["caption"]


def test_rgba_samples_use_alpha_and_another_scheme(tmp_path: Path) -> None:
    path = patches.write_patch(tmp_path, patches.render_patch(3, _spec(rendering="rgba"), np.random.default_rng(3)))
    image = Image.open(path)
    assert image.mode == "RGBA"
    pixels = np.asarray(image)
    assert (pixels[..., 3] == 255).all()
    colours = {tuple(c) for c in pixels[..., :3].reshape(-1, 3)}
    assert not colours & {tuple(c) for c in np.rint(phase.PHA.colours).astype(np.uint8)}


# --------------------------------------------------------------------------- rendering and geometry


@pytest.mark.parametrize("rendering", ["pha", "phaold", "grey"])
def test_patches_are_written_as_their_rendering_and_read_back(tmp_path: Path, rendering: str) -> None:
    spec = _spec(rendering=rendering, intensities=("High",))
    patch = patches.render_patch(0, spec, np.random.default_rng(4))
    path = patches.write_patch(tmp_path, patch)
    image = Image.open(path)
    assert image.mode == "P" and image.info["transparency"] == render.NODATA
    read = _read(path)
    assert read.rendering == rendering
    assert read.valid[~patch.nodata].mean() > 0.3
    assert not read.valid[patch.nodata].any()
    if rendering != "grey":
        # LiCSAR's PNG8 step: every channel keeps its top 3 bits (levels 0, 36, 73 ... 255).
        levels = np.unique(np.asarray(image.convert("RGB")))
        assert np.isin(levels, np.rint(np.arange(8) * 255 / 7)).all(), levels


def test_preview_shrinks_colours_so_decorrelated_ground_is_off_the_table() -> None:
    rng = np.random.default_rng(5)
    grid = np.where(np.arange(90)[None, :] < 45, rng.uniform(-np.pi, np.pi, (90, 90)), 0.3)
    rgb, nodata = render.preview(grid, np.ones((90, 90), dtype=bool), phase.PHA)
    assert rgb.shape == (30, 30, 3) and not nodata.any()
    read = phase.from_rgb(render.png8(rgb, nodata))
    assert read.valid[:, 16:].all() and np.allclose(read.phase[:, 16:], 0.3, atol=0.15)  # 3-bit cells: about 0.1 rad
    assert read.valid[:, :15].mean() < 0.3  # random colours average to grey-pink, no phase


def test_quiet_patches_carry_hard_negatives_and_real_phrasing() -> None:
    quiet = [patches.render_patch(i, _spec(deformation=False, activity_types=(), intensities=(), atmosphere=1),
                                  np.random.default_rng(i)) for i in range(3)]
    for patch in quiet:
        caption = patch.annotation["caption"]
        assert caption == f"{captions.STRATIFICATION} {captions.NO_DEFORMATION}"
        assert not parse_caption(caption).deformation
        # Stratified delay on the edifice spans 1.5-4 fringes: concentric fringes that are not deformation.
        assert not patch.annotation["segmentation_mask"]


    wrapped = physics.wrap(np.array([np.pi, -np.pi, 3 * np.pi, 0.5]))
    assert np.allclose(wrapped, [np.pi, np.pi, np.pi, 0.5])


def test_los_projection() -> None:
    for direction in "AD":
        assert np.isclose(np.linalg.norm(physics.los_vector(direction)), 1)
    ascending, descending = physics.los_vector("A"), physics.los_vector("D")
    assert ascending[0] < 0 < descending[0]  # ascending looks east, so the satellite is to the west
    assert np.isclose(ascending[0], -descending[0]) and np.isclose(ascending[2], descending[2])
    size = 101
    centre = (size - 1) / 2
    source = physics.Source("Mogi", centre * physics.PIXEL, (size - centre) * physics.PIXEL, 2000.0)
    fields = {d: physics.los_field([source], d, (size, size), stride=1) for d in "AD"}
    peaks = {}
    for direction, field in fields.items():
        peaks[direction] = np.unravel_index(np.argmax(field), field.shape)
        # Vertical-dominated: the peak stays within a fraction of the depth of the source and
        # most of the 1 m uplift reaches the LOS.
        assert np.hypot(peaks[direction][0] - centre, peaks[direction][1] - centre) * physics.PIXEL < 0.4 * 2000
        assert field.max() > 0.7
    assert peaks["A"][1] < centre < peaks["D"][1]  # the peak leans towards the satellite
    difference = fields["A"] - fields["D"]
    assert np.abs(difference).max() > 0.2
    assert np.allclose(difference, -difference[:, ::-1], atol=1e-9)


def test_dislocation_sources_behave() -> None:
    x = np.linspace(-10000, 10000, 201)
    y = np.zeros_like(x)
    sill = physics.displacement(physics.Source("Sill", 0, 0, 1500, 4000, 4000), x, y)
    assert sill[2].argmax() == 100 and sill[2].max() > 0.3
    dyke = physics.displacement(physics.Source("Dyke", 0, 0, 300, 6000, 4000, strike=0.0), x, y)
    assert dyke[2][100] < dyke[2].max() and dyke[0][150] > 0 > dyke[0][50]  # lobes pushed apart
    quake = physics.displacement(physics.Source("Earthquake", 0, 0, 1000, 8000, 5000, 0.0, 60.0, 0.0), x, y)
    assert np.abs(quake).max() > 0.05


def test_help_lists_the_commands_with_examples() -> None:
    result = runner.invoke(app, ["--help"])
    assert "synth-dataset" in result.output and "synth " in result.output
    for name in ("synth", "synth-dataset"):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Examples" in result.output and f"insarwatch {name} " in result.output
