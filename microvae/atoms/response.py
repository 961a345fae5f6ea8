"""2. The detection response: Laplacian of Gaussian (or smoothed image minus its floor), CPU strips or torch."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .backend import chunk_workers, like

__all__ = ["STRIP_ROWS", "detection_response", "gaussian_kernels", "log_response_and_maxima", "response_torch"]

STRIP_ROWS = 128  # rows per strip of the CPU LoG (a strip and its temporaries stay in cache)


def gaussian_kernels(sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """1D kernels (float64, radius ⌊4σ + ½⌋ as scipy's): the Gaussian g, and l = −σ²·g″ = (1 − x²/σ²)·g.

    The scale-normalised LoG response −σ²∇²(G∗I) is then l ⊗ g + g ⊗ l (rows ⊗ columns).

    Parameters
    ----------
    sigma_px : float
        σ in px.

    Returns
    -------
    tuple of ndarray
        (g, l), each (2·radius + 1,) float64; g sums to 1.
    """
    radius = int(4.0 * sigma_px + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-0.5 * x**2 / sigma_px**2)
    gauss /= gauss.sum()
    return gauss, (1.0 - x**2 / sigma_px**2) * gauss


def detection_response(image: np.ndarray, sigma_px: float, spacing_px: float, method: str) -> np.ndarray:
    """The filtered image whose local maxima are the candidate columns (same shape as ``image``, float32).

    Parameters
    ----------
    image : ndarray
        (H, W) image (read as float32).
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px (the "max" response's floor window and background width).
    method : str
        "log": the scale-normalised Laplacian of Gaussian; "max": the σ-smoothed image minus a
        smoothed local minimum (its floor) over a (2⌈spacing⌉ + 1)² window.

    Returns
    -------
    ndarray
        (H, W) float32 response.

    Raises
    ------
    ParameterError
        When ``method`` is unknown.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    if method == "log":
        return log_response_and_maxima(image, sigma_px, None)[0]
    if method == "max":
        smooth = ndimage.gaussian_filter(image, sigma=sigma_px, mode="reflect")
        floor = ndimage.minimum_filter(smooth, size=2 * int(np.ceil(spacing_px)) + 1, mode="reflect")
        background = ndimage.gaussian_filter(floor, sigma=spacing_px, mode="reflect")
        return smooth - background
    raise ParameterError(f"unknown detection method {method!r}")


def log_response_and_maxima(image: np.ndarray, sigma_px: float, inner: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """LoG response (float32) and, when ``inner`` is given, its (2·inner+1)² square maxima, in one pass
    over row strips.

    Each strip (with a halo of kernel radius + ``inner`` rows; edges reflected as scipy's "reflect")
    is filtered by shifted sums: along rows, then down columns, whole rows at a time. That
    vectorises well and stays in cache; scipy's ``correlate1d`` is 1.5× slower along rows and 3×
    down columns on large scans. The square maxima are found in the same strip by shifted maxima:
    the result equals ``response == maximum_filter(response, 2·inner+1, mode="nearest")``.

    Parameters
    ----------
    image : ndarray
        (H, W) float32 image.
    sigma_px : float
        σ of the LoG, in px.
    inner : int or None
        Half-side of the square maximum window, in px; None finds no maxima.

    Returns
    -------
    response : ndarray
        (H, W) float32 LoG response.
    maxima : ndarray or None
        (M, 2) int64 (row, col) of the square maxima, row-major; None when ``inner`` is None.
    """
    gauss, log = gaussian_kernels(sigma_px)
    g32, l32 = gauss.astype(np.float32), log.astype(np.float32)
    radius = len(gauss) // 2
    halo = inner or 0
    height, width = image.shape
    col_index = np.pad(np.arange(width), radius, mode="symmetric")
    response = np.empty_like(image)

    def strip_pass(start: int) -> np.ndarray | None:  # one strip: its response rows and its square maxima
        stop = min(height, start + STRIP_ROWS)
        first, last = start - halo - radius, stop + halo + radius  # input rows needed (may overhang)
        if first < 0 or last > height:
            rows = np.pad(np.arange(height), (max(0, -first), max(0, last - height)), mode="symmetric")[first + max(0, -first) : last + max(0, -first)]
            strip = image[rows]
        else:
            strip = image[first:last]
        count = last - first - 2 * radius  # output rows: start − halo … stop + halo
        # along rows: the strip reflected left and right, then pairs of shifted columns
        padded = np.empty((strip.shape[0], width + 2 * radius), np.float32)
        padded[:, radius : radius + width] = strip
        padded[:, :radius] = strip[:, col_index[:radius]]
        padded[:, radius + width :] = strip[:, col_index[radius + width :]]
        along_gauss = padded[:, radius : radius + width] * g32[radius]
        along_log = padded[:, radius : radius + width] * l32[radius]
        pair, scaled = np.empty_like(along_gauss), np.empty_like(along_gauss)
        for lag in range(1, radius + 1):
            np.add(padded[:, radius - lag : radius - lag + width], padded[:, radius + lag : radius + lag + width], out=pair)
            along_gauss += np.multiply(pair, g32[radius + lag], out=scaled)
            along_log += np.multiply(pair, l32[radius + lag], out=scaled)
        # down columns: LoG = log(rows) ⊗ gauss(cols) + gauss(rows) ⊗ log(cols)
        out = np.multiply(along_log[radius : radius + count], g32[radius])
        out += np.multiply(along_gauss[radius : radius + count], l32[radius], out=scaled[:count])
        pair, scaled = pair[:count], scaled[:count]
        for lag in range(1, radius + 1):
            np.add(along_log[radius - lag : radius - lag + count], along_log[radius + lag : radius + lag + count], out=pair)
            out += np.multiply(pair, g32[radius + lag], out=scaled)
            np.add(along_gauss[radius - lag : radius - lag + count], along_gauss[radius + lag : radius + lag + count], out=pair)
            out += np.multiply(pair, l32[radius + lag], out=scaled)
        response[start:stop] = out[halo : halo + stop - start]
        if inner is None:
            return None
        # rows outside the image take no part in the maximum ("nearest" edges: a max ignores them)
        across = out.copy()
        if start - halo < 0:
            across[: halo - start] = -np.inf
        if stop + halo > height:
            across[count - (stop + halo - height) :] = -np.inf
        source = across.copy()
        for lag in range(1, inner + 1):
            np.maximum(across[:, lag:], source[:, :-lag], out=across[:, lag:])
            np.maximum(across[:, :-lag], source[:, lag:], out=across[:, :-lag])
        square = across[halo : halo + stop - start].copy()
        for lag in range(1, inner + 1):
            np.maximum(square, across[halo - lag : halo - lag + stop - start], out=square)
            np.maximum(square, across[halo + lag : halo + lag + stop - start], out=square)
        return np.flatnonzero(out[halo : halo + stop - start] == square) + start * width

    starts = range(0, height, STRIP_ROWS)
    workers = chunk_workers()
    if workers > 1 and len(starts) > 1:  # numpy releases the GIL in its loops: strips run side by side
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(strip_pass, starts))
    else:
        found = [strip_pass(start) for start in starts]
    if inner is None:
        return response, None
    found = np.concatenate(found)
    return response, np.stack([found // width, found % width], axis=1)


def _correlate_torch(data, kernel: np.ndarray, axis: int):
    """Correlate a 2D tensor with a symmetric 1D ``kernel`` along ``axis``, scipy's "reflect" edges,
    as shifted sums (exact float32 arithmetic, no TF32 convolution)."""
    import torch

    radius = len(kernel) // 2
    size = data.shape[axis]
    index = torch.as_tensor(np.pad(np.arange(size), radius, mode="symmetric"), device=data.device)
    padded = data.index_select(axis, index)
    weights = [float(w) for w in kernel.astype(np.float32)]
    out = padded.narrow(axis, radius, size) * weights[radius]
    for lag in range(1, radius + 1):
        out += (padded.narrow(axis, radius - lag, size) + padded.narrow(axis, radius + lag, size)) * weights[radius + lag]
    return out


def response_torch(image, sigma_px: float, spacing_px: float, method: str):
    """:func:`detection_response` for a float32 tensor.

    Parameters
    ----------
    image : Tensor
        (H, W) float32 image on any device.
    sigma_px : float
        Column width σ in px.
    spacing_px : float
        Column spacing in px.
    method : str
        "log" or "max", as in :func:`detection_response`.

    Returns
    -------
    Tensor
        (H, W) float32 response on the image's device (same float32 arithmetic as the CPU).

    Raises
    ------
    ParameterError
        When ``method`` is unknown.
    """
    import torch.nn.functional as F

    gauss, log = gaussian_kernels(sigma_px)
    if method == "log":
        along_gauss = _correlate_torch(image, gauss, 1)
        along_log = _correlate_torch(image, log, 1)
        # the same order of float32 operations as the CPU strips' column pass
        radius = len(gauss) // 2
        index_rows = like(np.pad(np.arange(image.shape[0]), radius, mode="symmetric"), image)
        a_gauss, a_log = along_gauss.index_select(0, index_rows), along_log.index_select(0, index_rows)
        g32, l32 = [float(w) for w in gauss.astype(np.float32)], [float(w) for w in log.astype(np.float32)]
        count = image.shape[0]
        out = a_log.narrow(0, radius, count) * g32[radius]
        out += a_gauss.narrow(0, radius, count) * l32[radius]
        for lag in range(1, radius + 1):
            out += (a_log.narrow(0, radius - lag, count) + a_log.narrow(0, radius + lag, count)) * g32[radius + lag]
            out += (a_gauss.narrow(0, radius - lag, count) + a_gauss.narrow(0, radius + lag, count)) * l32[radius + lag]
        return out
    if method == "max":
        smooth = _correlate_torch(_correlate_torch(image, gauss, 1), gauss, 0)
        size = 2 * int(np.ceil(spacing_px)) + 1
        floor = -F.max_pool2d(-smooth[None, None], size, stride=1, padding=size // 2)[0, 0]  # "reflect" edges change no minimum
        wide, _ = gaussian_kernels(spacing_px)
        background = _correlate_torch(_correlate_torch(floor, wide, 1), wide, 0)
        return smooth - background
    raise ParameterError(f"unknown detection method {method!r}")
