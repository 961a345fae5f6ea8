"""Every sublattice: dim columns beside bright ones, a joint refinement, labels.

What :func:`microvae.atoms.find_atoms` does after its first search (:func:`complete_lattice`):

1. **Second search** (:func:`find_dim_columns`). A lattice's autocorrelation is dominated by its
   brightest columns: on a honeycomb of bright metal and dim chalcogen columns (MoS₂) the nearest
   strong peak is the metal–metal distance, and a peak search with that spacing never looks
   between the metals. The fitted columns are rendered (:func:`render_columns`) and subtracted;
   the residual's local maxima at the scale of one column, clear of the columns found and above
   the noise, are new columns.
2. **Joint refinement** (:func:`refine_jointly`). A column fitted alone next to a brighter
   neighbour is pulled towards it; each column whose neighbours reach into its fit window is
   refitted against the image minus its neighbours' models (:func:`neighbours_at`), with one
   shape per sublattice (:func:`sublattice_shapes`: an elliptical Gaussian, as an astigmatic probe
   makes them), until the positions settle.
3. **Labels** (:func:`label_columns`). The lattice's translations (:func:`lattice_translations`)
   link the columns of one site of the unit cell (:func:`label_by_translation`); without a
   lattice, a mixture of the fitted heights decides (:func:`label_sublattices`). New columns that
   belong to no site set are misfits and are dropped.

Conventions: (H, W) float images scaled as :func:`microvae.atoms.prepare_image` scales them,
positions (row, col) in pixels with pixel (r, c) centred at (r, c), widths σ in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def render_columns(shape: tuple[int, int], positions: np.ndarray, amplitudes: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """(H, W) float64 sum of ``amplitude · exp(−d²/2σ²)`` over columns (positions (N, 2), amplitudes (N,),
    sigma_px (N,) or a scalar), each within 4σ of its centre (windowed outer products, one bincount)."""
    height, width = shape
    count = len(positions)
    if count == 0:
        return np.zeros(shape)
    sigma = np.broadcast_to(np.asarray(sigma_px, dtype=np.float64), (count,))
    radius = int(np.ceil(4 * sigma.max()))
    offsets = np.arange(-radius, radius + 1)
    rows = np.round(positions[:, 0]).astype(np.int64)[:, None] + offsets[None, :]
    cols = np.round(positions[:, 1]).astype(np.int64)[:, None] + offsets[None, :]
    inv = 1.0 / (2 * sigma**2)
    along_rows = np.exp(-((rows - positions[:, :1]) ** 2) * inv[:, None])
    along_cols = np.exp(-((cols - positions[:, 1:]) ** 2) * inv[:, None])
    values = amplitudes[:, None, None] * along_rows[:, :, None] * along_cols[:, None, :]
    all_rows = np.broadcast_to(rows[:, :, None], values.shape)
    all_cols = np.broadcast_to(cols[:, None, :], values.shape)
    valid = (all_rows >= 0) & (all_rows < height) & (all_cols >= 0) & (all_cols < width)
    flat = all_rows[valid] * width + all_cols[valid]
    return np.bincount(flat, weights=values[valid], minlength=height * width).reshape(shape)


NEIGHBOURS_MODELLED = 8  # nearest columns whose models are taken away from a column's fit window


def nearest_columns(positions: np.ndarray, count: int = NEIGHBOURS_MODELLED, tree=None) -> np.ndarray:
    """(N, K) indices of each column's K = min(count, N − 1) nearest other columns, nearest first
    (``tree``: a scipy cKDTree of ``positions``, when already built)."""
    from scipy.spatial import cKDTree

    k = min(count, len(positions) - 1)
    if k < 1:
        return np.zeros((len(positions), 0), np.int64)
    tree = tree if tree is not None else cKDTree(positions)
    return tree.query(positions, k=k + 1, workers=-1)[1].reshape(len(positions), -1)[:, 1:]


def isotropic_covariance(sigma_px: np.ndarray) -> np.ndarray:
    """(N, 3) covariance [c_rr, c_rc, c_cc] (px²) of round columns of widths ``sigma_px`` (N,)."""
    sigma = np.asarray(sigma_px, dtype=np.float64)
    return np.stack([sigma**2, 0 * sigma, sigma**2], axis=-1)


def equivalent_sigma(covariance: np.ndarray) -> np.ndarray:
    """(N,) width σ of the round Gaussian of the same area as each elliptical one: det(C)^¼."""
    covariance = np.asarray(covariance, dtype=np.float64)
    return (covariance[..., 0] * covariance[..., 2] - covariance[..., 1] ** 2) ** 0.25


def _precision(covariance: np.ndarray) -> np.ndarray:
    """(..., 3) inverse [p_rr, p_rc, p_cc] of covariances [c_rr, c_rc, c_cc]."""
    det = covariance[..., 0] * covariance[..., 2] - covariance[..., 1] ** 2
    return np.stack([covariance[..., 2] / det, -covariance[..., 1] / det, covariance[..., 0] / det], axis=-1)


def neighbours_at(
    positions: np.ndarray,
    amplitudes: np.ndarray,
    sigma_px: np.ndarray,
    members: np.ndarray,
    centres: np.ndarray,
    row_offsets: np.ndarray,
    col_offsets: np.ndarray,
    others: np.ndarray | None = None,
    covariance: np.ndarray | None = None,
) -> np.ndarray:
    """(P, M) the summed Gaussian models of each member's ``NEIGHBOURS_MODELLED`` nearest other
    columns at its window pixels ``centres`` (M, 2) + (row_offsets, col_offsets) (P,): the part of
    the image that :func:`render_columns` of all columns minus the member's own model would give
    there, without rendering the whole image. ``others`` (M, K): the neighbours' indices, when
    already known. ``covariance`` (N, 3) [c_rr, c_rc, c_cc] px²: elliptical columns (default:
    round, of width ``sigma_px``)."""
    from scipy.spatial import cKDTree

    if others is None:
        count = min(NEIGHBOURS_MODELLED + 1, len(positions))
        _, index = cKDTree(positions).query(positions[members], k=count)
        index = index.reshape(len(members), -1)
        others = index[:, 1:] if count > 1 else index[:, :0]  # (M, K) the member itself first
    # −½·precision, float32 (the pixels relative to the window centre keep the offsets small)
    half = (-0.5 * _precision(isotropic_covariance(sigma_px) if covariance is None else np.asarray(covariance, dtype=np.float64))).astype(np.float32)
    rows = row_offsets.astype(np.float32)[:, None]  # (P, 1)
    cols = col_offsets.astype(np.float32)[:, None]
    total = np.zeros((len(row_offsets), len(centres)), np.float32)
    for k in range(others.shape[1]):
        j = others[:, k]
        dy = rows - (positions[j, 0] - centres[:, 0]).astype(np.float32)[None, :]
        dx = cols - (positions[j, 1] - centres[:, 1]).astype(np.float32)[None, :]
        p = half[j]
        exponent = p[:, 0][None, :] * dy * dy
        exponent += 2 * p[:, 1][None, :] * dy * dx
        exponent += p[:, 2][None, :] * dx * dx
        total += amplitudes[j].astype(np.float32)[None, :] * np.exp(exponent)
    return total


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
    from .atoms.refine import levenberg_marquardt

    data = np.asarray(data, dtype=np.float32)
    low, high = data.min(axis=0), data.max(axis=0)  # the start
    masked = inside is not None and not inside.all()
    if masked:
        data = np.where(inside, data, np.float32(np.nan))  # NaN marks them (the fit drops finished columns as it goes)
    pixels = data.shape[0]
    y = row_offsets.astype(np.float32)[:, None]
    x = col_offsets.astype(np.float32)[:, None]
    basis = np.concatenate([np.ones_like(y), y, x, y * y, x * x, x * y], axis=1)  # (P, 6)
    p_rr, p_rc, p_cc = _precision(np.asarray(covariance, dtype=np.float64))
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
    from .atoms.refine import levenberg_marquardt

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


MIN_SIGNIFICANCE = 6.0  # residual response over its noise sd for a new column
MIN_RELATIVE_HEIGHT = 0.1  # residual response over a typical bright column's response


def find_dim_columns(
    image: np.ndarray, positions: np.ndarray, amplitudes: np.ndarray, sigma_px: np.ndarray, filter_sigma_px: float, typical_response: float, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Columns that a first search passed over: integer (M, 2) (row, col) peaks and (M,) starting
    heights (the residual, smoothed by a Gaussian of the columns' width, at the peak).

    The columns found (``positions`` (N, 2), ``amplitudes`` (N,) fitted heights above the local
    background, ``sigma_px`` (N,) fitted widths) are rendered as Gaussians and subtracted from
    ``image`` (scaled as :func:`microvae.atoms.prepare_image` scales it). A local maximum of the
    residual's LoG response (at ``filter_sigma_px``, over a disk of 1.5σ) is a new column when it
    is at least 2 fitted widths from every column found (closer, the residual is the misfit of a
    column's own profile), at least 2 px inside the image, ``MIN_SIGNIFICANCE`` times the
    response's noise sd (``noise`` is the image's white-noise sd) and ``MIN_RELATIVE_HEIGHT``
    times ``typical_response`` (the 90th percentile of the first search's peak responses).
    """
    from scipy.spatial import cKDTree

    from .atoms.peaks import disk_maxima, filter_gain, inner_of
    from .atoms.response import log_response_and_maxima

    none = (np.zeros((0, 2), np.int64), np.zeros(0))
    if len(positions) == 0:
        return none
    residual = (image - render_columns(image.shape, positions, amplitudes, sigma_px)).astype(np.float32)
    radius = max(2, int(round(1.5 * filter_sigma_px)))
    response, candidates = log_response_and_maxima(residual, filter_sigma_px, inner_of(radius))
    peaks, heights = disk_maxima(response, candidates, radius)
    if len(peaks) == 0:
        return none
    height, width = image.shape
    clear = cKDTree(positions).query(peaks)[0] >= max(2.0 * float(np.median(sigma_px)), 3.0)
    inside = (peaks[:, 0] >= 2) & (peaks[:, 0] < height - 2) & (peaks[:, 1] >= 2) & (peaks[:, 1] < width - 2)
    significant = heights >= MIN_SIGNIFICANCE * noise * filter_gain(filter_sigma_px, 4 * filter_sigma_px, "log")
    tall = heights >= MIN_RELATIVE_HEIGHT * typical_response
    peaks = peaks[clear & inside & significant & tall].astype(np.int64)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(residual, float(np.median(sigma_px)) / np.sqrt(2), mode="nearest")
    return peaks, 2.0 * smooth[peaks[:, 0], peaks[:, 1]].astype(np.float64)  # a Gaussian smoothed by σ/√2 keeps half its height


