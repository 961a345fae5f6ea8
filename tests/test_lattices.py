"""The ground-truth lattice generators (microvae.lattices): shapes, determinism, and that the truth
they record is what their images show (measured on the images, not restated from the parameters)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from microvae import lattices
from microvae.lattices import GENERATORS, GroundTruthScan, load_abtem, render_profile
from microvae.synthetic import render_gaussians

SYNTHETIC = ["honeycomb", "displaced_perovskite", "dumbbells", "scan_distorted", "abf_perovskite"]
ABTEM = sorted(name for name in GENERATORS if name.startswith("abtem_"))


@pytest.fixture(scope="module")
def ci_scans() -> dict[str, GroundTruthScan]:
    return {name: GENERATORS[name](seed=0, size="ci") for name in SYNTHETIC}


def sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at (row, col) points."""
    return ndimage.map_coordinates(np.asarray(image, dtype=np.float64), points.T, order=1, mode="nearest")


def centroids(image: np.ndarray, points: np.ndarray, radius: int = 3, dark: bool = False) -> np.ndarray:
    """Intensity centroid (above the window's minimum; of the dip for ``dark``) in a square window
    around each point's nearest pixel."""
    data = -np.asarray(image, dtype=np.float64) if dark else np.asarray(image, dtype=np.float64)
    offsets = np.arange(-radius, radius + 1)
    base = np.round(points).astype(int)
    rows = base[:, 0, None, None] + offsets[None, :, None]
    cols = base[:, 1, None, None] + offsets[None, None, :]
    windows = data[rows, cols]
    weights = windows - windows.min(axis=(1, 2), keepdims=True)
    total = weights.sum(axis=(1, 2))
    row = (weights * rows).sum(axis=(1, 2)) / total
    col = (weights * cols).sum(axis=(1, 2)) / total
    return np.stack([row, col], axis=1)


# ----------------------------------------------------------------------------------------------
# The API: shapes, dtypes, parameters, determinism


def test_registry_has_the_documented_generators():
    assert set(SYNTHETIC) <= set(GENERATORS)
    assert all(name in SYNTHETIC or name.startswith("abtem_") for name in GENERATORS)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_shapes_dtypes_and_params(ci_scans, name):
    scan = ci_scans[name]
    n = len(scan.positions)
    assert scan.name == name
    assert scan.image.shape == (256, 256) and scan.image.dtype == np.float32
    assert np.isfinite(scan.image).all()
    assert scan.positions.shape == (n, 2) and scan.positions.dtype == np.float64
    assert scan.sublattice.shape == (n,) and scan.sublattice.dtype == np.int64
    assert scan.species.shape == (n,) and scan.species.dtype == np.int64
    assert scan.displacement_px.shape == (n, 2) and scan.displacement_px.dtype == np.float64
    assert scan.vacancies.ndim == 2 and scan.vacancies.shape[1] == 2 and scan.vacancies.dtype == np.float64
    assert isinstance(scan.invert, bool) and scan.invert == (name == "abf_perovskite")
    assert set(np.unique(scan.sublattice)) == set(range(len(scan.sublattice_names)))
    assert scan.species.min() >= 0 and scan.species.max() < len(scan.params["species_names"])
    inside = scan.inside()
    assert inside.dtype == bool and inside.shape == (n,)
    assert 150 < inside.sum() < n  # columns just outside the image are listed too
    assert scan.inside(10).sum() < inside.sum()
    params = json.loads(json.dumps(scan.params))
    assert params["generator"] == name and params["seed"] == 0 and params["size"] == "ci" and params["noise"] is True
    for key, value in scan.extra.items():
        assert isinstance(value, np.ndarray), key
    # no two columns on top of each other
    assert cKDTree(scan.positions).query(scan.positions, k=2)[0][:, 1].min() > 2.0


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic_in_seed_and_different_between_seeds(ci_scans, name):
    again = GENERATORS[name](seed=0, size="ci")
    np.testing.assert_array_equal(again.image, ci_scans[name].image)
    np.testing.assert_array_equal(again.positions, ci_scans[name].positions)
    other = GENERATORS[name](seed=1, size="ci")
    assert np.abs(other.image - ci_scans[name].image).mean() > 0.01
    assert len(other.positions) != len(ci_scans[name].positions) or np.abs(other.positions - ci_scans[name].positions).max() > 0.5


