"""Every sublattice, joint refinement, labels and displacements (microvae.sublattices, microvae.displacements)
on generators whose columns are not the fitter's Gaussians (microvae.lattices), and on real SrTiO3."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from microvae.atoms import FindAtomsParams, find_atoms
from microvae.displacements import neighbour_displacements, parse_pair
from microvae.errors import ParameterError
from microvae.lattices import GENERATORS
from microvae.sublattices import gaussian_mixture_1d, render_columns
from microvae.synthetic import make_lattice, match_positions, positions_inside


def per_sublattice(scan, table, margin: float = 4.0, radius_fraction: float = 0.4):
    """{name: (recall, rmse px, mean error vector (2,))} for each true sublattice, columns ≥ margin inside."""
    from scipy.spatial import cKDTree

    inside = scan.inside(margin)
    truth = scan.positions[inside]
    nearest = float(np.median(cKDTree(truth).query(truth, k=2)[0][:, 1]))
    true_index, found_index = match_positions(truth, table.positions, radius_fraction * nearest)
    out = {}
    for k, name in enumerate(scan.sublattice_names):
        members = scan.sublattice[inside] == k
        matched = members[true_index]
        error = table.positions[found_index[matched]] - truth[true_index[matched]]
        out[name] = (
            matched.sum() / max(members.sum(), 1),
            float(np.sqrt((error**2).sum(1).mean())) if len(error) else np.inf,
            error.mean(0) if len(error) else np.full(2, np.inf),
        )
    return out


def label_agreement(scan, table) -> float:
    """Matched agreement (best permutation) between found and true sublattice labels of matched columns."""
    true_index, found_index = match_positions(scan.positions, table.positions, 2.0)
    truth, found = scan.sublattice[true_index], table.sublattice[found_index]
    k = int(max(truth.max(), found.max())) + 1
    return max(float(np.mean(np.asarray(p)[found] == truth)) for p in permutations(range(k)))


@pytest.mark.parametrize("seed", [0, 1])
def test_honeycomb_dim_sublattice_is_found_by_default(seed):
    """MoS2-like honeycomb, Moffat columns, dim chalcogens: the default finds both sublattices and
    reports the metal–chalcogen distance; the first search alone (control) misses the chalcogens."""
    scan = GENERATORS["honeycomb"](seed=seed, size="ci")
    table, estimate = find_atoms(scan.image, FindAtomsParams(device="cpu"))
    scores = per_sublattice(scan, table)
    assert all(recall >= 0.98 for recall, _, _ in scores.values()), scores
    true_nn = scan.params["nn_px"]
    assert abs(estimate.nearest_neighbour_px - true_nn) < 0.05 * true_nn
    assert estimate.spacing_px > 1.5 * true_nn  # the autocorrelation alone sees the metals
    assert label_agreement(scan, table) >= 0.98
    first_only, _ = find_atoms(scan.image, FindAtomsParams(device="cpu", sublattices=False))
    assert per_sublattice(scan, first_only)[scan.sublattice_names[1]][0] < 0.5


def film_b_bias(scan, table, margin: float = 10.0) -> tuple[float, float]:
    """(bias, RMSE) px of the displaced B columns at least ``margin`` px inside the scan: the mean
    error along each column's imposed displacement (+ = beyond the true position) and the RMSE."""
    inside = scan.inside(margin)
    truth = scan.positions[inside]
    true_index, found_index = match_positions(truth, table.positions, 3.4)
    displacement = scan.displacement_px[inside][true_index]
    length = np.hypot(*displacement.T)
    film = length > 0.25
    error = table.positions[found_index[film]] - truth[true_index[film]]
    unit = displacement[film] / length[film, None]
    return float(np.mean(np.sum(error * unit, axis=1))), float(np.sqrt((error**2).sum(1).mean()))


