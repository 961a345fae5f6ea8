"""Cutting patches around atoms or on a grid, in real space or as FFT magnitudes, and normalising them.

Geometry. A patch of window W centred at (row, col) holds, at its pixel (i, j), the source image
sampled at ``(row + i − W//2, col + j − W//2)``: the centre lands on pixel (W//2, W//2) (for even W,
the lower-right of the four central pixels). With ``subpixel=True`` (the default for atom-centred
patches) the source is sampled by bilinear interpolation at the exact float centre, so every atom
sits at the same place in its patch; with ``subpixel=False`` the centre is rounded to the nearest
pixel and pixels are copied unchanged.

Edges. ``edge="skip"`` (the default) drops every patch whose window would reach outside the
image and reports how many were dropped; ``edge="reflect"`` keeps them, filling the outside by
mirror reflection about the edge pixels, and flags them in ``edge_padded``.

FFT patches (``fft=True``). Each real-space patch (before normalisation) has its mean subtracted,
is multiplied by a 2D Hann window (the outer product of ``numpy.hanning(W)``), Fourier transformed
(``numpy.fft.fft2``), shifted so that zero frequency is at (W//2, W//2) (``numpy.fft.fftshift``), and
replaced by ``log(1 + |F|)``, the log-magnitude. Phase is discarded, so FFT patches are invariant to
shifts of the lattice inside the window.

Normalisation (applied last, in real space or to the log-magnitudes):

* ``"image"`` (default): per source image, map the 0.1 and 99.9 percentiles of its patches' values to 0
  and 1 and clip to [0, 1] (Bernoulli-compatible, robust to hot pixels, comparable across scans
  whose dose differs).
* ``"global"``: the same with one pair of percentiles over all patches of all images.
* ``"patch"``: each patch min–max to [0, 1] (discards absolute intensity).
* ``"zscore"``: each patch to mean 0, sd 1 (for a Gaussian likelihood).
* ``"none"``: raw values.

For ``image`` and ``global`` the (offset, scale) used are recorded per patch, so that
``value = normalised · scale + offset`` undoes it, and new scans can be treated identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError, ParameterError

__all__ = [
    "EDGE_POLICIES",
    "NORMALISATIONS",
    "STATISTICS_VALUES",
    "PatchParams",
    "PatchPlan",
    "cut_patches",
    "fft_magnitude",
    "grid_centres",
    "hann_window",
    "intensity_range",
    "is_spectra",
    "normalise",
    "patch_blocks",
    "plan_patches",
    "turned_offsets",
    "window_fits",
]

NORMALISATIONS = ("image", "global", "patch", "zscore", "none")
EDGE_POLICIES = ("skip", "reflect")


@dataclass
class PatchParams:
    """Parameters of patch extraction (lengths in px).

    Attributes
    ----------
    window : int
        Side W of the square patches (4–1024 px).
    fft : bool
        Cut FFT log-magnitude patches instead of real-space ones (see the module's notes).
    normalize : str
        One of :data:`NORMALISATIONS` (``"image"``, ``"global"``, ``"patch"``, ``"zscore"``,
        ``"none"``).
    edge : str
        One of :data:`EDGE_POLICIES`: ``"skip"`` windows that reach outside the image, or
        ``"reflect"`` (mirror the image about its edge pixels).
    subpixel : bool
        Sample at the exact float centre (bilinear); False rounds to whole pixels.
    grid_step : int or None
        Cut on a regular grid with this step (px) instead of around atoms (whole pixels).
    percentiles : (float, float)
        The percentiles mapped to 0 and 1 by ``image``/``global`` normalisation.
    sublattices : tuple of int or None
        Atom-centred patches of these sublattices only (None: all).
    """

    window: int = 32
    fft: bool = False
    normalize: str = "image"
    edge: str = "skip"
    subpixel: bool = True
    grid_step: int | None = None
    percentiles: tuple[float, float] = (0.1, 99.9)
    sublattices: tuple[int, ...] | None = None  # atom-centred patches of these sublattices only (None: all)

    def validate(self) -> None:
        """Raise :class:`~microvae.errors.ParameterError` naming the first setting out of range."""
        if self.window < 4 or self.window > 1024:
            raise ParameterError(f"--window {self.window} is out of range; expected 4 to 1024 pixels")
        if self.normalize not in NORMALISATIONS:
            raise ParameterError(f"unknown normalisation {self.normalize!r}; expected one of {', '.join(NORMALISATIONS)}")
        if self.edge not in EDGE_POLICIES:
            raise ParameterError(f"unknown edge policy {self.edge!r}; expected one of {', '.join(EDGE_POLICIES)}")
        if self.grid_step is not None and self.grid_step < 1:
            raise ParameterError(f"--grid {self.grid_step} must be a positive number of pixels")
        if self.sublattices is not None:
            if self.grid_step is not None:
                raise ParameterError("--sublattice picks atoms: it needs --atoms, not --grid")
            if not self.sublattices or any(int(k) < 0 for k in self.sublattices):
                raise ParameterError(f"--sublattice {list(self.sublattices)}: expected sublattice numbers ≥ 0")


def grid_centres(shape: tuple[int, int], window: int, step: int) -> np.ndarray:
    """Centres of a regular grid of patches that fit entirely inside an (H, W) image.

    The first centre is (W//2, W//2) from the top-left corner, then every ``step`` pixels.

    Parameters
    ----------
    shape : (int, int)
        (H, W) of the image in px.
    window : int
        Patch side (px).
    step : int
        Grid step (px), the same along rows and columns.

    Returns
    -------
    (N, 2) float64 ndarray
        (row, col) centres in px, row-major.

    Examples
    --------
    >>> grid_centres((64, 64), window=16, step=16)[:3].tolist()
    [[8.0, 8.0], [8.0, 24.0], [8.0, 40.0]]
    """
    height, width = shape
    half = window // 2
    rows = np.arange(half, height - (window - half) + 1, step)
    cols = np.arange(half, width - (window - half) + 1, step)
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([grid_r.ravel(), grid_c.ravel()], axis=1).astype(np.float64)


def window_fits(centres: np.ndarray, shape: tuple[int, int], window: int, subpixel: bool) -> np.ndarray:
    """Where the whole window around each centre lies inside the image.

    Parameters
    ----------
    centres : (N, 2) ndarray
        (row, col) centres in px.
    shape : (int, int)
        (H, W) of the image in px.
    window : int
        Patch side (px).
    subpixel : bool
        Centres are used as they are (True) or rounded to whole pixels first.

    Returns
    -------
    (N,) bool ndarray
    """
    height, width = shape
    half = window // 2
    if subpixel:
        low_r, low_c = centres[:, 0] - half, centres[:, 1] - half
        high_r, high_c = centres[:, 0] + (window - 1 - half), centres[:, 1] + (window - 1 - half)
        return (low_r >= 0) & (low_c >= 0) & (high_r <= height - 1) & (high_c <= width - 1)
    rounded = np.round(centres)
    return (rounded[:, 0] - half >= 0) & (rounded[:, 1] - half >= 0) & (rounded[:, 0] + window - half <= height) & (rounded[:, 1] + window - half <= width)


def cut_patches(image: np.ndarray, centres: np.ndarray, window: int, subpixel: bool, turn_rad: float = 0.0) -> np.ndarray:
    """Sample (N, C, W, W) patches from a (C, H, W) image around float ``centres``.

    Outside the image, values are mirrored about the edge pixels (only reached with ``edge="reflect"``).

    ``turn_rad`` ≠ 0 cuts the window turned so that its content is the image turned by ``turn_rad``
    counter-clockwise as displayed (as ``numpy.rot90`` in the (row, col) plane for π/2) about the
    window's middle, ``(W − 1)/2`` from its first pixel (the centre rounded when not ``subpixel``):
    patch pixel (i, j) samples the image at ``middle + R(−turn)·(i − (W−1)/2, j − (W−1)/2)`` by
    cubic-spline interpolation (order 3, mirrored edges), which blurs the noise less than bilinear
    sampling would. Every pixel of a turned window comes from the image, corners included.

    Parameters
    ----------
    image : (C, H, W) ndarray
        The source image.
    centres : (N, 2) ndarray
        (row, col) centres in px.
    window : int
        Patch side W (px).
    subpixel : bool
        Bilinear sampling at the exact centres; False rounds them and copies pixels unchanged.
    turn_rad : float, default 0
        Turn of the window's content (rad, counter-clockwise as displayed).

    Returns
    -------
    (N, C, W, W) float32 ndarray
        The patches, not normalised.
    """
    channels = image.shape[0]
    half = window // 2
    offsets = np.arange(window, dtype=np.float64) - half
    count = len(centres)
    out = np.empty((count, channels, window, window), dtype=np.float32)
    if count == 0:
        return out
    if turn_rad:
        from scipy import ndimage

        centres = np.asarray(centres, dtype=np.float64) if subpixel else np.round(centres)
        middle = centres + ((window - 1) / 2 - half)  # (N, 2) the window's middle
        rows, cols = turned_offsets(window, turn_rad)  # (W, W) each
        rows = middle[:, 0, None, None] + rows[None]
        cols = middle[:, 1, None, None] + cols[None]
        for channel in range(channels):
            sampled = ndimage.map_coordinates(image[channel].astype(np.float64), [rows.ravel(), cols.ravel()], order=3, mode="mirror")
            out[:, channel] = sampled.reshape(count, window, window)
        return out
    if subpixel:
        rows = centres[:, 0, None, None] + offsets[None, :, None]
        cols = centres[:, 1, None, None] + offsets[None, None, :]
        rows, cols = np.broadcast_arrays(rows, cols)
        for channel in range(channels):
            from scipy import ndimage

            sampled = ndimage.map_coordinates(image[channel], [rows.ravel(), cols.ravel()], order=1, mode="mirror")
            out[:, channel] = sampled.reshape(count, window, window)
        return out
    base = np.round(centres).astype(np.int64) - half
    index = np.arange(window)
    # mirrored about the edge pixels, as map_coordinates' "mirror" above, however far outside
    rows = _mirror_index(base[:, 0, None, None] + index[None, :, None], image.shape[1])
    cols = _mirror_index(base[:, 1, None, None] + index[None, None, :], image.shape[2])
    for channel in range(channels):
        out[:, channel] = image[channel][rows, cols]
    return out


def turned_offsets(window: int, turn_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of a turned window samples its source.

    Patch pixel (i, j) of a window whose content is turned by ``turn_rad`` counter-clockwise as
    displayed samples ``R(−turn)·(i − (W−1)/2, j − (W−1)/2)`` in (row, col), rows pointing down,
    relative to the window's middle ``(W − 1)/2``. At π/2 this is ``numpy.rot90``: pixel (i, j)
    reads (j, W − 1 − i).

    Parameters
    ----------
    window : int
        Patch side W (px).
    turn_rad : float
        Turn (rad).

    Returns
    -------
    rows, cols : (W, W) float64 ndarray
        Offsets in px from the window's middle.
    """
    middle = (window - 1) / 2
    d_row, d_col = np.meshgrid(np.arange(window) - middle, np.arange(window) - middle, indexing="ij")
    cos, sin = np.cos(turn_rad), np.sin(turn_rad)
    return cos * d_row + sin * d_col, cos * d_col - sin * d_row


def _mirror_index(index: np.ndarray, size: int) -> np.ndarray:
    """Pixel indices reflected about the edge pixels (…, 2, 1, 0, 1, 2, …, n−2, n−1, n−2, …)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index > size - 1, period - index, index)


def fft_magnitude(patches: np.ndarray) -> np.ndarray:
    """FFT log-magnitudes ``log(1 + |fftshift(fft2(hann · (p − mean p)))|)`` of patches.

    Parameters
    ----------
    patches : (N, C, W, W) ndarray
        Real-space patches.

    Returns
    -------
    (N, C, W, W) float32 ndarray
        Zero frequency at (W//2, W//2); phase discarded.
    """
    centred = patches - patches.mean(axis=(-2, -1), keepdims=True)
    spectrum = np.fft.fftshift(np.fft.fft2(centred * hann_window(patches.shape[-1])), axes=(-2, -1))
    return np.log1p(np.abs(spectrum)).astype(np.float32)


def hann_window(width: int) -> np.ndarray:
    """(W, W) float64 2D Hann window, the outer product of ``numpy.hanning(W)`` (0 on the border, 1
    at the centre for odd W): the taper applied before every Fourier transform of a patch here.

    Parameters
    ----------
    width : int
        W, the patch side in px.

    Returns
    -------
    (W, W) ndarray
        The window.
    """
    taper = np.hanning(int(width))
    return np.outer(taper, taper)


def is_spectra(patches: np.ndarray, sample: int = 64) -> bool:
    """Whether the patches are FFT magnitudes (:func:`fft_magnitude`) rather than real-space views.

    The magnitude of a real image's Fourier transform is centrosymmetric: with zero frequency at
    (W//2, W//2), pixel (i, j) equals pixel ((2·(W//2) − i) mod W, (2·(W//2) − j) mod W), exactly
    and whatever a pointwise normalisation does to the values. A real-space patch of noisy data
    never is; the test reads up to ``sample`` evenly spaced patches.

    Parameters
    ----------
    patches : (N, C, W, W) ndarray
        The patches (square).
    sample : int, default 64
        At most this many patches are read.

    Returns
    -------
    bool
        True when every patch read is centrosymmetric to 1e-5 of the patches' value range.
    """
    n, width = patches.shape[0], patches.shape[-1]
    if n == 0 or width < 2 or patches.shape[-2] != width:
        return False
    rows = np.unique(np.linspace(0, n - 1, min(n, int(sample))).round().astype(np.int64))
    x = np.asarray(patches[rows], dtype=np.float64)
    mirror = (2 * (width // 2) - np.arange(width)) % width
    span = float(x.max() - x.min())
    if span == 0.0:
        return False
    return bool(np.abs(x - x[..., mirror[:, None], mirror[None, :]]).max() <= 1e-5 * span)


#: Normalisation statistics (``image``, ``global``) are percentiles over at most this many values.
STATISTICS_VALUES = 4_000_000


def intensity_range(patches: np.ndarray, percentiles: tuple[float, float] = (0.1, 99.9)) -> tuple[float, float]:
    """The (low, span) that maps the ``percentiles`` of the patches' values to 0 and 1.

    The values are those of every k-th patch, k chosen to keep at most :data:`STATISTICS_VALUES`
    of them.

    Parameters
    ----------
    patches : (N, C, W, W) ndarray
        The patches (all channels together).
    percentiles : (float, float), default (0.1, 99.9)
        Lower and upper percentile.

    Returns
    -------
    low, span : float
        ``span`` is 1 where the two percentiles coincide.
    """
    per_patch = max(1, int(np.prod(patches.shape[1:])))
    sample = patches[:: max(1, -(-len(patches) * per_patch // STATISTICS_VALUES))]
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high - low) if high > low else 1.0


def normalise(
    patches: np.ndarray,
    image_index: np.ndarray,
    method: str,
    percentiles: tuple[float, float] = (0.1, 99.9),
    ranges: dict[int, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise patches (see the module's notes for the methods).

    ``raw ≈ normalised · scale + offset`` for ``image``/``global``/``patch``/``zscore`` (exactly,
    except where ``image``/``global`` clipped). Statistics are over all channels together.

    Parameters
    ----------
    patches : (N, C, W, W) ndarray
        Raw patches.
    image_index : (N,) int ndarray
        The source image of each patch (groups for ``image``).
    method : str
        One of :data:`NORMALISATIONS`.
    percentiles : (float, float), default (0.1, 99.9)
        For ``image`` and ``global``.
    ranges : dict of int to (float, float), optional
        (low, span) per image index (``image``; key 0 for ``global``) computed elsewhere, e.g. from
        all of an image's patches when they are normalised block by block; by default they come
        from ``patches`` (:func:`intensity_range`).

    Returns
    -------
    normalised : (N, C, W, W) float32 ndarray
        In [0, 1] for ``image``, ``global`` and ``patch``.
    offset, scale : (N,) float64 ndarray
        Per patch, in the raw values' units.

    Raises
    ------
    ParameterError
        Unknown ``method``.
    """
    count = len(patches)
    offset = np.zeros(count)
    scale = np.ones(count)
    if count == 0 or method == "none":
        return patches.astype(np.float32), offset, scale
    if method in ("image", "global"):
        groups = np.zeros(count, dtype=np.int64) if method == "global" else image_index
        out = np.empty_like(patches, dtype=np.float32)
        for group in np.unique(groups):
            members = groups == group
            values = patches[members]
            low, span = ranges[int(group)] if ranges is not None else intensity_range(values, percentiles)
            out[members] = np.clip((values - low) / span, 0.0, 1.0)
            offset[members], scale[members] = low, span
        return out, offset, scale
    flat = patches.reshape(count, -1)
    if method == "patch":
        low, high = flat.min(axis=1), flat.max(axis=1)
        span = np.where(high > low, high - low, 1.0)
        offset, scale = low.astype(np.float64), span.astype(np.float64)
    elif method == "zscore":
        mean, sd = flat.mean(axis=1), flat.std(axis=1)
        offset, scale = mean.astype(np.float64), np.where(sd > 0, sd, 1.0).astype(np.float64)
    else:
        raise ParameterError(f"unknown normalisation {method!r}")
    out = (patches - offset[:, None, None, None]) / scale[:, None, None, None]
    return out.astype(np.float32), offset, scale


@dataclass
class PatchPlan:
    """Which patches :func:`patch_blocks` will cut, in order (the rows of a patches artifact).

    Attributes
    ----------
    centres : (N, 2) float64 ndarray
        (row, col) in px where the window is sampled.
    coords : (N, 2) float64 ndarray
        Recorded centres (rounded where not subpixel).
    image_index : (N,) int32 ndarray
        Source image of each patch.
    centre_index : (N,) int ndarray
        Row of each patch's centre in its image's centres.
    edge_padded : (N,) bool ndarray
        The window reaches outside the image (only with ``edge="reflect"``).
    subpixel : bool
        Whether the windows are sampled at the exact float centres.
    skipped : int
        Centres dropped at the edges.
    channels : int
        C of the images.
    count : int
        N (a property).
    """

    centres: np.ndarray
    coords: np.ndarray
    image_index: np.ndarray
    centre_index: np.ndarray
    edge_padded: np.ndarray
    subpixel: bool
    skipped: int
    channels: int

    @property
    def count(self) -> int:
        return int(len(self.centres))


def plan_patches(images: list[np.ndarray], centres: list[np.ndarray], params: PatchParams, labels: list[str] | None = None) -> PatchPlan:
    """Check the images against the window and decide which centres give patches; cuts nothing.

    Parameters
    ----------
    images : list of ndarray
        One (C, H, W) array per source image (all with the same C).
    centres : list of ndarray
        One (Ni, 2) array of (row, col) centres in pixels per image.
    params : PatchParams
        Window, edge policy, subpixel cutting (grid patches are cut at whole pixels).
    labels : list of str, optional
        Image names for error messages.

    Returns
    -------
    PatchPlan
        The rows of the patches artifact, in order; :func:`patch_blocks` cuts them.

    Raises
    ------
    InputError
        An image is smaller than the window, channel counts differ, or no patch fits.

    Examples
    --------
    >>> import numpy as np
    >>> from microvae.patches import PatchParams, plan_patches
    >>> image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    >>> centres = np.array([[10.0, 10.0], [32.5, 20.25], [60.0, 60.0]])
    >>> plan = plan_patches([image], [centres], PatchParams(window=16))
    >>> plan.count, plan.skipped          # the window around (60, 60) reaches outside
    (2, 1)
    """
    params.validate()
    labels = labels or [f"image {i}" for i in range(len(images))]
    channel_counts = {image.shape[0] for image in images}
    if len(channel_counts) > 1:
        raise InputError(f"images have different channel counts {sorted(channel_counts)}; co-registered inputs must agree")
    window = params.window
    subpixel = params.subpixel and params.grid_step is None
    kept, index, centre_index, padded, skipped = [], [], [], [], 0
    for number, (image, image_centres) in enumerate(zip(images, centres)):
        height, width = image.shape[1:]
        if height < window or width < window:
            raise InputError(f"{labels[number]}: image is {height}×{width} pixels, smaller than the {window}×{window} window; use a smaller --window")
        image_centres = np.asarray(image_centres, dtype=np.float64).reshape(-1, 2)
        fits = window_fits(image_centres, (height, width), window, subpixel)
        rows = np.arange(len(image_centres))
        if params.edge == "skip":
            skipped += int((~fits).sum())
            image_centres, rows, fits = image_centres[fits], rows[fits], fits[fits]
        kept.append(image_centres)
        index.append(np.full(len(image_centres), number, dtype=np.int32))
        centre_index.append(rows)
        padded.append(~fits)
    if sum(len(k) for k in kept) == 0:
        raise InputError(
            f"no patch of {window}×{window} pixels fits inside the image(s) ({skipped} dropped at the edges); use a smaller --window or --edge reflect"
        )
    all_centres = np.concatenate(kept)
    return PatchPlan(
        all_centres,
        all_centres if subpixel else np.round(all_centres),
        np.concatenate(index),
        np.concatenate(centre_index),
        np.concatenate(padded),
        subpixel,
        skipped,
        int(images[0].shape[0]),
    )


def patch_blocks(images: list[np.ndarray], plan: PatchPlan, params: PatchParams, block_rows: int):
    """Cut and normalise the patches of ``plan`` block by block.

    Blocks hold at most ``block_rows`` patches and never span two images. ``image`` and ``global``
    statistics come from all of an image's (all images') patches first (:func:`intensity_range`),
    so the result does not depend on the block size.

    Parameters
    ----------
    images : list of ndarray
        The (C, H, W) images that ``plan`` was made for.
    plan : PatchPlan
        From :func:`plan_patches`.
    params : PatchParams
        The same parameters.
    block_rows : int
        Largest block (patches).

    Yields
    ------
    first : int
        The plan's row of the block's first patch.
    patches : (B, C, W, W) float32 ndarray
        Normalised patches.
    offset, scale : (B,) float64 ndarray
        ``raw ≈ patches · scale + offset``.

    Examples
    --------
    >>> import numpy as np
    >>> from microvae.patches import PatchParams, patch_blocks, plan_patches
    >>> image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    >>> params = PatchParams(window=16)
    >>> plan = plan_patches([image], [np.array([[10.0, 10.0], [32.5, 20.25]])], params)
    >>> blocks = list(patch_blocks([image], plan, params, block_rows=1))
    >>> [first for first, *_ in blocks]
    [0, 1]
    >>> patches = blocks[0][1]
    >>> patches.shape, patches.dtype, bool(0 <= patches.min() <= patches.max() <= 1)
    ((1, 1, 16, 16), dtype('float32'), True)
    """

    def cut(rows: np.ndarray) -> np.ndarray:
        number = int(plan.image_index[rows[0]])
        patches = cut_patches(images[number], plan.centres[rows], params.window, plan.subpixel)
        return fft_magnitude(patches) if params.fft else patches

    def image_rows(number: int) -> np.ndarray:
        return np.flatnonzero(plan.image_index == number)

    def sample_rows(rows: np.ndarray) -> np.ndarray:  # the patches intensity_range would read
        per_patch = plan.channels * params.window**2
        return rows[:: max(1, -(-len(rows) * per_patch // STATISTICS_VALUES))]

    ranges = None
    if params.normalize == "image":
        ranges = {}
        for number in np.unique(plan.image_index):
            rows = sample_rows(image_rows(int(number)))
            ranges[int(number)] = intensity_range(cut(rows), params.percentiles)
    elif params.normalize == "global":
        rows = sample_rows(np.arange(plan.count))
        parts = [cut(rows[plan.image_index[rows] == number]) for number in np.unique(plan.image_index[rows])]
        ranges = {0: intensity_range(np.concatenate(parts), params.percentiles)}
    for number in np.unique(plan.image_index):
        rows = image_rows(int(number))
        for start in range(0, len(rows), block_rows):
            block = rows[start : start + block_rows]
            normalised, offset, scale = normalise(cut(block), plan.image_index[block], params.normalize, params.percentiles, ranges)
            yield int(block[0]), normalised, offset, scale
