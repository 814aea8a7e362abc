"""The training dataset: ``manifest.jsonl`` from ``insarwatch prepare`` and its RGB PNGs.

``load_dataset`` reads and validates the whole manifest before any training starts, so a
malformed line, a missing image or an empty dataset is a one-line ``InputError`` naming the
file, not a crash twenty minutes in. ``CaptionCollator`` turns a batch of samples into the
tensors a captioner (BLIP or GIT) trains on; images are decoded per batch so a
dataset never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from insarwatch.errors import InputError
from insarwatch.manifest import MANIFEST, Sample, Split

from .augment import Augmenter


@dataclass(frozen=True)
class Dataset:
    root: Path
    samples: tuple[Sample, ...]

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def split(self, name: Split) -> tuple[Sample, ...]:
        return tuple(sample for sample in self.samples if sample.split == name)


def load_dataset(root: Path) -> Dataset:
    """Read ``root/manifest.jsonl``; image paths in it are relative to ``root``."""
    if not root.is_dir():
        raise InputError(root, "dataset directory does not exist")
    manifest = root / MANIFEST
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(manifest, "no manifest; make one with 'insarwatch prepare'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(manifest, f"cannot be read: {exc}") from None
    samples: list[Sample] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        sample = Sample.from_line(line, where)
        if sample.id in seen:
            raise InputError(where, f"duplicate id {sample.id!r}")
        seen.add(sample.id)
        image = root / sample.image
        if not image.is_file():
            raise InputError(image, f"image listed on {MANIFEST} line {number} does not exist")
        samples.append(sample.model_copy(update={"image": image}))
    if not samples:
        raise InputError(manifest, "lists no images")
    return Dataset(root, tuple(samples))


def load_image(path: Path) -> Image.Image:
    """Decode one dataset image as RGB; a corrupt file is an ``InputError``."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"not a readable image: {exc}") from None


def load_images(samples: Sequence[Sample]) -> list[Image.Image]:
    return [load_image(sample.image) for sample in samples]


class PixelCache:
    """Preprocessed images kept across epochs, up to ``budget_bytes``; the rest are decoded per batch.

    Decoding and resizing a PNG costs about a fifth of a tiny model's training step on a CPU,
    and every epoch sees the same images; a fine-tuning run at 384 px over a large dataset
    simply caches the part that fits.
    """

    def __init__(self, image_processor, budget_bytes: int) -> None:
        self.image_processor = image_processor
        self.budget_bytes = budget_bytes
        self._pixels: dict[str, torch.Tensor] = {}
        self._bytes = 0

    def __call__(self, samples: Sequence[Sample]) -> torch.Tensor:
        missing = [sample for sample in samples if sample.id not in self._pixels]
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            pixels = self.image_processor(images=load_images(missing), return_tensors="pt")["pixel_values"]
            for sample, tensor in zip(missing, pixels, strict=True):
                fresh[sample.id] = tensor
                if self._bytes + tensor.nbytes <= self.budget_bytes:
                    self._pixels[sample.id] = tensor
                    self._bytes += tensor.nbytes
        return torch.stack([fresh.get(sample.id, self._pixels.get(sample.id)) for sample in samples])


class CaptionCollator:
    """Batch of samples → ``pixel_values``, ``input_ids``, ``attention_mask``, ``labels`` (caption
    tokens) and ``deformation`` (each sample's label, 1.0 or 0.0, for the loop's probe).

    Every caption starts with the token decoding starts from (``start_token_id``: BLIP's
    ``[DEC]``, which its ``generate`` puts in place of ``[CLS]``; GIT's ``[CLS]`` itself;
    by default the tokenizer's BOS token); padding never counts in the loss.
    """

    def __init__(self, processor, max_length: int, cache_bytes: int = 0, start_token_id: int | None = None,
                 augment_seed: int | None = None) -> None:
        self.tokenizer = processor.tokenizer
        self.start_token_id = self.tokenizer.bos_token_id if start_token_id is None else start_token_id
        self.max_length = max_length
        self.pixels = PixelCache(processor.image_processor, cache_bytes)
        # Augmentation (preset ``augment``) moves each sample anew every epoch, after the cache.
        self.augment = None if augment_seed is None else Augmenter(
            tuple(processor.image_processor.image_mean), tuple(processor.image_processor.image_std))
        self.rng = np.random.default_rng(augment_seed)

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        pixels, captions = self.pixels(samples), [sample.caption for sample in samples]
        if self.augment is not None:
            pixels, captions = self.augment(pixels, captions, self.rng)
        text = self.tokenizer(
            captions,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        input_ids = text["input_ids"].clone()
        input_ids[:, 0] = self.start_token_id
        labels = input_ids.masked_fill(text["attention_mask"] == 0, -100)
        return {
            "pixel_values": pixels,
            "input_ids": input_ids,
            "attention_mask": text["attention_mask"],
            "labels": labels,
            "deformation": torch.tensor([float(sample.deformation) for sample in samples]),
        }
