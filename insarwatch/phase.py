"""Wrapped phase, whatever the rendering: what every interferogram becomes before the model sees it.

This module owns the seam between interferogram files and the model. A ``PhaseImage`` is wrapped
phase (float32 radians in [-pi, pi)) plus a validity mask and the name of the rendering it came
from; ``from_phase`` makes one from a phase array (a LiCSAR ``.geo.diff_pha.tif``: NaN or exactly 0
is no data), ``from_rgb`` from a decoded preview by detecting which colour table drew it (LiCSAR's
``pha.cpt`` and older ``phaold.cpt``, grey levels, insarwatch's synthetic palette), tolerating the
previews' palette quantisation and resampling, and inverting it, or, when no table fits, by reading
a rainbow-on-amplitude rendering's hue as phase; colours that fit none of these give ``Unknown``
with the reason. ``render`` is the one canonical rendering the model sees. The colour
tables are data here; the synthetic interferograms draw with ``SYNTHETIC``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

TWO_PI = 2 * math.pi
# A cyclic table's polyline is sampled this many times per bin: finer than any 8-bit colour step.
SAMPLES_PER_BIN = 8
# A colour this close (RGB units) to a table's curve reads as that phase. Exact palette colours lie
# within 0.9 (8-bit rounding); blends of neighbouring bins (resampling) lie on the curve itself.
TOLERANCE = 6.0
# LiCSAR's `convert ... PNG8:` keeps only the top 3 bits of each channel when a preview has more than
# 256 colours (ImageMagick's low-bit reduction): a preview whose channels hold only bit-replicated
# levels of at most this many bits is compared with its table reduced the same way.
REDUCED_MAX_BITS = 4
# A table is detected when at least this share of the coloured pixels lies on its curve: 3 times what
# uniformly random colours reach on a 3-bit-reduced curve (36 of 512 cells: 7 %). On ../shared/realdata
# LiCSAR tiles reach 22-100 % (the rest is decorrelated speckle); rainbow-on-amplitude renderings reach
# at most 2 %, tiles decorrelated almost everywhere 3-4.5 % (benchmarks/renderings.py).
MIN_FIT = 0.2
# A white region touching the border and covering this share of a colour image is fill, not phase.
FILL_MIN_SHARE = 0.1
# Grey-level phase: every coloured pixel neutral (R = G = B, a JPEG-ish spread of 2 allowed).
GREY_SPREAD = 2
GREY_MIN_SHARE = 0.99
# Rainbow on amplitude (84 of the c1 tiles of ../shared/realdata): hue is phase, brightness the radar
# amplitude. A pixel's hue reads as phase where its saturation is at least RAINBOW_SATURATION (phase is
# drawn at 0.4-0.8 there, the grey of decorrelated ground and water below 0.3) and its chroma (max - min)
# at least RAINBOW_CHROMA 8-bit steps (the hue of a dark pixel is rounding noise). An image is a rainbow
# when the hue explains at most RAINBOW_MAX_TIED of the brightness variance (brightness is amplitude,
# not a function of the colour as in every table: on ../shared/realdata pha tiles 0.30-0.88, the
# decorrelated tiles no table fits 0.43, rainbow tiles 0.01-0.15), the brightness varies (deviation at
# least RAINBOW_MIN_SPREAD; rainbow tiles 0.07-0.17) and the hue is spatially continuous (the median
# length of the mean hue phasor over 5x5 pixels at least RAINBOW_MIN_CONTINUITY: rainbow tiles
# 0.78-0.99, uniformly random colours 0.17). benchmarks/renderings.py measures these. Tables are tried
# first: a rainbow is read only when no table fits.
RAINBOW_SATURATION = 0.3
RAINBOW_CHROMA = 16
RAINBOW_MAX_TIED = 0.2
RAINBOW_MIN_SPREAD = 0.03
RAINBOW_MIN_CONTINUITY = 0.5
RAINBOW_WINDOW = 5
# The canonical rendering: channel c is 127.5 + 127.5 cos(phase - 2 pi c / 3).
NEUTRAL = 128


@dataclass(frozen=True)
class PhaseImage:
    """Wrapped phase in radians, [-pi, pi), shape (H, W); ``valid`` False where it carries nothing
    (no data, transparency, NaN, masked water, colours off the table); ``rendering`` names the source
    table: ``diff_pha`` (GeoTIFF), ``pha``, ``phaold``, ``grey``, ``synthetic``, ``rainbow``."""

    phase: np.ndarray
    valid: np.ndarray
    rendering: str

    def __post_init__(self) -> None:
        if self.phase.ndim != 2 or self.phase.shape != self.valid.shape:
            raise ValueError(f"phase {self.phase.shape} and valid {self.valid.shape} must be the same (H, W)")


@dataclass(frozen=True)
class Unknown:
    """An image whose colours fit no known table; ``reason`` says how close the best one came."""

    reason: str


@dataclass(frozen=True, eq=False)
class ColourTable:
    """A phase colour table: ``colours[k]`` (RGB, 0-255 floats) draws phases in
    ``[lower + k step, lower + (k + 1) step)``. ``closed`` tables blend their last colour into the
    first across the +-pi wrap, so a resampled wrap edge is still a colour of the table."""

    name: str
    colours: np.ndarray
    lower: float
    step: float
    closed: bool

    def index(self, phase: np.ndarray) -> np.ndarray:
        """The bin (colour) of each phase."""
        bins = np.floor((_wrap64(phase) - self.lower) / self.step)
        return np.clip(bins, 0, len(self.colours) - 1).astype(np.intp)

    def draw(self, phase: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """HxWx3 ``uint8``: each phase in its bin's colour (8-bit rounded), invalid pixels black."""
        rgb = np.rint(self.colours).astype(np.uint8)[self.index(phase)]
        if valid is not None:
            rgb[~valid] = 0
        return rgb

    @property
    def centres(self) -> np.ndarray:
        return self.lower + (np.arange(len(self.colours)) + 0.5) * self.step


