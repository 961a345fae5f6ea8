"""Per-cell displacements: each column of one sublattice against the centroid of its neighbours in another.

The polarization map of a ferroelectric (the paper's Fig. 5, atomap's and TEMUL's workflows): in a
perovskite seen along [001] each B-site column sits at the centre of four A-site columns; its
offset from their centroid is the local polar displacement. The same measure serves a honeycomb
(a chalcogen against its three metals) or any two sublattices.

Conventions: positions (row, col) in pixels; a displacement is ``position − centroid`` (row, col)
px, so a column moved towards larger rows has a positive row component; its angle is
``atan2(−row, col)`` (counter-clockwise from the +col axis as displayed, rows pointing down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ParameterError

__all__ = ["NEIGHBOUR_COUNTS", "Displacements", "neighbour_displacements", "parse_pair"]

NEIGHBOUR_COUNTS = (2, 3, 4, 6)  # the surroundings tried when the count is not given


@dataclass
class Displacements:
    """Displacements of the columns of sublattice ``of`` relative to sublattice ``relative_to``.

    Attributes
    ----------
    vector_px : ndarray
        (N, 2) (row, col) displacement of every column (NaN for columns not of ``of``, and for
        those with fewer than ``neighbours`` columns of ``relative_to`` in reach).
    neighbours : int
        How many nearest ``relative_to`` columns make each centroid.
    of, relative_to
        The two sublattices.
    """

    vector_px: np.ndarray
    neighbours: int
    of: int
    relative_to: int

    @property
    def magnitude_px(self) -> np.ndarray:
        """(N,) length of each displacement (NaN where undefined)."""
        return np.hypot(self.vector_px[:, 0], self.vector_px[:, 1])

    @property
    def angle_rad(self) -> np.ndarray:
        """(N,) direction, counter-clockwise from the +col axis as displayed (NaN where undefined)."""
        return np.arctan2(-self.vector_px[:, 0], self.vector_px[:, 1])


def neighbour_displacements(
    positions: np.ndarray, sublattice: np.ndarray, of: int, relative_to: int, neighbours: int | None = None, max_reach: float | None = None
) -> Displacements:
    """Displacement of each column of ``of`` from the centroid of its ``neighbours`` nearest
    columns of ``relative_to``.

    Without ``neighbours``, each count in :data:`NEIGHBOUR_COUNTS` is tried (on an even sample of
    up to 4 000 columns) and the one with the smallest median displacement wins: the neighbours that surround a site (four A sites around a
    perovskite B site, three metals around a chalcogen) put their centroid on it, any other count
    does not. Centroids whose farthest neighbour lies beyond ``max_reach`` px (default: 2 × the
    median distance to the nearest ``relative_to`` column) are left undefined (NaN): the scan's
    edge or a vacancy leaves the site unsurrounded.

    Parameters
    ----------
    positions : ndarray
        (N, 2) column positions (row, col) in px.
    sublattice : ndarray
        (N,) int sublattice of each column.
    of : int
        The sublattice whose columns move.
    relative_to : int
        The sublattice whose neighbours define each site (at least 2 columns).
    neighbours : int or None, optional
        Neighbours per centroid; None (or 0) chooses it.
    max_reach : float or None, optional
        Largest distance (px) to the farthest neighbour of a defined centroid.

    Returns
    -------
    Displacements
        (N, 2) (row, col) vectors in px (NaN outside ``of`` and where undefined), the neighbour
        count used and the two sublattices.

    Raises
    ------
    ParameterError
        When ``of`` equals ``relative_to``, ``of`` has no columns or ``relative_to`` fewer than 2.
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    sublattice = np.asarray(sublattice)
    movers = np.nonzero(sublattice == of)[0]
    anchors = np.nonzero(sublattice == relative_to)[0]
    if of == relative_to:
        raise ParameterError(f"displacements need two different sublattices, got {of} and {relative_to}")
    if len(movers) == 0 or len(anchors) < 2:
        present = ", ".join(str(int(k)) for k in np.unique(sublattice))
        raise ParameterError(f"displacements of sublattice {of} relative to {relative_to}: the atoms hold sublattices {present}")
    tree = cKDTree(positions[anchors])

    def offsets(members: np.ndarray, count: int, reach: float | None) -> tuple[np.ndarray, float]:
        distance, index = tree.query(positions[members], k=count, workers=-1)
        distance, index = distance.reshape(len(members), -1), index.reshape(len(members), -1)
        reach = reach if reach is not None else 2.0 * float(np.median(distance[:, 0]))
        vector = positions[members] - positions[anchors][index].mean(axis=1)
        vector[distance[:, -1] > reach] = np.nan
        return vector, reach

    if not neighbours:  # the count that puts the centroid nearest the columns, on an even sample of them
        sample = movers[:: max(1, len(movers) // 4000)]
        _, reach = offsets(sample, 1, max_reach)
        typical = {}
        for count in (k for k in NEIGHBOUR_COUNTS if k <= len(anchors)):
            vector, _ = offsets(sample, count, reach)
            typical[count] = np.nanmedian(np.hypot(vector[:, 0], vector[:, 1])) if np.isfinite(vector).any() else np.inf
        neighbours = min(typical, key=typical.get)
    vector, _ = offsets(movers, neighbours, max_reach)
    out = np.full((len(positions), 2), np.nan)
    out[movers] = vector
    return Displacements(out, int(neighbours), int(of), int(relative_to))


def parse_pair(text: str) -> tuple[int, int]:
    """'1:0' → (1, 0): the sublattice that moves, and the one whose neighbours define its site.

    Parameters
    ----------
    text : str
        "OF:RELATIVE_TO", two different sublattice numbers ≥ 0.

    Returns
    -------
    tuple of (int, int)
        (of, relative_to).

    Raises
    ------
    ParameterError
        When the text is not two whole numbers separated by ":", or they are negative or equal.
    """
    try:
        of, relative_to = (int(part) for part in text.split(":"))
    except ValueError:
        raise ParameterError(f"--displacements {text!r}: expected OF:RELATIVE_TO sublattice numbers, e.g. 1:0") from None
    if of < 0 or relative_to < 0 or of == relative_to:
        raise ParameterError(f"--displacements {text!r}: expected two different sublattice numbers ≥ 0, e.g. 1:0")
    return of, relative_to
