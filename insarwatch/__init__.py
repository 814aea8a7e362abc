"""insarwatch: a monitoring daemon that captions LiCSAR interferograms with BLIP and alerts volcanologists.

The package is the runtime the daemon needs; model refresh lives in the sibling
``training`` package. Each module owns one step of the flow; ARCHITECTURE.md at the
repository root is the map (stage → module → record, the dependency rule, side effects).
"""

__version__ = "0.1.0"
