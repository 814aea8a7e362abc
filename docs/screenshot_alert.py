"""Render the alert page for a synthetic deforming frame and screenshot it with headless Chromium.

    python docs/screenshot_alert.py [--out docs/alert-page.png] [--seed 7] [--keep DIR]

What is real and what is not — this script shows the PAGE, not the model:
- real: the synthetic LiCSAR drop (``insarwatch.synthetic``: physics-based deformation, GeoTIFF
  siblings georeferenced around a real GVP volcano), the daemon's reading of it (decoding,
  siblings, quality checks, tiles along the swath), caption parsing, the decision rules, the
  bounds and nearest volcanoes, the report with its map, and the browser;
- SYNTHETIC TRUTH instead of a model (``insarwatch.synthetic.truth``): each tile's caption is
  written from the deformation source that made the frame (no BLIP model runs), and its
  neighbours agree with it. The page says so: its model version reads
  ``synthetic-truth (no model)``.

Needs Chromium (Debian: ``apt-get install -y chromium``). The screenshot is re-encoded
with a 256-colour palette so the committed PNG stays well under 1 MB.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

from PIL import Image

from insarwatch import reports
from insarwatch.alerts import Alert
from insarwatch.config import Settings
from insarwatch.synthetic.drop import write_drop
from insarwatch.synthetic.truth import truth_alert

MODEL_VERSION = "synthetic-truth (no model)"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def build_alert(work: Path, seed: int) -> tuple[Alert, Settings]:
    drop = work / "drop"
    # The volcano sits on a tile boundary so the page shows how neighbouring tiles are outlined.
    frame = write_drop(drop, frames=1, seed=seed, pairs=2, volcano=(672, 540))[0]
    truth = next(item for item in frame.interferograms if item.deformation and not item.low_coherence)
    settings = Settings(var_dir=work / "var", drop_dir=drop)
    received = datetime.combine(truth.secondary + timedelta(days=2), time(5, 12), tzinfo=timezone.utc)
    return truth_alert(truth, settings, MODEL_VERSION, received), settings


def screenshot(page: Path, out: Path, width: int, height: int, profile: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found (Debian: apt-get install -y chromium)")
    raw = profile / "screenshot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile / 'chromium'}",
                    f"--screenshot={raw}", f"--window-size={width},{height}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    Image.open(raw).convert("RGB").quantize(colors=256).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("alert-page.png"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="Keep the drop and the report here instead of a temp dir.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        alert, settings = build_alert(work, args.seed)
        frame, problem = reports.load_frame_image(alert, settings.imaging.max_pixels)
        report = reports.build_alert_report(alert, frame, image_problem=problem)
        page, _ = reports.write_report(report, settings.reports_dir)
        screenshot(page, args.out, args.width, args.height, Path(scratch))
    print(f"{alert.decision.level} ({alert.decision.severity}), {len(alert.decision.tiles)} flagged tile(s): "
          f"{page if args.keep else 'page in a temp dir'} -> {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
