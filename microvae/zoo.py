"""A benchmark zoo: ground-truth patch sets that do not favour microvae's own model.

The project's own test data (:mod:`microvae.cards`, :mod:`microvae.synthetic`) were made together
with the model, so a model can look good on them for reasons that do not carry over to real scans.
Every member here differs from the others in kind, and most differ from the project's generators in
construction, noise, contrast, object size, background and class balance (column sizes are FWHM;
object sizes are the object's longer side as a fraction of the window):

====================  ==========================  ===================  =============  ==================  =================
member                noise model                 contrast             object size    background          class balance
====================  ==========================  ===================  =============  ==================  =================
``cards_<deg>``       none (the project's cards)  bright on dark       ≈ 62–74 %      flat (0)            4 × 25 %
``glyph_suits_<deg>`` Gaussian read + salt and    dark on light        ≈ 48–70 %      per-patch slow      4 × 25 %
                      pepper, slight blur         (ink 0.5 below bg)   (font glyphs)  linear gradient
``digits``            Poisson at low dose (20     bright strokes on    thin strokes,  smooth random       4 × 25 %
                      counts), PSF blur           dark                 ≈ 70 %         texture per patch
``perovskite_film``   Poisson (300) + Gaussian,   bright on dark       columns ≈ 4 px flat pedestal       film/substrate,
                      probe tails (Moffat)        (HAADF-like)         in ≈ 2 cells                       ≈ 40–60 %
``two_phase``         the project's Poisson +     bright on dark       columns ≈ 4 px none                ≈ 50/50
                      Gaussian (wrapped)
``stm_defects``       1/f raster noise +          topography, FFT      bumps ≈ 3 px,  line-to-line        ≈ 60/6/34 (ci),
                      line offsets + white        magnitudes           FFT patches    offsets, tilt       67/6/27 (bench)
``honeycomb_dopants`` Gaussian read noise, scan   low contrast (peaks  columns ≈ 3 px slow gradient +     50/45/5 (5 %
                      drift                       0.4 over a 0.6 bg)                  undulation          minority)
====================  ==========================  ===================  =============  ==================  =================

Every generator has the signature ``generator(seed, n=None, size="bench") -> ZooCase`` and is
listed in :data:`MEMBERS`; :func:`make_case` calls one by name. ``size="ci"`` is a small version
(about 400–800 patches, window 16–24 px) for tests; ``"bench"`` a larger one (1500–3000 patches,
window 24–32 px). Generation is deterministic in ``seed`` (each member draws from its own stream, so
two members with the same seed are independent, except that the wrapped project generators
``cards_*`` and ``two_phase`` take ``seed`` as is) and, once the modules are imported, takes well
under a second (ci) or three seconds (bench) on one CPU core.

Conventions: positions are (row, col) in pixels, rows pointing down as displayed; pixel (r, c) is
centred on (r, c). A positive ``angle_rad`` turns an object counter-clockwise as displayed (as in
:mod:`microvae.cards`). Patches are (N, C, W, W) float32 normalised to [0, 1] by one min–max over
the whole set at the 0.1 / 99.9 percentiles, clipped (``normalise(..., "global")`` of
:mod:`microvae.patches`); ``extra['norm_offset']`` and ``extra['norm_scale']`` undo it
(``raw ≈ patches · scale + offset`` where not clipped).

Optional dependency: ``digits`` needs scikit-learn (``sklearn.datasets.load_digits``, bundled
data, no download); it raises :class:`ImportError` with a message where scikit-learn is missing.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import ParameterError
from .patches import cut_patches, fft_magnitude, grid_centres, normalise, window_fits

SIZES = ("bench", "ci")
PERCENTILES = (0.1, 99.9)
ROTATION_DEGREES = (12, 60, 120)
SUIT_NAMES = ("clubs", "spades", "diamonds", "hearts")  # the order of microvae.cards.CLASS_NAMES
SUIT_GLYPHS = ("\u2663", "\u2660", "\u2666", "\u2665")  # ♣ ♠ ♦ ♥ in DejaVu Sans
DIGIT_CLASSES = (0, 1, 4, 7)


@dataclass
class ZooCase:
    """One benchmark case: patches ready for training and their ground truth.

    Attributes:
        name: registry name, e.g. ``"glyph_suits_60"``.
        patches: (N, C, W, W) float32 in [0, 1] (see the module notes on normalisation).
        labels: (N,) int64 ground-truth class in ``range(n_classes)``.
        n_classes: the true number of classes K.
        rotation: whether the objects turn in the plane (what a user would tell the tool).
        translation: whether objects sit off-centre in their windows (not atom-centred).
        fft: whether the patches are FFT magnitudes (:func:`microvae.patches.fft_magnitude`).
        angle_rad: (N,) float64 true in-plane rotation, counter-clockwise as displayed, where
            objects turn; else None.
        description: what the case is and how its classes differ.
        scan: (H, W) float32 raw scan the patches were cut from (lattice members), else None.
        coords: (N, 2) float64 (row, col) patch centres in scan pixels (lattice members), else None.
        extra: further per-patch truth (``'variant'``, ``'is_defect'``, ...), ``'class_names'``,
            ``'norm_offset'``/``'norm_scale'``, and member-specific items (see each generator).
    """

    name: str
    patches: np.ndarray
    labels: np.ndarray
    n_classes: int
    rotation: bool
    translation: bool
    fft: bool
    angle_rad: np.ndarray | None
    description: str
    scan: np.ndarray | None = None
    coords: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def window(self) -> int:
        """Patch side W in pixels."""
        return int(self.patches.shape[-1])

    def class_fractions(self) -> np.ndarray:
        """(K,) fraction of patches in each true class."""
        return np.bincount(self.labels, minlength=self.n_classes) / max(len(self.labels), 1)


# --- shared helpers ------------------------------------------------------------------------------


def _check(seed: int, size: str, n: int | None) -> None:
    if size not in SIZES:
        raise ParameterError(f"unknown zoo size {size!r}; expected one of {', '.join(SIZES)}")
    if int(seed) < 0:
        raise ParameterError(f"seed must be >= 0, got {seed}")
    if n is not None and int(n) < 8:
        raise ParameterError(f"n must be >= 8 patches, got {n}")


def _rng(seed: int, member: str, part: int = 0) -> np.random.Generator:
    """An independent stream per (seed, member family, part)."""
    return np.random.default_rng([int(seed), zlib.crc32(member.encode()), int(part)])


def _normalised(patches: np.ndarray) -> tuple[np.ndarray, dict]:
    """Global 0.1/99.9-percentile min–max to [0, 1], clipped; returns (patches, {'norm_offset', 'norm_scale'})."""
    out, offset, scale = normalise(patches.astype(np.float32), np.zeros(len(patches), np.int64), "global", PERCENTILES)
    return out, {"norm_offset": float(offset[0]) if len(offset) else 0.0, "norm_scale": float(scale[0]) if len(scale) else 1.0}


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _render_affine(
    sources: np.ndarray,
    which: np.ndarray,
    angle_rad: np.ndarray,
    scale: np.ndarray,
    shift_px: np.ndarray,
    window: int,
    unit: float,
    supersample: int = 2,
    chunk: int = 256,
) -> np.ndarray:
    """Images of sources under a rotation, scaling and shift, (N, W, W) float32.

    Sample ``i`` is ``sources[which[i]]`` (a (M, A, A) stack, its centre at ((A-1)/2, (A-1)/2))
    pushed forward by ``x = R(angle) · scale · u + shift`` with ``unit`` source pixels per output
    pixel at scale 1; every output pixel is the mean of ``supersample``² bilinear reads (pulled back
    through the inverse map), zero outside the source. ``R(angle)`` turns counter-clockwise as
    displayed: in (row, col) it is [[cos, -sin], [sin, cos]], so the pull-back is
    ``u = R(-angle) (x - shift) / scale``.
    """
    n, s = len(which), window * supersample
    out = np.empty((n, window, window), np.float32)
    sub = (np.arange(s) + 0.5) / supersample - 0.5 - (window - 1) / 2.0  # sub-sample offsets from the centre
    centre = (sources.shape[-1] - 1) / 2.0
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        cos, sin = np.cos(angle_rad[part])[:, None, None], np.sin(angle_rad[part])[:, None, None]
        factor = (unit / scale[part])[:, None, None]
        dr = sub[None, :, None] - shift_px[part, 0, None, None]
        dc = sub[None, None, :] - shift_px[part, 1, None, None]
        u_row = centre + factor * (cos * dr + sin * dc)
        u_col = centre + factor * (-sin * dr + cos * dc)
        index = np.broadcast_to(which[part, None, None].astype(np.float64), u_row.shape)
        fine = ndimage.map_coordinates(sources, [index, u_row, u_col], order=1, mode="constant", cval=0.0)
        out[part] = fine.reshape(-1, window, supersample, window, supersample).mean(axis=(2, 4))
    return out


def _render_columns(
    shape: tuple[int, int], positions: np.ndarray, amplitudes: np.ndarray, profile: Callable[[np.ndarray], np.ndarray], radius: int
) -> np.ndarray:
    """Sum of radial profiles ``amplitude · profile(r)`` (r in pixels from each position), each
    evaluated in a (2·radius+1)² window and accumulated with one ``bincount``; (H, W) float64."""
    height, width = shape
    offsets = np.arange(-radius, radius + 1)
    rows = np.round(positions[:, 0]).astype(np.int64)[:, None] + offsets
    cols = np.round(positions[:, 1]).astype(np.int64)[:, None] + offsets
    distance = np.hypot((rows - positions[:, :1])[:, :, None], (cols - positions[:, 1:])[:, None, :])
    values = amplitudes[:, None, None] * profile(distance)
    all_rows = np.broadcast_to(rows[:, :, None], values.shape)
    all_cols = np.broadcast_to(cols[:, None, :], values.shape)
    valid = (all_rows >= 0) & (all_rows < height) & (all_cols >= 0) & (all_cols < width)
    flat = all_rows[valid] * width + all_cols[valid]
    return np.bincount(flat, weights=values[valid], minlength=height * width).reshape(height, width)


def _smooth_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random plane plus one long-wavelength undulation, scaled to [0, 1]."""
    height, width = shape
    rows = np.linspace(-0.5, 0.5, height)[:, None]
    cols = np.linspace(-0.5, 0.5, width)[None, :]
    tilt = rng.uniform(-1.0, 1.0, 2)
    angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * 0.8 * (np.cos(angle) * rows + np.sin(angle) * cols) + phase)
    surface = tilt[0] * rows + tilt[1] * cols + 0.4 * wave
    surface = surface - surface.min()
    return surface / max(float(surface.max()), 1e-12)


