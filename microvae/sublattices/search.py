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
    "MIN_SIGNIFICANCE",
    "PROBE_SIZE",
    "find_dim_columns",
    "worth_searching",
]

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
    peaks = peaks[clear & inside & significant & tall].astype(np.int64)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(residual, float(np.median(sigma_px)) / np.sqrt(2), mode="nearest")
    return peaks, 2.0 * smooth[peaks[:, 0], peaks[:, 1]].astype(np.float64)  # a Gaussian smoothed by σ/√2 keeps half its height


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