def _cpt_colours(text: str) -> np.ndarray:
    return np.array([[float(value) for value in token.split("/")] for token in text.split()])


# LiCSAR's colour tables, from misc/pha.cpt and misc/phaold.cpt of github.com/comet-licsar/licsar_proc
# (commit eaba298, GPL-3.0; LiCSAR draws its .geo.diff.png previews with them through
# `gmt grdimage -C pha.cpt -nn+t0.1 -Q`, then ImageMagick `-transparent black -resize 30% PNG8:`).
# These are the colours of their 252 slices of 0.025 rad from -3.15 to 3.15, in order; pha.cpt's
# end slices (-3.2..-3.15 and 3.15..3.2) lie outside [-pi, pi) and both tables' slice at exactly 0
# is black, GMT's no-data colour.
PHA = ColourTable("pha", _cpt_colours("""
    49.377/55.206/149.57 50.131/57.619/150.7 50.885/60.032/151.83 51.639/62.444/152.96 52.393/64.857/154.09
    53.147/67.27/155.22 53.901/69.683/156.35 54.655/72.095/157.48 55.409/74.508/158.61 56.163/76.921/159.74
    56.917/79.333/160.87 57.671/81.746/162.01 58.425/84.159/163.14 59.196/86.571/164.29 60.026/88.984/165.49
    60.855/91.397/166.7 61.685/93.81/167.9 62.514/96.222/169.11 63.343/98.635/170.32 64.173/101.05/171.52
    65.002/103.46/172.73 65.831/105.87/173.94 66.661/108.29/175.14 67.49/110.7/176.35 68.319/113.11/177.56
    69.149/115.52/178.76 69.978/117.94/179.97 71.909/120.28/181.17 73.869/122.61/182.38 75.829/124.95/183.59
    77.79/127.29/184.79 79.75/129.62/186 81.71/131.96/187.21 83.671/134.3/188.41 85.631/136.64/189.62
    87.591/138.97/190.83 89.552/141.31/192.03 91.512/143.65/193.24 93.472/145.99/194.44 95.433/148.32/195.65
    97.286/150.45/196.8 99.095/152.48/197.93 100.9/154.52/199.07 102.71/156.55/200.2 104.52/158.59/201.33
    106.33/160.63/202.46 108.14/162.66/203.59 109.95/164.7/204.72 111.76/166.73/205.85 113.57/168.77/206.98
    115.38/170.8/208.11 117.19/172.84/209.24 119/174.88/210.38 121.05/176.84/211.44 123.38/178.73/212.42
    125.72/180.61/213.4 128.06/182.5/214.38 130.39/184.38/215.36 132.73/186.27/216.34 135.07/188.15/217.32
    137.41/190.04/218.3 139.74/191.92/219.28 142.08/193.81/220.26 144.42/195.69/221.24 146.76/197.58/222.22
    149.09/199.46/223.2 151.37/201.26/224.15 153.41/202.7/224.98 155.45/204.13/225.81 157.48/205.56/226.64
    159.52/206.99/227.47 161.55/208.43/228.3 163.59/209.86/229.13 165.62/211.29/229.96 167.66/212.72/230.79
    169.7/214.16/231.62 171.73/215.59/232.45 173.77/217.02/233.28 175.8/218.45/234.11 177.84/219.89/234.93
    179.94/220.97/235.49 182.06/222.03/236.01 184.17/223.08/236.54 186.28/224.14/237.07 188.39/225.19/237.6
    190.5/226.25/238.12 192.61/227.31/238.65 194.72/228.36/239.18 196.83/229.42/239.71 198.94/230.47/240.24
    201.06/231.53/240.76 203.17/232.58/241.29 205.28/233.64/241.82 207.19/234.55/241.65 209/235.37/241.13
    210.81/236.2/240.6 212.62/237.03/240.07 214.43/237.86/239.54 216.24/238.69/239.01 218.05/239.52/238.49
    219.86/240.35/237.96 221.67/241.18/237.43 223.48/242.01/236.9 225.29/242.84/236.37 227.1/243.67/235.85
    228.9/244.5/235.32 230.48/245.18/234.14 231.68/245.63/231.95 232.89/246.08/229.76 234.1/246.54/227.58
    235.3/246.99/225.39 236.51/247.44/223.2 237.71/247.89/221.02 238.92/248.35/218.83 240.13/248.8/216.64
    241.33/249.25/214.46 242.54/249.7/212.27 243.75/250.15/210.09 244.95/250.61/207.9 246.08/250.95/205.72
    246.68/250.57/203.61 247.29/250.2/201.5 247.89/249.82/199.39 248.49/249.44/197.28 249.1/249.07/195.17
    249.7/248.69/193.06 250.3/248.31/190.94 250.9/247.93/188.83 251.51/247.56/186.72 252.11/247.18/184.61
    252.71/246.8/182.5 253.32/246.43/180.39 253.92/246.05/178.28 254/244.95/176.36 254/243.75/174.48
    254/242.54/172.59 254/241.33/170.71 254/240.13/168.82 254/238.92/166.94 254/237.71/165.05
    254/236.51/163.17 254/235.3/161.28 254/234.1/159.4 254/232.89/157.51 254/231.68/155.63 254/230.48/153.74
    253.95/228.95/151.86 253.88/227.22/149.97 253.8/225.48/148.09 253.73/223.75/146.2 253.65/222.01/144.32
    253.58/220.28/142.43 253.5/218.55/140.55 253.43/216.81/138.66 253.35/215.08/136.78 253.28/213.34/134.89
    253.2/211.61/133.01 253.12/209.87/131.12 253.05/208.14/129.24 253/206.33/127.38 253/204.37/125.57
    253/202.41/123.76 253/200.45/121.95 253/198.49/120.14 253/196.53/118.33 253/194.57/116.52
    253/192.61/114.71 253/190.65/112.9 253/188.69/111.1 253/186.73/109.29 253/184.77/107.48
    253/182.81/105.67 252.98/180.82/103.89 252.67/178.48/102.54 252.37/176.14/101.18 252.07/173.8/99.821
    251.77/171.47/98.464 251.47/169.13/97.107 251.17/166.79/95.75 250.87/164.45/94.393 250.56/162.12/93.036
    250.26/159.78/91.679 249.96/157.44/90.321 249.66/155.11/88.964 249.36/152.77/87.607 249.06/150.43/86.25
    248.69/147.79/84.954 248.32/145.07/83.673 247.94/142.36/82.391 247.56/139.64/81.109 247.18/136.93/79.827
    246.81/134.21/78.546 246.43/131.5/77.264 246.05/128.79/75.982 245.68/126.07/74.7 245.3/123.36/73.419
    244.92/120.64/72.137 244.55/117.93/70.855 244.17/115.21/69.573 243.46/112.71/68.417 242.48/110.37/67.361
    241.5/108.03/66.306 240.52/105.7/65.25 239.54/103.36/64.194 238.56/101.02/63.139 237.58/98.685/62.083
    236.6/96.347/61.028 235.62/94.01/59.972 234.64/91.673/58.917 233.66/89.335/57.861 232.68/86.998/56.806
    231.7/84.661/55.75 230.65/82.258/54.651 229.44/79.694/53.444 228.24/77.131/52.238 227.03/74.567/51.032
    225.83/72.004/49.825 224.62/69.44/48.619 223.41/66.877/47.413 222.21/64.313/46.206 221/61.75/45
    219.79/59.186/43.794 218.59/56.623/42.587 217.38/54.06/41.381 216.17/51.496/40.175 214.95/48.95/38.998
    213.07/47.065/38.923 211.18/45.181/38.847 209.3/43.296/38.772 207.41/41.411/38.696 205.53/39.526/38.621
    203.64/37.641/38.546 201.76/35.756/38.47 199.87/33.871/38.395 197.99/31.986/38.319 196.1/30.101/38.244
    194.22/28.216/38.169 192.33/26.331/38.093 190.45/24.446/38.018 188.56/22.619/38 186.68/20.81/38
    184.79/19/38 182.91/17.19/38 181.02/15.381/38 179.14/13.571/38 177.25/11.762/38 175.37/9.9524/38
    173.48/8.1429/38 171.6/6.3333/38 169.71/4.5238/38 167.83/2.7143/38 165.94/0.90476/38
"""), -3.15, 0.025, closed=True)
PHAOLD = ColourTable("phaold", _cpt_colours("""
    5/35/80 5/37/83 5/39/86 5/40/89 5/42/92 6/44/95 6/46/98 6/48/100 6/49/103 6/51/106 6/53/109 6/55/112
    6/57/115 7/59/118 7/60/121 7/62/124 7/64/127 7/66/130 7/68/133 7/69/136 7/71/138 7/73/141 8/75/144
    8/77/147 8/78/150 8/82/156 10/84/158 12/87/159 15/89/161 17/92/163 19/94/164 21/97/166 24/99/168
    26/102/169 28/104/171 30/107/173 33/109/174 35/112/176 37/114/178 39/116/179 41/119/181 44/121/182
    46/124/184 48/126/186 50/129/187 53/131/189 55/134/191 57/136/192 59/139/194 62/141/196 66/146/199
    68/147/200 69/149/200 71/150/201 72/152/201 74/153/202 76/155/202 77/156/203 79/157/204 81/159/204
    82/160/205 84/162/205 85/163/206 89/166/207 90/167/208 92/169/208 93/170/209 95/172/209 97/173/210
    98/174/211 100/176/211 102/177/212 103/179/212 105/180/213 106/182/213 108/183/214 110/184/215
    113/186/215 115/187/216 118/189/216 120/190/217 122/192/218 125/193/218 127/194/219 129/196/220
    132/197/220 134/199/221 137/200/221 139/202/222 141/203/223 144/204/223 146/206/224 149/207/224
    151/209/225 153/210/226 156/211/226 158/213/227 160/214/228 163/216/228 165/217/229 170/220/230
    172/221/231 174/222/232 176/223/233 178/224/234 179/225/235 181/226/236 183/227/237 185/228/238
    187/229/239 189/230/240 191/231/241 193/232/242 195/233/243 196/233/243 198/234/244 200/235/245
    202/236/246 204/237/247 206/238/248 208/239/249 210/240/250 211/241/251 213/242/252 215/243/253
    219/245/255 255/255/200 255/254/197 255/253/193 255/252/190 255/251/187 255/250/184 255/249/180
    255/248/177 255/247/174 255/246/171 255/245/167 255/244/164 255/243/161 255/243/158 255/242/154
    255/241/151 255/240/148 255/239/144 255/238/141 255/237/138 255/236/135 255/235/131 255/234/128
    255/233/125 255/232/122 255/230/115 255/229/113 254/227/111 254/226/109 253/225/108 253/224/106
    252/222/104 252/221/102 251/220/100 251/219/98 250/217/97 250/216/95 249/215/93 249/214/91 248/212/89
    248/211/87 247/210/85 247/208/84 246/207/82 246/206/80 245/205/78 245/203/76 244/202/74 244/201/73
    243/200/71 242/197/67 242/194/65 241/191/63 241/188/62 240/185/60 240/182/58 239/179/56 239/176/54
    238/173/53 238/170/51 237/167/49 237/164/47 236/161/45 236/156/42 235/153/40 235/150/38 234/147/36
    234/144/34 233/141/33 233/138/31 232/135/29 232/132/27 231/129/25 231/126/24 230/123/22 230/120/20
    229/118/19 228/116/18 227/114/18 225/112/17 224/110/16 223/108/15 222/107/15 221/105/14 220/103/13
    218/101/12 217/99/12 216/97/11 215/95/10 214/93/9 213/91/8 212/89/8 210/87/7 209/85/6 208/83/5 207/82/5
    206/80/4 205/78/3 203/76/2 202/74/2 200/70/0 198/69/1 195/68/2 193/67/3 190/65/4 188/64/4 185/63/5
    183/62/6 180/61/7 178/60/8 175/58/9 173/57/10 170/56/11 168/55/12 165/54/12 163/53/13 160/52/14
    158/50/15 155/49/16 153/48/17 150/47/18 148/46/19 145/45/19 143/43/20 140/42/21 135/40/23
"""), -3.15, 0.025, closed=True)
# Grey-level phase (the Sentinel-1 patches of Anantrasirichai et al.): level v = round((phase + pi) / 2 pi * 255).
GREY = ColourTable("grey", np.repeat(np.arange(256.0)[:, None], 3, axis=1), -math.pi - math.pi / 255,
                   TWO_PI / 255, closed=False)

