"""From a first search's columns to every sublattice, labelled and refined together
(:func:`complete_lattice`, what :func:`microvae.atoms.find_atoms` calls).

Conventions (those of :mod:`microvae.sublattices`): (H, W) float images scaled as
:func:`microvae.atoms.prepare_image` scales them, positions (row, col) in pixels with pixel
(r, c) centred at (r, c), widths σ in pixels, covariances [c_rr, c_rc, c_cc] in px².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .joint import refine_jointly, sublattice_profiles, sublattice_shapes
from .labels import label_columns
from .models import equivalent_sigma, isotropic_covariance, nearest_columns
from .search import find_dim_columns, worth_searching

__all__ = [
    "CROWDED_DISTANCE",
    "CompletedLattice",
    "DUPLICATE_DISTANCE",
    "PROFILE_TOLERANCE",
    "PROFILE_ROUNDS",
    "SHAPE_ROUNDS",
    "complete_lattice",
]

CROWDED_DISTANCE = 0.6  # × median nearest-neighbour distance: a new column this close to another and on no site set is dropped
DUPLICATE_DISTANCE = 0.5  # × median nearest-neighbour distance: two columns closer are one
PROFILE_TOLERANCE = 0.01  # the profiles stand when no sample moved by more than this (fraction of the peak)
SHAPE_ROUNDS = 5  # alternations of the sublattices' shapes and the positions (each shape is read with its neighbours' current shapes; they converge by about 1 % of σ² a round)
PROFILE_ROUNDS = 3  # the most such rounds once measured profiles are in use (the shapes then stand; each round may drop crowded new columns)


@dataclass
class CompletedLattice:
    """Every column after the second search and the joint refinement (see :func:`complete_lattice`).

    Attributes
    ----------
    positions : ndarray
        (N, 2) float64 (row, col), px.
    amplitudes : ndarray
        (N,) float64 fitted heights above the local background.
    sigma_px : ndarray
        (N,) float64 the fixed width σ of each column's sublattice, px.
    sublattice : ndarray
        (N,) int64 sublattice label, 0 = brightest.
    second_search : ndarray
        (N,) bool, True for columns found in the residual.
    refitted : ndarray
        (N,) bool, True where the joint refinement moved the column.
    nearest_neighbour_px : float
        Median nearest-neighbour distance, px (NaN with fewer than two columns).
    source : ndarray
        (N,) index of the input column each came from, −1 for the second search's.
    """

    positions: np.ndarray
    amplitudes: np.ndarray
    sigma_px: np.ndarray
    sublattice: np.ndarray
    second_search: np.ndarray
    refitted: np.ndarray
    nearest_neighbour_px: float
    source: np.ndarray


def complete_lattice(
    image: np.ndarray,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    sigma_px: np.ndarray,
    filter_sigma_px: float,
    typical_response: float,
    noise: float,
    joint: bool = True,
    search: bool = True,
) -> CompletedLattice:
    """From a first search's fitted columns to every sublattice, labelled and refined together.

    1. :func:`find_dim_columns` in the residual (``search``; on scans above ``PROBE_SIZE``² only
       when it finds columns on the central crop); new columns start at the residual's peak with
       the first search's width.
    2. :func:`refine_jointly` with one width, two rounds (``joint``, when the second search found
       columns): the heights the labels read.
    3. :func:`label_columns` (position within the lattice, then height); columns of the second
       search outside every large set of translation-linked columns are dropped.
    4. :func:`sublattice_shapes` (one elliptical Gaussian per sublattice, neighbours subtracted)
       and :func:`sublattice_profiles` (one measured radial profile per sublattice, for the
       neighbours' models, where the columns are not Gaussians), then :func:`refine_jointly` with
       those shapes, three rounds (``joint``); then the shapes and profiles are read again from
       the refined positions, and the positions refined again with them only when the shapes
       moved by 2 % of their width or more, or a profile by ``PROFILE_TOLERANCE`` of the peak (up
       to ``SHAPE_ROUNDS`` times). Once a measured profile is in use the shapes are no longer
       read: the profile is read in its shape's units (Mahalanobis radius), so the two traded
       scale from round to round (on the dumbbells the shapes wandered by ±6 % over eight rounds,
       and the bias with them); the profile alone settles. Gaussian shapes converge by about 1 %
       of σ² a round (the displaced perovskite), and a neighbour's shape 2 % too small biases a
       displaced column by +0.05 px: hence five rounds (``SHAPE_ROUNDS``), and three
       (``PROFILE_ROUNDS``) where profiles are in use (more let the crowded-column rule below
       take the oxygen columns of the real SrTiO₃ ABF scan). Where measured profiles are in use, a new column that, so
       refined, lies on no site set and within ``CROWDED_DISTANCE`` × the nearest-neighbour
       distance of another is dropped: a leftover of that column's tail, which the Gaussian model
       of the first search left in the residual (with Gaussian neighbour models it merges into
       the column and goes as a duplicate, step 5).
    5. Of two columns closer than ``DUPLICATE_DISTANCE`` × the median nearest-neighbour
       distance the shorter is dropped (two fits on one column). Where the second search added
       columns, they are labelled again with their refined heights; otherwise the labels of step 3
       stand (the refinement moves columns by fractions of a pixel, not between sites).

    Parameters
    ----------
    image : ndarray
        (H, W) image scaled as :func:`microvae.atoms.prepare_image` scales it.
    positions : ndarray
        (N, 2) (row, col) of the first search's fitted columns, px.
    amplitudes : ndarray
        (N,) their fitted heights above the local background.
    sigma_px : ndarray
        (N,) their fitted widths σ, px (or a scalar).
    filter_sigma_px, typical_response, noise : float
        As :func:`find_dim_columns` takes them.
    joint : bool, default True
        Refine the columns jointly (steps 2 and 4).
    search : bool, default True
        Search the residual for columns the first search passed over (step 1).

    Returns
    -------
    CompletedLattice
        Every column kept, labelled and refined; with at most one column, as given (sublattice 0,
        ``nearest_neighbour_px`` NaN).
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    widths = np.broadcast_to(np.asarray(sigma_px, dtype=np.float64), (len(positions),)).copy()
    second = np.zeros(len(positions), bool)
    source = np.arange(len(positions))
    if search and len(positions) and worth_searching(image, positions, amplitudes, widths, filter_sigma_px, typical_response, noise):
        peaks, heights = find_dim_columns(image, positions, amplitudes, widths, filter_sigma_px, typical_response, noise)
        positions = np.concatenate([positions, peaks.astype(np.float64)])
        amplitudes = np.concatenate([amplitudes, np.clip(heights, 1e-3, None)])
        widths = np.concatenate([widths, np.full(len(peaks), float(np.median(widths)) if len(widths) else filter_sigma_px)])
        second = np.concatenate([second, np.ones(len(peaks), bool)])
        source = np.concatenate([source, np.full(len(peaks), -1)])
    if len(positions) <= 1:
        return CompletedLattice(positions, amplitudes, widths, np.zeros(len(positions), np.int64), second, np.zeros(len(positions), bool), float("nan"), source)
    tree = cKDTree(positions)  # one tree and one neighbour table: the columns move by fractions of a pixel
    neighbours = nearest_columns(positions, tree=tree)
    nearest = float(np.median(np.hypot(*(positions[neighbours[:, 0]] - positions).T)))
    refitted = np.zeros(len(positions), bool)
    if joint and second.any():  # heights of the new columns (and of their neighbours) before they are labelled
        positions, amplitudes, moved = refine_jointly(image, positions, amplitudes, widths, nearest, rounds=2, must=second, neighbours=neighbours)
        refitted |= moved
    labels, linked = label_columns(positions, amplitudes, image.shape, nearest, tree)
    drop = second & ~linked  # found in the residual but part of no site set: misfit, not a column
    covariance = isotropic_covariance(widths)
    profiles = None
    for shape_round in range(SHAPE_ROUNDS if joint else 0):  # shapes from neighbour-subtracted cores, then positions, until the shapes stand
        if profiles is not None and shape_round >= PROFILE_ROUNDS:
            break
        previous = covariance
        kept_labels = np.where(drop, -1, labels)
        if profiles is None:
            covariance = sublattice_shapes(image, positions, amplitudes, covariance, kept_labels, neighbours=neighbours)
            shape_of = {label: np.median(covariance[kept_labels == label], axis=0) for label in np.unique(kept_labels[kept_labels >= 0])}
        else:  # a measured profile is read in its shape's units: the shapes stand (a relabelled column takes its new sublattice's)
            covariance = covariance.copy()
            for label, shape in shape_of.items():
                covariance[kept_labels == label] = shape
        widths = equivalent_sigma(covariance)
        previous_profiles = profiles
        if shape_round == 0 or profiles is not None:  # columns that read as Gaussians at first stay Gaussians
            profiles = sublattice_profiles(image, positions, amplitudes, covariance, kept_labels, neighbours=neighbours, profiles=profiles)
        settled = np.abs(covariance - previous).max(initial=0.0) < 0.04 * float(np.median(widths)) ** 2
        if profiles is not None or previous_profiles is not None:  # the profiles must stand too
            same = profiles is not None and previous_profiles is not None and previous_profiles.values.shape == profiles.values.shape
            settled &= same and float(np.abs(profiles.values - previous_profiles.values).max()) < PROFILE_TOLERANCE
        if settled and shape_round > 0:  # the positions were refined with these shapes (to 4 % of σ²) already
            break
        amplitudes = np.where(drop, 0.0, amplitudes)  # a dropped column takes nothing from its neighbours
        positions, amplitudes, moved = refine_jointly(
            image, positions, amplitudes, widths, nearest, rounds=3, must=second & ~drop, neighbours=neighbours, covariance=covariance, profiles=profiles
        )
        refitted |= moved
        if settled:
            break
        if second.any():  # heights read with better shapes: the next shapes are read per sublattice as labelled now
            labels, linked = label_columns(positions, np.where(drop, 1e-6, amplitudes), image.shape, nearest)
            if profiles is not None:
                # a new column on no site set, too close to a column: a leftover of that column's tail, which a Gaussian left in the residual
                gap = np.hypot(*(positions[neighbours] - positions[:, None, :]).transpose(2, 0, 1))
                crowded = (np.where(drop[neighbours], np.inf, gap) < CROWDED_DISTANCE * nearest).any(axis=1)
                drop |= second & ~linked & crowded
    # two fits that settled on one column: keep the taller
    distance = np.hypot(*(positions[neighbours] - positions[:, None, :]).transpose(2, 0, 1))
    close = (distance < DUPLICATE_DISTANCE * nearest) & ~drop[neighbours]
    for column in np.nonzero(close.any(axis=1) & ~drop)[0]:
        others = neighbours[column][close[column]]
        if (amplitudes[others] > amplitudes[column]).any() or ((amplitudes[others] == amplitudes[column]) & (others < column)).any():
            drop[column] = True
    keep = ~drop
    nearest = float(np.median(np.where(drop[neighbours], np.inf, distance)[keep].min(axis=1)))
    positions, amplitudes, widths, second, refitted, source, labels = (a[keep] for a in (positions, amplitudes, widths, second, refitted, source, labels))
    if second.any():  # the new columns' heights were provisional when they were first labelled
        labels, _ = label_columns(positions, amplitudes, image.shape, nearest)
    return CompletedLattice(positions, amplitudes, widths, labels, second, refitted, nearest, source)
