"""Training throughput: the training loop's mixed precision (autocast) against fp32.

Builds a captioner from a training preset (``tiny``, or ``base``: the shape of
``Salesforce/blip-image-captioning-base``) with random weights and a vocabulary learnt from
synthetic expert captions, and runs the same optimisation steps twice on the same batches
of synthetic Hephaestus-style patches: fp32, then under ``torch.autocast`` at the dtype
``training.loop.fit`` uses on the device (``captioner.autocast_dtype``: bf16 where the GPU
has it, else fp16 with loss scaling). Each side is a forward pass with the loss, backward,
gradient clipping and an AdamW step, as ``fit`` does them. ``fit`` never autocasts on a
CPU; ``--precision bf16`` forces it there, for a smoke run only.

Prints a table, then ``ratio=<autocast steps/s / fp32 steps/s>``.

    python benchmarks/train_autocast.py --device cuda --preset base --batch-size 16 --steps 20
    python benchmarks/train_autocast.py --preset tiny --steps 2 --batch-size 2      # CPU smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from insarwatch.captioner import autocast_dtype
from insarwatch.captioners import architecture_of
from insarwatch.config import ImagingSettings
from insarwatch.hephaestus import prepare
from insarwatch.synthetic.patches import write_dataset
from training.dataset import CaptionCollator, load_dataset
from training.factory import create_from_scratch, load_preset


def timed_steps(model, batches: list[dict[str, torch.Tensor]], dtype: torch.dtype | None,
                device: torch.device, learning_rate: float) -> float:
    """Seconds for one optimisation step per batch (after one untimed warm-up step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()
    architecture = architecture_of(model)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = architecture.training_loss({name: batch[name] for name in batch if name != "deformation"})[0]
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="training preset name or JSON file (default tiny)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16"), default="auto",
                        help="autocast dtype (auto: what fit uses on the device; none on a CPU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side (default 10)")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps) < 1:
        parser.error("--batch-size and --steps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    device = torch.device(args.device)
    dtype = autocast_dtype(device, args.precision) if device.type == "cuda" else (
        {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision))
    preset = load_preset(args.preset)
    console = Console(width=None if sys.stdout.isatty() else 200)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        root, data = Path(scratch) / "heph", Path(scratch) / "dataset"
        write_dataset(root, args.batch_size * 3 + 16, seed=5)
        prepare(root, data, ImagingSettings())
        samples = load_dataset(data).samples
        model, processor = create_from_scratch(preset.model, [sample.caption for sample in samples])
        collate = CaptionCollator(processor, preset.model.max_caption_tokens)
        chunks = [samples[i:i + args.batch_size] for i in range(0, len(samples) - args.batch_size + 1, args.batch_size)]
        batches = [{name: tensor.to(device) for name, tensor in collate(chunks[i % len(chunks)]).items()}
                   for i in range(args.steps)]
    model.to(device)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fp32 = timed_steps(model, batches, None, device, preset.training.learning_rate)
    model.load_state_dict(initial)
    mixed = timed_steps(model, batches, dtype, device, preset.training.learning_rate)
    name = str(dtype).removeprefix("torch.") if dtype else "none (fp32)"
    table = Table(title=f"training steps — preset {preset.name}, {device}, batch {args.batch_size}, "
                        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    for column in ("precision", "steps", "seconds", "images/s"):
        table.add_column(column, justify="left" if column == "precision" else "right")
    for label, seconds in (("fp32", fp32), (f"autocast {name}", mixed)):
        table.add_row(label, str(args.steps), f"{seconds:.2f}", f"{args.steps * args.batch_size / seconds:.1f}")
    console.print(table)
    print(f"ratio={fp32 / mixed:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