# insarwatch's synthetic palette (the paper's figure colours): blue-green-yellow-orange-purple-blue is
# one fringe towards the satellite, in 254 bins over [-pi, pi) (P-mode indices 1..254 in synthetic PNGs).
_SYNTHETIC_ANCHORS = np.array([(40, 80, 230), (40, 200, 120), (240, 230, 50), (245, 140, 40), (170, 60, 200),
                               (40, 80, 230)])


def cyclic_colours(anchors: np.ndarray, levels: int) -> np.ndarray:
    """``levels`` 8-bit colours interpolated linearly around ``anchors`` (first = last)."""
    position = np.arange(levels) / levels * (len(anchors) - 1)
    low = np.floor(position).astype(int)
    weight = (position - low)[:, None]
    return np.round(anchors[low] * (1 - weight) + anchors[low + 1] * weight).astype(np.uint8)


SYNTHETIC = ColourTable("synthetic", cyclic_colours(_SYNTHETIC_ANCHORS, 254).astype(float), -math.pi,
                        TWO_PI / 254, closed=True)
COLOUR_TABLES = (PHA, PHAOLD, SYNTHETIC)
TABLES = (*COLOUR_TABLES, GREY)
# The float32 nearest pi lies above pi: wrapped phases that round onto it go to the float32 just above -pi.
_LOWEST = np.nextafter(np.float32(-math.pi), np.float32(0))


