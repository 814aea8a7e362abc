"""GIT (``GitForCausalLM``): the image tokens are the decoder's prefix, computed once per image.

GIT has no cross-attention: the projected vision tokens are prepended to the text and the
decoder's self-attention reads both (image tokens attend only to each other, text tokens
causally to everything before them). ``GitForCausalLM.generate(pixel_values=...)`` in the
installed transformers (5.24) runs the vision encoder on every beam's copy of the image
(``pixel_values`` is expanded to batch x beams before the prefill; older releases re-encoded
them at every decoding step too) and then pushes the image tokens of every beam through
the decoder. Here the vision encoder runs once per batch; since the image tokens never see
the text, their keys and values in every decoder layer are computed once per image
(``image_prefix``), copied per beam, and ``generate`` continues from that cache with only
the start token as input, so decoding writes exactly what ``generate`` writes. The
retrieval embedding is the mean of the vision encoder's output tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from ..errors import InputError
from .base import Architecture, check_image_size, check_vocabulary


class ImagePrefixCache(DynamicCache):
    """The decoder's self-attention cache whose first ``image_tokens`` positions are the image's.

    Beam search only reorders the beams of one image among themselves, and every beam's
    image positions hold the same keys and values, so ``generate``'s reorder at each step
    only has to move the text positions: gathering the image part (most of the cache)
    would copy identical tensors onto each other.
    """

    def __init__(self, image_tokens: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_tokens = image_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        text = slice(self.image_tokens, None)
        for layer in self.layers:
            if layer.get_seq_length() > self.image_tokens:
                for states in (layer.keys, layer.values):
                    states[:, :, text] = states[beam_idx.to(states.device), :, text]


def image_prefix(model: Any, hidden: torch.Tensor, beams: int) -> ImagePrefixCache:
    """The decoder's self-attention cache holding the image tokens of ``hidden``, one copy per beam.

    Run alone, the image tokens attend to all image tokens and nothing else, which is
    exactly what they do in front of the text (GIT's mask is bidirectional over the image
    block), so this cache equals the image part of ``generate``'s own prefill.
    """
    cache = ImagePrefixCache(hidden.shape[1], config=model.config)
    model.git.encoder(model.git.visual_projection(hidden), attention_mask=None, cache=cache)
    cache.batch_repeat_interleave(beams)
    return cache


class Git(Architecture):
    model_type = "git"
    label = "GIT"

    @staticmethod
    def model_class() -> type:
        from transformers import GitForCausalLM

        return GitForCausalLM

    @staticmethod
    def processor_class() -> type:
        from transformers import GitProcessor

        return GitProcessor

    def check_processor(self, model_dir: Path, processor: Any) -> None:
        config = self.model.config
        if config.num_image_with_embedding is not None:
            raise InputError(model_dir, "a video GIT (num_image_with_embedding set) cannot caption single tiles")
        check_vocabulary(model_dir, processor.tokenizer, config.vocab_size,
                         {"pad_token_id": config.pad_token_id, "sep_token_id": config.eos_token_id},
                         config.bos_token_id)
        images = processor.image_processor
        # CLIP's processor resizes the shortest edge, then crops; only the crop is square.
        if getattr(images, "do_center_crop", False):
            got = (images.crop_size.get("height"), images.crop_size.get("width"))
        else:
            got = (images.size.get("height", images.size.get("shortest_edge")), images.size.get("width", "any"))
        check_image_size(model_dir, got, config.vision_config.image_size)

    def vision(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.git.image_encoder(pixel_values=pixel_values).last_hidden_state
        return hidden, hidden.mean(dim=1)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``GitForCausalLM.forward``'s loss; its image encoder's output is caught on the way, since
        the forward takes pixels only and a second vision pass would double the encoder's cost."""
        caught: list[torch.Tensor] = []
        hook = self.model.git.image_encoder.register_forward_hook(
            lambda module, inputs, output: caught.append(output.last_hidden_state))
        try:
            loss = self.model(**batch).loss
        finally:
            hook.remove()
        return loss, caught[0].mean(dim=1)

    def generate(self, hidden: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        """``GitForCausalLM.generate(pixel_values=...)``'s captions, from the batch's one vision pass.

        The attention mask spans image and start token (all ones, so ``generate`` drops it
        and only uses its length to see that the start token is not yet in the cache); the
        start token's position is 0, as the text positions are counted without the image.
        """
        config = self.model.config
        batch, image_tokens = hidden.shape[:2]
        start = torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=hidden.device)
        return self.model.generate(
            input_ids=start,
            attention_mask=torch.ones((batch, image_tokens + 1), dtype=torch.long, device=hidden.device),
            position_ids=torch.zeros((batch, 1), dtype=torch.long, device=hidden.device),
            cache=image_prefix(self.model, hidden, options["num_beams"]),
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            **options,
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def start_token_id(self) -> int:
        return int(self.model.config.bos_token_id)
