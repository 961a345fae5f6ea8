"""Small multislice STEM simulations with abTEM, cached as ground truth for the atom-finding benchmarks.

abTEM is a benchmark-only extra: it is never installed into the project's environment. Run this in a
throwaway virtualenv outside the repository::

    python3 -m venv /tmp/venv-abtem && /tmp/venv-abtem/bin/pip install abtem==1.0.11
    /tmp/venv-abtem/bin/python benchmarks/simulate_abtem.py            # all, into benchmarks/data/abtem/
    /tmp/venv-abtem/bin/python benchmarks/simulate_abtem.py --only mos2 --quick   # a tiny timing check

It writes, per simulated image, ``benchmarks/data/abtem/<name>.npz`` that
:func:`microvae.lattices.load_abtem` reads (and that registers it as the generator ``abtem_<name>``):

* ``mos2``: HAADF of a monolayer 2H-MoS₂ (``ase.build.mx2``) with a few S→Se substitutions (the
  top S of a few S₂ columns becomes Se: SSe columns);
* ``perovskite``: HAADF of a thin SrTiO₃ slab along [001] whose Ti–O columns are displaced along a
  cell diagonal in the left half of the supercell (towards the upper-left Sr);
* ``perovskite_abf``: the ABF image of the same scan (dark columns, oxygen visible), recorded with
  a second annular detector in the same multislice run.

Each file holds ``image`` (float32, (H, W), rows = y, cols = x, probe positions on a periodic grid
starting at the cell origin), ``positions`` (N, 2) true projected (row, col) of every atomic column
in pixels (periodic copies up to 3 px outside the image included), ``sublattice``,
``sublattice_names``, ``species``, ``species_names``, ``displacement_px`` (the imposed
displacement per column), ``vacancies`` (empty), ``invert``, ``pixel_size_A`` ((row, col) = (y, x), Å) and ``params_json``
(every simulation parameter, the abTEM version and the wall time). No frozen phonons (a static
lattice), so there is no thermal diffuse background: the images are noise-free;
``load_abtem(name, dose=...)`` adds Poisson noise.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "abtem"


def columns_of(atoms, decimals: int = 2) -> tuple[np.ndarray, list[list[str]], list[list[int]]]:
    """Group atoms into projected columns along z: (K, 2) (x, y) in Å, their symbols, their indices."""
    xy = np.round(atoms.positions[:, :2], decimals)
    keys, inverse = np.unique(xy, axis=0, return_inverse=True)
    symbols = atoms.get_chemical_symbols()
    members = [[] for _ in keys]
    for index, key in enumerate(inverse.ravel()):
        members[key].append(index)
    centres = np.array([atoms.positions[m, :2].mean(axis=0) for m in members])
    return centres, [[symbols[i] for i in m] for m in members], members


def periodic_pixels(xy: np.ndarray, extent: tuple[float, float], shape: tuple[int, int], margin_px: float = 3.0):
    """(row, col) pixel positions of columns at (x, y) Å and their periodic copies near the image.

    Returns the positions (M, 2) and, per position, the index of its column."""
    height, width = shape
    dx, dy = extent[0] / width, extent[1] / height
    positions, index = [], []
    for sx in (-1, 0, 1):
        for sy in (-1, 0, 1):
            cols = (xy[:, 0] + sx * extent[0]) / dx
            rows = (xy[:, 1] + sy * extent[1]) / dy
            keep = (rows > -margin_px) & (rows < height - 1 + margin_px) & (cols > -margin_px) & (cols < width - 1 + margin_px)
            positions.append(np.stack([rows[keep], cols[keep]], axis=1))
            index.append(np.flatnonzero(keep))
    return np.concatenate(positions), np.concatenate(index)


def smooth_size(minimum: float) -> int:
    """The smallest integer ≥ ``minimum`` whose prime factors are 2, 3 and 5."""
    n = int(np.ceil(minimum))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def run_scan(
    atoms, energy: float, semiangle: float, potential_sampling: float, slice_thickness: float, scan_sampling: float, detectors: dict[str, tuple[float, float]]
):
    """Multislice a probe over a periodic grid of the whole cell; one image per annular detector."""
    import abtem
    import dask

    abtem.config.set({"diagnostics.progress_bar": False})
    # FFT-friendly (5-smooth) grid sizes: a prime factor such as 149 makes every FFT many times slower
    gpts_potential = tuple(smooth_size(extent / potential_sampling) for extent in np.diag(atoms.cell)[:2])
    potential = abtem.Potential(atoms, gpts=gpts_potential, slice_thickness=slice_thickness, projection="infinite", parametrization="lobato")
    probe = abtem.Probe(energy=energy, semiangle_cutoff=semiangle, defocus=0.0)
    probe.grid.match(potential)
    extent = tuple(float(v) for v in potential.extent)
    gpts = tuple(int(round(e / scan_sampling)) for e in extent)
    scan = abtem.GridScan(start=(0.0, 0.0), end=extent, gpts=gpts, endpoint=False)
    names = list(detectors)
    instruments = [abtem.AnnularDetector(inner=detectors[name][0], outer=detectors[name][1]) for name in names]
    measurements = probe.scan(potential, scan=scan, detectors=instruments)
    if not isinstance(measurements, (list, tuple)):
        measurements = [measurements]
    start = time.perf_counter()
    # one dask graph for all detectors: the multislice runs once
    arrays = dask.compute(*[m.array if hasattr(m, "array") else m for m in measurements])
    images = {name: np.asarray(array, dtype=np.float64).T for name, array in zip(names, arrays)}  # (x, y) -> rows = y, cols = x
    elapsed = time.perf_counter() - start
    info = {
        "extent_xy_A": list(extent),
        "potential_gpts_xy": [int(v) for v in potential.gpts],
        "num_slices": int(potential.num_slices),
        "scan_gpts_xy": list(gpts),
        "image_shape": [gpts[1], gpts[0]],
        "pixel_size_A": [extent[1] / gpts[1], extent[0] / gpts[0]],
        "energy_eV": energy,  # pixel size as (row = y, col = x)
        "semiangle_mrad": semiangle,
        "defocus_A": 0.0,
        "Cs_A": 0.0,
        "potential_sampling_xy_A": [extent[0] / gpts_potential[0], extent[1] / gpts_potential[1]],
        "slice_thickness_A": slice_thickness,
        "projection": "infinite",
        "parametrization": "lobato",
        "frozen_phonons": 0,
        "detectors_mrad": {name: list(detectors[name]) for name in names},
        "wall_s": round(elapsed, 1),
        "abtem_version": abtem.__version__,
    }
    return images, info


def save(
    name: str, image: np.ndarray, positions, sublattice, sublattice_names, species, species_names, displacement_px, invert: bool, params: dict, out: Path
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    order = np.lexsort((positions[:, 1], positions[:, 0]))
    path = out / f"{name}.npz"
    np.savez_compressed(
        path,
        image=image.astype(np.float32),
        positions=positions[order].astype(np.float64),
        sublattice=np.asarray(sublattice)[order].astype(np.int64),
        sublattice_names=np.array(sublattice_names),
        species=np.asarray(species)[order].astype(np.int64),
        species_names=np.array(species_names),
        displacement_px=np.asarray(displacement_px)[order].astype(np.float64),
        vacancies=np.zeros((0, 2)),
        invert=np.array(invert),
        pixel_size_A=np.array(params["pixel_size_A"]),
        params_json=np.array(json.dumps({**params, "species_names": list(species_names)})),
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, image {image.shape}, {len(positions)} columns)")
    return path


def simulate_mos2(out: Path, quick: bool, seed: int = 0) -> None:
    """Monolayer 2H-MoS₂ with ``n_se`` S→Se substitutions (the top S of distinct S₂ columns)."""
    import abtem
    from ase.build import mx2

    repeat = (3, 2, 1) if quick else (7, 4, 1)
    n_se = 1 if quick else 4
    atoms = abtem.orthogonalize_cell(mx2("MoS2", kind="2H", a=3.19, thickness=3.19, vacuum=1.0)) * repeat
    centres, symbols, members = columns_of(atoms)
    s_columns = [k for k, s in enumerate(symbols) if s[0] == "S"]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(s_columns, size=n_se, replace=False)
    numbers = atoms.get_atomic_numbers()
    for k in chosen:
        top = max(members[k], key=lambda i: atoms.positions[i, 2])
        numbers[top] = 34
    atoms.set_atomic_numbers(numbers)
    centres, symbols, members = columns_of(atoms)
    sublattice = np.array([0 if "Mo" in s else 1 for s in symbols])
    species = np.array([0 if "Mo" in s else (2 if "Se" in s else 1) for s in symbols])
    settings = {
        "energy": 80e3,
        "semiangle": 25.0,
        "potential_sampling": 0.075,
        "slice_thickness": 1.0,
        "scan_sampling": 0.2,
        "detectors": {"haadf": (60.0, 180.0)},
    }
    images, info = run_scan(atoms, **settings)
    image = images["haadf"]
    positions, index = periodic_pixels(centres, info["extent_xy_A"], image.shape)
    params = {
        "name": "mos2",
        "structure": f"monolayer 2H-MoS2 (ase.build.mx2, a = 3.19 A, S-S thickness 3.19 A), orthogonal cell repeated {list(repeat)}",
        "substitutions": "top S of distinct S2 columns -> Se",
        "n_se": int(n_se),
        "seed": seed,
        "quick": quick,
        **info,
    }
    save("mos2", image, positions, sublattice[index], ("Mo", "S2"), species[index], ("Mo", "S2", "SSe"), np.zeros_like(positions), False, params, out)


def perovskite_atoms(cells: int, layers: int, a: float, shift_A: float):
    """SrTiO₃ along [001], ``cells`` × ``cells`` × ``layers``; the Ti–O columns (Ti and its apical O)
    of the cells with x < cells/2 moved by ``shift_A`` along (−x, −y)/√2: towards the Sr at the
    cell's upper-left corner in the image (rows = y)."""
    from ase import Atoms

    unit = Atoms("SrTiO3", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)], cell=[a, a, a], pbc=True)
    atoms = unit * (cells, cells, layers)
    shift = np.zeros((len(atoms), 3))
    fractional = atoms.positions[:, :2] / a
    b_column = (np.abs(fractional[:, 0] % 1 - 0.5) < 1e-6) & (np.abs(fractional[:, 1] % 1 - 0.5) < 1e-6)
    left = fractional[:, 0] < cells / 2
    moved = b_column & left
    shift[moved, 0] = -shift_A / np.sqrt(2)
    shift[moved, 1] = -shift_A / np.sqrt(2)
    atoms.positions += shift
    return atoms, moved


