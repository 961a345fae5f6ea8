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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from .synthetic import lattice_sites, slow_background

SIZES = ("ci", "bench")
ABTEM_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "abtem"


@dataclass
class GroundTruthScan:
    """A synthetic or simulated scan and its ground truth, one row per column present.

    Attributes:
        name: the generator's name.
        image: (H, W) float32 scan; columns are bright unless ``invert``.
        positions: (N, 2) float64 true (row, col) of every column present, in pixels; columns up to
            a profile radius outside the image are included (they shape its edges).
        sublattice: (N,) int64 index into ``sublattice_names``.
        sublattice_names: the sublattices' names, e.g. ("Mo", "S2") or ("A", "B").
        displacement_px: (N, 2) float64 (row, col) imposed displacement of each column from its
            ideal site, in pixels; zero where none is imposed (random static jitter is not in it).
        species: (N,) int64 chemical species or variant per column; equals ``sublattice`` where
            nothing is substituted. ``params["species_names"]`` names them.
        vacancies: (M, 2) float64 (row, col) of the sites left empty.
        invert: True when the columns are dark (ABF-like): find atoms with ``invert=True``.
        params: every parameter that made it (json-serialisable).
        extra: generator-specific arrays, documented by each generator (e.g. ``region`` and
            ``variant`` per column, ``row_shift_px`` per image row).
    """

    name: str
    image: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    sublattice_names: tuple[str, ...]
    displacement_px: np.ndarray
    species: np.ndarray
    vacancies: np.ndarray
    invert: bool
    params: dict
    extra: dict = field(default_factory=dict)

    def inside(self, margin: float = 0.0) -> np.ndarray:
        """Boolean mask (N,) of columns at least ``margin`` pixels inside the image."""
        height, width = self.image.shape
        rows, cols = self.positions[:, 0], self.positions[:, 1]
        return (rows >= margin) & (rows <= height - 1 - margin) & (cols >= margin) & (cols <= width - 1 - margin)


