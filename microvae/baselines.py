"""Classical clustering baselines for unsupervised class discovery on patches.

These are the partitions a trained microvae model's classes are compared with, and the class
initialisations its training can start from:

* ``pca_kmeans`` / ``pca_gmm``: PCA scores of the raw pixels, then k-means or a Gaussian mixture.
  Blind to pose: a rotated copy of a shape is a different point.
* ``fourier_kmeans``: k-means of a rotation- and shift-invariant Fourier descriptor
  (:func:`fourier_descriptor`), the textbook answer to objects that turn and move;
  ``tapered_fourier_kmeans`` the same of the Hann-tapered patches (columns of a lattice).
* ``tapered_pca_kmeans``: PCA + k-means of each patch with its mean removed and Hann-tapered
  (:func:`pca_features` with ``taper=True``): the object at the centre of an atom-centred patch,
  without the offset a slow background gives it; ``tapered_pca_tied`` the same k-means partition
  refined by a Gaussian mixture with one shared covariance (``method='tied_gmm'``), which lets a
  small class be small (k-means cuts space into cells of about equal extent).
* ``object_kmeans``: k-means of a rotation-, shift- and scale-invariant descriptor of the one
  object in each patch (:func:`object_descriptor`): the angular harmonics of the patch on circles
  about the object's centroid, after outlier pixels and a background plane are removed;
  ``sized_object_kmeans`` the same read on circles of one size for every patch (``sized=True``),
  which keeps the objects' sizes and lengths; ``object_tied`` and ``sized_object_tied`` the
  same k-means partitions refined by a tied-covariance mixture (the discovery's candidates:
  the descriptor's harmonics are correlated and unequally noisy, which k-means' round cells
  ignore).
* ``canonical_kmeans``: PCA + k-means of the patches resampled into a model's canonical frame
  (:func:`canonical_patches`), i.e. with a known (or inferred) pose removed.

Features whose columns share a unit (PCA scores, Fourier descriptors) are clustered without
per-column standardisation, which would give noisy weak columns the weight of informative ones.

Conventions: patches are (N, C, H, W) arrays (intensity in the image's own units); angles in
radians, counter-clockwise as displayed; shifts in pixels (row, col) — the same as
:mod:`microvae.nets` and :mod:`microvae.cards`. Every function is pure (seeded, no global state)
and silent. scikit-learn is imported inside the functions that use it, so importing this module
(and starting the CLI) stays fast.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .errors import ParameterError
from .patches import hann_window, is_spectra

__all__ = [
    "FULL_COVARIANCE_MAX_FEATURES",
    "METHODS",
    "STRENGTH_THRESHOLD",
    "baseline_labels",
    "canonical_patches",
    "cluster",
    "cluster_stability",
    "fast_baseline",
    "fourier_descriptor",
    "object_descriptor",
    "object_polarity",
    "object_scale",
    "pca_features",
    "polar_interpolation",
    "prediction_strength",
    "standardize",
]

METHODS = ("kmeans", "gmm", "tied_gmm")
#: A prediction strength (:func:`prediction_strength`) of at least this says the K clusters are real
#: (Tibshirani & Walther 2005 suggest 0.8–0.9): the verdict warns when the partition a run started
#: from does not reach it.
STRENGTH_THRESHOLD = 0.8
FULL_COVARIANCE_MAX_FEATURES = 10  # GMMs on wider features use diagonal covariances
_LARGE_N = 2000  # from here on, fast_baseline clusters with fewer k-means restarts


def _one_thread():
    """Context in which scikit-learn's OpenMP and BLAS pools run one thread.

    Measured on a 2-core machine shared with another job: k-means of 10 000 × 10 PCA scores took
    1.6 s with the default pools (threads spin-waiting for busy cores) and 0.02 s with one
    thread. The problems here are small enough that a single thread is never slow.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _check_patches(patches: np.ndarray, name: str = "patches") -> np.ndarray:
    patches = np.asarray(patches)
    if patches.ndim != 4:
        raise ParameterError(f"{name} must be (N, C, H, W), got shape {patches.shape}")
    if patches.shape[0] < 1 or min(patches.shape[1:]) < 1:
        raise ParameterError(f"{name} is empty: shape {patches.shape}")
    return patches


def _check_square(patches: np.ndarray) -> np.ndarray:
    if patches.shape[-2] != patches.shape[-1] or patches.shape[-1] < 5:
        raise ParameterError(f"the object descriptor needs square patches of at least 5×5 pixels, got {patches.shape[-2]}×{patches.shape[-1]}")
    return patches


