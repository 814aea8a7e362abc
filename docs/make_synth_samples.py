"""Draw docs/synth-samples.png: five synthetic patches per class, as `synth-dataset` renders them.

Rows are the deformation types and the non-deforming class; columns vary the intensity,
the atmosphere and the rendering (LiCSAR's ``pha``/``phaold`` previews, grey-level phase). Run from the repository root: ``python docs/make_synth_samples.py``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from insarwatch.synthetic import patches, physics

COLUMNS = (("Low", 0, "pha"), ("Medium", 2, "grey"), ("High", 1, "pha"), ("Low", 2, "phaold"), ("High", 0, "grey"))
ATMOSPHERE = ("no atmosphere", "stratification", "turbulence")
ROWS = (*physics.ACTIVITY_TYPES, None)
MARGIN, HEADER, GAP, TILE = 110, 24, 4, 168  # tiles shown at 3/4 size to keep the PNG small
COLOURS = 127


def sample(row: int, column: int) -> Image.Image:
    activity_type = ROWS[row]
    intensity, atmosphere, rendering = COLUMNS[column]
    deforming = activity_type is not None
    spec = patches.PatchSpec(deforming, (activity_type,) if deforming else (), (intensity,) if deforming else (),
                           atmosphere, "none", rendering, "AD"[column % 2])
    patch = patches.render_patch(0, spec, patches.child_rng(2026, row * len(COLUMNS) + column))
    return Image.fromarray(patch.rgb).resize((TILE, TILE), Image.LANCZOS)


def main(out: Path = Path(__file__).with_name("synth-samples.png")) -> None:
    width = MARGIN + len(COLUMNS) * (TILE + GAP)
    height = HEADER + len(ROWS) * (TILE + GAP)
    mosaic = Image.new("RGB", (width, height), (255, 255, 255))
    for row in range(len(ROWS)):
        for column in range(len(COLUMNS)):
            mosaic.paste(sample(row, column), (MARGIN + column * (TILE + GAP), HEADER + row * (TILE + GAP)))
    image = mosaic.quantize(COLOURS)
    image.putpalette(image.getpalette()[: 3 * COLOURS] + [0, 0, 0])
    draw = ImageDraw.Draw(image)
    ink = COLOURS  # the entry just added: black
    for column, (intensity, atmosphere, rendering) in enumerate(COLUMNS):
        draw.text((MARGIN + column * (TILE + GAP) + 2, 6), f"{intensity} / {ATMOSPHERE[atmosphere]} / {rendering}",
                  fill=ink)
    for row, activity_type in enumerate(ROWS):
        draw.text((6, HEADER + row * (TILE + GAP) + TILE // 2), activity_type or "No deformation", fill=ink)
    image.save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main()
