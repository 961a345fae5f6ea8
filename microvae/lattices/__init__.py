"""Ground-truth lattice generators that do not favour the atom finder's model.

:func:`microvae.synthetic.make_lattice` draws exactly what :mod:`microvae.atoms` fits: isotropic
Gaussians, well separated, on a square lattice. The generators here differ from it in kind, and
from each other, in the column profile (Moffat, Airy, Gaussian core + broad probe tail, elliptical
cores, dark dips with a bright halo), the noise (low-dose Poisson, Poisson + read noise,
additive correlated Gaussian noise, line noise and line jitter), the background (slow surfaces,
an amorphous-carbon texture, a thickness wedge that scales the columns, a mottled surface layer),
the spacing relative to the column width (overlapping tails, dumbbells 3σ apart), and the class
balance (a few % vacancies and substitutions).

Every generator is ``fn(seed: int = 0, size: str = "ci", **overrides) -> GroundTruthScan``:
``size="ci"`` is about 256 × 256 px and draws in well under 0.5 s, ``size="bench"`` about
1024 × 1024 px. ``overrides`` replace any of the generator's documented parameters (an unknown
name is a ``TypeError``); ``noise=False`` draws the noise-free image (same columns, same
distortions). Random draws come from independent streams per component
(``np.random.default_rng([seed, k])``), so switching one component off leaves the others as
they were. :data:`GENERATORS` maps each name to its function.

Conventions are those of :mod:`microvae.synthetic`: positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½), so a column at (10.0, 20.0) is centred on pixel
(10, 20). ``positions`` lists every column that contributes to the image, including those up to a
profile radius outside it (use :meth:`GroundTruthScan.inside`). Intensities are in units of the
brightest column's noise-free peak above the background (ABF: of the bright background level).

Truth arrays, per column: ``positions = ideal site + displacement_px + random static jitter``
(``params["jitter_px"]``, isotropic normal per coordinate): ``displacement_px`` is the imposed,
structured displacement only (polar B-site shifts, octahedral-tilt oxygen shifts, scan
distortion), zero elsewhere. :func:`load_abtem` reads multislice simulations cached by
``benchmarks/simulate_abtem.py``; they are registered as generators (``abtem_mos2``, …) only when
their files exist.

The package, one module per idea (as :mod:`microvae.atoms` is split):

- :mod:`.truth` — :class:`GroundTruthScan`, and what every generator shares: its parameters
  (:func:`merge_params`), random streams (:func:`component_streams`) and truth arrays
  (:func:`ground_truth_scan`);
- :mod:`.drawing` — lattice sites, column profiles, :func:`render_profile`, noise and backgrounds;
- :mod:`.crystals` — :func:`honeycomb`, :func:`dumbbells`;
- :mod:`.perovskites` — :func:`displaced_perovskite`, :func:`abf_perovskite`;
- :mod:`.scan_distortion` — :func:`scan_distorted`;
- :mod:`.abtem` — :func:`load_abtem` and the cached simulations' generators;
- :mod:`.registry` — :data:`GENERATORS`.
"""

from __future__ import annotations

from .abtem import ABTEM_DIR, abtem_files, abtem_generator, load_abtem
from .crystals import DUMBBELL_DEFAULTS, HONEYCOMB_DEFAULTS, dumbbells, honeycomb
from .drawing import (
    airy_profile,
    bravais_sites,
    correlated_noise,
    dip_with_halo_profile,
    elliptical_gaussian_profile,
    moffat_profile,
    poisson_read,
    render_profile,
    rotation_matrix,
    two_gaussian_profile,
)
from .perovskites import ABF_DEFAULTS, PEROVSKITE_DEFAULTS, abf_perovskite, displaced_perovskite
from .registry import GENERATORS
from .scan_distortion import SCAN_DEFAULTS, scan_distorted
from .truth import SIZES, GroundTruthScan, component_streams, ground_truth_scan, merge_params

__all__ = [
    "ABF_DEFAULTS",
    "ABTEM_DIR",
    "DUMBBELL_DEFAULTS",
    "GENERATORS",
    "GroundTruthScan",
    "HONEYCOMB_DEFAULTS",
    "PEROVSKITE_DEFAULTS",
    "SCAN_DEFAULTS",
    "SIZES",
    "abf_perovskite",
    "abtem_files",
    "abtem_generator",
    "airy_profile",
    "bravais_sites",
    "component_streams",
    "correlated_noise",
    "dip_with_halo_profile",
    "displaced_perovskite",
    "dumbbells",
    "elliptical_gaussian_profile",
    "ground_truth_scan",
    "honeycomb",
    "load_abtem",
    "merge_params",
    "moffat_profile",
    "poisson_read",
    "render_profile",
    "rotation_matrix",
    "scan_distorted",
    "two_gaussian_profile",
]
