"""The work of each CLI subcommand: read inputs, check whether the output is up to date, compute,
write one artifact atomically. The CLI only parses options and renders progress and results.

Each stage function returns a :class:`StageResult`; none prints. Progress is reported through an
optional callback ``progress(description, completed, total)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import artifacts
from .artifacts import ImageRecord, Provenance, write_dataset
from .atoms import FindAtomsParams, find_atoms
from .errors import InputError, ParameterError
from .images import Scan, read_scans
from .patches import PatchParams, extract_patches

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class StageResult:
    """What a stage did. ``status`` is ``"written"`` or ``"up-to-date"``."""

    status: str
    output: Path
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _noop(description: str, completed: int, total: int) -> None:
    return None


def _image_record(scan: Scan) -> ImageRecord:
    height, width = scan.shape
    return ImageRecord(scan.source, scan.frame, scan.sha256, height, width, scan.n_channels, scan.pixel_size, scan.unit)


def _input_entries(paths: list[str], role: str) -> list[dict[str, str]]:
    from .images import file_sha256, split_dataset_path

    entries = []
    for spec in paths:
        file_path = Path(split_dataset_path(spec)[0])
        if not file_path.is_file():
            raise InputError(f"{spec}: no such file")
        entries.append({"path": str(spec), "sha256": file_sha256(file_path), "role": role})
    return entries


def _read_all(paths: list[str], stack_as: str, progress: ProgressCallback) -> list[Scan]:
    scans: list[Scan] = []
    for index, spec in enumerate(paths):
        progress("reading images", index, len(paths))
        scans.extend(read_scans(spec, stack_as=stack_as))
    progress("reading images", len(paths), len(paths))
    return scans


# ----------------------------------------------------------------------------------------------
# find-atoms


def run_find_atoms(
    images: list[str],
    output: str | Path,
    params: FindAtomsParams,
    channel: int = 0,
    stack_as: str = "frames",
    preview: str | Path | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Find atoms in every scan of ``images`` and write an ``atoms`` artifact.

    The artifact holds ``coords`` (N, 2) (row, col) px, ``image_index`` (N,), ``intensity``,
    ``sigma_px``, ``score``, ``fit_ok``, the per-image lattice estimates under ``/estimates`` and the
    ``/images`` table.
    """
    progress = progress or _noop
    params.validate()
    output = Path(output)
    parameters = {**asdict(params), "channel": channel, "stack_as": stack_as}
    inputs = _input_entries(images, "image")
    provenance = Provenance(stage="find-atoms", parameters=parameters, inputs=inputs)
    plan = artifacts.plan_output(output, provenance.fingerprint, force)
    if plan.action == "skip":
        return StageResult("up-to-date", output, notes=[plan.reason])
    scans = _read_all(images, stack_as, progress)
    tables, estimates = [], []
    for index, scan in enumerate(scans):
        progress("finding atoms", index, len(scans))
        if not 0 <= channel < scan.n_channels:
            raise ParameterError(f"{scan.name}: --channel {channel} does not exist; the scan has {scan.n_channels} channel(s)")
        table, estimate = find_atoms(scan.data[channel], params)
        if len(table) == 0:
            raise InputError(
                f"{scan.name}: no atoms found (estimated spacing {estimate.spacing_px:.1f} px, σ {estimate.sigma_px:.2f} px); "
                "check --invert for dark columns, or set --sigma/--spacing/--threshold"
            )
        tables.append(table)
        estimates.append(estimate)
    progress("finding atoms", len(scans), len(scans))
    with artifacts.atomic_h5(output, provenance, "atoms") as handle:
        write_dataset(handle, "coords", np.concatenate([t.positions for t in tables]), "px", "atom centre (row, col) in source pixels; pixel (r, c) is centred at (r, c)", axes="row,col")
        write_dataset(handle, "image_index", np.concatenate([np.full(len(t), i, np.int32) for i, t in enumerate(tables)]), "", "row of /images the atom belongs to")
        write_dataset(handle, "intensity", np.concatenate([t.intensity for t in tables]), "normalised intensity", "fitted peak height above local background, image scaled so its 0.1–99.9 percentiles map to 0–1")
        write_dataset(handle, "sigma_px", np.concatenate([t.sigma_px for t in tables]), "px", "fitted Gaussian width σ")
        write_dataset(handle, "score", np.concatenate([t.score for t in tables]), "response units", "detection response at the candidate peak")
        write_dataset(handle, "fit_ok", np.concatenate([t.fit_ok for t in tables]), "", "False where the Gaussian fit failed and the centre of mass was kept")
        group = handle.create_group("estimates")
        group.attrs["description"] = "per-image lattice estimates used for detection (user overrides applied)"
        write_dataset(group, "spacing_px", np.array([e.spacing_px for e in estimates]), "px", "nearest-neighbour column spacing")
        write_dataset(group, "sigma_px", np.array([e.sigma_px for e in estimates]), "px", "column width σ used for filtering")
        write_dataset(group, "periodic", np.array([e.periodic for e in estimates]), "", "False when the autocorrelation showed no lattice")
        artifacts.write_image_table(handle, [_image_record(scan) for scan in scans])
    notes = [
        f"{scan.name}: {len(table)} atoms; spacing {est.spacing_px:.2f} px, σ {est.sigma_px:.2f} px"
        + ("" if est.periodic else " (no clear lattice: spacing guessed from σ; set --spacing)")
        + ("" if params.spacing_px is None else " (spacing set by user)")
        for scan, table, est in zip(scans, tables, estimates)
    ]
    if preview is not None:
        _write_atom_previews(Path(preview), scans, tables, channel)
        notes.append(f"preview: {preview}")
    summary = {
        "atoms": int(sum(len(t) for t in tables)),
        "images": len(scans),
        "spacing_px": [round(e.spacing_px, 3) for e in estimates],
        "sigma_px": [round(e.sigma_px, 3) for e in estimates],
    }
    return StageResult("written", output, summary, notes)


