"""Model presets and the factory that turns one into a BLIP captioner ready to train.

A preset is a JSON file under ``training/presets/`` (or any path given instead of a name):
the model shape (``BlipVisionConfig``/``BlipTextConfig`` keyword arguments, image size,
vocabulary size) and the training recipe (epochs, batch size, learning rate, decoding).
Keeping them as data, like open_clip's model configs, lets an observatory add a preset
without touching code. ``create_from_scratch`` builds a randomly initialised BLIP with a
vocabulary learnt from the training captions; ``load_pretrained`` opens a BLIP snapshot
from a local directory (never a hub) for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

from insarwatch.captioner import Captioner
from insarwatch.config import CaptioningSettings
from insarwatch.errors import InputError, one_line

from .vocab import SPECIAL_TOKENS, train_tokenizer

PRESET_DIR = Path(__file__).parent / "presets"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    image_size: int = Field(gt=0, description="Square input size of the vision encoder, pixels")
    vision: dict[str, Any] = Field(description="BlipVisionConfig arguments (image_size comes from above)")
    text: dict[str, Any] = Field(description="BlipTextConfig arguments (vocabulary and token ids come from the tokenizer)")
    vocab_size: int = Field(gt=len(SPECIAL_TOKENS), description="Largest WordPiece vocabulary learnt from the captions")
    min_frequency: int = Field(1, ge=1, description="Words rarer than this in the captions are split into pieces")
    max_caption_tokens: int = Field(gt=2, description="Captions are truncated to this many tokens in training")


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


def create_from_scratch(
    spec: ModelSpec, captions: Iterable[str]
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A randomly initialised BLIP of ``spec``'s shape with a vocabulary learnt from ``captions``."""
    tokenizer = train_tokenizer(captions, spec.vocab_size, spec.min_frequency)
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
    return BlipForConditionalGeneration(config), processor


def load_pretrained(
    directory: Path, settings: CaptioningSettings
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A BLIP captioning snapshot from a local directory, checked as the service checks it."""
    captioner = Captioner.load(directory, settings)
    return captioner.model, captioner.processor
