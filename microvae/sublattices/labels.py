"""Sublattice labels: from the lattice's translations, which link the columns of one site of the
unit cell (:func:`label_columns`), or, without a lattice, from a Gaussian mixture of the fitted
heights (:func:`label_sublattices`).

Conventions (those of :mod:`microvae.sublattices`): (H, W) float images scaled as
:func:`microvae.atoms.prepare_image` scales them, positions (row, col) in pixels with pixel
(r, c) centred at (r, c), widths σ in pixels, covariances [c_rr, c_rc, c_cc] in px².
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EDGE_FRACTION",
    "LINK_HEIGHT_STEP",
    "LINK_TOLERANCE",
    "MAX_SUBLATTICES",
    "MIN_SEPARATION",
    "MIN_SUBLATTICE_FRACTION",
    "MIN_TRANSLATION_SHARE",
    "MIXTURE_SAMPLE",
    "TRANSLATION_SAMPLE",
    "gaussian_mixture_1d",
    "label_by_translation",
    "label_columns",
    "label_sublattices",
    "lattice_translations",
]

MAX_SUBLATTICES = 3
MIXTURE_SAMPLE = 4000  # heights the mixture is fitted on (an even sample)
MIN_SUBLATTICE_FRACTION = 0.08  # a sublattice holds at least this share of the columns
MIN_SEPARATION = 2.5  # adjacent sublattices' mean log heights differ by this many pooled sd


def label_sublattices(intensity: np.ndarray) -> np.ndarray:
    """Sublattice of each column from its fitted height: 0 the brightest.

    A Gaussian mixture of 1 … ``MAX_SUBLATTICES`` components on log height
    (:func:`gaussian_mixture_1d`), chosen by BIC, kept only while every component holds at least
    ``MIN_SUBLATTICE_FRACTION`` of the columns and adjacent means are ``MIN_SEPARATION`` pooled sd
    apart (a real second sublattice, not the tail of one population: thickness, dopants and noise
    spread one sublattice's heights too). Which search found a column does not enter: a dim
    column of a well-separated lattice is found by the first search.

    Parameters
    ----------
    intensity : ndarray
        (N,) fitted heights of the columns.

    Returns
    -------
    ndarray
        (N,) int64 sublattice of each column, 0 the brightest; all 0 with fewer than 20 columns.
    """
    values = np.log(np.clip(np.asarray(intensity, dtype=np.float64), 1e-6, None))
    labels = np.zeros(len(values), np.int64)
    if len(values) < 20:
        return labels
    sample = values[:: max(1, len(values) // MIXTURE_SAMPLE)]  # fitted on an even sample, applied to all
    best_bic = np.inf
    for components in range(1, MAX_SUBLATTICES + 1):
        means, sds, weights, _, log_likelihood = gaussian_mixture_1d(sample, components)
        if components > 1:
            pooled = np.sqrt(0.5 * (sds[:-1] ** 2 + sds[1:] ** 2))
            if weights.min() < MIN_SUBLATTICE_FRACTION or ((means[:-1] - means[1:]) < MIN_SEPARATION * pooled).any():
                continue
        bic = -2 * log_likelihood + (3 * components - 1) * np.log(len(sample))
        if bic < best_bic:
            log_density = -0.5 * ((values[:, None] - means) / sds) ** 2 - np.log(sds) + np.log(weights)
            best_bic, labels = bic, log_density.argmax(axis=1).astype(np.int64)
    return labels


def gaussian_mixture_1d(values: np.ndarray, components: int, iterations: int = 100) -> tuple[np.ndarray, ...]:
    """EM fit of a 1D Gaussian mixture, started from quantiles; components ordered by decreasing mean.

    numpy only (deterministic, and no second OpenMP runtime beside torch's).

    Parameters
    ----------
    values : ndarray
        (N,) the values to fit.
    components : int
        K, the number of Gaussian components.
    iterations : int, default 100
        The most EM iterations (fewer once the log-likelihood settles).

    Returns
    -------
    means : ndarray
        (K,) float64, decreasing.
    sds : ndarray
        (K,) float64.
    weights : ndarray
        (K,) float64.
    responsibilities : ndarray
        (N, K) float64.
    log_likelihood : float
        The log-likelihood of the fit.
    """
    values = np.asarray(values, dtype=np.float64)
    spread = max(float(values.std()), 1e-6)
    means = np.quantile(values, (np.arange(components) + 0.5) / components)[::-1].copy()
    sds = np.full(components, spread / components)
    weights = np.full(components, 1.0 / components)
    previous = -np.inf
    for _ in range(iterations):
        log_density = -0.5 * ((values[:, None] - means) / sds) ** 2 - np.log(sds * np.sqrt(2 * np.pi)) + np.log(weights)
        top = log_density.max(axis=1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(log_density - top).sum(axis=1))
        responsibilities = np.exp(log_density - total[:, None])
        log_likelihood = float(total.sum())
        mass = responsibilities.sum(axis=0) + 1e-12
        weights = mass / len(values)
        means = (responsibilities * values[:, None]).sum(axis=0) / mass
        sds = np.sqrt((responsibilities * (values[:, None] - means) ** 2).sum(axis=0) / mass) + 1e-3 * spread
        if log_likelihood - previous < 1e-8 * abs(log_likelihood):
            break
        previous = log_likelihood
    order = np.argsort(means)[::-1]
    return means[order], sds[order], weights[order], responsibilities[:, order], log_likelihood


LINK_HEIGHT_STEP = 0.3  # log-height step a link may always take (a thickness wedge changes neighbours little)
LINK_TOLERANCE = 0.45  # × nearest-neighbour distance: how far a translated column may miss its partner
TRANSLATION_SAMPLE = 3000  # columns whose neighbours propose, and test, the translations
EDGE_FRACTION = 0.5  # × nearest-neighbour distance: two columns this close to the scan's edge are not linked
MIN_TRANSLATION_SHARE = 0.75  # a lattice translation maps at least this share of the columns onto columns


def lattice_translations(positions: np.ndarray, shape: tuple[int, int], nearest_px: float, intensity: np.ndarray | None = None, tree=None) -> np.ndarray | None:
    """The two shortest non-collinear lattice translations.

    A translation of the crystal carries (almost) every column onto another column of the same
    kind; a vector between two sublattices carries only one sublattice's columns onto the other.
    Candidates are the most frequent difference vectors between each column and its 12 nearest
    neighbours (binned at 0.15 × ``nearest_px``, then averaged); a candidate carries the point
    lattice when at least ``MIN_TRANSLATION_SHARE`` of the columns whose image under it lies inside
    the scan find a column within 0.25 × ``nearest_px`` of it. Given ``intensity`` (N,) fitted
    heights, it must also carry each column onto one of about the same height: the median
    |log(height ratio)| of its pairs is at most max(2 m, m + 0.1), m the smallest over the
    candidates (Sr and Ti–O columns alternating along a row form one point lattice, not one
    crystal lattice; a slow thickness gradient changes neighbours' heights only a little).

    Parameters
    ----------
    positions : ndarray
        (N, 2) (row, col) of the columns, px.
    shape : tuple of int
        (H, W) of the scan, px.
    nearest_px : float
        The lattice's nearest-neighbour distance, px.
    intensity : ndarray, optional
        (N,) fitted heights; given, a translation must carry columns onto columns of about the
        same height.
    tree : scipy.spatial.cKDTree, optional
        A tree of ``positions``, when already built.

    Returns
    -------
    ndarray or None
        (2, 2) float64, one translation (row, col) px per row, shortest first; None with fewer
        than 12 columns or without two non-collinear translations.
    """
    from scipy.spatial import cKDTree

    count = len(positions)
    if count < 12:
        return None
    tree = tree if tree is not None else cKDTree(positions)
    probes = np.arange(0, count, max(1, count // TRANSLATION_SAMPLE))  # an even sample of the columns
    _, neighbours = tree.query(positions[probes], k=min(13, count))
    vectors = (positions[neighbours[:, 1:]] - positions[probes][:, None, :]).reshape(-1, 2)
    step = 0.15 * nearest_px
    keys = np.round(vectors / step).astype(np.int64)
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    frequent = np.nonzero(counts >= 0.2 * len(probes))[0]
    height, width = shape
    tolerance = 0.25 * nearest_px
    log_height = None if intensity is None else np.log(np.clip(np.asarray(intensity, dtype=np.float64), 1e-6, None))
    candidates, mismatch = [], []
    for index in frequent[np.argsort(-counts[frequent])]:
        vector = vectors[inverse == index].mean(axis=0)
        if vector[0] < 0 or (vector[0] == 0 and vector[1] < 0):
            continue  # one of ±v is enough
        if any(np.linalg.norm(vector - t) < tolerance for t in candidates):
            continue
        target = positions[probes] + vector
        inside = (target[:, 0] >= 0) & (target[:, 0] <= height - 1) & (target[:, 1] >= 0) & (target[:, 1] <= width - 1)
        if inside.sum() < 10:
            continue
        distance, partner = tree.query(target[inside], distance_upper_bound=tolerance)
        hit = distance < tolerance
        if hit.mean() >= MIN_TRANSLATION_SHARE:
            candidates.append(vector)
            origin = probes[np.nonzero(inside)[0][hit]]
            mismatch.append(0.0 if log_height is None else float(np.median(np.abs(log_height[partner[hit]] - log_height[origin]))))
    if not candidates:
        return None
    smallest = min(mismatch)
    translations = [t for t, m in zip(candidates, mismatch) if m <= max(2 * smallest, smallest + 0.1)]
    translations.sort(key=np.linalg.norm)
    if len(translations) < 2:
        return None
    first = translations[0]
    for second in translations[1:]:
        if abs(first[0] * second[1] - first[1] * second[0]) > 0.3 * np.linalg.norm(first) * np.linalg.norm(second):
            return np.stack([first, second])
    return None


def label_by_translation(
    positions: np.ndarray, intensity: np.ndarray, translations: np.ndarray, nearest_px: float, tree=None, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sublattice of each column from the lattice's geometry, 0 the brightest, and whether the
    column belongs to one of the large sets or sits on their lattice.

    Columns are linked to the columns found within ``LINK_TOLERANCE`` × ``nearest_px`` of their
    images under each translation (loose enough that a displaced domain stays linked to the
    undisplaced one) when their log heights differ by at most max(``LINK_HEIGHT_STEP``, 3 × the
    median step over all links), so that one poorly fitted column does not join two sites; two
    columns both within ``EDGE_FRACTION`` × ``nearest_px`` of the scan's edge (given ``shape``),
    whose fits see only part of each column and take heights between two sites', are not linked
    (a row of them along the edge would otherwise join two sites). Each connected
    set is one sublattice (the columns of one site of the unit
    cell). Sets holding under 5 % of the columns (broken off by vacancies, the scan's edge or a
    stray detection) join the large set whose median log height is closest to theirs. Sets are
    numbered by decreasing median height.

    Parameters
    ----------
    positions : ndarray
        (N, 2) (row, col) of the columns, px.
    intensity : ndarray
        (N,) fitted heights.
    translations : ndarray
        (T, 2) lattice translations (row, col) px (:func:`lattice_translations`).
    nearest_px : float
        The lattice's nearest-neighbour distance, px.
    tree : scipy.spatial.cKDTree, optional
        A tree of ``positions``, when already built.
    shape : tuple of int, optional
        (H, W) of the scan, px: two columns at its edge are not linked.

    Returns
    -------
    labels : ndarray
        (N,) int64 sublattice of each column, 0 the brightest (all 0 without a large set).
    linked : ndarray
        (N,) bool: whether the column belongs to one of the large sets or sits on their lattice
        (≥ 2 of its translation partners, whatever their heights, in large sets: a dopant does, a
        misfit between columns does not).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    count = len(positions)
    tree = tree if tree is not None else cKDTree(positions)
    rows, cols = [], []
    for vector in translations:
        distance, index = tree.query(positions + vector, distance_upper_bound=LINK_TOLERANCE * nearest_px, workers=-1)
        linked = distance < np.inf
        rows.append(np.nonzero(linked)[0])
        cols.append(index[linked])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    every_row, every_col = rows, cols  # the geometric links, whatever the heights
    log_height = np.log(np.clip(intensity, 1e-6, None))
    step = np.abs(log_height[rows] - log_height[cols])
    alike = step <= max(LINK_HEIGHT_STEP, 3 * float(np.median(step))) if len(step) else step > 0
    if shape is not None:  # a column cut by the scan's edge is fitted to part of itself: its height joins no site
        margin = EDGE_FRACTION * nearest_px
        at_edge = (
            (positions[:, 0] < margin) | (positions[:, 0] > shape[0] - 1 - margin) | (positions[:, 1] < margin) | (positions[:, 1] > shape[1] - 1 - margin)
        )
        alike &= ~(at_edge[rows] & at_edge[cols])
    rows, cols = rows[alike], cols[alike]  # one bad fit at the scan's edge must not join two sites
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    in_set = sizes[component] >= 0.05 * count
    # a column of another height on a site of a large set (a dopant) has ≥ 2 lattice partners in large sets
    partners = np.bincount(every_row, weights=in_set[every_col], minlength=count) + np.bincount(every_col, weights=in_set[every_row], minlength=count)
    linked_any = in_set | (partners >= 2)
    large = np.nonzero(sizes >= 0.05 * count)[0]
    if len(large) == 0:
        return np.zeros(count, np.int64), linked_any
    medians = np.array([np.median(log_height[component == c]) for c in large])
    for small in np.nonzero(sizes < 0.05 * count)[0]:
        members = component == small
        component[members] = large[np.argmin(np.abs(medians - np.median(log_height[members])))]
    order = large[np.argsort(-medians)]
    rank = np.full(component.max() + 1, -1)
    rank[order] = np.arange(len(order))
    return rank[component].astype(np.int64), linked_any


def label_columns(positions: np.ndarray, intensity: np.ndarray, shape: tuple[int, int], nearest_px: float, tree=None) -> tuple[np.ndarray, np.ndarray]:
    """Sublattice of every column, 0 the brightest: position within the lattice, then height.

    1. The lattice's translations, those that carry each column onto one of about its height
       (:func:`lattice_translations`).
    2. The sets of columns the translations link (:func:`label_by_translation`) are the sites of
       the unit cell: a site is labelled as a whole, so a brightness gradient across the scan
       does not flip columns between sublattices, and columns of one site that differ in height
       (dopants, thickness) stay one sublattice.
    Without two translations, the heights alone decide (:func:`label_sublattices`).

    Parameters
    ----------
    positions : ndarray
        (N, 2) (row, col) of the columns, px.
    intensity : ndarray
        (N,) fitted heights.
    shape : tuple of int
        (H, W) of the scan, px.
    nearest_px : float
        The lattice's nearest-neighbour distance, px.
    tree : scipy.spatial.cKDTree, optional
        A tree of ``positions``, when already built.

    Returns
    -------
    labels : ndarray
        (N,) int64, numbered by decreasing median height (all 0 with fewer than 20 columns).
    linked : ndarray
        (N,) bool: False for a column outside every large set of translation-linked columns (a
        stray detection, a periodic artefact at a few sites, or a column at a defect or the
        scan's edge); all True without a lattice.
    """
    count = len(positions)
    if count < 20:
        return np.zeros(count, np.int64), np.ones(count, bool)
    translations = lattice_translations(positions, shape, nearest_px, intensity, tree)
    if translations is None:
        return label_sublattices(intensity), np.ones(count, bool)
    return label_by_translation(positions, intensity, translations, nearest_px, tree, shape)
