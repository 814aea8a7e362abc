"""licsar.py: frame ids, date pairs, the drop layout, and discovery with symlinks, on a real tree."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from insarwatch import licsar
from insarwatch.errors import InputError

FRAME = "124D_04854_171313"
PAIR = "20230105_20230117"


def product(drop: Path, frame: str = FRAME, pair: str = PAIR, *siblings: str) -> Path:
    directory = drop / frame / "interferograms" / pair
    directory.mkdir(parents=True, exist_ok=True)
    diff = directory / f"{pair}.geo.diff.png"
    diff.write_bytes(b"png")
    for suffix in siblings:
        (directory / f"{pair}{suffix}").write_bytes(b"x")
    return diff


def test_frame_id_gives_track_and_direction() -> None:
    assert licsar.parse_frame_id("124D_04854_171313") == licsar.FrameId("124D_04854_171313", 124, "descending")
    assert licsar.parse_frame_id("014A_04939_131313").direction == "ascending"
    assert licsar.parse_frame_id("014A_04939_131313").track == 14


@pytest.mark.parametrize("text", ["124X_04854_171313", "12D_04854_171313", "124D_4854_171313",
                                  "124D_04854_17131", "124D_04854_171313x", "", "124d_04854_171313"])
def test_bad_frame_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not of the form NNN"):
        licsar.parse_frame_id(text)


def test_date_pair_parses() -> None:
    assert licsar.parse_date_pair(PAIR) == (date(2023, 1, 5), date(2023, 1, 17))
    assert licsar.parse_date_pair("20231231_20240229") == (date(2023, 12, 31), date(2024, 2, 29))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20230230_20230310", "'20230230' is not a real date"),
        ("20230101_20231301", "'20231301' is not a real date"),
        ("20230229_20230310", "'20230229' is not a real date"),
        ("20230117_20230105", "primary date 2023-01-17 is not before secondary date 2023-01-05"),
        ("20230105_20230105", "is not before"),
        ("2023010_20230117", "is not of the form YYYYMMDD_YYYYMMDD"),
        ("20230105-20230117", "is not of the form"),
    ],
)
def test_bad_date_pairs_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        licsar.parse_date_pair(text)


def test_interferogram_from_path_with_siblings(tmp_path: Path) -> None:
    diff = product(tmp_path, FRAME, PAIR, ".geo.cc.png", ".geo.cc.tif", ".geo.diff_pha.tif")
    found = licsar.interferogram_from_path(diff, tmp_path)
    assert (found.frame.text, found.primary, found.secondary) == (FRAME, date(2023, 1, 5), date(2023, 1, 17))
    assert found.key == f"{FRAME}/{PAIR}" and found.temporal_baseline_days == 12
    assert found.coherence == diff.with_name(f"{PAIR}.geo.cc.png")
    assert {s.name for s in found.siblings} == {f"{PAIR}.geo.cc.png", f"{PAIR}.geo.cc.tif", f"{PAIR}.geo.diff_pha.tif"}


def test_the_archive_layout_is_read_like_the_current_one(tmp_path: Path) -> None:
    current = product(tmp_path, FRAME, PAIR, ".geo.cc.tif")
    archived = tmp_path / FRAME / "20220105_20220117" / "20220105_20220117.geo.diff.png"
    archived.parent.mkdir()
    archived.write_bytes(b"png")
    (archived.parent / "20220105_20220117.geo.diff_pha.tif").write_bytes(b"x")
    (tmp_path / FRAME / "metadata").mkdir()
    (tmp_path / FRAME / "metadata" / "metadata.txt").write_text("heading=-10\n")
    found = licsar.interferogram_from_path(archived, tmp_path)
    assert (found.key, found.primary) == (f"{FRAME}/20220105_20220117", date(2022, 1, 5))
    assert [s.name for s in found.siblings] == ["20220105_20220117.geo.diff_pha.tif"]
    assert found.frame_dir == licsar.interferogram_from_path(current, tmp_path).frame_dir == tmp_path / FRAME
    assert sorted(i.key for i in licsar.discover(tmp_path)) == [f"{FRAME}/20220105_20220117", f"{FRAME}/{PAIR}"]


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        (f"{FRAME}/interferograms/{PAIR}/20230105_20230129.geo.diff.png", "does not match its directory"),
        (f"{FRAME}/{PAIR}/extra/{PAIR}.geo.diff.png", "not laid out as <FRAME>/interferograms"),
        (f"{PAIR}/{PAIR}.geo.diff.png", "not laid out as"),
        (f"{FRAME}/interferograms/extra/{PAIR}/{PAIR}.geo.diff.png", "not laid out as"),
        (f"{FRAME}/ifgs/{PAIR}/{PAIR}.geo.diff.png", "not laid out as"),
        (f"124X_04854_171313/interferograms/{PAIR}/{PAIR}.geo.diff.png", "frame id '124X_04854_171313'"),
        (f"{FRAME}/interferograms/20230230_20230310/20230230_20230310.geo.diff.png", "not a real date"),
        (f"{FRAME}/interferograms/20230117_20230105/20230117_20230105.geo.diff.png", "is not before"),
        (f"{FRAME}/interferograms/{PAIR}/{PAIR}.geo.unw.png", "not an interferogram product"),
    ],
)
def test_layout_mismatches_say_why(tmp_path: Path, relative: str, reason: str) -> None:
    path = tmp_path / relative
    with pytest.raises(InputError, match=reason) as caught:
        licsar.interferogram_from_path(path, tmp_path)
    assert caught.value.path == str(path)


def test_path_outside_drop_is_refused(tmp_path: Path) -> None:
    outside = product(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the drop directory"):
        licsar.interferogram_from_path(outside, tmp_path / "drop")


def test_discover_reports_good_and_bad(tmp_path: Path) -> None:
    good = product(tmp_path, FRAME, PAIR, ".geo.cc.png")
    product(tmp_path, FRAME, "20230230_20230310")
    product(tmp_path, "bad_frame", PAIR)
    (tmp_path / FRAME / "notes.png").write_bytes(b"x")
    (tmp_path / FRAME / "README.txt").write_text("ignored")
    results = list(licsar.discover(tmp_path))
    found = [r for r in results if isinstance(r, licsar.Interferogram)]
    refused = {r.path.relative_to(tmp_path).as_posix(): r.reason for r in results if isinstance(r, licsar.Unrecognised)}
    assert [f.diff_png for f in found] == [good]
    assert found[0].coherence is not None
    assert set(refused) == {
        f"{FRAME}/interferograms/20230230_20230310/20230230_20230310.geo.diff.png",
        f"bad_frame/interferograms/{PAIR}/{PAIR}.geo.diff.png",
        f"{FRAME}/notes.png",
    }
    assert "not a real date" in refused[f"{FRAME}/interferograms/20230230_20230310/20230230_20230310.geo.diff.png"]


def test_symlinked_file_leading_out_of_drop_is_refused(tmp_path: Path) -> None:
    secret = product(tmp_path / "outside")
    drop = tmp_path / "drop"
    link = drop / FRAME / "interferograms" / PAIR / f"{PAIR}.geo.diff.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    (results,) = list(licsar.discover(drop))
    assert results == licsar.Unrecognised(link, "symlink leads outside the drop directory; refused")
    with pytest.raises(InputError, match="symlink leads outside the drop directory"):
        licsar.interferogram_from_path(link, drop)


def test_symlinked_directory_leading_out_of_drop_is_refused(tmp_path: Path) -> None:
    product(tmp_path / "outside")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / FRAME).symlink_to(tmp_path / "outside" / FRAME, target_is_directory=True)
    (result,) = list(licsar.discover(drop))
    assert isinstance(result, licsar.Unrecognised) and result.path == drop / FRAME
    assert "outside the drop directory" in result.reason


def test_symlinked_coherence_sibling_outside_is_ignored(tmp_path: Path) -> None:
    diff = product(tmp_path / "drop")
    (tmp_path / "cc.png").write_bytes(b"x")
    diff.with_name(f"{PAIR}.geo.cc.png").symlink_to(tmp_path / "cc.png")
    found = licsar.interferogram_from_path(diff, tmp_path / "drop")
    assert found.coherence is None and found.siblings == ()


@pytest.mark.parametrize("staging", [".staging", "zz-staging"])
def test_symlinked_directory_inside_drop_is_followed(tmp_path: Path, staging: str) -> None:
    # The pair directory lives in a staging area inside the drop and is linked into place;
    # whichever the walk reaches first, the product is found once, through the layout path.
    drop = tmp_path / "drop"
    stored = drop / staging / PAIR
    stored.mkdir(parents=True)
    (stored / f"{PAIR}.geo.diff.png").write_bytes(b"png")
    (drop / FRAME / "interferograms").mkdir(parents=True)
    (drop / FRAME / "interferograms" / PAIR).symlink_to(stored, target_is_directory=True)
    results = list(licsar.discover(drop))
    assert results == [licsar.interferogram_from_path(drop / FRAME / "interferograms" / PAIR / f"{PAIR}.geo.diff.png", drop)]


def test_symlink_loops_and_duplicate_links_terminate_with_one_result(tmp_path: Path) -> None:
    diff = product(tmp_path)
    (tmp_path / FRAME / "interferograms" / "loop").symlink_to(tmp_path, target_is_directory=True)
    os.symlink(tmp_path / FRAME, tmp_path / "014A_04939_131313")
    results = list(licsar.discover(tmp_path))
    (found,) = results
    assert isinstance(found, licsar.Interferogram) and found.diff_png.resolve() == diff.resolve()


def test_a_self_referencing_symlink_is_refused_and_the_rest_still_found(tmp_path: Path) -> None:
    good = product(tmp_path)
    pair = "20230201_20230213"
    looped = tmp_path / FRAME / "interferograms" / pair / f"{pair}.geo.diff.png"
    looped.parent.mkdir(parents=True)
    looped.symlink_to(looped.name)  # ln -s X.geo.diff.png X.geo.diff.png
    with pytest.raises(InputError, match="symlink loop") as caught:
        licsar.interferogram_from_path(looped, tmp_path)
    assert caught.value.path == str(looped)
    results = {str(getattr(item, "diff_png", getattr(item, "path", None))): item for item in licsar.discover(tmp_path)}
    assert isinstance(results[str(good)], licsar.Interferogram)
    assert results[str(looped)] == licsar.Unrecognised(looped, "symlink loop; refused")


@pytest.mark.parametrize("name", [
    f"{PAIR}\n",  # a trailing newline matched `$`
    "٢٠٢٣٠١٠٥_٢٠٢٣٠١١٧",  # Arabic-Indic digits matched \d
    "２０２３０１０５_２０２３０１１７",  # fullwidth digits
])
def test_a_pair_is_ascii_digits_and_nothing_more(name: str) -> None:
    with pytest.raises(ValueError, match="is not of the form YYYYMMDD_YYYYMMDD"):
        licsar.parse_date_pair(name)


@pytest.mark.parametrize("name", [f"{FRAME}\n", "１２４D_04854_171313", "124D_٠٤٨٥٤_171313"])
def test_a_frame_id_is_ascii_digits_and_nothing_more(name: str) -> None:
    with pytest.raises(ValueError, match="is not of the form NNN"):
        licsar.parse_frame_id(name)


@pytest.mark.parametrize("frame,pair", [(FRAME, f"{PAIR}\n"), (f"{FRAME}\n", PAIR), (FRAME, f"{PAIR}\x1b[2K")])
def test_a_name_with_a_control_character_is_refused_with_the_name_escaped(
        tmp_path: Path, frame: str, pair: str) -> None:
    path = product(tmp_path, frame, pair)
    with pytest.raises(InputError, match="control character") as caught:
        licsar.interferogram_from_path(path, tmp_path)
    assert caught.value.path.isprintable()
    assert "\\n" in str(caught.value) or "\\x1b" in str(caught.value)
    (refused,) = licsar.discover(tmp_path)
    assert isinstance(refused, licsar.Unrecognised) and "control character" in refused.reason
