"""The experts' caption grammar as the synthetic generators write it.

Location phrases on the experts' 3x3 grid of a patch, atmosphere and flag sentences, and
the deformation sentence ("A dyke-type deformation pattern of high intensity can be
detected on the top side of the image."). ``findings.py`` parses what these write.
"""

from __future__ import annotations

import numpy as np

_LOCATIONS = {
    (1, 1): "on the central side",
    (0, 1): "on the top side of the image",
    (2, 1): "at the bottom of the image",
    (1, 0): "on the left side of the image",
    (1, 2): "on the right side of the image",
    (0, 0): "on the top-left side of the image",
    (0, 2): "on the top-right side of the image",
    (2, 0): "on the bottom-left side of the image",
    (2, 2): "on the bottom-right side of the image",
}
SIDES = ("top", "right", "bottom", "left")
TURBULENT_AROUND = ("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles "
                    "of the atmosphere can be detected around the area.")
STRATIFICATION = "Vertical stratification caused by atmospheric delays can be detected in high altitude areas."
STRATIFIED_AND_TURBULENT = "Vertical stratification and turbulent mixing effects can be detected around the area."
LOW_COHERENCE_NOISE = "Also, noisy areas can be detected due to low coherence."
NO_DEFORMATION = "No deformation activity can be detected."
FLAG_SENTENCES = {
    "image_artifacts": "Image artifacts are detected on image.",
    "low_coherence": "Low coherence can be detected across the image.",
    "orbital_fringes": "Orbital fringes can be detected across the image.",
    "glacier_fringes": "Glacier fringes can be detected on the image.",
    "no_info": "Part of the image contains no information.",
    "processing_error": "Processing errors can be detected on the image.",
}


def location_phrase(mask: np.ndarray) -> str:
    """Where the mask's centroid lies on a 3x3 grid of the patch, in the experts' words."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    cell = (min(2, int(rows.mean() * 3 // height)), min(2, int(cols.mean() * 3 // width)))
    return _LOCATIONS[cell]


def sides_phrase(sides: tuple[str, ...]) -> str:
    names = [side for side in SIDES if side in sides]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"on the {listed} side"


# The experts' two verbs for a pattern, at their rates in the real captions (about 2:1).
DETECTED = ("can be detected", "can be detected", "is detected")


def deformation_sentence(activity_type: str, intensity: str, location: str,
                         rng: np.random.Generator | None = None) -> str:
    name = activity_type.lower()
    article = "An" if name[0] in "aeiou" else "A"
    verb = DETECTED[0] if rng is None else str(rng.choice(DETECTED))
    return f"{article} {name}-type deformation pattern of {intensity.lower()} intensity {verb} {location}."