def _wrap64(phase: np.ndarray) -> np.ndarray:
    return np.mod(np.asarray(phase, dtype=np.float64) + math.pi, TWO_PI) - math.pi


def wrap(phase: np.ndarray) -> np.ndarray:
    """float32 phase wrapped to [-pi, pi)."""
    wrapped = _wrap64(phase).astype(np.float32)
    wide = wrapped.astype(np.float64)
    return np.where((wide >= math.pi) | (wide < -math.pi), _LOWEST, wrapped)


def from_phase(phase: np.ndarray, rendering: str = "diff_pha") -> PhaseImage:
    """A phase array (e.g. a ``.geo.diff_pha.tif`` band): NaN, infinities and exactly 0 are no data."""
    values = np.asarray(phase, dtype=np.float64)
    valid = np.isfinite(values) & (values != 0)
    return PhaseImage(np.where(valid, wrap(np.where(valid, values, 0)), np.float32(0)), valid, rendering)


# --------------------------------------------------------------------------- detection and inversion


@dataclass(frozen=True, eq=False)
class _Curve:
    """A table's colours as points (bit-reduced as the image was) and the phase of each."""

    tree: cKDTree
    phase: np.ndarray


@lru_cache(maxsize=32)
def _curve(table: ColourTable, bits: tuple[int, int, int] | None) -> _Curve:
    colours, phases = table.colours, table.centres
    if table.closed:
        colours = np.vstack([colours, colours[:1]])
        phases = np.append(phases, phases[0] + TWO_PI)
    position = np.linspace(0, len(colours) - 1, (len(colours) - 1) * SAMPLES_PER_BIN + 1)
    low = np.minimum(np.floor(position).astype(int), len(colours) - 2)
    weight = position - low
    points = colours[low] * (1 - weight[:, None]) + colours[low + 1] * weight[:, None]
    phase = phases[low] * (1 - weight) + phases[low + 1] * weight
    if bits is None:
        return _Curve(cKDTree(points), phase)
    # A quantised preview shows each cell's colour for a run of phases: read it as the run's mean.
    cells, inverse = np.unique(_reduce(np.rint(points), bits), axis=0, return_inverse=True)
    phasor = np.zeros(len(cells), dtype=complex)
    np.add.at(phasor, inverse.ravel(), np.exp(1j * phase))
    return _Curve(cKDTree(cells), np.angle(phasor))