def _side(n: int, window: int, per_px2: float) -> int:
    """Scan side (pixels) whose inner (side - window)² area holds about ``n`` sites at ``per_px2``."""
    return int(np.ceil(window + np.sqrt(n / per_px2)))


def _lattice_case(name: str, scan: np.ndarray, centres: np.ndarray, labels: np.ndarray, window: int, **fields) -> ZooCase:
    """Cut atom-centred (subpixel) patches at ``centres`` that fit in the scan, normalise, and wrap."""
    fits = window_fits(centres, scan.shape, window, subpixel=True)
    centres, labels = centres[fits], labels[fits]
    extra = {key: value[fits] for key, value in fields.pop("per_patch", {}).items()}
    extra.update(fields.pop("extra", {}))
    patches, norm = _normalised(cut_patches(scan[None].astype(np.float32), centres, window, subpixel=True))
    extra.update(norm)
    return ZooCase(
        name=name,
        patches=patches,
        labels=labels.astype(np.int64),
        scan=scan.astype(np.float32),
        coords=centres.astype(np.float64),
        extra=extra,
        angle_rad=None,
        rotation=False,
        translation=False,
        fft=False,
        **fields,
    )


# --- 1. the project's cards, wrapped ----------------------------------------------------------------


def make_cards_case(seed: int, n: int | None = None, size: str = "bench", *, max_angle_deg: float = 60.0) -> ZooCase:
    """The project's own cards (:func:`microvae.cards.make_cards`): 4 suits, rotation uniform in
    ±``max_angle_deg``, shear ±10°, scale 1–1.2, shift ±10 % of the window; noise-free, bright ink (1)
    on a black (0) background, balanced. The reference the other members are compared against; it
    is the case the model was developed on, so it favours it.

    Sizes: bench N = 2000, W = 28; ci N = 480, W = 24. ``make_cards`` is called with ``seed``
    itself, so the case reproduces ``make_cards(n, W, max_angle_deg, seed)``. ``extra``:
    ``shear_rad``, ``scale``, ``shift_px`` (N, 2) (row, col), ``class_names``.
    """
    from .cards import CLASS_NAMES, make_cards

    _check(seed, size, n)
    window = 28 if size == "bench" else 24
    n = int(n) if n is not None else (2000 if size == "bench" else 480)
    cards = make_cards(n, size=window, max_angle_deg=float(max_angle_deg), seed=int(seed))
    patches, norm = _normalised(cards.images)
    return ZooCase(
        name=f"cards_{max_angle_deg:g}",
        patches=patches,
        labels=cards.labels.astype(np.int64),
        n_classes=4,
        rotation=True,
        translation=True,
        fft=False,
        angle_rad=cards.angle_rad.astype(np.float64),
        description=(
            f"project cards (microvae.cards): 4 suits, rotation ±{max_angle_deg:g}°, shear ±10°, scale 1–1.2, "
            "shift ±10 %, noise-free bright ink on black, balanced"
        ),
        extra={"shear_rad": cards.shear_rad, "scale": cards.scale, "shift_px": cards.shift_px, "class_names": tuple(CLASS_NAMES), **norm},
    )


