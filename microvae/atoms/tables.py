"""What find-atoms produces and is told: the atom table, the lattice estimate, the parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

__all__ = ["DETECTION_METHODS", "DEVICES", "REFINEMENT_METHODS", "AtomTable", "FindAtomsParams", "LatticeEstimate"]

DETECTION_METHODS = ("log", "max")
REFINEMENT_METHODS = ("gaussian", "com", "none")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class LatticeEstimate:
    """What the image's autocorrelation says about its columns.

    Attributes
    ----------
    spacing_px : float
        Nearest-neighbour distance between columns (px).
    sigma_px : float
        Gaussian width σ of one column (px).
    periodic : bool
        False when the autocorrelation showed no clear lattice peak (the spacing is then a guess
        of 4σ and the user may want to set it).
    nearest_neighbour_px : float or None
        Median distance (px) from each column found to its nearest neighbour, all sublattices
        together (None before the columns are found). Smaller than ``spacing_px`` where the
        autocorrelation saw only the brightest sublattice.
    sublattice_counts : tuple of int
        Columns per sublattice, brightest first.
    sublattice_sigma_px : tuple of float
        Their median widths (px).
    second_search : int
        Columns found by the second search, in the residual of the first.
    """

    spacing_px: float
    sigma_px: float
    periodic: bool = True
    nearest_neighbour_px: float | None = None
    sublattice_counts: tuple[int, ...] = ()
    sublattice_sigma_px: tuple[float, ...] = ()
    second_search: int = 0


@dataclass
class AtomTable:
    """Atoms found in one image.

    Attributes
    ----------
    positions : (N, 2) float64 ndarray
        (row, col) in px.
    intensity : (N,) ndarray
        Fitted peak height above the local background (image units; for ``com`` or ``none``
        refinement, the filtered response at the peak).
    sigma_px : (N,) ndarray
        Gaussian width used by the fit (px; the image's median fitted width; the estimate when not
        fitted).
    score : (N,) ndarray
        Detection response at the candidate peak.
    fit_ok : (N,) bool ndarray
        False where a Gaussian fit failed and the starting position was kept.
    sublattice : (N,) int ndarray
        Sublattice of each column, 0 the brightest (:func:`microvae.sublattices.label_columns`:
        the sites of the unit cell that the lattice's translations link, split where their fitted
        heights differ).
    displacement_px : (N, 2) ndarray
        (row, col) offset (px) of each column from the centroid of its neighbours in the reference
        sublattice (:mod:`microvae.displacements`); NaN where not computed.
    """

    positions: np.ndarray
    intensity: np.ndarray
    sigma_px: np.ndarray
    score: np.ndarray
    fit_ok: np.ndarray
    sublattice: np.ndarray | None = None
    displacement_px: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sublattice is None:
            self.sublattice = np.zeros(len(self.positions), np.int64)
        if self.displacement_px is None:
            self.displacement_px = np.full((len(self.positions), 2), np.nan)

    def __len__(self) -> int:
        return int(len(self.positions))


@dataclass
class FindAtomsParams:
    """Parameters of :func:`find_atoms`. ``None`` means: estimate from the image.

    Attributes
    ----------
    method : {"log", "max"}
        The detection response (:data:`DETECTION_METHODS`).
    refine : {"gaussian", "com", "none"}
        How positions are refined (:data:`REFINEMENT_METHODS`).
    sigma_px, spacing_px : float or None
        Column width σ (0.3–100 px) and nearest-neighbour spacing (2–1000 px); None estimates them.
    threshold : float or None
        Absolute detection threshold on the response; None derives it from the noise and
        ``threshold_rel`` (in [0, 1)).
    threshold_rel : float
        Relative threshold used when ``threshold`` is None.
    invert : bool
        Dark columns on a bright background (ABF).
    device : str
        ``"cpu"`` (numpy/scipy), ``"cuda"`` (torch on the GPU; ``"cuda:1"`` etc. name one) or
        ``"auto"`` (CUDA when torch sees a GPU, else the CPU; it imports torch to ask). Both engines
        give the same atoms (same peaks; positions agree to ~10⁻⁵ px, far below their accuracy).
    sublattices : bool
        Search the residual of the first search for dimmer columns (every sublattice;
        :mod:`microvae.sublattices`) and label each column's sublattice.
    joint : bool
        Refine columns whose neighbours reach into their fit window against the image minus the
        neighbours' fitted models, with one width per sublattice. ``sublattices`` and ``joint`` need
        ``refine="gaussian"`` (with ``com`` or ``none`` only the labels are made) and run on the CPU
        in either engine.
    displacements : str
        ``"auto"`` (each column of sublattice s ≥ 1 against the centroid of its neighbours in
        sublattice 0, when there are two or more), ``"none"``, or ``"OF:RELATIVE_TO"`` such as
        ``"1:0"`` (:mod:`microvae.displacements`).
    """

    method: str = "log"
    refine: str = "gaussian"
    sigma_px: float | None = None
    spacing_px: float | None = None
    threshold: float | None = None
    threshold_rel: float = 0.2
    invert: bool = False
    device: str = "auto"
    sublattices: bool = True
    joint: bool = True
    displacements: str = "auto"

    def validate(self) -> None:
        """Check the parameters.

        Raises
        ------
        ParameterError
            When ``method``, ``refine`` or ``device`` is unknown, ``sigma_px`` is outside
            0.3–100 px, ``spacing_px`` outside 2–1000 px, ``threshold_rel`` outside [0, 1), or
            ``displacements`` is neither "auto", "none" nor a valid "OF:RELATIVE_TO" pair.
        """
        if self.method not in DETECTION_METHODS:
            raise ParameterError(f"unknown detection method {self.method!r}; expected one of {', '.join(DETECTION_METHODS)}")
        if self.refine not in REFINEMENT_METHODS:
            raise ParameterError(f"unknown refinement {self.refine!r}; expected one of {', '.join(REFINEMENT_METHODS)}")
        if self.sigma_px is not None and not (0.3 <= self.sigma_px <= 100):
            raise ParameterError(f"--sigma {self.sigma_px} px is out of range; expected 0.3 to 100 pixels")
        if self.spacing_px is not None and not (2 <= self.spacing_px <= 1000):
            raise ParameterError(f"--spacing {self.spacing_px} px is out of range; expected 2 to 1000 pixels")
        if not (0 <= self.threshold_rel < 1):
            raise ParameterError(f"--threshold-rel {self.threshold_rel} is out of range; expected 0 ≤ value < 1")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ParameterError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        if self.displacements not in ("auto", "none"):
            from ..displacements import parse_pair

            parse_pair(self.displacements)
