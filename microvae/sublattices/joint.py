"""The joint refinement: each column refitted against the image minus its neighbours' models
(:func:`refine_jointly`), with one elliptical shape per sublattice (:func:`sublattice_shapes`),
and the batched Levenberg–Marquardt fits they use.

Conventions (those of :mod:`microvae.sublattices`): (H, W) float images scaled as
:func:`microvae.atoms.prepare_image` scales them, positions (row, col) in pixels with pixel
(r, c) centred at (r, c), widths σ in pixels, covariances [c_rr, c_rc, c_cc] in px².
"""

from __future__ import annotations

import warnings

import numpy as np

from .models import PROFILE_RADIUS, PROFILE_STEP, RadialProfiles, equivalent_sigma, nearest_columns, neighbours_at, precision

__all__ = [
    "JOINT_ROUNDS",
    "NEIGHBOUR_CLEARANCE",
    "NEIGHBOUR_SHARE",
    "PROFILE_CLEARANCE",
    "PROFILE_GAUSSIAN_TOLERANCE",
    "PROFILE_MIN_COLUMNS",
    "SHAPE_SAMPLE",
    "WIDTH_RADIUS",
    "joint_fit_radius",
    "refine_jointly",
    "sublattice_profiles",
    "sublattice_shapes",
]


