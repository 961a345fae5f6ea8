"""Run atomap's peak finding and 2D-Gaussian refinement on images handed over as .npz files.

This script runs in a **throw-away virtualenv outside the repository** that has atomap in it
(atomap pulls in hyperspy, dask, numba and friends, none of which microvae needs)::

    python3 -m venv /tmp/venv-atomap && /tmp/venv-atomap/bin/pip install atomap
    /tmp/venv-atomap/bin/python benchmarks/atomap_runner.py MANIFEST.json

``bench_find_atoms.py --lattices`` writes the manifest and the input files, calls this script once
(so atomap and hyperspy are imported once), and reads the outputs back. It imports nothing from
microvae. The manifest is JSON: ``{"jobs": [{"mode": ..., "input": "in.npz", "output": "out.npz"}, ...]}``.

Inputs (.npz), positions always (row, col) in pixels, pixel (r, c) centred at (r, c):

* ``image`` (H, W): the scan, bright columns (invert dark-column scans before handing them over).
* mode ``"peaks"``: ``separations`` (K,) and ``thresholds`` (K,): atomap's peak finding
  (``atom_finding_refining.get_atom_positions(signal, separation, threshold_rel)``) for each pair;
  writes ``positions_<k>`` (N_k, 2) for each. Cheap; used to calibrate the two choices.
* mode ``"refine"``: either ``positions`` (N, 2), the starting positions, or ``separation`` and
  ``threshold_rel`` for atomap's own peak finding; optional ``percent_to_nn`` (atomap's default
  0.4). Runs atomap's usual recipe: ``Sublattice(...)``, ``find_nearest_neighbors()``,
  ``refine_atom_positions_using_center_of_mass()``, ``refine_atom_positions_using_2d_gaussian()``
  (rotation enabled, atomap's default). Writes ``positions`` (N, 2) after the Gaussian fit,
  ``start`` (N, 2) the peaks it started from, and the times in seconds (``time.perf_counter``,
  after the imports): ``t_peaks``, ``t_neighbours``, ``t_com``, ``t_gaussian`` and ``t_total``.

Every output also holds ``atomap_version``.

atomap refuses negative pixel values (read noise makes some), so the image is shifted by its
minimum first; a constant offset moves no column.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np


def _signal(image: np.ndarray):
    import hyperspy.api as hs

    return hs.signals.Signal2D(image)


def _non_negative(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image - image.min()


def _peaks(image: np.ndarray, separation: float, threshold_rel: float) -> np.ndarray:
    """atomap's peak finding; returns (N, 2) (row, col)."""
    from atomap.atom_finding_refining import get_atom_positions

    xy = get_atom_positions(_signal(image), separation=max(1, int(separation)), threshold_rel=float(threshold_rel))
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return xy[:, ::-1].copy()  # atomap's (x, y) = our (col, row)


def run_peaks(data) -> dict:
    image = _non_negative(data["image"])
    out = {}
    for k, (separation, threshold) in enumerate(zip(data["separations"], data["thresholds"])):
        out[f"positions_{k}"] = _peaks(image, separation, threshold)
    out["separations"] = np.asarray(data["separations"])
    out["thresholds"] = np.asarray(data["thresholds"])
    return out


def run_refine(data) -> dict:
    import atomap.api as am

    image = _non_negative(data["image"])
    times = {}
    start = time.perf_counter()
    if "positions" in data:
        rowcol = np.asarray(data["positions"], dtype=np.float64).reshape(-1, 2)
    else:
        rowcol = _peaks(image, float(data["separation"]), float(data["threshold_rel"]))
    times["t_peaks"] = time.perf_counter() - start
    if len(rowcol) < 2:
        return {"positions": rowcol, "start": rowcol, **times, "t_neighbours": 0.0, "t_com": 0.0, "t_gaussian": 0.0, "t_total": times["t_peaks"]}
    percent = float(data["percent_to_nn"]) if "percent_to_nn" in data else 0.4
    sublattice = am.Sublattice(rowcol[:, ::-1].copy(), image=image)
    mark = time.perf_counter()
    sublattice.find_nearest_neighbors()
    times["t_neighbours"] = time.perf_counter() - mark
    mark = time.perf_counter()
    sublattice.refine_atom_positions_using_center_of_mass(percent_to_nn=percent, show_progressbar=False)
    times["t_com"] = time.perf_counter() - mark
    mark = time.perf_counter()
    sublattice.refine_atom_positions_using_2d_gaussian(percent_to_nn=percent, show_progressbar=False)
    times["t_gaussian"] = time.perf_counter() - mark
    times["t_total"] = time.perf_counter() - start
    positions = np.stack([np.asarray(sublattice.y_position, dtype=np.float64), np.asarray(sublattice.x_position, dtype=np.float64)], axis=1)
    return {"positions": positions, "start": rowcol, **times}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    warnings.filterwarnings("ignore")  # hyperspy's deprecation chatter
    import logging

    logging.disable(logging.WARNING)  # atomap/hyperspy log a warning per failed fit
    from importlib.metadata import version

    atomap_version = version("atomap")
    manifest = json.loads(open(argv[0]).read())
    for job in manifest["jobs"]:
        with np.load(job["input"]) as data:
            data = dict(data)
        result = run_peaks(data) if job["mode"] == "peaks" else run_refine(data)
        np.savez(job["output"], atomap_version=np.array(atomap_version), **result)
        print(f"atomap {atomap_version}: {job['mode']} {job['input']} -> {job['output']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
