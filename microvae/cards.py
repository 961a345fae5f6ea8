"""The synthetic 'cards' data set: four card suits under random affine transforms (paper, Fig. 1).

Each sample is one suit (clubs, spades, diamonds, hearts) drawn in a canonical frame and then
rotated, sheared, scaled and shifted. The ground truth (class and every transform parameter) is
returned with the images, so a model's classes and rotation latent can be scored.

Shapes: hearts are two lobes over a point; spades are exactly the heart turned upside down plus a
small stem, so that once rotation is factored out spades and hearts differ only by the stem
(the paper's point); clubs are three lobes on a stem; diamonds a tall rhombus.

Conventions (shared with :mod:`microvae.nets`):

* Coordinates are (row, col); pixel ``i`` of a size-``W`` image sits at grid coordinate
  ``-1 + 2 i / (W - 1)``; rows point down as the image is displayed (``origin='upper'``).
* A sample is the canonical shape pushed forward by ``x = R(angle) · Shear · scale · u + shift``:
  a positive ``angle_rad`` turns the shape counter-clockwise as displayed; ``Shear`` moves columns
  in proportion to rows (``col += tan(shear) · row``); ``scale > 1`` enlarges the shape; the shift
  is returned in pixels (row, col).

Rendering is vectorised: the four canonical shapes are rasterised once on a fine grid, and every
output pixel (supersampled ``supersample``² times and box-averaged, which anti-aliases the edges)
is pulled back through the inverse affine map and read with bilinear ``grid_sample``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ParameterError

__all__ = ["CLASS_NAMES", "ROTATION_PRESETS_DEG", "CardsDataset", "canonical_shapes", "make_cards", "render_cards", "render_moved"]

CLASS_NAMES = ("clubs", "spades", "diamonds", "hearts")
ROTATION_PRESETS_DEG = {"small": 12.0, "moderate": 60.0, "strong": 120.0}

_CANONICAL_SIZE = 256  # pixels of each rasterised canonical shape
_BASE_EXTENT = 0.62  # canonical shapes (which span about [-1, 1]) are shrunk by this before the affine


@dataclass
class CardsDataset:
    """Images and their ground truth.

    Attributes
    ----------
    images : ndarray
        (N, 1, W, W) float32 in [0, 1] (1 = ink).
    labels : ndarray
        (N,) int64 class index into :data:`CLASS_NAMES`.
    angle_rad : ndarray
        (N,) float64 rotation, counter-clockwise as displayed.
    shear_rad : ndarray
        (N,) float64 shear angle (``col += tan(shear) · row`` in the canonical frame).
    scale : ndarray
        (N,) float64 magnification, 1 = the base size.
    shift_px : ndarray
        (N, 2) float64 translation in pixels (row, col).
    """

    images: np.ndarray
    labels: np.ndarray
    angle_rad: np.ndarray
    shear_rad: np.ndarray
    scale: np.ndarray
    shift_px: np.ndarray

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)


def make_cards(
    n: int,
    size: int = 28,
    max_angle_deg: float = 60.0,
    seed: int = 0,
    *,
    max_shear_deg: float = 10.0,
    scale_range: tuple[float, float] = (1.0, 1.2),
    max_shift_fraction: float = 0.1,
    supersample: int = 2,
) -> CardsDataset:
    """Draw ``n`` cards of ``size``×``size`` pixels, classes balanced, deterministic from ``seed``.

    Parameters
    ----------
    n : int
        Number of samples.
    size : int
        Image side W in pixels (>= 8).
    max_angle_deg : float
        Rotation uniform in [-max, +max] degrees (presets in :data:`ROTATION_PRESETS_DEG`: 12, 60,
        120).
    seed : int
        Seed of the numpy generator that draws labels and transforms.
    max_shear_deg : float
        Shear uniform in [-max, +max] degrees.
    scale_range : tuple[float, float]
        Magnification uniform in [lo, hi].
    max_shift_fraction : float
        Shift per axis uniform in [-f·W, +f·W] pixels.
    supersample : int
        Sub-samples per pixel side, box-averaged (1 = point sampling).

    Returns
    -------
    CardsDataset
        (n, 1, size, size) float32 images in [0, 1], the labels (indices into
        :data:`CLASS_NAMES`) and the transforms that drew them (angles and shears in rad, shifts
        (row, col) in px).

    Raises
    ------
    ParameterError
        When an argument is out of range (``n`` < 0, ``size`` < 8, ``max_angle_deg`` outside
        [0, 180], …).
    """
    _check_arguments(n, size, max_angle_deg, max_shear_deg, scale_range, max_shift_fraction, supersample)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    angle_rad = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, n))
    shear_rad = np.deg2rad(rng.uniform(-max_shear_deg, max_shear_deg, n))
    scale = rng.uniform(scale_range[0], scale_range[1], n)
    shift_px = rng.uniform(-max_shift_fraction * size, max_shift_fraction * size, (n, 2))
    images = render_cards(labels, angle_rad, shear_rad, scale, shift_px, size, supersample)
    return CardsDataset(images, labels, angle_rad, shear_rad, scale, shift_px)


def render_cards(
    labels: np.ndarray,
    angle_rad: np.ndarray,
    shear_rad: np.ndarray,
    scale: np.ndarray,
    shift_px: np.ndarray,
    size: int,
    supersample: int = 2,
    chunk: int = 1024,
) -> np.ndarray:
    """Render given suits and transforms to (N, 1, size, size) float32 images in [0, 1].

    Parameters
    ----------
    labels : ndarray
        (N,) int suits (indices into :data:`CLASS_NAMES`).
    angle_rad : ndarray
        (N,) rotations in rad, counter-clockwise as displayed.
    shear_rad : ndarray
        (N,) shears in rad.
    scale : ndarray
        (N,) magnifications.
    shift_px : ndarray
        (N, 2) shifts (row, col) in px.
    size : int
        Image side W in px.
    supersample : int, default 2
        Sub-samples per pixel side, box-averaged.
    chunk : int, default 1024
        Cards rendered at once.

    Returns
    -------
    ndarray
        (N, 1, size, size) float32 in [0, 1].
    """
    n = len(labels)
    out = np.empty((n, 1, size, size), np.float32)
    atlas = canonical_shapes()
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        grid = _canonical_sample_points(angle_rad[part], shear_rad[part], scale[part], shift_px[part], size, supersample)
        fine = _sample_shapes(atlas, labels[part], grid)
        out[part] = F.avg_pool2d(fine, supersample).numpy()
    return out


def render_moved(cards: CardsDataset, turn_rad: float = 0.0, centre_shift_px: tuple[float, float] = (0.0, 0.0), supersample: int = 2) -> np.ndarray:
    """The cards rendered again as a window turned and moved over them would see them: the content
    turned by ``turn_rad`` counter-clockwise as displayed about the image's middle ``(W − 1)/2``
    (each card's angle + turn, its shift turned with it) and the window's centre moved by
    ``centre_shift_px`` (row, col) px (the content by the opposite). Every pixel is rendered, none
    interpolated from the image; ``render_moved(cards, π/2)`` is ``numpy.rot90`` of the images up
    to float rounding. (N, 1, W, W) float32 — a :data:`microvae.diagnose.PatchSource` for cards.

    Parameters
    ----------
    cards : CardsDataset
        The cards (their labels and transforms).
    turn_rad : float, default 0.0
        Turn of the content in rad, counter-clockwise as displayed.
    centre_shift_px : tuple of float, default (0.0, 0.0)
        Move of the window's centre (row, col) in px.
    supersample : int, default 2
        Sub-samples per pixel side.

    Returns
    -------
    ndarray
        (N, 1, W, W) float32 in [0, 1].
    """
    cos, sin = np.cos(turn_rad), np.sin(turn_rad)
    turn = np.array([[cos, -sin], [sin, cos]])  # (row, col), counter-clockwise as displayed
    shift = cards.shift_px @ turn.T - np.asarray(centre_shift_px, dtype=np.float64)
    return render_cards(cards.labels, cards.angle_rad + turn_rad, cards.shear_rad, cards.scale, shift, cards.images.shape[-1], supersample)


def canonical_shapes() -> torch.Tensor:
    """The four suits rasterised on a (256, 256) grid covering [-1, 1]², shape (4, 1, 256, 256).

    Returns
    -------
    torch.Tensor
        (4, 1, 256, 256) float32 coverage in [0, 1] (a fresh copy of a cached tensor), suits in
        the order of :data:`CLASS_NAMES`.
    """
    return _canonical_shapes_cached().clone()


@lru_cache(maxsize=1)
def _canonical_shapes_cached() -> torch.Tensor:
    fine = 2 * _CANONICAL_SIZE
    axis = np.linspace(-1.0, 1.0, fine)
    row, col = np.meshgrid(axis, axis, indexing="ij")
    masks = [_club(row, col), _spade(row, col), _diamond(row, col), _heart(row, col)]
    stack = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
    return F.avg_pool2d(stack, 2)


# --- the four suits as boolean masks of (row, col) arrays in [-1, 1]; rows point down ---------


def _disc(row, col, centre_row, centre_col, radius):
    return (row - centre_row) ** 2 + (col - centre_col) ** 2 <= radius**2


def _heart_body(row, col):
    """Two lobes on top, point at the bottom (row ≈ +0.9)."""
    lobes = _disc(row, col, -0.38, -0.36, 0.4) | _disc(row, col, -0.38, 0.36, 0.4)
    # the lower part: a wedge tangent to both lobes (tangent points at row ≈ -0.19, started higher to close
    # the gap under the notch), tip at (0.92, 0)
    wedge = (row >= -0.22) & (row <= 0.92) & (np.abs(col) <= 0.643 * (0.92 - row))
    return lobes | wedge


def _stem(row, col):
    """A small flared stem hanging below the centre, its foot at row 0.95."""
    half_width = 0.06 + 0.22 * np.clip((row - 0.45) / 0.5, 0.0, 1.0) ** 2
    return (row >= 0.3) & (row <= 0.95) & (np.abs(col) <= half_width)


def _heart(row, col):
    return _heart_body(row, col)


def _spade(row, col):
    """Exactly the heart turned upside down (point up, lobes down to row 0.78), plus a small flared
    stem whose foot reaches row 0.99: once the rotation is factored out, the stem is the only
    difference between a spade and a heart."""
    flare = 0.05 + 0.25 * np.clip((row - 0.72) / 0.27, 0.0, 1.0) ** 2
    stem = (row >= 0.4) & (row <= 0.99) & (np.abs(col) <= flare)
    return _heart_body(-row, col) | stem


def _club(row, col):
    top = _disc(row, col, -0.45, 0.0, 0.3)
    left = _disc(row, col, 0.08, -0.42, 0.3)
    right = _disc(row, col, 0.08, 0.42, 0.3)
    centre = _disc(row, col, -0.05, 0.0, 0.22)
    return top | left | right | centre | _stem(row, col)


def _diamond(row, col):
    return np.abs(row) / 0.95 + np.abs(col) / 0.62 <= 1.0


# --- sampling ------------------------------------------------------------------------------


def _canonical_sample_points(angle_rad, shear_rad, scale, shift_px, size, supersample) -> torch.Tensor:
    """Canonical-frame points of every supersampled output pixel, as grid_sample's (x=col, y=row).

    The pull-back is affine, ``u = L (x - t)`` with ``L = Shear⁻¹ · R(-angle) / (scale · base)``;
    it is evaluated by broadcasting (cheaper on CPU than ``affine_grid``). Shape (n, S, S, 2),
    S = size·supersample; sub-samples sit at pixel coordinates ``(j + 0.5) / supersample - 0.5``.
    """
    n, s = len(angle_rad), size * supersample
    first = -1.0 + (0.5 / supersample - 0.5) * 2.0 / (size - 1)  # grid coordinate of the first sub-sample
    axis = torch.linspace(first, -first, s)
    cos, sin, tan = np.cos(angle_rad), np.sin(angle_rad), np.tan(shear_rad)
    unrotate = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # R(-angle), (n, 2, 2)
    unshear = np.stack([np.stack([np.ones(n), np.zeros(n)], -1), np.stack([-tan, np.ones(n)], -1)], -2)
    linear = unshear @ unrotate / (scale * _BASE_EXTENT)[:, None, None]  # (row, col) frame
    shift = shift_px * 2.0 / (size - 1)  # (n, 2) grid units
    offset = -(linear @ shift[:, :, None])  # (n, 2, 1)
    coef = torch.from_numpy(np.concatenate([linear, offset], axis=2).astype(np.float32)).view(n, 6, 1, 1)
    l00, l01, o0, l10, l11, o1 = coef.unbind(1)
    row, col = axis.view(1, s, 1), axis.view(1, 1, s)
    u_row = l00 * row + (l01 * col + o0)
    u_col = l10 * row + (l11 * col + o1)
    return torch.stack([u_col, u_row], dim=-1)


def _sample_shapes(atlas: torch.Tensor, labels: np.ndarray, points_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear read of each sample's suit at canonical points; (n, S, S, 2) (x=col, y=row) → (n, 1, S, S)."""
    n, s = points_xy.shape[0], points_xy.shape[1]
    out = torch.zeros((n, 1, s, s), dtype=torch.float32)
    for k in range(atlas.shape[0]):
        idx = torch.from_numpy(np.flatnonzero(labels == k))
        if len(idx) == 0:
            continue
        grid = points_xy[idx].reshape(1, len(idx) * s, s, 2)
        sampled = F.grid_sample(atlas[k : k + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out[idx] = sampled.reshape(len(idx), 1, s, s)
    return out


def _check_arguments(n, size, max_angle_deg, max_shear_deg, scale_range, max_shift_fraction, supersample) -> None:
    if n < 0:
        raise ParameterError(f"number of cards must be >= 0, got {n}")
    if size < 8:
        raise ParameterError(f"card image size must be >= 8 pixels, got {size}")
    if not 0 <= max_angle_deg <= 180:
        raise ParameterError(f"max_angle_deg must be in [0, 180], got {max_angle_deg}")
    if not 0 <= max_shear_deg < 45:
        raise ParameterError(f"max_shear_deg must be in [0, 45), got {max_shear_deg}")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ParameterError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
    if not 0 <= max_shift_fraction < 0.5:
        raise ParameterError(f"max_shift_fraction must be in [0, 0.5), got {max_shift_fraction}")
    if supersample < 1:
        raise ParameterError(f"supersample must be >= 1, got {supersample}")
