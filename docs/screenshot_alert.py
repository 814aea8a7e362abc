"""Render the alert page for a synthetic deforming frame and screenshot it with headless Chromium.

    python docs/screenshot_alert.py [--out docs/alert-page.png] [--seed 7] [--keep DIR]

What is real and what is not — this script shows the PAGE, not the model:
- real: the synthetic LiCSAR drop (``insarwatch.synth``, physics-based deformation), PNG
  decoding, quality checks and tiling (``insarwatch.imaging``), caption parsing
  (``insarwatch.findings``), the decision rules (``insarwatch.alerts``), the report
  (``insarwatch.reports``) and the browser;
- SYNTHETIC TRUTH instead of a model: each tile's caption is written from the synthetic
  deformation source that made the frame (no BLIP model runs), and its neighbours are
  synthetic expert-captioned patches of the same kind, ranked by the cosine similarity
  of raw downsampled pixels (not BLIP embeddings). The page says so: its model version
  reads ``synthetic-truth (no model)``.

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

import numpy as np
from PIL import Image

from insarwatch import reports
from insarwatch.synthetic import captions
from insarwatch.synthetic.patches import make_patch
from insarwatch.synthetic.drop import SynthInterferogram, write_drop
from insarwatch.alerts import Alert, alert_key, decide_interferogram, decide_tile
from insarwatch.config import Settings, Volcano
from insarwatch.findings import parse_caption
from insarwatch.imaging import check_quality, decode_png, tile, to_rgb
from insarwatch.synthetic.render import PALETTE
from insarwatch.retrieval import IndexRecord, Neighbour

MODEL_VERSION = "synthetic-truth (no model)"
VOLCANO = "Synthetic volcano"
QUIET_CAPTION = "No deformation activity can be detected."
NEIGHBOURS = 5
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def features(rgb: np.ndarray) -> np.ndarray:
    """Raw pixels at 32 x 32, L2-normalised: a crude stand-in for the BLIP embedding."""
    small = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
    return small / max(float(np.linalg.norm(small)), 1e-6)


def expert_patches(seed: int, count: int = 120) -> list[tuple[IndexRecord, np.ndarray]]:
    """Clean synthetic Hephaestus-style patches with their expert-style captions and labels."""
    patches = []
    for index in range(count):
        patch = make_patch(seed, index)
        if patch.spec.defect != "none" or patch.spec.rgba:
            continue
        annotation = patch.annotation
        record = IndexRecord(annotation["caption"], annotation["label"] == ["Deformation"],
                             tuple(annotation["activity_type"]), tuple(annotation["intensity_level"]),
                             f"synthetic-hephaestus/{annotation['uniqueID']}")
        patches.append((record, features(PALETTE[patch.indices])))
    return patches


def neighbours_like(pixels: np.ndarray, activity_type: str | None,
                    patches: list[tuple[IndexRecord, np.ndarray]]) -> list[Neighbour]:
    """The most similar patches whose truth matches the tile's (same activity type, or none)."""
    query = features(np.ascontiguousarray(pixels))
    matching = [(record, vector) for record, vector in patches
                if (activity_type in record.activity_type if activity_type else not record.deformation)]
    scored = sorted(((float(query @ vector), record) for record, vector in matching), key=lambda item: -item[0])
    return [Neighbour(round(similarity, 4), record) for similarity, record in scored[:NEIGHBOURS]]


def truth_caption(truth: SynthInterferogram, box: tuple[int, int, int, int]) -> str:
    """The expert-style sentence for a deforming tile, located relative to the tile."""
    left, top, right, bottom = box
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    x = min(max(truth.volcano[0] - left, 0), right - left - 1)
    y = min(max(truth.volcano[1] - top, 0), bottom - top - 1)
    mask[y, x] = True
    return captions.deformation_sentence(truth.activity_type, truth.intensity, captions.location_phrase(mask))


def build_alert(work: Path, seed: int) -> tuple[Alert, Settings]:
    drop = work / "drop"
    # The volcano sits on a tile boundary so the page shows how neighbouring tiles are outlined.
    frame = write_drop(drop, frames=1, seed=seed, pairs=2, volcano=(672, 540))[0]
    truth = next(item for item in frame.interferograms if item.deformation and not item.low_coherence)
    settings = Settings(var_dir=work / "var", drop_dir=drop, volcanoes=[Volcano(name=VOLCANO, frames=[frame.frame])])
    image = decode_png(truth.diff_png, settings.imaging.max_pixels)
    rgb = to_rgb(image, settings.imaging.rgba_policy, truth.diff_png)
    quality = check_quality(image, rgb, truth.coherence_png, settings.imaging)
    patches = expert_patches(seed)
    decisions = []
    for piece in tile(rgb, settings.imaging.tile_size, settings.imaging.tile_stride):
        deforming = piece.index in truth.tiles
        caption = truth_caption(truth, piece.box) if deforming else QUIET_CAPTION
        neighbours = neighbours_like(piece.pixels, truth.activity_type if deforming else None, patches)
        decisions.append(decide_tile(piece.index, piece.box, caption, parse_caption(caption), neighbours,
                                     settings.alerts))
    received = datetime.combine(truth.secondary + timedelta(days=2), time(5, 12), tzinfo=timezone.utc)
    alert = Alert(
        key=alert_key(truth.frame, truth.primary, truth.secondary, MODEL_VERSION), frame=truth.frame,
        volcano=VOLCANO, primary=truth.primary, secondary=truth.secondary, model_version=MODEL_VERSION,
        decision=decide_interferogram(decisions), quality=quality, received_at=received,
        processed_at=received + timedelta(seconds=95), diff_png=truth.diff_png,
    )
    return alert, settings


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
