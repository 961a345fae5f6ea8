"""Benchmark: microvae's atom finder against trackpy.locate, skimage.feature.blob_log and atomap.

Two parts, each running every method it compares in one run on the same images.

**Part 1, speed** (the default run; ``--quick``, ``--skip-4096``; find_atoms.{json,md}): microvae,
trackpy and blob_log on the same synthetic two-sublattice images (``microvae.synthetic.make_lattice``:
bright columns plus dim columns at 0.45× on the cell centres, σ = 1.6 px, nearest-neighbour
distance 12/√2 ≈ 8.5 px, vacancies, jitter, slow background, shot + read noise) with known ground
truth, scored the same way:

* only columns at least 3 px inside the image count, truth and detections alike (as
  ``tests/test_atoms.py::interior_score`` does);
* one-to-one matching within 3 px (``microvae.synthetic.score_detection``): F1, precision, recall,
  and the RMSE (px) of the matched pairs;
* time: ``time.perf_counter`` around the locate call only (not image generation, not scoring),
  best of N repeats (3 on 1024², 3 on 4096², blob_log once on 4096²); the load average is
  recorded with each case (the machine may be shared).

microvae gets NO parameters: it estimates the spacing and σ from the image itself. Its CPU engine
(numpy/scipy, ``device="cpu"``) always runs; its torch engine runs on CUDA (``device="cuda"``) when
torch sees a GPU, and the run says so when it does not. The peers get
parameters derived from the known lattice, and their free choices (trackpy's diameter,
separation, percentile and minmass; blob_log's threshold) are calibrated once, at the start of
the run, on a separate medium-SNR image (a different seed from every benchmark image). The
calibration results are printed and saved too. trackpy runs at its best with numba installed
(``pip install -e .[bench]`` brings it); the run records whether it was.

**Part 2, atoms on other lattices** (``--lattices``, and after part 1 in the full run;
find_atoms_lattices.{json,md}): every generator of ``microvae.lattices.GENERATORS`` (honeycomb,
displaced_perovskite, dumbbells, scan_distorted, abf_perovskite, and any cached abtem_* simulation)
plus ``make_lattice`` at the three SNR presets (same size as the generators), seeds 0, 1, 2
(``--size bench``: 1024², the default; ``--size ci``: 256², a smoke run written to
find_atoms_lattices_ci.*). On each image, in one run:

* **microvae** ``find_atoms(image, FindAtomsParams(invert=scan.invert, device="cpu"))``: no other
  parameter. Also recorded: the spacing and σ it estimated, and, when its AtomTable has a
  ``sublattice`` field, the count per label and the matched accuracy of the labels against the true
  sublattices on the matched columns.
* **trackpy.locate** and **skimage blob_log**, calibrated per generator on a separate image of it
  (seed 1000), **given the true σ and nearest-neighbour distance**: trackpy's diameter
  2·round(2σ)+1 (and 2 less, 2 more), separation 0.6 or 0.75 × nn, percentile 64 or 0, minmass half
  the mass of the dimmest 1 % of the detections that match a true column; blob_log's σ range
  0.625σ–1.5625σ, threshold 0.03–0.12. Best F1 on the calibration image wins (then lowest RMSE).
* **atomap** (0.4) in a throw-away venv outside the repository (``python3 -m venv /tmp/venv-atomap &&
  /tmp/venv-atomap/bin/pip install atomap``; never in this environment), called through
  ``benchmarks/atomap_runner.py`` in one subprocess for all images: atomap's own peak finding
  (``get_atom_positions``; its separation, 0.35/0.5/0.65 × the true nn, and threshold_rel,
  0.02/0.1/0.2/0.3, calibrated on the calibration image's crop), then ``find_nearest_neighbors``,
  ``refine_atom_positions_using_center_of_mass`` and ``refine_atom_positions_using_2d_gaussian``
  (atomap's defaults: percent_to_nn 0.4, rotation enabled). One sublattice holds every peak (no
  per-sublattice recipe). It is slow (~10 ms per column), so it runs on the **central 256² crop**
  (``--atomap-crop``) and is scored on that crop only; its time is the runner's, on the crop,
  nothing scaled. Every other method is also scored on the same crop (a second table).

The peers see the scan negated where ``scan.invert`` (dark columns); microvae gets ``invert=True``.

Scoring (part 2): only columns at least 3 px inside the image (atomap: inside its crop) count,
truth and detections alike; one-to-one matching, nearest first, within 0.4 × the median true
nearest-neighbour distance (any sublattice). Overall F1 (and precision, recall, RMSE); per
sublattice the recall, the RMSE (px) and the bias: for displaced columns (``displacement_px`` ≠ 0:
film B of the displaced perovskite, reported apart from substrate B; the tilted O of the ABF
perovskite; every column of scan_distorted) the mean over matched columns displaced ≥ 0.25 px of
(found − true) · unit(imposed displacement), positive = beyond the true position, away from the
ideal site; for the others the length of the mean (found − true) vector. Time:
``time.perf_counter`` around the locate call, best of 2 (atomap: once, in its runner). The tables
give the median and the worst seed of every number; the JSON has every seed.

Usage::

    python benchmarks/bench_find_atoms.py              # full run: part 1 (1024² × 3 SNR + 4096²), then part 2
    python benchmarks/bench_find_atoms.py --skip-4096  # the same without the 4096² cases
    python benchmarks/bench_find_atoms.py --no-lattices  # part 1 only
    python benchmarks/bench_find_atoms.py --quick      # smoke run of part 1: 512² cases only
    python benchmarks/bench_find_atoms.py --lattices   # part 2 only, 1024², seeds 0-2
    python benchmarks/bench_find_atoms.py --lattices --size ci   # part 2 smoke run, 256²

Writes benchmarks/results/find_atoms.{json,md} (``--quick``: find_atoms_quick.{json,md}) and
find_atoms_lattices.{json,md} (``--size ci`` or a subset of generators or seeds:
find_atoms_lattices_<size>.{json,md}). Needs trackpy (``pip install -e .[bench]``) and
scikit-image; atomap's rows are skipped, with a note, when /tmp/venv-atomap is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microvae.atoms import FindAtomsParams, find_atoms
from microvae.synthetic import SNR_PRESETS, LatticeImage, make_lattice, match_positions, score_detection

MARGIN = 3.0  # px: score only columns at least this far inside the image
MATCH_RADIUS = 3.0  # px
CALIBRATION_SEED = 1000  # calibration image; the benchmark images use seeds 1–5
BLOB_LOG_BUDGET_S = 120.0  # skip blob_log on 4096² if its extrapolated time exceeds this
RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------------------
# Scoring and timing


def interior(positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    rows, cols = positions[:, 0], positions[:, 1]
    return (rows >= MARGIN) & (rows <= height - 1 - MARGIN) & (cols >= MARGIN) & (cols <= width - 1 - MARGIN)


def interior_score(lattice: LatticeImage, found: np.ndarray):
    """Same rule as tests/test_atoms.py: truth and detections both restricted to ≥ MARGIN px inside."""
    found = np.asarray(found, dtype=np.float64).reshape(-1, 2)
    return score_detection(lattice.positions[lattice.inside(MARGIN)], found[interior(found, lattice.params.shape)], MATCH_RADIUS)


def best_time(locate, image: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` calls of ``locate(image)`` and the positions of the last call."""
    best = np.inf
    positions = None
    for _ in range(repeats):
        start = time.perf_counter()
        positions = locate(image)
        best = min(best, time.perf_counter() - start)
    return best, positions


