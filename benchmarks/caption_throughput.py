"""Captioning throughput: insarwatch's ``Captioner`` against the one-tile-at-a-time recipe.

Builds a BLIP with exactly the shape of ``Salesforce/blip-image-captioning-base`` (ViT-B/16
at 384 px, BERT-base text decoder, 30,524-token vocabulary) from random weights, so every
matrix multiply costs what the real model's does, and saves it with ``save_pretrained``;
with ``--arch git``, a GIT of the shape of ``microsoft/git-base`` (CLIP ViT-B/16 at 224 px,
6-layer decoder, 30,522-token vocabulary) instead.
Both sides caption the same synthetic interferogram tiles with beam width 5 and exactly
``--tokens`` generated tokens (``min_new_tokens = max_new_tokens``), and both produce a
caption and a retrieval embedding per tile.

- baseline: what public BLIP/GIT fine-tuning examples do: per tile,
  ``processor(images=tile, return_tensors="pt")`` then ``model.generate(pixel_values=...)``,
  then a separate vision forward for the embedding.
- insarwatch: ``Captioner.caption`` (batches, one vision pass feeding decoder and
  embedding, preprocessing in worker threads, inference mode, autocast on CUDA).

The two sides run alternately in the same process (``--rounds``) so background load on a
shared machine falls on both. Prints a table, then ``ratio=<insarwatch / baseline tiles/s>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from insarwatch.captioner import Captioner, read_architecture
from insarwatch.config import CaptioningSettings
from insarwatch.synthetic.patches import make_patch

# The real checkpoint's tokenizer is bert-base-uncased (30,522) plus [DEC] and [ENC].
BASE_VOCAB = 30_524
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]")
# A toy shape for smoke tests: same code paths, milliseconds per tile.
TINY = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 64, "patch_size": 16},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 128},
    "vocab": 256,
}
BASE = {"vision": {"image_size": 384}, "text": {}, "vocab": BASE_VOCAB}
# GitConfig() defaults are microsoft/git-base's shape; its tokenizer is bert-base-uncased.
GIT_BASE = {"vision": {"image_size": 224, "hidden_act": "quick_gelu"}, "text": {}, "vocab": 30_522}


def tiles(count: int, seed: int = 17) -> list[np.ndarray]:
    """``count`` synthetic 224 px interferogram patches as RGB arrays (the daemon's tile size)."""
    return [make_patch(seed, index).rgb for index in range(count)]


def caption_corpus(count: int = 300, seed: int = 17) -> list[str]:
    return [make_patch(seed, index, size=64).annotation["caption"] for index in range(count)]


def wordpiece_tokenizer(captions: list[str], size: int):
    """A BERT-style WordPiece vocabulary learnt from ``captions``, filled to exactly ``size`` entries.

    The caption grammar yields only a few hundred word pieces; the rest of the vocabulary is
    ``[unusedN]`` entries, as in BERT's own vocab.txt, so the model keeps the real checkpoint's
    30,524-way output layer and every id a random model emits still decodes.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    def pipeline(model):
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        return tokenizer

    learner = pipeline(models.WordPiece(unk_token="[UNK]"))
    learner.train_from_iterator(
        captions, trainers.WordPieceTrainer(vocab_size=size, special_tokens=list(SPECIALS), show_progress=False)
    )
    vocab = dict(sorted(learner.get_vocab().items(), key=lambda item: item[1])[:size])
    filler = (f"[unused{n}]" for n in range(size))
    while len(vocab) < size:
        vocab[next(filler)] = len(vocab)
    return BertTokenizerFast(
        tokenizer_object=pipeline(models.WordPiece(vocab=vocab, unk_token="[UNK]")),
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        bos_token="[DEC]", clean_up_tokenization_spaces=True,
    )


def build_blip(directory: Path, shape: dict) -> Path:
    """Save a randomly initialised BLIP of ``shape`` and its processor into ``directory``."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = wordpiece_tokenizer(caption_corpus(), shape["vocab"])
    size = shape["vision"]["image_size"]
    processor = BlipProcessor(BlipImageProcessor(size={"height": size, "width": size}), tokenizer)
    config = BlipConfig(
        # BLIP's vision init of 1e-10 would push activations towards denormals, which are far
        # slower on a CPU than the real checkpoint's weights; 0.02 keeps them in range.
        vision_config={**shape["vision"], "initializer_range": 0.02},
        text_config={
            **shape["text"], "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


def build_git(directory: Path, shape: dict) -> Path:
    """Save a randomly initialised GIT of ``shape`` and its processor into ``directory``."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = wordpiece_tokenizer(caption_corpus(), shape["vocab"])
    size = shape["vision"]["image_size"]
    processor = GitProcessor(CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
                             tokenizer)
    config = GitConfig(
        vision_config=shape["vision"], **shape["text"], vocab_size=len(tokenizer),
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    GitForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


# (builder, toy shape, real shape) per architecture.
MODELS = {"blip": (build_blip, TINY, BASE), "git": (build_git, TINY, GIT_BASE)}


@dataclass
class Side:
    name: str
    seconds: float = 0.0
    tiles: int = 0
    captions: list[str] | None = None

    @property
    def rate(self) -> float:
        return self.tiles / self.seconds if self.seconds else 0.0


class Baseline:
    """The public recipe: one tile at a time, ``generate`` then a second vision forward."""

    def __init__(self, model_dir: Path, device: torch.device, options: dict) -> None:
        adapter = read_architecture(model_dir)
        self.processor = adapter.processor_class().from_pretrained(model_dir, local_files_only=True)
        self.model = adapter.model_class().from_pretrained(model_dir, local_files_only=True).to(device).eval()
        self.vision = adapter(self.model).vision  # the vision tower alone, as the recipe calls it
        self.device = device
        self.options = options

    def run(self, images: list[np.ndarray]) -> list[str]:
        captions = []
        for image in images:
            inputs = self.processor(images=image, return_tensors="pt").to(self.device)
            tokens = self.model.generate(**inputs, **self.options)
            captions.append(self.processor.decode(tokens[0], skip_special_tokens=True).strip())
            with torch.no_grad():
                _, pooled = self.vision(inputs["pixel_values"])
            torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return captions


def timed(side: Side, work, images: list[np.ndarray], device: torch.device) -> None:
    start = time.perf_counter()
    side.captions = work(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    side.seconds += time.perf_counter() - start
    side.tiles += len(images)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python benchmarks/caption_throughput.py --quick\n"
               "  python benchmarks/caption_throughput.py --tiles 16 --batch-size 8\n"
               "  python benchmarks/caption_throughput.py --device cuda --batch-size 32 --tiles 256 --precision bf16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="4 tiles, 1 round (under 3 minutes on a 2-core CPU)")
    parser.add_argument("--tiles", type=int, default=16, help="tiles per side per round (default 16)")
    parser.add_argument("--batch-size", type=int, default=8, help="insarwatch batch size (default 8)")
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per caption, both sides (default 32)")
    parser.add_argument("--beams", type=int, default=5, help="beam width, both sides (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating baseline/insarwatch rounds (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                        help="insarwatch autocast on CUDA (auto: bf16 where supported); the baseline is fp32")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads for both sides (captioning.cpu_threads; default: one per core)")
    parser.add_argument("--model-dir", type=Path,
                        help="reuse the model saved here (built there first if the directory is empty or missing)")
    parser.add_argument("--tiny", action="store_true", help="a toy-sized model instead of the base shape (smoke tests)")
    parser.add_argument("--arch", choices=sorted(MODELS), default="blip",
                        help="blip (Salesforce/blip-image-captioning-base shape) or git (microsoft/git-base shape)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tiles, args.rounds = min(args.tiles, 4), 1
    counts = (args.tiles, args.batch_size, args.tokens, args.beams, args.rounds, args.threads or 1)
    if min(counts) < 1 or args.threads == 0:
        parser.error("--tiles, --batch-size, --tokens, --beams, --rounds and --threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Tables are wide; a pipe or log file should not wrap them to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as scratch:
        model_dir = args.model_dir or Path(scratch) / args.arch
        if not (model_dir / "config.json").is_file():
            console.print(f"[dim]building a random {'tiny' if args.tiny else 'base-shaped'} {args.arch} in {model_dir}[/]")
            build, tiny, base = MODELS[args.arch]
            build(model_dir, tiny if args.tiny else base)
        settings = CaptioningSettings(
            device=args.device, precision=args.precision, num_beams=args.beams, max_new_tokens=args.tokens,
            min_new_tokens=args.tokens, tiles_per_call=args.batch_size, cpu_threads=args.threads,
        )
        captioner = Captioner.load(model_dir, settings)  # sets the torch threads both sides use
        baseline = Baseline(model_dir, device, captioner.generation_options())
        images = tiles(args.tiles)
        # One untimed tile each: first-call allocations and lazy initialisation are not throughput.
        baseline.run(images[:1])
        captioner.caption(images[:1])
        sides = Side("baseline (per tile: processor → generate, + vision forward)"), Side("insarwatch Captioner")
        load_before = os.getloadavg()[0]
        for _ in range(args.rounds):
            timed(sides[0], baseline.run, images, device)
            timed(sides[1], lambda batch: [c.text for c in captioner.caption(batch)], images, device)
        load_after = os.getloadavg()[0]

    same = sum(a == b for a, b in zip(sides[0].captions, sides[1].captions, strict=True))
    table = Table(title=f"Captioning throughput — {captioner.architecture.label} "
                        f"{'tiny' if args.tiny else 'base shape'}, {args.device}, "
                        f"beams {args.beams}, {args.tokens} tokens, insarwatch batch {args.batch_size}")
    for column in ("path", "tiles", "seconds", "s/tile", "tiles/s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for side in sides:
        table.add_row(side.name, str(side.tiles), f"{side.seconds:.1f}", f"{side.seconds / side.tiles:.2f}",
                      f"{side.rate:.3f}")
    console.print(table)
    console.print(f"identical captions: {same}/{len(images)} · torch threads {torch.get_num_threads()} · "
                  f"load average {load_before:.2f} → {load_after:.2f} on {os.cpu_count()} CPUs")
    print(f"ratio={sides[1].rate / sides[0].rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
