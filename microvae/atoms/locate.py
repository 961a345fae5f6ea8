"""``find_atoms``: the whole locator, from a raw image to labelled, refined columns (both engines)."""

from __future__ import annotations

import glob
import sys

import numpy as np

from ..errors import ParameterError
from .backend import as_float32, to_numpy
from .lattice import estimate_lattice, prepare_image
from .peaks import disk_maxima, filter_gain, inner_radius, maxima_radius, noise_sd, square_maxima, stands_out_from_noise, threshold_from
from .refine import keep_inside, parabola_start, refine_center_of_mass, refine_gaussian
from .response import detection_response, log_response_and_maxima, response_torch
from .tables import AtomTable, FindAtomsParams, LatticeEstimate

__all__ = ["column_displacements", "find_atoms", "find_atoms_torch", "torch_device_for"]


def find_atoms(image: np.ndarray, params: FindAtomsParams | None = None, progress=None) -> tuple[AtomTable, LatticeEstimate]:
    """Find and refine atomic columns in one image.

    Parameters
    ----------
    image : (H, W) ndarray
        The scan, any real dtype (worked on as float32), bright columns on a dark background (set
        ``params.invert`` for dark columns).
    params : FindAtomsParams, optional
        Detection, refinement and sublattice settings; ``None`` estimates everything from the image.
        ``params.device`` chooses the engine (numpy, or torch: :func:`find_atoms_torch`).
    progress : callable, optional
        ``progress(completed, total)`` is called as the Gaussian refinement works through its
        chunks of columns.

    Returns
    -------
    atoms : AtomTable
        The columns inside the image in row-major order: positions (N, 2) float64 (row, col) in
        px, intensities, widths (px), scores, sublattice labels and displacements (px).
    lattice : LatticeEstimate
        The lattice estimate used (spacing and σ in px), with the user's overrides applied.

    Raises
    ------
    ParameterError
        A parameter is out of range, or the device asked for is not available.

    Examples
    --------
    >>> from microvae.atoms import FindAtomsParams, find_atoms
    >>> from microvae.synthetic import make_lattice
    >>> scan = make_lattice(shape=(128, 128), seed=0)
    >>> atoms, lattice = find_atoms(scan.image, FindAtomsParams(device="cpu"))
    >>> atoms.positions.shape[1], atoms.positions.dtype
    (2, dtype('float64'))
    >>> len(atoms) > 150, sorted(set(atoms.sublattice.tolist()))
    (True, [0, 1])
    >>> 8 < lattice.spacing_px < 10
    True
    """
    params = params or FindAtomsParams()
    params.validate()
    device = torch_device_for(params.device)
    if device is not None:
        return find_atoms_torch(image, params, device, progress=progress)
    image = prepare_image(image, params.invert)
    estimate = estimate_lattice(image)
    sigma = params.sigma_px or estimate.sigma_px
    spacing = params.spacing_px or estimate.spacing_px
    used = LatticeEstimate(spacing_px=float(spacing), sigma_px=float(sigma), periodic=estimate.periodic)
    inner = inner_radius(spacing)
    if params.method == "log":
        response, candidates = log_response_and_maxima(image, sigma, inner)
    else:
        response = detection_response(image, sigma, spacing, params.method)
        candidates = square_maxima(response, inner)
    return _locate(image, response, candidates, sigma, spacing, params, used, progress)


def _no_nvidia_device() -> bool:
    """True where no NVIDIA GPU can be present: Linux without an ``/dev/nvidia<N>`` device node."""
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")


