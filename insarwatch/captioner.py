"""Captioning of interferogram tiles, batched, with one vision pass per tile, for any known architecture.

Owns loading a captioning model and its processor from a local ``save_pretrained``
directory (never a hub, safetensors only) and turning RGB tiles into captions and
retrieval embeddings. The directory's config.json names the architecture (``model_type``:
``blip``, ``git``), whose adapter in ``captioners/`` knows that family's classes; the
rest is shared. Each batch goes through the vision encoder once: its output feeds the
text decoder and gives the embeddings the FAISS index is searched with: the pooled output
(the paper's) or the mean of the image tokens after the first, both L2-normalised
(``VisionBatch.features``). Preprocessing of the next batch runs in worker threads while the model works on the
current one. Every way a model directory can be unusable (missing, an unknown
architecture, no weights, pickle-only weights, corrupt weights, a processor that does not
fit the model) is an ``InputError`` at load time.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open

from .captioners import ARCHITECTURES, Architecture, architecture_of
from .config import CaptioningSettings
from .errors import InputError

log = logging.getLogger(__name__)

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# What transformers raises for unreadable or inconsistent files; anything else is a bug.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError)

TileImage = np.ndarray | Image.Image


@dataclass(frozen=True, eq=False)  # arrays have no single truth value; compare fields explicitly
class Caption:
    """A tile's caption and retrieval embedding; ``retrieved`` when triage copied a neighbour's."""

    text: str
    embedding: np.ndarray
    retrieved: bool = False


@dataclass(frozen=True, eq=False)
class VisionBatch:
    """One vision pass over a batch: the decoder's input and the retrieval embeddings."""

    hidden_states: torch.Tensor
    embeddings: np.ndarray  # the pooled output
    patch_means: np.ndarray  # the mean of the image tokens after the first (BLIP's and CLIP's CLS)

    def __len__(self) -> int:
        return len(self.embeddings)

    def features(self, kind: str) -> np.ndarray:
        """The embeddings of ``kind`` (a ``retrieval.feature`` value), one L2-normalised row per image."""
        return {"pooled": self.embeddings, "patch_mean": self.patch_means}[kind]


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Reduced precision on CUDA only: CPU autocast is slower than fp32 for this model."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            raise InputError(index, f"not a safetensors shard index ({exc})") from None
        return [model_dir / shard for shard in shards]
    if (model_dir / "model.safetensors").is_file():
        return [model_dir / "model.safetensors"]
    if any((model_dir / name).is_file() for name in PICKLE_WEIGHTS):
        raise InputError(model_dir, "refusing pickle weights (pytorch_model.bin); re-save with safetensors")
    raise InputError(model_dir, "no model weights (model.safetensors)")


