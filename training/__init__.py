"""Model refresh for insarwatch: dataset → captioner (BLIP or GIT) training → FAISS index → evaluation → registry.

``insarwatch train`` and ``insarwatch evaluate`` are thin wrappers over ``pipeline.train``
and ``pipeline.evaluate``. The package is split along its seams: ``dataset`` (manifest and
batches), ``vocab`` (a WordPiece vocabulary learnt from captions), ``factory`` (presets kept
as JSON data and the models built from them), ``loop`` (the optimisation loop), ``metrics``
(ROUGE, BLEU, deformation P/R/F1 from prediction records) and ``pipeline`` (the whole run).
The ``insarwatch`` runtime never imports this package outside those two commands.
"""

from .factory import Preset, choose_preset, list_presets, load_preset
from .metrics import Prediction, metrics_from_predictions
from .pipeline import EvaluationFailed, TrainingInterrupted, TrainOutcome, evaluate, train

__all__ = [
    "EvaluationFailed",
    "Prediction",
    "Preset",
    "TrainOutcome",
    "TrainingInterrupted",
    "choose_preset",
    "evaluate",
    "list_presets",
    "load_preset",
    "metrics_from_predictions",
    "train",
]
