"""4. Refinement: centre of mass, and the batched Gaussian fits (Levenberg–Marquardt) to subpixel positions."""

from __future__ import annotations

import numpy as np

from .backend import array_module, chunk_workers, f64, like, to_numpy
from .peaks import disk_offsets, gather
from .tables import AtomTable

__all__ = [
    "WIDTH_SAMPLE",
    "fit_disk_radius",
    "fit_fixed_width",
    "keep_inside",
    "levenberg_marquardt",
    "packed_index",
    "parabola_start",
    "refine_center_of_mass",
    "refine_gaussian",
    "refinement_radius",
    "solve_spd",
]

WIDTH_SAMPLE = 1024  # columns fitted with a free width to measure it (the width is one number per image)


def refinement_radius(sigma_px: float, spacing_px: float) -> int:
    """Half-width of the centre-of-mass window: about 2σ, but less than half the spacing.

    Parameters
    ----------
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px.

    Returns
    -------
    int
        ⌈2σ⌉ clipped to 2 … max(2, ⌊spacing / 2⌋), in px.
    """
    return int(np.clip(np.ceil(2.0 * sigma_px - 1e-6), 2, max(2, int(spacing_px / 2))))


def fit_disk_radius(sigma_px: float, spacing_px: float) -> float:
    """Radius of the disk of pixels a Gaussian fit uses: 2.5σ, at most 0.45 spacing (neighbours stay out).

    Parameters
    ----------
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px.

    Returns
    -------
    float
        The radius in px, at least 1.5.
    """
    return float(max(1.5, min(2.5 * sigma_px, 0.45 * spacing_px)))


def parabola_start(response, peaks):
    """Subpixel start (N, 2) float64: the vertex of a parabola through the response at each peak and
    its two neighbours along each axis (offsets clipped to ±½ px).

    Parameters
    ----------
    response : ndarray or Tensor
        (H, W) detection response.
    peaks : ndarray or Tensor
        (N, 2) integer peak positions (row, col).

    Returns
    -------
    ndarray or Tensor
        (N, 2) float64 (row, col) in px, of the response's kind; no offset along an axis where
        the response is not curved downwards.
    """
    xp = array_module(response)
    values = f64(gather(response, peaks, np.array([0, -1, 1, 0, 0]), np.array([0, 0, 0, -1, 1])))
    centre = values[0]
    offsets = []
    for before, after in ((values[1], values[2]), (values[3], values[4])):
        curvature = before - 2 * centre + after
        safe = xp.where(curvature < 0, curvature, -1.0 + 0 * curvature)
        offsets.append(xp.where(curvature < 0, 0.5 * (before - after) / safe, 0 * curvature).clip(-0.5, 0.5))
    return f64(peaks) + xp.stack(offsets, axis=1)


def refine_center_of_mass(image, peaks, sigma_px: float, spacing_px: float, iterations: int = 3, chunk: int = 16384):
    """Centre of mass of each column above its window's minimum; the window follows the estimate.

    The window is a square of half-width :func:`refinement_radius`; its minimum is the baseline and
    the pixels within radius + ½ of its centre are weighted. Numpy arrays or torch tensors; columns
    are done in chunks (cache-sized on the CPU), each iterated until its window stops moving.

    Parameters
    ----------
    image : ndarray or Tensor
        (H, W) prepared image.
    peaks : ndarray or Tensor
        (N, 2) integer starting positions (row, col); rows with a negative row are left at 0.
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px.
    iterations : int, default 3
        Most moves of each window.
    chunk : int, default 16384
        Columns per chunk on the CPU (tensors use 2²² per chunk).

    Returns
    -------
    (N, 2) float64 ndarray or tensor
        Positions (row, col) in px (numpy, or a tensor for tensor inputs).
    """
    xp = array_module(image)
    positions = f64(peaks * 0)
    if peaks.shape[0] == 0:
        return positions
    height, width = image.shape
    radius = refinement_radius(sigma_px, spacing_px)
    square_rows, square_cols = (a.ravel() for a in np.mgrid[-radius : radius + 1, -radius : radius + 1])
    in_disk = square_rows**2 + square_cols**2 <= (radius + 0.5) ** 2
    disk = like(in_disk.astype(np.float32)[:, None], image)
    row_weights = like((square_rows * in_disk).astype(np.float32)[:, None], image)
    col_weights = like((square_cols * in_disk).astype(np.float32)[:, None], image)
    limit = like(np.array([height - 1, width - 1]), peaks)
    chunk = chunk if xp is np else 1 << 22
    for first in range(0, peaks.shape[0], chunk):
        index = xp.where(peaks[first : first + chunk, 0] >= 0)[0] + first
        centres = peaks[index] * 1
        for _ in range(iterations):
            windows = gather(image, centres, square_rows, square_cols)
            windows = windows - xp.amin(windows, axis=0)[None, :]
            total = f64((windows * disk).sum(axis=0))
            total = xp.where(total == 0, 1.0 + 0 * total, total)
            shift = xp.stack([f64((windows * row_weights).sum(axis=0)), f64((windows * col_weights).sum(axis=0))], axis=1) / total[:, None]
            found = f64(centres) + shift
            positions[index] = found
            new_centres = xp.round(found).long() if xp is not np else np.round(found).astype(np.int64)
            new_centres = xp.minimum(xp.maximum(new_centres, 0 * limit), limit)
            moved = (new_centres != centres).any(axis=1)
            index, centres = index[moved], new_centres[moved]
            if index.shape[0] == 0:
                break
    return positions