# --- 2. card suits from font glyphs ---------------------------------------------------------------

GLYPH_ATLAS_SIZE = 256
GLYPH_BASE_EXTENT = 0.64  # a glyph's longer side, as a fraction of the window, at scale 1


def glyph_canonical_shapes(size: int = GLYPH_ATLAS_SIZE) -> np.ndarray:
    """The four suit glyphs ♣ ♠ ♦ ♥ of matplotlib's bundled DejaVu Sans, (4, size, size) float32 in [0, 1].

    Each glyph outline (``matplotlib.textpath.TextPath``) is filled with
    ``Path.contains_points`` on a 2×-supersampled grid and box-averaged; it is centred on its
    bounding box, and its longer side spans 98 % of the frame, aspect ratio kept. Order
    :data:`SUIT_NAMES` (that of :data:`microvae.cards.CLASS_NAMES`).
    """
    return _glyph_atlas(int(size)).copy()


@lru_cache(maxsize=2)
def _glyph_atlas(size: int) -> np.ndarray:
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    font = FontProperties(fname=f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf")
    fine = 2 * size
    axis = (np.arange(fine) + 0.5) / fine * 2.0 - 1.0  # [-1, 1], rows down
    u_row, u_col = np.meshgrid(axis, axis, indexing="ij")
    atlas = np.empty((len(SUIT_GLYPHS), size, size), np.float32)
    for k, glyph in enumerate(SUIT_GLYPHS):
        path = TextPath((0.0, 0.0), glyph, size=1.0, prop=font)
        (x0, y0), (x1, y1) = path.vertices.min(axis=0), path.vertices.max(axis=0)
        half = max(x1 - x0, y1 - y0) / 2.0 / 0.98
        x = (x0 + x1) / 2.0 + u_col * half
        y = (y0 + y1) / 2.0 - u_row * half  # font y points up
        inside = path.contains_points(np.column_stack([x.ravel(), y.ravel()])).reshape(fine, fine)
        atlas[k] = inside.reshape(size, 2, size, 2).mean(axis=(1, 3))
    return atlas


def make_glyph_suits(seed: int, n: int | None = None, size: str = "bench", *, max_angle_deg: float = 60.0) -> ZooCase:
    """Card suits drawn from a font, not from the project's shape code.

    Construction: the glyphs ♣ ♠ ♦ ♥ (U+2663, U+2660, U+2666, U+2665) of DejaVu Sans
    (:func:`glyph_canonical_shapes`) are rotated by a uniform angle in ±``max_angle_deg``, scaled by
    0.75–1.1 (longer side 48–70 % of the window, against the cards' 62–74 %), shifted by up to
    ±10 % of the window per axis (bilinear pull-back, 2×2 supersampled), and blurred (σ = 0.6 px).
    No shear. Contrast: **dark glyph on a light background** (background 0.8, ink 0.3; the cards
    are bright on black), the same for all three rotation members so that only the angle range
    changes along the series. Background: a per-patch linear gradient of 0–0.25 across the window
    in a random direction. Noise: Gaussian read noise (σ = 0.07) and 1.5 % salt-and-pepper pixels
    (half 0, half 1.1 in raw units). 4 classes, exactly balanced (labels in :data:`SUIT_NAMES`
    order, as the cards').

    Separable in principle: the four glyphs differ in outline (three lobes and a stem; a pointed
    top with two lobes and a stem; a rhombus; two lobes over a point). The hardest pair, as in the
    cards, is spade against heart: once turned they differ by the spade's stem and its point
    shape, a few pixels at ci size; the rhombus and the three-lobed club stay distinct from the
    others at any angle. The glyphs' shapes differ from the project's: each suit's mask, cropped to
    its bounding box, overlaps the matching ``cards.canonical_shapes`` mask with IoU 0.49–0.85
    (tested < 0.9); the glyph diamond is wider, the glyph heart rounder, the club's lobes smaller.
    The salt-and-pepper pixels set the normalisation range (0.1 / 99.9 percentiles), so background
    and ink end up at about 0.7 and 0.3 of [0, 1] (lower contrast than the cards).

    Sizes: bench N = 2000, W = 32; ci N = 480, W = 24. ``extra``: ``scale``, ``shift_px`` (N, 2)
    (row, col), ``class_names``, normalisation.
    """
    _check(seed, size, n)
    window = 32 if size == "bench" else 24
    n = int(n) if n is not None else (2000 if size == "bench" else 480)
    rng = _rng(seed, "glyph_suits", int(round(max_angle_deg)))
    labels = _balanced_labels(rng, n, 4)
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, n))
    scale = rng.uniform(0.75, 1.1, n)
    shift = rng.uniform(-0.1 * window, 0.1 * window, (n, 2))
    atlas = _glyph_atlas(GLYPH_ATLAS_SIZE)
    unit = 0.98 * GLYPH_ATLAS_SIZE / (GLYPH_BASE_EXTENT * window)
    ink = _render_affine(atlas, labels, angle, scale, shift, window, unit)
    ink = ndimage.gaussian_filter(ink, (0, 0.6, 0.6))
    offsets = np.arange(window) - (window - 1) / 2.0
    direction = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    gradient = rng.uniform(0.0, 0.25, n)[:, None, None] * (np.cos(direction) * offsets[None, :, None] + np.sin(direction) * offsets[None, None, :]) / window
    raw = 0.8 - 0.5 * ink + gradient + rng.normal(0.0, 0.07, ink.shape)
    speckle = rng.random(ink.shape)
    raw = np.where(speckle < 0.0075, 0.0, np.where(speckle > 1 - 0.0075, 1.1, raw))
    patches, norm = _normalised(raw[:, None])
    return ZooCase(
        name=f"glyph_suits_{max_angle_deg:g}",
        patches=patches,
        labels=labels,
        n_classes=4,
        rotation=True,
        translation=True,
        fft=False,
        angle_rad=angle,
        description=(
            f"DejaVu Sans suit glyphs ♣♠♦♥, rotation ±{max_angle_deg:g}°, scale 0.75–1.1 (48–70 % of the window), "
            "shift ±10 %, dark on light with a per-patch gradient, Gaussian + salt-and-pepper noise, balanced"
        ),
        extra={"scale": scale, "shift_px": shift, "class_names": SUIT_NAMES, **norm},
    )


