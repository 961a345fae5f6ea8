"""Finding atomic columns: estimate the lattice, detect candidate peaks, refine them to subpixel.

The locator is built like trackpy's ``locate``: a filtered image, local maxima above a threshold,
then a refinement of each maximum. Parameters that matter (the column width σ and the
nearest-neighbour spacing) are estimated from the image's autocorrelation when not given, so the
defaults work without tuning on most lattices.

Conventions: images are (H, W) arrays, positions are (row, col) in pixels with pixel (r, c) centred
at (r, c). Bright columns are found; for dark-column contrast (annular bright field, some STM
modes) pass ``invert=True``.

Steps, each a small function:

1. :func:`estimate_lattice` — spacing from the nearest strong peak of the autocorrelation, σ from the
   width of its central peak.
2. :func:`detection_response` — ``"log"``: the scale-normalised Laplacian of Gaussian at σ (insensitive
   to slow backgrounds); ``"max"``: the image smoothed by a Gaussian of σ minus its local floor (a
   minimum filter over one spacing, smoothed).
3. :func:`find_peaks` — local maxima of the response in a disk of radius r = ½ spacing, above a
   threshold set from the response's noise level and its typical column height.
4. :func:`refine_center_of_mass` or :func:`refine_gaussian` — subpixel positions; the Gaussian fit
   (isotropic Gaussian + background, batched Levenberg–Marquardt) is the most accurate.

Two engines run the same algorithm: numpy/scipy on the CPU (``device="cpu"``), and torch
(``device="cuda"``, or :func:`find_atoms_torch` with any torch device, which is how the tests check
on the CPU that both give the same atoms: same peaks, positions within 10⁻⁵ px). ``device="auto"``
picks CUDA when torch sees a GPU. The numerical core (gathers of small windows, the disk test of
the maxima, the noise estimate, the centre of mass, both Gaussian fits and their Levenberg–Marquardt
loop) is written once for numpy arrays and torch tensors alike; only the filters (numpy row strips
vs torch shifted sums and pooling) and the FFT differ.

Speed on large scans (the CPU engine, all single-threaded): the image is scaled in float32; the
LoG is computed in row strips that stay in cache (shifted sums along rows, then down columns),
together with the square maxima; the noise level comes from ~2.5·10⁵ sampled pixels; the Gaussian
fit measures the column width on a sample of ≤ ``WIDTH_SAMPLE`` columns, then fits every column
with the width fixed, in cache-sized chunks laid out pixels × columns, its 4×4 normal equations
assembled from moments (three small einsums) and solved by a Cholesky written out over the
columns. No BLAS threads are used: they stall when other jobs share the cores.
"""

from __future__ import annotations

import functools
import glob
import sys
from dataclasses import dataclass

import numpy as np

from .errors import ParameterError

DETECTION_METHODS = ("log", "max")
REFINEMENT_METHODS = ("gaussian", "com", "none")
DEVICES = ("auto", "cpu", "cuda")

WIDTH_SAMPLE = 1024  # columns fitted with a free width to measure it (the width is one number per image)
STRIP_ROWS = 128  # rows per strip of the CPU LoG (a strip and its temporaries stay in cache)


@dataclass
class LatticeEstimate:
    """What the image's autocorrelation says about its columns.

    Attributes:
        spacing_px: nearest-neighbour distance between columns (pixels).
        sigma_px: Gaussian width σ of one column (pixels).
        periodic: False when the autocorrelation showed no clear lattice peak (the spacing is then a
            guess of 4σ and the user may want to set it).
        nearest_neighbour_px: median distance from each column found to its nearest neighbour, all
            sublattices together (None before the columns are found). Smaller than ``spacing_px``
            where the autocorrelation saw only the brightest sublattice.
        sublattice_counts: columns per sublattice, brightest first; sublattice_sigma_px their widths.
        second_search: columns found by the second search, in the residual of the first.
    """

    spacing_px: float
    sigma_px: float
    periodic: bool = True
    nearest_neighbour_px: float | None = None
    sublattice_counts: tuple[int, ...] = ()
    sublattice_sigma_px: tuple[float, ...] = ()
    second_search: int = 0


@dataclass
class AtomTable:
    """Atoms found in one image.

    Attributes:
        positions: (N, 2) float64 (row, col) in pixels.
        intensity: (N,) fitted peak height above the local background (image units; for ``com`` or
            ``none`` refinement, the filtered response at the peak).
        sigma_px: (N,) Gaussian width used by the fit (the image's median fitted width; the estimate
            when not fitted).
        score: (N,) detection response at the candidate peak.
        fit_ok: (N,) False where a Gaussian fit failed and the starting position was kept.
        sublattice: (N,) int sublattice of each column, 0 the brightest
            (:func:`microvae.sublattices.label_columns`: the sites of the unit cell that the
            lattice's translations link, split where their fitted heights differ).
        displacement_px: (N, 2) (row, col) offset of each column from the centroid of its
            neighbours in the reference sublattice (:mod:`microvae.displacements`); NaN where
            not computed.
    """

    positions: np.ndarray
    intensity: np.ndarray
    sigma_px: np.ndarray
    score: np.ndarray
    fit_ok: np.ndarray
    sublattice: np.ndarray | None = None
    displacement_px: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sublattice is None:
            self.sublattice = np.zeros(len(self.positions), np.int64)
        if self.displacement_px is None:
            self.displacement_px = np.full((len(self.positions), 2), np.nan)

    def __len__(self) -> int:
        return int(len(self.positions))


@dataclass
class FindAtomsParams:
    """Parameters of :func:`find_atoms`. ``None`` means: estimate from the image.

    ``device``: ``"cpu"`` (numpy/scipy), ``"cuda"`` (torch on the GPU; ``"cuda:1"`` etc. name one) or
    ``"auto"`` (CUDA when torch sees a GPU, else the CPU; it imports torch to ask). Both engines give
    the same atoms (same peaks; positions agree to ~10⁻⁵ px, far below their accuracy).

    ``sublattices``: search the residual of the first search for dimmer columns (every
    sublattice; :mod:`microvae.sublattices`) and label each column's sublattice. ``joint``: refine
    columns whose neighbours reach into their fit window against the image minus the neighbours'
    fitted models, with one width per sublattice. Both need ``refine="gaussian"`` (with ``com`` or
    ``none`` only the labels are made) and run on the CPU in either engine. ``displacements``:
    ``"auto"`` (each column of sublattice s ≥ 1 against the centroid of its neighbours in
    sublattice 0, when there are two or more), ``"none"``, or ``"OF:RELATIVE_TO"`` such as ``"1:0"``
    (:mod:`microvae.displacements`).
    """

    method: str = "log"
    refine: str = "gaussian"
    sigma_px: float | None = None
    spacing_px: float | None = None
    threshold: float | None = None
    threshold_rel: float = 0.2
    invert: bool = False
    device: str = "auto"
    sublattices: bool = True
    joint: bool = True
    displacements: str = "auto"

    def validate(self) -> None:
        if self.method not in DETECTION_METHODS:
            raise ParameterError(f"unknown detection method {self.method!r}; expected one of {', '.join(DETECTION_METHODS)}")
        if self.refine not in REFINEMENT_METHODS:
            raise ParameterError(f"unknown refinement {self.refine!r}; expected one of {', '.join(REFINEMENT_METHODS)}")
        if self.sigma_px is not None and not (0.3 <= self.sigma_px <= 100):
            raise ParameterError(f"--sigma {self.sigma_px} px is out of range; expected 0.3 to 100 pixels")
        if self.spacing_px is not None and not (2 <= self.spacing_px <= 1000):
            raise ParameterError(f"--spacing {self.spacing_px} px is out of range; expected 2 to 1000 pixels")
        if not (0 <= self.threshold_rel < 1):
            raise ParameterError(f"--threshold-rel {self.threshold_rel} is out of range; expected 0 ≤ value < 1")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ParameterError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        if self.displacements not in ("auto", "none"):
            from .displacements import parse_pair

            parse_pair(self.displacements)


