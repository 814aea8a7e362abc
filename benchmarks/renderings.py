"""Which colour table drew each real interferogram: detection of renderings on ../shared/realdata.

Every PNG of the real development folders is decoded as the daemon decodes it (RGBA converted,
transparency kept as no data) and read by ``insarwatch.phase.from_rgb``: it detects which table drew
the image (LiCSAR's ``pha.cpt`` or ``phaold.cpt``, grey levels, the synthetic palette) and inverts
it, or, when no table fits, reads a rainbow-on-amplitude rendering's hue as phase, or answers
``Unknown`` with the reason (fully decorrelated tiles). Per folder the table counts the detected
renderings, the share of coloured pixels on the detected table's curve and on the runner-up's (the
detection margin), the share of valid pixels, the milliseconds per image, and the paper's baseline:
how many images its P-mode-only path would keep. A second table gives the rainbow evidence
(``phase.rainbow_evidence``) of every image by the rendering detected: the margins of that test.
It ends with ``ratio=<share of the c1 and s1 images read as a known rendering>``.

    python benchmarks/renderings.py
    python benchmarks/renderings.py --realdata ../shared/realdata
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from insarwatch import phase
from insarwatch.imaging import decode_png, nodata_mask, phase_image, to_rgb

FOLDERS = ("c1/0", "c1/1", "s1/0", "s1/1", "frames")
RENDERINGS = ("pha", "phaold", "grey", "synthetic", "rainbow", "unknown")
MAX_PIXELS = 10**8


def read_folder(folder: Path,
                evidence: dict[str, list[phase.Rainbow]]) -> list[tuple[str, str, float, float, float, float]]:
    """Per image: (mode, rendering, share on its table, runner-up share, valid share, seconds); the
    rainbow evidence of every image is added to ``evidence`` under the rendering detected."""
    rows = []
    for path in sorted(folder.glob("*.png")):
        image = decode_png(path, MAX_PIXELS)
        start = time.perf_counter()
        rgb = to_rgb(image, "convert", path)
        read = phase_image(image, rgb)
        seconds = time.perf_counter() - start
        fits = phase.detect(rgb, nodata_mask(image, rgb))
        rendering = "unknown" if isinstance(read, phase.Unknown) else read.rendering
        evidence.setdefault(rendering, []).append(phase.rainbow_evidence(rgb, nodata_mask(image, rgb)))
        shares = [fit.share for fit in fits] + [0.0, 0.0]
        if isinstance(read, phase.Unknown):
            rows.append((image.mode, "unknown", shares[0], shares[1], 0.0, seconds))
        else:
            rows.append((image.mode, read.rendering, shares[0], shares[1], float(read.valid.mean()), seconds))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realdata", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    args = parser.parse_args(argv)
    if not args.realdata.is_dir():
        print(f"{args.realdata}: no such folder (the real development data lives in ../shared/realdata)")
        return 2
    table = Table(title=f"renderings detected in {args.realdata}")
    for column in ("folder", "images", *RENDERINGS, "on table (median, min)", "runner-up (median)",
                   "valid px (median)", "ms/image", "paper keeps (P mode)"):
        table.add_column(column, justify="left" if column == "folder" else "right")
    known = total = 0
    unknown_best = []
    evidence: dict[str, list[phase.Rainbow]] = {}
    for name in FOLDERS:
        rows = read_folder(args.realdata / name, evidence)
        if not rows:
            continue
        counts = Counter(rendering for _, rendering, *_ in rows)
        detected = [row for row in rows if row[1] != "unknown"]
        unknown_best += [row[2] for row in rows if row[1] == "unknown"]
        on_table = [row[2] for row in detected]
        table.add_row(
            name, str(len(rows)), *(str(counts[rendering]) for rendering in RENDERINGS),
            f"{np.median(on_table):.2f}, {min(on_table):.2f}" if on_table else "-",
            f"{np.median([row[3] for row in detected]):.2f}" if detected else "-",
            f"{np.median([row[4] for row in detected]):.2f}" if detected else "-",
            f"{1000 * np.mean([row[5] for row in rows]):.1f}",
            str(sum(row[0] == "P" for row in rows)),
        )
        if name != "frames":
            known += len(detected)
            total += len(rows)
    Console(width=200).print(table)
    rainbow = Table(title="rainbow-on-amplitude evidence per detected rendering (min / median / max)")
    for column in ("rendering", "images", "saturated share", "brightness deviation", "hue-tied brightness",
                   "hue continuity"):
        rainbow.add_column(column, justify="left" if column == "rendering" else "right")
    for rendering, found in evidence.items():
        columns = [[getattr(item, field) for item in found] for field in ("share", "spread", "tied", "continuity")]
        rainbow.add_row(rendering, str(len(found)), *(
            " / ".join(f"{value:.2f}" for value in (min(values), float(np.median(values)), max(values)))
            for values in columns))
    Console(width=200).print(rainbow)
    print(f"a rainbow needs: saturated share >= {phase.MIN_FIT}, brightness deviation >= {phase.RAINBOW_MIN_SPREAD}, "
          f"hue-tied brightness <= {phase.RAINBOW_MAX_TIED}, hue continuity >= {phase.RAINBOW_MIN_CONTINUITY}")
    if unknown_best:
        print(f"unknown images: best table's share at most {max(unknown_best):.2f} (detection needs {phase.MIN_FIT})")
    print(f"ratio={known / total:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
