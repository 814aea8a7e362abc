"""Shared fixtures: a tiny but real BLIP captioner saved with ``save_pretrained``.

The model has BLIP's exact architecture at toy size (64 px input, 16 px patches, two
32-wide layers per tower, a WordPiece vocabulary of ~150 entries learnt from a few expert
captions), so loading, preprocessing, the vision pass and beam search all run the real
transformers code in milliseconds. ``tiny_blip_dir`` is built once per session; use
``tiny_blip_builder`` for a variant (another image size, a tokenizer that does not fit).
``tiny_git_dir``/``tiny_git_builder`` do the same for GIT.
``tiny_var_dir`` is an installation whose current model is that captioner plus a FAISS
index of six expert-captioned tiles (``tiny_index_images``/``TINY_RECORDS``), for tests of
anything that loads a model version; ``tiny_version_stager`` stages more versions.
``frames`` (synthetic interferograms to drop), ``notify_socket`` and ``small_disk`` (a
real 48 MB tmpfs to fill) serve the tests that run the daemon; ``micro_demo`` is one
``insarwatch demo`` run (a trained micro model) for the demo and triage tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests run toy-sized models on a shared CPU: one OpenMP/BLAS thread is faster than several
# spinning against each other (25x on the 2-core CI host under load; numpy's SVD of a
# 2,000-vector index took 5.8 s against 0.05 s). Set before numpy loads OpenBLAS, which reads
# it then (as torch does); subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402 (after the thread count)
from helpers import MICRO_PRESET, NotifySocket, Webhook  # noqa: E402

from insarwatch.registry import ModelStore, ModelVersion  # noqa: E402

# (caption, deformation, activity types, intensities): the tiny index's expert records.
# Even positions deform and odd ones do not, which tests rely on.
TINY_RECORDS = (
    ("A dyke - type deformation pattern of high intensity can be detected on the top side of the image.",
     True, ("Dyke",), ("High",)),
    ("No deformation activity can be detected.", False, (), ()),
    ("A mogi - type deformation pattern of low intensity can be detected in the center of the image.",
     True, ("Mogi",), ("Low",)),
    ("Stratification effect can be detected on the left side. No deformation activity can be detected.",
     False, (), ()),
    ("A sill - type deformation pattern of medium intensity can be detected on the bottom side of the image.",
     True, ("Sill",), ("Medium",)),
    ("Turbulent mixing effect can be detected on the top, right and bottom side. "
     "No deformation activity can be detected.", False, (), ()),
)
TINY_CAPTIONS = tuple(caption for caption, *_ in TINY_RECORDS) + (
    "An earthquake - type deformation pattern can be detected on the right side of the image.",
    "A spheroid - type deformation pattern of low intensity can be detected on the left side of the image.",
)
TINY_IMAGE_SIZE = 64


def tiny_tokenizer(vocab_size: int):
    """A BERT-style WordPiece tokenizer learnt from ``TINY_CAPTIONS`` ([DEC] is BLIP's start token)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    wordpiece.train_from_iterator(TINY_CAPTIONS, trainer)
    return BertTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", bos_token="[DEC]",
    )


