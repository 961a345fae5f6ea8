"""Synthetic atomic-resolution images with ground truth, for tests, benchmarks and the sample data.

Like trackpy's ``artificial`` module, the ground truth ships with the code. :func:`make_lattice`
draws a projected perovskite-like crystal: a square lattice of bright columns (sublattice 0) with
dimmer columns (sublattice 1) at the cell centres, rotated by ``angle_deg``, with vacancies,
random subpixel displacements of every column, a slow background, Poisson shot noise and
Gaussian read noise. Columns are isotropic 2D Gaussians of width ``sigma_px``.

Positions are (row, col) in pixels; pixel (r, c) covers [r - 0.5, r + 0.5) × [c - 0.5, c + 0.5), so a
column at (10.0, 20.0) is centred on pixel (10, 20).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "SNR_PRESETS",
    "DetectionScore",
    "LatticeImage",
    "LatticeParams",
    "TwoPhaseImage",
    "lattice_sites",
    "make_lattice",
    "make_two_phase_lattice",
    "match_positions",
    "positions_inside",
    "render_gaussians",
    "score_detection",
    "score_two_phase",
    "slow_background",
]


def positions_inside(positions: np.ndarray, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """Which positions lie at least ``margin`` pixels inside an image.

    Parameters
    ----------
    positions : ndarray
        (N, 2) (row, col) in pixels; pixel (r, c) is centred at (r, c).
    shape : tuple of int
        (H, W) of the image.
    margin : float, default 0.0
        Distance from the outermost pixel centres, px.

    Returns
    -------
    ndarray
        (N,) bool.
    """
    height, width = shape[:2]
    rows, cols = positions[:, 0], positions[:, 1]
    return (rows >= margin) & (rows <= height - 1 - margin) & (cols >= margin) & (cols <= width - 1 - margin)


# Noise presets used by the tests and benchmarks: (dose in counts at a bright column's peak, read noise sd
# as a fraction of that peak).
SNR_PRESETS = {"high": (2000.0, 0.01), "medium": (100.0, 0.04), "low": (20.0, 0.10)}


@dataclass
class LatticeParams:
    """Parameters of :func:`make_lattice` (all lengths in pixels, angles in degrees).

    Attributes
    ----------
    shape : tuple of int, default (256, 256)
        (H, W) of the scan, px.
    spacing_px : float, default 12.0
        Lattice constant of the square lattice, px (the second sublattice sits at its cell centres).
    angle_deg : float, default 7.0
        Rotation of the lattice, degrees.
    sigma_px : float, default 1.6
        Gaussian width σ of every column, px.
    dim_ratio : float, default 0.45
        Peak of a dim (sublattice 1) column relative to a bright one.
    second_sublattice : bool, default True
        Add the dim sublattice.
    vacancy_fraction : float, default 0.03
        Fraction of sites left empty (drawn independently).
    jitter_px : float, default 0.3
        sd of the random displacement of each column per axis, px.
    dose : float, default 2000.0
        Poisson counts at a bright column's peak.
    read_noise : float, default 0.01
        sd of the added Gaussian read noise, as a fraction of that peak.
    background : float, default 0.3
        Peak of the slow background (:func:`slow_background`), same units.
    seed : int, default 0
        Seed of every random draw.
    """

    shape: tuple[int, int] = (256, 256)
    spacing_px: float = 12.0
    angle_deg: float = 7.0
    sigma_px: float = 1.6
    dim_ratio: float = 0.45
    second_sublattice: bool = True
    vacancy_fraction: float = 0.03
    jitter_px: float = 0.3
    dose: float = 2000.0
    read_noise: float = 0.01
    background: float = 0.3
    seed: int = 0


@dataclass
class LatticeImage:
    """A synthetic scan and its ground truth.

    Attributes
    ----------
    image : ndarray
        (H, W) float32 intensities (about 1.0 at a bright column plus background).
    positions : ndarray
        (N, 2) true (row, col) of every column present, inside or near the image.
    sublattice : ndarray
        (N,) 0 for bright columns, 1 for dim columns.
    vacancies : ndarray
        (M, 2) (row, col) of lattice sites left empty.
    params : LatticeParams
        The parameters that made it.
    """

    image: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    vacancies: np.ndarray
    params: LatticeParams = field(default_factory=LatticeParams)

    def inside(self, margin: float = 0.0) -> np.ndarray:
        """Boolean mask (N,) of columns at least ``margin`` pixels inside the image.

        Parameters
        ----------
        margin : float, default 0.0
            Distance from the outermost pixel centres, px.

        Returns
        -------
        ndarray
            (N,) bool.
        """
        return positions_inside(self.positions, self.params.shape, margin)

    def to_dict(self) -> dict:
        """The parameters that made the scan, as a plain dict.

        Returns
        -------
        dict
            The fields of ``params``.
        """
        return asdict(self.params)


def lattice_sites(shape: tuple[int, int], spacing_px: float, angle_deg: float, second_sublattice: bool, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Ideal lattice sites covering the image plus ``margin`` pixels around it.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image, px.
    spacing_px : float
        Lattice constant of the square lattice, px.
    angle_deg : float
        Rotation of the lattice about the image centre, degrees.
    second_sublattice : bool
        Add the sites at the cell centres (label 1).
    margin : float
        How far beyond the image the sites reach, px.

    Returns
    -------
    tuple[ndarray, ndarray]
        Positions (N, 2) as (row, col), and sublattice labels (N,).
    """
    height, width = shape
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    half_diagonal = 0.5 * np.hypot(height, width) + margin
    count = int(np.ceil(half_diagonal / spacing_px)) + 1
    steps = np.arange(-count, count + 1, dtype=np.float64)
    grid_a, grid_b = np.meshgrid(steps, steps, indexing="ij")
    base = np.stack([grid_a.ravel(), grid_b.ravel()], axis=1)
    offsets = [np.zeros(2)] + ([np.array([0.5, 0.5])] if second_sublattice else [])
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    positions, labels = [], []
    for label, offset in enumerate(offsets):
        points = (base + offset) * spacing_px @ rotation.T + centre
        positions.append(points)
        labels.append(np.full(len(points), label))
    positions = np.concatenate(positions)
    labels = np.concatenate(labels)
    keep = (positions[:, 0] > -margin) & (positions[:, 0] < height - 1 + margin) & (positions[:, 1] > -margin) & (positions[:, 1] < width - 1 + margin)
    return positions[keep], labels[keep]