def simulate_perovskite(out: Path, quick: bool) -> None:
    cells = 2 if quick else 6
    layers = 2 if quick else 3
    a = 3.905
    shift_A = 0.4
    atoms, moved = perovskite_atoms(cells, layers, a, shift_A)
    centres, symbols, members = columns_of(atoms)
    sublattice = np.array([0 if "Sr" in s else (1 if "Ti" in s else 2) for s in symbols])
    displaced = np.array([bool(moved[m].any()) for m in members])
    settings = {
        "energy": 100e3,
        "semiangle": 25.0,
        "potential_sampling": 0.07,
        "slice_thickness": a / 2,
        "scan_sampling": 0.31,
        "detectors": {"haadf": (60.0, 160.0), "abf": (12.5, 25.0)},
    }
    images, info = run_scan(atoms, **settings)
    common = {
        "structure": f"SrTiO3 along [001], a = {a} A, {cells} x {cells} x {layers} cells",
        "b_shift_A": shift_A,
        "b_shift_direction": "(-x, -y)/sqrt2 = (row, col) (-1, -1)/sqrt2: towards the upper-left Sr",
        "displaced_region": f"Ti-O columns with x < {cells / 2} cells (left half)",
        "quick": quick,
        **info,
    }
    for name, invert in (("haadf", False), ("abf", True)):
        image = images[name]
        positions, index = periodic_pixels(centres, info["extent_xy_A"], image.shape)
        pixel = np.array(info["pixel_size_A"])  # (row = y, col = x)
        displacement = np.where(displaced[index, None], -shift_A / np.sqrt(2) / pixel[None, :], 0.0)
        file = "perovskite" if name == "haadf" else "perovskite_abf"
        save(
            file,
            image,
            positions,
            sublattice[index],
            ("Sr", "TiO", "O"),
            sublattice[index],
            ("Sr", "TiO", "O"),
            displacement,
            invert,
            {"name": file, "detector": name, **common},
            out,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["mos2", "perovskite"], default=None)
    parser.add_argument("--quick", action="store_true", help="tiny cells, to check the set-up and the timing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for name, function in (("mos2", lambda: simulate_mos2(args.out, args.quick)), ("perovskite", lambda: simulate_perovskite(args.out, args.quick))):
        if args.only in (None, name):
            start = time.perf_counter()
            function()
            print(f"{name}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
