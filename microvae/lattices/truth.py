"""What every lattice generator returns (:class:`GroundTruthScan`), and what all generators
share: their parameters (defaults, size, overrides), their random streams, and the assembly of
the truth arrays.

Conventions (those of :mod:`microvae.lattices`): positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½); widths σ in pixels; intensities in units of the
brightest column's noise-free peak above the background.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..synthetic import positions_inside

__all__ = [
    "GroundTruthScan",
    "SIZES",
    "component_streams",
    "ground_truth_scan",
    "merge_params",
]

SIZES = ("ci", "bench")


@dataclass
class GroundTruthScan:
    """A synthetic or simulated scan and its ground truth, one row per column present.

    Attributes
    ----------
    name : str
        The generator's name.
    image : ndarray
        (H, W) float32 scan; columns are bright unless ``invert``.
    positions : ndarray
        (N, 2) float64 true (row, col) of every column present, in pixels; columns up to
        a profile radius outside the image are included (they shape its edges).
    sublattice : ndarray
        (N,) int64 index into ``sublattice_names``.
    sublattice_names : tuple of str
        The sublattices' names, e.g. ("Mo", "S2") or ("A", "B").
    displacement_px : ndarray
        (N, 2) float64 (row, col) imposed displacement of each column from its
        ideal site, in pixels; zero where none is imposed (random static jitter is not in it).
    species : ndarray
        (N,) int64 chemical species or variant per column; equals ``sublattice`` where
        nothing is substituted. ``params["species_names"]`` names them.
    vacancies : ndarray
        (M, 2) float64 (row, col) of the sites left empty.
    invert : bool
        True when the columns are dark (ABF-like): find atoms with ``invert=True``.
    params : dict
        Every parameter that made it (json-serialisable).
    extra : dict
        Generator-specific arrays, documented by each generator (e.g. ``region`` and
        ``variant`` per column, ``row_shift_px`` per image row).
    """

    name: str
    image: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    sublattice_names: tuple[str, ...]
    displacement_px: np.ndarray
    species: np.ndarray
    vacancies: np.ndarray
    invert: bool
    params: dict
    extra: dict = field(default_factory=dict)

    def inside(self, margin: float = 0.0) -> np.ndarray:
        """Boolean mask (N,) of columns at least ``margin`` pixels inside the image.

        Parameters
        ----------
        margin : float, default 0.0
            Distance from the outermost pixel centres, px.

        Returns
        -------
        ndarray
            (N,) bool.
        """
        return positions_inside(self.positions, self.image.shape, margin)


# ----------------------------------------------------------------------------------------------
# Parameters


def merge_params(name: str, defaults: dict[str, dict], size: str, seed: int, overrides: dict) -> dict:
    """One generator's parameters: its defaults at ``size``, with ``overrides`` applied.

    Parameters
    ----------
    name : str
        The generator's name (for messages and ``params["generator"]``).
    defaults : dict
        ``{"common": {...}, "ci": {...}, "bench": {...}}``; the size's entries (among them
        ``"shape"``, [H, W] in pixels) update the common ones.
    size : str
        One of :data:`SIZES`.
    seed : int
        The generator's seed, recorded in the result.
    overrides : dict
        Replacements for any documented parameter, or ``noise=False`` for the noise-free image.

    Returns
    -------
    dict
        json-serialisable parameters, with ``noise``, ``shape`` (list of two ints),
        ``generator``, ``seed`` and ``size``.

    Raises
    ------
    ValueError
        ``size`` is not one of :data:`SIZES`.
    TypeError
        An override names no parameter of the generator.
    """
    if size not in SIZES:
        raise ValueError(f"{name}: size must be one of {SIZES}, got {size!r}")
    params = dict(defaults["common"])
    params.update(defaults[size])
    params["noise"] = True
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise TypeError(f"{name}: unknown parameter(s) {unknown}; known: {sorted(params)}")
    params.update(overrides)
    params = json.loads(json.dumps(params, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    params["shape"] = [int(v) for v in params["shape"]]
    params.update(generator=name, seed=int(seed), size=size)
    return params


def component_streams(seed: int):
    """Independent random streams per component: ``rng(k)``.

    Parameters
    ----------
    seed : int
        The generator's seed.

    Returns
    -------
    callable
        ``rng(k) -> numpy.random.Generator``, ``default_rng([seed, k])``: switching one component
        off leaves the others' draws as they were.
    """
    return lambda k: np.random.default_rng([int(seed), int(k)])


def ground_truth_scan(name, image, positions, sublattice, names, displacement, species, vacancies, invert, params, extra=None) -> GroundTruthScan:
    """Assemble a :class:`GroundTruthScan`, its columns sorted by (row, col).

    Parameters
    ----------
    name : str
        The generator's name.
    image : numpy.ndarray
        (H, W) scan, stored as float32.
    positions : numpy.ndarray
        (N, 2) (row, col) of every column present, in pixels.
    sublattice, species : numpy.ndarray
        (N,) ints per column.
    names : sequence of str
        The sublattices' names.
    displacement : numpy.ndarray
        (N, 2) (row, col) imposed displacement of each column, in pixels.
    vacancies : numpy.ndarray
        (M, 2) (row, col) of the empty sites, in pixels.
    invert : bool
        True for dark columns (ABF-like).
    params : dict
        The parameters that made it.
    extra : dict, optional
        Generator-specific arrays; those of length N (except ``row_shift_px``, one value per
        image row) are per column and sorted with the columns.

    Returns
    -------
    GroundTruthScan
    """
    order = np.lexsort((positions[:, 1], positions[:, 0]))
    per_column = {
        key: np.asarray(value)[order] for key, value in (extra or {}).items() if np.ndim(value) and len(value) == len(positions) and key != "row_shift_px"
    }
    others = {key: np.asarray(value) for key, value in (extra or {}).items() if key not in per_column}
    return GroundTruthScan(
        name=name,
        image=np.asarray(image, dtype=np.float32),
        positions=np.asarray(positions, dtype=np.float64)[order],
        sublattice=np.asarray(sublattice, dtype=np.int64)[order],
        sublattice_names=tuple(names),
        displacement_px=np.asarray(displacement, dtype=np.float64)[order],
        species=np.asarray(species, dtype=np.int64)[order],
        vacancies=np.asarray(vacancies, dtype=np.float64).reshape(-1, 2),
        invert=bool(invert),
        params=params,
        extra={**per_column, **others},
    )
