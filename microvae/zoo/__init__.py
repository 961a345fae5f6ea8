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
``molecules``         Poisson at a low dose (30   bright atoms on a    2–3 atoms,     tilted plane        60/30/10 (10 %
                      counts)                     dim surface          ≈ 25–45 %                          minority)
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

The package, one module per idea (as :mod:`microvae.atoms` is split):

- :mod:`.case` — :class:`ZooCase`, what every member returns, and the checks, random streams and
  normalisation every member shares;
- :mod:`.shapes` — objects in windows: ``cards_<deg>``, ``glyph_suits_<deg>``, ``digits``,
  ``molecules``, and :func:`render_affine`, which turns, scales and shifts the first three;
- :mod:`.crystals` — patches at atomic columns of simulated scans: ``perovskite_film``,
  ``two_phase``, ``honeycomb_dopants``;
- :mod:`.stm` — ``stm_defects``, FFT patches of an STM topograph;
- :mod:`.registry` — :data:`MEMBERS` and :func:`make_case`.
"""

from __future__ import annotations

from .case import PERCENTILES, SIZES, ZooCase
from .crystals import make_honeycomb_dopants, make_perovskite_film, make_two_phase_case
from .registry import MEMBERS, ROTATION_DEGREES, make_case
from .shapes import (
    DIGIT_CLASSES,
    GLYPH_ATLAS_SIZE,
    GLYPH_BASE_EXTENT,
    SUIT_GLYPHS,
    SUIT_NAMES,
    glyph_canonical_shapes,
    make_cards_case,
    make_digits,
    make_glyph_suits,
    make_molecules,
    molecule_atoms,
    render_affine,
)
from .stm import STM_DECAY_CELLS, STM_R2_DECAYS, STM_RIPPLE, make_stm_defects

__all__ = [
    "DIGIT_CLASSES",
    "GLYPH_ATLAS_SIZE",
    "GLYPH_BASE_EXTENT",
    "MEMBERS",
    "PERCENTILES",
    "ROTATION_DEGREES",
    "SIZES",
    "STM_DECAY_CELLS",
    "STM_R2_DECAYS",
    "STM_RIPPLE",
    "SUIT_GLYPHS",
    "SUIT_NAMES",
    "ZooCase",
    "glyph_canonical_shapes",
    "make_cards_case",
    "make_case",
    "make_digits",
    "make_glyph_suits",
    "make_honeycomb_dopants",
    "make_molecules",
    "make_perovskite_film",
    "make_stm_defects",
    "make_two_phase_case",
    "molecule_atoms",
    "render_affine",
]