@pytest.mark.parametrize("name", SYNTHETIC)
def test_ci_draw_is_fast(name):
    times = []
    for _ in range(2):
        start = time.perf_counter()
        GENERATORS[name](seed=2, size="ci")
        times.append(time.perf_counter() - start)
    assert min(times) < 0.5


def test_bench_size_is_about_1024():
    scan = GENERATORS["scan_distorted"](seed=0, size="bench")
    assert scan.image.shape == (1024, 1024)
    assert scan.inside().sum() > 2000


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="unknown parameter"):
        lattices.honeycomb(spacing=3)
    with pytest.raises(ValueError, match="size"):
        lattices.dumbbells(size="huge")


def test_noise_switch_keeps_the_columns(ci_scans):
    clean = lattices.honeycomb(seed=0, noise=False)
    np.testing.assert_array_equal(clean.positions, ci_scans["honeycomb"].positions)
    residual = ci_scans["honeycomb"].image - clean.image
    assert 0.03 < residual.std() < 0.2  # Poisson at 80 counts per unit plus read noise
    assert abs(residual.mean()) < 0.01


# ----------------------------------------------------------------------------------------------
# The truth is where the image says it is


@pytest.mark.parametrize("name", SYNTHETIC)
def test_columns_stand_out_from_random_points(ci_scans, name):
    scan = ci_scans[name]
    sign = -1.0 if scan.invert else 1.0
    smooth = sign * ndimage.gaussian_filter(scan.image.astype(np.float64), 1.0)
    keep = scan.inside(3) & (scan.sublattice == 0)
    at_columns = sample(smooth, scan.positions[keep])
    rng = np.random.default_rng(5)
    at_random = sample(smooth, rng.uniform(3, 252, size=(2000, 2)))
    assert np.mean(at_columns > np.median(at_random)) > 0.97
    assert np.median(at_columns) > np.quantile(at_random, 0.8)
    # one pixel off the truth is dimmer on average than the truth itself (the peak is there)
    shifted = np.concatenate([scan.positions[keep] + offset for offset in ([1.5, 0], [-1.5, 0], [0, 1.5], [0, -1.5])])
    assert np.mean(at_columns) > np.mean(sample(smooth, shifted))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_noise_free_centroids_match_the_truth(name):
    """The intensity centroid of each well-separated column in the noise-free image is the recorded
    position (the displaced perovskite's B columns are too close to A for this: tested below)."""
    scan = GENERATORS[name](seed=4, noise=False)
    pick = np.ones(len(scan.positions), bool) if name == "dumbbells" else scan.sublattice == 0
    keep = pick & scan.inside(6)
    radius = 2 if name == "dumbbells" else 3
    found = centroids(scan.image, scan.positions[keep], radius=radius, dark=scan.invert)
    error = np.sqrt(np.mean(np.sum((found - scan.positions[keep]) ** 2, axis=1)))
    assert error < 0.25, error


def test_sublattice_and_species_brightness_ordering(ci_scans):
    def mean_at(scan, mask, sigma=1.0):
        smooth = ndimage.gaussian_filter(scan.image.astype(np.float64), sigma)
        return sample(smooth, scan.positions[mask & scan.inside(3)]).mean()

    hc = ci_scans["honeycomb"]
    mo, s2, sse = (mean_at(hc, hc.species == k) for k in range(3))
    assert mo > sse > s2
    background = np.quantile(ndimage.gaussian_filter(hc.image.astype(np.float64), 1.0), 0.05)
    assert 0.25 < (s2 - background) / (mo - background) < 0.6  # the dim sublattice at ~0.38
    pv = ci_scans["displaced_perovskite"]
    assert mean_at(pv, pv.sublattice == 0) > mean_at(pv, pv.sublattice == 1)
    db = ci_scans["dumbbells"]
    assert mean_at(db, db.sublattice == 0, 0.7) > mean_at(db, db.sublattice == 1, 0.7)
    sd = ci_scans["scan_distorted"]
    assert mean_at(sd, sd.sublattice == 0) > mean_at(sd, sd.sublattice == 1)
    abf = ci_scans["abf_perovskite"]
    a, bo, o = (mean_at(abf, abf.sublattice == k) for k in range(3))
    assert a < bo < o < np.median(abf.image)  # dark columns: A darkest, O faintest


