"""Model presets and the factory that turns one into a captioner (BLIP or GIT) ready to train.

A preset is a JSON file under ``training/presets/`` (or any path given instead of a name):
the architecture (``blip``, ``git``: the ``model_type`` the captioner is saved with), the
model shape (vision and text config keyword arguments, image size, vocabulary size) and
the training recipe (epochs, batch size, learning rate, decoding). Keeping them as data,
like open_clip's model configs, lets an observatory add a preset without touching code.
``create_from_scratch`` builds a randomly initialised model of the preset's architecture
with a vocabulary learnt from the training captions (``BUILDERS``); ``load_pretrained``
opens a snapshot from a local directory (never a hub) for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from transformers import (
    BlipConfig,
    BlipImageProcessor,
    BlipProcessor,
    BertTokenizerFast,
    CLIPImageProcessor,
    GitConfig,
    GitForCausalLM,
    GitProcessor,
)

from insarwatch.captioner import Captioner, read_architecture
from insarwatch.captioners.blip import BlipWithStem, stem_problem
from insarwatch.config import CaptioningSettings
from insarwatch.errors import InputError, one_line

from .vocab import SPECIAL_TOKENS, train_tokenizer

PRESET_DIR = Path(__file__).parent / "presets"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    architecture: str = Field("blip", description="The model_type of the captioner built: a key of BUILDERS")
    image_size: int = Field(gt=0, description="Square input size of the vision encoder, pixels")
    vision: dict[str, Any] = Field(description="Vision config arguments (image_size comes from above)")
    text: dict[str, Any] = Field(description="Text config arguments (vocabulary and token ids come from the tokenizer)")
    vocab_size: int = Field(gt=len(SPECIAL_TOKENS), description="Largest WordPiece vocabulary learnt from the captions")
    min_frequency: int = Field(1, ge=1, description="Words rarer than this in the captions are split into pieces")
    max_caption_tokens: int = Field(gt=2, description="Captions are truncated to this many tokens in training")

    @field_validator("architecture")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in BUILDERS:
            raise ValueError(f"unknown architecture {value!r}; known: {', '.join(BUILDERS)}")
        return value

    @model_validator(mode="after")
    def _stem_fits(self) -> ModelSpec:
        widths = self.vision.get("conv_stem")
        if widths is not None:
            if self.architecture != "blip":
                raise ValueError("vision.conv_stem is a BLIP option")
            problem = stem_problem(list(widths), int(self.vision.get("patch_size", 16)))
            if problem is not None:
                raise ValueError(f"vision.{problem}")
        return self


class TrainingSpec(_Spec):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    grad_accum_steps: int = Field(1, ge=1, description="Batches per optimiser step")
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of optimiser steps spent warming up")
    max_grad_norm: float = Field(1.0, gt=0)
    val_num_beams: int = Field(1, ge=1, description="Beam width for validation captions (1 = greedy, fast)")
    val_max_new_tokens: int = Field(64, ge=1, description="Longest validation caption, tokens")
    seed: int = 17
    augment: bool = Field(False, description="Random flips/rotations (captions rewritten), phase offsets and "
                          "sign flips of each training image, every epoch (training/augment.py)")
    deformation_weight: float = Field(0.0, ge=0, description="Weight of a linear probe's deformation loss on the "
                                      "retrieval embedding, beside the captioning loss (0: none; training/loop.py)")
    image_cache_mb: int = Field(1024, ge=0, description="Preprocessed training images kept in memory across epochs")


class Preset(_Spec):
    name: str
    description: str = ""
    model: ModelSpec
    training: TrainingSpec

    def with_training(self, **overrides: Any) -> Preset:
        """This preset with some training fields replaced (``None`` values are ignored)."""
        given = {key: value for key, value in overrides.items() if value is not None}
        data = self.model_dump()
        data["training"].update(given)
        try:
            return Preset.model_validate(data)
        except ValidationError as exc:
            raise InputError(f"preset {self.name}", one_line(exc, "key")) from None


def list_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> Preset:
    """A preset by registry name (``tiny``) or from a JSON file path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PRESET_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise InputError(name_or_path, f"unknown preset; known presets: {', '.join(list_presets())}")
    try:
        return Preset.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror}") from None
    except ValidationError as exc:
        raise InputError(path, one_line(exc, "key")) from None


def _blip(spec: ModelSpec, tokenizer: BertTokenizerFast) -> tuple[BlipWithStem, BlipProcessor]:
    image_processor = BlipImageProcessor(size={"height": spec.image_size, "width": spec.image_size})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = {
        **spec.text,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = BlipConfig(vision_config={**spec.vision, "image_size": spec.image_size}, text_config=text)
    return BlipWithStem(config), processor


def _git(spec: ModelSpec, tokenizer: BertTokenizerFast) -> tuple[GitForCausalLM, GitProcessor]:
    # Resized to the square without CLIP's centre crop: a tile's edges can hold the deformation.
    size = {"height": spec.image_size, "width": spec.image_size}
    processor = GitProcessor(image_processor=CLIPImageProcessor(size=size, do_center_crop=False), tokenizer=tokenizer)
    # Captions are [CLS] ... [SEP], as in microsoft/git-base.
    config = GitConfig(
        vision_config={**spec.vision, "image_size": spec.image_size},
        **spec.text,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GitForCausalLM(config), processor


BUILDERS = {"blip": _blip, "git": _git}


def create_from_scratch(spec: ModelSpec, captions: Iterable[str]) -> tuple[Any, Any]:
    """A randomly initialised model of ``spec``'s architecture and shape, with a vocabulary learnt from ``captions``."""
    return BUILDERS[spec.architecture](spec, train_tokenizer(captions, spec.vocab_size, spec.min_frequency))


def choose_preset(name: str | None, architecture: str | None, base: Path | None) -> Preset:
    """The preset ``insarwatch train`` uses: ``name``, or the architecture's tiny (base with ``--base``).

    Without ``architecture`` it is the named preset's, else the ``--base`` snapshot's, else BLIP;
    a named preset of another architecture is an ``InputError``.
    """
    if architecture is not None and architecture not in BUILDERS:
        raise InputError("--arch", f"unknown architecture {architecture!r}; known: {', '.join(BUILDERS)}")
    if name is None:
        if architecture is None and base is not None and base.is_dir():
            architecture = read_architecture(base).model_type
        size = "base" if base is not None else "tiny"
        name = size if architecture in (None, "blip") else f"{architecture}-{size}"
    preset = load_preset(name)
    if architecture is not None and preset.model.architecture != architecture:
        raise InputError(name, f"preset is for {preset.model.architecture!r}, not --arch {architecture}")
    return preset


def load_pretrained(directory: Path, settings: CaptioningSettings) -> tuple[Any, Any]:
    """A captioning snapshot from a local directory, checked as the service checks it."""
    captioner = Captioner.load(directory, settings)
    return captioner.model, captioner.processor