# --- 3. rotated handwritten digits --------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digit_examples() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # scikit-learn is not a microvae dependency
        raise ImportError("the zoo member 'digits' needs scikit-learn (pip install scikit-learn) for sklearn.datasets.load_digits") from error
    data = load_digits()
    return data.images.astype(np.float64) / 16.0, data.target.astype(np.int64)


def make_digits(seed: int, n: int | None = None, size: str = "bench") -> ZooCase:
    """Real handwriting, turned through any angle (the rVAE note's rotated-digit experiment).

    Construction: 8×8 digits of ``sklearn.datasets.load_digits`` (UCI optical digits, about 180 per
    class), classes :data:`DIGIT_CLASSES` = 0, 1, 4, 7, drawn balanced; within a class every example
    is used once before any is repeated (with replacement beyond ~180 per class, each repeat with
    its own rotation). Each is upsampled bicubically (``skimage.transform.resize``, order 3) to
    D × D (D = 22 in a 32 px window, 14 in 20 px; D·√2 ≤ W, so no rotation clips it), centred, and
    rotated by a uniform angle in ±180° (bilinear pull-back, 2×2 supersampled), then blurred
    (σ = 0.7 px). No shift (translation=False; the writers' own off-centring remains). Contrast:
    bright strokes (≤ 0.85) on a dark pedestal (0.15) with a smooth random texture (correlation
    length 2.5 px, sd 0.06); shot noise: Poisson at 20 counts per unit intensity. ``angle_rad`` is the
    applied rotation; the writers' own slant (±15° or so) comes on top of it.

    Why these four: under a rotation 6 and 9 become the same digit (excluded); 0 is a single closed
    loop, 1 a single straight stroke, 4 two crossing strokes with a (mostly open) triangle, 7 two
    strokes meeting at one acute corner; no rotation maps one onto another, so a human can tell
    them apart at any angle, though not every sloppy example (some 1s have a flag and a foot, some
    7s are nearly straight). 2 and 5 were left out to keep K = 4 and avoid S-shaped pairs.

    Differs from the project's data: real (not drawn) shapes with within-class style variation,
    full ±180° rotation, Poisson noise on textured background. Sizes: bench N = 2000, W = 32; ci
    N = 480, W = 20. ``extra``: ``example_index`` (N,) row of ``load_digits``, ``digit`` (N,) the
    digit shown, ``class_names``, normalisation.
    """
    _check(seed, size, n)
    from skimage.transform import resize

    window, inner = (32, 22) if size == "bench" else (20, 14)
    n = int(n) if n is not None else (2000 if size == "bench" else 480)
    images, target = _digit_examples()
    rng = _rng(seed, "digits")
    labels = _balanced_labels(rng, n, len(DIGIT_CLASSES))
    example = np.empty(n, np.int64)
    for k, digit in enumerate(DIGIT_CLASSES):
        members = np.flatnonzero(labels == k)
        pool = np.flatnonzero(target == digit)
        repeats = -(-len(members) // len(pool))
        example[members] = np.concatenate([rng.permutation(pool) for _ in range(max(repeats, 1))])[: len(members)]
    unique, which = np.unique(example, return_inverse=True)
    sources = np.stack([resize(images[i], (inner, inner), order=3, mode="constant", anti_aliasing=False, preserve_range=True) for i in unique]).clip(0.0, 1.0)
    angle = np.deg2rad(rng.uniform(-180.0, 180.0, n))
    ink = _render_affine(sources, which, angle, np.ones(n), np.zeros((n, 2)), window, unit=1.0)
    ink = ndimage.gaussian_filter(ink, (0, 0.7, 0.7))
    texture = ndimage.gaussian_filter(rng.normal(size=ink.shape), (0, 2.5, 2.5))
    texture /= texture.std(axis=(1, 2), keepdims=True) + 1e-12
    clean = np.clip(0.15 + 0.06 * texture + 0.85 * ink, 0.0, None)
    raw = rng.poisson(clean * 20.0) / 20.0
    patches, norm = _normalised(raw[:, None])
    return ZooCase(
        name="digits",
        patches=patches,
        labels=labels,
        n_classes=len(DIGIT_CLASSES),
        rotation=True,
        translation=False,
        fft=False,
        angle_rad=angle,
        description=(
            "sklearn handwritten digits 0/1/4/7 (8×8 upsampled bicubically), rotation ±180°, bright on a textured "
            "dark background, Poisson noise at 20 counts, balanced"
        ),
        extra={"example_index": example, "digit": np.asarray(DIGIT_CLASSES)[labels], "class_names": tuple(str(d) for d in DIGIT_CLASSES), **norm},
    )


# --- 4. a perovskite film on a substrate ------------------------------------------------------------------


def _probe(core_sigma: float, tail_gamma: float, tail: float, radius: int) -> Callable[[np.ndarray], np.ndarray]:
    """A STEM probe image: Gaussian core plus a weak Moffat (β = 1.5) tail, tapered to 0 at ``radius``."""

    def profile(r: np.ndarray) -> np.ndarray:
        taper = np.clip((radius - r) / (0.3 * radius), 0.0, 1.0) ** 2
        return np.exp(-(r**2) / (2 * core_sigma**2)) + tail * taper * (1 + (r / tail_gamma) ** 2) ** -1.5

    return profile


def make_perovskite_film(seed: int, n: int | None = None, size: str = "bench") -> ZooCase:
    """A perovskite film on its substrate, seen down [001] (HAADF-like), patches on the B sites.

    Construction: a square A-site lattice (spacing a = 12 px bench, 10 px ci; A amplitude 1.0)
    with B sites at the cell centres. A straight horizontal interface at a random row (40–60 % of
    the height, a quarter cell below an A row, so that no B site lies on it) separates film
    (above, smaller rows) from substrate (below). Film B sites have amplitude 0.72 against the substrate's 0.45 AND are displaced along
    ±row by one per-scan displacement in 1.5–2.5 px, the sign alternating in vertical stripe domains
    40–100 px wide (two polarisation variants); substrate B sites are not displaced. Every column
    gets 0.1 px random jitter. Columns are a Gaussian core (σ = 0.13 a) plus a wide weak Moffat
    tail (γ = 3σ, 6 % of the peak): not a single Gaussian, unlike :mod:`microvae.synthetic`.
    Bright on dark over a flat pedestal 0.08; Poisson noise at 300 counts per unit plus Gaussian
    read noise σ = 0.015.

    Patches: one per **B site** (subpixel, at the true displaced position, as an atom finder would
    give), window 28 px (bench) or 20 px (ci), about 2 cells; A sites get none. Labels:
    0 substrate, 1 film (K = 2). Separable in principle: the centred B column is brighter in the
    film, and the four surrounding A columns sit off-centre (shifted by the displacement, up or
    down) in the film but symmetric in the substrate. The within-film variant (±) is a continuous
    factor, not a class: ``extra['variant']`` (+1 displaced down, −1 up, 0 substrate).

    Differs from :func:`microvae.synthetic.make_two_phase_lattice`: horizontal interface and
    vertical domains, displacement on the patch's own centre column (the B site), probe tails,
    lower dose. Sizes: bench 1600 patches (508² scan), ci 576 (257² scan); ``n`` sets the scan
    size for about ``n`` patches.
    ``extra``: ``variant``, ``boundary_row``, ``displacement_px``, ``a_positions`` (M, 2), ``class_names``.
    """
    _check(seed, size, n)
    spacing, window = (12.0, 28) if size == "bench" else (10.0, 20)
    n = int(n) if n is not None else (1600 if size == "bench" else 560)
    side = _side(n, window, 1.0 / spacing**2)
    rng = _rng(seed, "perovskite_film")
    cells = int(np.ceil(side / spacing)) + 2
    grid = np.arange(-1, cells) * spacing
    a_rows, a_cols = np.meshgrid(grid, grid, indexing="ij")
    a_sites = np.column_stack([a_rows.ravel(), a_cols.ravel()])
    b_sites = a_sites + spacing / 2.0
    boundary_index = int(round(rng.uniform(0.4, 0.6) * side / spacing))
    boundary_row = (boundary_index + 0.25) * spacing  # between A row i (at i·a) and the B row below it (at (i + ½)·a)
    film = b_sites[:, 0] < boundary_row
    displacement = rng.uniform(1.5, 2.5)
    walls = np.cumsum(rng.uniform(40.0, 100.0, int(side // 40) + 2)) - rng.uniform(0.0, 100.0)
    stripe = np.searchsorted(walls, b_sites[:, 1])
    sign = np.where(rng.random() < 0.5, 1, -1)
    variant = np.where(film, np.where(stripe % 2 == 0, sign, -sign), 0)
    b_positions = b_sites + np.column_stack([variant * displacement, np.zeros(len(b_sites))])
    b_positions += rng.normal(0.0, 0.1, b_positions.shape)
    a_positions = a_sites + rng.normal(0.0, 0.1, a_sites.shape)
    sigma = 0.13 * spacing
    radius = int(np.ceil(spacing))
    positions = np.concatenate([a_positions, b_positions])
    amplitudes = np.concatenate([np.ones(len(a_positions)), np.where(film, 0.72, 0.45)])
    clean = 0.08 + _render_columns((side, side), positions, amplitudes, _probe(sigma, 3 * sigma, 0.06, radius), radius)
    scan = rng.poisson(clean * 300.0) / 300.0 + rng.normal(0.0, 0.015, clean.shape)
    return _lattice_case(
        "perovskite_film",
        scan,
        b_positions,
        film.astype(np.int64),
        window,
        n_classes=2,
        description=(
            "perovskite film (above a horizontal interface) on substrate, B-site patches; film B sites brighter "
            "(0.72 vs 0.45) and displaced ±1.5–2.5 px along rows in stripe domains; Gaussian+Moffat probe, "
            "Poisson 300 counts + read noise"
        ),
        per_patch={"variant": variant.astype(np.int64)},
        extra={"boundary_row": float(boundary_row), "displacement_px": float(displacement), "a_positions": a_positions, "class_names": ("substrate", "film")},
    )


# --- 5. the project's two-phase lattice, wrapped -----------------------------------------------------


def make_two_phase_case(seed: int, n: int | None = None, size: str = "bench") -> ZooCase:
    """The project's two-phase lattice (:func:`microvae.synthetic.make_two_phase_lattice`, its
    defaults: spacing 14 px, dim columns 0.2 left and 0.65 right of a vertical boundary, displaced
    ±1.5 px along rows in horizontal stripes, Poisson at 2000 counts), with ``seed`` passed through.

    Patches: one per **bright column** at its true position (as ``benchmarks/bench_two_phase.py``
    cuts them), window 24 px (bench) or 20 px (ci). Labels: the region, 0 left, 1 right (K = 2).
    Separable: the four dim columns at the window's corners (±7, ±7 px) are 0.2 against 0.65.
    ``extra``: ``variant`` (N,) of the nearest dim column (+1/−1), ``boundary_col``, ``class_names``.
    Sizes: bench 1849 patches (635² scan), ci 441 (321² scan); ``n`` sets the scan size for about
    ``n`` patches.
    """
    from .synthetic import make_two_phase_lattice

    _check(seed, size, n)
    window = 24 if size == "bench" else 20
    n = int(n) if n is not None else (1900 if size == "bench" else 460)
    side = _side(n, window, 1.0 / 14.0**2)
    truth = make_two_phase_lattice(shape=(side, side), seed=int(seed))
    bright = truth.sublattice == 0
    dim = ~bright
    nearest_dim = cKDTree(truth.positions[dim]).query(truth.positions[bright])[1]
    return _lattice_case(
        "two_phase",
        truth.image,
        truth.positions[bright],
        truth.region[bright],
        window,
        n_classes=2,
        description=(
            "project two-phase lattice (microvae.synthetic), bright-column patches; regions differ in dim-column "
            "brightness (0.2 vs 0.65); ±1.5 px stripe variants"
        ),
        per_patch={"variant": truth.variant[dim][nearest_dim].astype(np.int64)},
        extra={"boundary_col": float(truth.boundary_col), "class_names": ("left", "right")},
    )


# --- 6. STM: defects with √3×√3 interference, FFT patches -------------------------------------------------

STM_RIPPLE = 0.9  # interference amplitude at the defect, in units of the lattice corrugation
STM_DECAY_CELLS = 2.5  # decay length ξ of the interference, in lattice spacings
STM_R2_DECAYS = 1.0  # r2 = W/4 + STM_R2_DECAYS · ξ


@dataclass
class _StmParams:
    side: int
    window: int
    step: int
    spacing: float
    defects: int
    decay: float
    r1: float
    r2: float


def _stm_params(size: str, n: int | None) -> _StmParams:
    if size == "bench":
        window, step, spacing, n_default, per_patch_defects = 32, 8, 5.0, 1849, 36 / 1849
    else:
        window, step, spacing, n_default, per_patch_defects = 20, 6, 4.0, 576, 16 / 576
    n = int(n) if n is not None else n_default
    side = window + step * (int(np.ceil(np.sqrt(n))) - 1)
    decay = STM_DECAY_CELLS * spacing
    return _StmParams(side, window, step, spacing, max(2, int(round(per_patch_defects * n))), decay, r1=window / 4.0, r2=window / 4.0 + STM_R2_DECAYS * decay)


def _one_over_f(count: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise of unit sd along a 1D series of ``count`` samples."""
    spectrum = np.fft.rfft(rng.normal(size=count))
    frequency = np.fft.rfftfreq(count)
    spectrum[1:] /= np.sqrt(frequency[1:])
    spectrum[0] = 0.0
    series = np.fft.irfft(spectrum, count)
    return series / (series.std() + 1e-12)


def _stm_scan(p: _StmParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One STM topograph (side², raw units, corrugation ≈ 1) and its defect positions (M, 2)."""
    side = p.side
    theta = np.deg2rad(7.0 + rng.uniform(-1.0, 1.0))  # lattice orientation, nearly fixed per member
    a1 = p.spacing * np.array([np.sin(theta), np.cos(theta)])  # (row, col)
    a2 = p.spacing * np.array([np.sin(theta + np.pi / 3), np.cos(theta + np.pi / 3)])
    basis = np.stack([a1, a2], axis=1)  # columns a1, a2
    reciprocal = np.linalg.inv(basis)  # rows b1, b2 (cycles/px): b_i · a_j = δ_ij
    b1, b2 = reciprocal
    origin = rng.uniform(0, p.spacing, 2)
    rows, cols = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64), indexing="ij")
    dr, dc = rows - origin[0], cols - origin[1]
    waves = sum(np.cos(2 * np.pi * (g[0] * dr + g[1] * dc)) for g in (b1, b2, -(b1 + b2)))
    topography = ((waves + 1.5) / 4.5) ** 2  # round bumps, 1 on the sites, 0 between
    # defects on lattice sites, at least 2·r1 apart
    count = p.defects
    candidates = origin + rng.uniform(-2, side / p.spacing + 2, (8 * count, 2)) @ basis.T
    lattice_index = np.round(np.linalg.solve(basis, (candidates - origin).T).T)
    candidates = origin + lattice_index @ basis.T
    inside = ((candidates >= 2) & (candidates <= side - 3)).all(axis=1)
    defects = []
    for point in candidates[inside]:
        if all(np.hypot(*(point - q)) >= 2 * p.r1 for q in defects):
            defects.append(point)
        if len(defects) == count:
            break
    defects = np.array(defects).reshape(-1, 2)
    k_vectors = ((2 * b1 + b2) / 3, (-b1 + b2) / 3, (-b1 - 2 * b2) / 3)  # the √3×√3 (K-point) wave vectors
    reach = int(np.ceil(7 * p.decay))
    for centre in defects:
        r0, c0 = np.round(centre).astype(int)
        lo_r, hi_r, lo_c, hi_c = max(r0 - reach, 0), min(r0 + reach + 1, side), max(c0 - reach, 0), min(c0 + reach + 1, side)
        er, ec = rows[lo_r:hi_r, lo_c:hi_c] - centre[0], cols[lo_r:hi_r, lo_c:hi_c] - centre[1]
        distance = np.hypot(er, ec)
        ripple = sum(np.cos(2 * np.pi * (k[0] * er + k[1] * ec)) for k in k_vectors) / 3.0
        topography[lo_r:hi_r, lo_c:hi_c] += STM_RIPPLE * ripple * np.exp(-distance / p.decay)
        topography[lo_r:hi_r, lo_c:hi_c] += 1.3 * np.exp(-(distance**2) / (2 * (0.55 * p.spacing) ** 2))  # adsorbate bump
    # scan artefacts: fast scan along rows, 1/f noise along the raster, line-to-line offsets, a plane
    line_noise = 0.12 * _one_over_f(side * side, rng).reshape(side, side)
    steps = rng.normal(0.0, 0.03, side) + np.where(rng.random(side) < 0.03, rng.normal(0.0, 0.35, side), 0.0)
    offsets = np.cumsum(steps)[:, None]
    plane = rng.uniform(-0.4, 0.4) * rows / side + rng.uniform(-0.4, 0.4) * cols / side
    scan = topography + line_noise + offsets + plane + rng.normal(0.0, 0.08, topography.shape)
    return scan.astype(np.float32), defects


def _stm_patches(p: _StmParams, scan: np.ndarray, defects: np.ndarray) -> dict:
    centres = grid_centres(scan.shape, p.window, p.step)
    raw = cut_patches(scan[None], centres, p.window, subpixel=False)
    patches, norm = _normalised(fft_magnitude(raw))
    distance = cKDTree(defects).query(centres)[0] if len(defects) else np.full(len(centres), np.inf)
    labels = np.where(distance <= p.r1, 1, np.where(distance <= p.r2, 2, 0)).astype(np.int64)
    ambiguous = (np.abs(distance - p.r1) < 1.5) | (np.abs(distance - p.r2) < 0.25 * p.decay)
    return {"patches": patches, "labels": labels, "coords": centres, "distance": distance, "ambiguous": ambiguous, **norm}


def make_stm_defects(seed: int, n: int | None = None, size: str = "bench") -> ZooCase:
    """An STM topograph of a triangular lattice with point defects and their √3×√3 interference,
    cut on a grid into FFT-magnitude patches.

    Construction: a close-packed (triangular) lattice of round bumps, spacing 5 px (bench) or 4 px
    (ci), oriented at 7 ± 1°: ``((Σ_i cos 2π b_i·r + 1.5) / 4.5)²`` over the three reciprocal vectors.
    Point defects (36 bench, 16 ci, on lattice sites, at least W/2 apart) are adsorbate-like bumps
    (1.3 × the corrugation, σ = 0.55 a) surrounded by √3×√3 interference ripples
    ``0.9 · mean_j cos(2π K_j·(r − r_d)) · exp(−|r − r_d| / ξ)``, K_j the three Brillouin-zone
    corner vectors (|K| = |b| / √3), decay ξ = 2.5 a. Scan artefacts (fast scan along rows): 1/f
    noise along the raster (σ 0.12), line-to-line offsets (a random walk, σ 0.03 per line, with
    jumps σ 0.35 on 3 % of lines), a random plane, white noise σ 0.08.

    Patches: on a regular grid (:func:`microvae.patches.grid_centres`; step 8 px, window 32 bench;
    step 6, window 20 ci), converted with :func:`microvae.patches.fft_magnitude`, then normalised.
    Labels by the distance d from the patch centre to the nearest defect: 1 if d ≤ r1 = W/4 (the
    defect sits in the central half of the Hann-weighted window), 2 if r1 < d ≤ r2 = W/4 + ξ
    (interference reaches the centre but the defect is at most at the window's faint edge), else 0
    (K = 3; r1, r2 = 8, 20.5 px bench; 5, 15 px ci). Separable in principle: class 0 spectra have only the six lattice peaks (plus the
    scan-line streak along the k_col = 0 axis, common to all); class 2 adds the six √3×√3 peaks at
    1/√3 of the lattice radius, rotated by 30°; class 1 adds those and a broad, bright halo from the
    compact adsorbate. The classes are bands of a continuous distance, so patches near r1 or r2 are
    genuinely ambiguous: ``extra['ambiguous']`` marks those with |d − r1| < 1.5 px or
    |d − r2| < ξ/4 (about 20 % of the patches at bench size, 25–30 % at ci), and
    ``extra['defect_distance_px']`` gives d. A nearest-class-mean classifier trained on the true
    labels reaches ≈ 0.83–0.93 on all patches and 0.92–0.98 on the unambiguous ones; its errors
    are clean/interference confusions (class 1 is always recognised).

    Differs from the project: STM topography (not column intensities), 1/f and scan-line noise,
    FFT patches, imbalanced classes (about 67/6/27 bench, 60/6/34 ci). Sizes: bench 1849 patches
    (368² scan), ci 576 (158² scan); ``n`` sets the scan size for about ``n`` patches (and the
    number of defects in proportion). ``extra`` also holds ``is_defect``
    (label ≠ 0), ``defects`` (M, 2), and a second scan from an independent stream for
    ``encode --pretrained``: ``second_scan``, ``second_patches`` (normalised by their own
    percentiles), ``second_labels``, ``second_coords``, ``second_is_defect``.
    """
    _check(seed, size, n)
    p = _stm_params(size, n)
    scan, defects = _stm_scan(p, _rng(seed, "stm_defects", 0))
    first = _stm_patches(p, scan, defects)
    second_scan, second_defects = _stm_scan(p, _rng(seed, "stm_defects", 1))
    second = _stm_patches(p, second_scan, second_defects)
    return ZooCase(
        name="stm_defects",
        patches=first["patches"],
        labels=first["labels"],
        n_classes=3,
        rotation=False,
        translation=False,
        fft=True,
        angle_rad=None,
        scan=scan,
        coords=first["coords"],
        description=(
            "STM triangular lattice with adsorbate defects and √3×√3 interference ripples, 1/f scan-line noise and "
            "line offsets; grid FFT patches; 0 clean, 1 defect within W/4, 2 interference only"
        ),
        extra={
            "is_defect": first["labels"] != 0,
            "defect_distance_px": first["distance"],
            "ambiguous": first["ambiguous"],
            "defects": defects,
            "r1_px": p.r1,
            "r2_px": p.r2,
            "grid_step": p.step,
            "norm_offset": first["norm_offset"],
            "norm_scale": first["norm_scale"],
            "class_names": ("clean", "defect", "interference"),
            "second_scan": second_scan,
            "second_patches": second["patches"],
            "second_labels": second["labels"],
            "second_coords": second["coords"],
            "second_is_defect": second["labels"] != 0,
            "second_defects": second_defects,
        },
    )


# --- 7. honeycomb with dopants on the dim sublattice -------------------------------------------------------


def make_honeycomb_dopants(seed: int, n: int | None = None, size: str = "bench") -> ZooCase:
    """A honeycomb (MoS2/hBN-like) lattice with substitutional dopants on the dim sublattice.

    Construction: lattice constant a = 12 px (bench) or 10 px (ci), oriented at a random angle in
    0–60°; sublattice A (amplitude 1.0) and B (0.55) a/√3 apart; dopants replace exactly 5 % of the
    patched sites, all on B (amplitude 0.8; 10 % of B sites outside the patched area too).
    Gaussian columns (σ = 0.11 a), 0.08 px jitter. Scan drift: columns shift by 2–4 % of their row
    along the columns (a shear) plus a slow creep of up to 1.5 px. **Low contrast**: the columns
    (scaled to a 0.4 peak) sit on a pedestal 0.6 with a slow background (plane plus undulation) of
    0.25 peak to peak; Gaussian read noise σ = 0.05.

    Patches: one at every site (subpixel, at the true drifted positions), window 28 px (bench) or
    20 px (ci). Labels: 0 A host, 1 B host, 2 B-site dopant (K = 3; ≈ 50 / 45 / 5 %). Separable in
    principle: A- and B-centred patches differ in the centre brightness (0.4 vs 0.22 over the
    background) and in the orientation of the triangle of three nearest neighbours (turned by
    60°) and their brightness; a dopant has the B-site neighbourhood (three bright A neighbours in
    the B orientation) with a centre of 0.32, brighter than a B host's 0.22 and dimmer than an A's.
    The minority class is detectable only by that 0.1 difference against noise and the slow
    background, which is the point of the member.

    Differs from the project: three-fold (not square) lattice, 5 % minority class, low contrast on
    a sloping background, drift. Sizes: bench ≈ 1700 patches (354² scan), ci ≈ 690 (192² scan);
    ``n`` sets the scan size for about ``n`` patches. ``extra``: ``sublattice`` (0 A, 1 B),
    ``is_dopant``, ``drift`` (shear, creep px), ``class_names``.
    """
    _check(seed, size, n)
    spacing, window = (12.0, 28) if size == "bench" else (10.0, 20)
    n = int(n) if n is not None else (1700 if size == "bench" else 680)
    per_px2 = 2.0 / (spacing**2 * np.sqrt(3) / 2)
    side = _side(n, window, per_px2)
    rng = _rng(seed, "honeycomb_dopants")
    theta = rng.uniform(0, np.pi / 3)
    a1 = spacing * np.array([np.sin(theta), np.cos(theta)])
    a2 = spacing * np.array([np.sin(theta + np.pi / 3), np.cos(theta + np.pi / 3)])
    reach = int(np.ceil(1.5 * side / spacing)) + 2
    steps = np.arange(-reach, reach + 1)
    m, k = np.meshgrid(steps, steps, indexing="ij")
    centre = np.array([side / 2.0, side / 2.0])
    a_sites = centre + m.ravel()[:, None] * a1 + k.ravel()[:, None] * a2
    b_sites = a_sites + (a1 + a2) / 3.0
    sites = np.concatenate([a_sites, b_sites])
    sublattice = np.repeat([0, 1], len(a_sites))
    margin = 6.0
    keep = ((sites > -margin) & (sites < side - 1 + margin)).all(axis=1)
    sites, sublattice = sites[keep], sublattice[keep]
    shear, creep = rng.uniform(0.02, 0.04) * rng.choice([-1, 1]), rng.uniform(0.5, 1.5)
    positions = sites.copy()
    positions[:, 1] += shear * sites[:, 0] + creep * np.sin(np.pi * sites[:, 0] / side)
    positions += rng.normal(0.0, 0.08, positions.shape)
    patched = window_fits(positions, (side, side), window, subpixel=True)
    dopant = np.zeros(len(positions), bool)
    b_patched, b_other = np.flatnonzero(patched & (sublattice == 1)), np.flatnonzero(~patched & (sublattice == 1))
    dopant[rng.choice(b_patched, int(round(0.05 * patched.sum())), replace=False)] = True
    dopant[b_other[rng.random(len(b_other)) < 0.10]] = True
    amplitudes = np.where(sublattice == 0, 1.0, np.where(dopant, 0.8, 0.55))
    sigma = 0.11 * spacing
    radius = int(np.ceil(4 * sigma))
    columns = _render_columns((side, side), positions, amplitudes, lambda r: np.exp(-(r**2) / (2 * sigma**2)), radius)
    scan = 0.6 + 0.25 * _smooth_background((side, side), rng) + 0.4 * columns + rng.normal(0.0, 0.05, (side, side))
    labels = np.where(sublattice == 0, 0, np.where(dopant, 2, 1))
    return _lattice_case(
        "honeycomb_dopants",
        scan,
        positions,
        labels,
        window,
        n_classes=3,
        description=(
            "honeycomb lattice (A 1.0, B 0.55) with 5 % dopants on B (0.8), low contrast over a sloping background, "
            "Gaussian noise, scan drift; patches at every site: A host, B host, B dopant"
        ),
        per_patch={"sublattice": sublattice.astype(np.int64), "is_dopant": dopant},
        extra={"drift": (float(shear), float(creep)), "class_names": ("A host", "B host", "B dopant")},
    )


# --- registry ----------------------------------------------------------------------------------------


def _named(generator: Callable[..., ZooCase], **fixed) -> Callable[..., ZooCase]:
    function = partial(generator, **fixed)
    function.__doc__ = generator.__doc__
    return function


MEMBERS: dict[str, Callable[..., ZooCase]] = {
    **{f"cards_{deg}": _named(make_cards_case, max_angle_deg=float(deg)) for deg in ROTATION_DEGREES},
    **{f"glyph_suits_{deg}": _named(make_glyph_suits, max_angle_deg=float(deg)) for deg in ROTATION_DEGREES},
    "digits": make_digits,
    "perovskite_film": make_perovskite_film,
    "two_phase": make_two_phase_case,
    "stm_defects": make_stm_defects,
    "honeycomb_dopants": make_honeycomb_dopants,
}
"""Registry name → generator ``(seed, n=None, size="bench") -> ZooCase``."""


def make_case(name: str, seed: int, size: str = "bench") -> ZooCase:
    """Generate the zoo member ``name`` (a key of :data:`MEMBERS`) with ``seed`` at ``size`` ("bench" or "ci")."""
    if name not in MEMBERS:
        raise ParameterError(f"unknown zoo member {name!r}; expected one of {', '.join(MEMBERS)}")
    return MEMBERS[name](seed, size=size)
