"""Tests for the training package and the ``train``/``evaluate`` commands.

Everything is real: datasets of small PNGs with grammar captions written to a temp dir, a
micro BLIP preset (32 px images, one 32-wide layer per tower) trained from scratch for two
epochs, a FAISS index, the model store on disk, and the CLI through ``CliRunner``. The same
micro shape as a GIT (``--arch git``) goes through training, ``caption`` and ``watch --once``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from helpers import MICRO_GIT_PRESET, MICRO_PRESET
from PIL import Image
from rich.progress import Progress
from rouge_score import rouge_scorer
from typer.testing import CliRunner, Result

from insarwatch.captioner import Captioner
from insarwatch.captioners import architecture_of
from insarwatch.captioners.blip import ConvStem
from insarwatch.cli import app
from insarwatch.config import CaptioningSettings, load_settings
from insarwatch.errors import InputError
from insarwatch.findings import parse_caption
from insarwatch.manifest import write_dataset_input
from insarwatch.registry import ModelVersion
from training import TrainingInterrupted, list_presets, load_preset, train
from training.dataset import CaptionCollator, load_dataset
from training.factory import create_from_scratch
from training.ship import quiet_patches, recalibrate
from training.metrics import caption_scores, deformation_scores
from training.vocab import train_tokenizer

LOCATIONS = ("top", "bottom", "left", "right")
KINDS = ("mogi", "sill", "dyke")
QUIET = "Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere " \
        "can be detected around the area. No deformation activity can be detected."
ENV = {"INSARWATCH_CAPTIONING__MAX_NEW_TOKENS": "12", "INSARWATCH_CAPTIONING__NUM_BEAMS": "2",
       "INSARWATCH_CAPTIONING__DEVICE": "cpu"}


def _caption(index: int) -> tuple[str, bool]:
    if index % 2:
        return QUIET, False
    kind, where = KINDS[index % 3], LOCATIONS[index % 4]
    return f"A {kind}-type deformation pattern of high intensity can be detected on the {where} side of the image.", True


def _image(index: int, deformation: bool) -> np.ndarray:
    rng = np.random.default_rng(index)
    pixels = rng.integers(60, 200, size=(40, 40, 3), dtype=np.uint8)
    if deformation:
        y, x = np.mgrid[0:40, 0:40]
        rings = (np.sin(np.hypot(x - 20, y - 20) * 1.5) > 0)
        pixels[rings] = (230, 30, 30)
    return pixels


def make_dataset(root: Path, n: int = 30) -> Path:
    """``n`` images with manifest: every 5th is test, every 7th (not test) is val."""
    (root / "images").mkdir(parents=True)
    lines = []
    for index in range(n):
        caption, deformation = _caption(index)
        Image.fromarray(_image(index, deformation)).save(root / "images" / f"{index}.png")
        split = "test" if index % 5 == 0 else "val" if index % 7 == 0 else "train"
        lines.append(json.dumps({
            "id": f"p{index}", "image": f"images/{index}.png", "caption": caption, "deformation": deformation,
            "activity_type": ["Mogi"] if deformation else [], "intensity": ["High"] if deformation else [],
            "split": split,
        }))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def dataset_root(train_config: dict) -> Path:
    return Path(train_config["dataset"])


def run(args: list[str], var: Path) -> Result:
    return CliRunner().invoke(app, args, env={**ENV, "INSARWATCH_VAR_DIR": str(var)})


@pytest.fixture(scope="module")
def micro_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "micro.json"
    path.write_text(json.dumps(MICRO_PRESET), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "dataset")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset: Path, micro_preset: Path) -> tuple[Path, dict]:
    """A var dir holding one version trained by ``insarwatch train``, and the command's JSON."""
    var = tmp_path_factory.mktemp("var")
    result = run(["train", "--data", str(dataset), "--preset", str(micro_preset), "--json"], var)
    assert result.exit_code == 0, result.output
    return var, json.loads(result.stdout)


