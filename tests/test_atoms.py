"""Atom finding against the synthetic lattice's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from microvae import atoms
from microvae.atoms import FindAtomsParams, backend, estimate_lattice, find_atoms, peaks, prepare_image, refine
from microvae.atoms import response as atoms_response
from microvae.errors import ParameterError
from microvae.synthetic import SNR_PRESETS, make_lattice, score_detection

MARGIN = 3.0


def interior_score(lattice, found, radius=3.0):
    """Score only columns at least MARGIN px inside the image (truth and detections alike)."""
    height, width = lattice.params.shape
    keep = (found[:, 0] >= MARGIN) & (found[:, 0] <= height - 1 - MARGIN) & (found[:, 1] >= MARGIN) & (found[:, 1] <= width - 1 - MARGIN)
    return score_detection(lattice.positions[lattice.inside(MARGIN)], found[keep], radius)


@pytest.fixture(scope="module")
def high_snr_lattice():
    dose, read_noise = SNR_PRESETS["high"]
    return make_lattice(shape=(384, 384), dose=dose, read_noise=read_noise, seed=11)


def test_lattice_estimate_matches_ground_truth(high_snr_lattice):
    estimate = estimate_lattice(prepare_image(high_snr_lattice.image))
    nearest_neighbour = high_snr_lattice.params.spacing_px / np.sqrt(2)  # bright-to-dim distance
    assert estimate.periodic
    assert estimate.spacing_px == pytest.approx(nearest_neighbour, rel=0.06)
    assert estimate.sigma_px == pytest.approx(high_snr_lattice.params.sigma_px, rel=0.25)


@pytest.mark.parametrize("method", ["log", "max"])
def test_high_snr_f1_and_gaussian_subpixel_rmse(high_snr_lattice, method):
    table, _ = find_atoms(high_snr_lattice.image, FindAtomsParams(method=method, refine="gaussian"))
    score = interior_score(high_snr_lattice, table.positions)
    assert score.f1 >= 0.99, score
    assert score.rmse_px <= 0.15, score
    assert table.fit_ok.mean() > 0.98


def test_refinement_improves_on_integer_peaks(high_snr_lattice):
    rough, _ = find_atoms(high_snr_lattice.image, FindAtomsParams(refine="none"))
    com, _ = find_atoms(high_snr_lattice.image, FindAtomsParams(refine="com"))
    fitted, _ = find_atoms(high_snr_lattice.image, FindAtomsParams(refine="gaussian"))
    rmse = [interior_score(high_snr_lattice, t.positions).rmse_px for t in (rough, com, fitted)]
    assert rmse[0] > 0.3  # integer positions: about 0.41 px for uniform subpixel offsets
    assert rmse[2] < rmse[1] < rmse[0]


def test_invert_finds_dark_columns():
    lattice = make_lattice(shape=(256, 256), seed=3)
    dark = lattice.image.max() - lattice.image
    table, _ = find_atoms(dark, FindAtomsParams(invert=True))
    assert interior_score(lattice, table.positions).f1 >= 0.99
    bright_only, _ = find_atoms(dark, FindAtomsParams(invert=False))
    assert interior_score(lattice, bright_only.positions).f1 < 0.5  # without --invert it finds the gaps


def test_user_overrides_are_used():
    lattice = make_lattice(shape=(256, 256), seed=4)
    _, used = find_atoms(lattice.image, FindAtomsParams(spacing_px=7.5, sigma_px=1.7))
    assert used.spacing_px == 7.5 and used.sigma_px == 1.7


def test_medium_snr_still_usable():
    dose, read_noise = SNR_PRESETS["medium"]
    lattice = make_lattice(shape=(256, 256), dose=dose, read_noise=read_noise, seed=8)
    table, _ = find_atoms(lattice.image)
    score = interior_score(lattice, table.positions)
    assert score.f1 >= 0.97 and score.rmse_px <= 0.35


NOISE = {
    "uniform": lambda rng, shape: rng.random(shape),
    "gaussian": lambda rng, shape: rng.normal(size=shape),
    "poisson": lambda rng, shape: rng.poisson(2.0, shape).astype(float),
    "sparse counts": lambda rng, shape: rng.poisson(0.3, shape).astype(float),
    "exponential": lambda rng, shape: rng.exponential(size=shape),
}


def _slow_background(shape, scale):
    rows, cols = np.mgrid[: shape[0], : shape[1]] / max(shape)
    return scale * 5 * (0.5 * rows + 0.3 * cols + 0.2 * np.sin(3 * rows))


@pytest.mark.parametrize("kind", sorted(NOISE))
def test_noise_is_not_a_lattice(kind):
    """Pure noise of any size, with or without a slow background, holds no atoms (many draws)."""
    rng = np.random.default_rng(sorted(NOISE).index(kind))
    for size, draws in ((8, 60), (13, 30), (32, 16), (96, 6), (300, 2)):
        for draw in range(draws):
            noise = NOISE[kind](rng, (size, size))
            if draw % 2:
                noise = noise + _slow_background(noise.shape, noise.std())
            table, _ = find_atoms(noise, FindAtomsParams(device="cpu"))
            assert len(table) == 0, f"{kind} noise {size}×{size} draw {draw}: {len(table)} atoms"


@pytest.mark.parametrize("size", [32, 64])
def test_small_low_snr_lattices_still_hold_atoms(size):
    """Control for the noise test: the same significance rule keeps real columns at low dose."""
    dose, read_noise = SNR_PRESETS["low"]
    lattice = make_lattice(shape=(size, size), dose=dose, read_noise=read_noise, seed=4)
    table, _ = find_atoms(lattice.image, FindAtomsParams(device="cpu"))
    truth = lattice.inside(3).sum()
    assert len(table) >= 0.8 * truth


def test_spikes_are_not_columns():
    """Single bright pixels on noise are rejected by the scale test, columns of the same height are not."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.05, (64, 64))
    spots = rng.integers(8, 56, (6, 2))
    image[spots[:, 0], spots[:, 1]] += 3.0
    assert len(find_atoms(image, FindAtomsParams(device="cpu"))[0]) == 0
    rows, cols = np.mgrid[:64, :64]
    columns = sum(np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.5**2)) for r, c in spots)
    found, _ = find_atoms(rng.normal(0, 0.05, (64, 64)) + 3.0 * columns, FindAtomsParams(device="cpu"))
    assert len(found) >= 5


