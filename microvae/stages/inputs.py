"""Inputs shared by the stages: scans read for a stage, patches artifacts and bare stacks, and
what kind of input a path holds (patches or scans) for a given run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..artifacts import ImageRecord
from ..errors import InputError, ParameterError
from ..images import Scan, file_sha256, read_scans, split_dataset_path
from ..streaming import PatchFile, evenly_spaced, value_range
from .result import ProgressCallback

__all__ = [
    "ATOM_VALUES",
    "INPUT_KINDS",
    "PatchInput",
    "atom_values",
    "check_stack",
    "image_record",
    "input_entries",
    "input_kind",
    "load_patch_input",
    "patches_for_model",
    "read_all",
    "read_stack",
    "stored_shape",
]


def image_record(scan: Scan) -> ImageRecord:
    """The row of an artifact's ``/images`` table that describes a scan.

    Parameters
    ----------
    scan : Scan
        A scan read by :func:`microvae.images.read_scans`.

    Returns
    -------
    ImageRecord
        Its source, frame, SHA-256, height and width (px), channels, pixel size and unit.
    """
    height, width = scan.shape
    return ImageRecord(scan.source, scan.frame, scan.sha256, height, width, scan.n_channels, scan.pixel_size, scan.unit)


def input_entries(paths: list[str], role: str) -> list[dict[str, str]]:
    """The provenance entries of input files: path, SHA-256 of the file and role.

    Parameters
    ----------
    paths : list of str
        Input paths (``file.h5:/dataset`` hashes the file).
    role : str
        The role recorded with each, e.g. ``"image"``.

    Returns
    -------
    list of dict of str to str
        ``{"path", "sha256", "role"}`` per input, in order.

    Raises
    ------
    InputError
        A path is a directory or no such file.
    """
    entries = []
    for spec in paths:
        file_path = Path(split_dataset_path(spec)[0])
        if file_path.is_dir():
            raise InputError(f"{spec}: is a directory, expected an image file")
        if not file_path.is_file():
            raise InputError(f"{spec}: no such file")
        entries.append({"path": str(spec), "sha256": file_sha256(file_path), "role": role})
    return entries


def read_all(paths: list[str], stack_as: str, progress: ProgressCallback) -> list[Scan]:
    """Every scan of every path (:func:`microvae.images.read_scans`), reporting progress.

    Parameters
    ----------
    paths : list of str
        Scan paths.
    stack_as : str
        How stacks are read (as for :func:`microvae.images.read_scans`).
    progress : callable
        ``progress("reading images", files done, files)``.

    Returns
    -------
    list of Scan
        All scans, in the order of the paths (a stack's frames in order).
    """
    scans: list[Scan] = []
    for index, spec in enumerate(paths):
        progress("reading images", index, len(paths))
        scans.extend(read_scans(spec, stack_as=stack_as))
    progress("reading images", len(paths), len(paths))
    return scans


ATOM_VALUES = {  # per-atom datasets of the atoms artifact that patches, encodings and maps carry along
    "sublattice": ("atom_sublattice", "", "sublattice of the atom the patch is centred on (−1 for grid patches)"),
    "displacement_px": (
        "atom_displacement_px",
        "px",
        "(row, col) displacement of the atom the patch is centred on from the centroid of its "
        "neighbours in the reference sublattice (NaN where not computed, and for grid patches)",
    ),
}


def atom_values(atoms: str | Path | None, atom_index: np.ndarray) -> dict[str, tuple[np.ndarray, str, str]]:
    """Per-patch copies of the atoms artifact's :data:`ATOM_VALUES` that it holds (older artifacts lack them).

    Parameters
    ----------
    atoms : str or path or None
        The atoms artifact (None: no values).
    atom_index : (N,) int ndarray
        Each patch's row in the atoms artifact, −1 for a patch not centred on an atom (grid).

    Returns
    -------
    dict of str to tuple of (ndarray, str, str)
        The patches' dataset name (``atom_sublattice``, ``atom_displacement_px``) to (values,
        units, description): values are (N, ...) with −1 (integers) or NaN (float64) where
        ``atom_index`` is −1.
    """
    import h5py

    if atoms is None:
        return {}
    out = {}
    with h5py.File(atoms, "r") as handle:
        for source, (name, units, description) in ATOM_VALUES.items():
            if source in handle:
                values = handle[source][()]
                fill = -1 if values.dtype.kind in "iu" else np.nan
                picked = np.full((len(atom_index),) + values.shape[1:], fill, dtype=values.dtype if values.dtype.kind in "iu" else np.float64)
                inside = atom_index >= 0
                picked[inside] = values[atom_index[inside]]
                out[name] = (picked, units, description)
    return out


@dataclass
class PatchInput:
    """Patches to train on or encode, with what is known of where they came from.

    Attributes
    ----------
    images : ndarray
        (N, C, W, W) float32.
    path : Path
        The file read.
    sha256 : str
        Content hash of the file.
    kind : str
        ``"patches"`` (a microvae artifact) or ``"stack"`` (.npy/.tif/.h5 array).
    header : artifacts.ArtifactHeader or None
        The artifact header for ``patches`` inputs (provenance, recipe), else None.
    coords, image_index
        Per-patch (row, col) centre in px, (N, 2), and source image row, (N,), for ``patches``
        inputs, else None.
    records : list of ImageRecord or None
        The ``/images`` table for ``patches`` inputs, else None.
    recipe : dict or None
        The extraction recipe for ``patches`` inputs, else None.
    value_range : tuple of (float, float)
        The (min, max) of the patches (:func:`check_stack`).
    atom_values : dict
        The per-patch :data:`ATOM_VALUES` the artifact holds: name to (values, units, description).
    """

    images: np.ndarray
    path: Path
    sha256: str
    kind: str
    header: artifacts.ArtifactHeader | None = None
    coords: np.ndarray | None = None
    image_index: np.ndarray | None = None
    records: list[ImageRecord] | None = None
    recipe: dict[str, Any] | None = None
    value_range: tuple[float, float] = (0.0, 0.0)
    atom_values: dict[str, tuple[np.ndarray, str, str]] = field(default_factory=dict)


def load_patch_input(spec: str | Path, stream_above: int | None = None) -> PatchInput:
    """Read a patches artifact, or an image stack (N, H, W) / (N, C, H, W) from .npy, .tif or .h5[:/dataset].

    Parameters
    ----------
    spec : str or path
        The file (``file.h5:/dataset`` for a stack in HDF5).
    stream_above : int, optional
        A patches artifact whose patches (as float32) take more bytes than this is not read into
        memory: ``images`` is then a :class:`~microvae.streaming.PatchFile` (None: always read).
        Its values are checked in one block-by-block pass.

    Returns
    -------
    PatchInput
        The patches (N, C, W, W) float32, with the file's hash, kind, value range and, for a
        patches artifact, its header, coordinates, image table, recipe and atom values.

    Raises
    ------
    InputError
        Missing, unreadable, another artifact kind, or not a stack of square patches.
    """
    import h5py

    spec = str(spec)
    file_part, dataset = split_dataset_path(spec)
    path = Path(file_part)
    if not path.is_file():
        raise InputError(f"{spec}: no such file (expected a patches artifact from 'microvae extract' or an image stack)")
    if path.stat().st_size == 0:
        raise InputError(f"{spec}: file is empty (expected a patches artifact from 'microvae extract' or an image stack)")
    sha = file_sha256(path)
    is_artifact = False
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf") and dataset is None:
        try:
            with h5py.File(path, "r") as handle:
                is_artifact = "microvae_artifact" in handle.attrs
        except Exception as error:
            raise InputError(f"{spec}: not a readable HDF5 file; is it truncated?") from error
    if is_artifact:
        header = artifacts.read_header(path, "patches")
        with h5py.File(path, "r") as handle:
            artifacts.require_datasets(handle, path, ["patches", "coords", "image_index", "images"], "patches")
            shape = handle["patches"].shape
            lazy = stream_above is not None and 4 * int(np.prod(shape)) > stream_above
            images = None if lazy else handle["patches"][()].astype(np.float32, copy=False)
            coords = handle["coords"][()]
            image_index = handle["image_index"][()]
            records = artifacts.read_image_table(handle)
            recipe = json.loads(artifacts.as_str(handle.attrs.get("recipe", "{}")))
            atom_values = {
                name: (handle[name][()], artifacts.as_str(handle[name].attrs.get("units", "")), artifacts.as_str(handle[name].attrs.get("description", "")))
                for name, _, _ in ATOM_VALUES.values()
                if name in handle
            }
        if images is None:
            images = PatchFile(path)
        stack = PatchInput(images, path, sha, "patches", header, coords, image_index, records, recipe, atom_values=atom_values)
    else:
        array = read_stack(spec)
        stack = PatchInput(array, path, sha, "stack")
    stack.value_range = check_stack(stack.images, spec)
    return stack


def patches_for_model(spec: str | Path, model_config, run_dir: str | Path, limit: int = 0) -> np.ndarray:
    """The patches of ``spec`` for a model, refused with a message when their shape is not the model's.

    Parameters
    ----------
    spec : str or path
        A patches artifact or stack.
    model_config : JTRVAEConfig
        The run's model settings (``channels``, ``image_size``).
    run_dir : str or path
        The run folder (named in the message).
    limit : int, default 0
        At most this many patches, evenly spaced (0 = all).

    Returns
    -------
    (N, C, W, W) float32 ndarray
        The patches.

    Raises
    ------
    InputError
        The patches are unreadable or not of the model's shape.
    """
    images = evenly_spaced(load_patch_input(spec).images, limit)
    expected = (model_config.channels, model_config.image_size, model_config.image_size)
    if tuple(images.shape[1:]) != expected:
        raise InputError(
            f"{spec}: patches are {'×'.join(map(str, images.shape[1:]))} (C×W×W) but the model in {run_dir} was trained on {'×'.join(map(str, expected))}"
        )
    return images


def read_stack(spec: str) -> np.ndarray:
    """An image stack as one array, its frames read by :func:`microvae.images.read_scans`.

    Parameters
    ----------
    spec : str
        A .npy, .tif or ``.h5:/dataset`` stack (N, H, W) / (N, C, H, W).

    Returns
    -------
    (N, C, H, W) float32 ndarray
        The frames stacked (each scan's ``data`` is (C, H, W)).

    Raises
    ------
    InputError
        The frames have different shapes (or the file cannot be read).
    """
    scans = read_scans(spec, stack_as="frames")
    shapes = {scan.data.shape for scan in scans}
    if len(shapes) != 1:
        raise InputError(f"{spec}: frames have different shapes {sorted(shapes)}; expected a stack of equal patches")
    return np.stack([scan.data for scan in scans]).astype(np.float32, copy=False)


def check_stack(images: np.ndarray | PatchFile, spec: str) -> tuple[float, float]:
    """The (min, max) of square, finite patches.

    Parameters
    ----------
    images : (N, C, W, W) ndarray or PatchFile
        The patches.
    spec : str
        Their source, named in messages.

    Returns
    -------
    tuple of (float, float)
        The lowest and highest value (:func:`microvae.streaming.value_range`).

    Raises
    ------
    InputError
        Not 4-D square patches, fewer than 2 patches, or non-finite values.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"{spec}: patches of shape {images.shape[1:]}; expected (C, W, W) square patches")
    if len(images) < 2:
        raise InputError(f"{spec}: holds {len(images)} patch(es); training needs at least 2")
    return value_range(images, spec)