def refine_gaussian(image, peaks, sigma_px: float, spacing_px: float, iterations: int = 12, chunk: int | None = None, progress=None, start=None) -> AtomTable:
    """Fit ``A·exp(−d²/2s²) + background`` around each peak by batched Levenberg–Marquardt.

    Two passes: on an even sample of ≤ ``WIDTH_SAMPLE`` columns, all seven parameters free
    (A, centre, s, plane background) to measure the column width; then every column with the width
    fixed at the sample's median and a flat background (A, centre, b₀), which lowers the variance
    of the positions at low dose. Only pixels within :func:`fit_disk_radius` of the window centre
    enter either fit. On the CPU the chunks of pass 2 run in :func:`chunk_workers` threads.

    ``start``: (N, 2) starting positions (default: the centre of mass). A fit that fails (diverges,
    leaves its window, wanders more than max(1, σ) from the start, or returns a non-positive
    amplitude) keeps the starting position and is flagged in ``fit_ok``. ``image`` and ``peaks`` may
    be numpy arrays or torch tensors; the table is numpy.

    Parameters
    ----------
    image : ndarray or Tensor
        (H, W) prepared image.
    peaks : ndarray or Tensor
        (N, 2) integer peak positions (row, col): the fit windows' centres.
    sigma_px : float
        Starting column width σ in px (replaced by the sample's median fitted width when any
        sample fit succeeds).
    spacing_px : float
        Column spacing in px (limits the fit disk).
    iterations : int, default 12
        Most LM iterations per fit.
    chunk : int or None, optional
        Columns per chunk of pass 2; None: 16384 on the CPU, 2²² for tensors.
    progress : callable, optional
        ``progress(done, total)`` in chunks (the width pass counts as one).
    start : ndarray or Tensor, optional
        (N, 2) float starting positions (row, col) in px.

    Returns
    -------
    AtomTable
        Positions (row, col) in px, fitted amplitudes as ``intensity``, the common width as
        ``sigma_px``, ``score`` 0 and ``fit_ok``; an empty table for no peaks.
    """
    xp = array_module(image)
    count = peaks.shape[0]
    if count == 0:
        empty = np.zeros(0)
        return AtomTable(np.zeros((0, 2)), empty, empty, empty, np.zeros(0, bool))
    if start is None:
        start = refine_center_of_mass(image, peaks, sigma_px, spacing_px)
    start = f64(start)
    disk_radius = fit_disk_radius(sigma_px, spacing_px)
    chunk = chunk or (16384 if xp is np else 1 << 22)
    chunks_total = 1 + (count + chunk - 1) // chunk
    if progress is not None:
        progress(0, chunks_total)

    # Pass 1: the column width, from a free fit of an even sample of the columns (float64).
    disk_rows, disk_cols = disk_offsets(disk_radius)
    sample = like(np.arange(0, count, max(1, -(-count // WIDTH_SAMPLE))), peaks)
    initial = start[sample] - f64(peaks[sample])
    fitted, good = _fit_free_width(f64(gather(image, peaks[sample], disk_rows, disk_cols)), disk_rows, disk_cols, initial, sigma_px, iterations)
    good = to_numpy(good & (((fitted[:, 1:3] - initial) ** 2).sum(axis=1) <= max(1.0, sigma_px) ** 2))
    if good.any():
        sigma_px = float(np.median(to_numpy(fitted[:, 3])[good]))

    # Pass 2: every column, width fixed, flat background (float32 data; the systems in float64).
    positions = np.empty((count, 2))
    amplitude = np.empty(count)
    ok = np.empty(count, bool)

    def fit_chunk(first: int) -> None:
        part = slice(first, min(first + chunk, count))
        data = gather(image, peaks[part], disk_rows, disk_cols)
        initial = start[part] - f64(peaks[part])
        params, fine = fit_fixed_width(data, disk_rows, disk_cols, initial, sigma_px, iterations)
        moved = ((params[:, 1:3] - initial) ** 2).sum(axis=1) <= max(1.0, sigma_px) ** 2  # wandered off: keep the start
        fine = fine & moved
        fitted_positions = xp.where(fine[:, None], f64(peaks[part]) + params[:, 1:3], start[part])
        positions[part] = to_numpy(fitted_positions)
        amplitude[part] = to_numpy(params[:, 0])
        ok[part] = to_numpy(fine)

    firsts = range(0, count, chunk)
    workers = chunk_workers() if xp is np else 1
    if workers > 1 and len(firsts) > 1:  # numpy releases the GIL in its loops: chunks run side by side on the cores
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            for index, _ in enumerate(pool.map(fit_chunk, firsts)):
                if progress is not None:
                    progress(index + 2, chunks_total)
    else:
        for index, first in enumerate(firsts):
            fit_chunk(first)
            if progress is not None:
                progress(index + 2, chunks_total)
    return AtomTable(positions, amplitude, np.full(count, sigma_px), np.zeros(count), ok)


def packed_index(i: int, j: int, size: int) -> int:
    """Row of entry (i, j) of a symmetric size × size matrix stored as its upper triangle, row by row.

    Parameters
    ----------
    i, j : int
        The entry (order does not matter).
    size : int
        The matrix side F.

    Returns
    -------
    int
        Its index in the packed (F(F+1)/2,) layout.
    """
    i, j = min(i, j), max(i, j)
    return i * size - i * (i - 1) // 2 + (j - i)


def solve_spd(packed, rhs, diagonal_add=None):
    """Solve symmetric positive-definite systems laid out atoms-last: ``packed`` (F(F+1)/2, N) holds
    each matrix's upper triangle row by row, ``rhs`` is (F, N), ``diagonal_add`` (F, N) is added to
    the diagonal (the LM damping) if given.

    A Cholesky factorisation written out over F, each operation on N contiguous values (fast for
    F ≤ 7 and many systems; numpy or torch). Returns x (F, N) and ok (N,): False where the matrix was
    not positive definite (x is then 0).

    Parameters
    ----------
    packed : ndarray or Tensor
        (F(F+1)/2, N) upper triangles, row by row.
    rhs : ndarray or Tensor
        (F, N) right-hand sides.
    diagonal_add : ndarray or Tensor, optional
        (F, N) added to the diagonal.

    Returns
    -------
    x : ndarray or Tensor
        (F, N) solutions (0 where ``ok`` is False).
    ok : ndarray or Tensor
        (N,) bool: the matrix was positive definite.
    """
    xp = array_module(packed)
    size = rhs.shape[0]
    entry = lambda i, j: packed[packed_index(i, j, size)] + (diagonal_add[i] if i == j and diagonal_add is not None else 0)  # noqa: E731
    lower = [[None] * size for _ in range(size)]
    ok = None
    for j in range(size):
        pivot = entry(j, j)
        for k in range(j):
            pivot = pivot - lower[j][k] * lower[j][k]
        ok = (pivot > 0) if ok is None else ok & (pivot > 0)
        lower[j][j] = xp.sqrt(xp.where(pivot > 0, pivot, 1.0 + 0 * pivot))
        for i in range(j + 1, size):
            value = entry(i, j)
            for k in range(j):
                value = value - lower[i][k] * lower[j][k]
            lower[i][j] = value / lower[j][j]
    z = [None] * size
    for i in range(size):
        value = rhs[i]
        for k in range(i):
            value = value - lower[i][k] * z[k]
        z[i] = value / lower[i][i]
    x = [None] * size
    for i in reversed(range(size)):
        value = z[i]
        for k in range(i + 1, size):
            value = value - lower[k][i] * x[k]
        x[i] = value / lower[i][i]
    x = xp.stack(x, axis=0)
    return xp.where(ok[None, :], x, 0 * x), ok


def levenberg_marquardt(params, values, evaluate, normal_equations, iterations: int, tolerance: float = 1e-4, project=None):
    """Batched Levenberg–Marquardt, atoms last: ``params`` (F, N) (updated in place and returned),
    ``values`` (P, N) the data.

    ``evaluate(p, values)`` returns (state, cost (n,)); ``normal_equations(p, state)`` returns JᵀJ's
    upper triangle (F(F+1)/2, n) and Jᵀr (F, n); ``project(p)``, if given, maps a trial onto the
    allowed parameters. Damping λ per column (×⅓ after a step that lowers the cost, ×4 otherwise)
    scales JᵀJ's diagonal. Near the optimum (centre steps below 10⁻² px) every step is accepted:
    there the Gauss–Newton step is reliable, while a float32 cost cannot resolve the last 10⁻³ px
    at low dose, so a cost test would stop each engine (or chunk) at a different point. A column
    stops when its centre step (parameters 1 and 2) is below ``tolerance`` px or its damping runs
    away; the columns still iterating are kept compact, so late iterations cost little.

    Parameters
    ----------
    params : ndarray or Tensor
        (F, N) starting parameters, parameters 1 and 2 the centre (row, col) offsets in px.
    values : ndarray or Tensor
        (P, N) data, pixels first.
    evaluate : callable
        ``evaluate(p, values)`` → (state, cost (n,)).
    normal_equations : callable
        ``normal_equations(p, state)`` → (JᵀJ upper triangle (F(F+1)/2, n), Jᵀr (F, n)).
    iterations : int
        Most iterations.
    tolerance : float, default 1e-4
        Centre step (px) below which a column stops.
    project : callable, optional
        Maps a trial (F, n) onto the allowed parameters.

    Returns
    -------
    ndarray or Tensor
        ``params`` (F, N), updated in place.
    """
    xp = array_module(values)
    size = params.shape[0]
    state, cost = evaluate(params, values)
    matrix, gradient = normal_equations(params, state)
    damping = cost * 0 + 1e-2
    index = xp.where(cost == cost)[0]
    current = params * 1
    on_diagonal = like(np.array([packed_index(i, i, size) for i in range(size)]), matrix)
    for _ in range(iterations):
        if index.shape[0] == 0:
            break
        step, solved = solve_spd(matrix, gradient, damping[None, :] * (matrix[on_diagonal] + 1e-9))
        trial = current + step
        if project is not None:
            trial = project(trial)
        trial_state, trial_cost = evaluate(trial, values)
        centre_step = xp.maximum(xp.abs(step[1]), xp.abs(step[2]))
        better = solved & xp.isfinite(trial_cost) & ((trial_cost < cost) | (centre_step < 1e-2))
        new_matrix, new_gradient = normal_equations(trial, trial_state)
        if bool(better.all()):
            current, cost, matrix, gradient = trial, trial_cost, new_matrix, new_gradient
        else:
            current = xp.where(better[None, :], trial, current)
            cost = xp.where(better, trial_cost, cost)
            matrix = xp.where(better[None, :], new_matrix, matrix)
            gradient = xp.where(better[None, :], new_gradient, gradient)
        damping = xp.where(better, damping / 3.0, damping * 4.0)
        done = (solved & (centre_step < tolerance)) | (damping > 1e6)
        if bool(done.any()):
            params[:, index[done]] = current[:, done]
            going = ~done
            index, values, current, cost = index[going], values[:, going], current[:, going], cost[going]
            matrix, gradient, damping = matrix[:, going], gradient[:, going], damping[going]
    params[:, index] = current
    return params


def _offsets_like(row_offsets: np.ndarray, col_offsets: np.ndarray, data):
    """The pixel offsets as (P, 1) arrays of ``data``'s kind, dtype and device."""
    y, x = (like(v.astype(np.float64)[:, None], data) for v in (row_offsets, col_offsets))
    return (y.astype(data.dtype), x.astype(data.dtype)) if isinstance(data, np.ndarray) else (y.to(data.dtype), x.to(data.dtype))


def fit_fixed_width(data, row_offsets: np.ndarray, col_offsets: np.ndarray, initial, sigma_px: float, iterations: int, tolerance: float = 1e-4):
    """Batched LM fit of ``A·exp(−((y−r₀)² + (x−c₀)²)/2σ²) + b₀`` with σ fixed, to ``data`` (P, N): the
    pixels at (``row_offsets``, ``col_offsets``) from each window centre, pixels first. Numpy arrays
    (float32 data is fastest) or torch tensors.

    The Jacobian columns are e, κ·(y−r₀), κ·(x−c₀), 1 with e the Gaussian and κ = A·e/σ²; every entry
    of JᵀJ and Jᵀr is a moment of e², e or r·e against 1, y, x, y², x², xy, so each iteration costs
    two small exps (the Gaussian is separable), a few elementwise operations and three small einsums
    (no BLAS threads, which stall on a busy machine). The 4×4 systems are solved in float64.

    Parameters
    ----------
    data : ndarray or Tensor
        (P, N) pixel values, pixels first.
    row_offsets, col_offsets : ndarray
        (P,) integer pixel offsets (px) from the window centre.
    initial : ndarray or Tensor
        (N, 2) starting centre (row, col) offsets from the window centre, in px.
    sigma_px : float
        The fixed width σ in px.
    iterations : int
        Most LM iterations.
    tolerance : float, default 1e-4
        Centre step (px) below which a column stops.

    Returns
    -------
    params : ndarray or Tensor
        (N, 4) float64 [A, r₀, c₀, b₀] (offsets from the window centre, px).
    ok : ndarray or Tensor
        (N,) bool: finite, positive amplitude, centre inside the window.
    """
    xp = array_module(data)
    pixels = data.shape[0]
    dtype = data.dtype
    cast = (lambda v: v.astype(dtype)) if xp is np else (lambda v: v.to(dtype))
    y, x = _offsets_like(row_offsets, col_offsets, data)
    basis = xp.concatenate([y * 0 + 1, y, x, y * y, x * x, x * y], axis=1)  # (P, 6)
    inv_two_s2, inv_s2 = 1.0 / (2.0 * sigma_px**2), 1.0 / sigma_px**2
    # the Gaussian is separable: exp(−(y−r₀)²/2σ²)·exp(−(x−c₀)²/2σ²), each factor taken on the few
    # distinct row (column) offsets and spread to the pixels by a gather of rows
    reach = int(max(np.abs(row_offsets).max(), np.abs(col_offsets).max()))
    grid = cast(like(np.arange(-reach, reach + 1, dtype=np.float64)[:, None], data))
    row_of, col_of = like(row_offsets + reach, data), like(col_offsets + reach, data)
    low, high = xp.amin(data, axis=0), xp.amax(data, axis=0)
    params = xp.stack([f64(high - low), f64(initial[:, 0]), f64(initial[:, 1]), f64(low)], axis=0)  # (4, N)

    def evaluate(p, values):
        amp, r0, c0, b0 = p[0], p[1], p[2], p[3]
        along_rows = grid - cast(r0)[None, :]
        along_cols = grid - cast(c0)[None, :]
        along_rows = xp.exp(along_rows * along_rows * -inv_two_s2)
        along_cols = xp.exp(along_cols * along_cols * -inv_two_s2)
        gauss = along_rows[row_of] * along_cols[col_of]  # (P, n)
        residual = values - cast(b0)[None, :]
        residual -= cast(amp)[None, :] * gauss
        return (gauss, residual), f64((residual * residual).sum(axis=0))

    def normal_equations(p, state):
        gauss, residual = state
        amp, r0, c0 = p[0], p[1], p[2]
        w = f64(xp.einsum("pn,pk->kn", gauss * gauss, basis))  # Σe²·[1, y, x, y², x², xy]
        e = f64(xp.einsum("pn,pk->kn", gauss, basis[:, :3]))  # Σe·[1, y, x]
        r = f64(xp.einsum("pn,pk->kn", residual * gauss, basis[:, :3]))  # Σr·e·[1, y, x]
        r_sum = f64(residual.sum(axis=0))
        k = amp * inv_s2
        matrix = xp.stack(
            [
                w[0],
                k * (w[1] - r0 * w[0]),
                k * (w[2] - c0 * w[0]),
                e[0],  # row A
                k * k * (w[3] - 2 * r0 * w[1] + r0 * r0 * w[0]),
                k * k * (w[5] - r0 * w[2] - c0 * w[1] + r0 * c0 * w[0]),
                k * (e[1] - r0 * e[0]),  # row r₀
                k * k * (w[4] - 2 * c0 * w[2] + c0 * c0 * w[0]),
                k * (e[2] - c0 * e[0]),  # row c₀
                0 * k + pixels,  # row b₀
            ],
            axis=0,
        )
        gradient = xp.stack([r[0], k * (r[1] - r0 * r[0]), k * (r[2] - c0 * r[0]), r_sum], axis=0)
        return matrix, gradient

    params = levenberg_marquardt(params, data, evaluate, normal_equations, iterations, tolerance)
    inside = (xp.abs(params[1]) <= reach) & (xp.abs(params[2]) <= reach)
    return params.T, inside & (params[0] > 0) & xp.isfinite(params).all(axis=0)


def _fit_free_width(data, row_offsets: np.ndarray, col_offsets: np.ndarray, initial, sigma_px: float, iterations: int):
    """Batched LM fit of ``A·exp(−((y−r₀)² + (x−c₀)²)/2s²) + b₀ + b_r·y + b_c·x``, all seven parameters
    free, to ``data`` (P, N) (pixels first, float64; numpy or torch). Used on a sample of columns to
    measure their width s; the Jacobian is kept as its seven (P, N) columns and JᵀJ's 28 entries are
    sums of their products.

    Returns parameters (N, 7) [A, r₀, c₀, s, b₀, b_r, b_c] and ok (N,): finite, positive amplitude,
    centre inside the window, 0.25σ < s < 4σ + 1.
    """
    xp = array_module(data)
    y, x = _offsets_like(row_offsets, col_offsets, data)
    reach = int(max(np.abs(row_offsets).max(), np.abs(col_offsets).max()))
    low, high = xp.amin(data, axis=0), xp.amax(data, axis=0)
    zero = low * 0
    params = xp.stack([high - low, f64(initial[:, 0]), f64(initial[:, 1]), zero + sigma_px, low, zero, zero], axis=0)  # (7, N)
    pairs = [(i, j) for i in range(7) for j in range(i, 7)]

    def evaluate(p, values):
        amp, r0, c0, width, b0, br, bc = (p[i][None, :] for i in range(7))
        dy, dx = y - r0, x - c0
        d2 = dy * dy + dx * dx
        gauss = xp.exp(-d2 / (2 * width * width))
        scaled = amp * gauss / (width * width)
        ones = values * 0 + 1
        residual = values - (amp * gauss + b0 + br * y + bc * x)
        jacobian = [gauss, scaled * dy, scaled * dx, scaled * d2 / width, ones, y * ones, x * ones]
        return (jacobian, residual), (residual * residual).sum(axis=0)

    def normal_equations(p, state):
        jacobian, residual = state
        jacobian = xp.stack(jacobian, axis=0)  # (7, P, n)
        full = xp.einsum("ipn,jpn->ijn", jacobian, jacobian)
        matrix = xp.stack([full[i, j] for i, j in pairs], axis=0)
        return matrix, xp.einsum("ipn,pn->in", jacobian, residual)

    def project(trial):
        trial[3] = xp.abs(trial[3])
        return trial

    params = levenberg_marquardt(params, data, evaluate, normal_equations, iterations, project=project)
    inside = (xp.abs(params[1]) <= reach) & (xp.abs(params[2]) <= reach)
    plausible = (params[0] > 0) & (params[3] > 0.25 * sigma_px) & (params[3] < 4 * sigma_px + 1)
    return params.T, inside & plausible & xp.isfinite(params).all(axis=0)


def keep_inside(table: AtomTable, shape: tuple[int, int]) -> AtomTable:
    """Drop atoms whose refined position lies outside the image ([−0.5, H−0.5) × [−0.5, W−0.5)).

    Parameters
    ----------
    table : AtomTable
        Atoms with positions (row, col) in px.
    shape : tuple of int
        (H, W) of the image, in px.

    Returns
    -------
    AtomTable
        The atoms inside, every column kept, sorted row-major (by row, then col).
    """
    height, width = shape
    rows, cols = table.positions[:, 0], table.positions[:, 1]
    keep = (rows >= -0.5) & (rows < height - 0.5) & (cols >= -0.5) & (cols < width - 0.5)
    order = np.lexsort((cols[keep], rows[keep]))
    return AtomTable(
        positions=table.positions[keep][order],
        intensity=table.intensity[keep][order],
        sigma_px=table.sigma_px[keep][order],
        score=table.score[keep][order],
        fit_ok=table.fit_ok[keep][order],
        sublattice=table.sublattice[keep][order],
        displacement_px=table.displacement_px[keep][order],
    )