def test_displaced_columns_beside_bright_ones(monkeypatch):
    """The issue's hard case at the issue's size (1024², B columns 2–3 px towards an A,
    overlapping astigmatic cores, probe tails, dose 300), seeds 0–2: every column is found, and
    away from the scan's edge the displaced B columns come out nearly without bias along the
    displacement and with less than half the error of independent fits. Measured, seeds 0–9:
    bias +0.003 to +0.041 px (median +0.022; it follows the error of the A columns' shape, 2 %
    too small giving +0.05), RMSE 0.193–0.199 px, against a Cramér–Rao bound of 0.165 px
    (``benchmarks/bench_crlb_perovskite.py``). Controls (seed 0): independent fits, and the joint
    refinement with round columns of the first search's width (the elliptical shapes of
    :func:`sublattice_shapes` replaced), are both biased by more than 0.1 px."""
    import microvae.sublattices.complete as complete  # where complete_lattice looks sublattice_shapes up

    biases, errors = [], []
    for seed in (0, 1, 2):
        scan = GENERATORS["displaced_perovskite"](seed=seed, size="bench")
        joint = find_atoms(scan.image, FindAtomsParams(device="cpu"))[0]
        scores = per_sublattice(scan, joint)
        for name in scan.sublattice_names:
            assert scores[name][0] >= 0.98
        bias, rmse = film_b_bias(scan, joint)
        biases.append(bias)
        errors.append(rmse)
    assert max(np.abs(biases)) <= 0.05, biases
    assert max(errors) <= 0.22, errors
    scan = GENERATORS["displaced_perovskite"](seed=0, size="bench")
    alone = find_atoms(scan.image, FindAtomsParams(device="cpu", joint=False))[0]
    alone_bias, alone_rmse = film_b_bias(scan, alone)
    assert alone_bias > 0.1 and errors[0] < 0.5 * alone_rmse, (alone_bias, alone_rmse)
    monkeypatch.setattr(complete, "sublattice_shapes", lambda image, positions, amplitudes, covariance, labels, **_: covariance)
    round_bias, _ = film_b_bias(scan, find_atoms(scan.image, FindAtomsParams(device="cpu"))[0])
    assert round_bias > 0.1, round_bias


def _along_pair_bias(scan, table) -> tuple[float, float]:
    """Mean error of the heavy (0) and light (1) dumbbell members along the heavy → light axis, px
    (negative: the heavy one off its partner; positive: the light one off its partner)."""
    from scipy.spatial import cKDTree

    positions, sublattice = scan.positions, scan.sublattice
    _, partner = cKDTree(positions[sublattice == 1]).query(positions[sublattice == 0])
    axis = (positions[sublattice == 1][partner] - positions[sublattice == 0]).mean(0)
    axis /= np.hypot(*axis)
    true_index, found_index = match_positions(positions, table.positions, 2.0)
    along = (table.positions[found_index] - positions[true_index]) @ axis
    return tuple(float(along[sublattice[true_index] == k].mean()) for k in (0, 1))


def test_overlapping_airy_columns_are_not_pushed_apart(monkeypatch):
    """Dumbbells of Airy columns 3.2σ apart (ci size, 4.6 px): with the columns' measured radial
    profile taken away (:func:`sublattice_profiles`) neither member is pushed off the other.
    Measured, seeds 0–2: heavy −0.035 / +0.001 / −0.006 px, light +0.031 / +0.043 / +0.050 px.
    Control: Gaussian neighbour models (the profiles switched off) push the pair apart,
    heavy −0.07 to −0.08, light +0.18 to +0.19 px."""
    import microvae.sublattices.complete as complete  # where complete_lattice looks sublattice_profiles up

    biases = []
    for seed in (0, 1, 2):
        scan = GENERATORS["dumbbells"](seed=seed, size="ci")
        biases.append(_along_pair_bias(scan, find_atoms(scan.image, FindAtomsParams(device="cpu"))[0]))
    biases = np.abs(np.array(biases))
    assert np.median(biases) <= 0.05 and biases.max() <= 0.07, biases
    monkeypatch.setattr(complete, "sublattice_profiles", lambda *args, **kwargs: None)
    scan = GENERATORS["dumbbells"](seed=0, size="ci")
    heavy, light = _along_pair_bias(scan, find_atoms(scan.image, FindAtomsParams(device="cpu"))[0])
    assert light > 0.12 and heavy < -0.05, (heavy, light)