def test_train_registers_a_complete_version_and_makes_it_current(trained: tuple[Path, dict]) -> None:
    var, outcome = trained
    version = ModelVersion.at(var / "models" / outcome["version"])
    assert outcome["made_current"] and not outcome["interrupted"]
    assert (var / "models" / "current").resolve() == version.path.resolve()
    for path in (version.index_file, version.records_file, version.metrics_file, version.predictions_file,
                 version.train_config_file, *(version.captioner_dir / name for name in (
                     "model.safetensors", "config.json", "tokenizer.json", "processor_config.json"))):
        assert path.is_file(), path
    assert not list((var / "models").glob(".staging-*"))
    metrics = json.loads(version.metrics_file.read_text())
    assert set(metrics) >= {"rouge1", "rouge2", "rougeL", "bleu", "retrieval_exact_match", "deformation_precision",
                            "deformation_recall", "deformation_f1", "n_test", "seconds"}
    assert metrics["n_test"] == 6
    config = json.loads(version.train_config_file.read_text())
    assert config["samples"] == {"train": 20, "val": 4, "test": 6}
    assert config["model_input"] == version.model_input == "paper"  # prepare's dataset.json, default input
    assert [epoch["epoch"] for epoch in config["history"]] == [1, 2]
    records = version.records_file.read_text().splitlines()
    assert len(records) == 20
    # The frame decision is calibrated on the validation split's quiet tiles, one score each.
    quiet_val = sum(1 for line in (dataset_root(config) / "manifest.jsonl").read_text().splitlines()
                    if json.loads(line)["split"] == "val" and not json.loads(line)["deformation"])
    calibration = json.loads(version.calibration_file.read_text())
    assert len(calibration["quiet_scores"]) == quiet_val > 0
    assert all(0.0 <= score <= 1.0 for score in calibration["quiet_scores"])
    assert version.index_transform_file.is_file()
    # Both labels are indexed, so the index carries its detector, checksummed with the rest.
    assert version.index_detector_file.is_file()
    assert {ModelVersion.INDEX_TRANSFORM_FILE, ModelVersion.INDEX_DETECTOR_FILE} <= set(
        json.loads(version.checksums_file.read_text()))


STEMMED_PRESET = {
    **MICRO_PRESET, "name": "micro-stem",
    "model": {**MICRO_PRESET["model"], "vision": {**MICRO_PRESET["model"]["vision"], "conv_stem": [4, 8, 16, 16]}},
    "training": {**MICRO_PRESET["training"], "epochs": 1, "deformation_weight": 1.0},
}


def test_a_convolutional_stem_with_a_deformation_probe_trains_and_loads_as_the_service_loads_it(
        tmp_path: Path, dataset: Path) -> None:
    preset = tmp_path / "micro-stem.json"
    preset.write_text(json.dumps(STEMMED_PRESET), encoding="utf-8")
    result = run(["train", "--data", str(dataset), "--preset", str(preset), "--json"], tmp_path / "var")
    assert result.exit_code == 0, result.output
    version = ModelVersion.at(tmp_path / "var" / "models" / json.loads(result.stdout)["version"])
    config = json.loads(version.train_config_file.read_text())
    assert "deformation_f1" in config["history"][0]["val"]
    captioner = Captioner.load(version.captioner_dir, CaptioningSettings())
    stem = captioner.model.vision_model.embeddings.patch_embedding
    assert isinstance(stem, ConvStem) and [layer.out_channels for layer in stem if hasattr(layer, "out_channels")] \
        == [4, 8, 16, 16, 32]
    # The probe trains the encoder but is not part of the model the service loads.
    assert not [name for name in captioner.model.state_dict() if "probe" in name]


@pytest.mark.parametrize(("vision", "reason"), [
    ({"conv_stem": [4, 8, 16]}, "needs one width per halving of patch_size 16 (4 for a power of two), got 3"),
    ({"conv_stem": [4, 8], "patch_size": 12}, "needs one width per halving of patch_size 12"),
])
def test_a_stem_that_does_not_fit_the_patch_size_is_refused_in_one_line(tmp_path: Path, vision: dict,
                                                                         reason: str) -> None:
    preset = {**MICRO_PRESET, "model": {**MICRO_PRESET["model"], "vision": {**MICRO_PRESET["model"]["vision"],
                                                                             **vision}}}
    (tmp_path / "bad.json").write_text(json.dumps(preset), encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(reason)):
        load_preset(str(tmp_path / "bad.json"))