def test_real_srtio3_both_sublattices(realdata):
    """Experimental ADF-STEM of SrTiO3 (atomap test data): bright Sr and dim Ti-O columns are both found."""
    from microvae.images import read_scans

    (scan,) = read_scans(realdata / "atomap_SrTiO3_ADF_cropped.hdf5")
    table, estimate = find_atoms(scan.data[0])
    assert estimate.periodic and 18 < estimate.spacing_px < 24  # Sr to Ti-O along a row: about 21 px
    assert 200 < len(table) < 280
    # two populations of intensity, as labelled: nine in ten Sr columns are brighter than nine in ten Ti-O columns
    sr, tio = table.intensity[table.sublattice == 0], table.intensity[table.sublattice == 1]
    assert np.percentile(sr, 10) > 1.2 * np.percentile(tio, 90)


def test_two_phase_lattice_ground_truth():
    """Regions by the boundary, variants by stripe, dim columns displaced by ±displacement along rows,
    and the dim columns' brightness differs between the regions as stated."""
    from microvae.synthetic import lattice_sites, make_two_phase_lattice

    truth = make_two_phase_lattice(shape=(256, 256), displacement_px=1.5, jitter_px=0.0, dose=1e9, read_noise=0.0, seed=2)
    np.testing.assert_array_equal(truth.region, (truth.positions[:, 1] >= truth.boundary_col).astype(int))
    dim = truth.sublattice == 1
    assert set(np.unique(truth.variant[dim])) == {-1, 1} and (truth.variant[~dim] == 0).all()
    sites, _ = lattice_sites((256, 256), 14.0, 0.0, True, 4 * 1.8 + 2)
    np.testing.assert_allclose(truth.positions[:, 0] - sites[:, 0], 1.5 * truth.variant, atol=1e-9)
    stripes = np.floor(sites[dim, 0] / 64.0).astype(int)
    np.testing.assert_array_equal(truth.variant[dim], np.where(stripes % 2 == 0, 1, -1))
    pixel = np.round(truth.positions).astype(int)
    inside = ((pixel >= 0) & (pixel < 256)).all(1)
    peaks = np.full(len(pixel), np.nan)
    peaks[inside] = truth.image[pixel[inside, 0], pixel[inside, 1]]
    left, right = np.nanmedian(peaks[dim & (truth.region == 0)]), np.nanmedian(peaks[dim & (truth.region == 1)])
    bright = np.nanmedian(peaks[~dim])
    assert left / bright == pytest.approx(0.2, abs=0.05) and right / bright == pytest.approx(0.65, abs=0.07)


# ----------------------------------------------------------------------------------------------
# The fast CPU engine's pieces against plain references, and the torch engine against the CPU one


