"""BLIP (``BlipForConditionalGeneration``): one vision pass feeding cross-attention and the embedding.

The vision encoder's last hidden state is the text decoder's cross-attention input (as
``BlipForConditionalGeneration.generate`` does internally) and its pooled output is the
retrieval embedding. The image tokens' cross-attention keys and values are projected once
per image, not once per beam (``decoder_cache``). A vision config with ``conv_stem`` (channel
widths) replaces ViT's one-layer patch embedding by a stack of stride-2 convolutions
(``ConvStem``, ``BlipWithStem``): a ViT trained from scratch on a few thousand synthetic
patches with the plain embedding never learnt to tell fringes from noise, with the stem it does
(benchmarks/README.md, "real_tiles.py").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BlipForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from .base import Architecture, check_image_size, check_vocabulary


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


def stem_problem(widths: list[int], patch_size: int) -> str | None:
    """Why ``widths`` cannot be a stem for ``patch_size`` (one stride-2 layer per halving of a
    power-of-two patch), or None when they can."""
    halvings = patch_size.bit_length() - 1
    if 2 ** halvings != patch_size or len(widths) != halvings:
        return (f"conv_stem needs one width per halving of patch_size {patch_size} "
                f"({halvings} for a power of two), got {len(widths)}")
    return None


class ConvStem(nn.Sequential):
    """Early convolutions (Xiao et al., "Early convolutions help transformers see better", 2021):
    3x3 stride-2 convolutions with batch norm and ReLU, one per halving of ``patch_size``, widening
    through ``widths``, then a 1x1 projection to the transformer's width. Stands where
    ``BlipVisionEmbeddings.patch_embedding`` was, so it maps an image to the same token grid."""

    def __init__(self, widths: list[int], hidden_size: int, patch_size: int) -> None:
        problem = stem_problem(widths, patch_size)
        if problem is not None:
            raise ValueError(problem)
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        super().__init__(*layers, nn.Conv2d(channels, hidden_size, 1))

    @property
    def weight(self) -> torch.Tensor:
        # BlipVisionEmbeddings.forward casts its input to patch_embedding.weight's dtype.
        return self[-1].weight


class BlipWithStem(BlipForConditionalGeneration):
    """``BlipForConditionalGeneration`` whose patch embedding is a ``ConvStem`` when the vision
    config names one (``conv_stem``: widths); without it, exactly the transformers model."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        widths = getattr(config.vision_config, "conv_stem", None)
        if widths:
            vision = config.vision_config
            self.vision_model.embeddings.patch_embedding = ConvStem(list(widths), vision.hidden_size, vision.patch_size)


class Blip(Architecture):
    model_type = "blip"
    label = "BLIP"

    @staticmethod
    def model_class() -> type:
        return BlipWithStem

    @staticmethod
    def processor_class() -> type:
        from transformers import BlipProcessor

        return BlipProcessor

    def check_processor(self, model_dir: Path, processor: Any) -> None:
        text, tokenizer = self.model.config.text_config, processor.tokenizer
        check_vocabulary(model_dir, tokenizer, text.vocab_size,
                         {"pad_token_id": text.pad_token_id, "sep_token_id": text.sep_token_id}, text.bos_token_id)
        size = processor.image_processor.size
        check_image_size(model_dir, (size.get("height"), size.get("width")), self.model.config.vision_config.image_size)

    def vision(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model.vision_model(pixel_values=pixel_values)
        return output.last_hidden_state, output.pooler_output

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``BlipForConditionalGeneration.forward``'s loss, keeping the pooled output it drops."""
        hidden, pooled = self.vision(batch["pixel_values"])
        output = self.model.text_decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                         encoder_hidden_states=hidden, labels=batch["labels"], reduction="mean")
        return output.loss, pooled

    def generate(self, hidden: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        """Mirrors ``BlipForConditionalGeneration.generate``: the decoder starts from the BOS
        token, stops at SEP, pads with PAD, and cross-attends to every image token."""
        text = self.model.config.text_config
        start = torch.full((len(hidden), 1), text.bos_token_id, dtype=torch.long, device=hidden.device)
        image_mask = torch.ones(hidden.shape[:-1], dtype=torch.long, device=hidden.device)
        return self.model.text_decoder.generate(
            input_ids=start,
            eos_token_id=text.sep_token_id,
            pad_token_id=text.pad_token_id,
            attention_mask=None,
            encoder_hidden_states=hidden,
            encoder_attention_mask=image_mask,
            past_key_values=decoder_cache(self.model.text_decoder, hidden, options["num_beams"]),
            **options,
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def start_token_id(self) -> int:
        return int(self.model.config.text_config.bos_token_id)