# ----------------------------------------------------------------------------------------------
# The methods. Each takes an image and returns (N, 2) float (row, col) positions.


def microvae_locator(refine: str, device: str = "cpu"):
    def locate(image: np.ndarray) -> np.ndarray:
        table, _ = find_atoms(image, FindAtomsParams(method="log", refine=refine, device=device))  # no lattice parameters given
        return table.positions  # numpy, on the host: a CUDA run is timed to the end of the transfer back

    return locate


def cuda_device_name() -> str | None:
    """The GPU the torch engine would use, or None (no torch, or torch without a CUDA device)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


@dataclass
class TrackpyParams:
    diameter: int
    separation: float
    percentile: float
    minmass: float

    def locate(self, image: np.ndarray) -> np.ndarray:
        import trackpy

        # preprocess=True (the default): trackpy's bandpass with noise_size=1, smoothing_size=diameter.
        features = trackpy.locate(image, self.diameter, minmass=self.minmass, separation=self.separation, percentile=self.percentile)
        return features[["y", "x"]].to_numpy(dtype=np.float64)  # trackpy's (y, x) = our (row, col)


def normalise(image: np.ndarray) -> np.ndarray:
    """Scale to about [0, 1] by the 0.1–99.9 percentiles (the same scaling microvae applies internally)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(image, [0.1, 99.9])
    return (image - low) / max(high - low, 1e-12)


@dataclass
class BlobLogParams:
    # Scale range brackets the column σ = 1.6 px; blob_log's threshold is on the scale-normalised LoG of
    # the normalised image, where a dim column (0.45 of a bright one) gives about 0.45 / 1.3 / 2 ≈ 0.17.
    threshold: float
    min_sigma: float = 1.0
    max_sigma: float = 2.5
    num_sigma: int = 5

    def locate(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import blob_log

        blobs = blob_log(normalise(image), min_sigma=self.min_sigma, max_sigma=self.max_sigma, num_sigma=self.num_sigma, threshold=self.threshold)
        return blobs[:, :2].astype(np.float64)  # integer (row, col): blob_log does no subpixel refinement


# ----------------------------------------------------------------------------------------------
# Calibration of the peers' free parameters on a separate medium-SNR image


def lattice_for(snr: str, size: int, seed: int) -> LatticeImage:
    dose, read_noise = SNR_PRESETS[snr]
    return make_lattice(shape=(size, size), dose=dose, read_noise=read_noise, seed=seed)


def rank_key(score) -> tuple[float, float]:
    return (-round(score.f1, 4), score.rmse_px)  # best F1 (to 4 decimals), then lowest RMSE


def calibrate_trackpy(lattice: LatticeImage) -> tuple[TrackpyParams, list[dict]]:
    """Pick trackpy's diameter, separation and percentile on the calibration image; derive minmass.

    Candidates: diameter 7 or 9 (odd, about 2·(2σ) + 1 for σ = 1.6 px), separation 5 or 6 (below the
    8.5 px nearest-neighbour distance), percentile 64 (trackpy's default pre-filter on peak brightness)
    or 0 (off, leaving the rejection of noise peaks to minmass, which trackpy's docs call the crucial
    parameter). minmass is derived, not guessed: half the mass of the dimmest 1 % of the detections
    that match a dim-sublattice column, so it sits well below the dim sublattice and does not reject it.
    """
    import trackpy

    truth = lattice.positions[lattice.inside(MARGIN)]
    dim = lattice.sublattice[lattice.inside(MARGIN)] == 1
    rows, best = [], None
    for diameter in (7, 9):
        for separation in (5, 6):
            for percentile in (64, 0):
                features = trackpy.locate(lattice.image, diameter, minmass=0, separation=separation, percentile=percentile)
                positions = features[["y", "x"]].to_numpy(dtype=np.float64)
                mass = features["mass"].to_numpy()
                keep = interior(positions, lattice.params.shape)
                true_index, found_index = match_positions(truth, positions[keep], MATCH_RADIUS)
                dim_mass = mass[keep][found_index[dim[true_index]]]
                minmass = float(0.5 * np.percentile(dim_mass, 1)) if dim_mass.size else 0.0
                params = TrackpyParams(diameter, separation, percentile, round(minmass, 3))
                score = interior_score(lattice, positions[mass > params.minmass])
                rows.append({**params.__dict__, "f1": score.f1, "precision": score.precision, "recall": score.recall, "rmse_px": score.rmse_px})
                if best is None or rank_key(score) < best[0]:
                    best = (rank_key(score), params)
    return best[1], rows


def calibrate_blob_log(lattice: LatticeImage) -> tuple[BlobLogParams, list[dict]]:
    """Pick blob_log's threshold on the calibration image (σ range fixed by the known column width)."""
    rows, best = [], None
    for threshold in (0.05, 0.08, 0.10, 0.12):
        params = BlobLogParams(threshold=threshold)
        score = interior_score(lattice, params.locate(lattice.image))
        rows.append({**params.__dict__, "f1": score.f1, "precision": score.precision, "recall": score.recall, "rmse_px": score.rmse_px})
        if best is None or rank_key(score) < best[0]:
            best = (rank_key(score), params)
    return best[1], rows


# ----------------------------------------------------------------------------------------------
# Run


def machine_info() -> dict:
    import scipy
    import skimage
    import trackpy

    try:
        import numba  # noqa: F401

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "trackpy": trackpy.__version__,
        "numba": numba_version,
        "torch": torch_version,
        "cuda_device": cuda_device_name(),
    }