def render_gaussians(shape: tuple[int, int], positions: np.ndarray, amplitudes: np.ndarray, sigma_px: float) -> np.ndarray:
    """Sum of isotropic Gaussians ``amplitude · exp(-d² / 2σ²)`` on an (H, W) pixel grid.

    Each Gaussian is evaluated in a (2R+1)² window, R = ceil(4σ), as the outer product of its row and
    column profiles, and accumulated with one ``bincount``: O(N R²), fast for 10⁵ columns
    (:func:`microvae.sublattices.render_columns`, which also takes one σ per column).

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the grid, px.
    positions : ndarray
        (N, 2) centres (row, col) in px.
    amplitudes : ndarray
        (N,) peak heights.
    sigma_px : float
        σ in px.

    Returns
    -------
    ndarray
        (H, W) image (as :func:`~microvae.sublattices.render_columns` returns it).
    """
    from .sublattices import render_columns

    return render_columns(shape, np.asarray(positions, dtype=np.float64), np.asarray(amplitudes, dtype=np.float64), sigma_px)


def slow_background(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth background: a random tilt plus one long-wavelength undulation, peak ``amplitude``.

    Parameters
    ----------
    shape : tuple of int
        (H, W) px.
    amplitude : float
        The background's maximum (its minimum is 0).
    rng : numpy.random.Generator
        Draws the tilt and the phase.

    Returns
    -------
    ndarray
        (H, W) float64 in [0, amplitude].
    """
    height, width = shape
    rows = np.linspace(0.0, 1.0, height)[:, None]
    cols = np.linspace(0.0, 1.0, width)[None, :]
    tilt_r, tilt_c = rng.uniform(-1, 1, size=2)
    phase = rng.uniform(0, 2 * np.pi)
    surface = 0.5 * (1 + tilt_r * (rows - 0.5) + tilt_c * (cols - 0.5)) + 0.25 * np.sin(2 * np.pi * (0.7 * rows + 0.4 * cols) + phase)
    surface -= surface.min()
    return amplitude * surface / max(surface.max(), 1e-12)


def make_lattice(params: LatticeParams | None = None, **overrides) -> LatticeImage:
    """Draw a synthetic two-sublattice scan with ground truth.

    Parameters
    ----------
    params : LatticeParams or None
        A :class:`LatticeParams`; keyword overrides replace its fields (``make_lattice(shape=(512,
        512), seed=3)``).

    Returns
    -------
    LatticeImage
        A :class:`LatticeImage`. Intensities are in units of a bright column's peak (noise-free
        peak ≈ 1 above the background); shot noise is Poisson with ``dose`` counts at that peak.
    """
    params = params or LatticeParams()
    if overrides:
        params = LatticeParams(**{**asdict(params), **overrides})
    params.shape = tuple(int(v) for v in params.shape)
    rng = np.random.default_rng(params.seed)
    margin = 4 * params.sigma_px + 2
    sites, labels = lattice_sites(params.shape, params.spacing_px, params.angle_deg, params.second_sublattice, margin)
    present = rng.random(len(sites)) >= params.vacancy_fraction
    jitter = rng.normal(0.0, params.jitter_px, size=sites.shape)
    positions = sites + jitter
    amplitudes = np.where(labels == 0, 1.0, params.dim_ratio)
    clean = render_gaussians(params.shape, positions[present], amplitudes[present], params.sigma_px)
    clean += slow_background(params.shape, params.background, rng)
    counts = rng.poisson(np.clip(clean, 0, None) * params.dose).astype(np.float64)
    noisy = counts / params.dose + rng.normal(0.0, params.read_noise, size=clean.shape)
    return LatticeImage(
        image=noisy.astype(np.float32),
        positions=positions[present],
        sublattice=labels[present],
        vacancies=sites[~present],
        params=params,
    )


def match_positions(true_positions: np.ndarray, found_positions: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of found to true positions within ``radius`` pixels (nearest first).

    Parameters
    ----------
    true_positions : ndarray
        (N, 2) (row, col) in px.
    found_positions : ndarray
        (M, 2) (row, col) in px.
    radius : float
        Largest matching distance, px (each true position considers its 4 nearest found ones).

    Returns
    -------
    tuple[ndarray, ndarray]
        Index pairs (true_index, found_index) of the matches, each of shape (M,).
    """
    from scipy.spatial import cKDTree

    if len(true_positions) == 0 or len(found_positions) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    tree = cKDTree(found_positions)
    distances, candidates = tree.query(true_positions, k=4, distance_upper_bound=radius)
    pairs = [(d, t, f) for t in range(len(true_positions)) for d, f in zip(distances[t], candidates[t]) if np.isfinite(d)]
    pairs.sort()
    used_true, used_found, true_index, found_index = set(), set(), [], []
    for _distance, t, f in pairs:
        if t in used_true or f in used_found:
            continue
        used_true.add(t)
        used_found.add(f)
        true_index.append(t)
        found_index.append(f)
    return np.array(true_index, dtype=int), np.array(found_index, dtype=int)