def _levels(depth: int) -> np.ndarray:
    """The 8-bit values of a ``depth``-bit channel: its codes with their bits replicated (3 bits: 0, 36, 73...)."""
    return np.rint(np.arange(2**depth) * 255 / (2**depth - 1))


def reduce_bits(rgb: np.ndarray, bits: tuple[int, int, int] = (3, 3, 3)) -> np.ndarray:
    """``rgb`` (any shape ending in 3, uint8) as LiCSAR's PNG8 step leaves it (``_reduce``)."""
    flat = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    return _reduce(flat, bits).astype(np.uint8).reshape(np.shape(rgb))


def _reduce(colours: np.ndarray, bits: tuple[int, int, int]) -> np.ndarray:
    """ImageMagick's PNG8 low-bit reduction: keep each channel's top bits, replicate them downwards."""
    return np.stack([_levels(depth)[colours[:, channel].astype(int) >> (8 - depth)]
                     for channel, depth in enumerate(bits)], axis=1)


def _bits(colours: np.ndarray) -> tuple[int, int, int] | None:
    """The bit depth of each channel of a bit-reduced image, None when a channel needs more than
    ``REDUCED_MAX_BITS``. The reduction keeps the same bits in every channel (blue may keep fewer:
    3-3-2), so a channel that happens to use only levels of fewer bits (a quiet tile's red: 255) gets
    the others' depth."""
    fewest = []
    for channel in range(3):
        values = np.unique(colours[:, channel])
        depth = next((depth for depth in range(1, REDUCED_MAX_BITS + 1) if np.isin(values, _levels(depth)).all()),
                     None)
        if depth is None:
            return None
        fewest.append((depth, values))
    common = max(depth for depth, _ in fewest)
    return tuple(common if np.isin(values, _levels(common)).all() else depth for depth, values in fewest)


