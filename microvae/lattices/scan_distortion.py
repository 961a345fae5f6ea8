"""The lattice generator :func:`scan_distorted`: a two-sublattice lattice as a raster scan
records it, with line jitter, a mains wobble, drift and line noise.

Conventions (those of :mod:`microvae.lattices`): positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½); widths σ in pixels; intensities in units of the
brightest column's noise-free peak above the background.
Rows are the fast-scan lines, recorded top to bottom.
"""

from __future__ import annotations

import numpy as np

from ..synthetic import lattice_sites, slow_background
from .drawing import (
    poisson_read,
    render_profile,
    two_gaussian_profile,
)
from .truth import GroundTruthScan, component_streams, ground_truth_scan, merge_params

__all__ = [
    "SCAN_DEFAULTS",
    "scan_distorted",
]


def _near_image(positions: np.ndarray, shape, margin: float) -> np.ndarray:
    height, width = shape
    return (positions[:, 0] > -margin) & (positions[:, 0] < height - 1 + margin) & (positions[:, 1] > -margin) & (positions[:, 1] < width - 1 + margin)


# ----------------------------------------------------------------------------------------------
# 4. Scan-distorted two-sublattice lattice

SCAN_DEFAULTS = {
    "common": {
        "angle_deg": 20.0,
        "dim_ratio": 0.6,
        "sigma_px": 1.9,
        "tail_sigma_px": 4.5,
        "tail_fraction": 0.2,
        "vacancy_fraction": 0.02,
        "jitter_px": 0.05,
        "line_jitter_px": 0.4,
        "wobble_px": 0.25,
        "wobble_period_rows": 37.0,
        "shear": 0.015,
        "stretch": 0.012,
        "dose": 400.0,
        "read_noise": 0.01,
        "line_offset_sd": 0.03,
        "line_gain_sd": 0.02,
        "background": 0.2,
    },
    "ci": {"shape": [256, 256], "spacing_px": 16.0},
    "bench": {"shape": [1024, 1024], "spacing_px": 20.0},
}


