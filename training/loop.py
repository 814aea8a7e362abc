"""The optimisation loop: epochs of AdamW over the training split, validation, best checkpoint.

``fit`` trains with AdamW, linear warm-up then linear decay, gradient accumulation and
clipping, and mixed precision (bf16, or fp16 with loss scaling) on CUDA. After every epoch
it captions the validation split (greedy by default: cheap) and scores it with ROUGE, BLEU
and the F1 of the deformation its captions report; an epoch that beats the best validation
ROUGE-L + deformation F1 so far is written to the checkpoint directory with
``save_pretrained`` (ROUGE-L alone picked epochs that phrase captions well and never say
"deformation"). A recipe's ``deformation_weight`` adds a linear probe on the retrieval
embedding, trained to predict each sample's deformation label beside the captioning loss:
it makes the vision encoder see deformation and neighbours in the index agree on it; the
probe itself is discarded after training. A Ctrl-C stops training between two batches and leaves
that checkpoint as it was: the best model so far is never lost or half-written.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from insarwatch.captioner import Captioner, autocast_dtype
from insarwatch.captioners import architecture_of
from insarwatch.config import CaptioningSettings
from insarwatch.findings import parse_caption
from insarwatch.manifest import Sample

from .dataset import CaptionCollator, load_images
from .factory import TrainingSpec
from .metrics import caption_scores, deformation_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val: dict[str, float] | None
    seconds: float


@dataclass(frozen=True)
class FitResult:
    history: tuple[EpochStats, ...]
    best_epoch: int | None
    interrupted: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model: torch.nn.Module, recipe: TrainingSpec) -> torch.optim.AdamW:
    # Biases and normalisation gains are not decayed (the usual transformer recipe).
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=recipe.learning_rate,
    )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def validation_captions(model, processor, samples: Sequence[Sample], settings: CaptioningSettings) -> list[str]:
    """Captions of ``samples`` by the model as it is now, decoded exactly as the service decodes."""
    model.eval()
    captioner = Captioner(model, processor, settings, source=Path("<training>"))
    return [caption.text for caption in captioner.caption(load_images(samples))]


def save_checkpoint(model, processor, directory: Path) -> None:
    """Replace ``directory`` with the model and processor, never leaving it half-written."""
    fresh = directory.with_name(directory.name + ".partial")
    stale = directory.with_name(directory.name + ".stale")
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(fresh)
    processor.save_pretrained(fresh)
    if directory.exists():
        directory.rename(stale)
    fresh.rename(directory)
    shutil.rmtree(stale, ignore_errors=True)


def fit(
    model,
    processor,
    train: Sequence[Sample],
    val: Sequence[Sample],
    recipe: TrainingSpec,
    *,
    max_caption_tokens: int,
    device: torch.device,
    checkpoint_dir: Path,
    captioning: CaptioningSettings,
    progress: Progress,
) -> FitResult:
    """Train ``model`` in place; the best epoch by validation ROUGE-L ends up in ``checkpoint_dir``.

    Validation captions use ``captioning`` with the recipe's (cheaper) beam width and length.
    With no validation samples every epoch counts as the best so far (the last one is kept).
    """
    validation = captioning.model_copy(update={
        "num_beams": recipe.val_num_beams, "max_new_tokens": recipe.val_max_new_tokens,
        "batch_size": recipe.batch_size,
    })
    seed_everything(recipe.seed)
    model.to(device)
    architecture = architecture_of(model)
    probe = torch.nn.Linear(architecture.embedding_dim, 1).to(device) if recipe.deformation_weight else None
    dtype = autocast_dtype(device, "auto")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loader = DataLoader(
        list(train),
        batch_size=recipe.batch_size,
        shuffle=True,
        collate_fn=CaptionCollator(processor, max_caption_tokens, cache_bytes=recipe.image_cache_mb * 2**20,
                                   start_token_id=architecture.start_token_id,
                                   augment_seed=recipe.seed if recipe.augment else None),
        generator=torch.Generator().manual_seed(recipe.seed),
    )
    steps_per_epoch = math.ceil(len(loader) / recipe.grad_accum_steps)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = _optimizer(model if probe is None else torch.nn.ModuleList([model, probe]), recipe)
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total_steps), total_steps)
    history: list[EpochStats] = []
    best_epoch: int | None = None
    best_score = -math.inf
    task = progress.add_task("training", total=len(loader))
    try:
        for epoch in range(1, recipe.epochs + 1):
            started = time.monotonic()
            progress.reset(task, total=len(loader), description=f"epoch {epoch}/{recipe.epochs}")
            model.train()
            loss_sum, batches = 0.0, 0
            for index, batch in enumerate(loader, start=1):
                batch = {name: tensor.to(device) for name, tensor in batch.items()}
                deforming = batch.pop("deformation")
                with _autocast(device, dtype):
                    loss, embedding = architecture.training_loss(batch)
                    if probe is not None:
                        logits = probe(embedding.float()).squeeze(1)
                        loss = loss + recipe.deformation_weight * \
                            torch.nn.functional.binary_cross_entropy_with_logits(logits, deforming)
                scaler.scale(loss / recipe.grad_accum_steps).backward()
                if index % recipe.grad_accum_steps == 0 or index == len(loader):
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                                   recipe.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    schedule.step()
                loss_sum += loss.item()
                batches += 1
                progress.update(
                    task, advance=1, description=f"epoch {epoch}/{recipe.epochs} loss {loss_sum / batches:.3f}"
                )
            scores = None
            if val:
                progress.update(task, description=f"epoch {epoch}/{recipe.epochs} validating")
                generated = validation_captions(model, processor, val, validation)
                scores = caption_scores(generated, [sample.caption for sample in val])
                scores["deformation_f1"] = deformation_scores([parse_caption(text).deformation for text in generated],
                                                              [sample.deformation for sample in val])["deformation_f1"]
            stats = EpochStats(epoch, loss_sum / max(batches, 1), scores, time.monotonic() - started)
            history.append(stats)
            improved = scores is None or _selection(scores) > best_score
            if improved:
                save_checkpoint(model, processor, checkpoint_dir)
                best_epoch = epoch
                best_score = _selection(scores) if scores else best_score
            log.info("%s%s", _describe(stats), " (best so far, saved)" if improved else "")
    except KeyboardInterrupt:
        log.warning("interrupted during epoch %d; keeping the best epoch so far (%s)",
                    len(history) + 1, best_epoch or "none")
        return FitResult(tuple(history), best_epoch, interrupted=True)
    finally:
        progress.remove_task(task)
    return FitResult(tuple(history), best_epoch, interrupted=False)


def _selection(scores: dict[str, float]) -> float:
    return scores["rougeL"] + scores["deformation_f1"]


def _describe(stats: EpochStats) -> str:
    text = f"epoch {stats.epoch}: train loss {stats.train_loss:.4f}"
    if stats.val:
        text += ", val " + " ".join(f"{name} {value:.3f}" for name, value in stats.val.items())
    return text + f" ({stats.seconds:.0f} s)"