@dataclass(frozen=True)
class Fit:
    """How well one table explains an image: the share of its coloured pixels on the table's curve."""

    table: str
    share: float


def detect(rgb: np.ndarray, nodata: np.ndarray | None = None) -> tuple[Fit, ...]:
    """Every candidate table's fit to ``rgb``, best first, then the rainbow reading's when no table
    fits (first when it reads the image): the evidence ``from_rgb`` decides on."""
    return _read(rgb, nodata)[0]


def from_rgb(rgb: np.ndarray, nodata: np.ndarray | None = None) -> PhaseImage | Unknown:
    """Detect the table that drew ``rgb`` (HxWx3 uint8) and invert it.

    ``nodata`` marks transparent pixels. Never valid: pure black (GMT's and the grey table's no-data),
    white fill (a white region touching the border over ``FILL_MIN_SHARE`` of a colour image: a crop
    flattened onto white) and colours off the detected table's curve, chiefly the grey-pink of
    decorrelated ground, whose random phase the preview's downscaling averaged into no phase at all.
    """
    return _read(rgb, nodata)[1]


def _read(rgb: np.ndarray, nodata: np.ndarray | None) -> tuple[tuple[Fit, ...], PhaseImage | Unknown]:
    rgb = np.asarray(rgb, dtype=np.uint8)
    coloured = rgb.any(axis=-1) if nodata is None else rgb.any(axis=-1) & ~nodata
    if not coloured.any():
        return (), Unknown("no pixel to read: all transparent or black")
    if (np.ptp(rgb[coloured], axis=1) <= GREY_SPREAD).mean() >= GREY_MIN_SHARE:
        return _invert(rgb, coloured, (GREY,))
    coloured &= ~_white_fill(rgb)
    fits, read = _invert(rgb, coloured, COLOUR_TABLES)
    if isinstance(read, PhaseImage):
        return fits, read
    evidence, reading = _rainbow(rgb, coloured)
    if evidence.problem is not None:
        return (*fits, Fit("rainbow", 0.0)), Unknown(f"{read.reason}; not a rainbow on amplitude: {evidence.problem}")
    return (Fit("rainbow", evidence.share), *fits), reading