def _fit_fixed_shape(
    data: np.ndarray,
    row_offsets: np.ndarray,
    col_offsets: np.ndarray,
    initial: np.ndarray,
    covariance: np.ndarray,
    iterations: int,
    tolerance: float = 1e-4,
    inside: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched LM fit of ``A·exp(−½ dᵀPd) + b₀`` (d = pixel − centre, P = C⁻¹) with the covariance C
    (3,) [c_rr, c_rc, c_cc] fixed, to ``data`` (P, N), the pixels at (``row_offsets``,
    ``col_offsets``) from each window centre; ``initial`` (N, 2) centre offsets. The elliptical
    counterpart of :func:`microvae.atoms.refine.fit_fixed_width`, built the same way: the Jacobian
    columns are e, A·e·(Pd)_r, A·e·(Pd)_c, 1, so every entry of JᵀJ and Jᵀr is a moment of e², e or
    r·e against 1, y, x, y², x², xy (float32 pixels, float64 4 × 4 systems). ``inside`` (P, N) bool:
    the pixels on the image (a column at the scan's edge is fitted to the part of its window that
    was recorded, not to repeated edge pixels); default all.

    Returns parameters (N, 4) float64 [A, r₀, c₀, b₀] and ok (N,): finite, positive amplitude,
    centre inside the window.
    """
    from ..atoms.refine import levenberg_marquardt

    data = np.asarray(data, dtype=np.float32)
    low, high = data.min(axis=0), data.max(axis=0)  # the start
    masked = inside is not None and not inside.all()
    if masked:
        data = np.where(inside, data, np.float32(np.nan))  # NaN marks them (the fit drops finished columns as it goes)
    pixels = data.shape[0]
    y = row_offsets.astype(np.float32)[:, None]
    x = col_offsets.astype(np.float32)[:, None]
    basis = np.concatenate([np.ones_like(y), y, x, y * y, x * x, x * y], axis=1)  # (P, 6)
    p_rr, p_rc, p_cc = precision(np.asarray(covariance, dtype=np.float64))
    params = np.stack([high - low, initial[:, 0], initial[:, 1], low], axis=0).astype(np.float64)

    def evaluate(p, values):
        amp, r0, c0, b0 = (p[i].astype(np.float32)[None, :] for i in range(4))
        dy, dx = y - r0, x - c0
        gauss = np.exp(np.float32(-0.5 * p_rr) * dy * dy - np.float32(p_rc) * dy * dx + np.float32(-0.5 * p_cc) * dx * dx)
        residual = values - b0
        residual -= amp * gauss
        count = pixels
        if masked:  # pixels off the image count for nothing
            on_image = values == values
            gauss, residual = gauss * on_image, np.where(on_image, residual, np.float32(0))
            count = on_image.sum(axis=0, dtype=np.float64)
        return (gauss, residual, count), (residual * residual).sum(axis=0, dtype=np.float64)

    def normal_equations(p, state):
        gauss, residual, count = state
        amp, r0, c0 = p[0], p[1], p[2]
        w = np.einsum("pn,pk->kn", gauss * gauss, basis).astype(np.float64)  # Σe²·[1, y, x, y², x², xy]
        e = np.einsum("pn,pk->kn", gauss, basis[:, :3]).astype(np.float64)  # Σe·[1, y, x]
        r = np.einsum("pn,pk->kn", residual * gauss, basis[:, :3]).astype(np.float64)  # Σr·e·[1, y, x]
        # centred moments of e² (d = pixel − centre), then of e and r·e to first order
        s10, s01 = w[1] - r0 * w[0], w[2] - c0 * w[0]
        s20 = w[3] - 2 * r0 * w[1] + r0 * r0 * w[0]
        s02 = w[4] - 2 * c0 * w[2] + c0 * c0 * w[0]
        s11 = w[5] - r0 * w[2] - c0 * w[1] + r0 * c0 * w[0]
        e10, e01 = e[1] - r0 * e[0], e[2] - c0 * e[0]
        r10, r01 = r[1] - r0 * r[0], r[2] - c0 * r[0]
        matrix = np.stack(
            [
                w[0],
                amp * (p_rr * s10 + p_rc * s01),
                amp * (p_rc * s10 + p_cc * s01),
                e[0],
                amp * amp * (p_rr * p_rr * s20 + 2 * p_rr * p_rc * s11 + p_rc * p_rc * s02),
                amp * amp * (p_rr * p_rc * s20 + (p_rr * p_cc + p_rc * p_rc) * s11 + p_rc * p_cc * s02),
                amp * (p_rr * e10 + p_rc * e01),
                amp * amp * (p_rc * p_rc * s20 + 2 * p_rc * p_cc * s11 + p_cc * p_cc * s02),
                amp * (p_rc * e10 + p_cc * e01),
                0 * amp + count,
            ],
            axis=0,
        )
        gradient = np.stack([r[0], amp * (p_rr * r10 + p_rc * r01), amp * (p_rc * r10 + p_cc * r01), residual.sum(axis=0, dtype=np.float64)], axis=0)
        return matrix, gradient

    params = levenberg_marquardt(params, data, evaluate, normal_equations, iterations, tolerance)
    reach = int(max(np.abs(row_offsets).max(), np.abs(col_offsets).max()))
    inside = (np.abs(params[1]) <= reach) & (np.abs(params[2]) <= reach)
    return params.T, inside & (params[0] > 0) & np.isfinite(params).all(axis=0)


def _fit_shared_shape(
    mean_window: np.ndarray, row_offsets: np.ndarray, col_offsets: np.ndarray, offsets: np.ndarray, weights: np.ndarray, sigma_px: float, iterations: int = 30
) -> tuple[np.ndarray, bool]:
    """The one elliptical Gaussian that a set of columns share, from the mean of their windows.

    Each window is read around its column's nearest pixel, so column i sits at ``offsets`` (n, 2)
    from its window's centre; the model of the mean window (P,) is the mean of the columns'
    models, ``A · mean_i[w_i · exp(−½ (x − o_i − δ)ᵀ P (x − o_i − δ))] + b₀`` with ``weights`` w_i
    (n,) each column's height over the mean height. Fitting the mean (not each noisy window) keeps
    the width unbiased at low dose, and needs no interpolation to align the windows.

    Returns [A, δ_r, δ_c, p_rr, p_rc, p_cc, b₀] (7,) and ok: finite, positive amplitude, P positive
    definite with an equivalent width between 0.25σ and 4σ + 1 and axes less than 3 : 1.
    """
    from ..atoms.refine import levenberg_marquardt

    y = row_offsets.astype(np.float64)[:, None] - offsets[:, 0][None, :]  # (P, n) pixel − column
    x = col_offsets.astype(np.float64)[:, None] - offsets[:, 1][None, :]
    w = (weights / weights.sum())[None, :]
    values = np.asarray(mean_window, dtype=np.float64)[:, None]
    inverse = 1.0 / sigma_px**2
    params = np.array([[values.max() - values.min()], [0.0], [0.0], [inverse], [0.0], [inverse], [values.min()]])
    pairs = [(i, j) for i in range(7) for j in range(i, 7)]

    def evaluate(p, values):
        amp, dr, dc, p_rr, p_rc, p_cc, b0 = (float(p[i, 0]) for i in range(7))
        dy, dx = y - dr, x - dc
        grad_r, grad_c = p_rr * dy + p_rc * dx, p_rc * dy + p_cc * dx
        gauss = w * np.exp(-0.5 * (dy * grad_r + dx * grad_c))  # (P, n)
        mean = gauss.sum(axis=1)
        residual = values[:, 0] - amp * mean - b0
        jacobian = (
            mean,
            amp * (gauss * grad_r).sum(axis=1),
            amp * (gauss * grad_c).sum(axis=1),
            -0.5 * amp * (gauss * dy * dy).sum(axis=1),
            -amp * (gauss * dy * dx).sum(axis=1),
            -0.5 * amp * (gauss * dx * dx).sum(axis=1),
            np.ones_like(mean),
        )
        return (np.stack(jacobian, axis=0), residual), np.array([residual @ residual])

    def normal_equations(p, state):
        jacobian, residual = state
        full = jacobian @ jacobian.T
        return np.array([[full[i, j]] for i, j in pairs]), (jacobian @ residual)[:, None]

    def project(trial):  # keep P positive definite
        trial[3], trial[5] = np.abs(trial[3]), np.abs(trial[5])
        limit = 0.95 * np.sqrt(trial[3] * trial[5])
        trial[4] = np.clip(trial[4], -limit, limit)
        return trial

    params = levenberg_marquardt(params, values, evaluate, normal_equations, iterations, tolerance=1e-6, project=project)[:, 0]
    trace, det = params[3] + params[5], params[3] * params[5] - params[4] ** 2
    if not (np.isfinite(params).all() and params[0] > 0 and det > 0):
        return params, False
    root = np.sqrt(max(trace**2 / 4 - det, 0.0))
    ratio = np.sqrt((trace / 2 + root) / max(trace / 2 - root, 1e-12))
    width = det**-0.25
    return params, bool((0.25 * sigma_px < width < 4 * sigma_px + 1) and ratio < 3)


SHAPE_SAMPLE = 16384  # the most columns of a sublattice whose windows are averaged for its shape (every column of a 1024² scan)
WIDTH_RADIUS = 1.5  # free-width fits of the widths use a disk of this many σ (≥ 2 px): the core, where neighbours subtracted with a wrong width matter least
JOINT_ROUNDS = 4  # rounds of subtract-the-neighbours-and-refit
NEIGHBOUR_SHARE = 0.1  # a neighbour counts when its model, over the column's height, exceeds this at the fit disk's edge


PROFILE_CLEARANCE = 2.0  # a column's profile is read where its own model is at least this many times its neighbours'
PROFILE_GAUSSIAN_TOLERANCE = 0.05  # a measured profile this close to the Gaussian everywhere (fraction of the peak) is taken as the Gaussian
PROFILE_MIN_COLUMNS = 30  # a sublattice with fewer columns keeps the Gaussian (its profile would be read from too few pixels)
NEIGHBOUR_CLEARANCE = 1.5  # σ: the joint fit's disk stops this far short of the nearest neighbour's centre


def joint_fit_radius(sigma_px: float, spacing_px: float) -> float:
    """Radius of the disk of pixels that :func:`refine_jointly` fits: 2.5σ, at most
    ``spacing_px`` − ``NEIGHBOUR_CLEARANCE``·σ, at least the lone fit's
    (:func:`microvae.atoms.refine.fit_disk_radius`).

    The lone fit stops at 0.45 × the spacing so that neighbours stay out of its window; with the
    neighbours' models taken away, the window may take in the column's own flanks, where most of
    the information on its position lies, up to 1.5σ short of the nearest neighbour's centre. On
    the displaced perovskite at its default dose (``bench_crlb_perovskite.py``) this brings the
    RMSE of every sublattice from 1.3–1.45× to 1.1–1.25× the Cramér–Rao bound.

    Parameters
    ----------
    sigma_px : float
        The column's width σ, px.
    spacing_px : float
        Nearest-neighbour distance of the lattice, px.

    Returns
    -------
    float
        The radius, px.
    """
    from ..atoms.refine import fit_disk_radius

    return float(max(fit_disk_radius(sigma_px, spacing_px), min(2.5 * sigma_px, spacing_px - NEIGHBOUR_CLEARANCE * sigma_px)))


def refine_jointly(
    image: np.ndarray,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    sigma_px: np.ndarray,
    spacing_px: float,
    rounds: int = JOINT_ROUNDS,
    iterations: int = 12,
    must: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
    covariance: np.ndarray | None = None,
    profiles: RadialProfiles | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit columns whose neighbours reach into their fit window, each against the image minus
    every other column's fitted model, until the positions settle.

    A column fitted alone next to a brighter neighbour is pulled towards it: the neighbour's flank
    inside the window looks like the column's own. Here all columns are rendered from their current
    fits (:func:`render_columns`), and each affected column is refitted (Gaussian of its fixed
    width plus a flat background, the fit of :func:`microvae.atoms.refine_gaussian`) to the residual
    plus its own model, so that only its neighbours are taken away, on the disk of
    :func:`joint_fit_radius`. ``rounds`` rounds, stopping
    early when no column moves by more than 0.01 px. Only columns that a neighbour reaches are
    refitted: a neighbour's Gaussian, scaled by its height over the column's own, exceeds
    ``NEIGHBOUR_SHARE`` at the edge of the column's lone fit disk, and the neighbour that does so
    (its own fit saw the pulled column's flank; the usual well-separated lattice costs little); ``must`` (N,) bool marks columns refitted in any case (new ones).
    ``neighbours`` (N, K): each column's nearest other columns, nearest first, when already known
    (:func:`nearest_columns`); they stay the same while the columns settle. ``covariance`` (N, 3)
    [c_rr, c_rc, c_cc] px²: elliptical columns (astigmatic probe), fitted and subtracted with their
    shape fixed (:func:`_fit_fixed_shape`); ``sigma_px`` then only sets the fit disks.
    ``profiles``: the neighbours are taken away as their measured profiles
    (:func:`sublattice_profiles`), not as Gaussians; each column is still fitted as a Gaussian on
    its core, which places a symmetric column's centre without bias once its neighbours are gone.

    Parameters
    ----------
    image : ndarray
        (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
    positions : ndarray
        (N, 2) (row, col) px from a first fit.
    amplitudes : ndarray
        (N,) heights above the local background.
    sigma_px : ndarray
        (N,) fixed widths σ, px (columns sharing a width are fitted together).
    spacing_px : float
        Nearest-neighbour distance of the whole lattice, px (sets the fit radius).
    rounds : int, default JOINT_ROUNDS
        The most rounds of subtract-the-neighbours-and-refit.
    iterations : int, default 12
        Iterations of each column's fit.
    must : ndarray, optional
        (N,) bool: columns refitted in any case (new ones).
    neighbours : ndarray, optional
        (N, K) each column's nearest other columns, nearest first (:func:`nearest_columns`).
    covariance : ndarray, optional
        (N, 3) [c_rr, c_rc, c_cc] px² of elliptical columns, fitted with their shape fixed.
    profiles : RadialProfiles, optional
        Measured profiles of the columns, for their models as neighbours (default: Gaussian).

    Returns
    -------
    positions : ndarray
        (N, 2) float64 (row, col), px.
    amplitudes : ndarray
        (N,) float64 heights.
    moved : ndarray
        (N,) bool: which columns were refitted.
    """
    from ..atoms.peaks import disk_offsets, gather
    from ..atoms.refine import fit_disk_radius, fit_fixed_width

    positions = np.array(positions, dtype=np.float64)
    amplitudes = np.array(amplitudes, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma_px, dtype=np.float64), (len(positions),)).copy()
    refitted = np.zeros(len(positions), bool)
    if len(positions) < 2:
        return positions, amplitudes, refitted
    widths, width_index = np.unique(sigma, return_inverse=True)
    radius_of = {s: joint_fit_radius(s, spacing_px) for s in widths}
    fit_radius = np.array([fit_disk_radius(s, spacing_px) for s in widths])[width_index]  # the lone fit's disk: whom a neighbour pulled there
    neighbour = nearest_columns(positions) if neighbours is None else neighbours
    closest = neighbour[:, :4]  # the nearest four decide who is reached
    distance = np.hypot(*(positions[closest] - positions[:, None, :]).transpose(2, 0, 1))
    gap = np.clip(distance - fit_radius[:, None], 0, None)
    reach = amplitudes[closest] / np.clip(amplitudes, 1e-6, None)[:, None] * np.exp(-(gap**2) / (2 * sigma[closest] ** 2))
    pulled = reach > NEIGHBOUR_SHARE
    affected = pulled.any(axis=1)
    affected[closest[pulled]] = True  # and the neighbour that pulled: its own fit saw the pulled column's flank
    if must is not None:
        affected |= must
    if not affected.any():
        return positions, amplitudes, refitted
    if covariance is not None:
        covariance = np.asarray(covariance, dtype=np.float64)
    shapes = sigma[:, None] if covariance is None else np.concatenate([sigma[:, None], covariance], axis=1)  # the groups fitted together

    for _ in range(rounds):
        largest_move = 0.0
        current = positions.copy(), amplitudes.copy()  # every group of a round sees the same neighbours
        for shape in np.unique(shapes[affected], axis=0):
            width = shape[0]
            members = np.nonzero(affected & (shapes == shape).all(axis=1))[0]
            rows, cols = disk_offsets(radius_of[width])
            centres = np.round(positions[members]).astype(np.int64)
            offsets = positions[members] - centres
            others = neighbours_at(*current, sigma, members, centres, rows, cols, neighbour[members], covariance, profiles)
            if covariance is None:
                params, ok = fit_fixed_width((gather(image, centres, rows, cols) - others).astype(np.float32), rows, cols, offsets, float(width), iterations)
            else:
                window = gather(image, centres, rows, cols, fill=np.nan)
                on_image = np.isfinite(window)
                params, ok = _fit_fixed_shape(np.where(on_image, window, 0) - others, rows, cols, offsets, shape[1:], iterations, inside=on_image)
            step = params[:, 1:3] - offsets
            ok = ok & ((step**2).sum(axis=1) <= max(1.0, width) ** 2)
            new = centres + params[:, 1:3]
            largest_move = max(largest_move, float(np.abs(new[ok] - positions[members][ok]).max(initial=0.0)))
            positions[members[ok]] = new[ok]
            amplitudes[members[ok]] = params[ok, 0]
            refitted[members[ok]] = True
        if largest_move < 0.01:
            break
    return positions, amplitudes, refitted


