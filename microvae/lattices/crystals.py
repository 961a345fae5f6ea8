"""Two lattice generators of crystals seen down a zone axis: a honeycomb monolayer
(:func:`honeycomb`, MoS₂/WSe₂/hBN-like) and zincblende dumbbells (:func:`dumbbells`).

Conventions (those of :mod:`microvae.lattices`): positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½); widths σ in pixels; intensities in units of the
brightest column's noise-free peak above the background.
"""

from __future__ import annotations

import numpy as np

from ..synthetic import slow_background
from .drawing import (
    airy_profile,
    bravais_sites,
    correlated_noise,
    moffat_profile,
    poisson_read,
    render_profile,
)
from .truth import GroundTruthScan, component_streams, ground_truth_scan, merge_params

__all__ = [
    "DUMBBELL_DEFAULTS",
    "HONEYCOMB_DEFAULTS",
    "dumbbells",
    "honeycomb",
]

# ----------------------------------------------------------------------------------------------
# 1. Honeycomb (MoS2 / WSe2 / hBN-like)

HONEYCOMB_DEFAULTS = {
    "common": {
        "angle_deg": 17.0,
        "moffat_beta": 2.0,
        "dim_ratio": 0.38,
        "substitution_ratio": 1.35,
        "substitution_fraction": 0.06,
        "vacancy_fraction": 0.04,
        "metal_vacancy_fraction": 0.0,
        "jitter_px": 0.12,
        "dose": 80.0,
        "read_noise": 0.03,
        "background": 0.15,
        "carbon_sd": 0.04,
        "carbon_correlation_px": 1.5,
    },
    "ci": {"shape": [256, 256], "nn_px": 9.0, "moffat_hwhm_px": 2.0},
    "bench": {"shape": [1024, 1024], "nn_px": 12.0, "moffat_hwhm_px": 2.6},
}


