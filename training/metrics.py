"""Caption quality metrics and the per-image prediction records they are computed from.

A model's test metrics are a pure function of its ``predictions.jsonl``: every number in
``metrics.json`` except ``seconds`` comes out of ``metrics_from_predictions`` so anyone can
recompute it. ROUGE-1/2/L are rouge-score F-measures with the Porter stemmer, averaged over
images (rouge-score lowercases and splits on non-alphanumerics, so "sill - type" and
"sill-type" agree). BLEU is sacrebleu's corpus BLEU on its 0–100 scale with
``lowercase=True, tokenize="intl"``: the international tokenizer splits hyphens and full
stops the same way the BERT tokenizer spaces them in generated captions. Deformation
precision/recall/F1 compare the deformation that ``findings.parse_caption`` reads from
the generated caption with the label; ``retrieval_exact_match`` is the paper's raw accuracy
(the top retrieved caption is the reference string, character for character).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import sacrebleu
from rouge_score import rouge_scorer

from insarwatch import files
from insarwatch.errors import InsarwatchError
from insarwatch.findings import parse_caption

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class Prediction:
    """What the model said about one test image, next to what the expert wrote."""

    id: str
    reference: str
    generated: str
    retrieved: str
    similarity: float
    deformation_true: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def caption_scores(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures and corpus BLEU of generated captions against references."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated captions for {len(references)} references")
    if not references:
        raise InsarwatchError("no captions to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(generated, references, strict=True):
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    scores = {name: total / len(references) for name, total in totals.items()}
    scores["bleu"] = sacrebleu.corpus_bleu(list(generated), [list(references)], lowercase=True, tokenize="intl").score
    return scores


@dataclass(frozen=True)
class Confusion:
    """A binary call against labels, deformation being the positive class."""

    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int

    @classmethod
    def of(cls, predicted: Sequence[bool], actual: Sequence[bool]) -> Confusion:
        pairs = list(zip(predicted, actual, strict=True))
        return cls(sum(p and a for p, a in pairs), sum(p and not a for p, a in pairs),
                   sum(not p and not a for p, a in pairs), sum(not p and a for p, a in pairs))

    @property
    def precision(self) -> float:
        """0 where nothing was called positive."""
        called = self.true_positive + self.false_positive
        return self.true_positive / called if called else 0.0

    @property
    def recall(self) -> float:
        """0 where there are no positives."""
        positives = self.true_positive + self.false_negative
        return self.true_positive / positives if positives else 0.0

    @property
    def false_alarm_rate(self) -> float:
        """Share of negatives called positive; 0 where there are no negatives."""
        negatives = self.true_negative + self.false_positive
        return self.false_positive / negatives if negatives else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """Mean of recall and specificity: 0.5 is chance (or a constant call) whatever the class balance."""
        return (self.recall + 1.0 - self.false_alarm_rate) / 2


def deformation_scores(predicted: Sequence[bool], actual: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of "deformation" as the positive class (0 where undefined)."""
    confusion = Confusion.of(predicted, actual)
    return {"deformation_precision": confusion.precision, "deformation_recall": confusion.recall,
            "deformation_f1": confusion.f1}


def metrics_from_predictions(rows: Sequence[Prediction]) -> dict[str, float | int]:
    """Every test metric that ``metrics.json`` holds, from the predictions alone."""
    if not rows:
        raise InsarwatchError("no test predictions to compute metrics from")
    generated = [row.generated for row in rows]
    references = [row.reference for row in rows]
    metrics: dict[str, float | int] = dict(caption_scores(generated, references))
    metrics["retrieval_exact_match"] = sum(row.retrieved == row.reference for row in rows) / len(rows)
    metrics.update(
        deformation_scores(
            [parse_caption(text).deformation for text in generated],
            [row.deformation_true for row in rows],
        )
    )
    metrics["n_test"] = len(rows)
    return metrics


def write_predictions(rows: Sequence[Prediction], path: Path) -> None:
    with files.replacing(path) as temporary, temporary.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")