# ----------------------------------------------------------------------------------------------
# Honeycomb: defects, species, profile


def test_honeycomb_defects_are_on_the_chalcogen_sublattice(ci_scans):
    scan = ci_scans["honeycomb"]
    nn = scan.params["nn_px"]
    assert set(np.unique(scan.species[scan.sublattice == 0])) == {0}
    assert set(np.unique(scan.species[scan.sublattice == 1])) == {1, 2}
    substituted = np.mean(scan.species[scan.sublattice == 1] == 2)
    assert 0.02 < substituted < 0.12
    # a vacancy is an empty chalcogen site: its nearest columns are three metals at nn
    assert len(scan.vacancies) > 0
    distance, index = cKDTree(scan.positions).query(scan.vacancies, k=3)
    assert np.all(np.abs(distance - nn) < 1.0)
    assert np.all(scan.sublattice[index] == 0)
    clean = lattices.honeycomb(seed=0, noise=False)
    inside = scan.vacancies[(scan.vacancies > 3).all(1) & (scan.vacancies < 252).all(1)]
    s2 = scan.positions[(scan.species == 1) & scan.inside(3)]
    assert sample(clean.image, inside).mean() < sample(clean.image, s2).mean() - 0.15


def test_honeycomb_profile_is_not_a_gaussian():
    """The Moffat column has heavier tails than the Gaussian of the same half width."""
    scan = lattices.honeycomb(seed=1, noise=False, dim_ratio=0.0, substitution_ratio=0.0, carbon_sd=0.0, background=0.0, jitter_px=0.0)
    hwhm = scan.params["moffat_hwhm_px"]
    metal = scan.positions[scan.inside(20) & (scan.sublattice == 0)]
    rings = {}
    for radius in (hwhm, 2.5 * hwhm):
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        points = (metal[:, None, :] + radius * np.stack([np.sin(angles), np.cos(angles)], 1)[None]).reshape(-1, 2)
        rings[radius] = sample(scan.image, points).mean() / sample(scan.image, metal).mean()
    assert rings[hwhm] == pytest.approx(0.5, abs=0.07)
    gaussian_tail = 0.5 ** (2.5**2)  # a Gaussian with this HWHM, at 2.5 HWHM
    assert rings[2.5 * hwhm] > 3 * gaussian_tail


# ----------------------------------------------------------------------------------------------
# Displaced perovskite


def test_perovskite_displacement_is_exactly_at_film_b_with_the_documented_size(ci_scans):
    scan = ci_scans["displaced_perovskite"]
    region, variant = scan.extra["region"], scan.extra["variant"]
    assert region.shape == variant.shape == (len(scan.positions),)
    moved = np.linalg.norm(scan.displacement_px, axis=1) > 0
    film_b = (region == 1) & (scan.sublattice == 1)
    np.testing.assert_array_equal(moved, film_b)
    assert 0.3 < film_b.sum() / (scan.sublattice == 1).sum() < 0.7
    norm = np.linalg.norm(scan.displacement_px[film_b], axis=1)
    assert norm.min() >= 2.0 and norm.max() <= 3.0 and abs(norm.mean() - scan.params["shift_px"]) < 0.1
    rows, cols = scan.displacement_px[film_b].T
    np.testing.assert_allclose(np.abs(rows), np.abs(cols))  # along a cell diagonal
    assert np.all(rows < 0)  # towards the upper A neighbours
    np.testing.assert_array_equal(np.sign(cols), -variant[film_b])
    assert set(np.unique(variant[film_b])) == {-1, 1}
    assert np.all(variant[~film_b] == 0)
    # the film is the upper part
    assert scan.positions[region == 1, 0].mean() < scan.positions[region == 0, 0].mean()
    # the nearest A of a film B is ~ ab_distance − shift away, the substrate B's four at ab_distance
    a_tree = cKDTree(scan.positions[scan.sublattice == 0])
    ab = scan.params["ab_distance_px"]
    inner = scan.inside(15)
    assert np.median(a_tree.query(scan.positions[film_b & inner])[0]) == pytest.approx(ab - scan.params["shift_px"], abs=0.3)
    assert np.median(a_tree.query(scan.positions[(region == 0) & (scan.sublattice == 1) & inner])[0]) == pytest.approx(ab, abs=0.2)