def honeycomb(seed: int = 0, size: str = "ci", **overrides) -> GroundTruthScan:
    """A 2H-MoS₂/WSe₂/hBN-like monolayer along [001]: a honeycomb of bright metal columns
    (sublattice 0, "Mo", peak 1) and dim chalcogen-pair columns (sublattice 1, "S2", peak
    ``dim_ratio`` = 0.38, about Z^1.7 of S₂ against Mo).

    Geometry: hexagonal lattice rotated by ``angle_deg``, metal–chalcogen (nearest-neighbour)
    distance ``nn_px`` (9 px at ci, 12 px at bench), metal–metal √3·nn; a random sub-pixel origin.
    Profile: a Moffat ``(1 + d²/α²)^−β``, β = 2 (Lorentzian-like core, d⁻⁴ tails), half width at
    half maximum ``moffat_hwhm_px`` (2.0 / 2.6 px), window radius 8 HWHM.
    Defects: ``vacancy_fraction`` (4 %) of the chalcogen sites are empty (``vacancies``), and
    ``substitution_fraction`` (6 %) of the remaining chalcogen columns are "SSe" (species 2), drawn
    ``substitution_ratio`` (1.35) × the S₂ peak: a weak, hard-to-classify contrast (Z^1.7 scaling
    would give ≈ 2.3; override it). ``metal_vacancy_fraction`` (0) removes metal columns too.
    Noise: low-dose Poisson (``dose`` = 80 counts at a metal peak) plus Gaussian read noise
    (``read_noise`` = 0.03). Background: a slow surface (:func:`synthetic.slow_background`, peak
    ``background`` = 0.15) plus an amorphous-carbon texture (white noise smoothed over
    ``carbon_correlation_px`` = 1.5 px, sd ``carbon_sd`` = 0.04) — blobs about as wide as the columns.

    Parameters
    ----------
    seed : int, default 0
        Seed of every random draw (one stream per component,
        :func:`~microvae.lattices.truth.component_streams`).
    size : {"ci", "bench"}, default "ci"
        The preset: 256 × 256 px (``"ci"``) or 1024 × 1024 px (``"bench"``).
    **overrides
        Replacements for any parameter of :data:`HONEYCOMB_DEFAULTS`, or ``noise=False`` for the
        noise-free image.

    Returns
    -------
    GroundTruthScan
        Truth: ``species`` 0 = Mo, 1 = S2, 2 = SSe (``params["species_names"]``);
        ``displacement_px`` is zero (positions = ideal sites + normal static jitter of sd
        ``jitter_px`` = 0.12 px); ``params["metal_metal_px"]`` is the metal–metal distance √3·nn, px.

    Raises
    ------
    ValueError
        ``size`` is not ``"ci"`` or ``"bench"``.
    TypeError
        An override names no parameter of the generator.
    """
    params = merge_params("honeycomb", HONEYCOMB_DEFAULTS, size, seed, overrides)
    rng = component_streams(seed)
    shape = tuple(params["shape"])
    nn = params["nn_px"]
    a = np.sqrt(3.0) * nn
    radius = 8.0 * params["moffat_hwhm_px"]
    origin = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0]) + rng(1).uniform(0.0, a, size=2)
    a1, a2 = (0.0, a), (-a * np.sqrt(3.0) / 2.0, a / 2.0)
    sites, labels, _ = bravais_sites(shape, a1, a2, [(0.0, 0.0), (1.0 / 3.0, 1.0 / 3.0)], params["angle_deg"], radius, origin)
    draw = rng(2).random((2, len(sites)))
    vacant = np.where(labels == 1, draw[0] < params["vacancy_fraction"], draw[0] < params["metal_vacancy_fraction"])
    species = np.where((labels == 1) & (draw[1] < params["substitution_fraction"]), 2, labels)
    present = ~vacant
    positions = sites[present] + rng(3).normal(0.0, params["jitter_px"], size=(int(present.sum()), 2))
    labels, species = labels[present], species[present]
    amplitudes = np.select([species == 0, species == 1], [1.0, params["dim_ratio"]], params["dim_ratio"] * params["substitution_ratio"])
    profile = moffat_profile(params["moffat_hwhm_px"], params["moffat_beta"])
    clean, _ = render_profile(shape, positions, amplitudes, profile, radius)
    clean += slow_background(shape, params["background"], rng(4))
    clean += correlated_noise(shape, params["carbon_sd"], params["carbon_correlation_px"], rng(5))
    image = poisson_read(clean, params["dose"], params["read_noise"], rng(6)) if params["noise"] else clean
    params["species_names"] = ["Mo", "S2", "SSe"]
    params["metal_metal_px"] = float(a)
    return ground_truth_scan("honeycomb", image, positions, labels, ("Mo", "S2"), np.zeros_like(positions), species, sites[vacant], False, params)


# ----------------------------------------------------------------------------------------------
# 3. Dumbbells (zincblende / diamond along [110])

DUMBBELL_DEFAULTS = {
    "common": {
        "light_ratio": 0.7,
        "jitter_px": 0.08,
        "pedestal": 0.3,
        "surface_sd": 0.04,
        "surface_correlation_px": 6.0,
        "noise_sd": 0.05,
        "noise_correlation_px": 0.8,
        "white_sd": 0.03,
    },
    "ci": {"shape": [256, 256], "separation_px": 4.6, "sigma_px": 1.5, "angle_deg": 8.0},
    "bench": {"shape": [1024, 1024], "separation_px": 5.5, "sigma_px": 1.7, "angle_deg": -5.0},
}


