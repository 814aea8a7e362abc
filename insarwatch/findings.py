"""Findings: caption text → the structured ``Finding`` a decision can be made on.

Owns reading the Hephaestus caption grammar in both forms the service meets — the
experts' own captions (varied phrasing, several patterns per caption, typos) and
fine-tuned BLIP output (lowercase, hyphens spaced as "sill - type", sometimes cut off
mid-sentence) — into deformation patterns (type, intensity, location), atmospheric
effects, low coherence and processing errors. Text that is not an interferogram
description at all (an un-tuned model's "a close up of a map of italy") is
``recognized=False`` and reports no deformation, so it can never raise an alert.
Everything here is a pure function of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

INTENSITIES = ("low", "medium", "high")
ATMOSPHERE = ("turbulent", "stratification", "wave")


@dataclass(frozen=True)
class Pattern:
    """One deformation pattern a caption describes."""

    type: str
    intensity: str | None
    location: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "intensity": self.intensity, "location": self.location}


@dataclass(frozen=True)
class Finding:
    """What a caption says about an interferogram (the ``insarwatch findings`` contract)."""

    recognized: bool
    deformation: bool
    patterns: tuple[Pattern, ...] = ()
    atmosphere: tuple[str, ...] = ()
    low_coherence: bool = False
    processing_error: bool = False

    @property
    def severity(self) -> str | None:
        """The strongest intensity among the patterns, or None."""
        return strongest(pattern.intensity for pattern in self.patterns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recognized": self.recognized,
            "deformation": self.deformation,
            "patterns": [pattern.to_dict() for pattern in self.patterns],
            "atmosphere": list(self.atmosphere),
            "low_coherence": self.low_coherence,
            "processing_error": self.processing_error,
        }


def strongest(intensities: Any) -> str | None:
    """The highest of ``intensities`` (any case; unknown words and None ignored)."""
    ranked = [INTENSITIES.index(word.lower()) for word in intensities if word and word.lower() in INTENSITIES]
    return INTENSITIES[max(ranked)] if ranked else None


# Misspellings seen in the experts' captions, fixed before any pattern is matched.
_TYPOS = {
    "rigth": "right", "rihgt": "right", "rght": "right", "lef": "left", "botom": "bottom", "buttom": "bottom",
    "bottem": "bottom", "centeral": "central", "cental": "central", "deformtion": "deformation",
    "deformaton": "deformation", "defromation": "deformation", "deforamtion": "deformation",
    "intesity": "intensity", "intenisty": "intensity", "intensty": "intensity", "intensiy": "intensity",
    "detcted": "detected", "dectected": "detected", "deteced": "detected", "patern": "pattern",
    "paterns": "patterns", "stratfication": "stratification", "startification": "stratification",
    "turbulant": "turbulent", "dike": "dyke", "dikes": "dykes", "mogy": "mogi", "spheriod": "spheroid",
    "earthqauke": "earthquake", "eartquake": "earthquake", "coherance": "coherence",
}
_TYPO_RE = re.compile(r"\b(" + "|".join(sorted(_TYPOS, key=len, reverse=True)) + r")\b")
# Words run together with the preposition after them ("intensityon the top").
_RUN_ON_RE = re.compile(r"\b(intensity|detected|side|pattern|type)(on|at|in|of)\b")

_TYPE_WORDS = {
    "mogi": "mogi", "dyke": "dyke", "dykes": "dyke", "sill": "sill", "sills": "sill", "spheroid": "spheroid",
    "spheroidal": "spheroid", "earthquake": "earthquake", "seismic": "earthquake", "coseismic": "earthquake",
    "co-seismic": "earthquake", "unidentified": "unidentified", "unclassified": "unidentified",
    "unidentifiable": "unidentified",
}
_TYPE_RE = re.compile(r"\b(" + "|".join(sorted(_TYPE_WORDS, key=len, reverse=True)) + r")\b")
# A type word only names a pattern in a sentence about deformation ("a window sill" is not one).
# Tolerant stems: "deformation"/"defromation"/"deformtion"; "intensity"/"intesity"/"intenisty".
_DEFORM_STEM = r"def(?:or|ro|r|o)m\w*"
_DEFORM = r"\b" + _DEFORM_STEM
_INTENSITY_WORD = r"\binte?n?[si]{1,2}t\w*"
_DOMAIN_CUE_RE = re.compile(_DEFORM + r"|\bpatterns?\b|\btype\b|" + _INTENSITY_WORD
                            + r"|\bfringes?\b|\buplift|\bsubsidence|\binflation|\bdeflation|\bsource\b")
_LEVEL = r"(low|medium|moderate|high)"
_INTENSITY_RES = (
    re.compile(r"\b" + _LEVEL + r"[\s-]*" + _INTENSITY_WORD[2:]),
    re.compile(_INTENSITY_WORD + r"\s+(?:level\s+)?(?:is\s+|of\s+|was\s+|seems\s+)?" + _LEVEL + r"\b"),
    re.compile(r"\b" + _LEVEL + r"[\s-]+(?:\w+[\s-]+)?(?:" + _DEFORM_STEM + r"|type\b|pattern|"
               + "|".join(_TYPE_WORDS) + r")"),
)
_LOCATION_RE = re.compile(r"\b(?:on|at|in|around|near|along|towards|over)\b\s*(?:the\b\s*)?(.*)")
_LOCATION_STOP_RE = re.compile(
    r"\s+(?:of|can|could|is|are|was|were|with|which|that|due|caused)\b.*"
    r"|,\s*(?:a|an|the|which|where|while|but|with)\b.*"
)
_LOCATION_TAIL_RE = re.compile(r"(?:\s+(?:and|or|but|a|an|the|while|whereas))+$|,$")
_LOCATION_NOUN_RE = re.compile(r"\s+(?:side|sides|part|parts|area|region)$")
_NEGATION_RE = re.compile(
    r"\b(?:no|not|never|without|absence\s+of|lack\s+of)\s+(?:\w+[\s-]+){0,3}?" + _DEFORM_STEM
    + r"|" + _DEFORM + r"(?:[\s-]+\w+){0,4}?\s+(?:cannot|can\s+not|could\s+not|is\s+not|are\s+not|was\s+not"
    r"|were\s+not|not)\s+(?:be\s+)?(?:detected|observed|seen|visible|present|found|identified)"
    r"|\bnon[\s-]?" + _DEFORM_STEM
)
_ATMOSPHERE_RES = (
    ("turbulent", re.compile(r"\bturbulen\w*")),
    ("stratification", re.compile(r"\bstratif\w*")),
    # Bare "waves" is left out: an un-tuned model's "waves on a beach" is no atmosphere.
    ("wave", re.compile(r"\bwave[\s-]*like\b|\bwave\s+patterns?\b")),
)
_LOW_COHERENCE_RE = re.compile(
    r"\blow\s+coherence|\bcoherence\s+(?:is\s+)?(?:low|poor|lost)|\bloss\s+of\s+coherence|\bdecorrelat\w*"
    r"|\bincoheren\w*|\bnoise\s+in\s+(?:the\s+)?" + _DEFORM_STEM + r"|\bnoisy\b|\btemporal\s+baseline"
)
_PROCESSING_ERROR_RE = re.compile(
    r"\b(?:processing|unwrapping)\s+(?:errors?|artifacts?|artefacts?|problems?)"
    r"|\berrors?\s+(?:in|during|from)\s+(?:the\s+)?(?:processing|unwrapping|phase\s+unwrapping)"
    r"|\bunwrapping\s+(?:failed|failure)"
)
_OTHER_DOMAIN_RE = re.compile(
    r"\batmospher\w*|\bfringes?\b|\bglacier|\borbital\b|\binterferogram|\bcoherence\b|\bphase\s+ramp"
    r"|\bimage\s+(?:artifacts?|artefacts?)|\bcontains\s+no\s+information|\bcorrupt\w*"
)
_SENTENCE_RE = re.compile(r"[.;!?]+(?:\s+|$)")


def normalise(text: str) -> str:
    """Lowercase, hyphens closed up ("sill - type" → "sill-type"), known typos fixed,
    whitespace collapsed."""
    text = text.lower().replace("\u2010", "-").replace("\u2011", "-").replace("\u2013", "-")
    text = re.sub(r"\s*-\s*", "-", text)
    text = _TYPO_RE.sub(lambda match: _TYPOS[match.group(1)], text)
    text = _RUN_ON_RE.sub(r"\1 \2", text)
    return re.sub(r"\s+", " ", text).strip()


def _intensity(segment: str) -> str | None:
    for pattern in _INTENSITY_RES:
        match = pattern.search(segment)
        if match:
            word = match.group(1)
            return "medium" if word == "moderate" else word
    return None


def _location(segment: str) -> str | None:
    match = _LOCATION_RE.search(segment.strip())
    if not match:
        return None
    phrase = _LOCATION_STOP_RE.sub("", match.group(1).strip()).strip(" -")
    phrase = _LOCATION_NOUN_RE.sub("", _LOCATION_TAIL_RE.sub("", phrase)).strip()
    return phrase or None


def _patterns(sentence: str) -> list[Pattern]:
    """The typed patterns of one sentence: each type word starts a segment that runs to
    the next one ("a dyke-type of high intensity on the leftmost and sill-type of low ...")."""
    mentions = list(_TYPE_RE.finditer(sentence))
    if not mentions or not _DOMAIN_CUE_RE.search(sentence):
        return []
    found = []
    for number, mention in enumerate(mentions):
        start = 0 if number == 0 else mention.start()
        end = mentions[number + 1].start() if number + 1 < len(mentions) else len(sentence)
        segment = sentence[start:end]
        after = segment[mention.end() - start:]
        # "On the top side, a sill-type ..." names the place before the type.
        location = _location(after) or _location(segment[:mention.start() - start])
        found.append(Pattern(_TYPE_WORDS[mention.group(1)], _intensity(segment), location))
    return found


def parse_caption(text: str) -> Finding:
    """Read a caption (expert or model) into a ``Finding``; never raises on odd text."""
    sentences = [part for part in _SENTENCE_RE.split(normalise(text)) if part]
    typed: list[Pattern] = []
    untyped: list[Pattern] = []
    recognized = False
    low_coherence = processing_error = False
    atmosphere: set[str] = set()
    for sentence in sentences:
        sentence_low_coherence = bool(_LOW_COHERENCE_RE.search(sentence))
        low_coherence |= sentence_low_coherence
        processing_error |= bool(_PROCESSING_ERROR_RE.search(sentence))
        atmosphere |= {name for name, pattern in _ATMOSPHERE_RES if pattern.search(sentence)}
        negated = bool(_NEGATION_RE.search(sentence))
        # "No mogi-type deformation can be detected." names a type it denies.
        patterns = [] if negated else _patterns(sentence)
        typed += patterns
        # "Deformation can be detected ..." with no type word still reports a pattern,
        # unless the sentence is about noise in the deformation zone.
        if not patterns and not negated and not sentence_low_coherence and re.search(_DEFORM, sentence):
            untyped.append(Pattern("unidentified", _intensity(sentence), _location(sentence)))
        recognized |= bool(patterns or negated or re.search(_DEFORM, sentence) or _OTHER_DOMAIN_RE.search(sentence)
                           or sentence_low_coherence or atmosphere)
    recognized |= processing_error
    # Typed patterns describe what an untyped sentence ("Two deformation patterns can be
    # detected on the right side.") announced; only without them does the untyped one stand.
    # Beam search sometimes repeats a sentence: one pattern described twice is one pattern.
    patterns = tuple(dict.fromkeys(typed or untyped[:1]))
    return Finding(
        recognized=recognized,
        deformation=bool(patterns),
        patterns=patterns,
        atmosphere=tuple(name for name in ATMOSPHERE if name in atmosphere),
        low_coherence=low_coherence,
        processing_error=processing_error,
    )