@dataclass
class DetectionScore:
    """Detection quality against ground truth: F1 at a match radius and subpixel RMSE of the matches.

    Attributes
    ----------
    f1 : float
        Harmonic mean of precision and recall.
    precision : float
        Matches / columns found.
    recall : float
        Matches / true columns.
    rmse_px : float
        Root-mean-square distance of the matched pairs, px (NaN without matches).
    n_true : int
        True columns.
    n_found : int
        Columns found.
    """

    f1: float
    precision: float
    recall: float
    rmse_px: float
    n_true: int
    n_found: int


def score_detection(true_positions: np.ndarray, found_positions: np.ndarray, radius: float = 3.0) -> DetectionScore:
    """F1 (matches within ``radius`` px, one-to-one), precision, recall and RMSE (px) of matched pairs.

    Parameters
    ----------
    true_positions : ndarray
        (N, 2) true (row, col) in px.
    found_positions : ndarray
        (M, 2) found (row, col) in px.
    radius : float, default 3.0
        Match radius, px (:func:`match_positions`).

    Returns
    -------
    DetectionScore
        The scores.
    """
    true_index, found_index = match_positions(true_positions, found_positions, radius)
    matched = len(true_index)
    precision = matched / max(len(found_positions), 1)
    recall = matched / max(len(true_positions), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    if matched:
        errors = true_positions[true_index] - found_positions[found_index]
        rmse = float(np.sqrt(np.mean(np.sum(errors**2, axis=1))))
    else:
        rmse = float("nan")
    return DetectionScore(f1=f1, precision=precision, recall=recall, rmse_px=rmse, n_true=len(true_positions), n_found=len(found_positions))


@dataclass
class TwoPhaseImage:
    """A two-region scan with displacement variants, and its ground truth per column.

    Attributes
    ----------
    image : ndarray
        (H, W) float32.
    positions : ndarray
        (N, 2) (row, col) of the columns present.
    sublattice : ndarray
        (N,) 0 bright, 1 dim.
    region : ndarray
        (N,) 0 left of the boundary, 1 right of it (the two phases differ in the dim columns'
        brightness).
    variant : ndarray
        (N,) +1 or −1: the direction along rows in which the dim column is displaced (horizontal
        stripe domains); 0 for bright columns.
    boundary_col : float
        Column of the vertical phase boundary (pixels).
    """

    image: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    region: np.ndarray
    variant: np.ndarray
    boundary_col: float


def make_two_phase_lattice(
    shape: tuple[int, int] = (256, 256),
    spacing_px: float = 14.0,
    sigma_px: float = 1.8,
    dim_ratios: tuple[float, float] = (0.2, 0.65),
    displacement_px: float = 1.5,
    domain_px: float = 64.0,
    jitter_px: float = 0.1,
    dose: float = 2000.0,
    read_noise: float = 0.01,
    background: float = 0.0,
    seed: int = 0,
) -> TwoPhaseImage:
    """Two phases side by side (dim columns at ``dim_ratios[0]`` left, ``[1]`` right of the middle),
    with the dim columns displaced by ±``displacement_px`` along rows in horizontal stripes of
    ``domain_px`` (a ferroelectric-like polarisation pattern, as in the paper's BFO film).

    The ground truth a joint VAE should recover: the region by its class, the variant by a
    continuous latent (``benchmarks/bench_two_phase.py`` measures it). ``background`` adds the slow
    intensity variation of :func:`slow_background`; it is 0 by default because it is itself a
    continuous factor of the patches, and with an amplitude of 0.2 the continuous latents took it
    instead of the variant (within-region |corr(z, variant)| ≈ 0.1–0.4 against ≈ 0.9 without it).

    Parameters
    ----------
    shape : tuple of int, default (256, 256)
        (H, W) px.
    spacing_px : float, default 14.0
        Lattice constant of the unrotated square lattice, px.
    sigma_px : float, default 1.8
        Column width σ, px.
    dim_ratios : tuple of float, default (0.2, 0.65)
        Dim column peak relative to a bright one, left and right of the boundary.
    displacement_px : float, default 1.5
        Displacement of the dim columns along rows, px.
    domain_px : float, default 64.0
        Height of each stripe domain, px.
    jitter_px : float, default 0.1
        sd of the random displacement per axis, px.
    dose : float, default 2000.0
        Poisson counts at a bright column's peak.
    read_noise : float, default 0.01
        sd of the Gaussian read noise, fraction of that peak.
    background : float, default 0.0
        Peak of the slow background.
    seed : int, default 0
        Seed of every random draw.

    Returns
    -------
    TwoPhaseImage
        The scan and its per-column truth (boundary at column (W − 1) / 2).
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    margin = 4 * sigma_px + 2
    sites, labels = lattice_sites(shape, spacing_px, 0.0, True, margin)
    boundary = (width - 1) / 2.0
    region = (sites[:, 1] >= boundary).astype(int)
    stripe = np.floor(sites[:, 0] / domain_px).astype(int)
    variant = np.where(labels == 1, np.where(stripe % 2 == 0, 1, -1), 0)
    positions = sites.copy()
    positions[:, 0] += variant * displacement_px
    positions += rng.normal(0.0, jitter_px, size=positions.shape)
    amplitudes = np.where(labels == 0, 1.0, np.where(region == 0, dim_ratios[0], dim_ratios[1]))
    clean = render_gaussians(shape, positions, amplitudes, sigma_px) + slow_background(shape, background, rng)
    counts = rng.poisson(np.clip(clean, 0, None) * dose).astype(np.float64)
    noisy = counts / dose + rng.normal(0.0, read_noise, size=clean.shape)
    return TwoPhaseImage(noisy.astype(np.float32), positions, labels, region, variant, boundary)


def score_two_phase(
    truth: TwoPhaseImage, coords: np.ndarray, classes: np.ndarray, class_probs: np.ndarray, z_mean: np.ndarray, margin_px: float = 20.0
) -> dict:
    """How well encoded patches of a two-phase lattice recover its regions and variants.

    Parameters
    ----------
    truth : TwoPhaseImage
        The scan's ground truth.
    coords : ndarray
        (N, 2) patch centres (row, col) in pixels; each is matched to its nearest column.
    classes, class_probs, z_mean
        (N,), (N, K), (N, D) as ``encode`` writes them.
    margin_px : float
        Only patches farther than this from the boundary column are scored.

    Returns
    -------
    dict
        patches, median_match_px (centre to nearest true column, px), bright_only (every patch is
        on a bright column), region_accuracy (matched accuracy of the argmax class, on the
        patches beyond the margin), class_confidence (mean max q(y|x)), and
        variant_corr_per_region (per region, the best |corr(z_k, variant)| of the nearest dim
        column's variant, rounded to 3 decimals).
    """
    from scipy.spatial import cKDTree  # scipy is imported only where it is used

    from .metrics import matched_accuracy

    distance, nearest = cKDTree(truth.positions).query(coords)
    region = truth.region[nearest]
    dim = np.flatnonzero(truth.sublattice == 1)
    variant = truth.variant[dim][cKDTree(truth.positions[dim]).query(coords)[1]]
    far = np.abs(coords[:, 1] - truth.boundary_col) > margin_px
    correlations = [
        max((abs(np.corrcoef(z_mean[m, k], variant[m])[0, 1]) for k in range(z_mean.shape[1])), default=0.0) for m in ((region == 0) & far, (region == 1) & far)
    ]
    return {
        "patches": int(len(coords)),
        "median_match_px": float(np.median(distance)),
        "bright_only": bool((truth.sublattice[nearest] == 0).all()),
        "region_accuracy": float(matched_accuracy(region[far], classes[far])),
        "class_confidence": float(class_probs.max(1).mean()),
        "variant_corr_per_region": [round(float(c), 3) for c in correlations],
    }