def fmt(value: float, digits: int) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(results: list[dict]) -> str:
    lines = ["| case | method | F1 | precision | recall | RMSE (px) | time (s) | load avg |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("skipped"):
            lines.append(f"| {r['case']} | {r['method']} | skipped | | | | {r['skipped']} | |")
            continue
        lines.append(
            f"| {r['case']} | {r['method']} | {fmt(r['f1'], 4)} | {fmt(r['precision'], 4)} | {fmt(r['recall'], 4)} | {fmt(r['rmse_px'], 3)} | {fmt(r['time_s'], 2)} | {r['load_average'][0]:.1f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Part 2: atoms on other lattices (``--lattices``; also part of the full run)

LATTICE_SEEDS = (0, 1, 2)
LATTICE_CALIBRATION_SEED = 1000  # the peers' calibration image of each generator; never a benchmark seed
LATTICE_MARGIN = 3.0  # px: score only columns at least this far inside the image (or atomap's crop)
MATCH_FRACTION = 0.4  # match radius = this × the median nearest-neighbour distance of the true columns
DISPLACED_PX = 0.25  # px: the bias along the displacement averages the columns displaced at least this far
LATTICE_REPEATS = 2  # best of this many locate calls (atomap: one)
MAKE_LATTICE_SIZE = {"ci": 256, "bench": 1024}  # as the generators of microvae.lattices
ATOMAP_PYTHON = Path("/tmp/venv-atomap/bin/python")  # throw-away venv: python3 -m venv /tmp/venv-atomap && /tmp/venv-atomap/bin/pip install atomap
ATOMAP_RUNNER = Path(__file__).resolve().parent / "atomap_runner.py"
ATOMAP_CROP = 256  # atomap runs on the central crop of at most this many pixels a side
ATOMAP_TIMEOUT_S = 3600.0
METHODS = ("microvae", "trackpy", "blob_log", "atomap")


@dataclass
class MakeLatticeScan:
    """``make_lattice`` in the shape of ``microvae.lattices.GroundTruthScan`` (no imposed displacements)."""

    name: str
    image: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    sublattice_names: tuple
    displacement_px: np.ndarray
    species: np.ndarray
    vacancies: np.ndarray
    invert: bool
    params: dict

    def inside(self, margin: float = 0.0) -> np.ndarray:
        return interior_margin(self.positions, self.image.shape, margin)


def interior_margin(positions: np.ndarray, shape: tuple[int, int], margin: float, origin=(0, 0)) -> np.ndarray:
    """Mask of positions at least ``margin`` px inside the window of ``shape`` whose corner pixel is ``origin``."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    rows, cols = positions[:, 0] - origin[0], positions[:, 1] - origin[1]
    return (rows >= margin) & (rows <= shape[0] - 1 - margin) & (cols >= margin) & (cols <= shape[1] - 1 - margin)


def make_lattice_generator(snr: str, size: str):
    side = MAKE_LATTICE_SIZE[size]
    dose, read_noise = SNR_PRESETS[snr]

    def generate(seed: int = 0) -> MakeLatticeScan:
        lattice = make_lattice(shape=(side, side), dose=dose, read_noise=read_noise, seed=seed)
        n = len(lattice.positions)
        return MakeLatticeScan(
            name=f"make_lattice_{snr}",
            image=lattice.image,
            positions=lattice.positions,
            sublattice=lattice.sublattice,
            sublattice_names=("bright", "dim"),
            displacement_px=np.zeros((n, 2)),
            species=lattice.sublattice.copy(),
            vacancies=lattice.vacancies,
            invert=False,
            params={**lattice.to_dict(), "snr": snr},
        )

    return generate


def lattice_generators(size: str, only: list[str] | None = None) -> tuple[list[tuple[str, object]], list[str]]:
    """(name, generate(seed)) for every generator of ``microvae.lattices.GENERATORS`` and the make_lattice cases."""
    notes, generators = [], []
    try:
        from microvae.lattices import GENERATORS
    except ImportError as error:
        GENERATORS = {}
        notes.append(f"microvae.lattices could not be imported ({error}): only the make_lattice cases ran")
    for name, function in GENERATORS.items():
        generators.append((name, lambda seed, function=function: function(seed=seed, size=size)))
    for snr in ("high", "medium", "low"):
        generators.append((f"make_lattice_{snr}", make_lattice_generator(snr, size)))
    if only:
        generators = [(name, generate) for name, generate in generators if name in only]
    return generators, notes


def nearest_neighbour_distance(positions: np.ndarray) -> float:
    """Median distance from each true column to its nearest neighbour (any sublattice)."""
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(distances[:, 1]))


def true_sigma(scan) -> tuple[float, str]:
    """The column σ handed to the peers (from the generator's params), and where it came from.

    ``sigma_px``; else the mean of the core widths ``sigma_<x>_px`` (one per sublattice; not the
    tails or halos); else a Moffat's half width at half maximum / √(2 ln 2) (the Gaussian of the same
    FWHM); else 0.19 × the true nearest-neighbour distance (make_lattice's ratio).
    """
    params = getattr(scan, "params", {}) or {}
    if isinstance(params.get("sigma_px"), (int, float)):
        return float(params["sigma_px"]), "sigma_px"
    cores = sorted(key for key, value in params.items() if key.startswith("sigma_") and key.endswith("_px") and isinstance(value, (int, float)))
    if cores:
        return float(np.mean([params[key] for key in cores])), "mean of " + ", ".join(cores)
    if isinstance(params.get("moffat_hwhm_px"), (int, float)):
        return float(params["moffat_hwhm_px"]) / np.sqrt(2 * np.log(2)), "moffat_hwhm_px / √(2 ln 2)"
    return 0.19 * nearest_neighbour_distance(scan.positions), "0.19 × true nearest-neighbour distance (no σ in the params)"


def peer_image(scan) -> np.ndarray:
    """What the peers see: the scan, negated when its columns are dark (they have no ``invert``)."""
    image = np.asarray(scan.image, dtype=np.float32)
    return (image.max() - image) if getattr(scan, "invert", False) else image


def sublattice_groups(scan) -> list[tuple[str, np.ndarray, bool]]:
    """(name, mask over the true columns, displaced) per sublattice. A sublattice whose columns are
    only partly displaced is split into its displaced and undisplaced parts (the displaced
    perovskite: film B and substrate B, named so when the scan's ``extra["region"]`` says film = 1)."""
    names = tuple(getattr(scan, "sublattice_names", ()) or ())
    displacement = getattr(scan, "displacement_px", None)
    magnitude = np.zeros(len(scan.positions)) if displacement is None else np.hypot(*np.asarray(displacement, dtype=np.float64).reshape(-1, 2).T)
    region = (getattr(scan, "extra", None) or {}).get("region")
    groups = []
    for label in np.unique(scan.sublattice):
        mask = scan.sublattice == label
        name = names[label] if 0 <= label < len(names) else str(label)
        displaced = mask & (magnitude > 1e-6)
        if not displaced.any():
            groups.append((name, mask, False))
        elif displaced.sum() == mask.sum():
            groups.append((name, mask, True))
        else:
            film = region is not None and len(region) == len(mask) and np.array_equal(displaced, mask & (np.asarray(region) == 1))
            groups.append((f"{name} film" if film else f"{name} displaced", displaced, True))
            groups.append((f"{name} substrate" if film else f"{name} undisplaced", mask & ~displaced, False))
    return groups


def lattice_score(scan, found: np.ndarray, window: tuple[int, int, int, int] | None = None) -> dict:
    """Score found positions against the truth, per sublattice.

    Only columns at least LATTICE_MARGIN px inside the image count (inside ``window`` = (row0, col0,
    height, width) when given: atomap's crop), truth and detections alike. Matching is one-to-one,
    nearest first, within MATCH_FRACTION × the median nearest-neighbour distance of the true columns.
    Per group: recall, RMSE (px) and bias (px): for displaced columns the mean over the matched
    columns of (found − true) · (unit imposed displacement), positive = found beyond the true
    position, further from the ideal site; for the others the length of the mean (found − true).
    """
    found = np.asarray(found, dtype=np.float64).reshape(-1, 2)
    row0, col0, height, width = window or (0, 0, *scan.image.shape)
    keep_true = interior_margin(scan.positions, (height, width), LATTICE_MARGIN, (row0, col0))
    keep_found = interior_margin(found, (height, width), LATTICE_MARGIN, (row0, col0))
    spacing = nearest_neighbour_distance(scan.positions)
    radius = MATCH_FRACTION * spacing
    truth, detections = scan.positions[keep_true], found[keep_found]
    true_index, found_index = match_positions(truth, detections, radius)
    matched = len(true_index)
    precision = matched / max(len(detections), 1)
    recall = matched / max(len(truth), 1)
    errors = detections[found_index] - truth[true_index]  # found − true
    result = {
        "n_true": int(len(truth)),
        "n_found": int(len(detections)),
        "match_radius_px": radius,
        "true_nn_px": spacing,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "precision": precision,
        "recall": recall,
        "rmse_px": float(np.sqrt(np.mean(np.sum(errors**2, axis=1)))) if matched else float("nan"),
        "groups": {},
    }
    displacement = np.asarray(getattr(scan, "displacement_px", np.zeros_like(scan.positions)), dtype=np.float64).reshape(-1, 2)[keep_true]
    for name, mask, displaced in sublattice_groups(scan):
        in_group = mask[keep_true]
        hit = in_group[true_index]
        group_errors = errors[hit]
        entry = {
            "n_true": int(in_group.sum()),
            "recall": float(hit.sum() / max(in_group.sum(), 1)),
            "rmse_px": float(np.sqrt(np.mean(np.sum(group_errors**2, axis=1)))) if hit.any() else float("nan"),
        }
        entry["mean_error_px"] = float(np.hypot(*group_errors.mean(axis=0))) if hit.any() else float("nan")
        if displaced:
            direction = displacement[true_index[hit]]
            length = np.hypot(direction[:, 0], direction[:, 1])
            defined = length >= DISPLACED_PX  # the direction of a shorter displacement is left out of the mean
            unit = direction[defined] / length[defined, None]
            entry.update(
                bias_px=float(np.mean(np.sum(group_errors[defined] * unit, axis=1))) if defined.any() else float("nan"),
                bias_kind="along displacement",
                displacement_px=float(np.mean(length)) if hit.any() else float("nan"),
                n_bias=int(defined.sum()),
            )
        else:
            entry.update(bias_px=entry["mean_error_px"], bias_kind="|mean error|")
        result["groups"][name] = entry
    result["_pairs"] = (np.flatnonzero(keep_true)[true_index], np.flatnonzero(keep_found)[found_index])
    return result


def central_crop(shape: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    height, width = shape
    h, w = min(height, side), min(width, side)
    return ((height - h) // 2, (width - w) // 2, h, w)


# --- per-generator calibration of the peers (on seed LATTICE_CALIBRATION_SEED, truth known)


def calibrate_trackpy_on(scan, image: np.ndarray, sigma: float) -> tuple[TrackpyParams, list[dict]]:
    """trackpy's choices on the calibration scan: diameter 2·round(2σ)+1, 2 less or 2 more, separation 0.6 or
    0.75 × the true nearest-neighbour distance, percentile 64 or 0; minmass derived as half the mass
    of the dimmest 1 % of the detections that match a true column."""
    import trackpy

    spacing = nearest_neighbour_distance(scan.positions)
    base = 2 * max(1, int(round(2 * sigma))) + 1
    rows, best = [], None
    for diameter in sorted({max(3, base - 2), base, base + 2}):
        for separation in sorted({round(0.6 * spacing, 1), round(0.75 * spacing, 1)}):
            for percentile in (64, 0):
                features = trackpy.locate(image, diameter, minmass=0, separation=separation, percentile=percentile)
                positions = features[["y", "x"]].to_numpy(dtype=np.float64)
                mass = features["mass"].to_numpy()
                pairs = lattice_score(scan, positions)["_pairs"]
                matched_mass = mass[pairs[1]]
                minmass = float(0.5 * np.percentile(matched_mass, 1)) if matched_mass.size else 0.0
                params = TrackpyParams(diameter, separation, percentile, round(minmass, 4))
                score = lattice_score(scan, positions[mass > params.minmass])
                rows.append({**params.__dict__, "f1": score["f1"], "rmse_px": score["rmse_px"]})
                key = (-round(score["f1"], 4), score["rmse_px"])
                if best is None or key < best[0]:
                    best = (key, params)
    return best[1], rows


def calibrate_blob_log_on(scan, image: np.ndarray, sigma: float) -> tuple[BlobLogParams, list[dict]]:
    """blob_log's threshold on the calibration scan, σ range 0.625σ–1.5625σ (1–2.5 px for σ = 1.6 px)."""
    rows, best = [], None
    for threshold in (0.03, 0.05, 0.08, 0.10, 0.12):
        params = BlobLogParams(threshold=threshold, min_sigma=round(0.625 * sigma, 3), max_sigma=round(1.5625 * sigma, 3))
        score = lattice_score(scan, params.locate(image))
        rows.append({**params.__dict__, "f1": score["f1"], "rmse_px": score["rmse_px"]})
        key = (-round(score["f1"], 4), score["rmse_px"])
        if best is None or key < best[0]:
            best = (key, params)
    return best[1], rows


def atomap_grid(spacing: float) -> list[tuple[int, float]]:
    """atomap's peak-finding choices tried on the calibration crop: separation (px, an integer: it is
    skimage's ``min_distance``, a square window) 0.35, 0.5 or 0.65 × the true nearest-neighbour
    distance, threshold_rel 0.02 (atomap's default), 0.1, 0.2 or 0.3."""
    separations = sorted({max(1, int(round(f * spacing))) for f in (0.35, 0.5, 0.65)})
    return [(s, t) for s in separations for t in (0.02, 0.1, 0.2, 0.3)]


def run_atomap(jobs: list[dict], workdir: Path, python: Path) -> tuple[list[dict] | None, str | None]:
    """Write each job's arrays to an .npz, run atomap_runner.py once in the atomap venv, read the outputs.

    ``jobs``: dicts with "mode" and "arrays" (the runner's input arrays). Returns (outputs, None) or
    (None, why it failed).
    """
    import subprocess

    manifest = {"jobs": []}
    for k, job in enumerate(jobs):
        source, target = workdir / f"in_{k}.npz", workdir / f"out_{k}.npz"
        np.savez(source, **job["arrays"])
        manifest["jobs"].append({"mode": job["mode"], "input": str(source), "output": str(target)})
    (workdir / "manifest.json").write_text(json.dumps(manifest))
    try:
        completed = subprocess.run([str(python), str(ATOMAP_RUNNER), str(workdir / "manifest.json")], capture_output=True, text=True, timeout=ATOMAP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"atomap runner failed: {error}"
    if completed.returncode != 0:
        return None, f"atomap runner exited {completed.returncode}: {completed.stderr.strip().splitlines()[-1:] or ''}"
    outputs = []
    for job in manifest["jobs"]:
        with np.load(job["output"]) as data:
            outputs.append({key: data[key] for key in data.files})
    return outputs, None


# --- the run


def microvae_on(scan) -> tuple[np.ndarray, dict]:
    """find_atoms with no parameters except ``invert`` where the scan says so (CPU engine)."""
    table, estimate = find_atoms(scan.image, FindAtomsParams(invert=bool(getattr(scan, "invert", False)), device="cpu"))
    extra = {"spacing_px_estimated": float(estimate.spacing_px), "sigma_px_estimated": float(estimate.sigma_px), "periodic": bool(estimate.periodic)}
    for key in ("nearest_neighbour_px", "sublattice_counts", "sublattice_sigma_px", "second_search"):  # newer LatticeEstimate fields, where present
        value = getattr(estimate, key, None)
        if value is not None:
            extra[f"estimate_{key}"] = [float(v) for v in value] if isinstance(value, (tuple, list)) else float(value)
    labels = getattr(table, "sublattice", None)
    extra["_labels"] = None if labels is None else np.asarray(labels)
    return table.positions, extra


def label_agreement(scan, labels: np.ndarray | None, score: dict) -> dict:
    """microvae's sublattice labels: counts, and matched accuracy against the truth on matched columns."""
    if labels is None:
        return {"sublattice_counts": None}
    from microvae.metrics import matched_accuracy

    values, counts = np.unique(labels, return_counts=True)
    true_index, found_index = score["_pairs"]
    accuracy = matched_accuracy(scan.sublattice[true_index], labels[found_index]) if len(true_index) else float("nan")
    return {"sublattice_counts": {int(v): int(c) for v, c in zip(values, counts)}, "sublattice_label_accuracy": float(accuracy)}


def public(score: dict) -> dict:
    return {key: value for key, value in score.items() if not key.startswith("_")}


def worst_of(values: list[float], kind: str) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return float("nan")
    if kind == "low":
        return float(min(values))
    if kind == "high":
        return float(max(values))
    return float(max(values, key=abs))  # "abs": the largest in magnitude, sign kept


def summarise(records: list[dict]) -> list[dict]:
    """Median and worst seed of every number, per generator × method."""
    rows = []
    keys = []
    for r in records:
        if (r["generator"], r["method"]) not in keys:
            keys.append((r["generator"], r["method"]))
    for generator, method in keys:
        runs = [r for r in records if r["generator"] == generator and r["method"] == method and not r.get("skipped")]
        if not runs:
            skipped = next(r for r in records if r["generator"] == generator and r["method"] == method)
            rows.append({"generator": generator, "method": method, "skipped": skipped["skipped"]})
            continue

        def stat(values, kind):
            values = [v for v in values if v is not None and np.isfinite(v)]
            return {"median": float(np.median(values)) if values else float("nan"), "worst": worst_of(values, kind)}

        row = {
            "generator": generator,
            "method": method,
            "seeds": [r["seed"] for r in runs],
            "f1": stat([r["f1"] for r in runs], "low"),
            "time_s": stat([r["time_s"] for r in runs], "high"),
            "groups": {},
        }
        for name in runs[0]["groups"]:
            entries = [r["groups"][name] for r in runs if name in r["groups"]]
            row["groups"][name] = {
                "recall": stat([e["recall"] for e in entries], "low"),
                "rmse_px": stat([e["rmse_px"] for e in entries], "high"),
                "bias_px": stat([e["bias_px"] for e in entries], "abs"),
                "bias_kind": entries[0]["bias_kind"],
            }
        if method == "microvae":
            spacings = [r["spacing_px_estimated"] for r in runs]
            row["spacing_px_estimated"] = {"median": float(np.median(spacings)), "min": float(min(spacings)), "max": float(max(spacings))}
            row["true_nn_px"] = float(np.median([r["true_nn_px"] for r in runs]))
            found_nn = [r["estimate_nearest_neighbour_px"] for r in runs if r.get("estimate_nearest_neighbour_px") is not None]
            row["nearest_neighbour_px"] = float(np.median(found_nn)) if found_nn else None
            counts = [r.get("sublattice_counts") for r in runs]
            row["sublattice_counts"] = counts if any(c is not None for c in counts) else None
            if any(r.get("sublattice_label_accuracy") is not None for r in runs):
                row["sublattice_label_accuracy"] = stat([r.get("sublattice_label_accuracy") for r in runs], "low")
        if method == "atomap":
            row["crop"] = runs[0]["crop"]
        if "crop_score" in runs[0]:
            row["crop_f1"] = stat([r["crop_score"]["f1"] for r in runs], "low")
            row["crop_rmse_px"] = stat([r["crop_score"]["rmse_px"] for r in runs], "high")
        rows.append(row)
    return rows


def cell(stat: dict, digits: int) -> str:
    return f"{fmt(stat['median'], digits)} ({fmt(stat['worst'], digits)})"


def per_group(row: dict, key: str, digits: int, signed: bool = False) -> str:
    parts = []
    for name, entry in row["groups"].items():
        stat = entry[key]
        if signed and entry.get("bias_kind") == "along displacement":
            parts.append(f"{name} {stat['median']:+.{digits}f} ({stat['worst']:+.{digits}f}) ∥" if np.isfinite(stat["median"]) else f"{name} n/a")
        else:
            parts.append(f"{name} {cell(stat, digits)}")
    return " · ".join(parts)


def lattice_markdown(summary: list[dict], calibration: dict) -> str:
    lines = [
        "Median (worst) over the seeds. Recall, RMSE and bias per sublattice; bias marked ∥ is the mean error along the imposed "
        "displacement (+ = beyond the true position, away from the ideal site), the others the length of the mean error vector. "
        "Time: the locate call (atomap: on its crop, see the last column).",
        "",
        "| generator | method | F1 | recall | RMSE (px) | bias (px) | time (s) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        if row.get("skipped"):
            lines.append(f"| {row['generator']} | {row['method']} | skipped | | | | | {row['skipped']} |")
            continue
        notes = []
        if row["method"] == "microvae":
            spacing = row["spacing_px_estimated"]
            spread = (
                f"{spacing['median']:.2f}"
                if spacing["max"] - spacing["min"] < 0.005
                else f"{spacing['median']:.2f} ({spacing['min']:.2f}–{spacing['max']:.2f})"
            )
            notes.append(f"spacing {spread} (true nn {row['true_nn_px']:.2f})")
            if row.get("nearest_neighbour_px") is not None:
                notes.append(f"nn of its columns {row['nearest_neighbour_px']:.2f}")
            if row.get("sublattice_counts") and not row["sublattice_counts"][0]:
                notes.append(f"found no column at seed {row['seeds'][0]}")
            elif row.get("sublattice_counts"):
                counts = row["sublattice_counts"][0]
                notes.append(
                    f"labelled {len(counts)} sublattices (" + "/".join(str(v) for v in counts.values()) + f" at seed {row['seeds'][0]}), "
                    f"agreement {cell(row['sublattice_label_accuracy'], 3)}"
                )
        if row["method"] == "atomap":
            notes.append(f"{row['crop'][2]}×{row['crop'][3]} crop")
        lines.append(
            f"| {row['generator']} | {row['method']} | {cell(row['f1'], 4)} | {per_group(row, 'recall', 3)} | {per_group(row, 'rmse_px', 3)} | "
            f"{per_group(row, 'bias_px', 3, signed=True)} | {cell(row['time_s'], 2)} | {'; '.join(notes)} |"
        )
    crop_rows = [row for row in summary if "crop_f1" in row]
    if any(row["method"] != "atomap" for row in crop_rows):
        lines += [
            "",
            "Every method scored on atomap's crop only (same columns as atomap's rows), median (worst):",
            "",
            "| generator | method | F1 on the crop | RMSE on the crop (px) |",
            "|---|---|---|---|",
        ]
        for row in crop_rows:
            lines.append(f"| {row['generator']} | {row['method']} | {cell(row['crop_f1'], 4)} | {cell(row['crop_rmse_px'], 3)} |")
    lines += [
        "",
        f"Peers' parameters (calibrated per generator on seed {LATTICE_CALIBRATION_SEED}, given the true σ and nearest-neighbour distance):",
        "",
        "| generator | true nn (px) | match radius (px) | σ given (px) | trackpy | blob_log | atomap peaks |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in calibration.items():
        tp, bl, am = entry["trackpy_chosen"], entry["blob_log_chosen"], entry.get("atomap_chosen")
        lines.append(
            f"| {name} | {entry['true_nn_px']:.2f} | {MATCH_FRACTION * entry['true_nn_px']:.2f} | {entry['sigma_px']:.2f} | "
            f"d={tp['diameter']}, sep={tp['separation']:g}, pct={tp['percentile']}, minmass={tp['minmass']:g} | "
            f"σ {bl['min_sigma']:g}–{bl['max_sigma']:g}, thr={bl['threshold']:g} | "
            + (f"separation={am['separation']}, threshold_rel={am['threshold_rel']:g}" if am else "n/a")
            + " |"
        )
    return "\n".join(lines)


def microvae_provenance() -> dict:
    """Which locator ran: the git commit, the files of microvae that differed from it, and the sha256 of
    the locator's code (the packages atoms/ and sublattices/: their .py files in name order; a
    single-file module as it was before the split, atoms.py or sublattices.py, where one exists)."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent
    info = {}
    for path in (root / "microvae" / "atoms", root / "microvae" / "sublattices", root / "microvae" / "atoms.py", root / "microvae" / "sublattices.py"):
        files = sorted(path.glob("*.py")) if path.is_dir() else [path] if path.exists() else []
        if files:
            info[f"{path.name}_sha256"] = hashlib.sha256(b"".join(file.read_bytes() for file in files)).hexdigest()[:16]
    try:
        info["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "microvae"], cwd=root, capture_output=True, text=True, timeout=10).stdout.split("\n")
        info["microvae_uncommitted"] = [line[3:] for line in changed if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def run_lattices(args) -> int:
    import tempfile
    import warnings

    import trackpy

    trackpy.quiet()
    warnings.filterwarnings("ignore", message="Image is completely black")  # trackpy, on noise-free simulations
    info = machine_info()
    info["microvae"] = microvae_provenance()
    print(f"machine: {info['cpu']} ({info['cpu_count']} cores), load average {info['load_average_at_start']}", flush=True)
    print(f"microvae: {info['microvae']}", flush=True)
    generators, notes = lattice_generators(args.size, args.generators)
    seeds = tuple(args.seeds)
    atomap_python = Path(args.atomap_python)
    use_atomap = not args.no_atomap
    if use_atomap and not atomap_python.exists():
        notes.append(f"atomap rows skipped: no interpreter at {atomap_python} (python3 -m venv /tmp/venv-atomap && /tmp/venv-atomap/bin/pip install atomap)")
        use_atomap = False
    print(f"generators: {', '.join(name for name, _ in generators)}; seeds {seeds}; size {args.size}", flush=True)

    # Draw every scan first (calibration + benchmark seeds), so atomap runs in one process.
    scans, calibration = {}, {}
    for name, generate in generators:
        start = time.perf_counter()
        scans[name] = {seed: generate(seed) for seed in (LATTICE_CALIBRATION_SEED, *seeds)}
        example = scans[name][seeds[0]]
        print(
            f"  {name}: {example.image.shape[0]}×{example.image.shape[1]}, {len(example.positions)} columns, sublattices {tuple(getattr(example, 'sublattice_names', ()))}, "
            f"invert={bool(getattr(example, 'invert', False))} (drawn in {time.perf_counter() - start:.1f} s)",
            flush=True,
        )

    print(f"\ncalibrating the peers (seed {LATTICE_CALIBRATION_SEED} of each generator)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_atomap_"))
    for name, _ in generators:
        scan = scans[name][LATTICE_CALIBRATION_SEED]
        sigma, sigma_source = true_sigma(scan)
        image = peer_image(scan)
        tp, tp_rows = calibrate_trackpy_on(scan, image, sigma)
        bl, bl_rows = calibrate_blob_log_on(scan, image, sigma)
        calibration[name] = {
            "true_nn_px": nearest_neighbour_distance(scan.positions),
            "sigma_px": sigma,
            "sigma_source": sigma_source,
            "trackpy": tp_rows,
            "trackpy_chosen": tp.__dict__,
            "blob_log": bl_rows,
            "blob_log_chosen": bl.__dict__,
            "_trackpy": tp,
            "_blob_log": bl,
        }
        print(f"  {name}: σ {sigma:.2f} ({sigma_source}); trackpy {tp}; blob_log thr {bl.threshold:g}", flush=True)
    if use_atomap:
        jobs, index = [], []
        for name, _ in generators:
            scan = scans[name][LATTICE_CALIBRATION_SEED]
            row0, col0, h, w = central_crop(scan.image.shape, args.atomap_crop)
            grid = atomap_grid(calibration[name]["true_nn_px"])
            jobs.append(
                {
                    "mode": "peaks",
                    "arrays": {
                        "image": peer_image(scan)[row0 : row0 + h, col0 : col0 + w],
                        "separations": np.array([g[0] for g in grid]),
                        "thresholds": np.array([g[1] for g in grid]),
                    },
                }
            )
            index.append((name, (row0, col0, h, w), grid))
        start = time.perf_counter()
        outputs, failure = run_atomap(jobs, workdir, atomap_python)
        if failure:
            notes.append(f"atomap rows skipped: {failure}")
            print(f"  {notes[-1]}", flush=True)
            use_atomap = False
        else:
            info["atomap"] = str(outputs[0]["atomap_version"])
            for (name, window, grid), output in zip(index, outputs):
                scan = scans[name][LATTICE_CALIBRATION_SEED]
                rows, best = [], None
                for k, (separation, threshold) in enumerate(grid):
                    found = output[f"positions_{k}"] + np.array(window[:2])
                    score = lattice_score(scan, found, window)
                    rows.append({"separation": separation, "threshold_rel": threshold, "f1": score["f1"], "rmse_px": score["rmse_px"]})
                    key = (-round(score["f1"], 4), score["rmse_px"])
                    if best is None or key < best[0]:
                        best = (key, {"separation": separation, "threshold_rel": threshold})
                calibration[name]["atomap"] = rows
                calibration[name]["atomap_chosen"] = best[1]
                print(f"  {name}: atomap peaks {best[1]} (F1 of the peaks {-best[0][0]:.4f})", flush=True)
            print(f"  (atomap {info['atomap']}, peak calibration {time.perf_counter() - start:.1f} s including imports)", flush=True)

    # Warm-up (imports, numba compilation, caches), untimed.
    first = scans[generators[0][0]][LATTICE_CALIBRATION_SEED]
    microvae_on(first)
    calibration[generators[0][0]]["_trackpy"].locate(peer_image(first))

    print("\nbenchmark", flush=True)
    records, atomap_jobs = [], []
    for name, _ in generators:
        entry = calibration[name]
        for seed in seeds:
            scan = scans[name][seed]
            window = central_crop(scan.image.shape, args.atomap_crop)
            load = list(os.getloadavg())
            peers = {
                "microvae": lambda scan=scan: microvae_on(scan),
                "trackpy": lambda scan=scan, p=entry["_trackpy"]: (p.locate(peer_image(scan)), {}),
                "blob_log": lambda scan=scan, p=entry["_blob_log"]: (p.locate(peer_image(scan)), {}),
            }
            for method, locate in peers.items():
                best = np.inf
                for _ in range(LATTICE_REPEATS):
                    start = time.perf_counter()
                    found, extra = locate()
                    best = min(best, time.perf_counter() - start)
                score = lattice_score(scan, found)
                record = {
                    "generator": name,
                    "seed": seed,
                    "method": method,
                    "time_s": best,
                    "repeats": LATTICE_REPEATS,
                    "load_average": load,
                    "shape": list(scan.image.shape),
                    **public(score),
                }
                if method == "microvae":
                    labels = extra.pop("_labels")
                    record.update(extra, **label_agreement(scan, labels, score))
                if use_atomap and window[2:] != scan.image.shape:
                    record["crop_score"] = {k: v for k, v in public(lattice_score(scan, found, window)).items() if k != "groups"}
                records.append(record)
                groups = " ".join(f"{g}:R{e['recall']:.3f}/{fmt(e['rmse_px'], 3)}px/b{fmt(e['bias_px'], 3)}" for g, e in score["groups"].items())
                print(f"  {name} seed {seed} {method:<9} F1 {score['f1']:.4f}  RMSE {fmt(score['rmse_px'], 3)}  {best:6.2f} s  {groups}", flush=True)
            if use_atomap:
                row0, col0, h, w = window
                chosen = entry["atomap_chosen"]
                atomap_jobs.append(
                    (
                        (name, seed, window),
                        {
                            "mode": "refine",
                            "arrays": {
                                "image": peer_image(scan)[row0 : row0 + h, col0 : col0 + w],
                                "separation": chosen["separation"],
                                "threshold_rel": chosen["threshold_rel"],
                            },
                        },
                    )
                )
            else:
                records.append({"generator": name, "seed": seed, "method": "atomap", "skipped": "atomap not run (see notes)"})
    if use_atomap and atomap_jobs:
        print(f"\natomap: 2D-Gaussian refinement on {len(atomap_jobs)} crops (one process)", flush=True)
        load = list(os.getloadavg())
        outputs, failure = run_atomap([job for _, job in atomap_jobs], workdir, atomap_python)
        if failure:
            notes.append(f"atomap refinement failed: {failure}")
        for ((name, seed, window), _), output in zip(atomap_jobs, outputs or [None] * len(atomap_jobs)):
            if output is None:
                records.append({"generator": name, "seed": seed, "method": "atomap", "skipped": failure})
                continue
            scan = scans[name][seed]
            found = output["positions"] + np.array(window[:2])
            score = lattice_score(scan, found, window)
            record = {
                "generator": name,
                "seed": seed,
                "method": "atomap",
                "time_s": float(output["t_total"]),
                "repeats": 1,
                "load_average": load,
                "crop": list(window),
                "times": {k: float(output[k]) for k in ("t_peaks", "t_neighbours", "t_com", "t_gaussian")},
                "n_peaks": int(len(output["start"])),
                **public(score),
            }
            if window[2:] != scan.image.shape:
                record["crop_score"] = {k: v for k, v in public(score).items() if k != "groups"}
            records.append(record)
            groups = " ".join(f"{g}:R{e['recall']:.3f}/{fmt(e['rmse_px'], 3)}px/b{fmt(e['bias_px'], 3)}" for g, e in score["groups"].items())
            print(
                f"  {name} seed {seed} atomap    F1 {score['f1']:.4f}  RMSE {fmt(score['rmse_px'], 3)}  {record['time_s']:6.2f} s on {window[2]}×{window[3]}  {groups}",
                flush=True,
            )
    # keep the record order generator × method × seed
    order = {name: i for i, (name, _) in enumerate(generators)}
    records.sort(key=lambda r: (order[r["generator"]], METHODS.index(r["method"]), r["seed"]))
    summary = summarise(records)
    for entry in calibration.values():
        for key in [k for k in entry if k.startswith("_")]:
            del entry[key]
    table = lattice_markdown(summary, calibration)
    print("\n" + table)
    for note in notes:
        print(f"note: {note}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "find_atoms_lattices" if args.size == "bench" and not args.generators and seeds == LATTICE_SEEDS else f"find_atoms_lattices_{args.size}"
    command = "python benchmarks/bench_find_atoms.py --lattices" + ("" if args.size == "bench" else f" --size {args.size}")
    payload = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {**info, "load_average_at_end": list(os.getloadavg())},
        "scoring": {
            "margin_px": LATTICE_MARGIN,
            "match_radius": f"{MATCH_FRACTION} × median true nearest-neighbour distance",
            "displaced_px": DISPLACED_PX,
            "bias": "displaced columns: mean of (found − true)·unit(imposed displacement); others: |mean(found − true)|",
            "timing": f"time.perf_counter around the locate call, best of {LATTICE_REPEATS} (atomap: once, inside its runner, after imports, on its crop)",
            "atomap_crop": args.atomap_crop,
            "seeds": list(seeds),
            "calibration_seed": LATTICE_CALIBRATION_SEED,
            "size": args.size,
        },
        "calibration": calibration,
        "summary": summary,
        "results": records,
        "notes": notes,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
    load_end = payload["machine"]["load_average_at_end"]
    header = (
        f"<!-- {command} | {payload['date']} | {info['cpu']}, {info['cpu_count']} cores | microvae CPU engine | trackpy {info['trackpy']} with numba {info['numba']} | "
        f"scikit-image {info['scikit-image']} | atomap {info.get('atomap', 'not run')} | load average at start {[round(v, 2) for v in info['load_average_at_start']]}, "
        f"at end {[round(v, 2) for v in load_end]} | microvae {info['microvae']} -->\n"
    )
    (RESULTS / f"{stem}.md").write_text(header + table + "\n" + "".join(f"\nNote: {note}\n" for note in notes))
    print(f"\nwrote {RESULTS / (stem + '.json')} and {RESULTS / (stem + '.md')}")
    return 0


def run_speed(args) -> int:
    """Part 1: speed and quality on make_lattice images (find_atoms.{json,md})."""
    import trackpy

    trackpy.quiet()  # no per-call logging
    size = 512 if args.quick else 1024
    cases = [(f"{size}² {snr}", snr, size, seed, 3) for seed, snr in enumerate(("high", "medium", "low"), start=1)]
    if not args.quick and not args.skip_4096:
        cases.append(("4096² high", "high", 4096, 4, 3))
        cases.append(("4096² medium", "medium", 4096, 5, 3))

    info = machine_info()
    print(f"machine: {info['cpu']} ({info['cpu_count']} cores), load average {info['load_average_at_start']}", flush=True)
    print(
        f"python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, scikit-image {info['scikit-image']}, trackpy {info['trackpy']} (numba: {info['numba']}), torch {info['torch']}",
        flush=True,
    )

    # Calibrate the peers on a separate medium-SNR image of the benchmark size.
    calibration_image = lattice_for("medium", size, CALIBRATION_SEED)
    print(f"\ncalibrating peers on a {size}² medium-SNR image (seed {CALIBRATION_SEED})", flush=True)
    tp_params, tp_rows = calibrate_trackpy(calibration_image)
    for row in tp_rows:
        print(
            f"  trackpy diameter={row['diameter']} separation={row['separation']} percentile={row['percentile']:>2} minmass={row['minmass']:.3f}: F1 {row['f1']:.4f}  P {row['precision']:.4f}  R {row['recall']:.4f}  RMSE {row['rmse_px']:.3f}"
        )
    print(f"  -> trackpy: {tp_params}", flush=True)
    bl_params, bl_rows = calibrate_blob_log(calibration_image)
    for row in bl_rows:
        print(f"  blob_log threshold={row['threshold']:.2f}: F1 {row['f1']:.4f}  P {row['precision']:.4f}  R {row['recall']:.4f}  RMSE {row['rmse_px']:.3f}")
    print(f"  -> blob_log: {bl_params}", flush=True)

    notes = []
    methods = [
        ("microvae log+gaussian (no params)", microvae_locator("gaussian")),
        ("microvae log+com (no params)", microvae_locator("com")),
    ]
    if info["cuda_device"]:
        gpu = microvae_locator("gaussian", device="cuda")
        gpu(calibration_image.image)  # warm-up: CUDA context, FFT plans
        methods.append((f"microvae log+gaussian torch CUDA ({info['cuda_device']})", gpu))
    else:
        notes.append(f"microvae's torch engine was not timed: no CUDA device (torch {info['torch']})")
        print(f"  ({notes[-1]})", flush=True)
    methods += [
        (f"trackpy.locate (d={tp_params.diameter}, sep={tp_params.separation}, pct={tp_params.percentile}, minmass={tp_params.minmass:g})", tp_params.locate),
        (f"skimage blob_log (σ 1–2.5 ×{bl_params.num_sigma}, thr={bl_params.threshold:g})", bl_params.locate),
    ]

    results = []
    for case, snr, case_size, seed, repeats in cases:
        start = time.perf_counter()
        lattice = lattice_for(snr, case_size, seed)
        n_true = int(lattice.inside(MARGIN).sum())
        print(
            f"\n{case} (seed {seed}, {n_true} columns ≥ {MARGIN:g} px inside; generated in {time.perf_counter() - start:.1f} s; best of {repeats})", flush=True
        )
        for name, locate in methods:
            record = {"case": case, "snr": snr, "size": case_size, "seed": seed, "repeats": repeats, "method": name, "load_average": list(os.getloadavg())}
            if name.startswith("skimage") and case_size >= 4096:
                crop = lattice.image[1024:3072, 1024:3072]
                crop_time, _ = best_time(locate, crop, 1)
                estimate = crop_time * (case_size / 2048) ** 2
                note = f"blob_log on a 2048² crop took {crop_time:.1f} s, extrapolated {estimate:.0f} s for {case_size}²"
                record["blob_log_2048_s"] = crop_time
                record["blob_log_extrapolated_s"] = estimate
                if estimate > BLOB_LOG_BUDGET_S:
                    record["skipped"] = f"{note} > {BLOB_LOG_BUDGET_S:.0f} s budget"
                    notes.append(f"{case}: blob_log skipped ({note})")
                    print(f"  {name}: SKIPPED ({note})", flush=True)
                    results.append(record)
                    continue
                notes.append(f"{case}: {note}, under the {BLOB_LOG_BUDGET_S:.0f} s budget, so it was run")
                print(f"  ({note}: running it)", flush=True)
                record["repeats"] = 1
            elapsed, positions = best_time(locate, lattice.image, record["repeats"])
            score = interior_score(lattice, positions)
            record.update(
                f1=score.f1, precision=score.precision, recall=score.recall, rmse_px=score.rmse_px, time_s=elapsed, n_true=score.n_true, n_found=score.n_found
            )
            results.append(record)
            print(
                f"  {name:<62} F1 {score.f1:.4f}  P {score.precision:.4f}  R {score.recall:.4f}  RMSE {fmt(score.rmse_px, 3)} px  {elapsed:7.2f} s", flush=True
            )

    table = markdown_table(results)
    print("\n" + table)
    for note in notes:
        print(f"note: {note}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "find_atoms_quick" if args.quick else "find_atoms"
    payload = {
        "command": "python benchmarks/bench_find_atoms.py" + (" --quick" if args.quick else "") + (" --skip-4096" if args.skip_4096 else ""),
        "machine": {**info, "load_average_at_end": list(os.getloadavg())},
        "scoring": {"margin_px": MARGIN, "match_radius_px": MATCH_RADIUS, "timing": "time.perf_counter around the locate call, best of repeats"},
        "calibration": {
            "image": {"snr": "medium", "size": size, "seed": CALIBRATION_SEED},
            "trackpy": tp_rows,
            "trackpy_chosen": tp_params.__dict__,
            "blob_log": bl_rows,
            "blob_log_chosen": bl_params.__dict__,
        },
        "results": results,
        "notes": notes,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    header = (
        f"<!-- {payload['command']} | {time.strftime('%Y-%m-%d')} | {info['cpu']}, {info['cpu_count']} cores | trackpy {info['trackpy']} with numba {info['numba']} | "
        f"GPU: {info['cuda_device'] or 'none'} | load average at start {[round(v, 2) for v in info['load_average_at_start']]}, at end {[round(v, 2) for v in payload['machine']['load_average_at_end']]} -->\n"
    )
    (RESULTS / f"{stem}.md").write_text(header + table + "\n" + "".join(f"\nNote: {note}\n" for note in notes))
    print(f"\nwrote {RESULTS / (stem + '.json')} and {RESULTS / (stem + '.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of part 1 only: 512² cases (results in find_atoms_quick.*)")
    parser.add_argument("--skip-4096", action="store_true", help="leave out part 1's 4096² cases")
    parser.add_argument("--lattices", action="store_true", help="part 2 only: atoms on other lattices (find_atoms_lattices.*)")
    parser.add_argument("--no-lattices", action="store_true", help="part 1 only")
    parser.add_argument(
        "--size", choices=("ci", "bench"), default="bench", help="part 2: the generators' size (ci: a smoke run, results in find_atoms_lattices_ci.*)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(LATTICE_SEEDS), help="part 2: seeds of every generator (default 0 1 2)")
    parser.add_argument("--generators", nargs="+", default=None, help="part 2: only these generators (results then in find_atoms_lattices_<size>.*)")
    parser.add_argument("--no-atomap", action="store_true", help="part 2: leave atomap out")
    parser.add_argument("--atomap-python", default=str(ATOMAP_PYTHON), help="part 2: the interpreter of the throw-away venv with atomap")
    parser.add_argument("--atomap-crop", type=int, default=ATOMAP_CROP, help="part 2: atomap runs on the central crop of at most this many px a side")
    args = parser.parse_args(argv)
    if args.lattices:
        return run_lattices(args)
    status = run_speed(args)
    if args.quick or args.no_lattices or status:
        return status
    print("\n" + "=" * 100 + "\npart 2: atoms on other lattices\n", flush=True)
    return run_lattices(args)


if __name__ == "__main__":
    raise SystemExit(main())