# ----------------------------------------------------------------------------------------------
# Geometry


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """Rotation of (row, col) vectors by ``angle_deg`` counter-clockwise on screen (rows grow
    downwards), as in :func:`synthetic.lattice_sites`: ``v_rotated = R @ v``."""
    angle = np.deg2rad(angle_deg)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def bravais_sites(shape: tuple[int, int], a1, a2, motif, angle_deg: float, margin: float, origin=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites of a 2D lattice with a motif, covering the image plus ``margin`` px around it.

    Args:
        a1, a2: lattice vectors as (row, col) in pixels, before the rotation.
        motif: fractional offsets (f1, f2) of the motif's sites; site label = index in ``motif``.
        angle_deg: rotation of the whole lattice (counter-clockwise on screen: rows grow downwards).
        origin: (row, col) of the lattice point (0, 0); default the image centre.

    Returns:
        positions (N, 2), labels (N,) and the integer cell indices (N, 2) of each site.
    """
    height, width = shape
    origin = np.array([(height - 1) / 2.0, (width - 1) / 2.0] if origin is None else origin, dtype=np.float64)
    basis = np.stack([np.asarray(a1, float), np.asarray(a2, float)]) @ rotation_matrix(angle_deg).T  # rows: rotated a1, a2
    corners = np.array([[-margin, -margin], [-margin, width - 1 + margin], [height - 1 + margin, -margin], [height - 1 + margin, width - 1 + margin]]) - origin
    fractional = corners @ np.linalg.inv(basis)
    low = np.floor(fractional.min(axis=0)).astype(int) - 1
    high = np.ceil(fractional.max(axis=0)).astype(int) + 1
    grid_1, grid_2 = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1), indexing="ij")
    cells = np.stack([grid_1.ravel(), grid_2.ravel()], axis=1)
    positions, labels, indices = [], [], []
    for label, offset in enumerate(motif):
        points = (cells + np.asarray(offset, float)) @ basis + origin
        positions.append(points)
        labels.append(np.full(len(points), label, dtype=np.int64))
        indices.append(cells)
    positions, labels, indices = np.concatenate(positions), np.concatenate(labels), np.concatenate(indices)
    keep = (positions[:, 0] > -margin) & (positions[:, 0] < height - 1 + margin) & (positions[:, 1] > -margin) & (positions[:, 1] < width - 1 + margin)
    return positions[keep], labels[keep], indices[keep]


# ----------------------------------------------------------------------------------------------
# Column profiles: f(dr, dc) with f(0, 0) = 1 (a dip: −1); dr, dc in pixels, broadcastable arrays


def moffat_profile(hwhm_px: float, beta: float) -> Callable:
    """``(1 + d²/α²)^−β`` with half width at half maximum ``hwhm_px`` (β = 1: a Lorentzian)."""
    alpha2 = hwhm_px**2 / (2.0 ** (1.0 / beta) - 1.0)

    def profile(dr, dc):
        base = 1.0 + (dr * dr + dc * dc) * (1.0 / alpha2)
        if beta == 2.0:
            inv = 1.0 / base
            return inv * inv
        return base ** (-beta)

    return profile


def two_gaussian_profile(sigma_px: float, tail_sigma_px: float, tail_fraction: float) -> Callable:
    """A narrow Gaussian core plus a broad probe tail: ``(1 − t)·G(σ) + t·G(σ_tail)``, peak 1."""
    a, b = -0.5 / sigma_px**2, -0.5 / tail_sigma_px**2

    def profile(dr, dc):
        d2 = dr * dr + dc * dc
        return (1.0 - tail_fraction) * np.exp(a * d2) + tail_fraction * np.exp(b * d2)

    return profile


def elliptical_gaussian_profile(sigma_px: float, ellipticity: float, axis_deg: float) -> Callable:
    """An elliptical Gaussian (two-fold astigmatism): σ·√e along ``axis_deg``, σ/√e across it."""
    theta = np.deg2rad(axis_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    a = -0.5 / (sigma_px**2 * ellipticity)
    b = -0.5 * ellipticity / sigma_px**2

    def profile(dr, dc):
        u = dc * cos - dr * sin
        v = dc * sin + dr * cos
        return np.exp(a * u * u + b * v * v)

    return profile


def airy_profile(sigma_equivalent_px: float) -> Callable:
    """The Airy pattern ``(2 J₁(x)/x)²`` of an aperture-limited probe, with rings; its FWHM equals
    that of a Gaussian of σ = ``sigma_equivalent_px`` (first dark ring at ≈ 2.79 σ). Evaluated by
    interpolation in d² from a fine table (J₁ is slow)."""
    k = 2 * 1.616340 / (2.3548200 * sigma_equivalent_px)
    d2_max = (12 * sigma_equivalent_px) ** 2
    d2_table = np.linspace(0.0, d2_max, 8192)
    x = k * np.sqrt(d2_table)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(x > 1e-8, (2 * special.j1(x) / np.where(x > 1e-8, x, 1.0)) ** 2, 1.0)

    def profile(dr, dc):
        return np.interp(dr * dr + dc * dc, d2_table, values, right=0.0)

    return profile


def dip_with_halo_profile(sigma_px: float, halo_sigma_px: float, halo_weight: float) -> Callable:
    """An ABF-like dark column: ``(−G(σ) + c·G(σ_halo)) / (1 − c)``, −1 at the centre with a weak
    bright ring (c = ``halo_weight`` < 1, σ_halo > σ)."""
    a, b = -0.5 / sigma_px**2, -0.5 / halo_sigma_px**2
    scale = 1.0 / (1.0 - halo_weight)

    def profile(dr, dc):
        d2 = dr * dr + dc * dc
        return scale * (halo_weight * np.exp(b * d2) - np.exp(a * d2))

    return profile


def render_profile(
    shape: tuple[int, int],
    positions: np.ndarray,
    amplitudes: np.ndarray,
    profile: Callable,
    radius: float,
    row_shift: np.ndarray | None = None,
    max_values: int = 1_500_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``amplitude · profile(r − r_k, c − c_k − row_shift[r])`` on an (H, W) grid.

    Each column is evaluated in a (2R+1)² window (R = ceil(radius)) with numpy broadcasting, in
    chunks of at most ``max_values`` window values, and accumulated with one ``bincount`` per chunk.
    ``row_shift`` (H,) shifts every image row horizontally (scan line jitter: the recorded row r
    shows the object at column c − row_shift[r]); rows of a window outside the image take the
    nearest edge row's shift.

    Returns:
        the (H, W) float64 image, and (N,) the horizontal shift of each column's intensity centroid
        (the row-marginal-weighted mean of the shifts over the column's window; zeros without
        ``row_shift``).
    """
    height, width = shape
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    amplitudes = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), (len(positions),))
    half = int(np.ceil(radius))
    offsets = np.arange(-half, half + 1)
    size = len(offsets)
    image = np.zeros(height * width)
    centroid_shift = np.zeros(len(positions))
    per_chunk = max(1, max_values // (size * size))
    for start in range(0, len(positions), per_chunk):
        pos = positions[start : start + per_chunk]
        amp = amplitudes[start : start + per_chunk]
        centre_rows = np.round(pos[:, 0]).astype(np.int64)
        centre_cols = pos[:, 1]
        if row_shift is not None:  # the window follows the shift of the column's centre row
            centre_cols = centre_cols + row_shift[np.clip(centre_rows, 0, height - 1)]
        rows = centre_rows[:, None] + offsets  # (n, w)
        cols = np.round(centre_cols).astype(np.int64)[:, None] + offsets
        dr = (rows - pos[:, :1])[:, :, None]
        dc = (cols - pos[:, 1:])[:, None, :]
        if row_shift is not None:
            shifts = row_shift[np.clip(rows, 0, height - 1)]  # (n, w)
            dc = dc - shifts[:, :, None]
        values = profile(dr, dc)  # (n, w, w)
        if row_shift is not None:
            marginal = np.abs(values).sum(axis=2)
            centroid_shift[start : start + len(pos)] = (marginal * shifts).sum(axis=1) / np.maximum(marginal.sum(axis=1), 1e-300)
        values = values * amp[:, None, None]
        row_ok = (rows >= 0) & (rows < height)
        col_ok = (cols >= 0) & (cols < width)
        valid = row_ok[:, :, None] & col_ok[:, None, :]
        flat = rows[:, :, None] * width + cols[:, None, :]
        image += np.bincount(flat[valid], weights=values[valid], minlength=height * width)
    return image.reshape(height, width), centroid_shift


# ----------------------------------------------------------------------------------------------
# Noise and backgrounds


def correlated_noise(shape: tuple[int, int], sd: float, correlation_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise smoothed by a Gaussian of ``correlation_px`` and rescaled to ``sd``."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), correlation_px, mode="wrap")
    return sd * field_ / max(float(field_.std()), 1e-12)


def poisson_read(clean: np.ndarray, dose: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise (Poisson with ``dose`` counts per unit intensity) plus Gaussian read noise (sd in
    units of intensity)."""
    counts = rng.poisson(np.clip(clean, 0.0, None) * dose).astype(np.float64)
    return counts / dose + rng.normal(0.0, read_noise, size=clean.shape)


# ----------------------------------------------------------------------------------------------
# Parameters


def _merge(name: str, defaults: dict[str, dict], size: str, seed: int, overrides: dict) -> dict:
    if size not in SIZES:
        raise ValueError(f"{name}: size must be one of {SIZES}, got {size!r}")
    params = dict(defaults["common"])
    params.update(defaults[size])
    params["noise"] = True
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise TypeError(f"{name}: unknown parameter(s) {unknown}; known: {sorted(params)}")
    params.update(overrides)
    params = json.loads(json.dumps(params, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    params["shape"] = [int(v) for v in params["shape"]]
    params.update(generator=name, seed=int(seed), size=size)
    return params


def _near_image(positions: np.ndarray, shape, margin: float) -> np.ndarray:
    height, width = shape
    return (positions[:, 0] > -margin) & (positions[:, 0] < height - 1 + margin) & (positions[:, 1] > -margin) & (positions[:, 1] < width - 1 + margin)


def _streams(seed: int):
    """Independent random streams per component: ``rng(k)``."""
    return lambda k: np.random.default_rng([int(seed), int(k)])


def _scan(name, image, positions, sublattice, names, displacement, species, vacancies, invert, params, extra=None) -> GroundTruthScan:
    order = np.lexsort((positions[:, 1], positions[:, 0]))
    per_column = {
        key: np.asarray(value)[order] for key, value in (extra or {}).items() if np.ndim(value) and len(value) == len(positions) and key != "row_shift_px"
    }
    others = {key: np.asarray(value) for key, value in (extra or {}).items() if key not in per_column}
    return GroundTruthScan(
        name=name,
        image=np.asarray(image, dtype=np.float32),
        positions=np.asarray(positions, dtype=np.float64)[order],
        sublattice=np.asarray(sublattice, dtype=np.int64)[order],
        sublattice_names=tuple(names),
        displacement_px=np.asarray(displacement, dtype=np.float64)[order],
        species=np.asarray(species, dtype=np.int64)[order],
        vacancies=np.asarray(vacancies, dtype=np.float64).reshape(-1, 2),
        invert=bool(invert),
        params=params,
        extra={**per_column, **others},
    )


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

    Truth: ``species`` 0 = Mo, 1 = S2, 2 = SSe (``params["species_names"]``); ``displacement_px`` is
    zero (positions = ideal sites + normal static jitter of sd ``jitter_px`` = 0.12 px).
    """
    params = _merge("honeycomb", HONEYCOMB_DEFAULTS, size, seed, overrides)
    rng = _streams(seed)
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
    return _scan("honeycomb", image, positions, labels, ("Mo", "S2"), np.zeros_like(positions), species, sites[vacant], False, params)


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

    Truth: ``displacement_px`` is the imposed B shift (non-zero exactly at film B columns, norm in
    [2, 3] px); positions = ideal sites + displacement + static jitter (``jitter_px`` = 0.08).
    ``species`` equals ``sublattice``.
    """
    params = _merge("displaced_perovskite", PEROVSKITE_DEFAULTS, size, seed, overrides)
    rng = _streams(seed)
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
    return _scan(
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

    Truth: no vacancies; ``displacement_px`` zero; ``species`` equals ``sublattice``; positions =
    ideal sites + static jitter (``jitter_px`` = 0.08).
    """
    params = _merge("dumbbells", DUMBBELL_DEFAULTS, size, seed, overrides)
    rng = _streams(seed)
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
    return _scan("dumbbells", image, positions, labels, ("heavy", "light"), np.zeros_like(positions), labels, np.zeros((0, 2)), False, params)


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

    Truth: positions are where the columns appear in the distorted image: the row is stretched,
    the column is moved by the centroid of the row shifts over the column's rows (weighted by the
    profile's row marginal: the shift of its intensity centroid). ``vacancies`` are the empty
    sites as they would appear (stretched, shifted by their nearest row's shift). ``displacement_px`` is this
    scan-induced displacement (non-zero for every column); positions = ideal site + displacement +
    static jitter (``jitter_px`` = 0.05).
    """
    params = _merge("scan_distorted", SCAN_DEFAULTS, size, seed, overrides)
    rng = _streams(seed)
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
    return _scan("scan_distorted", image, positions, labels, ("A", "B"), displacement, labels, vacancies, False, params, extra={"row_shift_px": row_shift})


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

    Truth: ``species`` equals ``sublattice``; positions = ideal site + displacement + static jitter
    (``jitter_px`` = 0.06).
    """
    params = _merge("abf_perovskite", ABF_DEFAULTS, size, seed, overrides)
    rng = _streams(seed)
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
    return _scan("abf_perovskite", image, positions, labels, ("A", "BO", "O"), displacement, labels, vacancies, True, params)


# ----------------------------------------------------------------------------------------------
# Cached multislice simulations (benchmarks/simulate_abtem.py)


def abtem_files(directory: Path | None = None) -> dict[str, Path]:
    """``{generator name: npz path}`` of the cached abTEM simulations that exist."""
    directory = ABTEM_DIR if directory is None else Path(directory)
    if not directory.is_dir():
        return {}
    return {f"abtem_{path.stem}": path for path in sorted(directory.glob("*.npz"))}


def load_abtem(name: str, seed: int | None = None, dose: float | None = None, directory: Path | None = None) -> GroundTruthScan:
    """A cached abTEM multislice simulation as a :class:`GroundTruthScan`.

    Args:
        name: ``"abtem_mos2"`` or ``"mos2"`` (the file ``benchmarks/data/abtem/mos2.npz``), etc.
        seed, dose: with a ``dose`` (counts per unit of the image's mean), Poisson noise is drawn
            with ``seed``; without, the noise-free simulated image is returned.

    Raises:
        FileNotFoundError: the simulation is not cached (run ``benchmarks/simulate_abtem.py``).
    """
    directory = ABTEM_DIR if directory is None else Path(directory)
    stem = name[len("abtem_") :] if name.startswith("abtem_") else name
    path = directory / f"{stem}.npz"
    if not path.is_file():
        available = sorted(abtem_files(directory))
        raise FileNotFoundError(
            f"no cached abTEM simulation {str(path)!r} (available: {available or 'none'}); "
            "regenerate with benchmarks/simulate_abtem.py (see benchmarks/data/abtem/README.md)"
        )
    with np.load(path, allow_pickle=False) as data:
        params = json.loads(str(data["params_json"]))
        image = data["image"].astype(np.float64)
        positions = data["positions"].astype(np.float64)
        sublattice = data["sublattice"].astype(np.int64)
        names = tuple(str(v) for v in data["sublattice_names"])
        displacement = data["displacement_px"].astype(np.float64)
        species = data["species"].astype(np.int64)
        vacancies = data["vacancies"].astype(np.float64).reshape(-1, 2)
        invert = bool(data["invert"])
    params = {**params, "generator": f"abtem_{stem}", "file": path.name}
    if dose is not None:
        mean = max(float(image.mean()), 1e-12)
        rng = np.random.default_rng([int(seed or 0), 0])
        image = rng.poisson(np.clip(image, 0, None) / mean * dose) * mean / dose
        params.update(seed=int(seed or 0), dose=float(dose))
    return GroundTruthScan(f"abtem_{stem}", image.astype(np.float32), positions, sublattice, names, displacement, species, vacancies, invert, params)


def _abtem_generator(name: str) -> Callable[..., GroundTruthScan]:
    def generate(seed: int = 0, size: str = "ci", dose: float | None = None) -> GroundTruthScan:
        if size not in SIZES:
            raise ValueError(f"{name}: size must be one of {SIZES}, got {size!r}")
        return load_abtem(name, seed=seed, dose=dose)

    generate.__name__ = name
    generate.__doc__ = (
        f"The cached abTEM simulation {name!r} (:func:`load_abtem`); ``size`` is accepted but the image is "
        "the simulated one; ``dose`` adds Poisson noise drawn with ``seed``."
    )
    return generate


GENERATORS: dict[str, Callable[..., GroundTruthScan]] = {
    "honeycomb": honeycomb,
    "displaced_perovskite": displaced_perovskite,
    "dumbbells": dumbbells,
    "scan_distorted": scan_distorted,
    "abf_perovskite": abf_perovskite,
}
for _name in abtem_files():
    GENERATORS[_name] = _abtem_generator(_name)
