"""hephaestus.py: the annotation schema, each curation rule, balancing and the split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import annotation, write_annotation

from insarwatch import hephaestus
from insarwatch.config import CurationSettings
from insarwatch.errors import InputError


def parsed(unique_id: int = 1, *, deformation: bool = False, **fields: object) -> hephaestus.Annotation:
    return hephaestus.Annotation.model_validate(annotation(unique_id, deformation=deformation, **fields))


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize("deformation", [False, True])
def test_clean_annotations_pass(deformation: bool) -> None:
    assert hephaestus.rejection_reason(parsed(deformation=deformation)) is None


@pytest.mark.parametrize(
    ("fields", "deformation", "reason"),
    [
        ({"corrupted": 1}, False, "corrupted"),
        ({"no_info": 1}, False, "no_info"),
        ({"processing_error": 1}, True, "processing_error"),
        ({"low_coherence": 1}, False, "low_coherence"),
        ({"orbital_fringes": 1}, True, "orbital_fringes"),
        ({"glacier_fringes": 1}, False, "glacier_fringes"),
        ({"atmospheric_fringes": 3}, False, "atmospheric_fringes"),
        ({"image_artifacts": 1}, True, "image_artifacts"),
        ({"is_crowd": 1}, True, "is_crowd"),
        ({"activity_type": ["Unidentified"]}, True, "unidentified_activity"),
        ({"activity_type": ["Dyke", "Unidentified"]}, True, "unidentified_activity"),
    ],
)
def test_each_rule_removes_with_its_reason(fields: dict[str, object], deformation: bool, reason: str) -> None:
    assert hephaestus.rejection_reason(parsed(deformation=deformation, **fields)) == reason


@pytest.mark.parametrize("fields", [{"atmospheric_fringes": 2}, {"atmospheric_fringes": 0}, {"is_crowd": 1}])
def test_kept_non_deforming_cases(fields: dict[str, object]) -> None:
    # atmosphere up to 2 is kept; is_crowd only matters for deforming samples
    assert hephaestus.rejection_reason(parsed(**fields)) is None


@pytest.mark.parametrize("value", [2, 3])
def test_flags_above_one_remove_too(value: int) -> None:
    # The real annotations flag processing errors with 2 and 3, and one glacier with 2.
    assert hephaestus.rejection_reason(parsed(processing_error=value)) == "processing_error"
    assert hephaestus.rejection_reason(parsed(glacier_fringes=value)) == "glacier_fringes"


def test_classes_as_the_paper_counts_them() -> None:
    earthquake = parsed(label=["Earthquake"], activity_type=["Earthquake"], intensity_level=["None"], phase="None")
    assert earthquake.deformation and hephaestus.rejection_reason(earthquake) is None
    assert parsed(label=["Deformation", "Earthquake"]).deformation
    assert hephaestus.rejection_reason(parsed(label=[])) == "not_a_class"
    assert hephaestus.rejection_reason(parsed(label=["Non_Deformation"])) is None


@pytest.mark.parametrize(
    ("confidence", "deformation", "removed"),
    [(0.8, True, False), (0.79, True, True), (0.5, True, True), ("0.9", True, False), ("High", True, True),
     (None, True, True), (0.5, False, False), (None, False, False)],
)
def test_deforming_confidence_rule(confidence: object, deformation: bool, removed: bool) -> None:
    rules = hephaestus.curation_rules(CurationSettings())
    reason = hephaestus.rejection_reason(parsed(deformation=deformation, confidence=confidence), rules)
    assert reason == ("deforming_confidence" if removed else None)
    # 0 turns the rule off; the rules the paper states never look at confidence.
    assert hephaestus.curation_rules(CurationSettings(deforming_min_confidence=0)) == hephaestus.RULES
    assert hephaestus.rejection_reason(parsed(deformation=deformation, confidence=confidence)) is None


def test_first_rule_in_design_order_is_the_reason() -> None:
    everything = {rule: 1 for rule in ("corrupted", "no_info", "processing_error", "low_coherence",
                                       "orbital_fringes", "glacier_fringes", "image_artifacts", "is_crowd")}
    assert hephaestus.rejection_reason(parsed(deformation=True, atmospheric_fringes=3, **everything)) == "corrupted"
    assert hephaestus.rejection_reason(parsed(low_coherence=1, orbital_fringes=1)) == "low_coherence"
    assert [rule.name for rule in hephaestus.RULES] == [
        "not_a_class", "corrupted", "no_info", "processing_error", "low_coherence", "orbital_fringes", "glacier_fringes",
        "atmospheric_fringes", "image_artifacts", "is_crowd", "unidentified_activity"]


# --------------------------------------------------------------------------- schema


def test_load_annotation_reads_the_fields(tmp_path: Path) -> None:
    path = write_annotation(tmp_path, annotation(42, deformation=True))
    loaded = hephaestus.load_annotation(path)
    assert (loaded.uniqueID, loaded.deformation, loaded.activity_type, loaded.pair) == (
        42, True, ["Mogi"], "20210101_20210113")


def test_lenient_where_real_files_vary(tmp_path: Path) -> None:
    record = annotation(7, confidence="High", phase=None, segmentation_mask=[], activity_type=[],
                        intensity_level=[], label=[], extra_key={"anything": 1})
    loaded = hephaestus.load_annotation(write_annotation(tmp_path, record))
    assert (loaded.confidence, loaded.phase, loaded.deformation) == ("High", None, False)
    assert loaded.model_extra == {"extra_key": {"anything": 1}}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("", "not valid JSON: Expecting value at line 1 column 1"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({k: v for k, v in annotation(1).items() if k != "caption"}), "field 'caption': missing field"),
        (json.dumps({k: v for k, v in annotation(1).items() if k != "is_crowd"}), "field 'is_crowd': missing field"),
        (json.dumps(annotation(1, corrupted="yes")), "field 'corrupted': Input should be a valid integer"),
        (json.dumps(annotation(1, corrupted=-1)), "field 'corrupted': Input should be greater than or equal to 0"),
        (json.dumps(annotation(1, atmospheric_fringes=4)), "field 'atmospheric_fringes': Input should be less"),
        (json.dumps(annotation(1, label="Deformation")), "field 'label': Input should be a valid list"),
        (json.dumps(annotation(1, activity_type=["Volcano"])), "field 'activity_type.0': Input should be 'Mogi'"),
        (json.dumps(annotation(1, primary_date="2021-01-01")), "field 'primary_date': String should match"),
        (json.dumps(annotation(1, secondary_date="20230230")), "field 'secondary_date': Value error, day is out of range"),
        (json.dumps(annotation(1, segmentation_mask=[[1, 2, 3]])), "field 'segmentation_mask': Value error, each polygon"),
        (json.dumps(annotation(1, uniqueID="abc", caption=3)), "field 'uniqueID': Input should be a valid integer, "
                                                               "unable to parse string as an integer (and 1 more problems)"),
    ],
)
def test_malformed_annotations_name_file_and_reason(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "a.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        hephaestus.load_annotation(path)
    assert str(caught.value).startswith(f"{path}: {reason}")
    assert "\n" not in str(caught.value)


def test_non_utf8_and_unreadable_annotations(tmp_path: Path) -> None:
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not valid JSON"):
        hephaestus.load_annotation(binary)
    with pytest.raises(InputError, match="cannot be read"):
        hephaestus.load_annotation(tmp_path / "missing.json")


# --------------------------------------------------------------------------- balance and split


def test_balance_keeps_every_deforming_and_draws_as_many_others() -> None:
    deforming, others = list(range(0, 30)), list(range(100, 400))
    chosen = hephaestus.balance(deforming, reversed(others))
    assert sorted(set(chosen) & set(deforming)) == deforming
    drawn = sorted(set(chosen) - set(deforming))
    assert drawn == sorted(random.Random(17).sample(others, 30))
    assert chosen == hephaestus.balance(reversed(deforming), others)


def test_balance_with_too_few_non_deforming_draws_the_deforming_instead() -> None:
    deforming = list(range(50))
    chosen = hephaestus.balance(deforming, [900, 901, 902])
    assert chosen == sorted(random.Random(17).sample(deforming, 3) + [900, 901, 902])
    assert hephaestus.balance([], [4, 5]) == []
    assert hephaestus.balance([4, 5], []) == []


def test_split_sizes_match_the_paper() -> None:
    assignment = hephaestus.split(range(1162))
    counts = {name: list(assignment.values()).count(name) for name in ("train", "val", "test")}
    assert counts == {"train": 940, "val": 105, "test": 117}
    assert sorted(assignment) == list(range(1162))


@pytest.mark.parametrize(("n", "sizes"), [(10, (8, 1, 1)), (100, (81, 9, 10)), (1, (0, 0, 1)), (0, (0, 0, 0))])
def test_split_sizes_round_up_like_datasets(n: int, sizes: tuple[int, int, int]) -> None:
    assignment = list(hephaestus.split(range(n)).values())
    assert (assignment.count("train"), assignment.count("val"), assignment.count("test")) == sizes


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    ids = list(range(500, 1500, 3))
    first = hephaestus.split(ids)
    assert first == hephaestus.split(list(reversed(ids)))
    assert first != hephaestus.split(ids, seed=18)


def test_mode_groups() -> None:
    assert [hephaestus.mode_group(m) for m in ("P", "RGBA", "RGB", "L")] == ["P", "RGBA", "other", "other"]