def scan_distorted(seed: int = 0, size: str = "ci", **overrides) -> GroundTruthScan:
    """A two-sublattice square lattice (:func:`synthetic.lattice_sites`: bright corners, sublattice
    0; dim cell centres, sublattice 1, peak ``dim_ratio`` = 0.6), spacing ``spacing_px`` (16 / 20
    px), rotated ``angle_deg`` = 20°, as a raster scan records it with scan distortions.

    Distortions (rows are the fast-scan lines, recorded top to bottom):
      * line jitter: every row is shifted horizontally by its own normal shift of sd
        ``line_jitter_px`` = 0.4 px, plus a mains-like sinusoidal wobble (``wobble_px`` = 0.25 px,
        period ``wobble_period_rows`` = 37 rows, random phase);
      * slow drift: a horizontal shear (``shear`` = 0.015 px per row about the middle row) and a
        vertical stretch (``stretch`` = 1.2 %, about the middle row; it moves the columns, their
        profiles are not stretched).
    ``extra["row_shift_px"]`` (H,) is each recorded row's total horizontal shift (jitter + wobble +
    shear): recorded row r shows the object at column c − row_shift[r].
    Profile: a Gaussian core σ = ``sigma_px`` 1.9 plus a broad tail σ = ``tail_sigma_px`` 4.5
    carrying ``tail_fraction`` = 20 % of the peak; window radius 3.5·σ_tail.
    Noise: Poisson (``dose`` = 400) plus read noise 0.01 plus line noise: each row gets its own
    offset (sd ``line_offset_sd`` = 0.03) and gain (sd ``line_gain_sd`` = 2 %). Background: a slow
    surface of peak ``background`` = 0.2. ``vacancy_fraction`` = 2 % of both sublattices.

    Parameters
    ----------
    seed : int, default 0
        Seed of every random draw (one stream per component,
        :func:`~microvae.lattices.truth.component_streams`).
    size : {"ci", "bench"}, default "ci"
        The preset: 256 × 256 px (``"ci"``) or 1024 × 1024 px (``"bench"``).
    **overrides
        Replacements for any parameter of :data:`SCAN_DEFAULTS`, or ``noise=False`` for the
        noise-free image.

    Returns
    -------
    GroundTruthScan
        Truth: positions are where the columns appear in the distorted image: the row is
        stretched, the column is moved by the centroid of the row shifts over the column's rows
        (weighted by the profile's row marginal: the shift of its intensity centroid).
        ``vacancies`` are the empty sites as they would appear (stretched, shifted by their
        nearest row's shift). ``displacement_px`` is this scan-induced displacement (non-zero for
        every column); positions = ideal site + displacement + static jitter (``jitter_px`` =
        0.05). ``extra["row_shift_px"]`` is the (H,) float64 row shift above.

    Raises
    ------
    ValueError
        ``size`` is not ``"ci"`` or ``"bench"``.
    TypeError
        An override names no parameter of the generator.
    """
    params = merge_params("scan_distorted", SCAN_DEFAULTS, size, seed, overrides)
    rng = component_streams(seed)
    shape = tuple(params["shape"])
    height = shape[0]
    radius = 3.5 * params["tail_sigma_px"]
    # sites in a margin that does not depend on the distortions (so that the random draws per site
    # stay the same when a distortion is overridden); columns far outside are dropped after distortion
    sites, labels = lattice_sites(shape, params["spacing_px"], params["angle_deg"], True, radius + 0.1 * max(shape) + 4)
    sites = sites + rng(1).uniform(-0.5, 0.5, size=2)
    present = rng(2).random(len(sites)) >= params["vacancy_fraction"]
    vacancies = sites[~present]
    sites, labels = sites[present], labels[present].astype(np.int64)
    jitter = rng(3).normal(0.0, params["jitter_px"], size=sites.shape)
    middle = (height - 1) / 2.0
    rows = np.arange(height, dtype=np.float64)
    row_shift = (
        rng(4).normal(0.0, params["line_jitter_px"], size=height)
        + params["wobble_px"] * np.sin(2 * np.pi * rows / params["wobble_period_rows"] + rng(5).uniform(0, 2 * np.pi))
        + params["shear"] * (rows - middle)
    )
    stretched = sites + jitter
    stretched[:, 0] = middle + (stretched[:, 0] - middle) * (1.0 + params["stretch"])
    near = _near_image(stretched, shape, radius + max(0.05 * max(shape), np.abs(row_shift).max()) + 1)
    sites, labels, jitter, stretched = sites[near], labels[near], jitter[near], stretched[near]
    amplitudes = np.where(labels == 0, 1.0, params["dim_ratio"])
    profile = two_gaussian_profile(params["sigma_px"], params["tail_sigma_px"], params["tail_fraction"])
    clean, centroid_shift = render_profile(shape, stretched, amplitudes, profile, radius, row_shift=row_shift)
    positions = stretched.copy()
    positions[:, 1] += centroid_shift
    displacement = positions - sites - jitter
    clean += slow_background(shape, params["background"], rng(6))
    if params["noise"]:
        line = rng(7)
        image = poisson_read(clean, params["dose"], params["read_noise"], rng(8))
        image = image * (1.0 + line.normal(0.0, params["line_gain_sd"], size=(height, 1))) + line.normal(0.0, params["line_offset_sd"], size=(height, 1))
    else:
        image = clean
    vacancies = vacancies.copy()
    vacancies[:, 0] = middle + (vacancies[:, 0] - middle) * (1.0 + params["stretch"])
    vacancies[:, 1] += row_shift[np.clip(np.round(vacancies[:, 0]).astype(np.int64), 0, height - 1)]
    vacancies = vacancies[_near_image(vacancies, shape, radius)]
    params["species_names"] = ["A", "B"]
    return ground_truth_scan(
        "scan_distorted", image, positions, labels, ("A", "B"), displacement, labels, vacancies, False, params, extra={"row_shift_px": row_shift}
    )