@pytest.mark.parametrize("shape, sigma, inner", [((300, 517), 1.2, 2), ((130, 128), 0.8, 1), ((20, 33), 2.0, 3), ((7, 9), 1.0, 1), ((5, 40), 3.0, 2)])
def test_strip_log_and_maxima_match_scipy(shape, sigma, inner):
    """The row-strip LoG equals −σ²·scipy's gaussian_laplace ("reflect" edges, images smaller than
    the kernel too), and its square maxima equal those of scipy's maximum_filter."""
    from scipy import ndimage

    image = np.random.default_rng(1).random(shape).astype(np.float32)
    response, candidates = atoms_response.log_response_and_maxima(image, sigma, inner)
    reference = -(sigma**2) * ndimage.gaussian_laplace(image.astype(np.float64), sigma)
    np.testing.assert_allclose(response, reference, atol=1e-6)
    expected = np.stack(np.nonzero(response == ndimage.maximum_filter(response, size=2 * inner + 1, mode="nearest")), axis=1)
    np.testing.assert_array_equal(candidates, expected)


def test_noise_sd_of_white_noise():
    noise = np.random.default_rng(2).normal(scale=0.05, size=(2048, 700)).astype(np.float32)  # 1.4·10⁶ px: every 2nd row sampled
    assert atoms.noise_sd(noise) == pytest.approx(0.05, rel=0.03)


def test_find_peaks_disk_and_plateau():
    """A dim peak 4.2 px diagonally from a bright one is kept (outside the bright one's disk of radius
    4, though inside its 9×9 square); a two-pixel flat top gives one peak."""
    response = np.zeros((40, 40), np.float32)
    response[10, 10] = response[10, 11] = 1.0  # plateau
    response[30, 30] = 1.0
    response[27, 27] = 0.5  # 4.2 px from (30, 30): outside the disk of radius 4, inside its 9×9 square
    peaks, heights = atoms.find_peaks(response, spacing_px=8.6, threshold=0.1)
    assert [tuple(p) for p in peaks] == [(10, 10), (27, 27), (30, 30)]
    np.testing.assert_allclose(heights, [1.0, 0.5, 1.0])


def test_solve_spd_matches_numpy():
    rng = np.random.default_rng(3)
    size, count = 4, 50
    factors = rng.normal(size=(count, size, size))
    matrices = factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(size)
    rhs = rng.normal(size=(count, size))
    packed = np.stack([matrices[:, i, j] for i in range(size) for j in range(i, size)])
    solution, ok = refine.solve_spd(packed, rhs.T)
    assert ok.all()
    np.testing.assert_allclose(solution.T, np.linalg.solve(matrices, rhs[:, :, None])[:, :, 0], rtol=1e-8, atol=1e-10)
    packed[refine.packed_index(0, 0, size)] = -1.0  # not positive definite: flagged, zero step
    solution, ok = refine.solve_spd(packed, rhs.T)
    assert not ok.any() and not solution.any()


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_fixed_width_fit_recovers_known_centres(engine):
    """Noise-free Gaussians on a background, centres anywhere within ±0.5 px: the moment-based
    fixed-width fit returns the centres, heights and background exactly (numpy and torch)."""
    rng = np.random.default_rng(4)
    count, sigma = 300, 1.6
    rows, cols = peaks.disk_offsets(refine.fit_disk_radius(sigma, 8.5))
    centres = rng.uniform(-0.5, 0.5, size=(count, 2))
    height, background = rng.uniform(0.2, 1.0, count), rng.uniform(0.0, 0.3, count)
    d2 = (rows[:, None] - centres[:, 0]) ** 2 + (cols[:, None] - centres[:, 1]) ** 2
    data = (height * np.exp(-d2 / (2 * sigma**2)) + background).astype(np.float32)
    start = np.clip(centres + rng.normal(scale=0.3, size=centres.shape), -1, 1)
    if engine == "torch":
        torch = pytest.importorskip("torch")
        data, start = torch.from_numpy(data), torch.from_numpy(start)
    params, ok = refine.fit_fixed_width(data, rows, cols, start, sigma, iterations=12)
    params, ok = backend.to_numpy(params), backend.to_numpy(ok)
    assert ok.all()
    np.testing.assert_allclose(params[:, 1:3], centres, atol=2e-4)
    np.testing.assert_allclose(params[:, 0], height, rtol=1e-3)
    np.testing.assert_allclose(params[:, 3], background, atol=1e-3)


