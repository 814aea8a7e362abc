"""The captioning architectures insarwatch knows, by the ``model_type`` in a model's config.json.

``ARCHITECTURES`` is the one place an architecture is named: ``Captioner.load`` reads the
model directory's ``model_type`` and looks its adapter up here, and training builds and
checks models through the same table. Adding an architecture is one module with an
``Architecture`` subclass and one entry below.
"""

from __future__ import annotations

from .base import Architecture
from .blip import Blip
from .git import Git

ARCHITECTURES: dict[str, type[Architecture]] = {adapter.model_type: adapter for adapter in (Blip, Git)}


def architecture_of(model: object) -> Architecture:
    """The adapter for a loaded (or freshly built) captioning model."""
    return ARCHITECTURES[model.config.model_type](model)


__all__ = ["ARCHITECTURES", "Architecture", "architecture_of"]