def _check_weight_files(files: list[Path]) -> None:
    """Open each safetensors header: a truncated or foreign file fails here, by name."""
    for path in files:
        if not path.is_file():
            raise InputError(path, "weight shard is missing")
        try:
            with safe_open(str(path), framework="pt") as weights:
                if not list(weights.keys()):
                    raise InputError(path, "safetensors file holds no tensors")
        except (SafetensorError, OSError) as exc:
            raise InputError(path, f"corrupt safetensors weights ({exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_architecture(model_dir: Path) -> type[Architecture]:
    """The adapter for the architecture a model directory's config.json names."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise InputError(model_dir, "no config.json; not a save_pretrained model directory")
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise InputError(path, f"not a model configuration ({_first_line(exc)})") from None
    if model_type not in ARCHITECTURES:
        known = " or ".join(f"{adapter.label} ({name!r})" for name, adapter in ARCHITECTURES.items())
        raise InputError(path, f"model_type is {model_type!r}, not a {known} captioning model")
    return ARCHITECTURES[model_type]


class Captioner:
    """A loaded captioner (any known architecture) on one device; thread-compatible, not thread-safe."""

    def __init__(self, model: Any, processor: Any, settings: CaptioningSettings, source: Path) -> None:
        self.model = model
        self.architecture = architecture_of(model)
        self.processor = processor
        self.settings = settings
        self.source = source
        self.device = next(model.parameters()).device
        self._autocast = autocast_dtype(self.device, settings.precision)

    @classmethod
    def load(cls, model_dir: str | Path, settings: CaptioningSettings) -> Captioner:
        """Load model and processor from a local ``save_pretrained`` directory."""
        from transformers.utils import logging as hf_logging

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError(model_dir, "model directory does not exist")
        adapter = read_architecture(model_dir)
        _check_weight_files(_weight_files(model_dir))
        hf_logging.disable_progress_bar()
        try:
            model, info = adapter.model_class().from_pretrained(
                model_dir, local_files_only=True, use_safetensors=True, dtype=torch.float32,
                output_loading_info=True,
            )
        except LOAD_ERRORS as exc:
            raise InputError(model_dir, f"cannot load the model: {_first_line(exc)}") from None
        missing = sorted(info.get("missing_keys", ()))
        mismatched = sorted(info.get("mismatched_keys", ()))
        if missing or mismatched:
            what = f"{len(missing)} missing" if missing else f"{len(mismatched)} wrongly shaped"
            raise InputError(
                model_dir, f"weights do not fit the configuration ({what} tensors, e.g. {(missing or mismatched)[0]})"
            )
        # Without these files transformers quietly builds an empty five-token tokenizer.
        if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
            raise InputError(model_dir, "no processor/tokenizer files (tokenizer.json or vocab.txt)")
        try:
            processor = adapter.processor_class().from_pretrained(model_dir, local_files_only=True)
        except LOAD_ERRORS as exc:
            raise InputError(model_dir, f"no usable processor/tokenizer: {_first_line(exc)}") from None
        adapter(model).check_processor(model_dir, processor)
        device = pick_device(settings.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("captioning.device", "'cuda' is configured but no CUDA device is available")
        if device.type == "cpu" and settings.cpu_threads is not None:
            torch.set_num_threads(settings.cpu_threads)
        model.to(device).eval()
        log.info("loaded %s captioner %s on %s", adapter.label, model_dir, device)
        return cls(model, processor, settings, model_dir)

    @property
    def embedding_dim(self) -> int:
        return self.architecture.embedding_dim

    def generation_options(self) -> dict[str, Any]:
        """Decoding options from settings; unset ones fall back to the model's defaults."""
        s = self.settings
        # The decoder cannot see past its position table; BOS takes the first slot.
        positions = self.architecture.max_positions
        options: dict[str, Any] = {
            "num_beams": s.num_beams,
            "max_new_tokens": min(s.max_new_tokens, positions - 1),
            "do_sample": s.do_sample,
        }
        optional = {
            "min_new_tokens": s.min_new_tokens,
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty,
        }
        options.update({name: value for name, value in optional.items() if value is not None})
        if "min_new_tokens" in options:
            options["min_new_tokens"] = min(options["min_new_tokens"], options["max_new_tokens"])
        return options

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast)

    def preprocess(self, images: Sequence[TileImage]) -> torch.Tensor:
        """Resize and normalise RGB tiles as the model was trained (the processor's rules)."""
        # Tiles are HxWx3; left to guess, transformers reads one 1, 3 or 4 rows high as channels-first.
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt",
                                                input_data_format="channels_last")["pixel_values"]
        # Page-locked memory lets the copy to the GPU overlap with work already queued there.
        return pixels.pin_memory() if self.device.type == "cuda" else pixels

    def _pixel_batches(self, images: Sequence[TileImage]) -> Iterator[torch.Tensor]:
        """Preprocessed batches, the next ones prepared in threads while the caller runs the model."""
        size = self.settings.tiles_per_call
        chunks = [images[start:start + size] for start in range(0, len(images), size)]
        ahead = self.settings.resize_threads
        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="preprocess") as pool:
            pending: list[Future[torch.Tensor]] = [pool.submit(self.preprocess, c) for c in chunks[:ahead]]
            for position in range(len(chunks)):
                pixels = pending[position].result()
                if position + ahead < len(chunks):
                    pending.append(pool.submit(self.preprocess, chunks[position + ahead]))
                yield pixels

    def encode_pixels(self, pixel_values: torch.Tensor) -> VisionBatch:
        """The single vision pass over one preprocessed batch."""
        with torch.inference_mode(), self._precision():
            hidden, pooled = self.architecture.vision(pixel_values.to(self.device, non_blocking=True))
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            patches = torch.nn.functional.normalize(hidden[:, 1:].float().mean(dim=1), dim=-1)
        return VisionBatch(hidden, pooled.cpu().numpy().astype(np.float32), patches.cpu().numpy().astype(np.float32))

    def describe(self, vision: VisionBatch, rows: Sequence[int] | None = None) -> list[str]:
        """Captions for ``rows`` of an encoded batch (all rows by default), decoded from its vision pass."""
        hidden = vision.hidden_states if rows is None else vision.hidden_states[list(rows)]
        if len(hidden) == 0:
            return []
        with torch.inference_mode(), self._precision():
            tokens = self.architecture.generate(hidden, self.generation_options())
        return [line.strip() for line in self.processor.batch_decode(tokens, skip_special_tokens=True)]

    def encode(self, images: Sequence[TileImage]) -> Iterator[VisionBatch]:
        """Vision passes over ``images`` in batches of ``settings.tiles_per_call``."""
        for pixels in self._pixel_batches(images):
            yield self.encode_pixels(pixels)

    def caption(self, images: Sequence[TileImage]) -> list[Caption]:
        """Caption and embed every image, one vision pass each."""
        captions: list[Caption] = []
        for vision in self.encode(images):
            texts = self.describe(vision)
            captions.extend(Caption(text, embedding) for text, embedding in zip(texts, vision.embeddings, strict=True))
        return captions

    def embed(self, images: Sequence[TileImage], feature: str) -> np.ndarray:
        """N x ``embedding_dim`` float32 L2-normalised ``feature`` embeddings (no decoding)."""
        batches = [vision.features(feature) for vision in self.encode(images)]
        return np.concatenate(batches) if batches else np.zeros((0, self.embedding_dim), dtype=np.float32)
