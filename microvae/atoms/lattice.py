"""0. Scaling and 1. the lattice estimate: spacing and column width from the autocorrelation."""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ParameterError
from .backend import as_float32, f64, like, percentiles, to_numpy
from .tables import LatticeEstimate

__all__ = ["estimate_lattice", "prepare_image"]


def prepare_image(image, invert: bool = False):
    """float32 copy scaled to [0, 1] by its 0.1–99.9 percentiles; inverted for dark-column contrast.

    A numpy array gives a numpy array; a torch tensor gives a tensor on its device. The percentiles
    come from ≤ 4·10⁶ evenly strided pixels.

    Parameters
    ----------
    image : array_like or Tensor
        (H, W) image, any dtype.
    invert : bool, default False
        Return 1 − scaled (dark columns become bright).

    Returns
    -------
    ndarray or Tensor
        (H, W) float32 scaled image (values outside the percentiles fall outside [0, 1]); when
        the percentiles coincide, scaled by the minimum and maximum instead.

    Raises
    ------
    ParameterError
        When ``image`` is not 2D.
    """
    if isinstance(image, np.ndarray) or not hasattr(image, "device"):
        data = as_float32(image)
    else:
        if image.ndim != 2:
            raise ParameterError(f"atom finding needs one 2D image, got shape {tuple(image.shape)}")
        data = image.float().contiguous()
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.shape[0] // 2_000_000)]
    low, high = percentiles(sample, [0.1, 99.9])
    if high <= low:
        low, high = float(flat.min()), float(flat.max())
    # the same float32 operands on both engines (numpy and torch round alike)
    scaled = (data - float(np.float32(low))) / float(np.float32(max(high - low, 1e-12)))
    return 1.0 - scaled if invert else scaled


# ----------------------------------------------------------------------------------------------
# 1. Lattice estimate


