"""Zoo members cut from simulated crystal scans, one patch per atomic column: a perovskite film
on its substrate (``perovskite_film``), the project's two-phase lattice (``two_phase``) and a
honeycomb with dopants on its dim sublattice (``honeycomb_dopants``).

Conventions: positions are (row, col) in pixels, pixel (r, c) centred on (r, c); column widths
σ in pixels; each case keeps the raw (H, W) scan and the (N, 2) patch centres.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from ..patches import cut_patches, window_fits
from .case import ZooCase, check_arguments, member_rng, normalise_set

__all__ = ["make_honeycomb_dopants", "make_perovskite_film", "make_two_phase_case"]


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
    patches, norm = normalise_set(cut_patches(scan[None].astype(np.float32), centres, window, subpixel=True))
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

    Parameters
    ----------
    seed : int
        Random seed, >= 0 (drawn from the member's own stream, :func:`~microvae.zoo.case.member_rng`).
    n : int, optional
        About this many patches (at least 8; the scan size is set for it); default the size's.
    size : {"bench", "ci"}, default "bench"
        The preset (see Sizes above).

    Returns
    -------
    ZooCase
        ``"perovskite_film"``, K = 2, with ``scan`` and ``coords`` (the B sites whose window fits in the
        scan); not rotated, not translated, not FFT; ``extra`` as above plus the normalisation.

    Raises
    ------
    ParameterError
        ``seed`` < 0, ``n`` < 8 or an unknown ``size`` (:func:`~microvae.zoo.case.check_arguments`).
    """
    check_arguments(seed, size, n)
    spacing, window = (12.0, 28) if size == "bench" else (10.0, 20)
    n = int(n) if n is not None else (1600 if size == "bench" else 560)
    side = _side(n, window, 1.0 / spacing**2)
    rng = member_rng(seed, "perovskite_film")
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

    Parameters
    ----------
    seed : int
        Random seed, >= 0, passed to :func:`microvae.synthetic.make_two_phase_lattice`.
    n : int, optional
        About this many patches (at least 8; the scan size is set for it); default the size's.
    size : {"bench", "ci"}, default "bench"
        The preset (see Sizes above).

    Returns
    -------
    ZooCase
        ``"two_phase"``, K = 2, with ``scan`` and ``coords`` (the bright columns whose window fits in
        the scan); not rotated, not translated, not FFT; ``extra`` as above plus the normalisation.

    Raises
    ------
    ParameterError
        ``seed`` < 0, ``n`` < 8 or an unknown ``size`` (:func:`~microvae.zoo.case.check_arguments`).
    """
    from ..synthetic import make_two_phase_lattice

    check_arguments(seed, size, n)
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

    Parameters
    ----------
    seed : int
        Random seed, >= 0 (drawn from the member's own stream, :func:`~microvae.zoo.case.member_rng`).
    n : int, optional
        About this many patches (at least 8; the scan size is set for it); default the size's.
    size : {"bench", "ci"}, default "bench"
        The preset (see Sizes above).

    Returns
    -------
    ZooCase
        ``"honeycomb_dopants"``, K = 3, with ``scan`` and ``coords`` (the sites whose window fits in
        the scan); not rotated, not translated, not FFT; ``extra`` as above plus the normalisation.

    Raises
    ------
    ParameterError
        ``seed`` < 0, ``n`` < 8 or an unknown ``size`` (:func:`~microvae.zoo.case.check_arguments`).
    """
    check_arguments(seed, size, n)
    spacing, window = (12.0, 28) if size == "bench" else (10.0, 20)
    n = int(n) if n is not None else (1700 if size == "bench" else 680)
    per_px2 = 2.0 / (spacing**2 * np.sqrt(3) / 2)
    side = _side(n, window, per_px2)
    rng = member_rng(seed, "honeycomb_dopants")
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
