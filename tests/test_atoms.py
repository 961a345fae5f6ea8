"""Atom finding against the synthetic lattice's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from microvae.atoms import FindAtomsParams, estimate_lattice, find_atoms, prepare_image
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


def test_noise_only_image_finds_few_atoms():
    noise = np.random.default_rng(0).normal(size=(128, 128))
    table, estimate = find_atoms(noise)
    assert not estimate.periodic or len(table) < 50


def test_real_srtio3_both_sublattices(realdata):
    """Experimental ADF-STEM of SrTiO3 (atomap test data): bright Sr and dim Ti-O columns are both found."""
    from microvae.images import read_scans

    (scan,) = read_scans(realdata / "atomap_SrTiO3_ADF_cropped.hdf5")
    table, estimate = find_atoms(scan.data[0])
    assert estimate.periodic and 18 < estimate.spacing_px < 24  # Sr to Ti-O along a row: about 21 px
    assert 200 < len(table) < 280
    # two populations of intensity: the dimmest quarter is clearly weaker than the brightest quarter
    low, high = np.percentile(table.intensity, [25, 75])
    assert high > 1.5 * low


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
