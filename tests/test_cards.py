"""The cards generator: shapes, determinism, transform conventions, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from microvae.cards import CLASS_NAMES, ROTATION_PRESETS_DEG, canonical_shapes, make_cards, render_cards
from microvae.errors import ParameterError


def render_one(label: int, angle_rad=0.0, shear_rad=0.0, scale=1.0, shift_px=(0.0, 0.0), size=29):
    return render_cards(np.array([label]), np.array([angle_rad]), np.array([shear_rad]), np.array([scale]), np.array([shift_px], dtype=np.float64), size)[0, 0]


@pytest.mark.parametrize("size", [28, 48])
def test_shapes_ranges_and_balanced_classes(size):
    cards = make_cards(200, size=size, max_angle_deg=60, seed=0)
    assert cards.images.shape == (200, 1, size, size) and cards.images.dtype == np.float32
    assert 0.0 <= cards.images.min() and cards.images.max() <= 1.0
    assert cards.images.max() > 0.99  # solid ink inside the shapes
    assert np.bincount(cards.labels, minlength=4).tolist() == [50, 50, 50, 50]
    assert np.abs(cards.angle_rad).max() <= np.deg2rad(60)
    assert np.abs(cards.shear_rad).max() <= np.deg2rad(10)
    assert 1.0 <= cards.scale.min() and cards.scale.max() <= 1.2
    assert cards.shift_px.shape == (200, 2) and np.abs(cards.shift_px).max() <= 0.1 * size
    assert len(cards) == 200 and cards.class_names == CLASS_NAMES
    assert ROTATION_PRESETS_DEG == {"small": 12.0, "moderate": 60.0, "strong": 120.0}


def test_same_seed_same_cards_other_seed_other_cards():
    a, b, c = make_cards(50, seed=3), make_cards(50, seed=3), make_cards(50, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


def test_positive_angle_turns_the_shape_counter_clockwise_as_displayed():
    upright = render_one(1)  # spade: tip up, stem down
    turned = render_one(1, angle_rad=np.pi / 2)
    np.testing.assert_allclose(turned, np.rot90(upright, 1), atol=1e-5)  # np.rot90: counter-clockwise
    # the stem (bottom centre when upright) ends up on the right after a counter-clockwise quarter turn
    rows, cols = np.nonzero(turned > 0.5)
    assert cols.max() - 14 > 14 - cols.min()


def test_shift_is_in_pixels_row_then_column():
    still = render_one(2)
    moved = render_one(2, shift_px=(3.0, -2.0))
    np.testing.assert_allclose(moved, np.roll(np.roll(still, 3, axis=0), -2, axis=1), atol=1e-5)


def test_spades_are_upside_down_hearts_plus_a_small_stem():
    clubs, spades, diamonds, hearts = (shape[0].numpy() > 0.5 for shape in canonical_shapes())
    turned = spades[::-1]  # flipped top to bottom
    assert not (hearts & ~turned).any()  # the whole heart is in the turned spade
    stem = turned & ~hearts
    assert 0.02 * spades.sum() < stem.sum() < 0.06 * spades.sum()  # and only a small stem is not
    assert (clubs ^ hearts).sum() > 0.3 * hearts.sum()  # the other suits differ grossly
    assert (diamonds ^ hearts).sum() > 0.3 * hearts.sum()


def test_ten_thousand_cards_render_in_seconds():
    make_cards(10, seed=0)  # canonical shapes rasterised and cached
    started = time.perf_counter()
    make_cards(10_000, size=28, max_angle_deg=60, seed=0)
    assert time.perf_counter() - started < 6.0  # about 1 s on one core


@pytest.mark.parametrize(
    "bad", [dict(size=4), dict(max_angle_deg=200), dict(scale_range=(1.2, 1.0)), dict(max_shift_fraction=0.6), dict(supersample=0), dict(n=-1)]
)
def test_bad_parameters_raise_parameter_error(bad):
    kwargs = dict(n=10) | bad
    with pytest.raises(ParameterError):
        make_cards(**kwargs)