def test_measured_profile_is_the_columns_own():
    """Well-separated Moffat columns (β 1.5, heavy tails): the measured profile follows the true
    one (above its value at 4.5σ, which the window's outer ring takes as background) within 0.03
    of the peak out to 4σ and within half the error of a Gaussian of the same core (measured
    0.02 against 0.066); Gaussian columns (control) read as Gaussians (None: the Gaussian is kept)."""
    from microvae.sublattices import sublattice_profiles
    from microvae.sublattices.models import PROFILE_STEP, isotropic_covariance

    rng = np.random.default_rng(0)
    grid = np.arange(8, 248, 16.0)
    sites = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2) + rng.uniform(-0.5, 0.5, (len(grid) ** 2, 2))
    rows, cols = np.mgrid[:256, :256]
    gamma, beta = 2.5, 1.5
    moffat = np.zeros((256, 256))
    for r, c in sites:
        moffat += (1 + ((rows - r) ** 2 + (cols - c) ** 2) / gamma**2) ** -beta
    half_width = gamma * np.sqrt(2 ** (1 / beta) - 1)  # Moffat's half width at half maximum
    sigma = half_width / np.sqrt(2 * np.log(2))  # the Gaussian of the same half width
    labels = np.zeros(len(sites), np.int64)
    covariance = isotropic_covariance(np.full(len(sites), sigma))
    measured = sublattice_profiles(moffat, sites, np.ones(len(sites)), covariance, labels)
    rho = np.arange(measured.values.shape[1]) * PROFILE_STEP
    true = (1 + (rho * sigma) ** 2 / gamma**2) ** -beta
    true -= (1 + (4.5 * sigma) ** 2 / gamma**2) ** -beta  # the profile is read above the background of the window's outer σ
    reach = rho <= 4
    measured_error = np.abs(measured.values[0] - true)[reach].max()
    gaussian_error = np.abs(np.exp(-0.5 * rho**2) - true)[reach].max()
    assert measured_error < 0.03 and measured_error < 0.5 * gaussian_error, (measured_error, gaussian_error)
    gaussian = render_columns((256, 256), sites, np.ones(len(sites)), sigma)
    assert sublattice_profiles(gaussian, sites, np.ones(len(sites)), covariance, labels) is None


def test_joint_refinement_is_unbiased_when_the_model_is_right():
    """Gaussian columns (σ 2.6 / 2.2 px), B displaced 2.5 px towards an A 6.3 px away: with the
    fitter's own model the joint refinement meets the issue's goal (RMSE ≤ 0.15 px, |bias| ≤ 0.05 px
    on every sublattice); independent fits (control) are biased towards the bright neighbour."""
    scan = _gaussian_displaced_perovskite()
    found, _ = find_atoms(scan["image"], FindAtomsParams(device="cpu"))
    alone, _ = find_atoms(scan["image"], FindAtomsParams(device="cpu", joint=False))
    for table, good in ((found, True), (alone, False)):
        true_index, found_index = match_positions(scan["positions"], table.positions, 3.0)
        error = table.positions[found_index] - scan["positions"][true_index]
        displaced = scan["displaced"][true_index]
        direction = scan["direction"]
        bias = float((error[displaced] @ direction).mean())
        rmse = float(np.sqrt((error[displaced] ** 2).sum(1).mean()))
        recall = displaced.sum() / scan["displaced"].sum()
        if good:
            assert recall >= 0.99 and rmse <= 0.15 and abs(bias) <= 0.05, (recall, rmse, bias)
        else:
            assert recall < 0.99 or abs(bias) > 0.1 or rmse > 0.3, (recall, rmse, bias)


