"""Reading microscope images into one common form, :class:`Scan`.

Every reader returns scans as float32 arrays of shape (C, H, W): C co-registered channels, H rows,
W columns. Pixel (row, col) = (0, 0) is the top-left corner of the image as the instrument stores
it. The calibration (size of one pixel and its unit) is kept when the file has it; otherwise
``pixel_size`` is 1.0 and ``unit`` is ``"px"``.

Supported inputs (chosen by the file's extension):

========================  =====================================================================
``.tif`` ``.tiff``        tifffile; single images or stacks of any integer or float dtype;
                          ImageJ and resolution-tag calibration
``.png`` ``.jpg`` ...     imageio (through scikit-image); colour images are averaged to grey
``.npy``                  numpy; (H, W), (N, H, W)
``.h5`` ``.hdf5``         h5py; ``file.h5:/path/to/dataset``, or a HyperSpy file
``.hspy``                 HyperSpy HDF5 (calibration from its axes)
``.dm3`` ``.dm4``         Gatan DigitalMicrograph, through rosettasciio
``.emd``                  Velox / Berkeley EMD, through rosettasciio
``.ser``                  FEI TIA, through rosettasciio
``.sxm``                  Nanonis STM scans, through nanonispy2 (forward scans; 'up' scans are
                          flipped so that row 0 is the top of the image)
========================  =====================================================================

A 3D array (N, H, W) is read as N separate frames (``stack_as="frames"``) or as one scan with N
co-registered channels (``stack_as="channels"``, for example HAADF + ABF acquired together).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "HDF5_SUFFIXES",
    "LENGTH_UNITS_M",
    "NANONIS_SUFFIXES",
    "PLAIN_IMAGE_SUFFIXES",
    "ROSETTA_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TIFF_SUFFIXES",
    "Scan",
    "file_sha256",
    "read_scans",
    "split_dataset_path",
    "validate_scan",
]

TIFF_SUFFIXES = {".tif", ".tiff"}
PLAIN_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".hspy", ".nxs"}
ROSETTA_SUFFIXES = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd", ".ser": "tia"}
NANONIS_SUFFIXES = {".sxm"}
SUPPORTED_SUFFIXES = TIFF_SUFFIXES | PLAIN_IMAGE_SUFFIXES | HDF5_SUFFIXES | set(ROSETTA_SUFFIXES) | NANONIS_SUFFIXES | {".npy"}

# Units that a length calibration may be expressed in, and their size in metres.
LENGTH_UNITS_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "nm": 1e-9, "Å": 1e-10, "A": 1e-10, "pm": 1e-12}


@dataclass
class Scan:
    """One image (possibly multichannel) with its calibration and origin.

    Attributes
    ----------
    data : (C, H, W) float32 ndarray
        Rows are y, columns are x: a pixel is ``data[channel, row, col]``.
    pixel_size : float
        Size of one pixel in ``unit`` (square pixels assumed; if the file has different row and
        column sizes, the row size is kept and ``pixel_size_col`` records the other).
    unit : str
        Length unit of ``pixel_size`` (``"nm"``, ``"pm"``...), ``"px"`` when uncalibrated.
    source : str
        The path the scan was read from, as given by the user (may include ``:/dataset``).
    frame : int
        Index of this scan within a multi-frame file (0 for single images).
    channel_names : list of str
        One name per channel.
    sha256 : str
        Content hash of the source file (hex).
    pixel_size_col : float or None
        The column pixel size in ``unit`` where it differs from the row size, else None.
    """

    data: np.ndarray
    pixel_size: float = 1.0
    unit: str = "px"
    source: str = ""
    frame: int = 0
    channel_names: list[str] = field(default_factory=list)
    sha256: str = ""
    pixel_size_col: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def name(self) -> str:
        """A short label: file name, plus the frame number for multi-frame files."""
        base = Path(split_dataset_path(self.source)[0]).name
        return f"{base}[{self.frame}]" if self.frame else base


def split_dataset_path(spec: str) -> tuple[str, str | None]:
    """Split ``"file.h5:/group/data"`` into ``("file.h5", "/group/data")``.

    Only a colon followed by ``/`` after an HDF5 suffix counts, so Windows drive letters and
    colons in directory names are left alone.

    Parameters
    ----------
    spec : str
        A path, possibly followed by ``:/dataset``.

    Returns
    -------
    path : str
        The file's path.
    dataset : str or None
        The dataset inside it, None when not given.

    Examples
    --------
    >>> split_dataset_path("scans/a.h5:/entry/data")
    ('scans/a.h5', '/entry/data')
    >>> split_dataset_path("C:/scans/a.tif")
    ('C:/scans/a.tif', None)
    """
    for suffix in HDF5_SUFFIXES:
        marker = suffix + ":/"
        index = spec.lower().rfind(marker)
        if index >= 0:
            cut = index + len(suffix)
            return spec[:cut], spec[cut + 1 :]
    return spec, None


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, hex encoded.

    Parameters
    ----------
    path : str or path
        The file.
    chunk_bytes : int, default 4 MiB
        Bytes read at a time.

    Returns
    -------
    str
        The 64-character hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_scans(spec: str | Path, stack_as: str = "frames") -> list[Scan]:
    """Read every scan in one file.

    Parameters
    ----------
    spec : str or Path
        A path, or ``path.h5:/dataset`` for a dataset inside an HDF5 file. The format follows the
        suffix (:data:`SUPPORTED_SUFFIXES`: TIFF, DM3/4, EMD, SER, Nanonis SXM, HDF5, HyperSpy,
        PNG/JPEG, npy).
    stack_as : {"frames", "channels"}
        ``"frames"`` to read a 3D array (N, H, W) as N scans, ``"channels"`` to read it as one scan
        of N channels.

    Returns
    -------
    list of Scan
        Each with data (C, H, W) float32, validated (finite, not constant, at least 4×4 px), its
        pixel size and unit from the file's calibration (``"px"`` when there is none) and the
        file's SHA-256.

    Raises
    ------
    InputError
        The file is missing, unreadable, of an unsupported format, or holds no usable image
        (wrong dimensionality, NaN/Inf pixels, constant).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from microvae.images import read_scans
    >>> path = tempfile.mkdtemp() + "/stack.npy"
    >>> np.save(path, np.random.default_rng(0).random((2, 32, 48)))
    >>> scans = read_scans(path)                      # two frames
    >>> len(scans), scans[0].data.shape, scans[0].data.dtype, scans[0].unit
    (2, (1, 32, 48), dtype('float32'), 'px')
    >>> read_scans(path, stack_as="channels")[0].data.shape
    (2, 32, 48)
    """
    if stack_as not in ("frames", "channels"):
        raise InputError(f"stack_as must be 'frames' or 'channels', got {stack_as!r}")
    spec = str(spec)
    path_str, dataset = split_dataset_path(spec)
    path = Path(path_str)
    if not path.exists():
        raise InputError(f"{spec}: no such file")
    if path.is_dir():
        raise InputError(f"{spec}: is a directory, expected an image file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = " ".join(sorted(SUPPORTED_SUFFIXES))
        raise InputError(f"{spec}: unsupported format {suffix or '(no extension)'!r}; supported: {supported}")
    if path.stat().st_size == 0:
        raise InputError(f"{spec}: file is empty")
    try:
        with _quiet_readers():
            array, calibration, channel_names = _read_array(path, suffix, dataset)
    except InputError:
        raise
    except Exception as error:  # a reader failed on a corrupt or truncated file
        raise InputError(f"{spec}: cannot read as {suffix} ({_short(error)}); is the file complete and of that format?") from error
    frames = _to_frames(np.asarray(array), stack_as, spec)
    sha = file_sha256(path)
    pixel_size, unit, pixel_size_col = calibration
    scans = []
    for index, frame in enumerate(frames):
        names = channel_names if len(channel_names) == frame.shape[0] else [f"channel{c}" for c in range(frame.shape[0])]
        scan = Scan(
            data=frame,
            pixel_size=pixel_size,
            unit=unit,
            source=spec,
            frame=index,
            channel_names=list(names),
            sha256=sha,
            pixel_size_col=pixel_size_col,
        )
        validate_scan(scan)
        scans.append(scan)
    return scans


def validate_scan(scan: Scan) -> None:
    """Refuse scans that no later stage can use: NaN/Inf pixels, constant channels, tiny images.

    Parameters
    ----------
    scan : Scan
        Its data must be (C, H, W) with H, W ≥ 4 px.

    Raises
    ------
    InputError
        Wrong dimensionality, smaller than 4×4 px, NaN/Inf pixels, or a constant channel.
    """
    label = scan.name
    if scan.data.ndim != 3:
        raise InputError(f"{label}: expected a (C, H, W) image, got shape {scan.data.shape}")
    height, width = scan.shape
    if height < 4 or width < 4:
        raise InputError(f"{label}: image is {height}×{width} pixels, expected at least 4×4")
    finite = np.isfinite(scan.data)
    if not finite.all():
        bad = int((~finite).sum())
        raise InputError(f"{label}: {bad} pixel(s) are NaN or Inf; expected finite intensities (crop or inpaint them first)")
    for channel in range(scan.n_channels):
        plane = scan.data[channel]
        if float(plane.max()) == float(plane.min()):
            raise InputError(f"{label}: channel {channel} is constant ({float(plane.min()):g}); expected an image with contrast")


@contextlib.contextmanager
def _quiet_readers():
    """Silence what third-party readers print while they parse a file (tifffile's logged
    complaints about damaged tags, numpy's cast warnings on garbage data): a bad file is reported
    once, as the :class:`InputError` raised here, and a readable one needs no commentary."""
    loggers = [logging.getLogger(name) for name in ("tifffile", "rsciio", "nanonispy2", "imageio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # their child loggers (rsciio.digitalmicrograph, ...) inherit the level
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return first[:200]


def _to_frames(array: np.ndarray, stack_as: str, spec: str) -> list[np.ndarray]:
    """Turn a 2D/3D/4D array into a list of (C, H, W) float32 frames."""
    if array.dtype.kind not in "biuf":
        raise InputError(f"{spec}: pixel type {array.dtype} is not numeric; expected integer or float pixels")
    if array.ndim > 4:
        array = np.squeeze(array)
    if array.ndim == 2:
        stack = array[None, None]
    elif array.ndim == 3:
        stack = array[:, None] if stack_as == "frames" else array[None]
    elif array.ndim == 4:
        stack = array  # (N, C, H, W)
    else:
        raise InputError(f"{spec}: array of shape {array.shape} ({array.ndim}D); expected an image (H, W), a stack (N, H, W) or (N, C, H, W)")
    return [np.ascontiguousarray(frame, dtype=np.float32) for frame in stack]


def _read_array(path: Path, suffix: str, dataset: str | None):
    """Dispatch on the suffix. Returns (array, (pixel_size, unit, pixel_size_col), channel_names)."""
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), (1.0, "px", None), []
    if suffix in PLAIN_IMAGE_SUFFIXES:
        return _read_plain_image(path)
    if suffix in HDF5_SUFFIXES:
        return _read_hdf5(path, dataset)
    if suffix in ROSETTA_SUFFIXES:
        return _read_rosetta(path, ROSETTA_SUFFIXES[suffix])
    if suffix in NANONIS_SUFFIXES:
        return _read_sxm(path)
    raise InputError(f"{path}: unsupported format {suffix!r}")  # pragma: no cover (checked earlier)


def _read_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        calibration = _tiff_calibration(tif)
    if array.ndim == 3 and axes.endswith("S") and array.shape[-1] in (3, 4):  # RGB(A) samples
        array = array[..., :3].mean(axis=-1)
    return array, calibration, []


def _tiff_calibration(tif) -> tuple[float, str, float | None]:
    """Pixel size from ImageJ metadata (``unit`` + XResolution) or the resolution tags."""
    page = tif.pages[0]
    tags = page.tags
    imagej = tif.imagej_metadata or {}
    unit = imagej.get("unit")
    if "XResolution" not in tags:
        return 1.0, "px", None
    numerator, denominator = tags["XResolution"].value
    if numerator == 0:
        return 1.0, "px", None
    size_col = denominator / numerator  # units per pixel along x (columns)
    size_row = size_col
    if "YResolution" in tags:
        y_num, y_den = tags["YResolution"].value
        if y_num:
            size_row = y_den / y_num
    col_extra = size_col if not np.isclose(size_col, size_row) else None
    if unit:
        unit = {"micron": "um", "\\u00B5m": "µm", "angstrom": "Å"}.get(unit, unit)
        if unit in ("pixel", "pixels"):
            return 1.0, "px", None
        return float(size_row), str(unit), col_extra
    resolution_unit = int(getattr(tags.get("ResolutionUnit"), "value", 1))
    if resolution_unit == 3:  # centimetre
        return float(size_row) * 1e4, "um", col_extra and col_extra * 1e4
    if resolution_unit == 2 and size_row < 1e-2:  # inch, only plausible for real calibrations
        return float(size_row) * 25.4e3, "um", col_extra and col_extra * 25.4e3
    return 1.0, "px", None


def _read_plain_image(path: Path):
    from skimage import io as skio

    array = np.asarray(skio.imread(path))
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].astype(np.float32).mean(axis=-1)
    return array, (1.0, "px", None), []


def _read_hdf5(path: Path, dataset: str | None):
    import h5py

    with h5py.File(path, "r") as handle:
        if dataset is None:
            if "Experiments" in handle:
                return _read_hyperspy_group(path, handle)
            if "microvae_artifact" in handle.attrs:
                kind = handle.attrs["microvae_artifact"]
                raise InputError(f"{path}: is a microvae '{kind}' artifact, not an image; pass a scan, or name a dataset as {path}:/path")
            candidates = _image_datasets(handle)
            if len(candidates) != 1:
                listing = ", ".join(candidates[:8]) or "none"
                raise InputError(f"{path}: name the image dataset as {path}:/path/to/data (image-like datasets found: {listing})")
            dataset = candidates[0]
        if dataset not in handle:
            raise InputError(f"{path}: no dataset {dataset!r} in the file")
        node = handle[dataset]
        if not isinstance(node, h5py.Dataset):
            raise InputError(f"{path}:{dataset} is a group, expected a dataset")
        array = node[()]
        pixel_size = float(node.attrs.get("pixel_size", 1.0))
        unit = _attr_str(node.attrs.get("pixel_unit", node.attrs.get("unit", "px" if pixel_size == 1.0 else "")))
        return array, (pixel_size, unit or "px", None), []


def _image_datasets(handle) -> list[str]:
    found = []

    def visit(name, node):
        if hasattr(node, "shape") and len(node.shape) in (2, 3, 4) and min(node.shape[-2:]) >= 4:
            found.append("/" + name)

    handle.visititems(visit)
    return found


def _read_hyperspy_group(path: Path, handle):
    experiments = handle["Experiments"]
    names = list(experiments.keys())
    if not names:
        raise InputError(f"{path}: HyperSpy file holds no signal")
    group = experiments[names[0]]
    array = group["data"][()]
    axes = []
    for index in range(array.ndim):
        key = f"axis-{index}"
        axes.append(dict(group[key].attrs) if key in group else {})
    signal_axes = [axis for axis in axes if not bool(axis.get("navigate", False))] or axes
    scale = float(signal_axes[0].get("scale", 1.0)) if signal_axes else 1.0
    unit = _attr_str(signal_axes[0].get("units", "")) if signal_axes else ""
    if unit in ("", "<undefined>") and scale == 1.0:
        unit = "px"
    return array, (scale, unit, None), []


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _read_rosetta(path: Path, plugin: str):
    import importlib

    module = importlib.import_module(f"rsciio.{plugin}")
    kwargs = {"lazy": False}
    signals = module.file_reader(str(path), **kwargs)
    images = [signal for signal in signals if np.asarray(signal["data"]).ndim >= 2]
    if not images:
        raise InputError(f"{path}: the file holds no image (only spectra or metadata)")
    first = images[0]
    array = np.asarray(first["data"])
    axes = first.get("axes", [])
    signal_axes = [axis for axis in axes if not axis.get("navigate", False)] or axes
    scale, unit = 1.0, "px"
    if signal_axes:
        scale = float(signal_axes[0].get("scale", 1.0))
        unit = _attr_str(signal_axes[0].get("units", "")) or ("px" if scale == 1.0 else "")
        if unit in ("<undefined>", ""):
            unit = "px" if scale == 1.0 else "unknown"
    names = []
    if len(images) > 1 and all(np.asarray(s["data"]).shape == array.shape for s in images):
        array = np.stack([np.asarray(s["data"]) for s in images])[None]  # one frame, co-registered channels
        names = [str(s.get("metadata", {}).get("General", {}).get("title", f"channel{i}")) for i, s in enumerate(images)]
    return array, (scale, unit, None), names


def _read_sxm(path: Path):
    import nanonispy2.read as nanonis_read

    scan = nanonis_read.Scan(str(path))
    signals = scan.signals
    if not signals:
        raise InputError(f"{path}: Nanonis file holds no channel")
    # Prefer the topography (Z) forward scan; keep the other forward channels as co-registered.
    names = sorted(signals, key=lambda name: (name != "Z", name))
    planes = []
    for name in names:
        directions = signals[name]
        plane = directions.get("forward", next(iter(directions.values())))
        planes.append(np.asarray(plane, dtype=np.float64))
    header = scan.header
    if str(header.get("scan_dir", "down")).strip().lower() == "up":  # first stored row is the bottom one
        planes = [plane[::-1] for plane in planes]
    pixels = np.asarray(header.get("scan_pixels", [planes[0].shape[1], planes[0].shape[0]]), dtype=float)
    scan_range = np.asarray(header.get("scan_range", [0.0, 0.0]), dtype=float)
    if scan_range.size >= 2 and pixels.size >= 2 and scan_range[0] > 0:
        size_col_m = scan_range[0] / pixels[0]
        size_row_m = scan_range[1] / pixels[1]
        pixel_size, unit = size_row_m * 1e9, "nm"
        col = size_col_m * 1e9 if not np.isclose(size_col_m, size_row_m) else None
        calibration = (float(pixel_size), unit, col)
    else:
        calibration = (1.0, "px", None)
    return np.stack(planes)[None], calibration, names[: len(planes)]  # one frame of co-registered channels
