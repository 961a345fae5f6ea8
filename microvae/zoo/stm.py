"""The zoo member ``stm_defects``: an STM topograph of a triangular lattice with point defects
and their √3×√3 interference, cut on a grid into FFT-magnitude patches.

Conventions: positions are (row, col) in pixels, pixel (r, c) centred on (r, c); the fast scan
runs along rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..patches import cut_patches, fft_magnitude, grid_centres
from .case import ZooCase, check_arguments, member_rng, normalise_set

__all__ = ["STM_DECAY_CELLS", "STM_R2_DECAYS", "STM_RIPPLE", "make_stm_defects"]

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
    patches, norm = normalise_set(fft_magnitude(raw))
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

    Parameters
    ----------
    seed : int
        Random seed, >= 0 (drawn from the member's own stream, :func:`~microvae.zoo.case.member_rng`).
    n : int, optional
        About this many patches (at least 8; the scan size and the number of defects follow);
        default the size's.
    size : {"bench", "ci"}, default "bench"
        The preset (see Sizes above).

    Returns
    -------
    ZooCase
        ``"stm_defects"``, K = 3, FFT patches, with ``scan`` and ``coords``; not rotated, not
        translated; ``extra`` as above, plus ``defect_distance_px``, ``ambiguous``,
        ``second_defects``, ``r1_px``, ``r2_px``, ``grid_step`` and the normalisation.

    Raises
    ------
    ParameterError
        ``seed`` < 0, ``n`` < 8 or an unknown ``size`` (:func:`~microvae.zoo.case.check_arguments`).
    """
    check_arguments(seed, size, n)
    p = _stm_params(size, n)
    scan, defects = _stm_scan(p, member_rng(seed, "stm_defects", 0))
    first = _stm_patches(p, scan, defects)
    second_scan, second_defects = _stm_scan(p, member_rng(seed, "stm_defects", 1))
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
