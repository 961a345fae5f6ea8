"""Finding atomic columns: estimate the lattice, detect candidate peaks, refine them to subpixel.

The locator is built like trackpy's ``locate``: a filtered image, local maxima above a threshold,
then a refinement of each maximum. Parameters that matter (the column width σ and the
nearest-neighbour spacing) are estimated from the image's autocorrelation when not given, so the
defaults work without tuning on most lattices.

Conventions: images are (H, W) arrays, positions are (row, col) in pixels with pixel (r, c) centred
at (r, c). Bright columns are found; for dark-column contrast (annular bright field, some STM
modes) pass ``invert=True``.

Steps, each a small pure function:

1. :func:`estimate_lattice` — spacing from the nearest strong peak of the autocorrelation, σ from the
   width of its central peak.
2. :func:`detection_response` — ``"log"``: the scale-normalised Laplacian of Gaussian at σ (insensitive
   to slow backgrounds); ``"max"``: the image smoothed by a Gaussian of σ minus its local floor (a
   minimum filter over one spacing, smoothed).
3. :func:`find_peaks` — local maxima of the response in a disk of radius r = ½ spacing, above a
   threshold set from the response's noise level and its typical column height.
4. :func:`refine_center_of_mass` or :func:`refine_gaussian` — subpixel positions; the Gaussian fit
   (isotropic Gaussian + plane background, batched Levenberg–Marquardt) is the most accurate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import ParameterError

DETECTION_METHODS = ("log", "max")
REFINEMENT_METHODS = ("gaussian", "com", "none")


@dataclass
class LatticeEstimate:
    """What the image's autocorrelation says about its columns.

    Attributes:
        spacing_px: nearest-neighbour distance between columns (pixels).
        sigma_px: Gaussian width σ of one column (pixels).
        periodic: False when the autocorrelation showed no clear lattice peak (the spacing is then a
            guess of 4σ and the user may want to set it).
    """

    spacing_px: float
    sigma_px: float
    periodic: bool = True


@dataclass
class AtomTable:
    """Atoms found in one image.

    Attributes:
        positions: (N, 2) float64 (row, col) in pixels.
        intensity: (N,) fitted peak height above the local background (image units; for ``com`` or
            ``none`` refinement, the filtered response at the peak).
        sigma_px: (N,) fitted Gaussian width (the estimate when not fitted).
        score: (N,) detection response at the candidate peak.
        fit_ok: (N,) False where a Gaussian fit failed and the centre-of-mass position was kept.
    """

    positions: np.ndarray
    intensity: np.ndarray
    sigma_px: np.ndarray
    score: np.ndarray
    fit_ok: np.ndarray

    def __len__(self) -> int:
        return int(len(self.positions))


@dataclass
class FindAtomsParams:
    """Parameters of :func:`find_atoms`. ``None`` means: estimate from the image."""

    method: str = "log"
    refine: str = "gaussian"
    sigma_px: float | None = None
    spacing_px: float | None = None
    threshold: float | None = None
    threshold_rel: float = 0.2
    invert: bool = False

    def validate(self) -> None:
        if self.method not in DETECTION_METHODS:
            raise ParameterError(f"unknown detection method {self.method!r}; expected one of {', '.join(DETECTION_METHODS)}")
        if self.refine not in REFINEMENT_METHODS:
            raise ParameterError(f"unknown refinement {self.refine!r}; expected one of {', '.join(REFINEMENT_METHODS)}")
        if self.sigma_px is not None and not (0.3 <= self.sigma_px <= 100):
            raise ParameterError(f"--sigma {self.sigma_px} px is out of range; expected 0.3 to 100 pixels")
        if self.spacing_px is not None and not (2 <= self.spacing_px <= 1000):
            raise ParameterError(f"--spacing {self.spacing_px} px is out of range; expected 2 to 1000 pixels")
        if not (0 <= self.threshold_rel < 1):
            raise ParameterError(f"--threshold-rel {self.threshold_rel} is out of range; expected 0 ≤ value < 1")


def find_atoms(image: np.ndarray, params: FindAtomsParams | None = None, progress=None) -> tuple[AtomTable, LatticeEstimate]:
    """Find and refine atomic columns in one (H, W) image.

    ``progress(completed, total)``, if given, is called as the Gaussian refinement works through its
    chunks of columns (the slow part on large scans).

    Returns:
        the atoms (positions inside the image, row-major order) and the lattice estimate used
        (with the user's overrides applied).
    """
    params = params or FindAtomsParams()
    params.validate()
    image = prepare_image(image, params.invert)
    estimate = estimate_lattice(image)
    sigma = params.sigma_px or estimate.sigma_px
    spacing = params.spacing_px or estimate.spacing_px
    used = LatticeEstimate(spacing_px=float(spacing), sigma_px=float(sigma), periodic=estimate.periodic)
    response = detection_response(image, sigma, spacing, params.method)
    threshold = params.threshold
    if threshold is None:
        threshold = automatic_threshold(image, response, sigma, spacing, params.method, params.threshold_rel)
    peaks, scores = find_peaks(response, spacing, threshold)
    if params.refine == "gaussian":
        table = refine_gaussian(image, peaks, sigma, spacing, progress=progress)
    elif params.refine == "com":
        positions = refine_center_of_mass(image, peaks, sigma, spacing)
        table = AtomTable(positions, response[peaks[:, 0], peaks[:, 1]], np.full(len(peaks), sigma), scores, np.ones(len(peaks), bool))
    else:
        table = AtomTable(peaks.astype(np.float64), response[peaks[:, 0], peaks[:, 1]], np.full(len(peaks), sigma), scores, np.ones(len(peaks), bool))
    table.score = scores
    return keep_inside(table, image.shape), used


def prepare_image(image: np.ndarray, invert: bool = False) -> np.ndarray:
    """float64 copy scaled to [0, 1] by its 0.1–99.9 percentiles; inverted for dark-column contrast."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ParameterError(f"atom finding needs one 2D image, got shape {image.shape}")
    low, high = np.percentile(image.ravel()[:: max(1, image.size // 2_000_000)], [0.1, 99.9])
    if high <= low:
        low, high = float(image.min()), float(image.max())
    scaled = (image - low) / max(high - low, 1e-12)
    return 1.0 - scaled if invert else scaled


# ----------------------------------------------------------------------------------------------
# 1. Lattice estimate


def estimate_lattice(image: np.ndarray, max_size: int = 1024) -> LatticeEstimate:
    """Estimate column spacing and width from the autocorrelation of (a central crop of) the image.

    The autocorrelation of a lattice of Gaussian columns of width σ has a central peak of width
    σ√2 and side peaks at the lattice vectors. The spacing is the distance to the nearest side peak
    at least a quarter as high as the strongest; σ comes from the decay of the central peak between
    lags 1 and 2 pixels (lag 0 is skipped: white noise adds a spike there).
    """
    height, width = image.shape
    crop = image[(height - min(height, max_size)) // 2 :, (width - min(width, max_size)) // 2 :][:max_size, :max_size]
    crop = crop - crop.mean()
    window = np.outer(np.hanning(crop.shape[0]), np.hanning(crop.shape[1]))
    spectrum = np.fft.rfft2(crop * window)
    # high-pass in Fourier space: remove structure slower than a twelfth of the crop (backgrounds)
    freq_rows = np.fft.fftfreq(crop.shape[0])[:, None]
    freq_cols = np.fft.rfftfreq(crop.shape[1])[None, :]
    slow_sigma = max(crop.shape) / 12.0
    spectrum *= 1.0 - np.exp(-2.0 * (np.pi * slow_sigma) ** 2 * (freq_rows**2 + freq_cols**2))
    autocorr = np.fft.fftshift(np.fft.irfft2(np.abs(spectrum) ** 2, s=crop.shape))
    centre = np.array(crop.shape) // 2
    autocorr = autocorr / autocorr[tuple(centre)]
    sigma = _central_peak_sigma(autocorr, centre)
    rows, cols = np.indices(autocorr.shape)
    radius = np.hypot(rows - centre[0], cols - centre[1])
    local_max = (autocorr == ndimage.maximum_filter(autocorr, size=3)) & (radius > max(2.5 * sigma, 2.0)) & (radius < min(crop.shape) / 4)
    heights = autocorr[local_max]
    if heights.size == 0 or heights.max() <= 0.02:
        return LatticeEstimate(spacing_px=max(4.0 * sigma, 4.0), sigma_px=sigma, periodic=False)
    strong = heights >= 0.25 * heights.max()
    spacing = float(radius[local_max][strong].min())
    sigma = float(np.clip(sigma, 0.5, spacing / 3.0))
    return LatticeEstimate(spacing_px=spacing, sigma_px=sigma, periodic=True)


def _central_peak_sigma(autocorr: np.ndarray, centre: np.ndarray) -> float:
    """σ of one column from the autocorrelation's central peak, using lags 1–4 along both axes."""
    row, col = centre

    def at_lag(lag: int) -> float:
        return float(np.mean([autocorr[row + lag, col], autocorr[row - lag, col], autocorr[row, col + lag], autocorr[row, col - lag]]))

    profile = np.array([at_lag(lag) for lag in range(1, 9)])
    # baseline: the first minimum of the profile (between the central peak and the first neighbours)
    minima = np.where((profile[1:-1] <= profile[:-2]) & (profile[1:-1] <= profile[2:]))[0]
    baseline = profile[minima[0] + 1] if minima.size else profile.min()
    first, second = profile[0] - baseline, profile[1] - baseline
    if first <= 0 or second <= 0 or second >= first:
        return 1.0
    sigma_ac_sq = 3.0 / (2.0 * np.log(first / second))  # Gaussian: ln(p1/p2) = (2² − 1²) / (2 σ_ac²)
    return float(np.sqrt(sigma_ac_sq / 2.0))  # σ_ac = √2 σ


# ----------------------------------------------------------------------------------------------
# 2–3. Response and peaks


def detection_response(image: np.ndarray, sigma_px: float, spacing_px: float, method: str) -> np.ndarray:
    """The filtered image whose local maxima are the candidate columns (same shape as ``image``)."""
    if method == "log":
        return -(sigma_px**2) * ndimage.gaussian_laplace(image, sigma=sigma_px, mode="reflect")
    if method == "max":
        smooth = ndimage.gaussian_filter(image, sigma=sigma_px, mode="reflect")
        floor = ndimage.minimum_filter(smooth, size=2 * int(np.ceil(spacing_px)) + 1, mode="reflect")
        background = ndimage.gaussian_filter(floor, sigma=spacing_px, mode="reflect")
        return smooth - background
    raise ParameterError(f"unknown detection method {method!r}")


def noise_sd(image: np.ndarray) -> float:
    """Robust estimate of the white-noise sd of an image (Immerkær's mask, median absolute value).

    The mask [[1,−2,1],[−2,4,−2],[1,−2,1]] cancels smooth structure; on white noise of sd s its
    output has sd 6s.
    """
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    filtered = ndimage.convolve(image, mask, mode="reflect")
    sample = np.abs(filtered).ravel()[:: max(1, filtered.size // 1_000_000)]
    return float(1.4826 * np.median(sample) / 6.0)


def _filter_gain(sigma_px: float, spacing_px: float, method: str) -> float:
    """sd of the response to unit white noise (the L2 norm of the filter's impulse response)."""
    size = int(2 * np.ceil(4 * max(sigma_px, 1.0)) + 1)
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    kernel = detection_response(impulse, sigma_px, spacing_px, method) if method == "log" else ndimage.gaussian_filter(impulse, sigma_px)
    return float(np.sqrt(np.sum(kernel**2)))


def automatic_threshold(image: np.ndarray, response: np.ndarray, sigma_px: float, spacing_px: float, method: str, threshold_rel: float) -> float:
    """Response threshold: the larger of 3× the response's noise sd and ``threshold_rel`` × a typical column.

    The typical column height is the 90th percentile of the response at its local maxima.
    """
    noise_floor = 3.0 * noise_sd(image) * _filter_gain(sigma_px, spacing_px, method)
    candidates, heights = find_peaks(response, spacing_px, threshold=-np.inf)
    typical = float(np.percentile(heights, 90)) if heights.size else 0.0
    return max(noise_floor, threshold_rel * typical)


def find_peaks(response: np.ndarray, spacing_px: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``response`` within a disk of radius r = max(1, ⌊spacing/2⌋), above ``threshold``.

    Two passes keep it fast on large scans: maxima of a separable square filter inscribed in the disk
    (half-width ⌊r/√2⌋) give candidates, then each candidate is checked against its full disk. A disk,
    not a square, matters: a square's corners reach a bright neighbour's flank and hide a dim
    column next to it.

    Returns:
        integer peak positions (N, 2) as (row, col), and the response there (N,).
    """
    radius = max(1, int(spacing_px / 2))
    inner = max(1, int(radius / np.sqrt(2)))
    maxima = response == ndimage.maximum_filter(response, size=2 * inner + 1, mode="nearest")
    maxima &= response > threshold
    rows, cols = np.nonzero(maxima)
    peaks = np.stack([rows, cols], axis=1)
    if len(peaks):
        offsets = np.arange(-radius, radius + 1)
        disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2
        padded = np.pad(response, radius, mode="constant", constant_values=-np.inf)
        neighbourhood = padded[peaks[:, 0, None, None] + radius + offsets[None, :, None], peaks[:, 1, None, None] + radius + offsets[None, None, :]]
        highest = np.where(disk, neighbourhood, -np.inf).max(axis=(1, 2))
        peaks = peaks[response[peaks[:, 0], peaks[:, 1]] >= highest]
    if len(peaks) > 1:
        peaks = _merge_plateaus(peaks, radius)
    return peaks, response[peaks[:, 0], peaks[:, 1]]


def _merge_plateaus(peaks: np.ndarray, radius: int) -> np.ndarray:
    """Keep one peak of any group closer than ``radius`` (equal maxima on a flat top)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(peaks)
    pairs = tree.query_pairs(r=radius, output_type="ndarray")
    if len(pairs) == 0:
        return peaks
    drop = np.zeros(len(peaks), bool)
    for first, second in pairs:
        if not drop[first]:
            drop[second] = True
    return peaks[~drop]


# ----------------------------------------------------------------------------------------------
# 4. Refinement


def _windows(image: np.ndarray, centres: np.ndarray, radius: int) -> np.ndarray:
    """(N, 2R+1, 2R+1) windows of ``image`` around integer ``centres`` (edge pixels repeated outside)."""
    padded = np.pad(image, radius, mode="edge")
    offsets = np.arange(-radius, radius + 1)
    rows = centres[:, 0, None, None] + radius + offsets[None, :, None]
    cols = centres[:, 1, None, None] + radius + offsets[None, None, :]
    return padded[rows, cols]


def refinement_radius(sigma_px: float, spacing_px: float) -> int:
    """Half-width of the refinement window: about 2σ, but less than half the spacing."""
    return int(np.clip(np.ceil(2.0 * sigma_px - 1e-6), 2, max(2, int(spacing_px / 2))))


def fit_disk_radius(sigma_px: float, spacing_px: float) -> float:
    """Radius of the disk of pixels a Gaussian fit uses: 2.5σ, at most 0.45 spacing (neighbours stay out)."""
    return float(max(1.5, min(2.5 * sigma_px, 0.45 * spacing_px)))


def refine_center_of_mass(image: np.ndarray, peaks: np.ndarray, sigma_px: float, spacing_px: float, iterations: int = 3) -> np.ndarray:
    """Centre of mass of each column above its window's minimum; the window follows the estimate.

    Returns:
        (N, 2) float64 positions (row, col).
    """
    if len(peaks) == 0:
        return np.zeros((0, 2))
    radius = refinement_radius(sigma_px, spacing_px)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    height, width = image.shape
    centres = peaks.astype(np.int64).copy()
    positions = centres.astype(np.float64)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= (radius + 0.5) ** 2
    for _ in range(iterations):
        windows = _windows(image, centres, radius)
        weights = (windows - windows.min(axis=(1, 2), keepdims=True)) * disk
        total = weights.sum(axis=(1, 2))
        total[total == 0] = 1.0
        row_shift = (weights.sum(axis=2) * offsets).sum(axis=1) / total
        col_shift = (weights.sum(axis=1) * offsets).sum(axis=1) / total
        positions = centres + np.stack([row_shift, col_shift], axis=1)
        new_centres = np.round(positions).astype(np.int64)
        new_centres[:, 0] = np.clip(new_centres[:, 0], 0, height - 1)
        new_centres[:, 1] = np.clip(new_centres[:, 1], 0, width - 1)
        if np.array_equal(new_centres, centres):
            break
        centres = new_centres
    return positions


def refine_gaussian(image: np.ndarray, peaks: np.ndarray, sigma_px: float, spacing_px: float, iterations: int = 12, chunk: int = 16384, progress=None) -> AtomTable:
    """Fit ``A·exp(−d²/2s²) + b0 + b_r·y + b_c·x`` around each peak by batched Levenberg–Marquardt.

    Two passes: all seven parameters free (giving each column's width), then the width fixed at
    the median fitted width and a flat background (lower variance of the positions at low dose).

    All columns are fitted at once (in chunks) with numpy: 7 parameters each, analytic Jacobian,
    per-column damping. A fit that fails (diverges, leaves its window, or returns a non-positive
    amplitude or an implausible width) keeps the centre-of-mass position and is flagged in
    ``fit_ok``.
    """
    count = len(peaks)
    if count == 0:
        empty = np.zeros(0)
        return AtomTable(np.zeros((0, 2)), empty, empty, empty, np.zeros(0, bool))
    start = refine_center_of_mass(image, peaks, sigma_px, spacing_px)
    centres = np.round(start).astype(np.int64)
    centres[:, 0] = np.clip(centres[:, 0], 0, image.shape[0] - 1)
    centres[:, 1] = np.clip(centres[:, 1], 0, image.shape[1] - 1)
    disk_radius = fit_disk_radius(sigma_px, spacing_px)
    radius = int(np.ceil(disk_radius))
    positions = np.empty((count, 2))
    amplitude = np.empty(count)
    width = np.empty(count)
    ok = np.empty(count, bool)
    # Pass 1: every parameter free, to measure the column width. Pass 2: width fixed at the median
    # of the good pass-1 fits and a flat background, which lowers the variance of the positions.
    chunks_done, chunks_total = 0, 2 * ((count + chunk - 1) // chunk)
    for fixed_width in (None, True):
        free = (0, 1, 2, 3, 4, 5, 6) if fixed_width is None else (0, 1, 2, 4)
        for first in range(0, count, chunk):
            if progress is not None:
                progress(chunks_done, chunks_total)
            chunks_done += 1
            part = slice(first, min(first + chunk, count))
            windows = _windows(image, centres[part], radius)
            initial = start[part] - centres[part]
            fitted, good = _fit_gaussians(windows, initial, sigma_px, radius, iterations, disk_radius, free)
            good &= np.hypot(*(fitted[:, 1:3] - initial).T) <= max(1.0, sigma_px)  # wandered off: keep the centre of mass
            positions[part] = np.where(good[:, None], centres[part] + fitted[:, 1:3], start[part])
            amplitude[part] = fitted[:, 0]
            width[part] = np.where(good, fitted[:, 3], sigma_px)
            ok[part] = good
        if fixed_width is None and ok.any():
            sigma_px = float(np.median(width[ok]))
    if progress is not None:
        progress(chunks_total, chunks_total)
    return AtomTable(positions, amplitude, width, np.zeros(count), ok)


def _fit_gaussians(windows: np.ndarray, initial_offsets: np.ndarray, sigma_px: float, radius: int, iterations: int, disk_radius: float, free: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)) -> tuple[np.ndarray, np.ndarray]:
    """Batched LM fit. windows (N, P, P); returns parameters (N, 7) [A, r0, c0, s, b0, br, bc] and ok (N,).

    Only pixels within ``disk_radius`` of the window centre enter the fit (a square window's corners
    would reach the flanks of neighbouring columns and pull a dim column towards them). The
    Jacobian is laid out (N, 7, pixels) so that JᵀJ is one batched matrix product; columns that
    have converged (step below 10⁻⁴ px) drop out of later iterations. ``free`` lists the parameters
    that are fitted; the others stay at their starting values (σ = ``sigma_px``, plane = 0).
    """
    count = len(windows)
    free_index = np.array(free)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    y = np.broadcast_to(offsets[:, None], windows.shape[1:]).ravel()
    x = np.broadcast_to(offsets[None, :], windows.shape[1:]).ravel()
    in_disk = (y**2 + x**2) <= disk_radius**2
    y, x = y[in_disk], x[in_disk]
    data = windows.reshape(count, -1)[:, in_disk].astype(np.float64)
    low = data.min(axis=1)
    params = np.stack(
        [data.max(axis=1) - low, initial_offsets[:, 0], initial_offsets[:, 1], np.full(count, sigma_px), low, np.zeros(count), np.zeros(count)],
        axis=1,
    )

    def residuals_and_jacobian(p, values):
        amp, r0, c0, s, b0, br, bc = (p[:, i : i + 1] for i in range(7))
        dy, dx = y[None, :] - r0, x[None, :] - c0
        d2 = dy**2 + dx**2
        g = np.exp(-d2 / (2 * s**2))
        scaled = amp * g / s**2
        jac = np.empty((len(p), 7, len(y)))
        jac[:, 0] = g
        jac[:, 1] = scaled * dy
        jac[:, 2] = scaled * dx
        jac[:, 3] = scaled * d2 / s
        jac[:, 4] = 1.0
        jac[:, 5] = y
        jac[:, 6] = x
        residual = values - (amp * g + b0 + br * y[None, :] + bc * x[None, :])
        return residual, jac

    residual, jacobian = residuals_and_jacobian(params, data)
    cost = np.einsum("np,np->n", residual, residual)
    damping = np.full(count, 1e-2)
    active = np.arange(count)
    eye = np.eye(len(free_index))
    for _ in range(iterations):
        if active.size == 0:
            break
        jac, res = jacobian[active][:, free_index], residual[active]
        jtj = jac @ jac.transpose(0, 2, 1)
        jtr = (jac @ res[:, :, None])[:, :, 0]
        diagonal = np.diagonal(jtj, axis1=1, axis2=2)
        system = jtj + damping[active, None, None] * (diagonal[:, :, None] * eye + 1e-9 * eye)
        try:
            free_step = np.linalg.solve(system, jtr[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            free_step = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(system, jtr)])
        step = np.zeros((len(active), 7))
        step[:, free_index] = free_step
        trial = params[active] + step
        trial[:, 3] = np.abs(trial[:, 3])
        trial_residual, trial_jacobian = residuals_and_jacobian(trial, data[active])
        trial_cost = np.einsum("np,np->n", trial_residual, trial_residual)
        better = np.isfinite(trial_cost) & (trial_cost < cost[active])
        improved = active[better]
        params[improved] = trial[better]
        residual[improved] = trial_residual[better]
        jacobian[improved] = trial_jacobian[better]
        cost[improved] = trial_cost[better]
        damping[active] = np.where(better, damping[active] / 3.0, damping[active] * 4.0)
        converged = better & (np.abs(step[:, 1:3]).max(axis=1) < 1e-4)
        stuck = damping[active] > 1e6
        active = active[~(converged | stuck)]
    inside = (np.abs(params[:, 1]) <= radius) & (np.abs(params[:, 2]) <= radius)
    plausible = (params[:, 0] > 0) & (params[:, 3] > 0.25 * sigma_px) & (params[:, 3] < 4 * sigma_px + 1)
    return params, inside & plausible & np.all(np.isfinite(params), axis=1)


def keep_inside(table: AtomTable, shape: tuple[int, int]) -> AtomTable:
    """Drop atoms whose refined position lies outside the image ([−0.5, H−0.5) × [−0.5, W−0.5))."""
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
    )