def _write_atom_previews(preview: Path, scans: list[Scan], tables: list, channel: int) -> None:
    from .plots import save_atom_overlay

    for index, (scan, table) in enumerate(zip(scans, tables)):
        path = preview if len(scans) == 1 else preview.with_name(f"{preview.stem}_{index}{preview.suffix}")
        title = f"{scan.name}: {len(table)} atoms"
        with artifacts.atomic_file(path) as temp:
            save_atom_overlay(temp, scan.data[channel], table.positions, title, scan.pixel_size, scan.unit)


# ----------------------------------------------------------------------------------------------
# extract


def run_extract(
    images: list[str],
    output: str | Path,
    params: PatchParams,
    atoms: str | Path | None = None,
    stack_as: str = "frames",
    preview: str | Path | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Cut patches around the atoms of an ``atoms`` artifact (``atoms``) or on a grid (``params.grid_step``).

    Writes a ``patches`` artifact (schema in ``docs/schema.md``).
    """
    progress = progress or _noop
    params.validate()
    if (atoms is None) == (params.grid_step is None):
        raise ParameterError("give exactly one of --atoms ATOMS.h5 (atom-centred patches) or --grid STEP (grid patches)")
    output = Path(output)
    parameters = {**asdict(params), "stack_as": stack_as, "mode": "atoms" if atoms else "grid"}
    inputs = _input_entries(images, "image")
    upstream = []
    atom_header = None
    if atoms is not None:
        atom_header = artifacts.read_header(atoms, "atoms")
        inputs.append({"path": str(atoms), "sha256": atom_header.fingerprint, "role": "atoms"})
        upstream.append(atom_header.provenance_record())
    provenance = Provenance(stage="extract", parameters=parameters, inputs=inputs, upstream=upstream)
    plan = artifacts.plan_output(output, provenance.fingerprint, force)
    if plan.action == "skip":
        return StageResult("up-to-date", output, notes=[plan.reason])
    scans = _read_all(images, stack_as, progress)
    if atoms is not None:
        centres, atom_rows = _atom_centres_for(Path(atoms), scans)
    else:
        from .patches import grid_centres

        centres = [grid_centres(scan.shape, params.window, params.grid_step) for scan in scans]
        atom_rows = [np.full(len(c), -1, dtype=np.int64) for c in centres]
    progress("cutting patches", 0, 1)
    patch_set = extract_patches([scan.data for scan in scans], centres, params, labels=[scan.name for scan in scans])
    progress("cutting patches", 1, 1)
    first_row = np.cumsum([0] + [len(rows) for rows in atom_rows])[:-1]
    atom_index = np.concatenate(atom_rows)[first_row[patch_set.image_index] + patch_set.centre_index]
    recipe = {"extract": parameters, "find_atoms": atom_header.parameters if atom_header else None}
    with artifacts.atomic_h5(output, provenance, "patches") as handle:
        window = params.window
        chunk = (max(1, min(len(patch_set), max(1, (1 << 20) // (4 * window * window * patch_set.patches.shape[1])))), patch_set.patches.shape[1], window, window)
        content = "log(1+|FFT|) of Hann-windowed, mean-subtracted patches, zero frequency at (W//2, W//2)" if params.fft else "real-space intensities"
        write_dataset(handle, "patches", patch_set.patches, "normalised intensity", f"(N, C, W, W) patches: {content}; normalisation '{params.normalize}'", chunks=chunk, axes="patch,channel,row,col")
        write_dataset(handle, "coords", patch_set.coords, "px", "patch centre (row, col) in source pixels; patch pixel (i, j) samples (row + i − W//2, col + j − W//2)", axes="row,col")
        write_dataset(handle, "image_index", patch_set.image_index, "", "row of /images the patch was cut from")
        write_dataset(handle, "atom_index", atom_index, "", "row of the atoms artifact's coords the patch is centred on (−1 for grid patches)")
        write_dataset(handle, "edge_padded", patch_set.edge_padded, "", "True where the window reached outside the image and was filled by reflection")
        write_dataset(handle, "norm_offset", patch_set.norm_offset, "source intensity", "raw ≈ patch · norm_scale + norm_offset")
        write_dataset(handle, "norm_scale", patch_set.norm_scale, "source intensity", "raw ≈ patch · norm_scale + norm_offset")
        artifacts.write_image_table(handle, [_image_record(scan) for scan in scans])
        handle.attrs["window"] = params.window
        handle.attrs["fft"] = bool(params.fft)
        handle.attrs["normalize"] = params.normalize
        handle.attrs["edge"] = params.edge
        handle.attrs["mode"] = parameters["mode"]
        handle.attrs["skipped_at_edge"] = int(patch_set.skipped)
        handle.attrs["channel_names"] = artifacts.to_json(scans[0].channel_names)
        handle.attrs["recipe"] = artifacts.to_json(recipe)
    notes = [f"{len(patch_set)} patches of {patch_set.patches.shape[1]}×{params.window}×{params.window} from {len(scans)} image(s)"]
    if patch_set.skipped:
        notes.append(f"{patch_set.skipped} centre(s) too close to the edge were skipped (--edge reflect keeps them)")
    if preview is not None:
        from .plots import save_patch_gallery

        with artifacts.atomic_file(preview) as temp:
            save_patch_gallery(temp, patch_set.patches, title=f"{len(patch_set)} patches ({'FFT' if params.fft else 'real space'})")
        notes.append(f"preview: {preview}")
    summary = {"patches": len(patch_set), "window": params.window, "channels": int(patch_set.patches.shape[1]), "skipped_at_edge": int(patch_set.skipped)}
    return StageResult("written", output, summary, notes)


def _atom_centres_for(atoms_path: Path, scans: list[Scan]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For each scan, the atom centres recorded for it in the atoms artifact (matched by content hash and frame)."""
    import h5py

    with h5py.File(atoms_path, "r") as handle:
        artifacts.require_datasets(handle, atoms_path, ["coords", "image_index", "images"], "atoms")
        records = artifacts.read_image_table(handle)
        coords = handle["coords"][()]
        image_index = handle["image_index"][()]
    lookup = {(record.sha256, record.frame): row for row, record in enumerate(records)}
    centres, rows = [], []
    for scan in scans:
        row = lookup.get((scan.sha256, scan.frame))
        if row is None:
            known = ", ".join(record.name for record in records)
            raise InputError(f"{scan.name}: not among the images of {atoms_path} (it holds: {known}); run find-atoms on this scan first")
        record = records[row]
        if (record.height, record.width) != scan.shape:
            raise InputError(f"{scan.name}: is {scan.shape[0]}×{scan.shape[1]} but {atoms_path} recorded {record.height}×{record.width}")
        members = np.nonzero(image_index == row)[0]
        centres.append(coords[members])
        rows.append(members.astype(np.int64))
    return centres, rows


# ----------------------------------------------------------------------------------------------
# Inputs for train and encode: a patches artifact, or a bare image stack


@dataclass
class PatchInput:
    """Patches to train on or encode, with what is known of where they came from.

    Attributes:
        images: (N, C, W, W) float32.
        path: the file read.
        sha256: content hash of the file.
        kind: ``"patches"`` (a microvae artifact) or ``"stack"`` (.npy/.tif/.h5 array).
        header: the artifact header for ``patches`` inputs (provenance, recipe), else None.
        coords, image_index: per-patch (row, col) and source image for ``patches`` inputs, else None.
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


def load_patch_input(spec: str | Path) -> PatchInput:
    """Read a patches artifact, or an image stack (N, H, W) / (N, C, H, W) from .npy, .tif or .h5[:/dataset].

    Raises:
        InputError: missing, unreadable, another artifact kind, or not a stack of square patches.
    """
    import h5py

    from .images import file_sha256, split_dataset_path

    spec = str(spec)
    file_part, dataset = split_dataset_path(spec)
    path = Path(file_part)
    if not path.is_file():
        raise InputError(f"{spec}: no such file (expected a patches artifact from 'microvae extract' or an image stack)")
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
            images = handle["patches"][()].astype(np.float32, copy=False)
            coords = handle["coords"][()]
            image_index = handle["image_index"][()]
            records = artifacts.read_image_table(handle)
            recipe = json.loads(artifacts._as_str(handle.attrs.get("recipe", "{}")))
        stack = PatchInput(images, path, sha, "patches", header, coords, image_index, records, recipe)
    else:
        array = _read_stack(spec)
        stack = PatchInput(array, path, sha, "stack")
    _check_stack(stack.images, spec)
    return stack


def _read_stack(spec: str) -> np.ndarray:
    from .images import read_scans

    scans = read_scans(spec, stack_as="frames")
    shapes = {scan.data.shape for scan in scans}
    if len(shapes) != 1:
        raise InputError(f"{spec}: frames have different shapes {sorted(shapes)}; expected a stack of equal patches")
    return np.stack([scan.data for scan in scans]).astype(np.float32, copy=False)


def _check_stack(images: np.ndarray, spec: str) -> None:
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"{spec}: patches of shape {images.shape[1:]}; expected (C, W, W) square patches")
    if len(images) < 2:
        raise InputError(f"{spec}: holds {len(images)} patch(es); training needs at least 2")
    if not np.isfinite(images).all():
        raise InputError(f"{spec}: patches contain NaN or Inf values")
