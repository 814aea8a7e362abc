"""The training dataset's manifest line: the one record ``prepare`` writes and training reads.

Owns ``DATASET/manifest.jsonl``: one ``Sample`` per line (an RGB image path relative to
DATASET, its expert caption, the labels behind it and its split). ``insarwatch prepare``
builds a ``Sample`` per curated annotation and writes ``Sample.to_line``; ``training``
parses each line back with ``Sample.from_line``, so the two cannot drift apart. Beside it,
``dataset.json`` says what the images show (``model_input``: the paper's RGB or the canonical
phase rendering); training copies it into the model version, so the service shows the model what
it learnt from. It lives in the runtime package because training imports insarwatch, never the
reverse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from . import files
from .config import ModelInput, model_input_of
from .errors import InputError, one_line

MANIFEST = "manifest.jsonl"
DATASET_INFO = "dataset.json"
Split = Literal["train", "val", "test"]


class Sample(BaseModel):
    """One manifest line: an image, its expert caption and the labels behind it."""

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True)

    id: str = Field(min_length=1)
    image: Path
    caption: str = Field(min_length=1)
    deformation: bool
    activity_type: tuple[str, ...] = ()
    intensity: tuple[str, ...] = ()
    split: Split

    @field_serializer("id")
    def _id_as_written(self, value: str) -> int | str:
        # Hephaestus ids are integers and manifests have always carried them as JSON numbers;
        # only the canonical spelling goes back to a number, so every id round-trips exactly.
        return int(value) if value.isdecimal() and str(int(value)) == value else value

    def to_line(self) -> str:
        """The JSON line (no newline) ``prepare`` writes for this sample."""
        return json.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_line(cls, line: str, where: str) -> Sample:
        """Parse one manifest line; ``where`` (``manifest.jsonl:N``) names it in the error."""
        try:
            return cls.model_validate_json(line)
        except ValidationError as exc:
            raise InputError(where, one_line(exc, "field")) from None


def write_dataset_input(root: Path, model_input: ModelInput) -> None:
    """Record in ``root/dataset.json`` what the dataset's images show."""
    files.write_text(Path(root) / DATASET_INFO, json.dumps({"model_input": model_input}) + "\n")


def dataset_input(root: Path) -> ModelInput:
    """What a dataset's images show: ``paper`` for a dataset without ``dataset.json`` (made before
    it existed, when every dataset was the paper's RGB)."""
    path = Path(root) / DATASET_INFO
    if not path.is_file():
        return "paper"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("model_input")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise InputError(path, f"not a JSON object ({exc})") from None
    return model_input_of(value, path)
