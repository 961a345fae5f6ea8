"""What every zoo member returns (:class:`ZooCase`), and the checks, random streams and
normalisation that all members share.

Conventions (those of the whole zoo, :mod:`microvae.zoo`): positions are (row, col) in pixels,
pixel (r, c) centred on (r, c); patches are (N, C, W, W) float32 normalised to [0, 1] by one
min–max over the whole set at the :data:`PERCENTILES`, clipped.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError
from ..patches import normalise
from ..templates import SYMMETRY_CORRELATION, symmetry_orders  # re-exported: the members score angles modulo their shapes' symmetry

__all__ = ["PERCENTILES", "SIZES", "SYMMETRY_CORRELATION", "ZooCase", "check_arguments", "member_rng", "normalise_set", "symmetry_orders"]

SIZES = ("bench", "ci")
PERCENTILES = (0.1, 99.9)


@dataclass
class ZooCase:
    """One benchmark case: patches ready for training and their ground truth.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"glyph_suits_60"``.
    patches : ndarray
        (N, C, W, W) float32 in [0, 1] (see the module notes on normalisation).
    labels : ndarray
        (N,) int64 ground-truth class in ``range(n_classes)``.
    n_classes : int
        The true number of classes K.
    rotation : bool
        Whether the objects turn in the plane (what a user would tell the tool).
    translation : bool
        Whether objects sit off-centre in their windows (not atom-centred).
    fft : bool
        Whether the patches are FFT magnitudes (:func:`microvae.patches.fft_magnitude`).
    angle_rad : ndarray or None
        (N,) float64 true in-plane rotation, rad, counter-clockwise as displayed, where objects
        turn; else None.
    description : str
        What the case is and how its classes differ.
    scan : ndarray or None, default None
        (H, W) float32 raw scan the patches were cut from (lattice members), else None.
    coords : ndarray or None, default None
        (N, 2) float64 (row, col) patch centres in scan pixels (lattice members), else None.
    extra : dict
        Further per-patch truth (``'variant'``, ``'is_defect'``, ...), ``'class_names'``,
        ``'norm_offset'``/``'norm_scale'``, and member-specific items (see each generator).
    """

    name: str
    patches: np.ndarray
    labels: np.ndarray
    n_classes: int
    rotation: bool
    translation: bool
    fft: bool
    angle_rad: np.ndarray | None
    description: str
    scan: np.ndarray | None = None
    coords: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def window(self) -> int:
        """Patch side W in pixels."""
        return int(self.patches.shape[-1])

    def class_fractions(self) -> np.ndarray:
        """The fraction of patches in each true class.

        Returns
        -------
        ndarray
            (K,) float64, summing to 1 (all 0 without patches).
        """
        return np.bincount(self.labels, minlength=self.n_classes) / max(len(self.labels), 1)


# --- shared helpers ------------------------------------------------------------------------------


def check_arguments(seed: int, size: str, n: int | None) -> None:
    """Check the arguments every member generator takes.

    Parameters
    ----------
    seed : int
        Random seed, >= 0.
    size : str
        One of :data:`SIZES` (``"bench"`` or ``"ci"``).
    n : int or None
        Number of patches asked for (at least 8), or None for the member's default.

    Raises
    ------
    ParameterError
        When any of them is out of range (a one-line message).
    """
    if size not in SIZES:
        raise ParameterError(f"unknown zoo size {size!r}; expected one of {', '.join(SIZES)}")
    if int(seed) < 0:
        raise ParameterError(f"seed must be >= 0, got {seed}")
    if n is not None and int(n) < 8:
        raise ParameterError(f"n must be >= 8 patches, got {n}")


def member_rng(seed: int, member: str, part: int = 0) -> np.random.Generator:
    """An independent random stream per (seed, member family, part).

    Parameters
    ----------
    seed : int
        The case's seed.
    member : str
        The member family's name (e.g. ``"glyph_suits"``); its CRC-32 keys the stream, so two
        members drawn with the same seed are independent.
    part : int
        A further key, for a member that draws several independent parts (a second scan).

    Returns
    -------
    numpy.random.Generator
        ``default_rng([seed, crc32(member), part])``.
    """
    return np.random.default_rng([int(seed), zlib.crc32(member.encode()), int(part)])


def normalise_set(patches: np.ndarray) -> tuple[np.ndarray, dict]:
    """Scale a whole patch set to [0, 1] by one min–max at the :data:`PERCENTILES`, clipped.

    Parameters
    ----------
    patches : numpy.ndarray
        (N, C, W, W) raw patches (any float dtype; pixel (r, c) of a window centred on (r, c)).

    Returns
    -------
    patches : numpy.ndarray
        (N, C, W, W) float32 in [0, 1] (``normalise(..., "global")`` of :mod:`microvae.patches`).
    norm : dict
        ``{"norm_offset": float, "norm_scale": float}``: ``raw ≈ patches · scale + offset`` where
        not clipped.
    """
    out, offset, scale = normalise(patches.astype(np.float32), np.zeros(len(patches), np.int64), "global", PERCENTILES)
    return out, {"norm_offset": float(offset[0]) if len(offset) else 0.0, "norm_scale": float(scale[0]) if len(scale) else 1.0}
