"""What the lattice generators draw with: lattice sites, column profiles, rendering, noise and
backgrounds.

Conventions (those of :mod:`microvae.lattices`): positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½); widths σ in pixels; intensities in units of the
brightest column's noise-free peak above the background.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage, special

__all__ = [
    "airy_profile",
    "bravais_sites",
    "correlated_noise",
    "dip_with_halo_profile",
    "elliptical_gaussian_profile",
    "moffat_profile",
    "poisson_read",
    "render_profile",
    "rotation_matrix",
    "two_gaussian_profile",
]

# ----------------------------------------------------------------------------------------------
# Geometry


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """Rotation of (row, col) vectors by ``angle_deg`` counter-clockwise on screen (rows grow
    downwards), as in :func:`synthetic.lattice_sites`: ``v_rotated = R @ v``.

    Parameters
    ----------
    angle_deg : float
        The rotation, degrees.

    Returns
    -------
    ndarray
        (2, 2) float64 R = [[cos, −sin], [sin, cos]] acting on (row, col).
    """
    angle = np.deg2rad(angle_deg)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def bravais_sites(shape: tuple[int, int], a1, a2, motif, angle_deg: float, margin: float, origin=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites of a 2D lattice with a motif, covering the image plus ``margin`` px around it.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image, px.
    a1, a2 : array_like
        Lattice vectors as (row, col) in pixels, before the rotation.
    motif : sequence of array_like
        Fractional offsets (f1, f2) of the motif's sites; site label = index in ``motif``.
    angle_deg : float
        Rotation of the whole lattice in degrees (counter-clockwise on screen: rows grow downwards).
    margin : float
        How far beyond the image the sites reach, px.
    origin : array_like, optional
        (row, col) of the lattice point (0, 0), px; default the image centre.

    Returns
    -------
    positions : ndarray
        (N, 2) float64 (row, col) in px.
    labels : ndarray
        (N,) int64 motif index of each site.
    cells : ndarray
        (N, 2) integer cell indices of each site.
    """
    height, width = shape
    origin = np.array([(height - 1) / 2.0, (width - 1) / 2.0] if origin is None else origin, dtype=np.float64)
    basis = np.stack([np.asarray(a1, float), np.asarray(a2, float)]) @ rotation_matrix(angle_deg).T  # rows: rotated a1, a2
    corners = np.array([[-margin, -margin], [-margin, width - 1 + margin], [height - 1 + margin, -margin], [height - 1 + margin, width - 1 + margin]]) - origin
    fractional = corners @ np.linalg.inv(basis)
    low = np.floor(fractional.min(axis=0)).astype(int) - 1
    high = np.ceil(fractional.max(axis=0)).astype(int) + 1
    grid_1, grid_2 = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1), indexing="ij")
    cells = np.stack([grid_1.ravel(), grid_2.ravel()], axis=1)
    positions, labels, indices = [], [], []
    for label, offset in enumerate(motif):
        points = (cells + np.asarray(offset, float)) @ basis + origin
        positions.append(points)
        labels.append(np.full(len(points), label, dtype=np.int64))
        indices.append(cells)
    positions, labels, indices = np.concatenate(positions), np.concatenate(labels), np.concatenate(indices)
    keep = (positions[:, 0] > -margin) & (positions[:, 0] < height - 1 + margin) & (positions[:, 1] > -margin) & (positions[:, 1] < width - 1 + margin)
    return positions[keep], labels[keep], indices[keep]


# ----------------------------------------------------------------------------------------------
# Column profiles: f(dr, dc) with f(0, 0) = 1 (a dip: −1); dr, dc in pixels, broadcastable arrays


def moffat_profile(hwhm_px: float, beta: float) -> Callable:
    """``(1 + d²/α²)^−β`` with half width at half maximum ``hwhm_px`` (β = 1: a Lorentzian).

    Parameters
    ----------
    hwhm_px : float
        Half width at half maximum, px.
    beta : float
        β.

    Returns
    -------
    callable
        ``profile(dr, dc)`` of broadcastable offsets in px, 1 at the centre.
    """
    alpha2 = hwhm_px**2 / (2.0 ** (1.0 / beta) - 1.0)

    def profile(dr, dc):
        base = 1.0 + (dr * dr + dc * dc) * (1.0 / alpha2)
        if beta == 2.0:
            inv = 1.0 / base
            return inv * inv
        return base ** (-beta)

    return profile


