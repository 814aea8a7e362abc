"""Caption → Finding: a table of expert, fine-tuned-BLIP, truncated and un-tuned captions
with the exact finding each must give, plus the ``insarwatch findings`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from insarwatch.cli import app
from insarwatch.synthetic import captions
from insarwatch.findings import Finding, Pattern, normalise, parse_caption, strongest

ENV = {"INSARWATCH_CONFIG": "/dev/null"}


def finding(recognized: bool = True, patterns: tuple[tuple[str, str | None, str | None], ...] = (),
            atmosphere: tuple[str, ...] = (), low_coherence: bool = False,
            processing_error: bool = False) -> dict[str, Any]:
    return {
        "recognized": recognized,
        "deformation": bool(patterns),
        "patterns": [{"type": kind, "intensity": intensity, "location": location}
                     for kind, intensity, location in patterns],
        "atmosphere": list(atmosphere),
        "low_coherence": low_coherence,
        "processing_error": processing_error,
    }


QUIET = finding()
UNRECOGNISED = finding(recognized=False)

EXPERT = [
    ("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be "
     "detected around the area. No deformation activity can be detected.",
     finding(atmosphere=("turbulent", "wave"))),
    ("Turbulent mixing effect can be detected on the top, right and bottom side. A dyke-type deformation pattern "
     "of high intensity can be detected on the top side of the image.",
     finding(patterns=(("dyke", "high", "top"),), atmosphere=("turbulent",))),
    ("Vertical stratification caused by atmospheric delays can be detected in high altitude areas. "
     "No deformation activity can be detected.",
     finding(atmosphere=("stratification",))),
    ("A sill-type deformation pattern of medium intensity can be detected at the bottom of the image. "
     "The atmospheric impact is very low.",
     finding(patterns=(("sill", "medium", "bottom"),))),
    ("Turbulent mixing effect can be detected on the leftmost and bottom-left side of the region. A sill-type "
     "deformation pattern of high intensity can be detected at the bottom of the image.",
     finding(patterns=(("sill", "high", "bottom"),), atmosphere=("turbulent",))),
    ("A sill-type deformation pattern of low intensity can be detected on the central side. "
     "The atmospheric impact is low.",
     finding(patterns=(("sill", "low", "central"),))),
    ("Vertical stratification effect can be detected on the top side of the region. Wave-like patterns caused by "
     "atmospheric delays can also be detected on the top and left side. A mogi-type deformation pattern of low "
     "intensity is detected in top-right side of the region.",
     finding(patterns=(("mogi", "low", "top-right"),), atmosphere=("stratification", "wave"))),
    ("Two deformation patterns can be detected on the right side. A dyke-type of high intensity on the leftmost "
     "and sill-type of low intensity on the rightmost.",
     finding(patterns=(("dyke", "high", "leftmost"), ("sill", "low", "rightmost")))),
    ("A mogi-type deformation pattern of high intensity can be detected on the top side. A sill-type deformation "
     "pattern of low intensity can be detected on the bottom side.",
     finding(patterns=(("mogi", "high", "top"), ("sill", "low", "bottom")))),
    ("Earthquake deformation can be detected on the left side of the image.",
     finding(patterns=(("earthquake", None, "left"),))),
    ("An earthquake-type deformation pattern of high intensity can be detected in the center of the image.",
     finding(patterns=(("earthquake", "high", "center"),))),
    ("An unidentified deformation pattern of medium intensity can be detected on the bottom-right side.",
     finding(patterns=(("unidentified", "medium", "bottom-right"),))),
    ("Deformation can be detected on the top side of the image.",
     finding(patterns=(("unidentified", None, "top"),))),
    ("No deformation activity can be detected.", QUIET),
    ("A mogi-type deformation pattern of high intensityon the top-rigth side of the region.",
     finding(patterns=(("mogi", "high", "top-right"),))),
    ("A sill-type deformtion pattern of low intensity can be detected on the central side.",
     finding(patterns=(("sill", "low", "central"),))),
    ("A dike-type deformation pattern of medium intesity can be detected on the botom side.",
     finding(patterns=(("dyke", "medium", "bottom"),))),
    ("A spheroid-type deformation pattern of medium intensity can be detected on the right side of the image. "
     "Turbulent mixing effect can be detected on the left side.",
     finding(patterns=(("spheroid", "medium", "right"),), atmosphere=("turbulent",))),
    ("A high intensity dyke-type deformation pattern can be detected near the summit.",
     finding(patterns=(("dyke", "high", "summit"),))),
    ("On the top-left side, a sill-type deformation pattern of moderate intensity can be seen.",
     finding(patterns=(("sill", "medium", "top-left"),))),
    ("A sill-type deformation pattern with intensity medium can be detected at the bottom of the image.",
     finding(patterns=(("sill", "medium", "bottom"),))),
    ("Low coherence can be detected around the area due to decorrelation. No deformation activity can be "
     "detected.",
     finding(low_coherence=True)),
    ("There is noise in deformation zone due to high temporal baseline between the two images. A sill-type "
     "deformation pattern of medium intensity can be detected on the central side.",
     finding(patterns=(("sill", "medium", "central"),), low_coherence=True)),
    ("Processing errors can be detected on the top side of the image. No deformation activity can be detected.",
     finding(processing_error=True)),
    ("Unwrapping errors can be detected on the right side.", finding(processing_error=True)),
    ("Orbital fringes can be detected around the area. No deformation activity can be detected.", QUIET),
    ("Glacier fringes can be detected on the top side of the region.", QUIET),
    ("Image artifacts are detected on image. Part of the image contains no information.", QUIET),
    ("A SILL-TYPE DEFORMATION PATTERN OF LOW INTENSITY CAN BE DETECTED ON THE CENTRAL SIDE.",
     finding(patterns=(("sill", "low", "central"),))),
    ("No mogi-type deformation can be detected.", QUIET),
    ("Mogi-type deformation can be seen at the top-left corner.",
     finding(patterns=(("mogi", None, "top-left corner"),))),
    ("Deformation fringes of high intensity can be detected in the center of the image, caused by a sill-type "
     "source.",
     finding(patterns=(("sill", "high", "center"),))),
    ("No deformation can be detected due to low coherence.", finding(low_coherence=True)),
    ("The interferogram is corrupted.", QUIET),
    ("Signs of deformation cannot be observed. Turbulent mixing effect can be detected on the top side.",
     finding(atmosphere=("turbulent",))),
    ("A sill-type deformation pattern of low intensity can be detected on the central side and a mogi-type "
     "deformation pattern of high intensity on the top side.",
     finding(patterns=(("sill", "low", "central"), ("mogi", "high", "top")))),
    ("A dyke-type deformation pattern of high intensity can be detected on the top, right and bottom side.",
     finding(patterns=(("dyke", "high", "top, right and bottom"),))),
    ("A sill-type deformation pattern of high intensity, not caused by the atmosphere, can be detected at the "
     "bottom.",
     finding(patterns=(("sill", "high", "bottom"),))),
]

MODEL = [
    ("turbulent mixing effect or wave - like patterns caused by liquid and solid particles of the atmosphere can "
     "be detected around the area. no deformation activity.",
     finding(atmosphere=("turbulent", "wave"))),
    ("a sill - type deformation pattern of low intensity can be detected on the central side. the atmospheric "
     "impact is low.",
     finding(patterns=(("sill", "low", "central"),))),
    ("turbulent mixing effect can be detected on the bottom - right and central - left side of the region. a sill "
     "- type deformation pattern of high intensity is detected at the bottom of the image. there is noise in "
     "deformation zone due to high temporal baseline between the two images.",
     finding(patterns=(("sill", "high", "bottom"),), atmosphere=("turbulent",), low_coherence=True)),
    ("vertical stratification effect is detected on the high altitude areas of the region. a sill - type "
     "deformation pattern of medium intensity is detected at the bottom of the image.",
     finding(patterns=(("sill", "medium", "bottom"),), atmosphere=("stratification",))),
    ("a dyke - type deformation pattern of high intensity can be detected on the top side of the image.",
     finding(patterns=(("dyke", "high", "top"),))),
    ("a mogi - type deformation pattern of low intensity can be detected in the center of the image.",
     finding(patterns=(("mogi", "low", "center"),))),
    ("an earthquake - type deformation pattern can be detected on the right side of the image.",
     finding(patterns=(("earthquake", None, "right"),))),
    ("a spheroid - type deformation pattern of low intensity can be detected on the left side of the image.",
     finding(patterns=(("spheroid", "low", "left"),))),
    ("a mogi - type deformation pattern of medium intensity can be detected on the top - right side of the "
     "region.",
     finding(patterns=(("mogi", "medium", "top-right"),))),
    ("two deformation patterns can be detected on the right side. a dyke - type of high intensity on the leftmost "
     "and sill - type of low intensity on the rightmost.",
     finding(patterns=(("dyke", "high", "leftmost"), ("sill", "low", "rightmost")))),
    ("stratification effect can be detected on the left side. no deformation activity can be detected.",
     finding(atmosphere=("stratification",))),
    ("no deformation activity.", QUIET),
    ("a sill - type deformation pattern of low intensity can be detected on the central side. a sill - type "
     "deformation pattern of low intensity can be detected on the central side.",
     finding(patterns=(("sill", "low", "central"),))),
    ("no deformation", QUIET),
    ("a sill - type deformation pattern of low intensity can be detected on the",
     finding(patterns=(("sill", "low", None),))),
    ("a dyke - type deformation pattern of high", finding(patterns=(("dyke", None, None),))),
    ("turbulent mixing effect can be detected on the top, right and bottom side. a dyke - type deformation "
     "pattern of",
     finding(patterns=(("dyke", None, None),), atmosphere=("turbulent",))),
]

UNTUNED = [
    ("arafed image of a map of italy with a red circle", UNRECOGNISED),
    ("a close up of a map of italy", UNRECOGNISED),
    ("there is a picture of a window sill with a plant on it", UNRECOGNISED),
    ("an aerial view of a volcano with a rainbow colored pattern", UNRECOGNISED),
    ("a blurry photo of an earthquake", UNRECOGNISED),
    ("a painting of waves crashing on the rocks of a volcano", UNRECOGNISED),
    ("", UNRECOGNISED),
    ("   ", UNRECOGNISED),
]

TABLE = EXPERT + MODEL + UNTUNED


def test_the_table_is_large_and_varied() -> None:
    assert len(TABLE) >= 40
    kinds = {pattern["type"] for _, expected in TABLE for pattern in expected["patterns"]}
    assert kinds == {"mogi", "dyke", "sill", "spheroid", "earthquake", "unidentified"}


@pytest.mark.parametrize(("caption", "expected"), TABLE, ids=[f"{n}:{c[:40]}" for n, (c, _) in enumerate(TABLE)])
def test_caption_gives_exactly_the_expected_finding(caption: str, expected: dict[str, Any]) -> None:
    assert parse_caption(caption).to_dict() == expected


@pytest.mark.parametrize(("expert", "model"), [
    (EXPERT[5][0], MODEL[1][0]),
    (EXPERT[1][0], "turbulent mixing effect can be detected on the top, right and bottom side. a dyke - type "
                   "deformation pattern of high intensity can be detected on the top side of the image."),
    (EXPERT[7][0], MODEL[9][0]),
])
def test_expert_and_model_forms_of_a_caption_agree(expert: str, model: str) -> None:
    assert parse_caption(expert) == parse_caption(model)


# The location phrases synth writes (the experts' 3 x 3 grid) and what a finding calls them.
SYNTH_LOCATIONS = {
    "on the central side": "central", "on the top side of the image": "top", "at the bottom of the image": "bottom",
    "on the left side of the image": "left", "on the right side of the image": "right",
    "on the top-left side of the image": "top-left", "on the top-right side of the image": "top-right",
    "on the bottom-left side of the image": "bottom-left", "on the bottom-right side of the image": "bottom-right",
}


@pytest.mark.parametrize("activity_type", ["Mogi", "Dyke", "Sill", "Spheroid", "Earthquake", "Unidentified"])
def test_every_deformation_sentence_synth_writes_is_read_back(activity_type: str) -> None:
    for intensity in ("Low", "Medium", "High"):
        for phrase, location in SYNTH_LOCATIONS.items():
            sentence = captions.deformation_sentence(activity_type, intensity, phrase)
            assert parse_caption(f"{captions.TURBULENT_AROUND} {sentence}") == Finding(
                True, True, (Pattern(activity_type.lower(), intensity.lower(), location),), ("turbulent", "wave"))


def test_every_flag_and_atmosphere_sentence_synth_writes_is_recognised_and_quiet() -> None:
    flags = {"low_coherence": {"low_coherence": True}, "processing_error": {"processing_error": True}}
    for flag, sentence in captions.FLAG_SENTENCES.items():
        assert parse_caption(f"{sentence} {captions.NO_DEFORMATION}").to_dict() == finding(**flags.get(flag, {}))
    assert parse_caption(captions.STRATIFICATION).to_dict() == finding(atmosphere=("stratification",))
    sides = captions.sides_phrase(("top", "left", "bottom"))
    assert parse_caption(f"Turbulent mixing effect can be detected {sides}.").to_dict() == finding(
        atmosphere=("turbulent",))


def test_normalise_closes_spaced_hyphens_and_fixes_typos() -> None:
    assert normalise("A Sill - type  pattern of high intensityon the top-rigth side") == (
        "a sill-type pattern of high intensity on the top-right side")


def test_finding_is_a_frozen_record_with_a_severity() -> None:
    parsed = parse_caption(MODEL[9][0])
    assert parsed.patterns == (Pattern("dyke", "high", "leftmost"), Pattern("sill", "low", "rightmost"))
    assert parsed.severity == "high"
    assert parse_caption("no deformation activity.").severity is None
    with pytest.raises(AttributeError):
        parsed.deformation = False  # type: ignore[misc]
    assert isinstance(parsed, Finding)


def test_strongest_ranks_intensities_in_any_case() -> None:
    assert strongest(["Low", None, "High", "Medium"]) == "high"
    assert strongest(["medium", "low"]) == "medium"
    assert strongest(["", "very", None]) is None


@pytest.mark.parametrize("odd", ["\x00\x01", "....", "- - -", "sill sill sill type", "é" * 5000, "on the", "no"])
def test_odd_text_never_raises_and_stays_json(odd: str) -> None:
    json.dumps(parse_caption(odd).to_dict())


def run(args: list[str], stdin: str | bytes | None = None):
    return CliRunner().invoke(app, ["findings", *args], input=stdin, env=ENV)


def test_command_reads_stdin_and_prints_one_object_per_line() -> None:
    lines = [EXPERT[7][0], "", MODEL[1][0], UNTUNED[0][0]]
    result = run([], "\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert printed == [EXPERT[7][1], UNRECOGNISED, MODEL[1][1], UNRECOGNISED]


def test_command_reads_a_file_with_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes("\r\n".join(caption for caption, _ in TABLE[:10]).encode())
    result = run(["--file", str(path)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [expected for _, expected in TABLE[:10]]


def test_command_names_a_missing_file_and_exits_2(tmp_path: Path) -> None:
    result = run(["--file", str(tmp_path / "absent.txt")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.txt'}: No such file or directory"


def test_command_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b"no deformation activity.\n\xff\xfe broken\nmore\n")
    result = run(["-f", str(path)])
    assert result.exit_code == 2
    assert [json.loads(line) for line in result.stdout.splitlines()] == [QUIET]
    assert result.stderr.strip().startswith(f"error: {path}: line 2 is not UTF-8")


def test_command_with_empty_stdin_prints_nothing() -> None:
    result = run([], "")
    assert (result.exit_code, result.stdout) == (0, "")
