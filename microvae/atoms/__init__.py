"""Finding atomic columns: estimate the lattice, detect candidate peaks, refine them to subpixel.

The locator is built like trackpy's ``locate``: a filtered image, local maxima above a threshold,
then a refinement of each maximum. Parameters that matter (the column width σ and the
nearest-neighbour spacing) are estimated from the image's autocorrelation when not given, so the
defaults work without tuning on most lattices.

Conventions: images are (H, W) arrays, positions are (row, col) in pixels with pixel (r, c) centred
at (r, c). Bright columns are found; for dark-column contrast (annular bright field, some STM
modes) pass ``invert=True``.

Steps, each a small function in its own module (as trackpy splits ``locate`` over
``preprocessing``, ``find`` and ``refine``):

0. :mod:`.lattice` — :func:`prepare_image` scales the image to [0, 1];
1. :mod:`.lattice` — :func:`estimate_lattice`: spacing from the nearest strong peak of the autocorrelation, σ from the
   width of its central peak.
2. :mod:`.response` — :func:`detection_response`: ``"log"``: the scale-normalised Laplacian of Gaussian at σ (insensitive
   to slow backgrounds); ``"max"``: the image smoothed by a Gaussian of σ minus its local floor (a
   minimum filter over one spacing, smoothed).
3. :mod:`.peaks` — :func:`find_peaks`: local maxima of the response in a disk of radius r = ½ spacing, above a
   threshold set from the response's noise level and its typical column height.
4. :mod:`.refine` — :func:`refine_center_of_mass` or :func:`refine_gaussian`: subpixel positions; the Gaussian fit
   (isotropic Gaussian + background, batched Levenberg–Marquardt) is the most accurate.

:mod:`.locate` runs them (:func:`find_atoms`), then the second search, joint refinement and labels of
:mod:`microvae.sublattices` and the displacements of :mod:`microvae.displacements`. :mod:`.tables`
holds what goes in and out (:class:`FindAtomsParams`, :class:`AtomTable`, :class:`LatticeEstimate`);
:mod:`.backend` the few helpers that let one function take numpy arrays and torch tensors alike.

Two engines run the same algorithm: numpy/scipy on the CPU (``device="cpu"``), and torch
(``device="cuda"``, or :func:`find_atoms_torch` with any torch device, which is how the tests check
on the CPU that both give the same atoms: same peaks, positions within 10⁻⁵ px). ``device="auto"``
picks CUDA when torch sees a GPU. The numerical core (gathers of small windows, the disk test of
the maxima, the noise estimate, the centre of mass, both Gaussian fits and their Levenberg–Marquardt
loop) is written once for numpy arrays and torch tensors alike; only the filters (numpy row strips
vs torch shifted sums and pooling) and the FFT differ.

Speed on large scans (the CPU engine): the image is scaled in float32; the
LoG is computed in row strips that stay in cache (shifted sums along rows, then down columns),
together with the square maxima; the noise level comes from ~2.5·10⁵ sampled pixels; the Gaussian
fit measures the column width on a sample of ≤ ``WIDTH_SAMPLE`` columns, then fits every column
with the width fixed, in cache-sized chunks laid out pixels × columns, its 4×4 normal equations
assembled from moments (three small einsums) and solved by a Cholesky written out over the
columns; the chunks run side by side in up to four threads (:func:`~.backend.chunk_workers`,
numpy releases the GIL in its loops) and the neighbour queries use every core. No BLAS threads
are used: they stall when other jobs share the cores.
"""

from __future__ import annotations

from .lattice import estimate_lattice, prepare_image
from .locate import column_displacements, find_atoms, find_atoms_torch, torch_device_for
from .peaks import automatic_threshold, find_peaks, noise_sd, significance_threshold, stands_out_from_noise
from .refine import fit_disk_radius, keep_inside, refine_center_of_mass, refine_gaussian, refinement_radius
from .response import detection_response, gaussian_kernels
from .tables import DETECTION_METHODS, DEVICES, REFINEMENT_METHODS, AtomTable, FindAtomsParams, LatticeEstimate

__all__ = [
    "AtomTable",
    "DETECTION_METHODS",
    "DEVICES",
    "FindAtomsParams",
    "LatticeEstimate",
    "REFINEMENT_METHODS",
    "automatic_threshold",
    "column_displacements",
    "detection_response",
    "estimate_lattice",
    "find_atoms",
    "find_atoms_torch",
    "find_peaks",
    "fit_disk_radius",
    "gaussian_kernels",
    "keep_inside",
    "noise_sd",
    "prepare_image",
    "refine_center_of_mass",
    "refine_gaussian",
    "refinement_radius",
    "significance_threshold",
    "stands_out_from_noise",
    "torch_device_for",
]