def test_perovskite_image_shows_the_b_displacement(ci_scans):
    scan = ci_scans["displaced_perovskite"]
    film_b = (scan.extra["region"] == 1) & (scan.sublattice == 1) & scan.inside(8)
    ideal = scan.positions[film_b] - scan.displacement_px[film_b]
    mirrored = 2 * ideal - scan.positions[film_b]  # the A background is symmetric about the ideal site
    smooth = ndimage.gaussian_filter(scan.image.astype(np.float64), 1.0)
    contrast = sample(smooth, scan.positions[film_b]) - sample(smooth, mirrored)
    assert np.mean(contrast > 0) > 0.95 and contrast.mean() > 0.15
    # with the A columns and the tail off, the B centroids are the recorded positions, ≥ 2 px off centre
    b_only = lattices.displaced_perovskite(seed=0, noise=False, a_film_ratio=0.0, a_substrate_ratio=0.0, tail_fraction=0.0, background=0.0)
    b_tree = cKDTree(b_only.positions[b_only.sublattice == 1])
    alone = b_tree.query(b_only.positions, k=2)[0][:, 1] > 10.0  # not at a head-to-head domain wall
    keep = (b_only.sublattice == 1) & b_only.inside(8) & alone
    found = centroids(b_only.image, b_only.positions[keep], radius=5)
    np.testing.assert_allclose(found, b_only.positions[keep], atol=0.15)
    film = keep & (b_only.extra["region"] == 1)
    off_centre = np.linalg.norm(found[film[keep]] - (b_only.positions - b_only.displacement_px)[film], axis=1)
    assert off_centre.min() > 1.8


def test_perovskite_columns_overlap():
    """σ 2.2–2.6 px at 6.3 px: the saddle between a displaced B and its A is well above the background."""
    scan = lattices.displaced_perovskite(seed=0, noise=False)
    film_b = (scan.extra["region"] == 1) & (scan.sublattice == 1) & scan.inside(10)
    a_positions = scan.positions[scan.sublattice == 0]
    _, nearest = cKDTree(a_positions).query(scan.positions[film_b])
    midpoint = 0.5 * (scan.positions[film_b] + a_positions[nearest])
    floor = np.quantile(scan.image, 0.01)
    b_peak = sample(scan.image, scan.positions[film_b]) - floor
    saddle = sample(scan.image, midpoint) - floor
    assert np.median(saddle / b_peak) > 0.5


# ----------------------------------------------------------------------------------------------
# Dumbbells


def test_dumbbell_pairs_partially_overlap():
    scan = lattices.dumbbells(seed=0, noise=False)
    heavy = scan.positions[scan.sublattice == 0]
    light = scan.positions[scan.sublattice == 1]
    distance, index = cKDTree(light).query(heavy)
    sep = scan.params["separation_px"]
    assert np.median(distance) == pytest.approx(sep, abs=0.1)
    assert 2.5 <= sep / scan.params["sigma_px"] <= 3.5
    keep = (scan.inside(5)[scan.sublattice == 0]) & (distance < sep + 0.5)
    mid = 0.5 * (heavy[keep] + light[index[keep]])
    floor = scan.params["pedestal"]
    at_mid = sample(scan.image, mid) - floor
    at_light = sample(scan.image, light[index[keep]]) - floor
    at_heavy = sample(scan.image, heavy[keep]) - floor
    assert np.all(at_mid < at_light) and np.all(at_light < at_heavy)  # resolved, unequal
    assert np.median(at_mid / at_heavy) > 0.25  # but overlapping
    # same polarity everywhere: the heavy member is above (smaller row, before the small rotation)
    axis = light[index[keep]] - heavy[keep]
    assert np.all(axis[:, 0] > 0)