def _gaussian_displaced_perovskite(seed: int = 0):
    """256² perovskite of exact Gaussians: A σ 2.6 (peak 1), B σ 2.2 (peak 0.5) at the cell centres,
    the upper half's B displaced 2.5 px towards the upper-left A; Poisson noise, dose 300."""
    rng = np.random.default_rng(seed)
    a = 8.8 * np.sqrt(2)
    grid = np.arange(-1, int(256 / a) + 2)
    sites = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2) * a + 3
    direction = -np.ones(2) / np.sqrt(2)
    b_sites = sites + a / 2
    displaced = b_sites[:, 0] < 128
    b_positions = b_sites + np.where(displaced[:, None], 2.5 * direction, 0.0)
    image = render_columns((256, 256), sites, np.ones(len(sites)), 2.6) + render_columns((256, 256), b_positions, np.full(len(b_positions), 0.5), 2.2)
    image = rng.poisson((image + 0.1) * 300) / 300.0
    inside = (b_positions >= 6).all(1) & (b_positions <= 249).all(1)
    return {"image": image.astype(np.float32), "positions": b_positions[inside], "displaced": displaced[inside], "direction": direction}


@pytest.mark.parametrize("name", ["displaced_perovskite", "dumbbells", "scan_distorted", "honeycomb"])
def test_sublattice_labels_match_the_truth(name):
    """Labels from the lattice's geometry and heights agree with the generator's sublattices."""
    scan = GENERATORS[name](seed=0, size="ci")
    table, estimate = find_atoms(scan.image, FindAtomsParams(device="cpu", invert=scan.invert))
    assert len(estimate.sublattice_counts) == len(scan.sublattice_names)
    assert label_agreement(scan, table) >= 0.98


def test_one_lattice_is_one_sublattice():
    """Control for the labels: a lattice of one kind of column is not split."""
    lattice = make_lattice(shape=(256, 256), second_sublattice=False, seed=2)
    table, estimate = find_atoms(lattice.image, FindAtomsParams(device="cpu"))
    assert estimate.sublattice_counts == (len(table),)
    assert estimate.second_search == 0


def test_labels_follow_the_lattice_not_a_brightness_gradient():
    """Two sublattices whose heights overlap across the scan (a strong thickness wedge): the heights
    alone mislabel, the translations of the lattice keep each site whole."""
    lattice = make_lattice(shape=(256, 256), dim_ratio=0.6, seed=3, background=0.0, jitter_px=0.05)
    wedge = np.linspace(0.35, 1.65, 256)[None, :]
    image = lattice.image * wedge
    table, _ = find_atoms(image, FindAtomsParams(device="cpu"))
    true_index, found_index = match_positions(lattice.positions, table.positions, 2.0)
    truth = lattice.sublattice[true_index]
    found = table.sublattice[found_index]
    agreement = max(np.mean(found == truth), np.mean(found != truth))
    assert agreement >= 0.98
    from microvae.sublattices import label_sublattices

    by_height = label_sublattices(table.intensity[found_index])
    assert max(np.mean(by_height == truth), np.mean(by_height != truth)) < 0.95


@pytest.mark.parametrize("seed", [0, 1])
def test_displacements_match_the_imposed_polarisation(seed):
    """Film B displacements (written by find-atoms) against the generator's imposed shifts; substrate B ≈ 0."""
    scan = GENERATORS["displaced_perovskite"](seed=seed, size="ci")
    table, _ = find_atoms(scan.image, FindAtomsParams(device="cpu"))
    true_index, found_index = match_positions(scan.positions, table.positions, 3.0)
    b = scan.sublattice[true_index] == 1
    measured = table.displacement_px[found_index[b]]
    imposed = scan.displacement_px[true_index[b]]
    defined = np.isfinite(measured[:, 0])
    assert defined.mean() > 0.8
    error = measured[defined] - imposed[defined]
    assert np.sqrt((error**2).sum(1).mean()) < 0.4
    film = np.abs(imposed[defined]).sum(1) > 0
    assert np.abs(np.hypot(*measured[defined][film].T).mean() - np.hypot(*imposed[defined][film].T).mean()) < 0.25
    assert np.hypot(*measured[defined][~film].T).mean() < 0.3
    assert np.isnan(table.displacement_px[table.sublattice == 0]).all()