def find_atoms(image: np.ndarray, params: FindAtomsParams | None = None, progress=None) -> tuple[AtomTable, LatticeEstimate]:
    """Find and refine atomic columns in one (H, W) image.

    ``progress(completed, total)``, if given, is called as the Gaussian refinement works through its
    chunks of columns.

    Returns:
        the atoms (positions inside the image, row-major order) and the lattice estimate used
        (with the user's overrides applied).
    """
    params = params or FindAtomsParams()
    params.validate()
    device = torch_device_for(params.device)
    if device is not None:
        return find_atoms_torch(image, params, device, progress=progress)
    image = prepare_image(image, params.invert)
    estimate = estimate_lattice(image)
    sigma = params.sigma_px or estimate.sigma_px
    spacing = params.spacing_px or estimate.spacing_px
    used = LatticeEstimate(spacing_px=float(spacing), sigma_px=float(sigma), periodic=estimate.periodic)
    inner = _inner_radius(spacing)
    if params.method == "log":
        response, candidates = _log_response_and_maxima(image, sigma, inner)
    else:
        response = detection_response(image, sigma, spacing, params.method)
        candidates = _square_maxima(response, inner)
    return _locate(image, response, candidates, sigma, spacing, params, used, progress)


def _no_nvidia_device() -> bool:
    """True where no NVIDIA GPU can be present: Linux without an ``/dev/nvidia<N>`` device node."""
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")