def _white_fill(rgb: np.ndarray) -> np.ndarray:
    """White regions touching the border over ``FILL_MIN_SHARE`` of the image. Pure white is also a
    colour of LiCSAR's bit-reduced previews (phase near -0.5), but in patches of at most 2 % of a
    tile (measured on ../shared/realdata/c1), while the fill of a flattened crop is one large region."""
    labels, _ = ndimage.label((rgb == 255).all(axis=-1))
    sizes = np.bincount(labels.ravel())
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = edge[(edge > 0) & (sizes[edge] >= FILL_MIN_SHARE * labels.size)]
    return np.isin(labels, fill)


def _invert(rgb: np.ndarray, coloured: np.ndarray,
            candidates: tuple[ColourTable, ...]) -> tuple[tuple[Fit, ...], PhaseImage | Unknown]:
    wide = rgb[coloured].astype(np.uint32)
    codes, inverse, counts = np.unique(wide[:, 0] << 16 | wide[:, 1] << 8 | wide[:, 2],
                                       return_inverse=True, return_counts=True)
    colours = np.stack([codes >> 16, codes >> 8 & 255, codes & 255], axis=1).astype(float)
    bits = _bits(colours)
    if candidates == (GREY,) and bits is not None:
        return (), Unknown(f"neutral greys reduced to {max(bits)} bits: a decorrelated colour preview and "
                           "grey-level phase cannot be told apart")
    readings = []
    for table in candidates:
        curve = _curve(table, bits)
        # Bounded: a search far from the curve (rainbow renderings) would otherwise visit most of the tree.
        distance, nearest = curve.tree.query(colours, distance_upper_bound=TOLERANCE)
        on = distance <= TOLERANCE
        phases = np.where(on, curve.phase[np.minimum(nearest, len(curve.phase) - 1)], 0.0)
        readings.append((Fit(table.name, float(counts[on].sum() / counts.sum())), on, phases))
    readings.sort(key=lambda reading: -reading[0].share)
    fits = tuple(reading[0] for reading in readings)
    best, on, phases = readings[0]
    if best.share < MIN_FIT:
        shares = ", ".join(f"{fit.table} {fit.share:.0%}" for fit in fits)
        return fits, Unknown(f"colours fit no known table: pixels on each table's curve {shares} "
                             f"(need {MIN_FIT:.0%})")
    image_phase = np.zeros(rgb.shape[:2], dtype=np.float32)
    valid = np.zeros(rgb.shape[:2], dtype=bool)
    image_phase[coloured] = wrap(phases)[inverse]
    valid[coloured] = on[inverse]
    return fits, PhaseImage(image_phase, valid, best.table)


@dataclass(frozen=True)
class Rainbow:
    """The evidence for a rainbow-on-amplitude rendering (the thresholds are ``RAINBOW_*``):
    ``share`` of coloured pixels saturated enough to read, the brightness deviation ``spread``,
    the share of the brightness variance the hue explains (``tied``) and the hue's ``continuity``."""

    share: float
    spread: float
    tied: float
    continuity: float

    @property
    def problem(self) -> str | None:
        """Why this is not a rainbow on amplitude; None when it is."""
        if self.share < MIN_FIT:
            return f"{self.share:.0%} of the pixels saturated (need {MIN_FIT:.0%})"
        if self.spread < RAINBOW_MIN_SPREAD:
            return f"brightness deviation {self.spread:.3f}, not an amplitude (need {RAINBOW_MIN_SPREAD})"
        if self.tied > RAINBOW_MAX_TIED:
            return (f"the hue explains {self.tied:.0%} of the brightness, as in a colour table "
                    f"(an amplitude: at most {RAINBOW_MAX_TIED:.0%})")
        if self.continuity < RAINBOW_MIN_CONTINUITY:
            return f"hue continuity {self.continuity:.2f}, not fringes (need {RAINBOW_MIN_CONTINUITY})"
        return None