# ----------------------------------------------------------------------------------------------
# Scan distortion


def test_line_jitter_moves_each_row_by_the_recorded_shift():
    distorted = lattices.scan_distorted(seed=3, noise=False)
    straight = lattices.scan_distorted(seed=3, noise=False, line_jitter_px=0.0, wobble_px=0.0, shear=0.0)
    recorded = distorted.extra["row_shift_px"]
    assert recorded.shape == (256,)
    np.testing.assert_array_equal(straight.extra["row_shift_px"], 0.0)
    cols = np.arange(256.0)
    trial = np.linspace(-4, 4, 401)
    inner = slice(24, -24)
    shifted = np.stack([np.interp(cols[None, inner] - trial[:, None], cols, row) for row in straight.image])  # (H, S, W')
    errors = ((shifted - distorted.image[:, None, inner]) ** 2).sum(axis=2)
    measured = trial[np.argmin(errors, axis=1)]
    assert np.sqrt(np.mean((measured - recorded) ** 2)) < 0.05
    assert np.std(np.diff(measured)) > 0.4  # row-to-row jitter (sd 0.4·√2 between rows)


def test_scan_distorted_positions_are_where_the_columns_appear():
    distorted = lattices.scan_distorted(seed=3, noise=False)
    straight = lattices.scan_distorted(seed=3, noise=False, line_jitter_px=0.0, wobble_px=0.0, shear=0.0)
    np.testing.assert_array_equal(distorted.positions[:, 0], straight.positions[:, 0])
    keep = distorted.inside(10) & straight.inside(10)
    moved = centroids(distorted.image, distorted.positions[keep], radius=4)[:, 1] - centroids(straight.image, straight.positions[keep], radius=4)[:, 1]
    recorded = distorted.positions[keep, 1] - straight.positions[keep, 1]
    assert recorded.std() > 0.5
    assert np.sqrt(np.mean((moved - recorded) ** 2)) < 0.15
    # the shift of the column's centre row alone is a worse truth (the column spans several rows)
    naive = distorted.extra["row_shift_px"][np.round(distorted.positions[keep, 0]).astype(int)]
    assert np.sqrt(np.mean((moved - naive) ** 2)) > 2 * np.sqrt(np.mean((moved - recorded) ** 2))
    # displacement_px is the scan-induced part: stretch along rows, row shifts along columns
    np.testing.assert_allclose(
        distorted.displacement_px[:, 1] - straight.displacement_px[:, 1], distorted.positions[:, 1] - straight.positions[:, 1], atol=1e-9
    )
    assert np.all(np.abs(distorted.displacement_px).sum(axis=1) > 0)


def test_scan_distorted_has_line_noise(ci_scans):
    scan = ci_scans["scan_distorted"]
    clean = lattices.scan_distorted(seed=0, noise=False)
    row_means = (scan.image - clean.image).mean(axis=1)
    expected_sd = np.sqrt(np.mean(clean.image) / scan.params["dose"] + scan.params["read_noise"] ** 2) / np.sqrt(256)
    assert row_means.std() > 5 * expected_sd  # rows carry their own offset and gain


# ----------------------------------------------------------------------------------------------
# ABF perovskite