def torch_device_for(name: str):
    """The torch device that ``name`` selects, or None for the numpy engine.

    ``"auto"``: CUDA when torch is installed and sees a GPU, else None. ``"cuda"`` without one is a
    :class:`ParameterError`.
    """
    if name == "cpu" or (name == "auto" and "torch" not in sys.modules and _no_nvidia_device()):
        return None          # importing torch only to learn there is no GPU costs about 1 s
    try:
        import torch
    except ImportError:
        if name == "auto":
            return None
        raise ParameterError(f"device {name!r} needs torch, which is not installed") from None
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if not torch.cuda.is_available():
        raise ParameterError(f"device {name!r} requested but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def find_atoms_torch(image: np.ndarray, params: FindAtomsParams | None = None, device="cuda", progress=None) -> tuple[AtomTable, LatticeEstimate]:
    """:func:`find_atoms` on the torch engine, on any torch ``device`` (``"cpu"`` runs torch on the CPU:
    slow, but it checks the engine where no GPU is at hand). ``params.device`` is ignored."""
    import torch

    params = params or FindAtomsParams()
    params.validate()
    device = torch.device(device)
    with _full_float32_matmul():
        return _find_atoms_torch(torch.from_numpy(_as_float32(image)).to(device), params, progress)


class _full_float32_matmul:
    """Turn off TF32 for CUDA matrix products while the torch engine runs (the fit's moments are
    float32 einsums; TF32 keeps 10 mantissa bits and would blur the centres by ~10⁻³ px)."""

    def __enter__(self):
        import torch

        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.saved


def _find_atoms_torch(data, params: FindAtomsParams, progress) -> tuple[AtomTable, LatticeEstimate]:
    image = prepare_image(data, params.invert)
    estimate = estimate_lattice(image)
    sigma = params.sigma_px or estimate.sigma_px
    spacing = params.spacing_px or estimate.spacing_px
    used = LatticeEstimate(spacing_px=float(spacing), sigma_px=float(sigma), periodic=estimate.periodic)
    response = _response_torch(image, sigma, spacing, params.method)
    candidates = _square_maxima(response, _inner_radius(spacing))
    return _locate(image, response, candidates, sigma, spacing, params, used, progress)


def _locate(image, response, candidates, sigma, spacing, params: FindAtomsParams, used: LatticeEstimate, progress) -> tuple[AtomTable, LatticeEstimate]:
    """Steps 3–4 from the candidate maxima on; ``image`` and ``response`` are numpy arrays or torch tensors."""
    peaks, heights = _disk_maxima(response, candidates, _disk_radius(spacing))
    noise = noise_sd(image)
    threshold = params.threshold
    if threshold is None:
        threshold = _threshold_from(noise, _filter_gain(sigma, spacing, params.method), heights, params.threshold_rel)
    keep = heights > threshold
    peaks, scores = peaks[keep], heights[keep]
    if params.threshold is None and not stands_out_from_noise(image, peaks, scores, sigma, noise):
        peaks, scores = peaks[:0], scores[:0]
    if params.refine == "gaussian":
        table = refine_gaussian(image, peaks, sigma, spacing, progress=progress, start=_parabola_start(response, peaks))
    else:
        positions = refine_center_of_mass(image, peaks, sigma, spacing) if params.refine == "com" else peaks * 1.0
        table = AtomTable(_numpy(positions, np.float64), _numpy(scores, np.float64), np.full(len(peaks), float(sigma)), None, np.ones(len(peaks), bool))
    table.score = _numpy(scores, np.float64)
    if len(table) and (params.sublattices or params.joint):
        table, used = _every_sublattice(image, response, table, sigma, noise, params, used)
    table = keep_inside(table, tuple(image.shape))
    table.displacement_px = column_displacements(table.positions, table.sublattice, params.displacements)
    if len(table) and (params.sublattices or params.joint):
        from dataclasses import replace

        counts = tuple(int((table.sublattice == k).sum()) for k in range(int(table.sublattice.max()) + 1))
        widths = tuple(float(np.median(table.sigma_px[table.sublattice == k])) if counts[k] else float("nan") for k in range(len(counts)))
        used = replace(used, sublattice_counts=counts, sublattice_sigma_px=widths)
    return table, used


def column_displacements(positions: np.ndarray, sublattice: np.ndarray, spec: str) -> np.ndarray:
    """(N, 2) displacements for ``spec`` (see :class:`FindAtomsParams`); NaN where not computed."""
    from .displacements import neighbour_displacements, parse_pair

    out = np.full((len(positions), 2), np.nan)
    if spec == "none" or len(positions) == 0:
        return out
    if spec == "auto":
        pairs = [(of, 0) for of in range(1, int(sublattice.max()) + 1)]
    else:
        pairs = [parse_pair(spec)]
    for of, relative_to in pairs:
        if (sublattice == of).any() and (sublattice == relative_to).sum() >= 2:
            found = neighbour_displacements(positions, sublattice, of, relative_to)
            movers = sublattice == of
            out[movers] = found.vector_px[movers]
        elif spec != "auto":
            raise ParameterError(f"--displacements {spec}: the atoms hold sublattices "
                                 + ", ".join(str(k) for k in np.unique(sublattice)))
    return out


def _every_sublattice(image, response, table: AtomTable, sigma: float, noise: float, params: FindAtomsParams,
                      used: LatticeEstimate) -> tuple[AtomTable, LatticeEstimate]:
    """The second search, joint refinement and labels of :mod:`microvae.sublattices` (numpy, CPU)."""
    from dataclasses import replace

    from scipy.spatial import cKDTree

    from .sublattices import complete_lattice, label_columns

    if params.refine != "gaussian":              # labels only
        nearest = float(np.median(cKDTree(table.positions).query(table.positions, k=2)[0][:, 1])) if len(table) > 1 else None
        if params.sublattices and nearest is not None:
            table.sublattice = label_columns(table.positions, np.clip(table.intensity, 1e-6, None), tuple(image.shape), nearest)[0]
        return table, replace(used, nearest_neighbour_px=nearest)
    done = complete_lattice(_numpy(image, np.float32), table.positions, table.intensity, table.sigma_px, float(sigma),
                            float(np.percentile(table.score, 90)), noise, joint=params.joint, search=params.sublattices)
    old = done.source >= 0
    peaks = np.clip(np.round(done.positions).astype(np.int64), 0, np.array(image.shape) - 1)
    scores = _numpy(response, np.float64)[peaks[:, 0], peaks[:, 1]]          # new columns: the response at their peak
    scores[old] = table.score[done.source[old]]
    fit_ok = done.refitted.copy()
    fit_ok[old] = table.fit_ok[done.source[old]]
    sublattice = done.sublattice if params.sublattices else np.zeros(len(done.positions), np.int64)
    table = AtomTable(done.positions, done.amplitudes, done.sigma_px, scores, fit_ok, sublattice)
    nearest = done.nearest_neighbour_px if len(table) > 1 else None
    return table, replace(used, nearest_neighbour_px=nearest, second_search=int((~old).sum()))


# ----------------------------------------------------------------------------------------------
# numpy / torch helpers


def _xp(array):
    """The array module of ``array``: numpy, or torch for a tensor."""
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def _numpy(array, dtype=None) -> np.ndarray:
    """A numpy array of a numpy array or (any device's) torch tensor."""
    if not isinstance(array, np.ndarray):
        array = array.detach().cpu().numpy()
    return array if dtype is None else array.astype(dtype, copy=False)


def _like(values, reference):
    """``values`` (numpy) as an array of ``reference``'s kind (and torch device)."""
    if isinstance(reference, np.ndarray):
        return np.asarray(values)
    import torch

    values = np.asarray(values)
    return torch.as_tensor(values if values.flags.writeable else values.copy(), device=reference.device)


def _f64(array):
    return array.astype(np.float64) if isinstance(array, np.ndarray) else array.double()


def _as_float32(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ParameterError(f"atom finding needs one 2D image, got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.float32)


def _percentiles(values, percents) -> np.ndarray:
    """np.percentile (linear interpolation) of a float array or tensor, as float64 numpy."""
    if isinstance(values, np.ndarray):
        return np.percentile(values.astype(np.float64), percents)
    import torch

    values = values.double()
    if values.numel() <= 1 << 24:  # torch.quantile's limit
        return _numpy(torch.quantile(values, torch.as_tensor(np.asarray(percents, dtype=np.float64) / 100.0, device=values.device)))
    ordered = torch.sort(values).values
    position = np.asarray(percents, dtype=np.float64) / 100.0 * (ordered.numel() - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ordered.numel() - 1)
    low, high = _numpy(ordered[_like(below, ordered)]), _numpy(ordered[_like(above, ordered)])
    return low + (position - below) * (high - low)


# ----------------------------------------------------------------------------------------------
# 0. Scaling


def prepare_image(image, invert: bool = False):
    """float32 copy scaled to [0, 1] by its 0.1–99.9 percentiles; inverted for dark-column contrast.

    A numpy array gives a numpy array; a torch tensor gives a tensor on its device. The percentiles
    come from ≤ 4·10⁶ evenly strided pixels.
    """
    if isinstance(image, np.ndarray) or not hasattr(image, "device"):
        data = _as_float32(image)
    else:
        if image.ndim != 2:
            raise ParameterError(f"atom finding needs one 2D image, got shape {tuple(image.shape)}")
        data = image.float().contiguous()
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.shape[0] // 2_000_000)]
    low, high = _percentiles(sample, [0.1, 99.9])
    if high <= low:
        low, high = float(flat.min()), float(flat.max())
    # the same float32 operands on both engines (numpy and torch round alike)
    scaled = (data - float(np.float32(low))) / float(np.float32(max(high - low, 1e-12)))
    return 1.0 - scaled if invert else scaled


# ----------------------------------------------------------------------------------------------
# 1. Lattice estimate


def estimate_lattice(image, max_size: int = 1024) -> LatticeEstimate:
    """Estimate column spacing and width from the autocorrelation of (a central crop of) the image.

    The autocorrelation of a lattice of Gaussian columns of width σ has a central peak of width
    σ√2 and side peaks at the lattice vectors. The spacing is the distance to the nearest side peak
    at least a quarter as high as the strongest; σ comes from the decay of the central peak between
    lags 1 and 2 pixels (lag 0 is skipped: white noise adds a spike there). ``image``: numpy array
    or torch tensor (the FFT then runs on its device, in float64).
    """
    from scipy import ndimage

    height, width = image.shape
    crop = image[(height - min(height, max_size)) // 2 :, (width - min(width, max_size)) // 2 :][:max_size, :max_size]
    crop = _f64(crop)
    crop = crop - crop.mean()
    shape = tuple(crop.shape)
    window, high_pass = _autocorrelation_filters(shape)
    if isinstance(crop, np.ndarray):
        spectrum = np.fft.rfft2(crop * window) * high_pass
        autocorr = np.fft.fftshift(np.fft.irfft2(np.abs(spectrum) ** 2, s=shape))
    else:
        import torch

        spectrum = torch.fft.rfft2(crop * _like(window, crop)) * _like(high_pass, crop)
        autocorr = torch.fft.fftshift(torch.fft.irfft2(spectrum.abs() ** 2, s=shape))
    centre = np.array(shape) // 2
    # Only lags below a quarter of the crop count; cut the autocorrelation to them (plus one pixel
    # for the 3×3 maximum filter) before the peak search.
    reach = min(shape) // 4 + 1
    top, left = max(centre[0] - reach, 0), max(centre[1] - reach, 0)
    autocorr = autocorr[top : centre[0] + reach + 1, left : centre[1] + reach + 1]
    centre = centre - (top, left)
    autocorr = autocorr / autocorr[centre[0], centre[1]]
    near = _numpy(autocorr[max(centre[0] - 8, 0) : centre[0] + 9, max(centre[1] - 8, 0) : centre[1] + 9])
    sigma = _central_peak_sigma(near, np.array([min(centre[0], 8), min(centre[1], 8)]))
    rows = np.arange(autocorr.shape[0])[:, None] - centre[0]
    cols = np.arange(autocorr.shape[1])[None, :] - centre[1]
    radius = np.hypot(rows, cols)
    region = (radius > max(2.5 * sigma, 2.0)) & (radius < min(shape) / 4)
    if isinstance(autocorr, np.ndarray):
        local_max = (autocorr == ndimage.maximum_filter(autocorr, size=3)) & region
        heights, radii = autocorr[local_max], radius[local_max]
    else:
        import torch.nn.functional as F

        pooled = F.max_pool2d(autocorr[None, None], 3, stride=1, padding=1)[0, 0]
        local_max = _numpy((autocorr == pooled)) & region
        heights, radii = _numpy(autocorr)[local_max], radius[local_max]
    if heights.size == 0 or heights.max() <= 0.02:
        return LatticeEstimate(spacing_px=max(4.0 * sigma, 4.0), sigma_px=sigma, periodic=False)
    strong = heights >= 0.25 * heights.max()
    spacing = float(radii[strong].min())
    sigma = float(np.clip(sigma, 0.5, spacing / 3.0))
    return LatticeEstimate(spacing_px=spacing, sigma_px=sigma, periodic=True)


@functools.lru_cache(maxsize=8)
def _autocorrelation_filters(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The Hann window of a crop and the high-pass (on the rfft2 grid) that removes structure slower
    than a twelfth of the crop (backgrounds). Cached: read-only."""
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    freq_rows = np.fft.fftfreq(shape[0])[:, None]
    freq_cols = np.fft.rfftfreq(shape[1])[None, :]
    slow_sigma = max(shape) / 12.0
    high_pass = 1.0 - np.exp(-2.0 * (np.pi * slow_sigma) ** 2 * (freq_rows**2 + freq_cols**2))
    window.flags.writeable = high_pass.flags.writeable = False
    return window, high_pass


def _central_peak_sigma(autocorr: np.ndarray, centre: np.ndarray) -> float:
    """σ of one column from the autocorrelation's central peak, using lags 1–8 along both axes."""
    row, col = centre

    def at_lag(lag: int) -> float:
        return float(np.mean([autocorr[row + lag, col], autocorr[row - lag, col], autocorr[row, col + lag], autocorr[row, col - lag]]))

    max_lag = min(8, int(row), int(col), autocorr.shape[0] - 1 - int(row), autocorr.shape[1] - 1 - int(col))  # small scans have fewer lags
    if max_lag < 3:
        return 1.0
    profile = np.array([at_lag(lag) for lag in range(1, max_lag + 1)])
    # baseline: the first minimum of the profile (between the central peak and the first neighbours)
    minima = np.where((profile[1:-1] <= profile[:-2]) & (profile[1:-1] <= profile[2:]))[0]
    baseline = profile[minima[0] + 1] if minima.size else profile.min()
    first, second = profile[0] - baseline, profile[1] - baseline
    if first <= 0 or second <= 0 or second >= first:
        return 1.0
    sigma_ac_sq = 3.0 / (2.0 * np.log(first / second))  # Gaussian: ln(p1/p2) = (2² − 1²) / (2 σ_ac²)
    return float(np.sqrt(sigma_ac_sq / 2.0))  # σ_ac = √2 σ


# ----------------------------------------------------------------------------------------------
# 2. Response


def gaussian_kernels(sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """1D kernels (float64, radius ⌊4σ + ½⌋ as scipy's): the Gaussian g, and l = −σ²·g″ = (1 − x²/σ²)·g.

    The scale-normalised LoG response −σ²∇²(G∗I) is then l ⊗ g + g ⊗ l (rows ⊗ columns).
    """
    radius = int(4.0 * sigma_px + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-0.5 * x**2 / sigma_px**2)
    gauss /= gauss.sum()
    return gauss, (1.0 - x**2 / sigma_px**2) * gauss


def detection_response(image: np.ndarray, sigma_px: float, spacing_px: float, method: str) -> np.ndarray:
    """The filtered image whose local maxima are the candidate columns (same shape as ``image``, float32)."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    if method == "log":
        return _log_response_and_maxima(image, sigma_px, None)[0]
    if method == "max":
        smooth = ndimage.gaussian_filter(image, sigma=sigma_px, mode="reflect")
        floor = ndimage.minimum_filter(smooth, size=2 * int(np.ceil(spacing_px)) + 1, mode="reflect")
        background = ndimage.gaussian_filter(floor, sigma=spacing_px, mode="reflect")
        return smooth - background
    raise ParameterError(f"unknown detection method {method!r}")


def _log_response_and_maxima(image: np.ndarray, sigma_px: float, inner: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """LoG response (float32) and, when ``inner`` is given, its (2·inner+1)² square maxima, in one pass
    over row strips.

    Each strip (with a halo of kernel radius + ``inner`` rows; edges reflected as scipy's "reflect")
    is filtered by shifted sums: along rows, then down columns, whole rows at a time. That
    vectorises well and stays in cache; scipy's ``correlate1d`` is 1.5× slower along rows and 3×
    down columns on large scans. The square maxima are found in the same strip by shifted maxima:
    the result equals ``response == maximum_filter(response, 2·inner+1, mode="nearest")``.
    """
    gauss, log = gaussian_kernels(sigma_px)
    g32, l32 = gauss.astype(np.float32), log.astype(np.float32)
    radius = len(gauss) // 2
    halo = inner or 0
    height, width = image.shape
    col_index = np.pad(np.arange(width), radius, mode="symmetric")
    response = np.empty_like(image)
    found = []
    for start in range(0, height, STRIP_ROWS):
        stop = min(height, start + STRIP_ROWS)
        first, last = start - halo - radius, stop + halo + radius  # input rows needed (may overhang)
        if first < 0 or last > height:
            rows = np.pad(np.arange(height), (max(0, -first), max(0, last - height)), mode="symmetric")[first + max(0, -first) : last + max(0, -first)]
            strip = image[rows]
        else:
            strip = image[first:last]
        count = last - first - 2 * radius  # output rows: start − halo … stop + halo
        # along rows: the strip reflected left and right, then pairs of shifted columns
        padded = np.empty((strip.shape[0], width + 2 * radius), np.float32)
        padded[:, radius : radius + width] = strip
        padded[:, :radius] = strip[:, col_index[:radius]]
        padded[:, radius + width :] = strip[:, col_index[radius + width :]]
        along_gauss = padded[:, radius : radius + width] * g32[radius]
        along_log = padded[:, radius : radius + width] * l32[radius]
        pair, scaled = np.empty_like(along_gauss), np.empty_like(along_gauss)
        for lag in range(1, radius + 1):
            np.add(padded[:, radius - lag : radius - lag + width], padded[:, radius + lag : radius + lag + width], out=pair)
            along_gauss += np.multiply(pair, g32[radius + lag], out=scaled)
            along_log += np.multiply(pair, l32[radius + lag], out=scaled)
        # down columns: LoG = log(rows) ⊗ gauss(cols) + gauss(rows) ⊗ log(cols)
        out = np.multiply(along_log[radius : radius + count], g32[radius])
        out += np.multiply(along_gauss[radius : radius + count], l32[radius], out=scaled[:count])
        pair, scaled = pair[:count], scaled[:count]
        for lag in range(1, radius + 1):
            np.add(along_log[radius - lag : radius - lag + count], along_log[radius + lag : radius + lag + count], out=pair)
            out += np.multiply(pair, g32[radius + lag], out=scaled)
            np.add(along_gauss[radius - lag : radius - lag + count], along_gauss[radius + lag : radius + lag + count], out=pair)
            out += np.multiply(pair, l32[radius + lag], out=scaled)
        response[start:stop] = out[halo : halo + stop - start]
        if inner is None:
            continue
        # rows outside the image take no part in the maximum ("nearest" edges: a max ignores them)
        across = out.copy()
        if start - halo < 0:
            across[: halo - start] = -np.inf
        if stop + halo > height:
            across[count - (stop + halo - height) :] = -np.inf
        source = across.copy()
        for lag in range(1, inner + 1):
            np.maximum(across[:, lag:], source[:, :-lag], out=across[:, lag:])
            np.maximum(across[:, :-lag], source[:, lag:], out=across[:, :-lag])
        square = across[halo : halo + stop - start].copy()
        for lag in range(1, inner + 1):
            np.maximum(square, across[halo - lag : halo - lag + stop - start], out=square)
            np.maximum(square, across[halo + lag : halo + lag + stop - start], out=square)
        found.append(np.flatnonzero(out[halo : halo + stop - start] == square) + start * width)
    if inner is None:
        return response, None
    found = np.concatenate(found)
    return response, np.stack([found // width, found % width], axis=1)


def _correlate_torch(data, kernel: np.ndarray, axis: int):
    """Correlate a 2D tensor with a symmetric 1D ``kernel`` along ``axis``, scipy's "reflect" edges,
    as shifted sums (exact float32 arithmetic, no TF32 convolution)."""
    import torch

    radius = len(kernel) // 2
    size = data.shape[axis]
    index = torch.as_tensor(np.pad(np.arange(size), radius, mode="symmetric"), device=data.device)
    padded = data.index_select(axis, index)
    weights = [float(w) for w in kernel.astype(np.float32)]
    out = padded.narrow(axis, radius, size) * weights[radius]
    for lag in range(1, radius + 1):
        out += (padded.narrow(axis, radius - lag, size) + padded.narrow(axis, radius + lag, size)) * weights[radius + lag]
    return out


def _response_torch(image, sigma_px: float, spacing_px: float, method: str):
    """:func:`detection_response` for a float32 tensor."""
    import torch.nn.functional as F

    gauss, log = gaussian_kernels(sigma_px)
    if method == "log":
        along_gauss = _correlate_torch(image, gauss, 1)
        along_log = _correlate_torch(image, log, 1)
        # the same order of float32 operations as the CPU strips' column pass
        radius = len(gauss) // 2
        index_rows = _like(np.pad(np.arange(image.shape[0]), radius, mode="symmetric"), image)
        a_gauss, a_log = along_gauss.index_select(0, index_rows), along_log.index_select(0, index_rows)
        g32, l32 = [float(w) for w in gauss.astype(np.float32)], [float(w) for w in log.astype(np.float32)]
        count = image.shape[0]
        out = a_log.narrow(0, radius, count) * g32[radius]
        out += a_gauss.narrow(0, radius, count) * l32[radius]
        for lag in range(1, radius + 1):
            out += (a_log.narrow(0, radius - lag, count) + a_log.narrow(0, radius + lag, count)) * g32[radius + lag]
            out += (a_gauss.narrow(0, radius - lag, count) + a_gauss.narrow(0, radius + lag, count)) * l32[radius + lag]
        return out
    if method == "max":
        smooth = _correlate_torch(_correlate_torch(image, gauss, 1), gauss, 0)
        size = 2 * int(np.ceil(spacing_px)) + 1
        floor = -F.max_pool2d(-smooth[None, None], size, stride=1, padding=size // 2)[0, 0]  # "reflect" edges change no minimum
        wide, _ = gaussian_kernels(spacing_px)
        background = _correlate_torch(_correlate_torch(floor, wide, 1), wide, 0)
        return smooth - background
    raise ParameterError(f"unknown detection method {method!r}")


# ----------------------------------------------------------------------------------------------
# 3. Peaks and threshold


def noise_sd(image) -> float:
    """Robust estimate of the white-noise sd of an image (Immerkær's mask, median absolute value).

    The mask [[1,−2,1],[−2,4,−2],[1,−2,1]] (the outer product of [1,−2,1] with itself) cancels smooth
    structure; on white noise of sd s its output has sd 6s. It is evaluated on every k-th row (all
    columns), k chosen for about 2.5·10⁵ pixels, with "reflect" edges (for a one-pixel reach the same as
    repeating the edge pixel). Works on numpy arrays and torch tensors.
    """
    height, width = image.shape
    step = max(1, (height * width) // 250_000)
    step = min(step, height)
    rows = np.arange(0, height, step)
    take = lambda r: image[_like(np.clip(r, 0, height - 1), image)]  # noqa: E731
    across = take(rows - 1) - 2 * take(rows) + take(rows + 1)
    filtered = across * 1.0
    filtered[:, 1:-1] = across[:, :-2] - 2 * across[:, 1:-1] + across[:, 2:]
    if width > 1:
        filtered[:, 0] = across[:, 1] - across[:, 0]
        filtered[:, -1] = across[:, -2] - across[:, -1]
    else:
        filtered[:, 0] = 0
    median = _percentiles(_xp(filtered).abs(filtered.reshape(-1)), [50.0])[0]
    return float(1.4826 * median / 6.0)


def _filter_gain(sigma_px: float, spacing_px: float, method: str) -> float:
    """sd of the response to unit white noise (the L2 norm of the filter's impulse response)."""
    gauss, log = gaussian_kernels(sigma_px)
    kernel = np.outer(log, gauss) + np.outer(gauss, log) if method == "log" else np.outer(gauss, gauss)
    return float(np.sqrt(np.sum(kernel**2)))


def _threshold_from(noise: float, gain: float, heights, threshold_rel: float) -> float:
    """The larger of 3× the response's noise sd and ``threshold_rel`` × the 90th percentile of ``heights``."""
    typical = float(_percentiles(heights, [90.0])[0]) if heights.shape[0] else 0.0
    return max(3.0 * noise * gain, threshold_rel * typical)


SPIKE_RATIO = 2.0  # LoG response at σ/2 over that at σ above which a peak is one bright pixel, not a column
NEIGHBOUR_SHARE = 0.25  # below σ = 0.9 px: a column's 4 neighbours reach this share of its peak above the floor


def significance_threshold(shape: tuple[int, int], sigma_px: float) -> float:
    """z (response over its noise sd) that the tallest peaks of pure noise do not reach in an image of ``shape``.

    The maximum of N_eff ≈ H·W / (4πσ²) roughly independent Gaussian response values lies near
    √(2 ln N_eff); 3 sd are added for noise that is not Gaussian, and 12/√(min(H, W)) for small
    images, whose noise level is itself estimated from few pixels. About 8 for 10²–10⁴ px scans,
    9 for an 8×8 array. Measured: the tallest peak of uniform, Gaussian and Poisson noise stays
    below it (``tests/test_atoms.py::test_noise_is_not_a_lattice``).
    """
    height, width = shape
    effective = max(height * width / (4.0 * np.pi * sigma_px**2), 1.0)
    return float(np.sqrt(2.0 * np.log(effective)) + 3.0 + 12.0 / np.sqrt(max(min(height, width), 1)))


def stands_out_from_noise(image, peaks, heights, sigma_px: float, noise: float, checked: int = 64) -> bool:
    """True when the image holds columns: some of its tallest peaks are far above the noise and are
    blobs about σ wide rather than single bright pixels.

    Of the ``checked`` tallest ``peaks`` (N, 2 integers; ``heights`` their response), those whose
    scale-normalised LoG response at σ, in units of its noise sd, reaches
    :func:`significance_threshold` and that are blobs count; at least min(3, N) must. A blob: for
    σ ≥ 0.9 px, the response at σ/2 is less than :data:`SPIKE_RATIO` times that at σ (a column of
    width σ gives 0.64, a single-pixel spike 4); for narrower columns, whose two scales a pixel
    tells apart less well (0.8 px columns give 2.5), the ratio is below 1.5 × that and the 4
    neighbours rise to :data:`NEIGHBOUR_SHARE` of its height above the local floor. The response is recomputed here from ``image``, so the test is the same
    whatever the detection method.
    """
    count = int(peaks.shape[0])
    if count == 0:
        return False
    if noise <= 0:          # the robust estimate is 0 where most pixels are equal (sparse counts): use the plain sd
        noise = _plain_noise_sd(image)
        if noise <= 0:
            return True
    order = _numpy(heights).argsort()[::-1][:checked].copy()
    top = peaks[_like(order, peaks)]
    full = _log_at(image, top, sigma_px)
    z = full / (noise * _filter_gain(sigma_px, 4 * sigma_px, "log"))
    ratio = _log_at(image, top, sigma_px / 2.0) / np.where(full > 0, full, np.inf)
    if sigma_px >= 0.9:
        blob = ratio < SPIKE_RATIO
    else:                   # too narrow for two scales alone: a column's 4 neighbours also rise above the local floor
        blob = (ratio < 1.5 * SPIKE_RATIO) & (_neighbour_share(image, top, sigma_px) >= NEIGHBOUR_SHARE)
    passing = (z >= significance_threshold(tuple(image.shape), sigma_px)) & blob
    return int(passing.sum()) >= min(3, count)


def _neighbour_share(image, points, sigma_px: float) -> np.ndarray:
    """(N,) mean of the 4 neighbours of each integer point over the point itself, both above the
    median of a ring 3σ + 1 px out (a Gaussian column of σ ≥ 0.7 px gives ≥ 0.36, a single bright
    pixel about 0)."""
    radius = 3 * sigma_px + 1
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring_rows, ring_cols = np.round(radius * np.sin(angles)).astype(np.int64), np.round(radius * np.cos(angles)).astype(np.int64)
    floor = np.median(_numpy(_gather(image, points, ring_rows, ring_cols), np.float64), axis=0)
    values = _numpy(_gather(image, points, np.array([0, -1, 1, 0, 0]), np.array([0, 0, 0, -1, 1])), np.float64)
    peak = values[0] - floor
    return np.where(peak > 0, (values[1:].mean(axis=0) - floor) / np.where(peak > 0, peak, 1.0), 0.0)


def _plain_noise_sd(image) -> float:
    """sd of Immerkær's mask over the image / 6: the white-noise sd, not robust to structure."""
    data = _numpy(image, np.float64)
    if min(data.shape) < 3:
        return 0.0
    filtered = data[:-2, :-2] - 2 * data[:-2, 1:-1] + data[:-2, 2:] - 2 * (data[1:-1, :-2] - 2 * data[1:-1, 1:-1] + data[1:-1, 2:]) \
        + data[2:, :-2] - 2 * data[2:, 1:-1] + data[2:, 2:]
    return float(filtered.std() / 6.0)


def _log_at(image, points, sigma_px: float) -> np.ndarray:
    """(N,) float64 scale-normalised LoG response of ``image`` at integer ``points`` (N, 2), edges repeated."""
    gauss, log = gaussian_kernels(sigma_px)
    kernel = np.outer(log, gauss) + np.outer(gauss, log)
    radius = len(gauss) // 2
    rows, cols = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    values = _numpy(_gather(image, points, rows.ravel(), cols.ravel()), np.float64)       # (K, N)
    return kernel.ravel() @ values


def automatic_threshold(image: np.ndarray, response: np.ndarray, sigma_px: float, spacing_px: float, method: str, threshold_rel: float) -> float:
    """Response threshold: the larger of 3× the response's noise sd and ``threshold_rel`` × a typical column.

    The typical column height is the 90th percentile of the response at its local maxima.
    """
    _, heights = find_peaks(response, spacing_px, threshold=-np.inf)
    return _threshold_from(noise_sd(image), _filter_gain(sigma_px, spacing_px, method), heights, threshold_rel)


def _disk_radius(spacing_px: float) -> int:
    return max(1, int(spacing_px / 2))


def _inner_of(radius: int) -> int:
    """Half-width of the square inscribed in a disk of ``radius`` (the cheap first pass of the peak search)."""
    return max(1, int(radius / np.sqrt(2)))


def _inner_radius(spacing_px: float) -> int:
    return _inner_of(_disk_radius(spacing_px))


def find_peaks(response: np.ndarray, spacing_px: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``response`` within a disk of radius r = max(1, ⌊spacing/2⌋), above ``threshold``.

    Two passes keep it fast on large scans: maxima of a separable square filter inscribed in the disk
    (half-width ⌊r/√2⌋) give candidates, then each candidate is checked against the rest of its
    disk. A disk, not a square, matters: a square's corners reach a bright neighbour's flank and hide
    a dim column next to it.

    Returns:
        integer peak positions (N, 2) as (row, col), and the response there (N,).
    """
    peaks, heights = _disk_maxima(response, _square_maxima(response, _inner_radius(spacing_px)), _disk_radius(spacing_px))
    keep = heights > threshold
    return peaks[keep], heights[keep]


def _square_maxima(response, inner: int):
    """(N, 2) positions where ``response`` equals its maximum over a (2·inner+1)² square (row-major order)."""
    from scipy import ndimage

    if isinstance(response, np.ndarray):
        maxima = response == ndimage.maximum_filter(response, size=2 * inner + 1, mode="nearest")
        return np.stack(np.nonzero(maxima), axis=1)
    import torch
    import torch.nn.functional as F

    pooled = F.max_pool2d(response[None, None], 2 * inner + 1, stride=1, padding=inner)[0, 0]
    return torch.nonzero(response == pooled)


def _disk_offsets(radius: float, inner: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (rows, cols) of the pixels within ``radius`` of the centre, leaving out the
    (2·inner+1)² square (``inner`` = −1: keep all)."""
    reach = int(np.floor(radius))
    rows, cols = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    keep = (rows**2 + cols**2 <= radius**2) & ~((np.abs(rows) <= inner) & (np.abs(cols) <= inner))
    return rows[keep], cols[keep]


def _gather(image, centres, row_offsets: np.ndarray, col_offsets: np.ndarray, fill=None):
    """(K, N) values of ``image`` at ``centres`` (N, 2 integers) + the K offsets (offsets first: the
    reductions over a window then run along contiguous rows of N values, which vectorises well).

    Outside the image the edge pixel is repeated, or ``fill`` is used when given. Works on numpy arrays
    and torch tensors; interior centres are read by flat indices (one gather), the few near the edges
    by clipped (row, col) indices.
    """
    xp = _xp(image)
    height, width = image.shape
    count = centres.shape[0]
    flat = image.reshape(-1)
    reach_rows, reach_cols = int(np.abs(row_offsets).max(initial=0)), int(np.abs(col_offsets).max(initial=0))
    rows, cols = centres[:, 0], centres[:, 1]
    interior = (rows >= reach_rows) & (rows < height - reach_rows) & (cols >= reach_cols) & (cols < width - reach_cols)
    flat_offsets = _like(row_offsets * width + col_offsets, centres)[:, None]
    if bool(interior.all()):
        return flat[flat_offsets + (rows * width + cols)[None, :]]
    out = np.empty((len(row_offsets), count), dtype=image.dtype) if xp is np else image.new_empty((len(row_offsets), count))
    inside = xp.where(interior)[0]
    outside = xp.where(~interior)[0]
    out[:, inside] = flat[flat_offsets + (rows[inside] * width + cols[inside])[None, :]]
    edge_rows = rows[outside][None, :] + _like(row_offsets, centres)[:, None]
    edge_cols = cols[outside][None, :] + _like(col_offsets, centres)[:, None]
    values = image[edge_rows.clip(0, height - 1), edge_cols.clip(0, width - 1)]
    if fill is not None:
        off_image = (edge_rows < 0) | (edge_rows >= height) | (edge_cols < 0) | (edge_cols >= width)
        values = xp.where(off_image, fill, values)
    out[:, outside] = values
    return out


def _disk_maxima(response, candidates, radius: int):
    """The candidates (square maxima) that are also maxima of their disk of ``radius``, and their
    response; one peak of any flat top (equal maxima closer than ``radius``) is kept."""
    xp = _xp(response)
    if candidates.shape[0] == 0:
        return candidates, response[candidates[:, 0], candidates[:, 1]]
    ring_rows, ring_cols = _disk_offsets(radius, _inner_of(radius))
    heights = response[candidates[:, 0], candidates[:, 1]]
    if len(ring_rows):
        ring = _gather(response, candidates, ring_rows, ring_cols, fill=-np.inf)
        keep = heights >= xp.amax(ring, axis=0)
        candidates, heights = candidates[keep], heights[keep]
    return _merge_plateaus(candidates, heights, radius)


def _merge_plateaus(peaks, heights, radius: int):
    """Keep one peak of any group closer than ``radius`` (equal maxima on a flat top).

    Two distinct disk maxima closer than the disk radius must have exactly equal heights, so only
    peaks whose height occurs more than once are searched for neighbours (in row-major order, the
    first of a pair is kept).
    """
    from scipy.spatial import cKDTree

    xp = _xp(heights)
    if peaks.shape[0] < 2:
        return peaks, heights
    values = np.sort(heights) if xp is np else xp.sort(heights).values
    if not bool((values[1:] == values[:-1]).any()):
        return peaks, heights  # no repeated height: no flat top (the usual case)
    order = np.argsort(heights, kind="stable") if xp is np else xp.argsort(heights, stable=True)
    values = heights[order]
    same = values[1:] == values[:-1]
    repeated = _numpy(xp.unique(xp.concatenate([order[1:][same], order[:-1][same]])))
    positions = _numpy(peaks[_like(repeated, peaks)])
    pairs = cKDTree(positions).query_pairs(r=radius, output_type="ndarray")
    if len(pairs) == 0:
        return peaks, heights
    pairs = np.sort(repeated[pairs], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    drop = np.zeros(peaks.shape[0], bool)
    for first, second in pairs:
        if not drop[first]:
            drop[second] = True
    keep = _like(~drop, peaks)
    return peaks[keep], heights[keep]


# ----------------------------------------------------------------------------------------------
# 4. Refinement


def refinement_radius(sigma_px: float, spacing_px: float) -> int:
    """Half-width of the centre-of-mass window: about 2σ, but less than half the spacing."""
    return int(np.clip(np.ceil(2.0 * sigma_px - 1e-6), 2, max(2, int(spacing_px / 2))))


def fit_disk_radius(sigma_px: float, spacing_px: float) -> float:
    """Radius of the disk of pixels a Gaussian fit uses: 2.5σ, at most 0.45 spacing (neighbours stay out)."""
    return float(max(1.5, min(2.5 * sigma_px, 0.45 * spacing_px)))


def _parabola_start(response, peaks):
    """Subpixel start (N, 2) float64: the vertex of a parabola through the response at each peak and
    its two neighbours along each axis (offsets clipped to ±½ px)."""
    xp = _xp(response)
    values = _f64(_gather(response, peaks, np.array([0, -1, 1, 0, 0]), np.array([0, 0, 0, -1, 1])))
    centre = values[0]
    offsets = []
    for before, after in ((values[1], values[2]), (values[3], values[4])):
        curvature = before - 2 * centre + after
        safe = xp.where(curvature < 0, curvature, -1.0 + 0 * curvature)
        offsets.append(xp.where(curvature < 0, 0.5 * (before - after) / safe, 0 * curvature).clip(-0.5, 0.5))
    return _f64(peaks) + xp.stack(offsets, axis=1)


def refine_center_of_mass(image, peaks, sigma_px: float, spacing_px: float, iterations: int = 3, chunk: int = 16384):
    """Centre of mass of each column above its window's minimum; the window follows the estimate.

    The window is a square of half-width :func:`refinement_radius`; its minimum is the baseline and
    the pixels within radius + ½ of its centre are weighted. Numpy arrays or torch tensors; columns
    are done in chunks (cache-sized on the CPU), each iterated until its window stops moving.

    Returns:
        (N, 2) float64 positions (row, col) (numpy, or a tensor for tensor inputs).
    """
    xp = _xp(image)
    positions = _f64(peaks * 0)
    if peaks.shape[0] == 0:
        return positions
    height, width = image.shape
    radius = refinement_radius(sigma_px, spacing_px)
    square_rows, square_cols = (a.ravel() for a in np.mgrid[-radius : radius + 1, -radius : radius + 1])
    in_disk = square_rows**2 + square_cols**2 <= (radius + 0.5) ** 2
    disk = _like(in_disk.astype(np.float32)[:, None], image)
    row_weights = _like((square_rows * in_disk).astype(np.float32)[:, None], image)
    col_weights = _like((square_cols * in_disk).astype(np.float32)[:, None], image)
    limit = _like(np.array([height - 1, width - 1]), peaks)
    chunk = chunk if xp is np else 1 << 22
    for first in range(0, peaks.shape[0], chunk):
        index = xp.where(peaks[first : first + chunk, 0] >= 0)[0] + first
        centres = peaks[index] * 1
        for _ in range(iterations):
            windows = _gather(image, centres, square_rows, square_cols)
            windows = windows - xp.amin(windows, axis=0)[None, :]
            total = _f64((windows * disk).sum(axis=0))
            total = xp.where(total == 0, 1.0 + 0 * total, total)
            shift = xp.stack([_f64((windows * row_weights).sum(axis=0)), _f64((windows * col_weights).sum(axis=0))], axis=1) / total[:, None]
            found = _f64(centres) + shift
            positions[index] = found
            new_centres = xp.round(found).long() if xp is not np else np.round(found).astype(np.int64)
            new_centres = xp.minimum(xp.maximum(new_centres, 0 * limit), limit)
            moved = (new_centres != centres).any(axis=1)
            index, centres = index[moved], new_centres[moved]
            if index.shape[0] == 0:
                break
    return positions


def refine_gaussian(image, peaks, sigma_px: float, spacing_px: float, iterations: int = 12, chunk: int | None = None, progress=None, start=None) -> AtomTable:
    """Fit ``A·exp(−d²/2s²) + background`` around each peak by batched Levenberg–Marquardt.

    Two passes: on an even sample of ≤ ``WIDTH_SAMPLE`` columns, all seven parameters free
    (A, centre, s, plane background) to measure the column width; then every column with the width
    fixed at the sample's median and a flat background (A, centre, b₀), which lowers the variance
    of the positions at low dose. Only pixels within :func:`fit_disk_radius` of the window centre
    enter either fit.

    ``start``: (N, 2) starting positions (default: the centre of mass). A fit that fails (diverges,
    leaves its window, wanders more than max(1, σ) from the start, or returns a non-positive
    amplitude) keeps the starting position and is flagged in ``fit_ok``. ``image`` and ``peaks`` may
    be numpy arrays or torch tensors; the table is numpy.
    """
    xp = _xp(image)
    count = peaks.shape[0]
    if count == 0:
        empty = np.zeros(0)
        return AtomTable(np.zeros((0, 2)), empty, empty, empty, np.zeros(0, bool))
    if start is None:
        start = refine_center_of_mass(image, peaks, sigma_px, spacing_px)
    start = _f64(start)
    disk_radius = fit_disk_radius(sigma_px, spacing_px)
    chunk = chunk or (16384 if xp is np else 1 << 22)
    chunks_total = 1 + (count + chunk - 1) // chunk
    if progress is not None:
        progress(0, chunks_total)

    # Pass 1: the column width, from a free fit of an even sample of the columns (float64).
    disk_rows, disk_cols = _disk_offsets(disk_radius)
    sample = _like(np.arange(0, count, max(1, -(-count // WIDTH_SAMPLE))), peaks)
    initial = start[sample] - _f64(peaks[sample])
    fitted, good = _fit_free_width(_f64(_gather(image, peaks[sample], disk_rows, disk_cols)), disk_rows, disk_cols, initial, sigma_px, iterations)
    good = _numpy(good & (((fitted[:, 1:3] - initial) ** 2).sum(axis=1) <= max(1.0, sigma_px) ** 2))
    if good.any():
        sigma_px = float(np.median(_numpy(fitted[:, 3])[good]))

    # Pass 2: every column, width fixed, flat background (float32 data; the systems in float64).
    positions = np.empty((count, 2))
    amplitude = np.empty(count)
    ok = np.empty(count, bool)
    for index, first in enumerate(range(0, count, chunk)):
        part = slice(first, min(first + chunk, count))
        data = _gather(image, peaks[part], disk_rows, disk_cols)
        initial = start[part] - _f64(peaks[part])
        params, fine = _fit_fixed_width(data, disk_rows, disk_cols, initial, sigma_px, iterations)
        moved = ((params[:, 1:3] - initial) ** 2).sum(axis=1) <= max(1.0, sigma_px) ** 2  # wandered off: keep the start
        fine = fine & moved
        fitted_positions = xp.where(fine[:, None], _f64(peaks[part]) + params[:, 1:3], start[part])
        positions[part] = _numpy(fitted_positions)
        amplitude[part] = _numpy(params[:, 0])
        ok[part] = _numpy(fine)
        if progress is not None:
            progress(index + 2, chunks_total)
    return AtomTable(positions, amplitude, np.full(count, sigma_px), np.zeros(count), ok)


def _packed(i: int, j: int, size: int) -> int:
    """Row of entry (i, j) of a symmetric size × size matrix stored as its upper triangle, row by row."""
    i, j = min(i, j), max(i, j)
    return i * size - i * (i - 1) // 2 + (j - i)


def _solve_spd(packed, rhs, diagonal_add=None):
    """Solve symmetric positive-definite systems laid out atoms-last: ``packed`` (F(F+1)/2, N) holds
    each matrix's upper triangle row by row, ``rhs`` is (F, N), ``diagonal_add`` (F, N) is added to
    the diagonal (the LM damping) if given.

    A Cholesky factorisation written out over F, each operation on N contiguous values (fast for
    F ≤ 7 and many systems; numpy or torch). Returns x (F, N) and ok (N,): False where the matrix was
    not positive definite (x is then 0).
    """
    xp = _xp(packed)
    size = rhs.shape[0]
    entry = lambda i, j: packed[_packed(i, j, size)] + (diagonal_add[i] if i == j and diagonal_add is not None else 0)  # noqa: E731
    lower = [[None] * size for _ in range(size)]
    ok = None
    for j in range(size):
        pivot = entry(j, j)
        for k in range(j):
            pivot = pivot - lower[j][k] * lower[j][k]
        ok = (pivot > 0) if ok is None else ok & (pivot > 0)
        lower[j][j] = xp.sqrt(xp.where(pivot > 0, pivot, 1.0 + 0 * pivot))
        for i in range(j + 1, size):
            value = entry(i, j)
            for k in range(j):
                value = value - lower[i][k] * lower[j][k]
            lower[i][j] = value / lower[j][j]
    z = [None] * size
    for i in range(size):
        value = rhs[i]
        for k in range(i):
            value = value - lower[i][k] * z[k]
        z[i] = value / lower[i][i]
    x = [None] * size
    for i in reversed(range(size)):
        value = z[i]
        for k in range(i + 1, size):
            value = value - lower[k][i] * x[k]
        x[i] = value / lower[i][i]
    x = xp.stack(x, axis=0)
    return xp.where(ok[None, :], x, 0 * x), ok


def _levenberg_marquardt(params, values, evaluate, normal_equations, iterations: int, tolerance: float = 1e-4, project=None):
    """Batched Levenberg–Marquardt, atoms last: ``params`` (F, N) (updated in place and returned),
    ``values`` (P, N) the data.

    ``evaluate(p, values)`` returns (state, cost (n,)); ``normal_equations(p, state)`` returns JᵀJ's
    upper triangle (F(F+1)/2, n) and Jᵀr (F, n); ``project(p)``, if given, maps a trial onto the
    allowed parameters. Damping λ per column (×⅓ after a step that lowers the cost, ×4 otherwise)
    scales JᵀJ's diagonal. Near the optimum (centre steps below 10⁻² px) every step is accepted:
    there the Gauss–Newton step is reliable, while a float32 cost cannot resolve the last 10⁻³ px
    at low dose, so a cost test would stop each engine (or chunk) at a different point. A column
    stops when its centre step (parameters 1 and 2) is below ``tolerance`` px or its damping runs
    away; the columns still iterating are kept compact, so late iterations cost little.
    """
    xp = _xp(values)
    size = params.shape[0]
    state, cost = evaluate(params, values)
    matrix, gradient = normal_equations(params, state)
    damping = cost * 0 + 1e-2
    index = xp.where(cost == cost)[0]
    current = params * 1
    on_diagonal = _like(np.array([_packed(i, i, size) for i in range(size)]), matrix)
    for _ in range(iterations):
        if index.shape[0] == 0:
            break
        step, solved = _solve_spd(matrix, gradient, damping[None, :] * (matrix[on_diagonal] + 1e-9))
        trial = current + step
        if project is not None:
            trial = project(trial)
        trial_state, trial_cost = evaluate(trial, values)
        centre_step = xp.maximum(xp.abs(step[1]), xp.abs(step[2]))
        better = solved & xp.isfinite(trial_cost) & ((trial_cost < cost) | (centre_step < 1e-2))
        new_matrix, new_gradient = normal_equations(trial, trial_state)
        if bool(better.all()):
            current, cost, matrix, gradient = trial, trial_cost, new_matrix, new_gradient
        else:
            current = xp.where(better[None, :], trial, current)
            cost = xp.where(better, trial_cost, cost)
            matrix = xp.where(better[None, :], new_matrix, matrix)
            gradient = xp.where(better[None, :], new_gradient, gradient)
        damping = xp.where(better, damping / 3.0, damping * 4.0)
        done = (solved & (centre_step < tolerance)) | (damping > 1e6)
        if bool(done.any()):
            params[:, index[done]] = current[:, done]
            going = ~done
            index, values, current, cost = index[going], values[:, going], current[:, going], cost[going]
            matrix, gradient, damping = matrix[:, going], gradient[:, going], damping[going]
    params[:, index] = current
    return params


def _offsets_like(row_offsets: np.ndarray, col_offsets: np.ndarray, data):
    """The pixel offsets as (P, 1) arrays of ``data``'s kind, dtype and device."""
    y, x = (_like(v.astype(np.float64)[:, None], data) for v in (row_offsets, col_offsets))
    return (y.astype(data.dtype), x.astype(data.dtype)) if isinstance(data, np.ndarray) else (y.to(data.dtype), x.to(data.dtype))


def _fit_fixed_width(data, row_offsets: np.ndarray, col_offsets: np.ndarray, initial, sigma_px: float, iterations: int, tolerance: float = 1e-4):
    """Batched LM fit of ``A·exp(−((y−r₀)² + (x−c₀)²)/2σ²) + b₀`` with σ fixed, to ``data`` (P, N): the
    pixels at (``row_offsets``, ``col_offsets``) from each window centre, pixels first. Numpy arrays
    (float32 data is fastest) or torch tensors.

    The Jacobian columns are e, κ·(y−r₀), κ·(x−c₀), 1 with e the Gaussian and κ = A·e/σ²; every entry
    of JᵀJ and Jᵀr is a moment of e², e or r·e against 1, y, x, y², x², xy, so each iteration costs
    two small exps (the Gaussian is separable), a few elementwise operations and three small einsums
    (no BLAS threads, which stall on a busy machine). The 4×4 systems are solved in float64.

    Returns parameters (N, 4) float64 [A, r₀, c₀, b₀] (offsets from the window centre) and ok (N,):
    finite, positive amplitude, centre inside the window.
    """
    xp = _xp(data)
    pixels = data.shape[0]
    dtype = data.dtype
    cast = (lambda v: v.astype(dtype)) if xp is np else (lambda v: v.to(dtype))
    y, x = _offsets_like(row_offsets, col_offsets, data)
    basis = xp.concatenate([y * 0 + 1, y, x, y * y, x * x, x * y], axis=1)  # (P, 6)
    inv_two_s2, inv_s2 = 1.0 / (2.0 * sigma_px**2), 1.0 / sigma_px**2
    # the Gaussian is separable: exp(−(y−r₀)²/2σ²)·exp(−(x−c₀)²/2σ²), each factor taken on the few
    # distinct row (column) offsets and spread to the pixels by a gather of rows
    reach = int(max(np.abs(row_offsets).max(), np.abs(col_offsets).max()))
    grid = cast(_like(np.arange(-reach, reach + 1, dtype=np.float64)[:, None], data))
    row_of, col_of = _like(row_offsets + reach, data), _like(col_offsets + reach, data)
    low, high = xp.amin(data, axis=0), xp.amax(data, axis=0)
    params = xp.stack([_f64(high - low), _f64(initial[:, 0]), _f64(initial[:, 1]), _f64(low)], axis=0)  # (4, N)

    def evaluate(p, values):
        amp, r0, c0, b0 = p[0], p[1], p[2], p[3]
        along_rows = grid - cast(r0)[None, :]
        along_cols = grid - cast(c0)[None, :]
        along_rows = xp.exp(along_rows * along_rows * -inv_two_s2)
        along_cols = xp.exp(along_cols * along_cols * -inv_two_s2)
        gauss = along_rows[row_of] * along_cols[col_of]  # (P, n)
        residual = values - cast(b0)[None, :]
        residual -= cast(amp)[None, :] * gauss
        return (gauss, residual), _f64((residual * residual).sum(axis=0))

    def normal_equations(p, state):
        gauss, residual = state
        amp, r0, c0 = p[0], p[1], p[2]
        w = _f64(xp.einsum("pn,pk->kn", gauss * gauss, basis))  # Σe²·[1, y, x, y², x², xy]
        e = _f64(xp.einsum("pn,pk->kn", gauss, basis[:, :3]))  # Σe·[1, y, x]
        r = _f64(xp.einsum("pn,pk->kn", residual * gauss, basis[:, :3]))  # Σr·e·[1, y, x]
        r_sum = _f64(residual.sum(axis=0))
        k = amp * inv_s2
        matrix = xp.stack(
            [
                w[0], k * (w[1] - r0 * w[0]), k * (w[2] - c0 * w[0]), e[0],  # row A
                k * k * (w[3] - 2 * r0 * w[1] + r0 * r0 * w[0]), k * k * (w[5] - r0 * w[2] - c0 * w[1] + r0 * c0 * w[0]), k * (e[1] - r0 * e[0]),  # row r₀
                k * k * (w[4] - 2 * c0 * w[2] + c0 * c0 * w[0]), k * (e[2] - c0 * e[0]),  # row c₀
                0 * k + pixels,  # row b₀
            ],
            axis=0,
        )
        gradient = xp.stack([r[0], k * (r[1] - r0 * r[0]), k * (r[2] - c0 * r[0]), r_sum], axis=0)
        return matrix, gradient

    params = _levenberg_marquardt(params, data, evaluate, normal_equations, iterations, tolerance)
    inside = (xp.abs(params[1]) <= reach) & (xp.abs(params[2]) <= reach)
    return params.T, inside & (params[0] > 0) & xp.isfinite(params).all(axis=0)


def _fit_free_width(data, row_offsets: np.ndarray, col_offsets: np.ndarray, initial, sigma_px: float, iterations: int):
    """Batched LM fit of ``A·exp(−((y−r₀)² + (x−c₀)²)/2s²) + b₀ + b_r·y + b_c·x``, all seven parameters
    free, to ``data`` (P, N) (pixels first, float64; numpy or torch). Used on a sample of columns to
    measure their width s; the Jacobian is kept as its seven (P, N) columns and JᵀJ's 28 entries are
    sums of their products.

    Returns parameters (N, 7) [A, r₀, c₀, s, b₀, b_r, b_c] and ok (N,): finite, positive amplitude,
    centre inside the window, 0.25σ < s < 4σ + 1.
    """
    xp = _xp(data)
    y, x = _offsets_like(row_offsets, col_offsets, data)
    reach = int(max(np.abs(row_offsets).max(), np.abs(col_offsets).max()))
    low, high = xp.amin(data, axis=0), xp.amax(data, axis=0)
    zero = low * 0
    params = xp.stack([high - low, _f64(initial[:, 0]), _f64(initial[:, 1]), zero + sigma_px, low, zero, zero], axis=0)  # (7, N)
    pairs = [(i, j) for i in range(7) for j in range(i, 7)]

    def evaluate(p, values):
        amp, r0, c0, width, b0, br, bc = (p[i][None, :] for i in range(7))
        dy, dx = y - r0, x - c0
        d2 = dy * dy + dx * dx
        gauss = xp.exp(-d2 / (2 * width * width))
        scaled = amp * gauss / (width * width)
        ones = values * 0 + 1
        residual = values - (amp * gauss + b0 + br * y + bc * x)
        jacobian = [gauss, scaled * dy, scaled * dx, scaled * d2 / width, ones, y * ones, x * ones]
        return (jacobian, residual), (residual * residual).sum(axis=0)

    def normal_equations(p, state):
        jacobian, residual = state
        jacobian = xp.stack(jacobian, axis=0)  # (7, P, n)
        full = xp.einsum("ipn,jpn->ijn", jacobian, jacobian)
        matrix = xp.stack([full[i, j] for i, j in pairs], axis=0)
        return matrix, xp.einsum("ipn,pn->in", jacobian, residual)

    def project(trial):
        trial[3] = xp.abs(trial[3])
        return trial

    params = _levenberg_marquardt(params, data, evaluate, normal_equations, iterations, project=project)
    inside = (xp.abs(params[1]) <= reach) & (xp.abs(params[2]) <= reach)
    plausible = (params[0] > 0) & (params[3] > 0.25 * sigma_px) & (params[3] < 4 * sigma_px + 1)
    return params.T, inside & plausible & xp.isfinite(params).all(axis=0)


def keep_inside(table: AtomTable, shape: tuple[int, int]) -> AtomTable:
    """Drop atoms whose refined position lies outside the image ([−0.5, H−0.5) × [−0.5, W−0.5))."""
    height, width = shape
    rows, cols = table.positions[:, 0], table.positions[:, 1]
    keep = (rows >= -0.5) & (rows < height - 0.5) & (cols >= -0.5) & (cols < width - 0.5)
    order = np.lexsort((cols[keep], rows[keep]))
    return AtomTable(
        positions=table.positions[keep][order],
        intensity=table.intensity[keep][order],
        sigma_px=table.sigma_px[keep][order],
        score=table.score[keep][order],
        fit_ok=table.fit_ok[keep][order],
        sublattice=table.sublattice[keep][order],
        displacement_px=table.displacement_px[keep][order],
    )
