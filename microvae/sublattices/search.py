"""The second search: columns a first search passed over, found in the residual once the columns
found are rendered and subtracted (:func:`find_dim_columns`); on large scans, tried first on a
central crop (:func:`worth_searching`).

Conventions (those of :mod:`microvae.sublattices`): (H, W) float images scaled as
:func:`microvae.atoms.prepare_image` scales them, positions (row, col) in pixels with pixel
(r, c) centred at (r, c), widths σ in pixels, covariances [c_rr, c_rc, c_cc] in px².
"""

from __future__ import annotations

import numpy as np

from .models import render_columns

__all__ = [
    "MIN_RELATIVE_HEIGHT",
    "MIN_ROUNDNESS",
    "MIN_SIGNIFICANCE",
    "PROBE_SIZE",
    "SHARPNESS",
    "WEAK_RELATIVE_HEIGHT",
    "column_like",
    "find_dim_columns",
    "worth_searching",
]

MIN_SIGNIFICANCE = 6.0  # residual response over its noise sd for a new column
MIN_RELATIVE_HEIGHT = 0.1  # residual response over a typical bright column's response
# Weaker peaks (down to WEAK_RELATIVE_HEIGHT) are columns only when they look like one: round
# (Hessian eigenvalue ratio ≥ MIN_ROUNDNESS; the misfit rings of ABF columns are saddles) and as
# sharp as a column of the first search's width (LoG response over height within SHARPNESS of a
# Gaussian's; the broad misfit of a distorted scan is flatter, ring crests sharper).
WEAK_RELATIVE_HEIGHT = 0.03
MIN_ROUNDNESS = 0.4
SHARPNESS = (0.5, 1.25)


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

    Parameters
    ----------
    image : ndarray
        (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
    positions : ndarray
        (N, 2) (row, col) of the columns found, px.
    amplitudes : ndarray
        (N,) fitted heights above the local background.
    sigma_px : ndarray
        (N,) fitted widths σ, px.
    filter_sigma_px : float
        σ of the LoG filter, px.
    typical_response : float
        The 90th percentile of the first search's peak responses.
    noise : float
        The image's white-noise sd.

    Returns
    -------
    peaks : ndarray
        (M, 2) int64 (row, col) of the new columns, px (empty when no column was found).
    heights : ndarray
        (M,) float64 starting heights: the residual, smoothed by a Gaussian of the columns' width,
        at the peak.
    """
    from scipy.spatial import cKDTree

    from ..atoms.peaks import disk_maxima, filter_gain, inner_of
    from ..atoms.response import log_response_and_maxima

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
    weak = ~tall & (heights >= WEAK_RELATIVE_HEIGHT * typical_response) & clear & inside & significant
    from scipy import ndimage

    width_px = float(np.median(sigma_px))
    smooth = ndimage.gaussian_filter(residual, width_px / np.sqrt(2), mode="nearest")
    if weak.any():
        weak[weak] = column_like(smooth, peaks[weak], heights[weak], width_px, filter_sigma_px, radius)
    keep = clear & inside & significant & (tall | weak)
    peaks = peaks[keep].astype(np.int64)
    return peaks, 2.0 * smooth[peaks[:, 0], peaks[:, 1]].astype(np.float64)  # a Gaussian smoothed by σ/√2 keeps half its height


def column_like(smooth: np.ndarray, peaks: np.ndarray, responses: np.ndarray, width_px: float, filter_sigma_px: float, radius: int) -> np.ndarray:
    """Which residual peaks look like a column of width ``width_px``: round, and as sharp as one.

    Parameters
    ----------
    smooth : ndarray
        (H, W) residual smoothed by a Gaussian of σ = ``width_px``/√2 (a column of height A and
        width ``width_px`` peaks there at A/2).
    peaks : ndarray
        (M, 2) integer (row, col) of the peaks, at least 1 px inside the image.
    responses : ndarray
        (M,) LoG responses of the residual at the peaks (filter σ ``filter_sigma_px``).
    width_px, filter_sigma_px : float
        The columns' median width σ and the LoG filter's σ, px.
    radius : int
        The disk radius of the response's maxima, px (as :func:`find_dim_columns` uses it).

    Returns
    -------
    ndarray
        (M,) bool: the smoothed residual's Hessian at the peak has two negative eigenvalues whose
        ratio (smaller over larger magnitude) is at least :data:`MIN_ROUNDNESS`, and the response
        over the smoothed height is within :data:`SHARPNESS` times that of a Gaussian column of
        width ``width_px``.
    """
    from ..atoms.peaks import inner_of
    from ..atoms.response import log_response_and_maxima

    rows, cols = peaks[:, 0], peaks[:, 1]
    centre = smooth[rows, cols].astype(np.float64)
    d_rr = smooth[rows + 1, cols] + smooth[rows - 1, cols] - 2 * centre
    d_cc = smooth[rows, cols + 1] + smooth[rows, cols - 1] - 2 * centre
    d_rc = 0.25 * (smooth[rows + 1, cols + 1] + smooth[rows - 1, cols - 1] - smooth[rows + 1, cols - 1] - smooth[rows - 1, cols + 1])
    half_trace, determinant = 0.5 * (d_rr + d_cc), d_rr * d_cc - d_rc**2
    spread = np.sqrt(np.maximum(half_trace**2 - determinant, 0.0))
    steep, shallow = half_trace - spread, half_trace + spread  # steep ≤ shallow
    round_peak = (steep < 0) & (shallow <= MIN_ROUNDNESS * steep)  # both negative, |shallow| ≥ r·|steep|
    side = int(8 * width_px + 8) | 1  # the same measurement on a lone Gaussian column of height 1
    offsets = np.arange(side) - side // 2
    probe = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * width_px**2)).astype(np.float32)
    probe_response, _ = log_response_and_maxima(probe, filter_sigma_px, inner_of(radius))
    expected = float(probe_response[side // 2, side // 2]) / float(ndimage_smooth_peak(probe, width_px))
    sharpness = responses / np.maximum(centre, 1e-12) / expected
    return round_peak & (sharpness >= SHARPNESS[0]) & (sharpness <= SHARPNESS[1])


def ndimage_smooth_peak(probe: np.ndarray, width_px: float) -> float:
    """The centre value of ``probe`` smoothed as :func:`find_dim_columns` smooths the residual."""
    from scipy import ndimage

    side = probe.shape[0]
    return float(ndimage.gaussian_filter(probe, width_px / np.sqrt(2), mode="nearest")[side // 2, side // 2])


PROBE_SIZE = 1024  # scans larger than this are searched on a central crop of this size first


def worth_searching(image, positions, amplitudes, widths, filter_sigma_px, typical_response, noise) -> bool:
    """On a scan larger than ``PROBE_SIZE``², True when the second search finds new columns on its
    central ``PROBE_SIZE``² crop: at least 1 % of the crop's columns (a lattice is homogeneous
    enough that a missed sublattice shows there). Smaller scans are always searched.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
    positions : numpy.ndarray
        (N, 2) (row, col) of the columns found, in pixels.
    amplitudes, widths : numpy.ndarray
        (N,) fitted heights above the local background, and widths σ in pixels.
    filter_sigma_px, typical_response, noise : float
        As :func:`find_dim_columns` takes them.

    Returns
    -------
    bool
        Whether :func:`find_dim_columns` should search the whole scan.
    """
    height, width = image.shape
    if max(height, width) <= PROBE_SIZE:
        return True
    top, left = max(0, (height - PROBE_SIZE) // 2), max(0, (width - PROBE_SIZE) // 2)
    corner = np.array([top, left])
    inside = ((positions >= corner - 20) & (positions < corner + PROBE_SIZE + 20)).all(axis=1)
    crop = image[top : top + PROBE_SIZE, left : left + PROBE_SIZE]
    found, _ = find_dim_columns(crop, positions[inside] - corner, amplitudes[inside], widths[inside], filter_sigma_px, typical_response, noise)
    return len(found) >= max(3, 0.01 * inside.sum())