def _rainbow(rgb: np.ndarray, coloured: np.ndarray) -> tuple[Rainbow, PhaseImage]:
    """Read the hue angle as phase. Which hue is phase 0 and which way round the wheel runs are
    unknown and change nothing physical: a constant offset and a sign flip of a wrapped
    interferogram describe the same deformation pattern."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), dtype=np.float64) / 255
    hue, saturation, brightness = hsv[..., 0] * TWO_PI, hsv[..., 1], hsv[..., 2]
    valid = coloured & (saturation >= RAINBOW_SATURATION) & (saturation * brightness * 255 >= RAINBOW_CHROMA)
    image = PhaseImage(np.where(valid, wrap(hue), np.float32(0)), valid, "rainbow")
    share = float(valid.sum() / max(coloured.sum(), 1))
    if valid.sum() < 2:
        return Rainbow(share, 0.0, 1.0, 0.0), image
    values, bins = brightness[valid], np.minimum((hue[valid] / TWO_PI * 36).astype(np.intp), 35)
    means = np.bincount(bins, values, 36) / np.maximum(np.bincount(bins, minlength=36), 1)
    spread = float(values.std())
    tied = 1 - float(((values - means[bins]) ** 2).mean()) / max(spread**2, 1e-12)
    phasor = np.where(valid, np.exp(1j * hue), 0)
    counts = ndimage.uniform_filter(valid.astype(np.float64), RAINBOW_WINDOW, mode="constant")
    local = np.abs(ndimage.uniform_filter(phasor.real, RAINBOW_WINDOW, mode="constant")
                   + 1j * ndimage.uniform_filter(phasor.imag, RAINBOW_WINDOW, mode="constant"))
    return Rainbow(share, spread, tied, float(np.median(local[valid] / counts[valid]))), image


def rainbow_evidence(rgb: np.ndarray, nodata: np.ndarray | None = None) -> Rainbow:
    """How much ``rgb`` looks like a rainbow on amplitude, whatever the tables say (benchmarks)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    coloured = rgb.any(axis=-1) if nodata is None else rgb.any(axis=-1) & ~nodata
    return _rainbow(rgb, coloured & ~_white_fill(rgb))[0]


# --------------------------------------------------------------------------- the canonical rendering

_CHANNEL_ANGLES = np.array([0.0, TWO_PI / 3, 2 * TWO_PI / 3])


def render(image: PhaseImage, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The one picture the model sees: HxWx3 ``uint8``, at ``shape`` (height, width) if given.

    Channel c is 127.5 + 127.5 cos(phase - 2 pi c / 3): a cyclic hue wheel of constant mean
    brightness, continuous across +-pi (LiCSAR's tables jump from dark red to dark blue there,
    drawing a false edge in every fringe). Every channel is linear in the phasor exp(i phase), so
    resizing averages complex phase: rendering then shrinking equals shrinking then rendering, and a
    30 % preview and its full-resolution GeoTIFF look alike at the model's size. Invalid pixels are
    the zero phasor, neutral grey, which is also what averaging decorrelated (random) phase tends to:
    no information looks the same whichever way it arrived.
    """
    phasor = np.where(image.valid, np.exp(1j * image.phase.astype(np.float64)), 0)
    parts = [phasor.real.astype(np.float32), phasor.imag.astype(np.float32)]
    if shape is not None:
        parts = [np.asarray(Image.fromarray(part, "F").resize((shape[1], shape[0]), Image.Resampling.BOX))
                 for part in parts]
    real, imaginary = (part[..., None] for part in parts)
    channels = 127.5 + 127.5 * (real * np.cos(_CHANNEL_ANGLES) + imaginary * np.sin(_CHANNEL_ANGLES))
    return np.clip(np.rint(channels), 0, 255).astype(np.uint8)