WIDTH_RADIUS = 1.5  # free-width fits of the widths use a disk of this many σ (≥ 2 px): the core, where neighbours subtracted with a wrong width matter least
DUPLICATE_DISTANCE = 0.5  # × median nearest-neighbour distance: two columns closer are one
JOINT_ROUNDS = 4  # rounds of subtract-the-neighbours-and-refit
SHAPE_ROUNDS = 3  # alternations of the sublattices' shapes and the positions (each shape is read with its neighbours' current shapes)
NEIGHBOUR_SHARE = 0.1  # a neighbour counts when its model, over the column's height, exceeds this at the fit disk's edge


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit columns whose neighbours reach into their fit window, each against the image minus
    every other column's fitted model, until the positions settle.

    A column fitted alone next to a brighter neighbour is pulled towards it: the neighbour's flank
    inside the window looks like the column's own. Here all columns are rendered from their current
    fits (:func:`render_columns`), and each affected column is refitted (Gaussian of its fixed
    width plus a flat background, the fit of :func:`microvae.atoms.refine_gaussian`) to the residual
    plus its own model, so that only its neighbours are taken away. ``rounds`` rounds, stopping
    early when no column moves by more than 0.01 px. Only columns that a neighbour reaches are
    refitted: a neighbour's Gaussian, scaled by its height over the column's own, exceeds
    ``NEIGHBOUR_SHARE`` at the edge of the column's fit disk (the usual well-separated lattice
    costs little); ``must`` (N,) bool marks columns refitted in any case (new ones).
    ``neighbours`` (N, K): each column's nearest other columns, nearest first, when already known
    (:func:`nearest_columns`); they stay the same while the columns settle. ``covariance`` (N, 3)
    [c_rr, c_rc, c_cc] px²: elliptical columns (astigmatic probe), fitted and subtracted with their
    shape fixed (:func:`_fit_fixed_shape`); ``sigma_px`` then only sets the fit disks.

    Args:
        image: (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
        positions: (N, 2) (row, col) px from a first fit; amplitudes (N,) heights above the local
            background; sigma_px (N,) fixed widths (columns sharing a width are fitted together).
        spacing_px: nearest-neighbour distance of the whole lattice (sets the fit radius).

    Returns:
        positions (N, 2), amplitudes (N,), and moved (N,) bool: which columns were refitted.
    """
    from .atoms.peaks import disk_offsets, gather
    from .atoms.refine import fit_disk_radius, fit_fixed_width

    positions = np.array(positions, dtype=np.float64)
    amplitudes = np.array(amplitudes, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma_px, dtype=np.float64), (len(positions),)).copy()
    refitted = np.zeros(len(positions), bool)
    if len(positions) < 2:
        return positions, amplitudes, refitted
    radius_of = {s: fit_disk_radius(s, spacing_px) for s in np.unique(sigma)}
    fit_radius = np.array([radius_of[s] for s in sigma])
    neighbour = nearest_columns(positions) if neighbours is None else neighbours
    closest = neighbour[:, :4]  # the nearest four decide who is reached
    distance = np.hypot(*(positions[closest] - positions[:, None, :]).transpose(2, 0, 1))
    gap = np.clip(distance - fit_radius[:, None], 0, None)
    reach = amplitudes[closest] / np.clip(amplitudes, 1e-6, None)[:, None] * np.exp(-(gap**2) / (2 * sigma[closest] ** 2))
    affected = (reach > NEIGHBOUR_SHARE).any(axis=1)
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
            others = neighbours_at(*current, sigma, members, centres, rows, cols, neighbour[members], covariance)
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


MAX_SUBLATTICES = 3
MIXTURE_SAMPLE = 4000  # heights the mixture is fitted on (an even sample)
MIN_SUBLATTICE_FRACTION = 0.08  # a sublattice holds at least this share of the columns
MIN_SEPARATION = 2.5  # adjacent sublattices' mean log heights differ by this many pooled sd


def label_sublattices(intensity: np.ndarray) -> np.ndarray:
    """(N,) int sublattice of each column from its fitted height: 0 the brightest.

    A Gaussian mixture of 1 … ``MAX_SUBLATTICES`` components on log height
    (:func:`gaussian_mixture_1d`), chosen by BIC, kept only while every component holds at least
    ``MIN_SUBLATTICE_FRACTION`` of the columns and adjacent means are ``MIN_SEPARATION`` pooled sd
    apart (a real second sublattice, not the tail of one population: thickness, dopants and noise
    spread one sublattice's heights too). Which search found a column does not enter: a dim
    column of a well-separated lattice is found by the first search.
    """
    values = np.log(np.clip(np.asarray(intensity, dtype=np.float64), 1e-6, None))
    labels = np.zeros(len(values), np.int64)
    if len(values) < 20:
        return labels
    sample = values[:: max(1, len(values) // MIXTURE_SAMPLE)]  # fitted on an even sample, applied to all
    best_bic = np.inf
    for components in range(1, MAX_SUBLATTICES + 1):
        means, sds, weights, _, log_likelihood = gaussian_mixture_1d(sample, components)
        if components > 1:
            pooled = np.sqrt(0.5 * (sds[:-1] ** 2 + sds[1:] ** 2))
            if weights.min() < MIN_SUBLATTICE_FRACTION or ((means[:-1] - means[1:]) < MIN_SEPARATION * pooled).any():
                continue
        bic = -2 * log_likelihood + (3 * components - 1) * np.log(len(sample))
        if bic < best_bic:
            log_density = -0.5 * ((values[:, None] - means) / sds) ** 2 - np.log(sds) + np.log(weights)
            best_bic, labels = bic, log_density.argmax(axis=1).astype(np.int64)
    return labels


def gaussian_mixture_1d(values: np.ndarray, components: int, iterations: int = 100) -> tuple[np.ndarray, ...]:
    """EM fit of a 1D Gaussian mixture, started from quantiles; components ordered by decreasing mean.

    Returns means, sds, weights (K,), responsibilities (N, K) and the log-likelihood. numpy only
    (deterministic, and no second OpenMP runtime beside torch's).
    """
    values = np.asarray(values, dtype=np.float64)
    spread = max(float(values.std()), 1e-6)
    means = np.quantile(values, (np.arange(components) + 0.5) / components)[::-1].copy()
    sds = np.full(components, spread / components)
    weights = np.full(components, 1.0 / components)
    previous = -np.inf
    for _ in range(iterations):
        log_density = -0.5 * ((values[:, None] - means) / sds) ** 2 - np.log(sds * np.sqrt(2 * np.pi)) + np.log(weights)
        top = log_density.max(axis=1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(log_density - top).sum(axis=1))
        responsibilities = np.exp(log_density - total[:, None])
        log_likelihood = float(total.sum())
        mass = responsibilities.sum(axis=0) + 1e-12
        weights = mass / len(values)
        means = (responsibilities * values[:, None]).sum(axis=0) / mass
        sds = np.sqrt((responsibilities * (values[:, None] - means) ** 2).sum(axis=0) / mass) + 1e-3 * spread
        if log_likelihood - previous < 1e-8 * abs(log_likelihood):
            break
        previous = log_likelihood
    order = np.argsort(means)[::-1]
    return means[order], sds[order], weights[order], responsibilities[:, order], log_likelihood


def sublattice_shapes(
    image: np.ndarray,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    covariance: np.ndarray,
    labels: np.ndarray,
    sample: int = 2048,
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """(N, 3) covariance [c_rr, c_rc, c_cc] (px²) of every column: per sublattice, the elliptical
    Gaussian its columns share (:func:`_fit_shared_shape`), fitted to the mean of up to ``sample``
    of its columns' windows (a disk of ``WIDTH_RADIUS`` × the current equivalent width, at least
    2 px), each minus its neighbours' current models. An astigmatic probe makes every column an ellipse of
    one orientation; subtracting round models of it would push a column off its neighbour along
    the long axis and pull it along the short one, and a neighbour subtracted 4 % too narrow
    pulls a column 2.5 px from it by a tenth of a pixel. A sublattice whose fit fails keeps its
    current shape."""
    from .atoms.peaks import disk_offsets, gather

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
            covariance[labels == label] = _precision(params[3:6])
    return covariance


@dataclass
class CompletedLattice:
    """Every column after the second search and the joint refinement (see :func:`complete_lattice`).

    Attributes:
        positions: (N, 2) (row, col) px; amplitudes (N,) fitted heights above the local background;
        sigma_px: (N,) the fixed width of each column's sublattice; sublattice (N,) 0 = brightest;
        second_search: (N,) True for columns found in the residual; refitted (N,) True where the
        joint refinement moved the column; nearest_neighbour_px: median nearest-neighbour distance;
        source: (N,) index of the input column each came from, −1 for the second search's.
    """

    positions: np.ndarray
    amplitudes: np.ndarray
    sigma_px: np.ndarray
    sublattice: np.ndarray
    second_search: np.ndarray
    refitted: np.ndarray
    nearest_neighbour_px: float
    source: np.ndarray


PROBE_SIZE = 1024  # scans larger than this are searched on a central crop of this size first


def _worth_searching(image, positions, amplitudes, widths, filter_sigma_px, typical_response, noise) -> bool:
    """On a scan larger than ``PROBE_SIZE``², True when the second search finds new columns on its
    central ``PROBE_SIZE``² crop: at least 1 % of the crop's columns (a lattice is homogeneous
    enough that a missed sublattice shows there). Smaller scans are always searched."""
    height, width = image.shape
    if max(height, width) <= PROBE_SIZE:
        return True
    top, left = max(0, (height - PROBE_SIZE) // 2), max(0, (width - PROBE_SIZE) // 2)
    corner = np.array([top, left])
    inside = ((positions >= corner - 20) & (positions < corner + PROBE_SIZE + 20)).all(axis=1)
    crop = image[top : top + PROBE_SIZE, left : left + PROBE_SIZE]
    found, _ = find_dim_columns(crop, positions[inside] - corner, amplitudes[inside], widths[inside], filter_sigma_px, typical_response, noise)
    return len(found) >= max(3, 0.01 * inside.sum())


def complete_lattice(
    image: np.ndarray,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    sigma_px: np.ndarray,
    filter_sigma_px: float,
    typical_response: float,
    noise: float,
    joint: bool = True,
    search: bool = True,
) -> CompletedLattice:
    """From a first search's fitted columns to every sublattice, labelled and refined together.

    1. :func:`find_dim_columns` in the residual (``search``; on scans above ``PROBE_SIZE``² only
       when it finds columns on the central crop); new columns start at the residual's peak with
       the first search's width.
    2. :func:`refine_jointly` with one width, two rounds (``joint``, when the second search found
       columns): the heights the labels read.
    3. :func:`label_columns` (position within the lattice, then height); columns of the second
       search outside every large set of translation-linked columns are dropped.
    4. :func:`sublattice_shapes` (one elliptical Gaussian per sublattice, neighbours subtracted),
       then :func:`refine_jointly` with those shapes, three rounds (``joint``); once more unless
       the shapes moved by under 2 % of their width.
    5. Of two columns closer than ``DUPLICATE_DISTANCE`` × the median nearest-neighbour
       distance the shorter is dropped (two fits on one column). Where the second search added
       columns, they are labelled again with their refined heights; otherwise the labels of step 3
       stand (the refinement moves columns by fractions of a pixel, not between sites).

    ``image`` scaled as :func:`microvae.atoms.prepare_image` scales it; the other arguments as
    :func:`find_dim_columns` takes them.
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    widths = np.broadcast_to(np.asarray(sigma_px, dtype=np.float64), (len(positions),)).copy()
    second = np.zeros(len(positions), bool)
    source = np.arange(len(positions))
    if search and len(positions) and _worth_searching(image, positions, amplitudes, widths, filter_sigma_px, typical_response, noise):
        peaks, heights = find_dim_columns(image, positions, amplitudes, widths, filter_sigma_px, typical_response, noise)
        positions = np.concatenate([positions, peaks.astype(np.float64)])
        amplitudes = np.concatenate([amplitudes, np.clip(heights, 1e-3, None)])
        widths = np.concatenate([widths, np.full(len(peaks), float(np.median(widths)) if len(widths) else filter_sigma_px)])
        second = np.concatenate([second, np.ones(len(peaks), bool)])
        source = np.concatenate([source, np.full(len(peaks), -1)])
    if len(positions) <= 1:
        return CompletedLattice(positions, amplitudes, widths, np.zeros(len(positions), np.int64), second, np.zeros(len(positions), bool), float("nan"), source)
    tree = cKDTree(positions)  # one tree and one neighbour table: the columns move by fractions of a pixel
    neighbours = nearest_columns(positions, tree=tree)
    nearest = float(np.median(np.hypot(*(positions[neighbours[:, 0]] - positions).T)))
    refitted = np.zeros(len(positions), bool)
    if joint and second.any():  # heights of the new columns (and of their neighbours) before they are labelled
        positions, amplitudes, moved = refine_jointly(image, positions, amplitudes, widths, nearest, rounds=2, must=second, neighbours=neighbours)
        refitted |= moved
    labels, linked = label_columns(positions, amplitudes, image.shape, nearest, tree)
    drop = second & ~linked  # found in the residual but part of no site set: misfit, not a column
    covariance = isotropic_covariance(widths)
    for _ in range(SHAPE_ROUNDS if joint else 0):  # shapes from neighbour-subtracted cores, then positions, until the shapes stand
        previous = covariance
        covariance = sublattice_shapes(image, positions, amplitudes, covariance, np.where(drop, -1, labels), neighbours=neighbours)
        widths = equivalent_sigma(covariance)
        amplitudes = np.where(drop, 0.0, amplitudes)  # a dropped column takes nothing from its neighbours
        positions, amplitudes, moved = refine_jointly(
            image, positions, amplitudes, widths, nearest, rounds=3, must=second & ~drop, neighbours=neighbours, covariance=covariance
        )
        refitted |= moved
        if np.abs(covariance - previous).max(initial=0.0) < 0.04 * float(np.median(widths)) ** 2:
            break
        if second.any():  # heights read with better shapes: the next shapes are read per sublattice as labelled now
            labels = label_columns(positions, np.where(drop, 1e-6, amplitudes), image.shape, nearest)[0]
    # two fits that settled on one column: keep the taller
    distance = np.hypot(*(positions[neighbours] - positions[:, None, :]).transpose(2, 0, 1))
    close = (distance < DUPLICATE_DISTANCE * nearest) & ~drop[neighbours]
    for column in np.nonzero(close.any(axis=1) & ~drop)[0]:
        others = neighbours[column][close[column]]
        if (amplitudes[others] > amplitudes[column]).any() or ((amplitudes[others] == amplitudes[column]) & (others < column)).any():
            drop[column] = True
    keep = ~drop
    nearest = float(np.median(np.where(drop[neighbours], np.inf, distance)[keep].min(axis=1)))
    positions, amplitudes, widths, second, refitted, source, labels = (a[keep] for a in (positions, amplitudes, widths, second, refitted, source, labels))
    if second.any():  # the new columns' heights were provisional when they were first labelled
        labels, _ = label_columns(positions, amplitudes, image.shape, nearest)
    return CompletedLattice(positions, amplitudes, widths, labels, second, refitted, nearest, source)


LINK_HEIGHT_STEP = 0.3  # log-height step a link may always take (a thickness wedge changes neighbours little)
LINK_TOLERANCE = 0.45  # × nearest-neighbour distance: how far a translated column may miss its partner
TRANSLATION_SAMPLE = 3000  # columns whose neighbours propose, and test, the translations
MIN_TRANSLATION_SHARE = 0.75  # a lattice translation maps at least this share of the columns onto columns


def lattice_translations(positions: np.ndarray, shape: tuple[int, int], nearest_px: float, intensity: np.ndarray | None = None, tree=None) -> np.ndarray | None:
    """(2, 2) the two shortest non-collinear lattice translations (row, col) px, or None.

    A translation of the crystal carries (almost) every column onto another column of the same
    kind; a vector between two sublattices carries only one sublattice's columns onto the other.
    Candidates are the most frequent difference vectors between each column and its 12 nearest
    neighbours (binned at 0.15 × ``nearest_px``, then averaged); a candidate carries the point
    lattice when at least ``MIN_TRANSLATION_SHARE`` of the columns whose image under it lies inside
    the scan find a column within 0.25 × ``nearest_px`` of it. Given ``intensity`` (N,) fitted
    heights, it must also carry each column onto one of about the same height: the median
    |log(height ratio)| of its pairs is at most max(2 m, m + 0.1), m the smallest over the
    candidates (Sr and Ti–O columns alternating along a row form one point lattice, not one
    crystal lattice; a slow thickness gradient changes neighbours' heights only a little).
    """
    from scipy.spatial import cKDTree

    count = len(positions)
    if count < 12:
        return None
    tree = tree if tree is not None else cKDTree(positions)
    probes = np.arange(0, count, max(1, count // TRANSLATION_SAMPLE))  # an even sample of the columns
    _, neighbours = tree.query(positions[probes], k=min(13, count))
    vectors = (positions[neighbours[:, 1:]] - positions[probes][:, None, :]).reshape(-1, 2)
    step = 0.15 * nearest_px
    keys = np.round(vectors / step).astype(np.int64)
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    frequent = np.nonzero(counts >= 0.2 * len(probes))[0]
    height, width = shape
    tolerance = 0.25 * nearest_px
    log_height = None if intensity is None else np.log(np.clip(np.asarray(intensity, dtype=np.float64), 1e-6, None))
    candidates, mismatch = [], []
    for index in frequent[np.argsort(-counts[frequent])]:
        vector = vectors[inverse == index].mean(axis=0)
        if vector[0] < 0 or (vector[0] == 0 and vector[1] < 0):
            continue  # one of ±v is enough
        if any(np.linalg.norm(vector - t) < tolerance for t in candidates):
            continue
        target = positions[probes] + vector
        inside = (target[:, 0] >= 0) & (target[:, 0] <= height - 1) & (target[:, 1] >= 0) & (target[:, 1] <= width - 1)
        if inside.sum() < 10:
            continue
        distance, partner = tree.query(target[inside], distance_upper_bound=tolerance)
        hit = distance < tolerance
        if hit.mean() >= MIN_TRANSLATION_SHARE:
            candidates.append(vector)
            origin = probes[np.nonzero(inside)[0][hit]]
            mismatch.append(0.0 if log_height is None else float(np.median(np.abs(log_height[partner[hit]] - log_height[origin]))))
    if not candidates:
        return None
    smallest = min(mismatch)
    translations = [t for t, m in zip(candidates, mismatch) if m <= max(2 * smallest, smallest + 0.1)]
    translations.sort(key=np.linalg.norm)
    if len(translations) < 2:
        return None
    first = translations[0]
    for second in translations[1:]:
        if abs(first[0] * second[1] - first[1] * second[0]) > 0.3 * np.linalg.norm(first) * np.linalg.norm(second):
            return np.stack([first, second])
    return None


def label_by_translation(positions: np.ndarray, intensity: np.ndarray, translations: np.ndarray, nearest_px: float, tree=None) -> tuple[np.ndarray, np.ndarray]:
    """(N,) sublattice of each column from the lattice's geometry, 0 the brightest, and (N,) bool:
    whether the column belongs to one of the large sets or sits on their lattice (≥ 2 of its
    translation partners, whatever their heights, in large sets: a dopant does, a misfit between
    columns does not).

    Columns are linked to the columns found within ``LINK_TOLERANCE`` × ``nearest_px`` of their
    images under each translation (loose enough that a displaced domain stays linked to the
    undisplaced one) when their log heights differ by at most max(``LINK_HEIGHT_STEP``, 3 × the
    median step over all links), so that one poorly fitted column at the scan's edge does not
    join two sites; each connected set is one sublattice (the columns of one site of the unit
    cell). Sets holding under 5 % of the columns (broken off by vacancies, the scan's edge or a
    stray detection) join the large set whose median log height is closest to theirs. Sets are
    numbered by decreasing median height.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    count = len(positions)
    tree = tree if tree is not None else cKDTree(positions)
    rows, cols = [], []
    for vector in translations:
        distance, index = tree.query(positions + vector, distance_upper_bound=LINK_TOLERANCE * nearest_px, workers=-1)
        linked = distance < np.inf
        rows.append(np.nonzero(linked)[0])
        cols.append(index[linked])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    every_row, every_col = rows, cols  # the geometric links, whatever the heights
    log_height = np.log(np.clip(intensity, 1e-6, None))
    step = np.abs(log_height[rows] - log_height[cols])
    alike = step <= max(LINK_HEIGHT_STEP, 3 * float(np.median(step))) if len(step) else step > 0
    rows, cols = rows[alike], cols[alike]  # one bad fit at the scan's edge must not join two sites
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    in_set = sizes[component] >= 0.05 * count
    # a column of another height on a site of a large set (a dopant) has ≥ 2 lattice partners in large sets
    partners = np.bincount(every_row, weights=in_set[every_col], minlength=count) + np.bincount(every_col, weights=in_set[every_row], minlength=count)
    linked_any = in_set | (partners >= 2)
    large = np.nonzero(sizes >= 0.05 * count)[0]
    if len(large) == 0:
        return np.zeros(count, np.int64), linked_any
    medians = np.array([np.median(log_height[component == c]) for c in large])
    for small in np.nonzero(sizes < 0.05 * count)[0]:
        members = component == small
        component[members] = large[np.argmin(np.abs(medians - np.median(log_height[members])))]
    order = large[np.argsort(-medians)]
    rank = np.full(component.max() + 1, -1)
    rank[order] = np.arange(len(order))
    return rank[component].astype(np.int64), linked_any


def label_columns(positions: np.ndarray, intensity: np.ndarray, shape: tuple[int, int], nearest_px: float, tree=None) -> tuple[np.ndarray, np.ndarray]:
    """Sublattice of every column, 0 the brightest: position within the lattice, then height.

    1. The lattice's translations, those that carry each column onto one of about its height
       (:func:`lattice_translations`).
    2. The sets of columns the translations link (:func:`label_by_translation`) are the sites of
       the unit cell: a site is labelled as a whole, so a brightness gradient across the scan
       does not flip columns between sublattices, and columns of one site that differ in height
       (dopants, thickness) stay one sublattice.
    Without two translations, the heights alone decide (:func:`label_sublattices`). ``tree``: a
    scipy cKDTree of ``positions``, when already built.

    Returns the (N,) labels, numbered by decreasing median height, and (N,) bool ``linked``:
    False for a column outside every large set of translation-linked columns (a stray detection,
    a periodic artefact at a few sites, or a column at a defect or the scan's edge); all True
    without a lattice.
    """
    count = len(positions)
    if count < 20:
        return np.zeros(count, np.int64), np.ones(count, bool)
    translations = lattice_translations(positions, shape, nearest_px, intensity, tree)
    if translations is None:
        return label_sublattices(intensity), np.ones(count, bool)
    return label_by_translation(positions, intensity, translations, nearest_px, tree)
