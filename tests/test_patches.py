"""Patch geometry, FFT, normalisation and edge policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microvae.errors import InputError
from microvae.patches import PatchParams, fft_magnitude, grid_centres, hann_window, is_spectra, normalise

from .conftest import cut_all_patches


def delta_image(shape, position):
    image = np.zeros((1, *shape), np.float32)
    image[0, position[0], position[1]] = 1.0
    return image


@settings(max_examples=40, deadline=None)
@given(
    window=st.integers(4, 24),
    row=st.integers(0, 63),
    col=st.integers(0, 63),
    subpixel=st.booleans(),
    edge=st.sampled_from(["skip", "reflect"]),
)
def test_every_patch_maps_back_to_its_pixel(window, row, col, subpixel, edge):
    """A single bright pixel at (row, col) lands at (W//2, W//2) of the patch centred there."""
    image = delta_image((64, 64), (row, col))
    params = PatchParams(window=window, normalize="none", edge=edge, subpixel=subpixel)
    centres = np.array([[row, col], [10.0, 10.0]])
    try:
        patch_set = cut_all_patches([image], [centres], params)
    except InputError:
        return  # no patch fits: allowed only when both centres are dropped
    for patch, centre in zip(patch_set.patches, patch_set.coords):
        if tuple(centre) == (row, col):
            assert patch[0, window // 2, window // 2] == pytest.approx(1.0)
            assert patch.sum() == pytest.approx(1.0) or patch_set.edge_padded.any()
    half = window // 2
    fits = row - half >= 0 and col - half >= 0 and row + window - half <= 64 and col + window - half <= 64
    listed = any(tuple(c) == (row, col) for c in patch_set.coords)
    assert listed == (fits or edge == "reflect")


def test_subpixel_centring_is_exact_for_a_gaussian():
    rows, cols = np.mgrid[0:48, 0:48]
    centre = (20.3, 25.7)
    image = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * 2.0**2))[None].astype(np.float32)
    patch_set = cut_all_patches([image], [np.array([centre])], PatchParams(window=15, normalize="none"))
    patch = patch_set.patches[0, 0]
    offsets = np.arange(15) - 7
    com = np.array([(patch.sum(1) * offsets).sum(), (patch.sum(0) * offsets).sum()]) / patch.sum()
    np.testing.assert_allclose(com, 0.0, atol=0.05)


def test_grid_centres_cover_the_image():
    centres = grid_centres((100, 80), window=16, step=16)
    assert centres[:, 0].min() == 8 and centres[:, 1].min() == 8
    assert centres[:, 0].max() + 8 <= 100 and centres[:, 1].max() + 8 <= 80
    assert len(centres) == 6 * 5


def test_fft_magnitude_finds_the_lattice_frequency():
    window = 32
    cols = np.arange(window)
    period = 8.0
    stripes = np.tile(np.cos(2 * np.pi * cols / period), (window, 1))[None, None]
    magnitude = fft_magnitude(stripes.astype(np.float32))[0, 0]
    peak = np.unravel_index(np.argmax(magnitude), magnitude.shape)
    assert peak[0] == window // 2 and abs(peak[1] - window // 2) == window / period
    assert magnitude[window // 2, window // 2] < magnitude[peak] * 0.2  # mean removed


def test_fft_is_invariant_to_lattice_shift():
    window = 32
    cols = np.arange(64)
    image = np.tile(np.cos(2 * np.pi * cols / 8.0), (64, 1))[None].astype(np.float32)
    params = PatchParams(window=window, fft=True, normalize="none", subpixel=False)
    patch_set = cut_all_patches([image], [np.array([[32.0, 28.0], [32.0, 32.0]])], params)
    np.testing.assert_allclose(patch_set.patches[0], patch_set.patches[1], atol=1e-4)


@pytest.mark.parametrize("window", [16, 17])
def test_fft_patches_are_told_from_real_space_ones(window):
    """FFT magnitudes are centrosymmetric about (W//2, W//2) whatever a pointwise normalisation does;
    noisy real-space patches, and the same patches shifted by one pixel (control), are not."""
    rng = np.random.default_rng(window)
    real = rng.normal(size=(12, 2, window, window)).astype(np.float32)
    spectra = fft_magnitude(real)
    normalised, _, _ = normalise(spectra, np.zeros(12, np.int64), "global")
    assert is_spectra(spectra) and is_spectra(normalised)
    assert not is_spectra(real)
    assert not is_spectra(np.roll(spectra, 1, axis=-1))
    assert not is_spectra(np.ones((3, 1, window, window), np.float32))  # no contrast: nothing to tell


def test_hann_window_is_the_fft_patches_taper():
    window = hann_window(9)
    assert window.shape == (9, 9) and window[4, 4] == 1.0 and window[0].max() == 0.0 and window[:, -1].max() == 0.0
    np.testing.assert_allclose(window, window.T)


@pytest.mark.parametrize("method", ["image", "global", "patch", "zscore"])
def test_normalisation_is_recorded_and_invertible(method):
    rng = np.random.default_rng(0)
    patches = (rng.random((10, 1, 8, 8)) * 50 + 100).astype(np.float32)
    index = np.repeat([0, 1], 5)
    normalised, offset, scale = normalise(patches, index, method, percentiles=(0.0, 100.0))
    restored = normalised * scale[:, None, None, None] + offset[:, None, None, None]
    np.testing.assert_allclose(restored, patches, rtol=1e-5)
    if method in ("image", "global", "patch"):
        assert normalised.min() >= 0 and normalised.max() <= 1


def test_multichannel_patches_and_window_errors():
    rng = np.random.default_rng(1)
    image = rng.random((2, 40, 40)).astype(np.float32)
    patch_set = cut_all_patches([image], [np.array([[20.0, 20.0]])], PatchParams(window=8))
    assert patch_set.patches.shape == (1, 2, 8, 8)
    with pytest.raises(InputError, match="smaller than the 64×64 window"):
        cut_all_patches([image], [np.array([[20.0, 20.0]])], PatchParams(window=64))
    with pytest.raises(InputError, match="different channel counts"):
        cut_all_patches([image, image[:1]], [np.zeros((1, 2)), np.zeros((1, 2))], PatchParams(window=8))
