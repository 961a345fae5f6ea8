"""Cached abTEM multislice simulations (written by ``benchmarks/simulate_abtem.py``) read as
:class:`GroundTruthScan` and wrapped as generators.

Conventions (those of :mod:`microvae.lattices`): positions are (row, col) in pixels and pixel
(r, c) covers [r − ½, r + ½) × [c − ½, c + ½); widths σ in pixels; intensities in units of the
brightest column's noise-free peak above the background.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .truth import SIZES, GroundTruthScan

__all__ = [
    "ABTEM_DIR",
    "abtem_files",
    "abtem_generator",
    "load_abtem",
]

ABTEM_DIR = Path(__file__).resolve().parent.parent.parent / "benchmarks" / "data" / "abtem"


# ----------------------------------------------------------------------------------------------
# Cached multislice simulations (benchmarks/simulate_abtem.py)


def abtem_files(directory: Path | None = None) -> dict[str, Path]:
    """``{generator name: npz path}`` of the cached abTEM simulations that exist.

    Parameters
    ----------
    directory : path, optional
        The folder of the cached ``.npz`` files; default :data:`ABTEM_DIR`
        (``benchmarks/data/abtem``).

    Returns
    -------
    dict of str to Path
        ``{"abtem_<stem>": path}`` for every ``<stem>.npz`` in the folder, sorted by name; empty
        when the folder does not exist.
    """
    directory = ABTEM_DIR if directory is None else Path(directory)
    if not directory.is_dir():
        return {}
    return {f"abtem_{path.stem}": path for path in sorted(directory.glob("*.npz"))}


def load_abtem(name: str, seed: int | None = None, dose: float | None = None, directory: Path | None = None) -> GroundTruthScan:
    """A cached abTEM multislice simulation as a :class:`GroundTruthScan`.

    Parameters
    ----------
    name : str
        ``"abtem_mos2"`` or ``"mos2"`` (the file ``benchmarks/data/abtem/mos2.npz``), etc.
    seed : int, optional
        Seed of the Poisson noise (0 when omitted); used only with a ``dose``.
    dose : float, optional
        Counts per unit of the image's mean: with a ``dose``, Poisson noise is drawn with
        ``seed``; without, the noise-free simulated image is returned.
    directory : path, optional
        The folder of the cached simulations; default :data:`ABTEM_DIR`.

    Returns
    -------
    GroundTruthScan
        Named ``"abtem_<stem>"``; the (H, W) float32 image and the truth arrays stored in the
        file; ``params`` are the simulation's, with ``generator`` and ``file`` (and ``seed`` and
        ``dose`` when noise was drawn).

    Raises
    ------
    FileNotFoundError
        The simulation is not cached (run ``benchmarks/simulate_abtem.py``).
    """
    directory = ABTEM_DIR if directory is None else Path(directory)
    stem = name[len("abtem_") :] if name.startswith("abtem_") else name
    path = directory / f"{stem}.npz"
    if not path.is_file():
        available = sorted(abtem_files(directory))
        raise FileNotFoundError(
            f"no cached abTEM simulation {str(path)!r} (available: {available or 'none'}); "
            "regenerate with benchmarks/simulate_abtem.py (see benchmarks/data/abtem/README.md)"
        )
    with np.load(path, allow_pickle=False) as data:
        params = json.loads(str(data["params_json"]))
        image = data["image"].astype(np.float64)
        positions = data["positions"].astype(np.float64)
        sublattice = data["sublattice"].astype(np.int64)
        names = tuple(str(v) for v in data["sublattice_names"])
        displacement = data["displacement_px"].astype(np.float64)
        species = data["species"].astype(np.int64)
        vacancies = data["vacancies"].astype(np.float64).reshape(-1, 2)
        invert = bool(data["invert"])
    params = {**params, "generator": f"abtem_{stem}", "file": path.name}
    if dose is not None:
        mean = max(float(image.mean()), 1e-12)
        rng = np.random.default_rng([int(seed or 0), 0])
        image = rng.poisson(np.clip(image, 0, None) / mean * dose) * mean / dose
        params.update(seed=int(seed or 0), dose=float(dose))
    return GroundTruthScan(f"abtem_{stem}", image.astype(np.float32), positions, sublattice, names, displacement, species, vacancies, invert, params)


def abtem_generator(name: str) -> Callable[..., GroundTruthScan]:
    """A generator ``(seed=0, size="ci", dose=None) -> GroundTruthScan`` for one cached simulation.

    Parameters
    ----------
    name : str
        ``"abtem_<stem>"``, a key of :func:`abtem_files`.

    Returns
    -------
    callable
        Reads the simulation with :func:`load_abtem`; ``size`` is checked but the image is the
        simulated one; ``dose`` adds Poisson noise drawn with ``seed``.
    """

    def generate(seed: int = 0, size: str = "ci", dose: float | None = None) -> GroundTruthScan:
        if size not in SIZES:
            raise ValueError(f"{name}: size must be one of {SIZES}, got {size!r}")
        return load_abtem(name, seed=seed, dose=dose)

    generate.__name__ = name
    generate.__doc__ = (
        f"The cached abTEM simulation {name!r} (:func:`load_abtem`); ``size`` is accepted but the image is "
        "the simulated one; ``dose`` adds Poisson noise drawn with ``seed``."
    )
    return generate
