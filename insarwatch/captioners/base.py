"""What an architecture has to provide for insarwatch to caption with it.

``Architecture`` is the seam between the architecture-agnostic ``Captioner`` (loading
checks, batching, preprocessing threads, decoding settings, the ``VisionBatch`` and
``Caption`` records) and one model family's transformers classes: how its vision encoder
is run once per batch, how its decoder is driven from that single pass, how its retrieval
embedding is pooled, and which processor/tokenizer settings must agree with the model.
The checks shared by every architecture live here too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import InputError


class Architecture(ABC):
    """One captioning model family, bound to a loaded model (see the module docstring)."""

    model_type: ClassVar[str]  # config.json's ``model_type``
    label: ClassVar[str]  # how messages name it

    def __init__(self, model: Any) -> None:
        self.model = model

    @staticmethod
    @abstractmethod
    def model_class() -> type:
        """The transformers class ``from_pretrained`` loads the captioning model with."""

    @staticmethod
    @abstractmethod
    def processor_class() -> type:
        """The transformers processor (image processor + tokenizer) saved beside the model."""

    @abstractmethod
    def check_processor(self, model_dir: Path, processor: Any) -> None:
        """Refuse a processor whose tokenizer or image size does not fit the model (``InputError``)."""

    @abstractmethod
    def vision(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The single vision pass: (decoder input per image, unnormalised retrieval embedding)."""

    @abstractmethod
    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The captioning loss of a training batch and the batch's retrieval embeddings, from one pass."""

    @abstractmethod
    def generate(self, hidden: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        """Caption token ids for images whose vision pass gave ``hidden``, decoded with ``options``."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    @property
    @abstractmethod
    def max_positions(self) -> int:
        """Text positions the decoder can see (the start token takes the first)."""

    @property
    @abstractmethod
    def start_token_id(self) -> int:
        """The token every caption starts with, in training as in decoding."""


def check_vocabulary(model_dir: Path, tokenizer: Any, vocab_size: int, must_equal: dict[str, int | None],
                     start_token_id: int | None) -> None:
    """The tokenizer fits the model's vocabulary and agrees on its special token ids."""
    if len(tokenizer) > vocab_size:
        raise InputError(
            model_dir, f"tokenizer has {len(tokenizer)} tokens but the model's text vocabulary has {vocab_size}"
        )
    for name, expected in must_equal.items():
        if getattr(tokenizer, name) != expected:
            raise InputError(model_dir, f"tokenizer {name} {getattr(tokenizer, name)} differs from the model's {expected}")
    if start_token_id is None or not 0 <= start_token_id < vocab_size:
        raise InputError(model_dir, f"model's bos_token_id {start_token_id} is outside its vocabulary")


def check_image_size(model_dir: Path, got: tuple[Any, Any], image_size: int | tuple[int, int] | list[int]) -> None:
    """The processor hands the vision encoder images of the size its position table was made for."""
    expected = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size,) * 2
    if tuple(got) != expected:
        raise InputError(
            model_dir, f"processor resizes to {got[0]}x{got[1]} but the model expects {expected[0]}x{expected[1]}"
        )