def torch_device_for(name: str):
    """The torch device that ``name`` selects, or None for the numpy engine.

    Parameters
    ----------
    name : str
        ``"cpu"``, ``"auto"`` (CUDA when torch is installed and sees a GPU, else None), ``"cuda"``
        or ``"cuda:N"``.

    Returns
    -------
    torch.device or None
        None selects the numpy engine.

    Raises
    ------
    ParameterError
        ``"cuda"`` was asked for without torch or without a CUDA device.
    """
    if name == "cpu" or (name == "auto" and "torch" not in sys.modules and _no_nvidia_device()):
        return None  # importing torch only to learn there is no GPU costs about 1 s
    try:
        import torch
    except ImportError:
        if name == "auto":
            return None
        raise ParameterError(f"device {name!r} needs torch, which is not installed") from None
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if not torch.cuda.is_available():
        raise ParameterError(f"device {name!r} requested but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def find_atoms_torch(image: np.ndarray, params: FindAtomsParams | None = None, device="cuda", progress=None) -> tuple[AtomTable, LatticeEstimate]:
    """:func:`find_atoms` on the torch engine.

    Parameters
    ----------
    image : (H, W) ndarray
        The scan (worked on as float32).
    params : FindAtomsParams, optional
        As for :func:`find_atoms`; ``params.device`` is ignored.
    device : str or torch.device, default "cuda"
        Any torch device (``"cpu"`` runs torch on the CPU: slow, but it checks the engine where no
        GPU is at hand).
    progress : callable, optional
        ``progress(completed, total)`` during the Gaussian refinement.

    Returns
    -------
    atoms : AtomTable
        As for :func:`find_atoms` (same peaks; positions agree to ~10⁻⁵ px).
    lattice : LatticeEstimate
        The lattice estimate used.
    """
    import torch

    params = params or FindAtomsParams()
    params.validate()
    device = torch.device(device)
    with _full_float32_matmul():
        return _find_atoms_torch(torch.from_numpy(as_float32(image)).to(device), params, progress)


class _full_float32_matmul:
    """Turn off TF32 for CUDA matrix products while the torch engine runs (the fit's moments are
    float32 einsums; TF32 keeps 10 mantissa bits and would blur the centres by ~10⁻³ px)."""

    def __enter__(self):
        import torch

        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.saved


def _find_atoms_torch(data, params: FindAtomsParams, progress) -> tuple[AtomTable, LatticeEstimate]:
    image = prepare_image(data, params.invert)
    estimate = estimate_lattice(image)
    sigma = params.sigma_px or estimate.sigma_px
    spacing = params.spacing_px or estimate.spacing_px
    used = LatticeEstimate(spacing_px=float(spacing), sigma_px=float(sigma), periodic=estimate.periodic)
    response = response_torch(image, sigma, spacing, params.method)
    candidates = square_maxima(response, inner_radius(spacing))
    return _locate(image, response, candidates, sigma, spacing, params, used, progress)


def _locate(image, response, candidates, sigma, spacing, params: FindAtomsParams, used: LatticeEstimate, progress) -> tuple[AtomTable, LatticeEstimate]:
    """Steps 3–4 from the candidate maxima on; ``image`` and ``response`` are numpy arrays or torch tensors."""
    peaks, heights = disk_maxima(response, candidates, maxima_radius(spacing))
    noise = noise_sd(image)
    threshold = params.threshold
    if threshold is None:
        threshold = threshold_from(noise, filter_gain(sigma, spacing, params.method), heights, params.threshold_rel)
    keep = heights > threshold
    peaks, scores = peaks[keep], heights[keep]
    if params.threshold is None and not stands_out_from_noise(image, peaks, scores, sigma, noise):
        peaks, scores = peaks[:0], scores[:0]
    if params.refine == "gaussian":
        table = refine_gaussian(image, peaks, sigma, spacing, progress=progress, start=parabola_start(response, peaks))
    else:
        positions = refine_center_of_mass(image, peaks, sigma, spacing) if params.refine == "com" else peaks * 1.0
        table = AtomTable(to_numpy(positions, np.float64), to_numpy(scores, np.float64), np.full(len(peaks), float(sigma)), None, np.ones(len(peaks), bool))
    table.score = to_numpy(scores, np.float64)
    if len(table) and (params.sublattices or params.joint):
        table, used = _every_sublattice(image, response, table, sigma, noise, params, used)
    table = keep_inside(table, tuple(image.shape))
    table.displacement_px = column_displacements(table.positions, table.sublattice, params.displacements)
    if len(table) and (params.sublattices or params.joint):
        from dataclasses import replace

        counts = tuple(int((table.sublattice == k).sum()) for k in range(int(table.sublattice.max()) + 1))
        widths = tuple(float(np.median(table.sigma_px[table.sublattice == k])) if counts[k] else float("nan") for k in range(len(counts)))
        used = replace(used, sublattice_counts=counts, sublattice_sigma_px=widths)
    return table, used


def column_displacements(positions: np.ndarray, sublattice: np.ndarray, spec: str) -> np.ndarray:
    """Each column's displacement from the centroid of its neighbours in another sublattice.

    Parameters
    ----------
    positions : (N, 2) ndarray
        Column positions, (row, col) in px.
    sublattice : (N,) int ndarray
        Sublattice of each column, 0 the brightest.
    spec : str
        ``"auto"``, ``"none"`` or ``"OF:RELATIVE_TO"`` (see :class:`FindAtomsParams`).

    Returns
    -------
    (N, 2) float64 ndarray
        (row, col) displacements in px; NaN where not computed.

    Raises
    ------
    ParameterError
        ``spec`` names a sublattice the atoms do not hold.
    """
    from ..displacements import neighbour_displacements, parse_pair

    out = np.full((len(positions), 2), np.nan)
    if spec == "none" or len(positions) == 0:
        return out
    if spec == "auto":
        pairs = [(of, 0) for of in range(1, int(sublattice.max()) + 1)]
    else:
        pairs = [parse_pair(spec)]
    for of, relative_to in pairs:
        if (sublattice == of).any() and (sublattice == relative_to).sum() >= 2:
            found = neighbour_displacements(positions, sublattice, of, relative_to)
            movers = sublattice == of
            out[movers] = found.vector_px[movers]
        elif spec != "auto":
            raise ParameterError(f"--displacements {spec}: the atoms hold sublattices " + ", ".join(str(k) for k in np.unique(sublattice)))
    return out


def _every_sublattice(
    image, response, table: AtomTable, sigma: float, noise: float, params: FindAtomsParams, used: LatticeEstimate
) -> tuple[AtomTable, LatticeEstimate]:
    """The second search, joint refinement and labels of :mod:`microvae.sublattices` (numpy, CPU)."""
    from dataclasses import replace

    from scipy.spatial import cKDTree

    from ..sublattices import complete_lattice, label_columns

    if params.refine != "gaussian":  # labels only
        nearest = float(np.median(cKDTree(table.positions).query(table.positions, k=2)[0][:, 1])) if len(table) > 1 else None
        if params.sublattices and nearest is not None:
            table.sublattice = label_columns(table.positions, np.clip(table.intensity, 1e-6, None), tuple(image.shape), nearest)[0]
        return table, replace(used, nearest_neighbour_px=nearest)
    done = complete_lattice(
        to_numpy(image, np.float32),
        table.positions,
        table.intensity,
        table.sigma_px,
        float(sigma),
        float(np.percentile(table.score, 90)),
        noise,
        joint=params.joint,
        search=params.sublattices,
    )
    old = done.source >= 0
    peaks = np.clip(np.round(done.positions).astype(np.int64), 0, np.array(image.shape) - 1)
    scores = to_numpy(response)[peaks[:, 0], peaks[:, 1]].astype(np.float64)  # new columns: the response at their peak
    scores[old] = table.score[done.source[old]]
    fit_ok = done.refitted.copy()
    fit_ok[old] = table.fit_ok[done.source[old]]
    sublattice = done.sublattice if params.sublattices else np.zeros(len(done.positions), np.int64)
    table = AtomTable(done.positions, done.amplitudes, done.sigma_px, scores, fit_ok, sublattice)
    nearest = done.nearest_neighbour_px if len(table) > 1 else None
    return table, replace(used, nearest_neighbour_px=nearest, second_search=int((~old).sum()))
