"""Scores for unsupervised classes and angles against a ground truth (numpy only, no sklearn)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import ParameterError

__all__ = ["adjusted_rand_index", "circular_correlation", "circular_mean", "contingency_table", "matched_accuracy"]


def contingency_table(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    """Counts of co-occurring labels.

    Parameters
    ----------
    labels_true, labels_pred : (N,) array_like
        Any integer or string labels (flattened; equal lengths).

    Returns
    -------
    (n_true_values, n_pred_values) int64 ndarray
        Rows follow the sorted distinct true labels, columns the sorted distinct predicted ones.

    Raises
    ------
    ParameterError
        The two label arrays differ in length.
    """
    labels_true, labels_pred = _check_pair(labels_true, labels_pred)
    _, true_index = np.unique(labels_true, return_inverse=True)
    _, pred_index = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((true_index.max(initial=-1) + 1, pred_index.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (true_index, pred_index), 1)
    return table


def matched_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Fraction correct after the best one-to-one matching of predicted to true labels (Hungarian).

    Parameters
    ----------
    labels_true, labels_pred : (N,) array_like
        Class labels and cluster labels (any integers or strings; the names need not agree).

    Returns
    -------
    float
        In [0, 1]. Predicted clusters left unmatched (more clusters than classes) count as wrong;
        NaN for empty labels.

    Examples
    --------
    >>> from microvae.metrics import matched_accuracy
    >>> matched_accuracy([0, 0, 1, 1], [1, 1, 0, 0])   # the names do not matter
    1.0
    >>> matched_accuracy([0, 0, 1, 1], [0, 1, 1, 1])
    0.75
    """
    table = contingency_table(labels_true, labels_pred)
    if table.size == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two partitions.

    Parameters
    ----------
    labels_true, labels_pred : (N,) array_like
        Two labellings of the same items.

    Returns
    -------
    float
        1 for identical partitions, ≈ 0 for random ones (1 when fewer than 2 items, or when both
        partitions are trivial).
    """
    table = contingency_table(labels_true, labels_pred)
    n = table.sum()
    if n < 2:
        return 1.0

    def pairs(counts: np.ndarray) -> float:
        counts = counts.astype(np.float64)
        return float((counts * (counts - 1) / 2).sum())

    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))


def circular_mean(angles_rad: np.ndarray) -> float:
    """Mean direction of angles.

    Parameters
    ----------
    angles_rad : array_like
        Angles (rad).

    Returns
    -------
    float
        Their mean direction (rad, in [−π, π]).
    """
    angles = np.asarray(angles_rad, dtype=np.float64)
    return float(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()))


def circular_correlation(a_rad: np.ndarray, b_rad: np.ndarray) -> float:
    """Circular correlation coefficient (Jammalamadaka & SenGupta) of two angle samples.

    ``Σ sin(a - ā) sin(b - b̄) / sqrt(Σ sin²(a - ā) · Σ sin²(b - b̄))`` with ā, b̄ the circular means.

    Parameters
    ----------
    a_rad, b_rad : (N,) array_like
        Paired angles (rad).

    Returns
    -------
    float
        In [-1, 1], NaN when either sample has no spread. Invariant to a constant offset of either
        sample; the sign says whether b turns with or against a.
    """
    a, b = _check_pair(np.asarray(a_rad, np.float64), np.asarray(b_rad, np.float64))
    sa, sb = np.sin(a - circular_mean(a)), np.sin(b - circular_mean(b))
    denominator = np.sqrt((sa**2).sum() * (sb**2).sum())
    return float((sa * sb).sum() / denominator) if denominator > 0 else float("nan")


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ParameterError(f"need two samples of equal length, got {a.shape[0]} and {b.shape[0]}")
    return a, b
