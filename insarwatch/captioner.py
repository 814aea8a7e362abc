"""BLIP captioning of interferogram tiles, batched, with one vision pass per tile.

Owns loading a ``BlipForConditionalGeneration`` and its ``BlipProcessor`` from a local
``save_pretrained`` directory (never a hub) and turning RGB tiles into captions and
retrieval embeddings. Each batch goes through the vision encoder once: its last hidden
state is the cross-attention input of the text decoder (exactly what
``BlipForConditionalGeneration.generate`` does internally) and its pooled output,
L2-normalised, is the embedding the FAISS index is searched with. Preprocessing of the
next batch runs in worker threads while the model works on the current one. Every way a
model directory can be unusable (missing, no weights, pickle-only weights, corrupt
weights, a processor that does not fit the model) is an ``InputError`` at load time.
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
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

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
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.embeddings)


class ImageKeyValues(DynamicCache):
    """Cross-attention keys and values of a batch's images, one copy per beam.

    Beam search only reorders the beams of one image among themselves, and they all attend
    to the same image tokens, so the reorder ``generate`` does at every step would copy
    identical tensors onto each other: it is skipped.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        return None


def decoder_cache(decoder: Any, hidden: torch.Tensor, beams: int) -> EncoderDecoderCache:
    """A text-decoder cache whose cross-attention keys/values are projected once per image.

    Left to itself ``generate`` projects the image tokens once per beam (five times the work
    at beam width 5) and then gathers all of them again at every step; on a CPU those two
    were most of the decoding time (profile in benchmarks/README.md). Filled here and marked
    as updated, the decoder layers read them from the cache as they do from the second step on.
    """
    cache = EncoderDecoderCache(DynamicCache(config=decoder.config), ImageKeyValues(config=decoder.config))
    for index, layer in enumerate(decoder.bert.encoder.layer):
        attention = layer.crossattention.self
        shape = (*hidden.shape[:-1], -1, attention.attention_head_size)
        keys = attention.key(hidden).view(shape).transpose(1, 2).repeat_interleave(beams, dim=0)
        values = attention.value(hidden).view(shape).transpose(1, 2).repeat_interleave(beams, dim=0)
        cache.cross_attention_cache.update(keys, values, index)
        cache.is_updated[index] = True
    return cache


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


def _check_config(model_dir: Path) -> None:
    path = model_dir / "config.json"
    if not path.is_file():
        raise InputError(model_dir, "no config.json; not a save_pretrained model directory")
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise InputError(path, f"not a model configuration ({_first_line(exc)})") from None
    if model_type != "blip":
        raise InputError(path, f"model_type is {model_type!r}, not a BLIP captioning model ('blip')")


def _check_processor_fits(model_dir: Path, model: Any, processor: Any) -> None:
    text, vision = model.config.text_config, model.config.vision_config
    tokenizer = processor.tokenizer
    if len(tokenizer) > text.vocab_size:
        raise InputError(
            model_dir,
            f"tokenizer has {len(tokenizer)} tokens but the model's text vocabulary has {text.vocab_size}",
        )
    for name in ("pad_token_id", "sep_token_id"):
        if getattr(tokenizer, name) != getattr(text, name):
            raise InputError(
                model_dir,
                f"tokenizer {name} {getattr(tokenizer, name)} differs from the model's {getattr(text, name)}",
            )
    if text.bos_token_id is None or not 0 <= text.bos_token_id < text.vocab_size:
        raise InputError(model_dir, f"model's bos_token_id {text.bos_token_id} is outside its vocabulary")
    size = processor.image_processor.size
    expected = vision.image_size if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
    got = (size.get("height"), size.get("width"))
    if tuple(got) != tuple(expected):
        raise InputError(
            model_dir, f"processor resizes to {got[0]}x{got[1]} but the model expects {expected[0]}x{expected[1]}"
        )


class Captioner:
    """A loaded BLIP captioner on one device; thread-compatible, not thread-safe."""

    def __init__(self, model: Any, processor: Any, settings: CaptioningSettings, source: Path) -> None:
        self.model = model
        self.processor = processor
        self.settings = settings
        self.source = source
        self.device = next(model.parameters()).device
        self._autocast = autocast_dtype(self.device, settings.precision)

    @classmethod
    def load(cls, model_dir: str | Path, settings: CaptioningSettings) -> Captioner:
        """Load model and processor from a local ``save_pretrained`` directory."""
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError(model_dir, "model directory does not exist")
        _check_config(model_dir)
        _check_weight_files(_weight_files(model_dir))
        hf_logging.disable_progress_bar()
        try:
            model, info = BlipForConditionalGeneration.from_pretrained(
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
            processor = BlipProcessor.from_pretrained(model_dir, local_files_only=True)
        except LOAD_ERRORS as exc:
            raise InputError(model_dir, f"no usable processor/tokenizer: {_first_line(exc)}") from None
        _check_processor_fits(model_dir, model, processor)
        device = pick_device(settings.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("captioning.device", "'cuda' is configured but no CUDA device is available")
        if device.type == "cpu" and settings.cpu_threads is not None:
            torch.set_num_threads(settings.cpu_threads)
        model.to(device).eval()
        log.info("loaded captioner %s on %s", model_dir, device)
        return cls(model, processor, settings, model_dir)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    def generation_options(self) -> dict[str, Any]:
        """Decoding options from settings; unset ones fall back to the model's defaults."""
        s = self.settings
        # The decoder cannot see past its position table; BOS takes the first slot.
        positions = self.model.config.text_config.max_position_embeddings
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
            output = self.model.vision_model(pixel_values=pixel_values.to(self.device, non_blocking=True))
            pooled = torch.nn.functional.normalize(output.pooler_output.float(), dim=-1)
        return VisionBatch(output.last_hidden_state, pooled.cpu().numpy().astype(np.float32))

    def describe(self, vision: VisionBatch, rows: Sequence[int] | None = None) -> list[str]:
        """Captions for ``rows`` of an encoded batch (all rows by default).

        Mirrors ``BlipForConditionalGeneration.generate``: the decoder starts from the BOS
        token, stops at SEP, pads with PAD, and cross-attends to every image token, whose
        keys and values are computed once per image (``decoder_cache``).
        """
        hidden = vision.hidden_states if rows is None else vision.hidden_states[list(rows)]
        if len(hidden) == 0:
            return []
        text = self.model.config.text_config
        options = self.generation_options()
        with torch.inference_mode(), self._precision():
            start = torch.full((len(hidden), 1), text.bos_token_id, dtype=torch.long, device=hidden.device)
            image_mask = torch.ones(hidden.shape[:-1], dtype=torch.long, device=hidden.device)
            tokens = self.model.text_decoder.generate(
                input_ids=start,
                eos_token_id=text.sep_token_id,
                pad_token_id=text.pad_token_id,
                attention_mask=None,
                encoder_hidden_states=hidden,
                encoder_attention_mask=image_mask,
                past_key_values=decoder_cache(self.model.text_decoder, hidden, options["num_beams"]),
                **options,
            )
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

    def embed(self, images: Sequence[TileImage]) -> np.ndarray:
        """N x ``embedding_dim`` float32 L2-normalised pooled vision outputs (no decoding)."""
        batches = [vision.embeddings for vision in self.encode(images)]
        return np.concatenate(batches) if batches else np.zeros((0, self.embedding_dim), dtype=np.float32)