def test_recalibrating_on_quiet_synthetic_patches_scores_each_of_them(trained: tuple[Path, dict],
                                                                      tmp_path: Path) -> None:
    var, outcome = trained
    version = ModelVersion.at(shutil.copytree(var / "models" / outcome["version"], tmp_path / "version"))
    settings = load_settings(None, {"INSARWATCH_VAR_DIR": str(tmp_path / "var")})
    quiet = quiet_patches(24, 5, settings)
    assert 0 < len(quiet) < 24  # deforming and flagged patches are left out
    recalibrate(version, settings, patches=24, seed=5)
    calibration = json.loads(version.calibration_file.read_text())
    assert calibration["source"] == f"{len(quiet)} quiet synthetic patches of seed 5 (python -m training.ship)"
    assert len(calibration["quiet_scores"]) == len(quiet)
    assert all(0.0 <= score <= 1.0 for score in calibration["quiet_scores"])
    version.verify()  # the calibration is not a checksummed file: rewriting it keeps the version loadable


def test_recalibrating_a_version_built_before_the_detector_gives_it_the_one_building_would_have(
        trained: tuple[Path, dict], tmp_path: Path) -> None:
    var, outcome = trained
    version = ModelVersion.at(shutil.copytree(var / "models" / outcome["version"], tmp_path / "version"))
    built = version.index_detector_file.read_bytes()
    version.index_detector_file.unlink()  # what an older version holds
    version.record_checksums()
    recalibrate(version, load_settings(None, {"INSARWATCH_VAR_DIR": str(tmp_path / "var")}), patches=8, seed=5)
    assert version.index_detector_file.read_bytes() == built  # refitted on the stored vectors: the same
    assert ModelVersion.INDEX_DETECTOR_FILE in json.loads(version.checksums_file.read_text())
    version.verify()


def test_metrics_json_is_recomputable_from_predictions(trained: tuple[Path, dict]) -> None:
    var, outcome = trained
    version = ModelVersion.at(var / "models" / outcome["version"])
    rows = [json.loads(line) for line in version.predictions_file.read_text().splitlines()]
    assert {tuple(sorted(row)) for row in rows} == {
        ("deformation_true", "generated", "id", "reference", "retrieved", "similarity")}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(row["reference"], row["generated"]) for row in rows]
    expected = {name: sum(s[name].fmeasure for s in scores) / len(rows) for name in ("rouge1", "rouge2", "rougeL")}
    expected["bleu"] = sacrebleu.corpus_bleu(
        [row["generated"] for row in rows], [[row["reference"] for row in rows]], lowercase=True, tokenize="intl"
    ).score
    expected["retrieval_exact_match"] = sum(row["retrieved"] == row["reference"] for row in rows) / len(rows)
    predicted = [parse_caption(row["generated"]).deformation for row in rows]
    hits = sum(p and row["deformation_true"] for p, row in zip(predicted, rows))
    precision = hits / sum(predicted) if any(predicted) else 0.0
    recall = hits / sum(row["deformation_true"] for row in rows)
    expected["deformation_precision"] = precision
    expected["deformation_recall"] = recall
    expected["deformation_f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    metrics = json.loads(version.metrics_file.read_text())
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_evaluate_reproduces_the_registered_metrics(trained: tuple[Path, dict], dataset: Path) -> None:
    var, outcome = trained
    result = run(["evaluate", "--model", outcome["version"], "--data", str(dataset), "--json"], var)
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)["metrics"]
    saved = ModelVersion.at(var / "models" / outcome["version"]).metrics()
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in saved.items() if k != "seconds"}


