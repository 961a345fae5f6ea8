"""Columns as Gaussian models: rendering them (:func:`render_columns`), each column's nearest
neighbours, and the neighbours' models at a column's fit window (:func:`neighbours_at`), round or
elliptical, Gaussian or of a measured radial profile (:class:`RadialProfiles`: a real probe is an
Airy disk with tails, not a Gaussian).

Conventions (those of :mod:`microvae.sublattices`): (H, W) float images scaled as
:func:`microvae.atoms.prepare_image` scales them, positions (row, col) in pixels with pixel
(r, c) centred at (r, c), widths σ in pixels, covariances [c_rr, c_rc, c_cc] in px².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "NEIGHBOURS_MODELLED",
    "PROFILE_RADIUS",
    "PROFILE_STEP",
    "RadialProfiles",
    "equivalent_sigma",
    "isotropic_covariance",
    "nearest_columns",
    "neighbours_at",
    "precision",
    "render_columns",
]


def render_columns(shape: tuple[int, int], positions: np.ndarray, amplitudes: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """The sum of ``amplitude · exp(−d²/2σ²)`` over columns, each within 4σ of its centre
    (windowed outer products, one bincount).

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image, px.
    positions : ndarray
        (N, 2) (row, col) of the columns, px.
    amplitudes : ndarray
        (N,) peak heights.
    sigma_px : ndarray
        (N,) widths σ, px, or a scalar.

    Returns
    -------
    ndarray
        (H, W) float64 (zeros without columns).
    """
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


PROFILE_RADIUS = 5.0  # a measured column profile reaches this far, in σ (Mahalanobis radius under the column's covariance)
PROFILE_STEP = 0.25  # its sampling step, σ
FINE = 20  # RadialProfiles.at reads a table this many times finer than PROFILE_STEP, at the nearest sample


@dataclass(frozen=True)
class RadialProfiles:
    """Measured column profiles, one per sublattice, as functions of the Mahalanobis radius
    ρ = √(dᵀC⁻¹d) under each column's covariance C (so that an elliptical probe keeps its shape).

    Attributes
    ----------
    values : ndarray
        (L + 1, B) float32 height relative to the column's fitted peak at ρ = 0, step, 2·step, …
        (B = ``PROFILE_RADIUS`` / ``PROFILE_STEP`` + 1, the last 0); row L is the Gaussian
        exp(−ρ²/2), for columns without a measured profile.
    row : ndarray
        (N,) int64 the row of ``values`` of every column.
    """

    values: np.ndarray
    row: np.ndarray

    def __post_init__(self):
        # the same profiles on a grid FINE times finer (linear between the samples), read at the
        # nearest fine sample: one gather per pixel instead of two and a blend
        count = self.values.shape[1]
        fine = np.arange((count - 1) * FINE + 1) / FINE
        table = np.stack([np.interp(fine, np.arange(count), v) for v in self.values]).astype(np.float32)
        object.__setattr__(self, "_fine", table)

    @staticmethod
    def gaussian_row() -> np.ndarray:
        """The Gaussian's row of :attr:`values`.

        Returns
        -------
        ndarray
            (B,) float32 exp(−ρ²/2) at ρ = 0, ``PROFILE_STEP``, …; 0 at the last.
        """
        rho = np.arange(int(round(PROFILE_RADIUS / PROFILE_STEP)) + 1) * PROFILE_STEP
        row = np.exp(-0.5 * rho**2).astype(np.float32)
        row[-1] = 0.0
        return row

    def at(self, columns: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """The profile of each column at its pixels (linear between samples, read on a grid
        ``FINE`` times finer than ``PROFILE_STEP``), 0 beyond ``PROFILE_RADIUS``.

        Parameters
        ----------
        columns : ndarray
            (M,) int indices of the columns.
        rho : ndarray
            (P, M) float32 Mahalanobis radii (σ units) of P pixels from each column.

        Returns
        -------
        ndarray
            (P, M) float32 heights relative to each column's peak.
        """
        table = self._fine
        last = table.shape[1] - 1
        index = np.minimum(rho * np.float32(FINE / PROFILE_STEP) + np.float32(0.5), np.float32(last)).astype(np.int32)
        index += (self.row[columns] * table.shape[1]).astype(np.int32)[None, :]
        return table.ravel()[index]


def nearest_columns(positions: np.ndarray, count: int = NEIGHBOURS_MODELLED, tree=None) -> np.ndarray:
    """Each column's K = min(count, N − 1) nearest other columns, nearest first.

    Parameters
    ----------
    positions : ndarray
        (N, 2) (row, col) of the columns, px.
    count : int, default NEIGHBOURS_MODELLED
        The most neighbours per column.
    tree : scipy.spatial.cKDTree, optional
        A tree of ``positions``, when already built.

    Returns
    -------
    ndarray
        (N, K) int64 indices into ``positions`` ((N, 0) when K < 1).
    """
    from scipy.spatial import cKDTree

    k = min(count, len(positions) - 1)
    if k < 1:
        return np.zeros((len(positions), 0), np.int64)
    tree = tree if tree is not None else cKDTree(positions)
    return tree.query(positions, k=k + 1, workers=-1)[1].reshape(len(positions), -1)[:, 1:]


def isotropic_covariance(sigma_px: np.ndarray) -> np.ndarray:
    """Covariances of round columns.

    Parameters
    ----------
    sigma_px : ndarray
        (N,) widths σ, px.

    Returns
    -------
    ndarray
        (N, 3) float64 covariance [c_rr, c_rc, c_cc] (px²) = [σ², 0, σ²].
    """
    sigma = np.asarray(sigma_px, dtype=np.float64)
    return np.stack([sigma**2, 0 * sigma, sigma**2], axis=-1)


def equivalent_sigma(covariance: np.ndarray) -> np.ndarray:
    """Width σ of the round Gaussian of the same area as each elliptical one: det(C)^¼.

    Parameters
    ----------
    covariance : ndarray
        (N, 3) [c_rr, c_rc, c_cc] in px².

    Returns
    -------
    ndarray
        (N,) float64 σ, px.
    """
    covariance = np.asarray(covariance, dtype=np.float64)
    return (covariance[..., 0] * covariance[..., 2] - covariance[..., 1] ** 2) ** 0.25


def precision(covariance: np.ndarray) -> np.ndarray:
    """Inverse of packed 2 × 2 covariances.

    Parameters
    ----------
    covariance : numpy.ndarray
        (..., 3) [c_rr, c_rc, c_cc] in px², (row, col) axes.

    Returns
    -------
    numpy.ndarray
        (..., 3) precision [p_rr, p_rc, p_cc] in px⁻².
    """
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
    profiles: RadialProfiles | None = None,
) -> np.ndarray:
    """The summed models of each member's ``NEIGHBOURS_MODELLED`` nearest other columns
    at its window pixels: the part of the image that :func:`render_columns` of all columns minus
    the member's own model would give there, without rendering the whole image.

    Parameters
    ----------
    positions : ndarray
        (N, 2) (row, col) of all columns, px.
    amplitudes : ndarray
        (N,) heights of all columns.
    sigma_px : ndarray
        (N,) widths σ of all columns, px (used when ``covariance`` is omitted).
    members : ndarray
        (M,) indices of the columns whose windows are read.
    centres : ndarray
        (M, 2) integer (row, col) of each member's window centre, px.
    row_offsets, col_offsets : ndarray
        (P,) the window's pixels relative to its centre: ``centres`` + (row_offsets, col_offsets).
    others : ndarray, optional
        (M, K) the neighbours' indices, when already known.
    covariance : ndarray, optional
        (N, 3) [c_rr, c_rc, c_cc] px²: elliptical columns (default: round, of width
        ``sigma_px``).
    profiles : RadialProfiles, optional
        Measured profiles of the columns (default: Gaussian).

    Returns
    -------
    ndarray
        (P, M) float32 the neighbours' summed models at each member's window pixels.
    """
    from scipy.spatial import cKDTree

    if others is None:
        count = min(NEIGHBOURS_MODELLED + 1, len(positions))
        _, index = cKDTree(positions).query(positions[members], k=count)
        index = index.reshape(len(members), -1)
        others = index[:, 1:] if count > 1 else index[:, :0]  # (M, K) the member itself first
    # −½·precision, float32 (the pixels relative to the window centre keep the offsets small)
    half = (-0.5 * precision(isotropic_covariance(sigma_px) if covariance is None else np.asarray(covariance, dtype=np.float64))).astype(np.float32)
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
        if profiles is None:
            total += amplitudes[j].astype(np.float32)[None, :] * np.exp(exponent)
        else:
            total += amplitudes[j].astype(np.float32)[None, :] * profiles.at(j, np.sqrt(np.maximum(np.float32(-2) * exponent, 0)))
    return total