def test_neighbour_count_is_chosen_from_the_data():
    """Four A around a perovskite B, three metals around a honeycomb chalcogen."""
    a = 10.0
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2) * a
    positions = np.concatenate([grid, grid + a / 2 + np.array([0.7, -0.3])])
    sublattice = np.r_[np.zeros(64, int), np.ones(64, int)]
    found = neighbour_displacements(positions, sublattice, 1, 0)
    assert found.neighbours == 4
    inner = np.isfinite(found.vector_px[:, 0])
    assert np.allclose(found.vector_px[inner], [0.7, -0.3], atol=1e-9)
    assert np.isnan(found.vector_px[:64]).all()
    honeycomb = GENERATORS["honeycomb"](seed=0, size="ci")
    found = neighbour_displacements(honeycomb.positions, honeycomb.sublattice, 1, 0)
    assert found.neighbours == 3
    assert np.nanmedian(found.magnitude_px) < 0.3
    with pytest.raises(ParameterError):
        parse_pair("1-0")
    with pytest.raises(ParameterError):
        neighbour_displacements(positions, sublattice, 2, 0)


def test_gaussian_mixture_1d_recovers_two_populations():
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(0.0, 0.1, 300), rng.normal(1.0, 0.1, 200)]
    means, sds, weights, responsibilities, _ = gaussian_mixture_1d(values, 2)
    assert np.allclose(means, [1.0, 0.0], atol=0.03) and np.allclose(weights, [0.4, 0.6], atol=0.03)
    assert (responsibilities.argmax(1) == np.r_[np.ones(300), np.zeros(200)]).mean() > 0.99


def test_real_srtio3_adf_and_abf_sublattices(realdata):
    """Real SrTiO3 [110] (atomap's test data). ADF: bright Sr and dimmer Ti–O, alternating along
    the rows. ABF (inverted): Sr, Ti–O and the oxygen columns that only ABF shows. Counts checked on
    the previews by eye (2026-11-29): ADF 117 Sr + 104 Ti–O, every column of the scan and no
    stray; ABF 111 / 117 / 118 (Ti–O, Sr, O), the columns cut by the scan's edge partly missed."""
    from microvae.images import read_scans

    (adf,) = read_scans(realdata / "atomap_SrTiO3_ADF_cropped.hdf5")
    table, estimate = find_atoms(adf.data[0], FindAtomsParams(device="cpu"))
    assert len(estimate.sublattice_counts) == 2
    sr, tio = estimate.sublattice_counts
    assert 110 <= sr <= 125 and 98 <= tio <= 135
    # Sr and Ti–O alternate along each row: the nearest neighbour of a Sr column along the row is Ti–O
    from scipy.spatial import cKDTree

    tree = cKDTree(table.positions)
    _, index = tree.query(table.positions[table.sublattice == 0], k=2)
    assert np.mean(table.sublattice[index[:, 1]] == 1) > 0.9
    (abf,) = read_scans(realdata / "atomap_SrTiO3_ABF_cropped.hdf5")
    table, estimate = find_atoms(abf.data[0], FindAtomsParams(device="cpu", invert=True))
    assert len(estimate.sublattice_counts) == 3
    assert all(100 <= count <= 140 for count in estimate.sublattice_counts), estimate.sublattice_counts
    assert estimate.nearest_neighbour_px < 0.75 * estimate.spacing_px  # oxygen columns between the others


def _cli(capsys):
    """``run(args) -> (exit code, stdout, stderr)`` of ``microvae ARGS`` in-process."""
    from microvae.cli.main import main

    def run(args):
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return exited.value.code, captured.out, captured.err

    return run