INPUT_KINDS = ("auto", "patches", "scans")


def stored_shape(spec: str | Path) -> tuple[int, ...] | None:
    """The array shape stored in a .npy, .tif/.tiff or ``.h5:/dataset`` file, read from its header.

    Parameters
    ----------
    spec : str or path
        The file (``file.h5:/dataset`` for HDF5).

    Returns
    -------
    tuple of int or None
        The shape (nothing loaded); None for other formats (vendor and picture formats hold
        scans) or a file that cannot be read (the reader then names the problem).
    """
    import h5py

    file_part, dataset = split_dataset_path(str(spec))
    path = Path(file_part)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return tuple(np.load(path, mmap_mode="r").shape)
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as handle:
                return tuple(handle.series[0].shape)
        if suffix in (".h5", ".hdf5", ".hdf") and dataset is not None:
            with h5py.File(path, "r") as handle:
                return tuple(handle[dataset].shape)
    except Exception:
        return None
    return None


def input_kind(spec: str | Path, patch_side: int | None, choice: str = "auto") -> str:
    """Whether ``spec`` is read as patches ("patches") or as scans to cut patches from ("scans").

    Decided from the data and the run, not by the file's extension: a patches artifact of
    ``microvae extract`` holds patches; a stored array whose frames are ``patch_side`` ×
    ``patch_side`` (3-D (N, W, W)), or any 4-D (N, C, H, W) array, is a patch stack; a 2-D array,
    or frames at least twice a patch's side, are scans. A 2-D array of exactly one patch's shape,
    or frames between one and two patch sides, are ambiguous and refused, naming both readings
    and the flag that picks one (``choice``: "patches" or "scans").
    Without a patch shape (``patch_side`` None: the run folder is unreadable, and encode will say
    why) a 2-D array is a scan and a deeper one a patch stack.

    Parameters
    ----------
    spec : str or path
        The input (``file.h5:/dataset`` for an HDF5 array).
    patch_side : int or None
        The run's patch side W in px.
    choice : str, default "auto"
        One of :data:`INPUT_KINDS`; "patches" or "scans" is returned as it is.

    Returns
    -------
    str
        ``"patches"`` or ``"scans"``.

    Raises
    ------
    ParameterError
        Ambiguous, or ``choice`` unknown.
    InputError
        Frames smaller than a patch.
    """
    import h5py

    if choice not in INPUT_KINDS:
        raise ParameterError(f"--input-kind must be one of {', '.join(INPUT_KINDS)}, got {choice!r}")
    if choice != "auto":
        return choice

    file_part, dataset = split_dataset_path(str(spec))
    path = Path(file_part)
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf") and dataset is None and path.is_file():
        try:
            with h5py.File(path, "r") as handle:
                if artifacts.as_str(handle.attrs.get("microvae_artifact", "")) == "patches":
                    return "patches"
        except Exception:
            pass
    shape = stored_shape(spec)
    if shape is None or len(shape) < 2:
        return "scans"
    frame = tuple(shape[-2:])
    if patch_side is None:
        return "scans" if len(shape) == 2 else "patches"
    side = (patch_side, patch_side)
    if len(shape) == 2:
        if frame == side:
            raise ParameterError(
                f"{spec}: a {frame[0]}×{frame[1]} array reads as one patch of this run ({patch_side}×{patch_side}) "
                "or as a scan that small; say which with --input-kind patches or --input-kind scans"
            )
        return "scans"
    if frame == side or len(shape) == 4:  # (N, C, H, W) is a patch stack (its shape is checked against the run's)
        return "patches"
    if frame[0] < patch_side or frame[1] < patch_side:
        raise InputError(
            f"{spec}: frames of {frame[0]}×{frame[1]} px are neither patches of this run ({patch_side}×{patch_side}) nor scans large enough to cut them from"
        )
    if min(frame) < 2 * patch_side:
        raise ParameterError(
            f"{spec}: {shape[0]} frames of {frame[0]}×{frame[1]} px read as patches of another shape than this run's "
            f"({patch_side}×{patch_side}) or as scans barely larger than a patch; say which with --input-kind patches "
            "or --input-kind scans"
        )
    return "scans"
