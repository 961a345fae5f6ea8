"""Matched accuracy, adjusted Rand index and circular correlation against hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest

from microvae.errors import ParameterError
from microvae.metrics import adjusted_rand_index, circular_correlation, contingency_table, matched_accuracy


def test_matched_accuracy_ignores_label_names():
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert matched_accuracy(truth, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    assert matched_accuracy(truth, np.array([5, 5, 7, 7, 7, 9])) == pytest.approx(5 / 6)
    assert matched_accuracy(truth, np.zeros(6, int)) == pytest.approx(2 / 6)  # one cluster: one class right


def test_matched_accuracy_counts_extra_clusters_as_wrong():
    truth = np.array([0, 0, 0, 0])
    assert matched_accuracy(truth, np.array([0, 0, 1, 2])) == 0.5


def test_adjusted_rand_index_known_values():
    truth = np.array([0, 0, 0, 1, 1, 1])
    assert adjusted_rand_index(truth, np.array([1, 1, 1, 0, 0, 0])) == pytest.approx(1.0)
    # by hand: table [[2, 1], [0, 3]]; pair index 1 + 3 = 4; row pairs 3 + 3 = 6; column pairs
    # (sizes 2, 4) 1 + 6 = 7; expected 6 · 7 / 15 = 2.8; max (6 + 7) / 2 = 6.5 → 1.2 / 3.7
    assert adjusted_rand_index(truth, np.array([0, 0, 1, 1, 1, 1])) == pytest.approx(1.2 / 3.7)
    rng = np.random.default_rng(0)
    random_ari = adjusted_rand_index(rng.integers(0, 4, 5000), rng.integers(0, 4, 5000))
    assert abs(random_ari) < 0.01


def test_contingency_table_counts_pairs():
    table = contingency_table(np.array(["a", "a", "b"]), np.array([3, 4, 4]))
    np.testing.assert_array_equal(table, [[1, 1], [0, 1]])


def test_circular_correlation_sign_and_offset_invariance():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, 500)
    assert circular_correlation(a, a + 2.0) == pytest.approx(1.0)
    assert circular_correlation(a, -a + 0.5) == pytest.approx(-1.0)
    assert abs(circular_correlation(a, rng.uniform(-np.pi, np.pi, 500))) < 0.15
    wrapped = np.angle(np.exp(1j * (a + 3.0)))  # wrapping across ±π changes nothing
    assert circular_correlation(a, wrapped) == pytest.approx(1.0)


def test_unequal_lengths_raise():
    with pytest.raises(ParameterError):
        matched_accuracy(np.zeros(3), np.zeros(4))