def test_cli_writes_sublattices_and_displacements_through_to_the_maps(tmp_path, capsys):
    """find-atoms → extract → train (1 epoch) → encode → export: sublattice and displacement travel
    with the atoms and come out as maps with units; a bad --displacements is one line, exit 2."""
    import h5py
    import tifffile

    run = _cli(capsys)
    scan = GENERATORS["displaced_perovskite"](seed=0, size="ci")
    image = tmp_path / "film.tif"
    tifffile.imwrite(image, scan.image)
    code, out, err = run(["find-atoms", image, "-o", tmp_path / "atoms.h5", "--displacements", "1-0"])
    assert code == 2 and "OF:TO" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "atoms.h5").exists()
    code, out, err = run(["find-atoms", image, "-o", tmp_path / "atoms.h5", "--preview", tmp_path / "atoms.png"])
    assert code == 0, err
    assert "sublattices 0:" in out + err and "displacements median" in out + err
    with h5py.File(tmp_path / "atoms.h5") as handle:
        sublattice = handle["sublattice"][()]
        displacement = handle["displacement_px"][()]
        assert handle["displacement_px"].attrs["units"] == "px"
        assert set(np.unique(sublattice)) == {0, 1}
        assert np.isnan(displacement[sublattice == 0]).all() and np.isfinite(displacement[sublattice == 1]).mean() > 0.8
    assert run(["extract", image, "--atoms", tmp_path / "atoms.h5", "--window", 12, "-o", tmp_path / "patches.h5"])[0] == 0
    with h5py.File(tmp_path / "patches.h5") as handle:
        assert "atom_sublattice" in handle and handle["atom_displacement_px"].shape[1] == 2
    assert (
        run(
            [
                "train",
                tmp_path / "patches.h5",
                "-o",
                tmp_path / "run",
                "--classes",
                2,
                "--epochs",
                1,
                "--no-rotation",
                "--no-translation",
                "--class-init",
                "none",
            ]
        )[0]
        == 0
    )
    assert run(["encode", tmp_path / "run", tmp_path / "patches.h5", "-o", tmp_path / "encoded.h5", "--no-scores"])[0] == 0
    assert run(["export", tmp_path / "encoded.h5", "-o", tmp_path / "maps", "--format", "tiff"])[0] == 0
    with h5py.File(tmp_path / "maps" / "maps.h5") as handle:
        group = handle["image_00"]
        assert group["displacement_px"].attrs["units"] == "px"
        assert np.nanmax(group["displacement_px"][()]) > 1.5  # film B moved 2–3 px
        assert set(np.unique(group["sublattice"][()])) <= {-1, 0, 1}


def test_extract_picks_a_sublattice(tmp_path, capsys):
    """extract --sublattice K cuts patches around that sublattice's atoms only; a missing one is named."""
    import h5py
    import tifffile

    run = _cli(capsys)
    scan = GENERATORS["honeycomb"](seed=0, size="ci")
    image = tmp_path / "honeycomb.tif"
    tifffile.imwrite(image, scan.image)
    assert run(["find-atoms", image, "-o", tmp_path / "atoms.h5"])[0] == 0
    with h5py.File(tmp_path / "atoms.h5") as handle:
        sublattice = handle["sublattice"][()]
    assert run(["extract", image, "--atoms", tmp_path / "atoms.h5", "--window", 10, "--sublattice", 1, "-o", tmp_path / "dim.h5"])[0] == 0
    with h5py.File(tmp_path / "dim.h5") as handle:
        assert (sublattice[handle["atom_index"][()]] == 1).all() and (handle["atom_sublattice"][()] == 1).all()
        assert len(handle["atom_index"]) > 0.8 * (sublattice == 1).sum()
    code, _, err = run(["extract", image, "--atoms", tmp_path / "atoms.h5", "--window", 10, "--sublattice", 5, "-o", tmp_path / "none.h5"])
    assert code == 2 and "no sublattice 5" in err