def test_abf_oxygen_tilt_displacements(ci_scans):
    scan = ci_scans["abf_perovskite"]
    oxygen = scan.sublattice == 2
    norm = np.linalg.norm(scan.displacement_px, axis=1)
    np.testing.assert_allclose(norm[oxygen], scan.params["tilt_px"])
    np.testing.assert_array_equal(norm[~oxygen], 0.0)
    assert np.abs(scan.displacement_px[oxygen].mean(axis=0)).max() < 0.1  # alternating, no net shift
    # perpendicular to the B–O–B bond: along the line to the nearest B, no displacement
    b_tree = cKDTree(scan.positions[scan.sublattice == 1])
    ideal = scan.positions[oxygen] - scan.displacement_px[oxygen]
    _, nearest = b_tree.query(ideal)
    bond = scan.positions[scan.sublattice == 1][nearest] - ideal
    cosine = np.abs(np.sum(bond * scan.displacement_px[oxygen], axis=1)) / (np.linalg.norm(bond, axis=1) * norm[oxygen])
    assert np.median(cosine) < 0.1
    assert scan.vacancies.shape[0] > 0
    # rigid a0a0c- rotations: the four O around a B turn it one way, its neighbouring B's the other way
    b_ideal = scan.positions[scan.sublattice == 1] - scan.displacement_px[scan.sublattice == 1]
    b_inner = b_ideal[(b_ideal > 20).all(1) & (b_ideal < 235).all(1)]
    distance, around = cKDTree(ideal).query(b_inner, k=4)
    whole = distance[:, 3] < 0.6 * scan.params["cell_px"]  # no O vacancy around it
    arm = ideal[around[whole]] - b_inner[whole, None, :]
    push = scan.displacement_px[oxygen][around[whole]]
    sense = np.sign(arm[..., 0] * push[..., 1] - arm[..., 1] * push[..., 0])  # (B, 4)
    assert np.all(sense == sense[:, :1])
    b_tree_inner = cKDTree(b_inner[whole])
    pairs = b_tree_inner.query_pairs(1.05 * scan.params["cell_px"], output_type="ndarray")
    assert len(pairs) > 50 and np.all(sense[pairs[:, 0], 0] == -sense[pairs[:, 1], 0])
    # the image's dark O dips sit at the displaced positions
    clean = lattices.abf_perovskite(seed=0, noise=False, depth_a=0.0, depth_b=0.0, background=0.0)
    keep = (clean.sublattice == 2) & clean.inside(6)
    found = centroids(clean.image, clean.positions[keep], radius=2, dark=True)
    error_true = np.linalg.norm(found - clean.positions[keep], axis=1)
    error_ideal = np.linalg.norm(found - (clean.positions - clean.displacement_px)[keep], axis=1)
    assert np.median(error_true) < 0.15 and np.median(error_ideal) > 0.3


# ----------------------------------------------------------------------------------------------
# The rendering primitives


def test_render_profile_reproduces_gaussians_and_shifts_rows():
    rng = np.random.default_rng(0)
    positions = rng.uniform(-3, 50, size=(40, 2))
    amplitudes = rng.uniform(0.5, 1.5, size=40)
    sigma = 1.7
    gaussian = lambda dr, dc: np.exp(-(dr * dr + dc * dc) / (2 * sigma**2))
    ours, shift = render_profile((48, 52), positions, amplitudes, gaussian, 4 * sigma, max_values=5000)
    np.testing.assert_allclose(ours, render_gaussians((48, 52), positions, amplitudes, sigma), atol=1e-12)
    np.testing.assert_array_equal(shift, 0.0)
    for value in (0.7, 6.3):  # the window follows the shift (a shear can move columns by several px)
        constant = np.full(48, value)
        moved, shift = render_profile((48, 52), positions, amplitudes, gaussian, 4 * sigma, row_shift=constant)
        np.testing.assert_allclose(shift, value)
        np.testing.assert_allclose(moved, render_gaussians((48, 52), positions + [0.0, value], amplitudes, sigma), atol=1e-12)


@pytest.mark.parametrize(
    "profile, half_width",
    [
        (lattices.moffat_profile(2.0, 2.0), 2.0),
        (lattices.moffat_profile(1.5, 1.0), 1.5),
        (lattices.airy_profile(1.5), 1.5 * np.sqrt(2 * np.log(2))),
        (lattices.two_gaussian_profile(1.8, 5.0, 0.2), None),
    ],
)
def test_profiles_peak_at_one_with_the_stated_half_width(profile, half_width):
    assert profile(np.zeros(1), np.zeros(1))[0] == pytest.approx(1.0)
    if half_width is not None:
        assert profile(np.zeros(1), np.array([half_width]))[0] == pytest.approx(0.5, abs=0.01)
        assert profile(np.array([half_width]), np.zeros(1))[0] == pytest.approx(0.5, abs=0.01)