def sublattice_shapes(
    image: np.ndarray,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    covariance: np.ndarray,
    labels: np.ndarray,
    sample: int = SHAPE_SAMPLE,
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """(N, 3) covariance [c_rr, c_rc, c_cc] (px²) of every column: per sublattice, the elliptical
    Gaussian its columns share (:func:`_fit_shared_shape`), fitted to the mean of up to ``sample``
    of its columns' windows (a disk of ``WIDTH_RADIUS`` × the current equivalent width, at least
    2 px), each minus its neighbours' current models. An astigmatic probe makes every column an ellipse of
    one orientation; subtracting round models of it would push a column off its neighbour along
    the long axis and pull it along the short one, and a neighbour subtracted 4 % too narrow
    pulls a column 2.5 px from it by a tenth of a pixel. A sublattice whose fit fails (or that has
    fewer than 3 columns of positive height) keeps its current shape.

    Parameters
    ----------
    image : ndarray
        (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
    positions : ndarray
        (N, 2) (row, col) of every column, px.
    amplitudes : ndarray
        (N,) heights above the local background (columns of height ≤ 0 are not read).
    covariance : ndarray
        (N, 3) current [c_rr, c_rc, c_cc] px² of every column.
    labels : ndarray
        (N,) sublattice of every column; −1 leaves a column out.
    sample : int, default SHAPE_SAMPLE
        The most columns of a sublattice whose windows are averaged (evenly spaced in index
        order). On the displaced perovskite every 3rd of 6 700 columns (the old 2 048) moved
        the shapes by ±1–2 % from one round to the next, and a neighbour's shape 2 % too small
        biases a displaced column by +0.05 px; all of them settle.
    neighbours : ndarray, optional
        (N, K) each column's nearest other columns, when already known (:func:`nearest_columns`).

    Returns
    -------
    ndarray
        (N, 3) float64 covariance [c_rr, c_rc, c_cc] (px²) of every column.
    """
    from ..atoms.peaks import disk_offsets, gather

    covariance = np.array(covariance, dtype=np.float64)
    current = covariance.copy()
    sigma = equivalent_sigma(current)
    for label in np.unique(labels[labels >= 0]):  # −1: columns left out
        members = np.nonzero((labels == label) & (amplitudes > 0))[0]
        members = members[:: max(1, len(members) // sample)]
        if len(members) < 3:
            continue
        width = float(np.median(sigma[members]))
        rows, cols = disk_offsets(max(2.0, WIDTH_RADIUS * width))
        centres = np.round(positions[members]).astype(np.int64)
        others = None if neighbours is None else neighbours[members]
        data = gather(image, centres, rows, cols) - neighbours_at(positions, amplitudes, sigma, members, centres, rows, cols, others, current)
        weights = amplitudes[members] / amplitudes[members].mean()
        params, ok = _fit_shared_shape(data.mean(axis=1), rows, cols, positions[members] - centres, weights, width)
        if ok:
            covariance[labels == label] = precision(params[3:6])
    return covariance


def sublattice_profiles(
    image: np.ndarray,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    covariance: np.ndarray,
    labels: np.ndarray,
    sample: int = 1024,
    neighbours: np.ndarray | None = None,
    profiles: RadialProfiles | None = None,
) -> RadialProfiles | None:
    """The radial profile of every sublattice's columns, measured in the image.

    A probe is an Airy disk with tails and rings, not a Gaussian: a Gaussian fitted to a column's
    core is too wide or too narrow further out, and subtracting it from a neighbour's window
    pushes the neighbour off (on 3.2σ-apart dumbbells of Airy columns, noise-free, the light
    member by +0.16 px, away from the heavy one). Per sublattice, up to ``sample`` columns'
    windows (``PROFILE_RADIUS`` σ along the long axis of its covariance), each minus its
    neighbours' current models, are read on pixels where the column's own model is at least
    ``PROFILE_CLEARANCE`` times its neighbours'; each window's background is the median of its
    outer σ, and its height its fitted amplitude; the ratios are averaged in bins of the
    Mahalanobis radius ρ, ``PROFILE_STEP`` wide. Empty bins are interpolated; the profile is made
    non-negative and non-increasing (a probe's rings, ~2 % of the peak, are given up: a bump is
    more often a neighbour's leftover) and 0 at ``PROFILE_RADIUS``. A sublattice with fewer than
    ``PROFILE_MIN_COLUMNS`` columns of positive height, and columns labelled −1, keep the Gaussian.

    Parameters
    ----------
    image : ndarray
        (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
    positions : ndarray
        (N, 2) (row, col) of every column, px.
    amplitudes : ndarray
        (N,) fitted heights above the local background.
    covariance : ndarray
        (N, 3) [c_rr, c_rc, c_cc] px² of every column (:func:`sublattice_shapes`).
    labels : ndarray
        (N,) sublattice of every column; −1 leaves a column out.
    sample : int, default 1024
        The most columns of a sublattice that are read.
    neighbours : ndarray, optional
        (N, K) each column's nearest other columns, when already known (:func:`nearest_columns`).
    profiles : RadialProfiles, optional
        The current profiles, for the neighbours' models (default: Gaussian).

    Returns
    -------
    RadialProfiles or None
        One row per label 0…max (Gaussian for a label that could not be read) and the Gaussian
        row for −1; None when no measured profile departs from the Gaussian by
        ``PROFILE_GAUSSIAN_TOLERANCE`` of the peak or more (the Gaussian is then used, as it is cheaper).
    """
    from ..atoms.peaks import disk_offsets, gather

    labels = np.asarray(labels)
    covariance = np.asarray(covariance, dtype=np.float64)
    gaussian = RadialProfiles.gaussian_row()
    count = int(labels.max(initial=-1)) + 1
    values = np.tile(gaussian, (count + 1, 1))
    row = np.where(labels >= 0, labels, count).astype(np.int64)
    sigma = equivalent_sigma(covariance)
    half = precision(covariance)
    bins = len(gaussian)
    current = profiles if profiles is not None else RadialProfiles(values.copy(), row)  # the columns' own models, for the pixels they dominate
    for label in range(count):
        members = np.nonzero((labels == label) & (amplitudes > 0))[0]
        members = members[:: max(1, len(members) // sample)]
        if len(members) < PROFILE_MIN_COLUMNS:
            continue
        trace, det = covariance[members, 0] + covariance[members, 2], covariance[members, 0] * covariance[members, 2] - covariance[members, 1] ** 2
        long_axis = float(np.median(np.sqrt(trace / 2 + np.sqrt(np.maximum(trace**2 / 4 - det, 0)))))
        rows, cols = disk_offsets(PROFILE_RADIUS * long_axis)
        centres = np.round(positions[members]).astype(np.int64)
        window = gather(image, centres, rows, cols, fill=np.nan)
        others = neighbours_at(
            positions, amplitudes, sigma, members, centres, rows, cols, None if neighbours is None else neighbours[members], covariance, profiles
        )
        dy = rows[:, None] - (positions[members, 0] - centres[:, 0])[None, :]
        dx = cols[:, None] - (positions[members, 1] - centres[:, 1])[None, :]
        p = half[members]
        rho = np.sqrt(np.maximum(p[:, 0] * dy * dy + 2 * p[:, 1] * dy * dx + p[:, 2] * dx * dx, 0))
        own = amplitudes[members][None, :] * current.at(members, rho.astype(np.float32))
        residual = window - others
        clear = own >= PROFILE_CLEARANCE * others  # pixels the column's own model dominates
        outer = (rho >= PROFILE_RADIUS - 1) & (rho < PROFILE_RADIUS) & np.isfinite(residual) & clear
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column without a clear outer ring: NaN, left out
            background = np.nanmedian(np.where(outer, residual, np.nan), axis=0)
        ratio = (residual - background[None, :]) / amplitudes[members][None, :]
        use = np.isfinite(ratio) & clear & (rho < PROFILE_RADIUS)
        which = np.round(rho[use] / PROFILE_STEP).astype(np.int64)
        total = np.bincount(which, weights=ratio[use], minlength=bins)[:bins]
        seen = np.bincount(which, minlength=bins)[:bins]
        if seen[0] == 0 or (seen > 0).sum() < bins // 2:
            continue
        measured = np.where(seen > 0, total / np.maximum(seen, 1), np.nan)
        known = np.nonzero(seen > 0)[0]
        measured = np.interp(np.arange(bins), known, measured[known])
        measured = np.minimum.accumulate(np.clip(measured, 0, None))  # falls from the peak: a bump is a neighbour's leftover, not the probe
        measured[-1] = 0.0
        values[label] = measured.astype(np.float32)
    if np.abs(values - gaussian).max(initial=0.0) < PROFILE_GAUSSIAN_TOLERANCE:
        return None
    return RadialProfiles(values, row)
