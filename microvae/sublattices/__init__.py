"""Every sublattice: dim columns beside bright ones, a joint refinement, labels.

What :func:`microvae.atoms.find_atoms` does after its first search (:func:`complete_lattice`):

1. **Second search** (:func:`find_dim_columns`). A lattice's autocorrelation is dominated by its
   brightest columns: on a honeycomb of bright metal and dim chalcogen columns (MoS₂) the nearest
   strong peak is the metal–metal distance, and a peak search with that spacing never looks
   between the metals. The fitted columns are rendered (:func:`render_columns`) and subtracted;
   the residual's local maxima at the scale of one column, clear of the columns found and above
   the noise, are new columns.
2. **Joint refinement** (:func:`refine_jointly`). A column fitted alone next to a brighter
   neighbour is pulled towards it; each column whose neighbours reach into its fit window is
   refitted against the image minus its neighbours' models (:func:`neighbours_at`), with one
   shape per sublattice (:func:`sublattice_shapes`: an elliptical Gaussian, as an astigmatic probe
   makes them) and, where the columns are not Gaussians (an Airy disk, a probe's tails), one
   measured radial profile per sublattice (:func:`sublattice_profiles`) for the neighbours'
   models, until the positions settle.
3. **Labels** (:func:`label_columns`). The lattice's translations (:func:`lattice_translations`)
   link the columns of one site of the unit cell (:func:`label_by_translation`); without a
   lattice, a mixture of the fitted heights decides (:func:`label_sublattices`). New columns that
   belong to no site set are misfits and are dropped.

Conventions: (H, W) float images scaled as :func:`microvae.atoms.prepare_image` scales them,
positions (row, col) in pixels with pixel (r, c) centred at (r, c), widths σ in pixels.

The package, one module per step (as :mod:`microvae.atoms` is split): :mod:`.models` (the
columns' Gaussian models and neighbours), :mod:`.search` (step 1), :mod:`.joint` (step 2),
:mod:`.labels` (step 3), and :mod:`.complete` (:func:`complete_lattice`, which runs them).
"""

from __future__ import annotations

from .complete import CROWDED_DISTANCE, DUPLICATE_DISTANCE, PROFILE_ROUNDS, PROFILE_TOLERANCE, SHAPE_ROUNDS, CompletedLattice, complete_lattice
from .joint import JOINT_ROUNDS, NEIGHBOUR_SHARE, WIDTH_RADIUS, refine_jointly, sublattice_profiles, sublattice_shapes
from .labels import (
    LINK_HEIGHT_STEP,
    LINK_TOLERANCE,
    MAX_SUBLATTICES,
    MIN_SEPARATION,
    MIN_SUBLATTICE_FRACTION,
    MIN_TRANSLATION_SHARE,
    MIXTURE_SAMPLE,
    TRANSLATION_SAMPLE,
    gaussian_mixture_1d,
    label_by_translation,
    label_columns,
    label_sublattices,
    lattice_translations,
)
from .models import NEIGHBOURS_MODELLED, RadialProfiles, equivalent_sigma, isotropic_covariance, nearest_columns, neighbours_at, precision, render_columns
from .search import MIN_RELATIVE_HEIGHT, MIN_SIGNIFICANCE, PROBE_SIZE, find_dim_columns, worth_searching

__all__ = [
    "CompletedLattice",
    "CROWDED_DISTANCE",
    "DUPLICATE_DISTANCE",
    "JOINT_ROUNDS",
    "LINK_HEIGHT_STEP",
    "LINK_TOLERANCE",
    "MAX_SUBLATTICES",
    "MIN_RELATIVE_HEIGHT",
    "MIN_SEPARATION",
    "MIN_SIGNIFICANCE",
    "MIN_SUBLATTICE_FRACTION",
    "MIN_TRANSLATION_SHARE",
    "MIXTURE_SAMPLE",
    "NEIGHBOURS_MODELLED",
    "NEIGHBOUR_SHARE",
    "PROBE_SIZE",
    "PROFILE_TOLERANCE",
    "PROFILE_ROUNDS",
    "SHAPE_ROUNDS",
    "TRANSLATION_SAMPLE",
    "WIDTH_RADIUS",
    "complete_lattice",
    "equivalent_sigma",
    "find_dim_columns",
    "gaussian_mixture_1d",
    "RadialProfiles",
    "isotropic_covariance",
    "label_by_translation",
    "label_columns",
    "label_sublattices",
    "lattice_translations",
    "nearest_columns",
    "neighbours_at",
    "precision",
    "refine_jointly",
    "render_columns",
    "sublattice_profiles",
    "sublattice_shapes",
    "worth_searching",
]
