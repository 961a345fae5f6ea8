"""Two perovskite lattice generators: a polar film on its substrate with B columns displaced
towards their A neighbours (:func:`displaced_perovskite`, the hard case), and an annular bright
field image with dark columns and tilted oxygen octahedra (:func:`abf_perovskite`).

Conventions (those of :mod:`microvae.lattices`): positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½); widths σ in pixels; intensities in units of the
brightest column's noise-free peak above the background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..synthetic import slow_background
from .drawing import (
    bravais_sites,
    dip_with_halo_profile,
    elliptical_gaussian_profile,
    poisson_read,
    render_profile,
    rotation_matrix,
)
from .truth import GroundTruthScan, component_streams, ground_truth_scan, merge_params

__all__ = [
    "ABF_DEFAULTS",
    "PEROVSKITE_DEFAULTS",
    "abf_perovskite",
    "displaced_perovskite",
]

# ----------------------------------------------------------------------------------------------
# 2. Displaced perovskite (the hard case: overlapping tails, B columns displaced towards A)

PEROVSKITE_DEFAULTS = {
    "common": {
        "ab_distance_px": 8.8,
        "angle_deg": 0.0,
        "sigma_a_px": 2.5,
        "sigma_b_px": 2.3,
        "ellipticity": 1.12,
        "astigmatism_deg": 30.0,
        "tail_sigma_px": 7.0,
        "tail_fraction": 0.12,
        "b_ratio": 0.5,
        "a_film_ratio": 1.0,
        "a_substrate_ratio": 0.85,
        "shift_px": 2.5,
        "shift_sd_px": 0.15,
        "jitter_px": 0.08,
        "film_fraction": 0.5,
        "dose": 300.0,
        "read_noise": 0.02,
        "background": 0.1,
        "wedge": 0.4,
    },
    "ci": {"shape": [256, 256], "domain_px": 64.0},
    "bench": {"shape": [1024, 1024], "domain_px": 160.0},
}


def displaced_perovskite(seed: int = 0, size: str = "ci", **overrides) -> GroundTruthScan:
    """A polar perovskite film on its substrate along [001] (the issue's hard case).

    Geometry: A columns (sublattice 0, bright) on a square lattice aligned with the image axes
    (``angle_deg`` = 0) with cell a = √2·``ab_distance_px`` (A–B distance 8.8 px, a ≈ 12.45 px); B
    columns (sublattice 1) at the cell centres. The upper ``film_fraction`` (half) of the image is
    the film (``extra["region"]`` 1, substrate 0): film A rows end at an A row chosen near
    ``film_fraction``·H; the B row below the last film A row is the interface layer and counts as
    film (``params["interface_row"]`` is its row when ``angle_deg`` is 0). In the film every B column is displaced along a cell diagonal, towards one
    of its A neighbours, by ``shift_px`` = 2.5 px (± normal ``shift_sd_px`` = 0.15, clipped to
    [2, 3] px), in vertical stripe domains ``domain_px`` wide (64 / 160 px) with two polarisation
    variants: ``extra["variant"]`` +1 towards the upper-left A, (−1, −1)/√2, and −1 towards the
    upper-right A, (−1, +1)/√2 (0 for A and substrate B). Substrate B sit exactly at the centres.
    A columns are ``a_film_ratio`` (1.0) bright in the film and ``a_substrate_ratio`` (0.85) in the
    substrate (Pb- vs Sr-like); B peaks are ``b_ratio`` (0.5).
    Profile: an elliptical Gaussian core (two-fold astigmatism: ``ellipticity`` 1.12 along
    ``astigmatism_deg`` = 30°), σ = ``sigma_a_px`` 2.5 for A and ``sigma_b_px`` 2.3 for B, so the
    tails of a displaced B and its A (6.3 px apart) overlap; plus a broad probe tail: the image of
    the cores is blended with its Gaussian blur of ``tail_sigma_px`` = 7 px so that the tail carries
    ``tail_fraction`` = 12 % of each column's peak.
    Background: a thickness wedge that scales every column linearly from 1 − ``wedge``/2 (left) to
    1 + ``wedge``/2 (right), plus a flat ``background`` = 0.1.
    Noise: Poisson (``dose`` = 300 counts at a peak of 1) plus Gaussian read noise 0.02.

    Parameters
    ----------
    seed : int, default 0
        Seed of every random draw (one stream per component,
        :func:`~microvae.lattices.truth.component_streams`).
    size : {"ci", "bench"}, default "ci"
        The preset: 256 × 256 px (``"ci"``) or 1024 × 1024 px (``"bench"``).
    **overrides
        Replacements for any parameter of :data:`PEROVSKITE_DEFAULTS`, or ``noise=False`` for the
        noise-free image.

    Returns
    -------
    GroundTruthScan
        Truth: ``displacement_px`` is the imposed B shift (non-zero exactly at film B columns,
        norm in [2, 3] px); positions = ideal sites + displacement + static jitter
        (``jitter_px`` = 0.08). ``species`` equals ``sublattice``. ``extra["region"]`` (N,) int64
        (1 film, 0 substrate) and ``extra["variant"]`` (N,) int64 (+1, −1, 0) as above;
        ``params["cell_px"]`` is a, px.

    Raises
    ------
    ValueError
        ``size`` is not ``"ci"`` or ``"bench"``.
    TypeError
        An override names no parameter of the generator.
    """
    params = merge_params("displaced_perovskite", PEROVSKITE_DEFAULTS, size, seed, overrides)
    rng = component_streams(seed)
    shape = tuple(params["shape"])
    height, width = shape
    a = np.sqrt(2.0) * params["ab_distance_px"]
    radius = 5.0 * max(params["sigma_a_px"], params["sigma_b_px"]) * np.sqrt(params["ellipticity"])
    margin = radius + params["tail_sigma_px"] * 3
    # interface halfway between two A rows near film_fraction·H; lattice origin on an A site
    offset = rng(1).uniform(0.0, a, size=2)
    interface_a_row = round((params["film_fraction"] * height - offset[0]) / a)
    origin = np.array([offset[0], offset[1]])
    sites, labels, cells = bravais_sites(shape, (a, 0.0), (0.0, a), [(0.0, 0.0), (0.5, 0.5)], params["angle_deg"], margin, origin)
    film = cells[:, 0] < interface_a_row  # B in cell i sits between A rows i and i+1
    interface_row = float(origin[0] + (interface_a_row - 0.5) * a) if params["angle_deg"] == 0 else None
    stripe = np.floor(sites[:, 1] / params["domain_px"]).astype(np.int64)
    film_b = film & (labels == 1)
    variant = np.where(film_b, np.where(stripe % 2 == 0, 1, -1), 0)
    magnitude = np.clip(params["shift_px"] + rng(2).normal(0.0, params["shift_sd_px"], size=len(sites)), 2.0, 3.0)
    rotation = rotation_matrix(params["angle_deg"])
    direction = np.stack([-np.ones(len(sites)), -variant.astype(float)], axis=1) / np.sqrt(2.0) @ rotation.T
    displacement = np.where(film_b[:, None], magnitude[:, None] * direction, 0.0)
    positions = sites + displacement + rng(3).normal(0.0, params["jitter_px"], size=sites.shape)
    a_amp = np.where(film, params["a_film_ratio"], params["a_substrate_ratio"])
    # the cores on a canvas padded by 3 σ_tail, so that the probe tail of columns outside reaches in
    pad = int(np.ceil(3 * params["tail_sigma_px"]))
    canvas = (height + 2 * pad, width + 2 * pad)
    cores = np.zeros(canvas)
    for label, sigma, amps in ((0, params["sigma_a_px"], a_amp), (1, params["sigma_b_px"], np.full(len(sites), params["b_ratio"]))):
        pick = labels == label
        profile = elliptical_gaussian_profile(sigma, params["ellipticity"], params["astigmatism_deg"])
        cores += render_profile(canvas, positions[pick] + pad, amps[pick], profile, radius)[0]
    # probe tail: blend with a wide blur; the blurred peak of a σ core is σ²/(σ² + σ_t²)
    sigma_mean = 0.5 * (params["sigma_a_px"] + params["sigma_b_px"])
    tail_gain = (sigma_mean**2 + params["tail_sigma_px"] ** 2) / sigma_mean**2
    blurred = ndimage.gaussian_filter(cores, params["tail_sigma_px"], mode="constant", truncate=3.0)
    clean = ((1.0 - params["tail_fraction"]) * cores + params["tail_fraction"] * tail_gain * blurred)[pad : pad + height, pad : pad + width]
    gain = 1.0 + params["wedge"] * (np.arange(width) / max(width - 1, 1) - 0.5)
    clean = clean * gain[None, :] + params["background"]
    image = poisson_read(clean, params["dose"], params["read_noise"], rng(4)) if params["noise"] else clean
    params["cell_px"] = float(a)
    params["interface_row"] = interface_row
    params["species_names"] = ["A", "B"]
    params["displacement_direction"] = "cell diagonal, towards the upper-left (variant +1) or upper-right (variant -1) A neighbour"
    return ground_truth_scan(
        "displaced_perovskite",
        image,
        positions,
        labels,
        ("A", "B"),
        displacement,
        labels,
        np.zeros((0, 2)),
        False,
        params,
        extra={"region": film.astype(np.int64), "variant": variant.astype(np.int64)},
    )


# ----------------------------------------------------------------------------------------------
# 5. ABF perovskite (dark columns, oxygen visible)

ABF_DEFAULTS = {
    "common": {
        "angle_deg": 0.0,
        "depth_a": 0.30,
        "depth_b": 0.26,
        "depth_o": 0.12,
        "halo_sigma_factor": 1.7,
        "halo_weight": 0.3,
        "o_vacancy_fraction": 0.05,
        "tilt_px": 0.5,
        "jitter_px": 0.06,
        "dose": 400.0,
        "read_noise": 0.005,
        "background": 0.15,
    },
    "ci": {"shape": [256, 256], "cell_px": 16.0, "sigma_a_px": 1.5, "sigma_b_px": 1.4, "sigma_o_px": 1.2},
    "bench": {"shape": [1024, 1024], "cell_px": 19.5, "sigma_a_px": 1.8, "sigma_b_px": 1.7, "sigma_o_px": 1.45},
}


def abf_perovskite(seed: int = 0, size: str = "ci", **overrides) -> GroundTruthScan:
    """An annular-bright-field (ABF) image of a cubic ABO₃ perovskite along [001] with octahedral
    tilts: dark columns on a bright background (``invert`` is True).

    Geometry: square cell ``cell_px`` (16 / 19.5 px ≈ 3.9 Å at 0.24 / 0.2 Å per px), axis-aligned
    (``angle_deg`` = 0); A columns (sublattice 0) at the corners, B–O columns (sublattice 1) at the
    centres, pure O columns (sublattice 2) at the edge centres, A–B distance a/√2, B–O a/2.
    Oxygen: an a⁰a⁰c⁻ octahedral rotation moves every O column by ``tilt_px`` (0.5 px)
    perpendicular to its B–O–B bond, alternating in the checkerboard of the octahedra (recorded in
    ``displacement_px``: non-zero exactly at the O columns, norm ``tilt_px``);
    ``o_vacancy_fraction`` = 5 % of the O columns are missing (``vacancies``).
    Profile: a dark dip with a weak bright halo (``(−G(σ) + c·G(1.7σ))/(1 − c)``, c = 0.3; ring
    ≈ +8 % of the depth at 2.6 σ), σ 1.5 / 1.4 / 1.2 px (A / B / O) at ci; depths ``depth_a`` 0.30,
    ``depth_b`` 0.26, ``depth_o`` 0.12 of the background level.
    Background and noise: a bright level of 1 multiplied by a slow thickness surface (peak
    ``background`` = 0.15); Poisson noise with ``dose`` = 400 counts at the background level (so the
    noise is strongest on the background, not on the columns) plus read noise 0.005.

    Parameters
    ----------
    seed : int, default 0
        Seed of every random draw (one stream per component,
        :func:`~microvae.lattices.truth.component_streams`).
    size : {"ci", "bench"}, default "ci"
        The preset: 256 × 256 px (``"ci"``) or 1024 × 1024 px (``"bench"``).
    **overrides
        Replacements for any parameter of :data:`ABF_DEFAULTS`, or ``noise=False`` for the
        noise-free image.

    Returns
    -------
    GroundTruthScan
        Truth: ``species`` equals ``sublattice``; positions = ideal site + displacement + static
        jitter (``jitter_px`` = 0.06); ``invert`` is True.

    Raises
    ------
    ValueError
        ``size`` is not ``"ci"`` or ``"bench"``.
    TypeError
        An override names no parameter of the generator.
    """
    params = merge_params("abf_perovskite", ABF_DEFAULTS, size, seed, overrides)
    rng = component_streams(seed)
    shape = tuple(params["shape"])
    a = params["cell_px"]
    sigmas = (params["sigma_a_px"], params["sigma_b_px"], params["sigma_o_px"])
    radius = 4.0 * params["halo_sigma_factor"] * max(sigmas)
    origin = rng(1).uniform(0.0, a, size=2)
    motif = [(0.0, 0.0), (0.5, 0.5), (0.5, 0.0), (0.0, 0.5)]
    sites, motif_index, cells = bravais_sites(shape, (a, 0.0), (0.0, a), motif, params["angle_deg"], radius, origin)
    labels = np.minimum(motif_index, 2).astype(np.int64)
    # a0a0c- tilt: O at (i+1/2, j) moves along rows by s·δ with s = (−1)^(i+j−1) of the B to its left;
    # O at (i, j+1/2) moves along cols by −s·δ with s = (−1)^(i−1+j) of the B above it
    parity = np.where((cells[:, 0] + cells[:, 1]) % 2 == 0, -1.0, 1.0)
    local = np.zeros_like(sites)
    local[:, 0] = np.where(motif_index == 2, parity * params["tilt_px"], 0.0)
    local[:, 1] = np.where(motif_index == 3, -parity * params["tilt_px"], 0.0)
    rotation = rotation_matrix(params["angle_deg"])
    displacement = local @ rotation.T
    present = ~((labels == 2) & (rng(2).random(len(sites)) < params["o_vacancy_fraction"]))
    vacancies = sites[~present]
    sites, labels, displacement = sites[present], labels[present], displacement[present]
    positions = sites + displacement + rng(3).normal(0.0, params["jitter_px"], size=sites.shape)
    depths = (params["depth_a"], params["depth_b"], params["depth_o"])
    columns = np.zeros(shape)
    for label in range(3):
        pick = labels == label
        profile = dip_with_halo_profile(sigmas[label], params["halo_sigma_factor"] * sigmas[label], params["halo_weight"])
        columns += render_profile(shape, positions[pick], depths[label], profile, radius)[0]
    clean = (1.0 + slow_background(shape, params["background"], rng(4))) * (1.0 + columns)
    image = poisson_read(clean, params["dose"], params["read_noise"], rng(5)) if params["noise"] else clean
    params["species_names"] = ["A", "BO", "O"]
    return ground_truth_scan("abf_perovskite", image, positions, labels, ("A", "BO", "O"), displacement, labels, vacancies, True, params)