def dumbbells(seed: int = 0, size: str = "ci", **overrides) -> GroundTruthScan:
    """Zincblende (GaAs-, Si-like) along [110]: dumbbells of two columns ``separation_px`` apart
    (4.6 px at ci, 5.5 at bench; 1.41 Å in GaAs, so ≈ 0.3 / 0.26 Å per px), ≈ 3.1–3.2 σ, so the two
    members partially overlap.

    Geometry: the dumbbells' centres form a centred rectangular lattice, a = 4·separation along the
    dumbbell axis ([001], the image rows before the rotation ``angle_deg`` = 8° / −5°) and a/√2
    across it; every dumbbell has the same polarity: its upper member (sublattice 0, "heavy",
    peak 1) and lower member (sublattice 1, "light", peak ``light_ratio`` = 0.7; Z^1.7 would give
    ≈ 0.9 for Ga/As — the default makes the polarity readable).
    Profile: an Airy pattern ``(2J₁(x)/x)²`` with rings (first bright ring 1.75 % of the peak at ≈ 3.7 σ),
    FWHM that of a Gaussian of σ = ``sigma_px`` (1.5 / 1.7 px); window radius 9 σ.
    Background: a flat ``pedestal`` (0.3) plus a mottled amorphous surface layer (smooth noise,
    correlation ``surface_correlation_px`` = 6 px, sd ``surface_sd`` = 0.04).
    Noise: additive Gaussian only (no shot noise): spatially correlated (``noise_sd`` = 0.05,
    smoothed over ``noise_correlation_px`` = 0.8 px, as after a detector's response) plus white
    (``white_sd`` = 0.03).

    Parameters
    ----------
    seed : int, default 0
        Seed of every random draw (one stream per component,
        :func:`~microvae.lattices.truth.component_streams`).
    size : {"ci", "bench"}, default "ci"
        The preset: 256 × 256 px (``"ci"``) or 1024 × 1024 px (``"bench"``).
    **overrides
        Replacements for any parameter of :data:`DUMBBELL_DEFAULTS`, or ``noise=False`` for the
        noise-free image.

    Returns
    -------
    GroundTruthScan
        Truth: no vacancies; ``displacement_px`` zero; ``species`` equals ``sublattice``;
        positions = ideal sites + static jitter (``jitter_px`` = 0.08);
        ``params["cell_px"]`` is the cell [a, a/√2], px.

    Raises
    ------
    ValueError
        ``size`` is not ``"ci"`` or ``"bench"``.
    TypeError
        An override names no parameter of the generator.
    """
    params = merge_params("dumbbells", DUMBBELL_DEFAULTS, size, seed, overrides)
    rng = component_streams(seed)
    shape = tuple(params["shape"])
    sep = params["separation_px"]
    a = 4.0 * sep
    radius = 9.0 * params["sigma_px"]
    origin = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0]) + rng(1).uniform(0.0, a, size=2)
    half = 0.5 * sep / a  # member offset along a1 in fractions of a
    motif = [(-half, 0.0), (half, 0.0), (0.5 - half, 0.5), (0.5 + half, 0.5)]
    sites, motif_index, _ = bravais_sites(shape, (a, 0.0), (0.0, a / np.sqrt(2.0)), motif, params["angle_deg"], radius, origin)
    labels = (motif_index % 2).astype(np.int64)
    positions = sites + rng(2).normal(0.0, params["jitter_px"], size=sites.shape)
    amplitudes = np.where(labels == 0, 1.0, params["light_ratio"])
    clean, _ = render_profile(shape, positions, amplitudes, airy_profile(params["sigma_px"]), radius)
    clean += params["pedestal"] + correlated_noise(shape, params["surface_sd"], params["surface_correlation_px"], rng(3))
    if params["noise"]:
        image = clean + correlated_noise(shape, params["noise_sd"], params["noise_correlation_px"], rng(4)) + rng(5).normal(0.0, params["white_sd"], size=shape)
    else:
        image = clean
    params["cell_px"] = [float(a), float(a / np.sqrt(2.0))]
    params["species_names"] = ["heavy", "light"]
    return ground_truth_scan("dumbbells", image, positions, labels, ("heavy", "light"), np.zeros_like(positions), labels, np.zeros((0, 2)), False, params)