def build_tiny_blip(
    directory: Path,
    *,
    image_size: int = TINY_IMAGE_SIZE,
    processor_image_size: int | None = None,
    vocab_size: int = 160,
    model_vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny BLIP + processor into ``directory`` (safetensors).

    ``processor_image_size`` and ``model_vocab_size`` let a test save a processor that does
    not fit its model, as a careless hand-copied snapshot would.
    """
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tokenizer = tiny_tokenizer(vocab_size)
    processor_size = processor_image_size or image_size
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": processor_size, "width": processor_size}),
        tokenizer=tokenizer,
    )
    tower: dict[str, Any] = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    }
    config = BlipConfig(
        # BLIP's default vision init (1e-10) would make every image look alike to a random model.
        vision_config={**tower, "image_size": image_size, "patch_size": 16, "initializer_range": 0.02},
        text_config={
            **tower,
            "vocab_size": model_vocab_size or len(tokenizer),
            "max_position_embeddings": 128,
            # Wider than BLIP's 0.02 so a random decoder's words depend on the image.
            "initializer_range": 0.1,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


def build_tiny_git(
    directory: Path,
    *,
    image_size: int = TINY_IMAGE_SIZE,
    processor_image_size: int | None = None,
    vocab_size: int = 160,
    model_vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny GIT + processor into ``directory`` (safetensors).

    GIT's layout at toy size: a CLIP vision tower (64 px, 16 px patches: 17 image tokens),
    a projection, and a two-layer decoder reading image tokens and text in one sequence;
    captions start with [CLS] and end with [SEP], as microsoft/git-base's do.
    """
    import torch
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = tiny_tokenizer(vocab_size)
    size = processor_image_size or image_size
    processor = GitProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer,
    )
    tower: dict[str, Any] = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    }
    config = GitConfig(
        vision_config={**tower, "image_size": image_size, "patch_size": 16},
        **tower,
        vocab_size=model_vocab_size or len(tokenizer),
        max_position_embeddings=128,
        # Wider than GIT's 0.02 so a random decoder's words depend on the image.
        initializer_range=0.1,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GitForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_git_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GIT captioner directory shared by the whole session; treat it as read-only."""
    return build_tiny_git(tmp_path_factory.mktemp("tiny-git") / ModelVersion.CAPTIONER_DIR)


@pytest.fixture(scope="session")
def tiny_git_builder() -> Callable[..., Path]:
    return build_tiny_git


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BLIP captioner directory shared by the whole session; treat it as read-only."""
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip") / ModelVersion.CAPTIONER_DIR)


@pytest.fixture(scope="session")
def tiny_blip_builder() -> Callable[..., Path]:
    return build_tiny_blip


def tiny_index_images() -> list[np.ndarray]:
    """The tiles the tiny index is built from: ``TINY_RECORDS[i]`` describes image ``i``."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in TINY_RECORDS]


def stage_tiny_version(store: ModelStore, captioner_dir: Path, *, index_dim: int | None = None,
                       metrics: dict[str, Any] | None = None) -> Path:
    """A staged version laid out as training writes it: ``captioner/``, index, metrics.

    The index holds the captioner's own embeddings of ``tiny_index_images()`` (or random
    vectors of ``index_dim``, an index built by some other model).
    """
    from insarwatch.captioner import Captioner
    from insarwatch.config import CaptioningSettings, RetrievalSettings
    from insarwatch.retrieval import IndexRecord, RetrievalIndex

    staged = store.stage()
    version = ModelVersion.at(staged)
    shutil.copytree(captioner_dir, version.captioner_dir)
    retrieval = RetrievalSettings()
    if index_dim is None:
        embeddings = Captioner.load(version.captioner_dir, CaptioningSettings()).embed(tiny_index_images(),
                                                                                     retrieval.feature)
    else:
        embeddings = np.random.default_rng(1).normal(size=(len(TINY_RECORDS), index_dim)).astype(np.float32)
    records = [
        IndexRecord(caption, deformation, activity, intensity, f"img{i}")
        for i, (caption, deformation, activity, intensity) in enumerate(TINY_RECORDS)
    ]
    RetrievalIndex.build(embeddings, records, retrieval).save(staged)
    version.metrics_file.write_text(json.dumps(metrics or {"rougeL": 0.7}), encoding="utf-8")
    return staged


@pytest.fixture(scope="session")
def tiny_index_tiles() -> list[np.ndarray]:
    return tiny_index_images()


@pytest.fixture(scope="session")
def tiny_version_stager() -> Callable[..., Path]:
    """``stage_tiny_version(store, captioner_dir, index_dim=None, metrics=None) -> staged dir``."""
    return stage_tiny_version


@pytest.fixture
def tiny_var_dir(tmp_path: Path, tiny_blip_dir: Path) -> Path:
    """A ``var_dir`` whose ``models/current`` is a registered tiny version with its index."""
    var_dir = tmp_path / "var"
    store = ModelStore(var_dir / "models")
    store.register(stage_tiny_version(store, tiny_blip_dir), make_current=True)
    return var_dir


@pytest.fixture(scope="session")
def micro_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    """``insarwatch demo`` run once for the session at test size (one frame, 40 patches, the
    micro preset): its work directory (drop, training set, trained model, reports), the
    arguments it was run with and what it printed. Tests that write to it copy it first."""
    from typer.testing import CliRunner

    from insarwatch.cli import app

    root = tmp_path_factory.mktemp("micro-demo")
    preset = root / "micro.json"
    preset.write_text(json.dumps(MICRO_PRESET), encoding="utf-8")
    workdir = root / "demo"
    args = ["demo", "--workdir", str(workdir), "--frames", "1", "--patches", "40", "--preset", str(preset)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    return workdir, args, first.output


@pytest.fixture(scope="session")
def real_annotations_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 19,919 real Hephaestus annotations (tests/data, MIT; no images), unpacked once:
    the directory that holds ``annotations/``."""
    import tarfile

    target = tmp_path_factory.mktemp("hephaestus-real")
    with tarfile.open(Path(__file__).parent / "data" / "hephaestus-annotations.tar.gz") as archive:
        archive.extractall(target, filter="data")
    (annotations,) = target.glob("**/annotations")
    return annotations.parent


@pytest.fixture(scope="session")
def frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Synthetic interferograms with coherence siblings: paths relative to their root, and the
    root; shared by the session (tests copy them into their drop), so treat them as read-only."""
    from insarwatch.synthetic.drop import write_drop

    source = tmp_path_factory.mktemp("frames")
    write_drop(source, frames=4, seed=5, size=(448, 448), pairs=2)
    return sorted(path.relative_to(source) for path in source.rglob("*.png")), source


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 48 MB file system that the test can fill up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()