def two_gaussian_profile(sigma_px: float, tail_sigma_px: float, tail_fraction: float) -> Callable:
    """A narrow Gaussian core plus a broad probe tail: ``(1 − t)·G(σ) + t·G(σ_tail)``, peak 1.

    Parameters
    ----------
    sigma_px : float
        σ of the core, px.
    tail_sigma_px : float
        σ of the tail, px.
    tail_fraction : float
        t, the tail's share of the peak.

    Returns
    -------
    callable
        ``profile(dr, dc)`` of broadcastable offsets in px.
    """
    a, b = -0.5 / sigma_px**2, -0.5 / tail_sigma_px**2

    def profile(dr, dc):
        d2 = dr * dr + dc * dc
        return (1.0 - tail_fraction) * np.exp(a * d2) + tail_fraction * np.exp(b * d2)

    return profile


def elliptical_gaussian_profile(sigma_px: float, ellipticity: float, axis_deg: float) -> Callable:
    """An elliptical Gaussian (two-fold astigmatism): σ·√e along ``axis_deg``, σ/√e across it.

    Parameters
    ----------
    sigma_px : float
        σ, px.
    ellipticity : float
        e (1: round).
    axis_deg : float
        Direction of the long axis, degrees.

    Returns
    -------
    callable
        ``profile(dr, dc)`` of broadcastable offsets in px, peak 1.
    """
    theta = np.deg2rad(axis_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    a = -0.5 / (sigma_px**2 * ellipticity)
    b = -0.5 * ellipticity / sigma_px**2

    def profile(dr, dc):
        u = dc * cos - dr * sin
        v = dc * sin + dr * cos
        return np.exp(a * u * u + b * v * v)

    return profile


def airy_profile(sigma_equivalent_px: float) -> Callable:
    """The Airy pattern ``(2 J₁(x)/x)²`` of an aperture-limited probe, with rings; its FWHM equals
    that of a Gaussian of σ = ``sigma_equivalent_px`` (first dark ring at ≈ 2.79 σ). Evaluated by
    interpolation in d² from a fine table (J₁ is slow).

    Parameters
    ----------
    sigma_equivalent_px : float
        σ of the Gaussian of equal FWHM, px.

    Returns
    -------
    callable
        ``profile(dr, dc)`` of broadcastable offsets in px, peak 1, 0 beyond 12σ.
    """
    k = 2 * 1.616340 / (2.3548200 * sigma_equivalent_px)
    d2_max = (12 * sigma_equivalent_px) ** 2
    d2_table = np.linspace(0.0, d2_max, 8192)
    x = k * np.sqrt(d2_table)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(x > 1e-8, (2 * special.j1(x) / np.where(x > 1e-8, x, 1.0)) ** 2, 1.0)

    def profile(dr, dc):
        return np.interp(dr * dr + dc * dc, d2_table, values, right=0.0)

    return profile


def dip_with_halo_profile(sigma_px: float, halo_sigma_px: float, halo_weight: float) -> Callable:
    """An ABF-like dark column: ``(−G(σ) + c·G(σ_halo)) / (1 − c)``, −1 at the centre with a weak
    bright ring (c = ``halo_weight`` < 1, σ_halo > σ).

    Parameters
    ----------
    sigma_px : float
        σ of the dip, px.
    halo_sigma_px : float
        σ_halo, px.
    halo_weight : float
        c.

    Returns
    -------
    callable
        ``profile(dr, dc)`` of broadcastable offsets in px.
    """
    a, b = -0.5 / sigma_px**2, -0.5 / halo_sigma_px**2
    scale = 1.0 / (1.0 - halo_weight)

    def profile(dr, dc):
        d2 = dr * dr + dc * dc
        return scale * (halo_weight * np.exp(b * d2) - np.exp(a * d2))

    return profile


def render_profile(
    shape: tuple[int, int],
    positions: np.ndarray,
    amplitudes: np.ndarray,
    profile: Callable,
    radius: float,
    row_shift: np.ndarray | None = None,
    max_values: int = 1_500_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``amplitude · profile(r − r_k, c − c_k − row_shift[r])`` on an (H, W) grid.

    Each column is evaluated in a (2R+1)² window (R = ceil(radius)) with numpy broadcasting, in
    chunks of at most ``max_values`` window values, and accumulated with one ``bincount`` per chunk.
    ``row_shift`` (H,) shifts every image row horizontally (scan line jitter: the recorded row r
    shows the object at column c − row_shift[r]); rows of a window outside the image take the
    nearest edge row's shift.

    Parameters
    ----------
    shape : tuple of int
        (H, W) px.
    positions : ndarray
        (N, 2) column centres (row, col) in px.
    amplitudes : ndarray
        (N,) (or a scalar) amplitudes.
    profile : callable
        ``profile(dr, dc)`` of offsets in px.
    radius : float
        Reach of each column's window, px.
    row_shift : ndarray or None, optional
        (H,) horizontal shift of each image row, px.
    max_values : int, default 1_500_000
        Most window values per chunk.

    Returns
    -------
    image : ndarray
        The (H, W) float64 image.
    centroid_shift : ndarray
        (N,) the horizontal shift (px) of each column's intensity centroid (the
        row-marginal-weighted mean of the shifts over the column's window; zeros without
        ``row_shift``).
    """
    height, width = shape
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    amplitudes = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), (len(positions),))
    half = int(np.ceil(radius))
    offsets = np.arange(-half, half + 1)
    size = len(offsets)
    image = np.zeros(height * width)
    centroid_shift = np.zeros(len(positions))
    per_chunk = max(1, max_values // (size * size))
    for start in range(0, len(positions), per_chunk):
        pos = positions[start : start + per_chunk]
        amp = amplitudes[start : start + per_chunk]
        centre_rows = np.round(pos[:, 0]).astype(np.int64)
        centre_cols = pos[:, 1]
        if row_shift is not None:  # the window follows the shift of the column's centre row
            centre_cols = centre_cols + row_shift[np.clip(centre_rows, 0, height - 1)]
        rows = centre_rows[:, None] + offsets  # (n, w)
        cols = np.round(centre_cols).astype(np.int64)[:, None] + offsets
        dr = (rows - pos[:, :1])[:, :, None]
        dc = (cols - pos[:, 1:])[:, None, :]
        if row_shift is not None:
            shifts = row_shift[np.clip(rows, 0, height - 1)]  # (n, w)
            dc = dc - shifts[:, :, None]
        values = profile(dr, dc)  # (n, w, w)
        if row_shift is not None:
            marginal = np.abs(values).sum(axis=2)
            centroid_shift[start : start + len(pos)] = (marginal * shifts).sum(axis=1) / np.maximum(marginal.sum(axis=1), 1e-300)
        values = values * amp[:, None, None]
        row_ok = (rows >= 0) & (rows < height)
        col_ok = (cols >= 0) & (cols < width)
        valid = row_ok[:, :, None] & col_ok[:, None, :]
        flat = rows[:, :, None] * width + cols[:, None, :]
        image += np.bincount(flat[valid], weights=values[valid], minlength=height * width)
    return image.reshape(height, width), centroid_shift


# ----------------------------------------------------------------------------------------------
# Noise and backgrounds


def correlated_noise(shape: tuple[int, int], sd: float, correlation_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise smoothed by a Gaussian of ``correlation_px`` and rescaled to ``sd``.

    Parameters
    ----------
    shape : tuple of int
        (H, W) px.
    sd : float
        The noise's sd.
    correlation_px : float
        σ of the smoothing Gaussian, px (periodic edges).
    rng : numpy.random.Generator
        Draws the noise.

    Returns
    -------
    ndarray
        (H, W) float64.
    """
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), correlation_px, mode="wrap")
    return sd * field_ / max(float(field_.std()), 1e-12)


def poisson_read(clean: np.ndarray, dose: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise (Poisson with ``dose`` counts per unit intensity) plus Gaussian read noise (sd in
    units of intensity).

    Parameters
    ----------
    clean : ndarray
        The noise-free image (negative values count as 0 for the shot noise).
    dose : float
        Counts per unit intensity.
    read_noise : float
        sd of the Gaussian read noise, intensity units.
    rng : numpy.random.Generator
        Draws the noise.

    Returns
    -------
    ndarray
        The noisy image, same shape, float64 (counts / dose + read noise).
    """
    counts = rng.poisson(np.clip(clean, 0.0, None) * dose).astype(np.float64)
    return counts / dose + rng.normal(0.0, read_noise, size=clean.shape)