def _check_n_classes(n_classes: int, n: int) -> int:
    n_classes = int(n_classes)
    if not 1 <= n_classes <= n:
        raise ParameterError(f"n_classes must be between 1 and the number of samples ({n}), got {n_classes}")
    return n_classes


def standardize(features: np.ndarray, per_column: bool = True) -> np.ndarray:
    """Centre the features and bring them to unit scale.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        Any finite real features.
    per_column : bool
        True: unit variance per column (constant columns become zeros) — for features in
        unrelated units. False: one common scale, the root-mean-square deviation over all
        columns — keeps the columns' relative variances (k-means is unchanged by it; it only
        makes regularisation constants relative).

    Returns
    -------
    ndarray, shape (N, F), float64
        Centred features divided by the per-column (or common) standard deviation, with 1
        taken wherever that is (numerically) zero.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(f"features must be (N, F), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ParameterError("features contain NaN or infinite values")
    x = x - x.mean(axis=0)
    sd = x.std(axis=0) if per_column else np.atleast_1d(np.sqrt((x**2).mean()))
    sd[~(sd > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0))))] = 1.0
    return x / sd


def pca_features(patches: np.ndarray, n_components: int = 10, seed: int = 0, *, max_fit_rows: int | None = None, taper: bool = False) -> np.ndarray:
    """PCA scores of the flattened patches (not whitened), optionally of their centred, tapered views.

    Parameters
    ----------
    patches : ndarray, shape (N, C, H, W)
        Patches, N >= 2.
    n_components : int
        Components wanted; ``n = min(n_components, N - 1, C·H·W)`` are returned.
    seed : int
        Seed of the randomised SVD and of the row subsample.
    max_fit_rows : int or None
        Fit the components on at most this many randomly chosen rows (all rows are projected);
        None fits on all rows.
    taper : bool, default False
        Subtract each patch's (and channel's) mean, then multiply by the 2D Hann window
        (:func:`microvae.patches.hann_window`; square patches) before the PCA: what sits at the patch centre
        (the column an atom-centred patch is cut around) weighs most, its neighbours less, the
        border nothing, and a slow background's offset between patches is gone. On the zoo's
        honeycomb, whose 5 % dopants differ from the host only in their centre's brightness under
        an offset of 0.25 that varies across the scan, PCA's first axis is that offset and k-means
        splits the host by it (0.73–0.75 matched accuracy at bench size); of the tapered views
        0.994–0.995 (seeds 0–2).

    Returns
    -------
    ndarray, shape (N, n), float32
        Projections on the leading principal axes, in the patches' intensity units (component
        ``j`` has variance equal to the ``j``-th explained variance). Not whitened: whitening
        gives the noisy trailing components the weight of the leading ones, which costs k-means
        most of its accuracy (see :func:`cluster`'s ``standardize_columns``).
    """
    from sklearn.decomposition import PCA

    patches = _check_patches(patches)
    n = patches.shape[0]
    if n < 2:
        raise ParameterError(f"PCA needs at least 2 patches, got {n}")
    if taper:
        views = patches.astype(np.float32) - patches.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
        patches = views * hann_window(patches.shape[-1]).astype(np.float32)
    flat = patches.reshape(n, -1).astype(np.float32, copy=False)
    k = min(int(n_components), n - 1, flat.shape[1])
    if k < 1:
        raise ParameterError(f"n_components must be >= 1, got {n_components}")
    fit_rows = flat
    if max_fit_rows is not None and n > max_fit_rows:
        if max_fit_rows <= k:
            raise ParameterError(f"max_fit_rows ({max_fit_rows}) must exceed the number of components ({k})")
        fit_rows = flat[np.random.default_rng(seed).choice(n, int(max_fit_rows), replace=False)]
    # randomized SVD is exact enough for a few leading components and much faster on wide data
    solver = "randomized" if k < 0.8 * min(fit_rows.shape) else "full"
    with _one_thread():
        pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(fit_rows)
        scores = pca.transform(flat)
    return scores.astype(np.float32, copy=False)


@lru_cache(maxsize=16)
def polar_interpolation(height: int, width: int, n_radii: int, n_angles: int):
    """Sparse bilinear-interpolation matrix from a half spectrum to the polar grid.

    The half spectrum is ``rfft2``'s (H, W // 2 + 1) output, fftshifted along rows only (zero
    frequency at row H // 2, column 0). Polar points: radii ``0 … min(H, W) // 2`` bins, angles
    ``-π/2 + j π / n_angles`` (all with column frequency >= 0, so the half spectrum holds them).
    ``half.reshape(-1) @ M`` equals ``scipy.ndimage.map_coordinates(full, points, order=1,
    mode='grid-wrap')`` on the fully fftshifted full spectrum (tested), at a fraction of the cost.

    Parameters
    ----------
    height, width : int
        H and W of the image, in px.
    n_radii : int
        Radii of the polar grid, evenly from 0 to min(H, W) // 2 frequency bins.
    n_angles : int
        Angles of the polar grid, over π rad.

    Returns
    -------
    scipy.sparse.csr_matrix
        (H · (W // 2 + 1), n_radii · n_angles) float32 (cached per argument set: treat as read-only).
    """
    from scipy import sparse

    half_width = width // 2 + 1
    radii = np.linspace(0.0, min(height, width) // 2, n_radii)
    angles = -math.pi / 2 + np.arange(n_angles) * (math.pi / n_angles)
    rows = (height // 2 + radii[:, None] * np.sin(angles)[None, :]).reshape(-1)
    cols = np.maximum(radii[:, None] * np.cos(angles)[None, :], 0.0).reshape(-1)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0 = r0.astype(np.int64)
    c0 = np.minimum(c0.astype(np.int64), half_width - 1)
    c1 = np.minimum(c0 + 1, half_width - 1)  # weight ~0 wherever this clips
    point = np.arange(rows.size)
    sources, targets, weights = [], [], []
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for cc, wc in ((c0, 1.0 - fc), (c1, fc)):
            sources.append(((r0 + dr) % height) * half_width + cc)
            targets.append(point)
            weights.append(wr * wc)
    matrix = sparse.coo_matrix(
        (np.concatenate(weights).astype(np.float32), (np.concatenate(sources), np.concatenate(targets))), shape=(height * half_width, rows.size)
    )
    return matrix.tocsr()


def fourier_descriptor(patches: np.ndarray, n_radii: int | None = None, n_angles: int = 32, taper: bool = False) -> np.ndarray:
    """Rotation- and shift-invariant Fourier descriptor of each patch (per channel).

    ``log(1 + |FFT2(patch - mean)|)`` (the modulus drops circular shifts), read bilinearly on a
    polar grid around the zero frequency — radii ``0 … min(H, W) // 2`` frequency bins (W / 2 for
    even sizes), ``n_angles`` angles over half a turn: the modulus of a real image's spectrum is
    centrosymmetric, so the polar image is π-periodic in angle — then ``|FFT|`` along the angle
    axis (the modulus drops a rotation, which circularly shifts the angles).

    The values are those of :func:`scipy.ndimage.map_coordinates` (``order=1``,
    ``mode='grid-wrap'``) on the fftshifted spectrum; they are computed from ``rfft2``'s half
    spectrum with a cached sparse interpolation matrix, which is an order of magnitude faster.
    Invariance is exact for circular shifts and for quarter turns (``np.rot90``, when
    ``n_angles`` is even); other rotations agree up to interpolation and the square window's
    anisotropy. Shifts that carry content across the patch border are not circular and are
    only approximately ignored. Non-square patches have anisotropic frequency bins.

    Parameters
    ----------
    patches : ndarray, shape (N, C, H, W)
        Patches, H, W >= 2.
    n_radii : int or None
        Number of radii; None = ``min(H, W) // 2 + 1`` (one per frequency bin).
    n_angles : int
        Number of angles over half a turn.
    taper : bool, default False
        Multiply each mean-removed patch by the 2D Hann window
        (:func:`microvae.patches.hann_window`, as FFT patches are made) before the transform. The
        window's border then no longer cuts through the scene: a cut's discontinuity spreads a
        cross of leakage over the spectrum that can outweigh a lattice's own peaks. Objects that
        reach the border lose their outer part, so neither version is better everywhere (zoo:
        tapered 1.00 against 0.55–0.68 on the perovskite film's columns, 0.75–0.79 against
        0.98–1.00 on the turned cards, ci size).

    Returns
    -------
    ndarray, shape (N, C · n_radii · (n_angles // 2 + 1)), float32
        Dimensionless (moduli of log-magnitudes), ordered channel, radius, angular frequency.
    """
    import scipy.fft

    patches = _check_patches(patches)
    n, c, h, w = patches.shape
    if min(h, w) < 2:
        raise ParameterError(f"patches must be at least 2×2 pixels, got {h}×{w}")
    n_radii = min(h, w) // 2 + 1 if n_radii is None else int(n_radii)
    if n_radii < 1 or n_angles < 2:
        raise ParameterError(f"need n_radii >= 1 and n_angles >= 2, got {n_radii} and {n_angles}")
    x = patches.astype(np.float32, copy=False)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    if taper:
        x = x * hann_window(w).astype(np.float32)
    half = np.fft.fftshift(np.log1p(np.abs(scipy.fft.rfft2(x))), axes=2)  # (N, C, H, W//2+1)
    polar = half.reshape(n * c, -1) @ polar_interpolation(h, w, n_radii, int(n_angles))
    polar = np.asarray(polar, dtype=np.float32).reshape(n * c, n_radii, n_angles)
    invariant = np.abs(scipy.fft.rfft(polar, axis=2))
    return invariant.reshape(n, -1).astype(np.float32, copy=False)


def object_polarity(patches: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Whether the objects of a patch set are brighter (+1.0) or darker (−1.0) than their surround.

    The sign of the median, over a seeded sample of up to ``sample`` patches, of the mean of the
    central disk (radius W / 6) of each patch cleaned and with its frame's plane subtracted
    (:meth:`microvae.nets.ObjectDescriptor.flattened`). Objects sit near the centre of their
    windows, so the centre is mostly object and the frame mostly surround; one sign per set,
    so that an object with a hole (a ring, the digit 0) is read as what its neighbours are.

    Parameters
    ----------
    patches : ndarray, shape (N, C, W, W)
        Square patches, W >= 5.
    sample : int, default 2000
        Patches read at most.
    seed : int, default 0
        Seed of the sample.

    Returns
    -------
    float
        +1.0 or −1.0 (+1.0 for a tie).
    """
    import torch

    from .nets import ObjectDescriptor

    patches = _check_square(_check_patches(patches))
    w = patches.shape[-1]
    rows = np.sort(np.random.default_rng(seed).permutation(len(patches))[:sample])
    with torch.no_grad():
        flat = ObjectDescriptor(w).flattened(torch.from_numpy(np.ascontiguousarray(patches[rows], dtype=np.float32))).numpy()
    offsets = np.arange(w) - (w - 1) / 2
    centre = np.hypot(offsets[:, None], offsets[None, :]) < w / 6
    return -1.0 if np.median(flat[:, centre].mean(axis=1)) < 0 else 1.0


def object_scale(patches: np.ndarray, polarity: float | None = None, sample: int = 2000, seed: int = 0) -> float:
    """The size of the larger objects of a patch set, the unit of the sized object descriptor's
    radii (``object_descriptor(..., sized=True)``): the 90th percentile of the radius of gyration
    (px) of the object in each of a seeded sample of up to ``sample`` patches
    (:meth:`microvae.nets.ObjectDescriptor.locate`), so that the outer circle (2.2 units) reaches
    round the largest kind even when it is rare. On the molecules of
    ``benchmarks/bench_descriptors.py`` (dose 30, seeds 0–2, k-means) the median as the unit read
    too short a circle for the 10 % linear trimers: 0.982 / 0.903 / 0.890 against 0.987 / 0.983 /
    0.970.

    Parameters
    ----------
    patches : ndarray, shape (N, C, W, W)
        Square patches, W >= 5.
    polarity : float or None
        +1 or −1; None reads it (:func:`object_polarity`).
    sample : int, default 2000
        Patches read at most.
    seed : int, default 0
        Seed of the sample.

    Returns
    -------
    float
        The 90th percentile of the radius of gyration, px (> 0).
    """
    import torch

    from .nets import ObjectDescriptor

    patches = _check_square(_check_patches(patches))
    if polarity is None:
        polarity = object_polarity(patches, sample=sample, seed=seed)
    rows = np.sort(np.random.default_rng(seed).permutation(len(patches))[:sample])
    with torch.no_grad():
        gyration = ObjectDescriptor(patches.shape[-1], polarity).locate(torch.from_numpy(np.ascontiguousarray(patches[rows], dtype=np.float32)))[3]
    return max(float(np.quantile(gyration.numpy(), 0.9)), 1e-3)


def object_descriptor(
    patches: np.ndarray,
    polarity: float | None = None,
    batch_size: int = 4096,
    sized: bool = False,
    scale_px: float | None = None,
    centred: bool = False,
) -> np.ndarray:
    """Rotation-, shift- and scale-invariant descriptor of the one object in each patch
    (:class:`microvae.nets.ObjectDescriptor`): the patch cleaned of outlier pixels, its frame's
    plane subtracted, the object marked by Otsu's threshold, then the angular harmonics'
    moduli of the patch on circles about the object's centroid, at radii scaled by its radius of
    gyration.

    Unlike :func:`fourier_descriptor`, which keeps only the patch's power spectrum (its
    autocorrelation), this keeps each ring's own angular profile about the object, so shapes
    whose spectra are alike stay apart: on the zoo's font-drawn suits under salt-and-pepper noise
    and a gradient, k-means of it reaches 0.985–0.995 at bench size where the spectrum's reaches
    0.45–0.49 (benchmarks/README.md, "Class discovery").

    ``sized`` reads every patch on the same circles, in units of the size of the set's larger
    objects (:func:`object_scale`): blind to turn, shift and brightness but not to size, for kinds that
    differ in size or length (molecules: a dimer, a bent and a linear trimer of the same atoms,
    which the scale-invariant reading confuses; benchmarks/README.md).

    Parameters
    ----------
    patches : ndarray, shape (N, C, W, W)
        Square patches, W >= 5, any intensity units.
    polarity : float or None
        +1 (objects brighter than their surround) or −1; None reads it from the patches
        (:func:`object_polarity`).
    batch_size : int
        Patches per torch call.
    sized : bool, default False
        Radii in units of ``scale_px`` for every patch instead of each object's own radius of
        gyration.
    scale_px : float or None
        The unit of the sized radii, px; None reads it from the patches (:func:`object_scale`).
        Ignored unless ``sized``.
    centred : bool, default False
        Read the circles about each patch's centre instead of its object's centroid, for
        patches whose objects sit at their centres (``translation`` off; see
        :class:`microvae.nets.ObjectDescriptor`).

    Returns
    -------
    ndarray, shape (N, 96), float32
        8 radii × 12 harmonics (:class:`microvae.nets.ObjectDescriptor`'s defaults), dimensionless.
    """
    import torch

    from .nets import ObjectDescriptor

    patches = _check_square(_check_patches(patches))
    if polarity is None:
        polarity = object_polarity(patches)
    if sized and scale_px is None:
        scale_px = object_scale(patches, polarity)
    descriptor = ObjectDescriptor(patches.shape[-1], polarity, scale_px=scale_px if sized else None, centred=centred)
    out = np.empty((len(patches), descriptor.out_features), np.float32)
    with torch.no_grad():
        for start in range(0, len(patches), max(1, int(batch_size))):
            part = slice(start, min(start + batch_size, len(patches)))
            out[part] = descriptor(torch.from_numpy(np.ascontiguousarray(patches[part], dtype=np.float32))).numpy()
    return out


def cluster(
    features: np.ndarray, n_classes: int, method: str = "kmeans", seed: int = 0, restarts: int = 10, standardize_columns: bool = True, fit_fraction: float = 1.0
) -> np.ndarray:
    """Partition standardised features with k-means or a Gaussian mixture.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        Features; standardised first (:func:`standardize`).
    n_classes : int
        Number of clusters, 1 <= n_classes <= N.
    method : {'kmeans', 'gmm', 'tied_gmm'}
        ``'kmeans'``: :class:`sklearn.cluster.KMeans`; ``'gmm'``:
        :class:`sklearn.mixture.GaussianMixture` with full covariances when F <= 10, else diagonal
        (k-means++ initialisations, ``reg_covar=1e-4`` on the standardised scale);
        ``'tied_gmm'``: k-means, then a Gaussian mixture with one covariance shared by all
        components started from its centres (weights free: a 5 % class keeps its size, where
        k-means moves its boundary into the large class next to it; on the zoo's CI honeycomb
        0.980 / 0.994 / 0.990 against k-means' 0.953 / 0.921 / 0.943).
    seed : int
        Random state of the initialisations.
    restarts : int
        Initialisations (``n_init``); the best objective wins.
    standardize_columns : bool
        True: unit variance per column, for features in unrelated units. False: one common
        scale, for features whose columns share a unit (PCA scores, Fourier descriptors), where
        per-column scaling would inflate weak, noisy columns to the weight of the informative
        ones (on cards it drops k-means of Fourier descriptors from ARI ≈ 0.99 to ≈ 0.7 and of
        pose-corrected PCA scores from ≈ 1.0 to ≈ 0.65). The baselines below use False.
    fit_fraction : float
        Fit on a random subset of this fraction of the rows (drawn from ``seed``), then assign
        every row: clusterings with different seeds then differ where the clusters are not
        well supported (the subsampling of stability analyses), and agree where they are.

    Returns
    -------
    ndarray, shape (N,), int64
        Cluster index in ``0 … n_classes - 1`` of each row.
    """
    if method not in METHODS:
        raise ParameterError(f"unknown clustering method {method!r}; expected one of {', '.join(METHODS)}")
    x = standardize(features, standardize_columns)
    n_classes = _check_n_classes(n_classes, x.shape[0])
    if restarts < 1:
        raise ParameterError(f"restarts must be >= 1, got {restarts}")
    if n_classes == 1:
        return np.zeros(x.shape[0], np.int64)
    if not 0 < fit_fraction <= 1:
        raise ParameterError(f"fit_fraction must be in (0, 1], got {fit_fraction}")
    fit_rows = x
    if fit_fraction < 1:
        keep = max(n_classes, int(round(fit_fraction * len(x))))
        fit_rows = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:keep])]
    if method in ("kmeans", "tied_gmm"):
        from sklearn.cluster import KMeans

        with _one_thread():
            kmeans = KMeans(n_clusters=n_classes, n_init=restarts, random_state=seed).fit(fit_rows)
            labels = kmeans.predict(x)
            if method == "tied_gmm":
                from sklearn.mixture import GaussianMixture

                tied = GaussianMixture(n_classes, covariance_type="tied", means_init=kmeans.cluster_centers_, reg_covar=1e-4, random_state=seed)
                labels = tied.fit(fit_rows).predict(x)
    else:
        from sklearn.mixture import GaussianMixture

        covariance = "full" if x.shape[1] <= FULL_COVARIANCE_MAX_FEATURES else "diag"
        gmm = GaussianMixture(n_components=n_classes, covariance_type=covariance, n_init=restarts, init_params="k-means++", reg_covar=1e-4, random_state=seed)
        with _one_thread():
            labels = gmm.fit(fit_rows).predict(x)
    return np.asarray(labels, dtype=np.int64)


def canonical_patches(patches: np.ndarray, angle_rad: np.ndarray | None, shift_px: np.ndarray | None, batch_size: int = 4096) -> np.ndarray:
    """Resample each patch into the model's canonical frame: ``g(u) = x(R(angle) u + shift)``.

    The inverse of the decoder's pose (:mod:`microvae.nets`): a patch drawn as
    ``g(R(angle)ᵀ (x - shift))`` comes back as ``g``. Bilinear, zeros outside the patch.

    Parameters
    ----------
    patches : ndarray, shape (N, C, W, W)
        Square patches.
    angle_rad : ndarray, shape (N,), or None
        Rotation of each patch's content, radians, counter-clockwise as displayed; None = 0.
    shift_px : ndarray, shape (N, 2), or None
        Translation (row, col) of each patch's content in pixels; None = 0.
    batch_size : int
        Patches resampled per torch call.

    Returns
    -------
    ndarray, shape (N, C, W, W), float32
        The canonical patches, in the patches' intensity units.
    """
    import torch

    from .nets import coordinate_grid, sample_at

    patches = _check_patches(patches)
    n, _, h, w = patches.shape
    if h != w:
        raise ParameterError(f"canonical_patches needs square patches, got {h}×{w}")
    if w < 2:
        raise ParameterError(f"patches must be at least 2×2 pixels, got {h}×{w}")
    angle = None if angle_rad is None else np.asarray(angle_rad, dtype=np.float32).reshape(-1)
    shift = None if shift_px is None else np.asarray(shift_px, dtype=np.float32) / ((w - 1) / 2)
    if angle is not None and angle.shape != (n,):
        raise ParameterError(f"angle_rad must have shape ({n},), got {np.shape(angle_rad)}")
    if shift is not None and shift.shape != (n, 2):
        raise ParameterError(f"shift_px must have shape ({n}, 2), got {np.shape(shift_px)}")
    grid = coordinate_grid(w)
    out = np.empty(patches.shape, np.float32)
    with torch.no_grad():
        for start in range(0, n, max(1, int(batch_size))):
            part = slice(start, min(start + batch_size, n))
            x = torch.from_numpy(np.ascontiguousarray(patches[part], dtype=np.float32))
            a = None if angle is None else torch.from_numpy(angle[part])
            s = None if shift is None else torch.from_numpy(shift[part])
            out[part] = sample_at(x, grid, a, s).numpy()
    return out


def baseline_labels(
    patches: np.ndarray,
    n_classes: int,
    seed: int = 0,
    angle_rad: np.ndarray | None = None,
    shift_px: np.ndarray | None = None,
    centred: bool = False,
) -> dict[str, np.ndarray]:
    """Every classical baseline's partition of the patches, in one call.

    Parameters
    ----------
    patches : ndarray, shape (N, C, H, W)
        Patches (square when ``angle_rad`` is given).
    n_classes : int
        Number of classes.
    seed : int
        Seed of PCA and clustering.
    angle_rad : ndarray, shape (N,), or None
        Pose angles (radians, counter-clockwise as displayed), e.g. a model's inferred rotation;
        when given, ``'canonical_kmeans'`` is added.
    shift_px : ndarray, shape (N, 2), or None
        Pose shifts (row, col) in pixels, used with ``angle_rad`` for ``'canonical_kmeans'``.
    centred : bool, default False
        The objects sit at the patches' centres (``translation`` off): the object descriptor
        reads about the centre (:func:`object_descriptor`).

    Returns
    -------
    dict of str to ndarray, shape (N,), int64
        ``'pca_kmeans'``, ``'pca_gmm'``, ``'fourier_kmeans'``, for real-space patches (not
        :func:`microvae.patches.is_spectra`) ``'tapered_fourier_kmeans'`` (the descriptor with
        ``taper=True``), ``'tapered_pca_kmeans'`` (:func:`pca_features` with ``taper=True``),
        ``'tapered_pca_tied'`` (its partition refined by a tied-covariance mixture) and,
        for square patches of at least 5 px, ``'object_kmeans'`` and ``'sized_object_kmeans'``
        (:func:`object_descriptor`, scale-invariant and sized) and ``'object_tied'`` and
        ``'sized_object_tied'`` (those partitions refined by a tied-covariance mixture); with
        ``angle_rad``, ``'canonical_kmeans'`` (PCA + k-means of :func:`canonical_patches`).
    """
    patches = _check_patches(patches)
    _check_n_classes(n_classes, patches.shape[0])
    scores = pca_features(patches, seed=seed)
    labels = {
        "pca_kmeans": cluster(scores, n_classes, "kmeans", seed, standardize_columns=False),
        "pca_gmm": cluster(scores, n_classes, "gmm", seed, standardize_columns=False),
        "fourier_kmeans": cluster(fourier_descriptor(patches), n_classes, "kmeans", seed, standardize_columns=False),
    }
    if not is_spectra(patches):
        labels["tapered_fourier_kmeans"] = cluster(fourier_descriptor(patches, taper=True), n_classes, "kmeans", seed, standardize_columns=False)
        tapered = pca_features(patches, seed=seed, taper=True)
        labels["tapered_pca_kmeans"] = cluster(tapered, n_classes, "kmeans", seed, standardize_columns=False)
        labels["tapered_pca_tied"] = cluster(tapered, n_classes, "tied_gmm", seed, standardize_columns=False)
        if patches.shape[-2] == patches.shape[-1] >= 5:
            polarity = object_polarity(patches)  # read once for both readings
            for prefix, sized in (("", False), ("sized_", True)):
                features = object_descriptor(patches, polarity, sized=sized, centred=centred)
                labels[f"{prefix}object_kmeans"] = cluster(features, n_classes, "kmeans", seed, standardize_columns=False)
                labels[f"{prefix}object_tied"] = cluster(features, n_classes, "tied_gmm", seed, standardize_columns=False)
    if angle_rad is not None:
        canonical = canonical_patches(patches, angle_rad, shift_px)
        scores = pca_features(canonical, seed=seed)
        labels["canonical_kmeans"] = cluster(scores, n_classes, "kmeans", seed, standardize_columns=False)
    return labels


def fast_baseline(patches: np.ndarray, n_classes: int, rotation: bool, seed: int = 0) -> np.ndarray:
    """The single quick classical partition a trained model's classes are compared with.

    ``fourier_kmeans`` when the objects rotate (``rotation=True``), else ``pca_kmeans`` (PCA fit
    on at most 5000 rows). From 2000 patches on, k-means uses 3 restarts instead of 10.

    Parameters
    ----------
    patches : ndarray, shape (N, C, H, W)
        Patches, N >= 2.
    n_classes : int
        Number of classes.
    rotation : bool
        Whether the objects appear at arbitrary rotations.
    seed : int
        Seed of PCA and k-means.

    Returns
    -------
    ndarray, shape (N,), int64
        Cluster index of each patch.
    """
    patches = _check_patches(patches)
    n = patches.shape[0]
    _check_n_classes(n_classes, n)
    restarts = 3 if n >= _LARGE_N else 10
    if rotation:
        features = fourier_descriptor(patches)
    else:
        features = pca_features(patches, seed=seed, max_fit_rows=5000)
    return cluster(features, n_classes, "kmeans", seed, restarts, standardize_columns=False)


def cluster_stability(
    features: np.ndarray, n_classes: int, seed: int = 0, restarts: int = 5, subsample: float = 0.8, standardize_columns: bool = True
) -> float:
    """How well the data support a k-means partition into ``n_classes``: mean pairwise ARI.

    k-means (3 initialisations each) is fit on ``restarts`` different random subsamples of the
    standardised features (as in :func:`cluster`); each solution labels every row; the score is the mean adjusted Rand
    index over all pairs of solutions. Near 1: the partition is reproducible; near 0: the
    clusters are arbitrary cuts of structureless data. Cheaper than the silhouette (no pairwise
    distances).

    Parameters
    ----------
    features : ndarray, shape (N, F)
        Features.
    n_classes : int
        Number of clusters.
    seed : int
        Seed of the subsamples and the k-means initialisations.
    restarts : int
        Number of subsample fits, >= 2.
    subsample : float
        Fraction of rows in each subsample, in (0, 1].
    standardize_columns : bool
        Per-column (True) or common (False) scaling, as in :func:`cluster`.

    Returns
    -------
    float
        Mean pairwise adjusted Rand index, dimensionless, at most 1 (1.0 when ``n_classes == 1``).
    """
    from sklearn.cluster import KMeans

    from .metrics import adjusted_rand_index

    x = standardize(features, standardize_columns)
    n = x.shape[0]
    n_classes = _check_n_classes(n_classes, n)
    if restarts < 2:
        raise ParameterError(f"cluster_stability needs restarts >= 2, got {restarts}")
    if not 0 < subsample <= 1:
        raise ParameterError(f"subsample must be in (0, 1], got {subsample}")
    size = max(n_classes, int(round(subsample * n)))
    if n_classes == 1:
        return 1.0
    rng = np.random.default_rng(seed)
    solutions = []
    with _one_thread():
        for _ in range(restarts):
            rows = rng.choice(n, size, replace=False)
            model = KMeans(n_clusters=n_classes, n_init=3, random_state=int(rng.integers(2**31 - 1))).fit(x[rows])
            solutions.append(model.predict(x))
    scores = [adjusted_rand_index(solutions[i], solutions[j]) for i in range(restarts) for j in range(i + 1, restarts)]
    return float(np.mean(scores))


def prediction_strength(features: np.ndarray, n_classes: int, seed: int = 0, splits: int = 3) -> float:
    """Prediction strength of k-means with ``n_classes`` clusters (Tibshirani & Walther 2005).

    The rows are split in two halves at random; each half is clustered; the clusters of the first
    half (its centroids, nearest-centroid rule) predict co-membership in the second. For each
    cluster of the second half, the fraction of its pairs that the first half also puts together;
    the strength is the smallest of these (the worst-predicted cluster), averaged over ``splits``
    random splits. Near 1 when the K clusters are real, well below when K splits a cluster
    arbitrarily; Tibshirani & Walther suggest the largest K with a strength of at least 0.8–0.9.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        Features on one common scale (as :func:`standardize` with ``per_column=False`` makes).
    n_classes : int
        K ≥ 2.
    seed : int
        Seeds the splits and the k-means initialisations.
    splits : int
        Random half splits averaged.

    Returns
    -------
    float
        In [0, 1].
    """
    from sklearn.cluster import KMeans

    x = standardize(features, per_column=False)
    rng = np.random.default_rng(seed)
    strengths = []
    with _one_thread():
        for split in range(splits):
            order = rng.permutation(len(x))
            train, test = x[order[::2]], x[order[1::2]]
            if min(len(train), len(test)) < 2 * n_classes:
                return 0.0
            predicted = KMeans(n_clusters=n_classes, n_init=5, random_state=seed + split).fit(train).predict(test)
            tested = KMeans(n_clusters=n_classes, n_init=5, random_state=seed + split).fit_predict(test)
            worst = 1.0
            for cluster_index in range(n_classes):
                members = predicted[tested == cluster_index]
                if len(members) < 2:
                    continue
                counts = np.bincount(members, minlength=n_classes).astype(np.float64)
                worst = min(worst, float((counts * (counts - 1)).sum() / (len(members) * (len(members) - 1))))
            strengths.append(worst)
    return float(np.mean(strengths))