def test_width_sample_and_chunks_do_not_change_the_fit(high_snr_lattice, monkeypatch):
    """The column width is measured on a sample of columns: a small sample gives the same positions
    (to ~10⁻³ px) as fitting every column; so does fitting in small chunks."""
    image = prepare_image(high_snr_lattice.image)
    estimate = estimate_lattice(image)
    peaks, _ = atoms.find_peaks(atoms.detection_response(image, estimate.sigma_px, estimate.spacing_px, "log"), estimate.spacing_px, 0.05)
    full = atoms.refine_gaussian(image, peaks, estimate.sigma_px, estimate.spacing_px)
    chunked = atoms.refine_gaussian(image, peaks, estimate.sigma_px, estimate.spacing_px, chunk=100)
    np.testing.assert_allclose(chunked.positions, full.positions, atol=1e-4)
    monkeypatch.setattr(refine, "WIDTH_SAMPLE", 100)
    sampled = atoms.refine_gaussian(image, peaks, estimate.sigma_px, estimate.spacing_px)
    assert sampled.sigma_px[0] == pytest.approx(full.sigma_px[0], abs=0.02)
    np.testing.assert_allclose(sampled.positions, full.positions, atol=5e-3)


def _matched(first, second):
    """Indices pairing each atom of ``first`` with the nearest of ``second`` (one-to-one checked) and the distances."""
    from scipy.spatial import cKDTree

    distance, index = cKDTree(second.positions).query(first.positions)
    assert len(np.unique(index)) == len(index)
    return index, distance


@pytest.mark.parametrize("snr", ["high", "low"])
@pytest.mark.parametrize("method, refine", [("log", "gaussian"), ("log", "com"), ("log", "none"), ("max", "gaussian")])
def test_torch_engine_gives_the_same_atoms(snr, method, refine):
    """The torch engine (here torch on the CPU, as CI runs it; on a GPU with device="cuda") finds the
    same columns as the numpy engine, with the same lattice estimate, and positions within 10⁻³ px."""
    pytest.importorskip("torch")
    dose, read_noise = SNR_PRESETS[snr]
    lattice = make_lattice(shape=(160, 208), dose=dose, read_noise=read_noise, seed=5)
    params = FindAtomsParams(method=method, refine=refine, device="cpu")
    ours, estimate = find_atoms(lattice.image, params)
    theirs, torch_estimate = atoms.find_atoms_torch(lattice.image, params, device="cpu")
    assert torch_estimate.periodic == estimate.periodic
    assert torch_estimate.spacing_px == pytest.approx(estimate.spacing_px, abs=1e-9)
    assert torch_estimate.sigma_px == pytest.approx(estimate.sigma_px, abs=1e-9)
    assert len(ours) == len(theirs) > 300
    index, distance = _matched(ours, theirs)
    assert distance.max() < 1e-3
    if refine == "none":
        assert distance.max() == 0
    np.testing.assert_array_equal(ours.fit_ok, theirs.fit_ok[index])
    np.testing.assert_allclose(ours.intensity, theirs.intensity[index], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours.score, theirs.score[index], atol=1e-5)
    np.testing.assert_allclose(ours.sigma_px, theirs.sigma_px[index], atol=1e-6)


def test_torch_engine_inverted_and_with_overrides():
    pytest.importorskip("torch")
    lattice = make_lattice(shape=(128, 128), seed=3)
    params = FindAtomsParams(invert=True, spacing_px=8.0, sigma_px=1.5, threshold=0.05, device="cpu")
    dark = lattice.image.max() - lattice.image
    ours, _ = find_atoms(dark, params)
    theirs, used = atoms.find_atoms_torch(dark, params, device="cpu")
    assert used.spacing_px == 8.0 and used.sigma_px == 1.5
    assert len(ours) == len(theirs) and _matched(ours, theirs)[1].max() < 1e-3
    assert interior_score(lattice, theirs.positions).f1 >= 0.99


def test_device_choice():
    with pytest.raises(ParameterError, match="unknown device"):
        FindAtomsParams(device="gpu").validate()
    assert atoms.torch_device_for("cpu") is None
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        assert atoms.torch_device_for("auto").type == "cuda"
    else:
        assert atoms.torch_device_for("auto") is None
        with pytest.raises(ParameterError, match="no CUDA device"):
            find_atoms(np.zeros((64, 64)), FindAtomsParams(device="cuda"))


def test_device_is_not_part_of_the_artifact_fingerprint(tmp_path, lattice_tif):
    """Changing --device does not make an existing atoms artifact stale: both engines find the same atoms."""
    from microvae.config import FindAtomsConfig
    from microvae.stages import run_find_atoms

    path, _ = lattice_tif
    output = tmp_path / "atoms.h5"
    assert run_find_atoms([str(path)], output, FindAtomsConfig(FindAtomsParams(device="cpu"))).status == "written"
    assert run_find_atoms([str(path)], output, FindAtomsConfig(FindAtomsParams(device="auto"))).status == "up-to-date"
