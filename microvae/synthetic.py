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
    "render_gaussians",
    "score_detection",
    "score_two_phase",
    "slow_background",
]

# Noise presets used by the tests and benchmarks: (dose in counts at a bright column's peak, read noise sd
# as a fraction of that peak).
SNR_PRESETS = {"high": (2000.0, 0.01), "medium": (100.0, 0.04), "low": (20.0, 0.10)}


@dataclass
class LatticeParams:
    """Parameters of :func:`make_lattice` (all lengths in pixels, angles in degrees)."""

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
        """Boolean mask (N,) of columns at least ``margin`` pixels inside the image."""
        height, width = self.params.shape
        rows, cols = self.positions[:, 0], self.positions[:, 1]
        return (rows >= margin) & (rows <= height - 1 - margin) & (cols >= margin) & (cols <= width - 1 - margin)

    def to_dict(self) -> dict:
        return asdict(self.params)


def lattice_sites(shape: tuple[int, int], spacing_px: float, angle_deg: float, second_sublattice: bool, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Ideal lattice sites covering the image plus ``margin`` pixels around it.

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
    """
    from .sublattices import render_columns

    return render_columns(shape, np.asarray(positions, dtype=np.float64), np.asarray(amplitudes, dtype=np.float64), sigma_px)


def slow_background(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth background: a random tilt plus one long-wavelength undulation, peak ``amplitude``."""
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
    LatticeImage
        Peak ≈ 1 above the background); shot noise is Poisson with ``dose`` counts at that peak.
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
    """Detection quality against ground truth: F1 at a match radius and subpixel RMSE of the matches."""

    f1: float
    precision: float
    recall: float
    rmse_px: float
    n_true: int
    n_found: int


def score_detection(true_positions: np.ndarray, found_positions: np.ndarray, radius: float = 3.0) -> DetectionScore:
    """F1 (matches within ``radius`` px, one-to-one), precision, recall and RMSE (px) of matched pairs."""
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
    coords : ndarray
        (N, 2) patch centres (row, col) in pixels; each is matched to its nearest column.
    classes, class_probs, z_mean
        (N,), (N, K), (N, D) as ``encode`` writes them.
    margin_px : float
        Only patches farther than this from the boundary column are scored.

    Returns: patches, median_match_px (centre to nearest true column), bright_only (every patch is
    on a bright column), region_accuracy (matched accuracy of the argmax class), class_confidence
    (mean max q(y|x)), and variant_corr_per_region (per region, the best |corr(z_k, variant)| of the
    nearest dim column's variant).
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