def test_dip_profile_has_a_bright_halo():
    profile = lattices.dip_with_halo_profile(1.5, 2.55, 0.3)
    d = np.linspace(0, 8, 200)
    values = profile(np.zeros_like(d), d)
    assert values[0] == pytest.approx(-1.0)
    assert 0.01 < values.max() < 0.15


# ----------------------------------------------------------------------------------------------
# Cached abTEM simulations


def test_load_abtem_without_the_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="simulate_abtem"):
        load_abtem("abtem_nothing", directory=tmp_path)


@pytest.mark.parametrize("name", ABTEM)
def test_cached_abtem_simulations_load(name):
    scan = GENERATORS[name]()
    n = len(scan.positions)
    assert scan.image.ndim == 2 and scan.image.dtype == np.float32 and np.isfinite(scan.image).all()
    assert scan.positions.shape == (n, 2) and scan.sublattice.shape == (n,) and scan.species.shape == (n,)
    assert scan.displacement_px.shape == (n, 2)
    json.dumps(scan.params)
    sign = -1.0 if scan.invert else 1.0
    smooth = sign * ndimage.gaussian_filter(scan.image.astype(np.float64), 1.0)
    heaviest = scan.inside(2) & (scan.sublattice == 0)
    rng = np.random.default_rng(0)
    random = rng.uniform(2, np.array(scan.image.shape) - 3, size=(1000, 2))
    assert np.median(sample(smooth, scan.positions[heaviest])) > np.quantile(sample(smooth, random), 0.8)
    noisy = GENERATORS[name](seed=1, dose=50.0)
    assert np.abs(noisy.image - scan.image).mean() > 0


@pytest.mark.skipif("abtem_mos2" not in GENERATORS, reason="benchmarks/data/abtem/mos2.npz is not cached")
def test_abtem_mos2_substitutions_are_brighter_s2_columns():
    scan = load_abtem("mos2")
    assert load_abtem("abtem_mos2").positions.shape == scan.positions.shape
    inside = scan.inside(2)
    values = sample(scan.image, scan.positions)
    mo, s2, sse = (values[inside & (scan.species == k)] for k in range(3))
    assert len(sse) >= 1 and np.all(scan.sublattice[scan.species == 2] == 1)
    assert mo.mean() > s2.mean() and sse.min() > s2.max()
    np.testing.assert_array_equal(scan.displacement_px, 0.0)
    nn = np.median(cKDTree(scan.positions[scan.sublattice == 1]).query(scan.positions[scan.sublattice == 0])[0])
    assert nn * scan.params["pixel_size_A"][0] == pytest.approx(3.19 / np.sqrt(3), rel=0.02)


@pytest.mark.skipif("abtem_perovskite" not in GENERATORS, reason="benchmarks/data/abtem/perovskite.npz is not cached")
@pytest.mark.parametrize("name", ["perovskite", "perovskite_abf"])
def test_abtem_perovskite_shows_its_b_displacement(name):
    scan = load_abtem(name)
    moved = np.linalg.norm(scan.displacement_px, axis=1) > 0
    assert moved.any() and np.all(scan.sublattice[moved] == 1)
    shift_px = np.linalg.norm(scan.displacement_px[moved] * scan.params["pixel_size_A"], axis=1)
    np.testing.assert_allclose(shift_px, scan.params["b_shift_A"])
    ideal = scan.positions - scan.displacement_px
    width = scan.image.shape[1]
    b = scan.sublattice == 1
    assert np.all(ideal[moved, 1] < width / 2) and np.all(ideal[b & ~moved & scan.inside(), 1] > width / 2 - 2)
    keep = moved & scan.inside(4)
    sign = -1.0 if scan.invert else 1.0
    contrast = sign * (sample(scan.image, scan.positions[keep]) - sample(scan.image, 2 * ideal[keep] - scan.positions[keep]))
    assert np.all(contrast > 0)