def test_evaluate_refuses_a_dataset_of_another_input(trained: tuple[Path, dict], dataset: Path,
                                                     tmp_path: Path) -> None:
    var, outcome = trained
    phase = tmp_path / "phase"
    shutil.copytree(dataset, phase)
    write_dataset_input(phase, "phase")
    result = run(["evaluate", "--model", outcome["version"], "--data", str(phase)], var)
    assert result.exit_code == 2
    assert f"manifest.jsonl: holds 'phase' images; model {outcome['version']} was trained on 'paper'" in result.output


def test_failed_evaluation_keeps_the_version_but_not_as_current(
    trained: tuple[Path, dict], dataset: Path, micro_preset: Path, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    shutil.copytree(trained[0], var, symlinks=True)
    broken = tmp_path / "dataset"
    shutil.copytree(dataset, broken)
    (broken / "images" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # p5 is a test image
    before = (var / "models" / "current").resolve()
    result = run(["train", "--data", str(broken), "--preset", str(micro_preset)], var)
    assert result.exit_code == 2
    assert "5.png" in result.output and "current unchanged" in result.output
    assert (var / "models" / "current").resolve() == before
    versions = sorted(p.name for p in (var / "models").iterdir() if not p.name.startswith(".") and p.name != "current")
    assert len(versions) == 2
    newest = ModelVersion.at(var / "models" / versions[-1])
    assert (newest.captioner_dir / "model.safetensors").is_file() and not newest.metrics_file.exists()


def test_only_if_better_does_not_replace_a_better_current(
    trained: tuple[Path, dict], dataset: Path, micro_preset: Path, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    shutil.copytree(trained[0], var, symlinks=True)
    current = var / "models" / "current"
    metrics_path = ModelVersion.at(current).metrics_file
    metrics = json.loads(metrics_path.read_text())
    metrics["rougeL"] = 1.5  # unbeatable
    metrics_path.write_text(json.dumps(metrics))
    before = current.resolve()
    result = run(["train", "--data", str(dataset), "--preset", str(micro_preset), "--only-if-better", "--json"], var)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert not outcome["made_current"] and "< 1.5000" in outcome["reason"]
    assert current.resolve() == before


@pytest.mark.parametrize("arch", ["blip", "git"])
def test_base_fine_tunes_a_local_snapshot_keeping_its_vocabulary(
    arch: str, dataset: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    snapshot = request.getfixturevalue(f"tiny_{arch}_dir")
    preset = request.getfixturevalue({"blip": "micro_preset", "git": "micro_git_preset"}[arch])
    result = run(["train", "--data", str(dataset), "--base", str(snapshot), "--preset", str(preset),
                  "--epochs", "1", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    captioner = ModelVersion.at(json.loads(result.stdout)["path"]).captioner_dir
    vocabulary = [json.loads((d / "tokenizer.json").read_text())["model"]["vocab"] for d in (captioner, snapshot)]
    assert vocabulary[0] == vocabulary[1]
    config = json.loads((captioner / "config.json").read_text())
    assert config["model_type"] == arch and config["vision_config"]["image_size"] == 64
    result = run(["train", "--data", str(dataset), "--base", str(tmp_path / "nowhere")], tmp_path)
    assert result.exit_code == 2 and "nowhere: model directory does not exist" in result.output


class CtrlCDuring(Progress):
    """A real progress display, except that the user presses Ctrl-C once a given epoch starts."""

    def __init__(self, epoch: int) -> None:
        super().__init__(disable=True)
        self.marker = f"epoch {epoch}/"

    def reset(self, task_id, **fields) -> None:
        super().reset(task_id, **fields)
        if str(fields.get("description", "")).startswith(self.marker):
            raise KeyboardInterrupt


def test_ctrl_c_keeps_the_best_epoch_and_registers_it_without_making_it_current(
    dataset: Path, micro_preset: Path, tmp_path: Path
) -> None:
    settings = load_settings(environ={**ENV, "INSARWATCH_VAR_DIR": str(tmp_path)})
    preset = load_preset(str(micro_preset)).with_training(epochs=3)
    outcome = train(dataset, preset, settings, CtrlCDuring(epoch=2))
    assert outcome.fit.interrupted and outcome.fit.best_epoch == 1 and len(outcome.fit.history) == 1
    assert not outcome.made_current and not (tmp_path / "models" / "current").exists()
    assert (outcome.version.captioner_dir / "model.safetensors").is_file()
    assert outcome.version.metrics_file.is_file()


def test_ctrl_c_in_the_first_epoch_leaves_nothing_behind(dataset: Path, micro_preset: Path, tmp_path: Path) -> None:
    settings = load_settings(environ={**ENV, "INSARWATCH_VAR_DIR": str(tmp_path)})
    with pytest.raises(TrainingInterrupted, match="nothing kept"):
        train(dataset, load_preset(str(micro_preset)), settings, CtrlCDuring(epoch=1))
    assert list((tmp_path / "models").iterdir()) == []


def _write_manifest(root: Path, lines: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _good_line(**changes) -> str:
    return json.dumps({"id": "p0", "image": "images/0.png", "caption": QUIET, "deformation": False,
                       "activity_type": [], "intensity": [], "split": "train", **changes})


@pytest.mark.parametrize(
    ("case", "named", "reason"),
    [
        ("no directory", "missing", "does not exist"),
        ("no manifest", "manifest.jsonl", "no manifest"),
        ("empty manifest", "manifest.jsonl", "lists no images"),
        ("malformed line", "manifest.jsonl:2", "not valid JSON"),
        ("missing field", "manifest.jsonl:1", "field 'caption'"),
        ("wrong split", "manifest.jsonl:1", "field 'split'"),
        ("missing image", "images/99.png", "line 2 does not exist"),
        ("duplicate id", "manifest.jsonl:2", "duplicate id"),
        ("no test split", "manifest.jsonl", "'test' split"),
        ("no train split", "manifest.jsonl", "'train' split"),
    ],
)
def test_bad_datasets_are_one_line_input_errors(
    case: str, named: str, reason: str, dataset: Path, micro_preset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ds"
    if case == "no directory":
        root = tmp_path / "missing"
    elif case == "no manifest":
        root.mkdir()
    elif case == "empty manifest":
        _write_manifest(root, [])
    else:
        shutil.copytree(dataset / "images", root / "images")
        lines = {
            "malformed line": [_good_line(), '{"id": "p1", "image": '],
            "missing field": [json.dumps({"id": "p0", "image": "images/0.png", "deformation": False, "split": "train"})],
            "wrong split": [_good_line(split="training")],
            "missing image": [_good_line(), _good_line(id="p9", image="images/99.png")],
            "duplicate id": [_good_line(), _good_line(image="images/1.png")],
            "no test split": [_good_line(), _good_line(id="p1", image="images/1.png", split="val")],
            "no train split": [_good_line(split="test")],
        }[case]
        _write_manifest(root, lines)
    result = run(["train", "--data", str(root), "--preset", str(micro_preset)], tmp_path / "var")
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.count("\n") == 0 and message.startswith("error: ")
    assert named in message and reason in message
    assert not (tmp_path / "var" / "models").exists() or not any((tmp_path / "var" / "models").iterdir())


def test_unknown_preset_and_missing_model_are_input_errors(dataset: Path, tmp_path: Path) -> None:
    result = run(["train", "--data", str(dataset), "--preset", "enormous"], tmp_path)
    assert result.exit_code == 2 and "enormous: unknown preset" in result.output and "tiny" in result.output
    result = run(["evaluate", "--model", "20990101T000000Z", "--data", str(dataset)], tmp_path)
    assert result.exit_code == 2 and "20990101T000000Z" in result.output


def test_vocabulary_round_trip_reads_like_fine_tuned_blip(tmp_path: Path) -> None:
    captions = [_caption(i)[0] for i in range(12)]
    tokenizer = train_tokenizer(captions, vocab_size=200)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4, 5]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    assert tokenizer.bos_token == "[DEC]" and len(tokenizer) <= 200
    ids = tokenizer(captions[0])["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == ("a mogi - type deformation pattern of high intensity can be detected on the top side of "
                       "the image.")
    assert train_tokenizer(reversed(captions), vocab_size=200).get_vocab() == tokenizer.get_vocab()
    tokenizer.save_pretrained(tmp_path)
    from transformers import BertTokenizerFast

    again = BertTokenizerFast.from_pretrained(tmp_path, local_files_only=True)
    assert again(captions[1])["input_ids"] == tokenizer(captions[1])["input_ids"]
    assert again.bos_token_id == tokenizer.bos_token_id


def test_collator_starts_captions_with_dec_and_ignores_padding(dataset: Path) -> None:
    train_split = load_dataset(dataset).split("train")
    model, processor = create_from_scratch(load_preset("tiny").model, [s.caption for s in train_split])
    batch = CaptionCollator(processor, max_length=64)(train_split[:3])
    cached = CaptionCollator(processor, max_length=64, cache_bytes=2**30)
    for _ in range(2):
        assert torch.equal(cached(train_split[:3])["pixel_values"], batch["pixel_values"])
    assert batch["pixel_values"].shape == (3, 3, 112, 112)
    assert (batch["input_ids"][:, 0] == processor.tokenizer.bos_token_id).all()
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["labels"][padded] == -100).all()
    assert (batch["labels"][~padded] == batch["input_ids"][~padded]).all()
    assert batch.pop("deformation").tolist() == [float(s.deformation) for s in train_split[:3]]
    assert_training_loss_is_the_models(model, batch)
    assert model(**batch).loss.item() == pytest.approx(math.log(len(processor.tokenizer)), rel=0.2)


def assert_training_loss_is_the_models(model, batch: dict) -> None:
    """The loop's one pass gives the transformers model's own loss and the retrieval embedding."""
    architecture = architecture_of(model)
    model.eval()
    with torch.no_grad():
        loss, embedding = architecture.training_loss(batch)
        assert loss.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
        assert torch.allclose(embedding, architecture.vision(batch["pixel_values"])[1], atol=1e-5)


def test_presets_are_data_and_tiny_has_a_few_million_parameters() -> None:
    assert {"tiny", "base"} <= set(list_presets())
    base = load_preset("base")
    assert base.model.image_size == 384 and base.model.vision["hidden_size"] == 768
    tiny = load_preset("tiny")
    model, processor = create_from_scratch(tiny.model, [QUIET, _caption(0)[0]])
    parameters = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < parameters < 10_000_000
    assert processor.image_processor.size == {"height": tiny.model.image_size, "width": tiny.model.image_size}


def test_metric_helpers_score_blip_style_output_as_a_match() -> None:
    reference = "A sill-type deformation pattern of low intensity can be detected on the central side."
    generated = "a sill - type deformation pattern of low intensity can be detected on the central side."
    scores = caption_scores([generated], [reference])
    assert scores["rougeL"] == pytest.approx(1.0) and scores["bleu"] == pytest.approx(100.0)
    assert deformation_scores([True, True, False, False], [True, False, True, False]) == {
        "deformation_precision": 0.5, "deformation_recall": 0.5, "deformation_f1": 0.5}
    assert deformation_scores([False, False], [False, False])["deformation_f1"] == 0.0


@pytest.fixture(scope="module")
def micro_git_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "micro-git.json"
    path.write_text(json.dumps(MICRO_GIT_PRESET), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_git(tmp_path_factory: pytest.TempPathFactory, dataset: Path, micro_git_preset: Path) -> tuple[Path, dict]:
    var = tmp_path_factory.mktemp("var-git")
    result = run(["train", "--data", str(dataset), "--arch", "git", "--preset", str(micro_git_preset), "--json"], var)
    assert result.exit_code == 0, result.output
    return var, json.loads(result.stdout)


def test_train_arch_git_registers_a_git_version_named_in_its_train_config(trained_git: tuple[Path, dict]) -> None:
    var, outcome = trained_git
    version = ModelVersion.at(var / "models" / outcome["version"])
    assert outcome["made_current"] and (var / "models" / "current").resolve() == version.path.resolve()
    config = json.loads(version.train_config_file.read_text())
    assert config["architecture"] == "git" and config["preset"]["model"]["architecture"] == "git"
    assert json.loads((version.captioner_dir / "config.json").read_text())["model_type"] == "git"
    metrics = json.loads(version.metrics_file.read_text())
    assert metrics["n_test"] == 6 and 0 <= metrics["rougeL"] <= 1
    assert len(version.records_file.read_text().splitlines()) == 20


def test_a_git_version_is_evaluated_captioned_and_watched_like_a_blip_one(
    trained_git: tuple[Path, dict], dataset: Path, tmp_path: Path
) -> None:
    from insarwatch.store import Store
    from insarwatch.synthetic.drop import write_drop

    var, outcome = trained_git
    result = run(["evaluate", "--model", outcome["version"], "--data", str(dataset), "--json"], var)
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)["metrics"]
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in outcome["metrics"].items() if k != "seconds"}

    png = tmp_path / "tile.png"
    Image.fromarray(_image(0, True)).resize((112, 112)).save(png)  # frames under 56 px are rejected
    result = run(["caption", str(png), "--json"], var)
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["caption"] and len(row["neighbours"]) == 5

    drop = tmp_path / "drop"
    write_drop(drop, frames=1, seed=5, size=(448, 448), pairs=1)
    config = tmp_path / "insarwatch.toml"
    config.write_text(f"""
var_dir = "{var}"
drop_dir = "{drop}"
[watch]
settle_seconds = 0
[captioning]
num_beams = 2
max_new_tokens = 12
device = "cpu"
[digest]
enabled = false
""", encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(config), "watch", "--once"])
    assert result.exit_code == 0, result.output
    with Store(var / "state.db", readonly=True) as store:
        (done,) = store.in_state("done")
    assert done.model_version == outcome["version"]


def test_arch_and_preset_must_agree_and_the_default_follows_the_architecture(
    dataset: Path, micro_preset: Path, tmp_path: Path, tiny_git_dir: Path
) -> None:
    from training import choose_preset

    assert choose_preset(None, "git", None).name == "git-tiny"
    assert choose_preset(None, None, tiny_git_dir).name == "git-base"
    assert choose_preset(None, None, None).name == "tiny"
    result = run(["train", "--data", str(dataset), "--arch", "git", "--preset", str(micro_preset)], tmp_path)
    assert result.exit_code == 2 and "preset is for 'blip', not --arch git" in result.output
    result = run(["train", "--data", str(dataset), "--arch", "lstm"], tmp_path)
    assert result.exit_code == 2 and "unknown architecture 'lstm'" in result.output
    result = run(["train", "--data", str(dataset), "--base", str(tiny_git_dir), "--preset", str(micro_preset)],
                 tmp_path)
    assert result.exit_code == 2 and "is a 'git' model but preset 'micro' is for 'blip'" in result.output


def test_git_presets_are_data_and_git_tiny_has_a_few_million_parameters(dataset: Path) -> None:
    assert {"git-tiny", "git-base"} <= set(list_presets())
    base = load_preset("git-base")
    assert base.model.architecture == "git" and base.model.image_size == 224 and base.model.vocab_size == 30522
    tiny = load_preset("git-tiny")
    model, processor = create_from_scratch(tiny.model, [QUIET, _caption(0)[0]])
    assert type(model).__name__ == "GitForCausalLM"
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    # GIT learns captions as [CLS] ... [SEP]: the collator starts them with the model's start token.
    batch = CaptionCollator(processor, max_length=64, start_token_id=model.config.bos_token_id)(
        load_dataset(dataset).split("train")[:3])
    assert (batch["input_ids"][:, 0] == processor.tokenizer.cls_token_id).all()
    assert batch["pixel_values"].shape == (3, 3, tiny.model.image_size, tiny.model.image_size)
    batch.pop("deformation")
    assert_training_loss_is_the_models(model, batch)
    assert model(**batch).loss.item() == pytest.approx(math.log(len(processor.tokenizer)), rel=0.2)