def estimate_lattice(image, max_size: int = 1024) -> LatticeEstimate:
    """Estimate column spacing and width from the autocorrelation of (a central crop of) the image.

    The autocorrelation of a lattice of Gaussian columns of width σ has a central peak of width
    σ√2 and side peaks at the lattice vectors. The spacing is the distance to the nearest side peak
    at least a quarter as high as the strongest; σ comes from the decay of the central peak between
    lags 1 and 2 pixels (lag 0 is skipped: white noise adds a spike there). ``image``: numpy array
    or torch tensor (the FFT then runs on its device, in float64).

    Parameters
    ----------
    image : ndarray or Tensor
        (H, W) image (e.g. from :func:`prepare_image`).
    max_size : int, default 1024
        Side of the central crop, in px (the whole image when smaller).

    Returns
    -------
    LatticeEstimate
        ``spacing_px`` and ``sigma_px`` in px (σ clipped to 0.5 … spacing/3) with ``periodic``
        True; without a side peak above 0.02 of the central one, ``periodic`` False and the
        spacing a guess of max(4σ, 4) px.
    """
    from scipy import ndimage

    height, width = image.shape
    crop = image[(height - min(height, max_size)) // 2 :, (width - min(width, max_size)) // 2 :][:max_size, :max_size]
    crop = f64(crop)
    crop = crop - crop.mean()
    shape = tuple(crop.shape)
    window, high_pass = _autocorrelation_filters(shape)
    if isinstance(crop, np.ndarray):
        spectrum = np.fft.rfft2(crop * window) * high_pass
        autocorr = np.fft.fftshift(np.fft.irfft2(np.abs(spectrum) ** 2, s=shape))
    else:
        import torch

        spectrum = torch.fft.rfft2(crop * like(window, crop)) * like(high_pass, crop)
        autocorr = torch.fft.fftshift(torch.fft.irfft2(spectrum.abs() ** 2, s=shape))
    centre = np.array(shape) // 2
    # Only lags below a quarter of the crop count; cut the autocorrelation to them (plus one pixel
    # for the 3×3 maximum filter) before the peak search.
    reach = min(shape) // 4 + 1
    top, left = max(centre[0] - reach, 0), max(centre[1] - reach, 0)
    autocorr = autocorr[top : centre[0] + reach + 1, left : centre[1] + reach + 1]
    centre = centre - (top, left)
    autocorr = autocorr / autocorr[centre[0], centre[1]]
    near = to_numpy(autocorr[max(centre[0] - 8, 0) : centre[0] + 9, max(centre[1] - 8, 0) : centre[1] + 9])
    sigma = _central_peak_sigma(near, np.array([min(centre[0], 8), min(centre[1], 8)]))
    rows = np.arange(autocorr.shape[0])[:, None] - centre[0]
    cols = np.arange(autocorr.shape[1])[None, :] - centre[1]
    radius = np.hypot(rows, cols)
    region = (radius > max(2.5 * sigma, 2.0)) & (radius < min(shape) / 4)
    if isinstance(autocorr, np.ndarray):
        local_max = (autocorr == ndimage.maximum_filter(autocorr, size=3)) & region
        heights, radii = autocorr[local_max], radius[local_max]
    else:
        import torch.nn.functional as F

        pooled = F.max_pool2d(autocorr[None, None], 3, stride=1, padding=1)[0, 0]
        local_max = to_numpy(autocorr == pooled) & region
        heights, radii = to_numpy(autocorr)[local_max], radius[local_max]
    if heights.size == 0 or heights.max() <= 0.02:
        return LatticeEstimate(spacing_px=max(4.0 * sigma, 4.0), sigma_px=sigma, periodic=False)
    strong = heights >= 0.25 * heights.max()
    spacing = float(radii[strong].min())
    sigma = float(np.clip(sigma, 0.5, spacing / 3.0))
    return LatticeEstimate(spacing_px=spacing, sigma_px=sigma, periodic=True)


@functools.lru_cache(maxsize=8)
def _autocorrelation_filters(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The Hann window of a crop and the high-pass (on the rfft2 grid) that removes structure slower
    than a twelfth of the crop (backgrounds). Cached: read-only."""
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    freq_rows = np.fft.fftfreq(shape[0])[:, None]
    freq_cols = np.fft.rfftfreq(shape[1])[None, :]
    slow_sigma = max(shape) / 12.0
    high_pass = 1.0 - np.exp(-2.0 * (np.pi * slow_sigma) ** 2 * (freq_rows**2 + freq_cols**2))
    window.flags.writeable = high_pass.flags.writeable = False
    return window, high_pass


def _central_peak_sigma(autocorr: np.ndarray, centre: np.ndarray) -> float:
    """σ of one column from the autocorrelation's central peak, using lags 1–8 along both axes."""
    row, col = centre

    def at_lag(lag: int) -> float:
        return float(np.mean([autocorr[row + lag, col], autocorr[row - lag, col], autocorr[row, col + lag], autocorr[row, col - lag]]))

    max_lag = min(8, int(row), int(col), autocorr.shape[0] - 1 - int(row), autocorr.shape[1] - 1 - int(col))  # small scans have fewer lags
    if max_lag < 3:
        return 1.0
    profile = np.array([at_lag(lag) for lag in range(1, max_lag + 1)])
    # baseline: the first minimum of the profile (between the central peak and the first neighbours)
    minima = np.where((profile[1:-1] <= profile[:-2]) & (profile[1:-1] <= profile[2:]))[0]
    baseline = profile[minima[0] + 1] if minima.size else profile.min()
    first, second = profile[0] - baseline, profile[1] - baseline
    if first <= 0 or second <= 0 or second >= first:
        return 1.0
    sigma_ac_sq = 3.0 / (2.0 * np.log(first / second))  # Gaussian: ln(p1/p2) = (2² − 1²) / (2 σ_ac²)
    return float(np.sqrt(sigma_ac_sq / 2.0))  # σ_ac = √2 σ
