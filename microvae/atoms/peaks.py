"""3. Peaks and threshold: the noise level, the significance test, local maxima within a disk."""

from __future__ import annotations

import numpy as np

from .backend import array_module, like, percentiles, to_numpy
from .response import gaussian_kernels

__all__ = [
    "NEIGHBOUR_SHARE",
    "SPIKE_RATIO",
    "automatic_threshold",
    "disk_maxima",
    "disk_offsets",
    "filter_gain",
    "find_peaks",
    "gather",
    "inner_of",
    "inner_radius",
    "maxima_radius",
    "noise_sd",
    "significance_threshold",
    "square_maxima",
    "stands_out_from_noise",
    "threshold_from",
]


def noise_sd(image) -> float:
    """Robust estimate of the white-noise sd of an image (Immerkær's mask, median absolute value).

    The mask [[1,−2,1],[−2,4,−2],[1,−2,1]] (the outer product of [1,−2,1] with itself) cancels smooth
    structure; on white noise of sd s its output has sd 6s. It is evaluated on every k-th row (all
    columns), k chosen for about 2.5·10⁵ pixels, with "reflect" edges (for a one-pixel reach the same as
    repeating the edge pixel). Works on numpy arrays and torch tensors.

    Parameters
    ----------
    image : ndarray or Tensor
        (H, W) image.

    Returns
    -------
    float
        The noise sd, in the image's intensity units (1.4826 × median |mask output| / 6).
    """
    height, width = image.shape
    step = max(1, (height * width) // 250_000)
    step = min(step, height)
    rows = np.arange(0, height, step)
    take = lambda r: image[like(np.clip(r, 0, height - 1), image)]  # noqa: E731
    across = take(rows - 1) - 2 * take(rows) + take(rows + 1)
    filtered = across * 1.0
    filtered[:, 1:-1] = across[:, :-2] - 2 * across[:, 1:-1] + across[:, 2:]
    if width > 1:
        filtered[:, 0] = across[:, 1] - across[:, 0]
        filtered[:, -1] = across[:, -2] - across[:, -1]
    else:
        filtered[:, 0] = 0
    median = percentiles(array_module(filtered).abs(filtered.reshape(-1)), [50.0])[0]
    return float(1.4826 * median / 6.0)


def filter_gain(sigma_px: float, spacing_px: float, method: str) -> float:
    """sd of the response to unit white noise (the L2 norm of the filter's impulse response).

    Parameters
    ----------
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px (unused: the gain of "max" is taken as that of the σ Gaussian).
    method : str
        "log" (the LoG kernel) or any other (the 2D Gaussian kernel).

    Returns
    -------
    float
        The gain (response sd per unit noise sd).
    """
    gauss, log = gaussian_kernels(sigma_px)
    kernel = np.outer(log, gauss) + np.outer(gauss, log) if method == "log" else np.outer(gauss, gauss)
    return float(np.sqrt(np.sum(kernel**2)))


def threshold_from(noise: float, gain: float, heights, threshold_rel: float) -> float:
    """The larger of 3× the response's noise sd and ``threshold_rel`` × the 90th percentile of ``heights``.

    Parameters
    ----------
    noise : float
        Noise sd of the image (:func:`noise_sd`).
    gain : float
        The filter's noise gain (:func:`filter_gain`): the response's noise sd is ``noise · gain``.
    heights : ndarray or Tensor
        (N,) response at the local maxima (none: a typical height of 0).
    threshold_rel : float
        Fraction of the typical column height.

    Returns
    -------
    float
        The threshold, in response units.
    """
    typical = float(percentiles(heights, [90.0])[0]) if heights.shape[0] else 0.0
    return max(3.0 * noise * gain, threshold_rel * typical)


SPIKE_RATIO = 2.0  # LoG response at σ/2 over that at σ above which a peak is one bright pixel, not a column
NEIGHBOUR_SHARE = 0.25  # below σ = 0.9 px: a column's 4 neighbours reach this share of its peak above the floor


def significance_threshold(shape: tuple[int, int], sigma_px: float) -> float:
    """z (response over its noise sd) that the tallest peaks of pure noise do not reach in an image of ``shape``.

    The maximum of N_eff ≈ H·W / (4πσ²) roughly independent Gaussian response values lies near
    √(2 ln N_eff); 3 sd are added for noise that is not Gaussian, and 12/√(min(H, W)) for small
    images, whose noise level is itself estimated from few pixels. About 8 for 10²–10⁴ px scans,
    9 for an 8×8 array. Measured: the tallest peak of uniform, Gaussian and Poisson noise stays
    below it (``tests/test_atoms.py::test_noise_is_not_a_lattice``).

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image, in px.
    sigma_px : float
        Column width σ in px.

    Returns
    -------
    float
        The threshold z, in noise sds.
    """
    height, width = shape
    effective = max(height * width / (4.0 * np.pi * sigma_px**2), 1.0)
    return float(np.sqrt(2.0 * np.log(effective)) + 3.0 + 12.0 / np.sqrt(max(min(height, width), 1)))


def stands_out_from_noise(image, peaks, heights, sigma_px: float, noise: float, checked: int = 64) -> bool:
    """True when the image holds columns: some of its tallest peaks are far above the noise and are
    blobs about σ wide rather than single bright pixels.

    Of the ``checked`` tallest ``peaks`` (N, 2 integers; ``heights`` their response), those whose
    scale-normalised LoG response at σ, in units of its noise sd, reaches
    :func:`significance_threshold` and that are blobs count; at least min(3, N) must. A blob: for
    σ ≥ 0.9 px, the response at σ/2 is less than :data:`SPIKE_RATIO` times that at σ (a column of
    width σ gives 0.64, a single-pixel spike 4); for narrower columns, whose two scales a pixel
    tells apart less well (0.8 px columns give 2.5), the ratio is below 1.5 × that and the 4
    neighbours rise to :data:`NEIGHBOUR_SHARE` of its height above the local floor. The response is recomputed here from ``image``, so the test is the same
    whatever the detection method.

    Parameters
    ----------
    image : ndarray or Tensor
        (H, W) prepared image.
    peaks : ndarray or Tensor
        (N, 2) integer peak positions (row, col).
    heights : ndarray or Tensor
        (N,) detection response at the peaks (only their order is used).
    sigma_px : float
        Column width σ in px.
    noise : float
        Noise sd of the image; where it is ≤ 0 the plain (non-robust) estimate is used, and if
        that is also 0 the image is taken to hold columns.
    checked : int, default 64
        How many of the tallest peaks are tested.

    Returns
    -------
    bool
        Whether at least min(3, N) of them pass (False when there are no peaks).
    """
    count = int(peaks.shape[0])
    if count == 0:
        return False
    if noise <= 0:  # the robust estimate is 0 where most pixels are equal (sparse counts): use the plain sd
        noise = _plain_noise_sd(image)
        if noise <= 0:
            return True
    order = to_numpy(heights).argsort()[::-1][:checked].copy()
    top = peaks[like(order, peaks)]
    full = _log_at(image, top, sigma_px)
    z = full / (noise * filter_gain(sigma_px, 4 * sigma_px, "log"))
    ratio = _log_at(image, top, sigma_px / 2.0) / np.where(full > 0, full, np.inf)
    if sigma_px >= 0.9:
        blob = ratio < SPIKE_RATIO
    else:  # too narrow for two scales alone: a column's 4 neighbours also rise above the local floor
        blob = (ratio < 1.5 * SPIKE_RATIO) & (_neighbour_share(image, top, sigma_px) >= NEIGHBOUR_SHARE)
    passing = (z >= significance_threshold(tuple(image.shape), sigma_px)) & blob
    return int(passing.sum()) >= min(3, count)


def _neighbour_share(image, points, sigma_px: float) -> np.ndarray:
    """(N,) mean of the 4 neighbours of each integer point over the point itself, both above the
    median of a ring 3σ + 1 px out (a Gaussian column of σ ≥ 0.7 px gives ≥ 0.36, a single bright
    pixel about 0)."""
    radius = 3 * sigma_px + 1
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring_rows, ring_cols = np.round(radius * np.sin(angles)).astype(np.int64), np.round(radius * np.cos(angles)).astype(np.int64)
    floor = np.median(to_numpy(gather(image, points, ring_rows, ring_cols), np.float64), axis=0)
    values = to_numpy(gather(image, points, np.array([0, -1, 1, 0, 0]), np.array([0, 0, 0, -1, 1])), np.float64)
    peak = values[0] - floor
    return np.where(peak > 0, (values[1:].mean(axis=0) - floor) / np.where(peak > 0, peak, 1.0), 0.0)


def _plain_noise_sd(image) -> float:
    """sd of Immerkær's mask over the image / 6: the white-noise sd, not robust to structure."""
    data = to_numpy(image, np.float64)
    if min(data.shape) < 3:
        return 0.0
    filtered = (
        data[:-2, :-2]
        - 2 * data[:-2, 1:-1]
        + data[:-2, 2:]
        - 2 * (data[1:-1, :-2] - 2 * data[1:-1, 1:-1] + data[1:-1, 2:])
        + data[2:, :-2]
        - 2 * data[2:, 1:-1]
        + data[2:, 2:]
    )
    return float(filtered.std() / 6.0)


def _log_at(image, points, sigma_px: float) -> np.ndarray:
    """(N,) float64 scale-normalised LoG response of ``image`` at integer ``points`` (N, 2), edges repeated."""
    gauss, log = gaussian_kernels(sigma_px)
    kernel = np.outer(log, gauss) + np.outer(gauss, log)
    radius = len(gauss) // 2
    rows, cols = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    values = to_numpy(gather(image, points, rows.ravel(), cols.ravel()), np.float64)  # (K, N)
    return kernel.ravel() @ values


def automatic_threshold(image: np.ndarray, response: np.ndarray, sigma_px: float, spacing_px: float, method: str, threshold_rel: float) -> float:
    """Response threshold: the larger of 3× the response's noise sd and ``threshold_rel`` × a typical column.

    The typical column height is the 90th percentile of the response at its local maxima.

    Parameters
    ----------
    image : ndarray
        (H, W) prepared image (its noise sd).
    response : ndarray
        (H, W) detection response.
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px (the local maxima's disk radius).
    method : str
        The detection method ("log" or "max"), for the filter's noise gain.
    threshold_rel : float
        Fraction of the typical column height.

    Returns
    -------
    float
        The threshold, in response units.
    """
    _, heights = find_peaks(response, spacing_px, threshold=-np.inf)
    return threshold_from(noise_sd(image), filter_gain(sigma_px, spacing_px, method), heights, threshold_rel)


def maxima_radius(spacing_px: float) -> int:
    """Radius of the disk within which a peak must be the maximum.

    Parameters
    ----------
    spacing_px : float
        Column spacing in px.

    Returns
    -------
    int
        max(1, ⌊spacing / 2⌋) px.
    """
    return max(1, int(spacing_px / 2))


def inner_of(radius: int) -> int:
    """Half-width of the square inscribed in a disk of ``radius`` (the cheap first pass of the peak search).

    Parameters
    ----------
    radius : int
        The disk's radius in px.

    Returns
    -------
    int
        max(1, ⌊radius / √2⌋) px.
    """
    return max(1, int(radius / np.sqrt(2)))


def inner_radius(spacing_px: float) -> int:
    """Half-width of the square inscribed in the maxima disk of ``spacing_px``.

    Parameters
    ----------
    spacing_px : float
        Column spacing in px.

    Returns
    -------
    int
        ``inner_of(maxima_radius(spacing_px))`` px.
    """
    return inner_of(maxima_radius(spacing_px))


def find_peaks(response: np.ndarray, spacing_px: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``response`` within a disk of radius r = max(1, ⌊spacing/2⌋), above ``threshold``.

    Two passes keep it fast on large scans: maxima of a separable square filter inscribed in the disk
    (half-width ⌊r/√2⌋) give candidates, then each candidate is checked against the rest of its
    disk. A disk, not a square, matters: a square's corners reach a bright neighbour's flank and hide
    a dim column next to it.

    Parameters
    ----------
    response : ndarray
        (H, W) detection response (numpy array or torch tensor).
    spacing_px : float
        Column spacing in px (sets r).
    threshold : float
        Keep peaks whose response is strictly above this.

    Returns
    -------
    tuple[ndarray, ndarray]
        Integer peak positions (N, 2) as (row, col), and the response there (N,).
    """
    peaks, heights = disk_maxima(response, square_maxima(response, inner_radius(spacing_px)), maxima_radius(spacing_px))
    keep = heights > threshold
    return peaks[keep], heights[keep]


def square_maxima(response, inner: int):
    """(N, 2) positions where ``response`` equals its maximum over a (2·inner+1)² square (row-major order).

    Parameters
    ----------
    response : ndarray or Tensor
        (H, W) response ("nearest" edges).
    inner : int
        Half-width of the square, in px.

    Returns
    -------
    ndarray or Tensor
        (N, 2) int64 (row, col), of the response's kind.
    """
    from scipy import ndimage

    if isinstance(response, np.ndarray):
        maxima = response == ndimage.maximum_filter(response, size=2 * inner + 1, mode="nearest")
        return np.stack(np.nonzero(maxima), axis=1)
    import torch
    import torch.nn.functional as F

    pooled = F.max_pool2d(response[None, None], 2 * inner + 1, stride=1, padding=inner)[0, 0]
    return torch.nonzero(response == pooled)


def disk_offsets(radius: float, inner: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (rows, cols) of the pixels within ``radius`` of the centre, leaving out the
    (2·inner+1)² square (``inner`` = −1: keep all).

    Parameters
    ----------
    radius : float
        Disk radius in px.
    inner : int, default -1
        Half-width of the square to leave out, in px.

    Returns
    -------
    tuple of ndarray
        (rows, cols), each (K,) int offsets, row-major.
    """
    reach = int(np.floor(radius))
    rows, cols = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    keep = (rows**2 + cols**2 <= radius**2) & ~((np.abs(rows) <= inner) & (np.abs(cols) <= inner))
    return rows[keep], cols[keep]


def gather(image, centres, row_offsets: np.ndarray, col_offsets: np.ndarray, fill=None):
    """(K, N) values of ``image`` at ``centres`` (N, 2 integers) + the K offsets (offsets first: the
    reductions over a window then run along contiguous rows of N values, which vectorises well).

    Outside the image the edge pixel is repeated, or ``fill`` is used when given. Works on numpy arrays
    and torch tensors; interior centres are read by flat indices (one gather), the few near the edges
    by clipped (row, col) indices.

    Parameters
    ----------
    image : ndarray or Tensor
        (H, W) image.
    centres : ndarray or Tensor
        (N, 2) integer (row, col), of the image's kind.
    row_offsets, col_offsets : ndarray
        (K,) integer offsets in px.
    fill : scalar, optional
        Value outside the image; None repeats the edge pixel.

    Returns
    -------
    ndarray or Tensor
        (K, N) values, in the image's dtype.
    """
    xp = array_module(image)
    height, width = image.shape
    count = centres.shape[0]
    flat = image.reshape(-1)
    reach_rows, reach_cols = int(np.abs(row_offsets).max(initial=0)), int(np.abs(col_offsets).max(initial=0))
    rows, cols = centres[:, 0], centres[:, 1]
    interior = (rows >= reach_rows) & (rows < height - reach_rows) & (cols >= reach_cols) & (cols < width - reach_cols)
    flat_offsets = like(row_offsets * width + col_offsets, centres)[:, None]
    if bool(interior.all()):
        return flat[flat_offsets + (rows * width + cols)[None, :]]
    out = np.empty((len(row_offsets), count), dtype=image.dtype) if xp is np else image.new_empty((len(row_offsets), count))
    inside = xp.where(interior)[0]
    outside = xp.where(~interior)[0]
    out[:, inside] = flat[flat_offsets + (rows[inside] * width + cols[inside])[None, :]]
    edge_rows = rows[outside][None, :] + like(row_offsets, centres)[:, None]
    edge_cols = cols[outside][None, :] + like(col_offsets, centres)[:, None]
    values = image[edge_rows.clip(0, height - 1), edge_cols.clip(0, width - 1)]
    if fill is not None:
        off_image = (edge_rows < 0) | (edge_rows >= height) | (edge_cols < 0) | (edge_cols >= width)
        values = xp.where(off_image, fill, values)
    out[:, outside] = values
    return out


def disk_maxima(response, candidates, radius: int):
    """The candidates (square maxima) that are also maxima of their disk of ``radius``, and their
    response; one peak of any flat top (equal maxima closer than ``radius``) is kept.

    Parameters
    ----------
    response : ndarray or Tensor
        (H, W) response.
    candidates : ndarray or Tensor
        (N, 2) integer (row, col) square maxima (:func:`square_maxima`).
    radius : int
        Disk radius in px (outside the image counts as −∞).

    Returns
    -------
    peaks : ndarray or Tensor
        (M, 2) integer (row, col) kept.
    heights : ndarray or Tensor
        (M,) their response.
    """
    xp = array_module(response)
    if candidates.shape[0] == 0:
        return candidates, response[candidates[:, 0], candidates[:, 1]]
    ring_rows, ring_cols = disk_offsets(radius, inner_of(radius))
    heights = response[candidates[:, 0], candidates[:, 1]]
    if len(ring_rows):
        ring = gather(response, candidates, ring_rows, ring_cols, fill=-np.inf)
        keep = heights >= xp.amax(ring, axis=0)
        candidates, heights = candidates[keep], heights[keep]
    return _merge_plateaus(candidates, heights, radius)


def _merge_plateaus(peaks, heights, radius: int):
    """Keep one peak of any group closer than ``radius`` (equal maxima on a flat top).

    Two distinct disk maxima closer than the disk radius must have exactly equal heights, so only
    peaks whose height occurs more than once are searched for neighbours (in row-major order, the
    first of a pair is kept).
    """
    from scipy.spatial import cKDTree

    xp = array_module(heights)
    if peaks.shape[0] < 2:
        return peaks, heights
    values = np.sort(heights) if xp is np else xp.sort(heights).values
    if not bool((values[1:] == values[:-1]).any()):
        return peaks, heights  # no repeated height: no flat top (the usual case)
    order = np.argsort(heights, kind="stable") if xp is np else xp.argsort(heights, stable=True)
    values = heights[order]
    same = values[1:] == values[:-1]
    repeated = to_numpy(xp.unique(xp.concatenate([order[1:][same], order[:-1][same]])))
    positions = to_numpy(peaks[like(repeated, peaks)])
    pairs = cKDTree(positions).query_pairs(r=radius, output_type="ndarray")
    if len(pairs) == 0:
        return peaks, heights
    pairs = np.sort(repeated[pairs], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    drop = np.zeros(peaks.shape[0], bool)
    for first, second in pairs:
        if not drop[first]:
            drop[second] = True
    keep = like(~drop, peaks)
    return peaks[keep], heights[keep]