@pytest.mark.parametrize("name, invert", [("perovskite", False), ("perovskite_abf", True)])
def test_faint_oxygen_columns_of_abtem_srtio3(name, invert, monkeypatch):
    """The O columns of the abTEM SrTiO₃ [001] simulations (HAADF and ABF) respond at 4–9 % of a
    typical column, under the second search's 10 %: they are found as weak peaks that are round and
    as sharp as a column. Controls: without the weak peaks they are missed; accepting weak peaks
    without the roundness test takes the misfit rings around the ABF columns for columns."""
    from microvae.lattices.abtem import abtem_files, load_abtem
    from microvae.sublattices import search

    if f"abtem_{name}" not in abtem_files():
        pytest.skip(f"no cached abTEM simulation {name}")
    scan = load_abtem(name, seed=0)
    inside = scan.inside(3.0)  # columns 3 px inside the image count, as the benchmark scores them
    oxygen = (scan.sublattice == list(scan.sublattice_names).index("O")) & inside

    def recall_and_precision():
        table, _ = find_atoms(scan.image, FindAtomsParams(invert=invert, device="cpu"))
        found_inside = positions_inside(table.positions, scan.image.shape, 3.0)
        true_index, found_index = match_positions(scan.positions[inside], table.positions[found_inside], 1.5)
        oxygen_rows = np.flatnonzero(oxygen[inside])
        return np.isin(oxygen_rows, true_index).mean(), len(found_index) / found_inside.sum()

    oxygen_recall, precision = recall_and_precision()
    assert oxygen_recall == 1.0 and precision == 1.0, (oxygen_recall, precision)
    monkeypatch.setattr(search, "WEAK_RELATIVE_HEIGHT", 1.0)
    assert recall_and_precision()[0] == 0.0
    if invert:
        monkeypatch.setattr(search, "WEAK_RELATIVE_HEIGHT", 0.03)
        monkeypatch.setattr(search, "MIN_ROUNDNESS", -np.inf)
        monkeypatch.setattr(search, "SHARPNESS", (0.0, np.inf))
        assert recall_and_precision()[1] < 0.9


def test_columns_cut_by_the_edge_do_not_join_two_sites():
    """The displaced perovskite at dose 1000, seed 0 (1024²): columns along the scan's top edge are
    fitted to the part of themselves inside it, 1–2 px off their sites and with heights between
    the A and B sites'. Before the edge rule of :func:`label_by_translation`, a relabelling during
    the joint refinement put every column in one sublattice, the B columns were fitted with the A
    columns' shape and came out biased by more than 0.1 px; now they are not. The rule itself, on
    a lattice whose top row of A columns falls in height from A's to B's (a translation also
    carries A onto B, as one found mid-refinement may): with the scan's shape the two sites stay
    two sublattices; without it (the control), the row joins them into one. (The whole-scan control
    that withheld the shape no longer merges since the shapes are read from every column, so
    the rule is tested where it acts.)"""
    from microvae.sublattices.labels import label_by_translation

    scan = GENERATORS["displaced_perovskite"](seed=0, size="bench", dose=1000.0)
    bias, _ = film_b_bias(scan, find_atoms(scan.image, FindAtomsParams(device="cpu"))[0])
    assert abs(bias) <= 0.06, bias
    cell = 12.0
    rows, cols = np.mgrid[0:10, 0:10]
    a_sites = np.stack([rows.ravel() * cell, cols.ravel() * cell + 6], axis=1)
    positions = np.concatenate([a_sites, a_sites + cell / 2])
    heights = np.r_[np.ones(len(a_sites)), np.full(len(a_sites), 0.5)]
    top_row = np.nonzero(a_sites[:, 0] == 0)[0]
    heights[top_row] = np.geomspace(1.0, 0.5, len(top_row))
    translations = np.array([[0, cell], [cell, 0], [cell / 2, cell / 2]])
    nearest = cell / np.sqrt(2)
    with_edge, _ = label_by_translation(positions, heights, translations, nearest, shape=(120, 126))
    assert len(np.unique(with_edge)) == 2 and (with_edge[len(a_sites) :] == 1).all()
    assert (with_edge[: len(a_sites)][np.setdiff1d(np.arange(len(a_sites)), top_row)] == 0).all()
    without_edge, _ = label_by_translation(positions, heights, translations, nearest)
    assert len(np.unique(without_edge)) == 1
