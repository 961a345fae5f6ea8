"""The work of each CLI subcommand: read inputs, check whether the output is up to date, compute,
write one artifact atomically. The CLI only parses options and renders progress and results.

Each stage function returns a :class:`StageResult`; none prints. Progress is reported through an
optional callback ``progress(description, completed, total)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import artifacts
from .artifacts import ImageRecord, Provenance, write_dataset
from .atoms import FindAtomsParams, find_atoms
from .errors import InputError, OutputError, ParameterError
from .images import Scan, read_scans
from .patches import PatchParams, patch_blocks, plan_patches
from .streaming import BLOCK_BYTES, RESIDENT_LIMIT_BYTES, PatchFile, evenly_spaced, value_range

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
        if file_path.is_dir():
            raise InputError(f"{spec}: is a directory, expected an image file")
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
    # the device changes how fast, not what is found (both engines agree to ~10⁻⁵ px): not in the fingerprint
    parameters = {**{k: v for k, v in asdict(params).items() if k != "device"}, "channel": channel, "stack_as": stack_as}
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
        table, estimate = find_atoms(scan.data[channel], params, progress=lambda done, total: progress(f"refining {scan.name}", done, total))
        if len(table) == 0:
            raise InputError(
                f"{scan.name}: no atoms found (estimated spacing {estimate.spacing_px:.1f} px, σ {estimate.sigma_px:.2f} px); "
                "check --invert for dark columns, or set --sigma/--spacing/--threshold"
            )
        tables.append(table)
        estimates.append(estimate)
    progress("finding atoms", len(scans), len(scans))
    if preview is not None:  # before the artifact: a rerun after a crash skips a complete artifact
        _write_atom_previews(Path(preview), scans, tables, channel)
    with artifacts.atomic_h5(output, provenance, "atoms") as handle:
        write_dataset(handle, "coords", np.concatenate([t.positions for t in tables]), "px", "atom centre (row, col) in source pixels; pixel (r, c) is centred at (r, c)", axes="row,col")
        write_dataset(handle, "image_index", np.concatenate([np.full(len(t), i, np.int32) for i, t in enumerate(tables)]), "", "row of /images the atom belongs to")
        write_dataset(handle, "intensity", np.concatenate([t.intensity for t in tables]), "normalised intensity", "fitted peak height above local background, image scaled so its 0.1–99.9 percentiles map to 0–1")
        write_dataset(handle, "sigma_px", np.concatenate([t.sigma_px for t in tables]), "px", "fitted Gaussian width σ")
        write_dataset(handle, "score", np.concatenate([t.score for t in tables]), "response units", "detection response at the candidate peak")
        write_dataset(handle, "fit_ok", np.concatenate([t.fit_ok for t in tables]), "", "False where the Gaussian fit failed and the centre of mass was kept")
        write_dataset(handle, "sublattice", np.concatenate([t.sublattice for t in tables]).astype(np.int16), "",
                      "sublattice of the column, 0 the brightest: the unit-cell sites that the lattice's translations link, split where their fitted heights differ")
        write_dataset(handle, "displacement_px", np.concatenate([t.displacement_px for t in tables]), "px",
                      f"(row, col) offset of the column from the centroid of its nearest neighbours in the reference sublattice ({params.displacements}: "
                      "'auto' = each sublattice s ≥ 1 against sublattice 0); NaN where not computed", axes="row,col")
        group = handle.create_group("estimates")
        group.attrs["description"] = "per-image lattice estimates used for detection (user overrides applied)"
        write_dataset(group, "spacing_px", np.array([e.spacing_px for e in estimates]), "px", "nearest-neighbour column spacing")
        write_dataset(group, "sigma_px", np.array([e.sigma_px for e in estimates]), "px", "column width σ used for filtering")
        write_dataset(group, "periodic", np.array([e.periodic for e in estimates]), "", "False when the autocorrelation showed no lattice")
        write_dataset(group, "nearest_neighbour_px", np.array([e.nearest_neighbour_px or np.nan for e in estimates]), "px",
                      "median distance from each column found to its nearest neighbour, all sublattices")
        write_dataset(group, "second_search", np.array([e.second_search for e in estimates]), "", "columns found by the second search, in the residual of the first")
        group.attrs["sublattice_counts"] = artifacts.to_json([list(e.sublattice_counts) for e in estimates])
        group.attrs["sublattice_sigma_px"] = artifacts.to_json([[round(w, 4) for w in e.sublattice_sigma_px] for e in estimates])
        artifacts.write_image_table(handle, [_image_record(scan) for scan in scans])
    notes = [_find_atoms_note(scan.name, table, est, params) for scan, table, est in zip(scans, tables, estimates)]
    if preview is not None:
        notes.append(f"preview: {preview}")
    summary = {
        "atoms": int(sum(len(t) for t in tables)),
        "images": len(scans),
        "spacing_px": [round(e.spacing_px, 3) for e in estimates],
        "sigma_px": [round(e.sigma_px, 3) for e in estimates],
        "nearest_neighbour_px": [None if e.nearest_neighbour_px is None else round(e.nearest_neighbour_px, 3) for e in estimates],
        "sublattice_counts": [list(e.sublattice_counts) for e in estimates],
    }
    return StageResult("written", output, summary, notes)


def _find_atoms_note(name: str, table, est, params: FindAtomsParams) -> str:
    """One line per scan: count, spacings, sublattices (count and width), and what the user set."""
    text = f"{name}: {len(table)} atoms; spacing {est.spacing_px:.2f} px"
    if params.spacing_px is not None:
        text += " (set by user)"
    elif not est.periodic:
        text += " (no clear lattice: guessed from σ; set --spacing)"
    if est.nearest_neighbour_px is not None and abs(est.nearest_neighbour_px - est.spacing_px) > 0.1 * est.spacing_px:
        text += f", nearest neighbour {est.nearest_neighbour_px:.2f} px"
    text += f", σ {est.sigma_px:.2f} px"
    if len(est.sublattice_counts) > 1:
        parts = [f"{k}: {count} (σ {width:.2f})" for k, (count, width) in enumerate(zip(est.sublattice_counts, est.sublattice_sigma_px))]
        text += "; sublattices " + ", ".join(parts)
    if est.second_search:
        text += f"; {est.second_search} found beside brighter columns"
    if np.isfinite(table.displacement_px).any():
        magnitude = np.hypot(table.displacement_px[:, 0], table.displacement_px[:, 1])
        text += f"; displacements median {np.nanmedian(magnitude):.2f} px"
    return text


def _write_atom_previews(preview: Path, scans: list[Scan], tables: list, channel: int) -> None:
    from .plots import save_atom_overlay

    for index, (scan, table) in enumerate(zip(scans, tables)):
        path = preview if len(scans) == 1 else preview.with_name(f"{preview.stem}_{index}{preview.suffix}")
        title = f"{scan.name}: {len(table)} atoms"
        with artifacts.atomic_file(path) as temp:
            save_atom_overlay(temp, scan.data[channel], table.positions, title, scan.pixel_size, scan.unit, sublattice=table.sublattice)


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
    compression: str = "gzip",
) -> StageResult:
    """Cut patches around the atoms of an ``atoms`` artifact (``atoms``) or on a grid (``params.grid_step``).

    Writes a ``patches`` artifact (schema in ``docs/schema.md``). ``compression`` of the patches:
    'gzip' (level 1, with the byte shuffle when it shrinks the first chunk, see
    :func:`microvae.artifacts.gzip_options`) or 'none' (read fastest, for streaming to a GPU).
    """
    progress = progress or _noop
    params.validate()
    if (atoms is None) == (params.grid_step is None):
        raise ParameterError("give exactly one of --atoms ATOMS.h5 (atom-centred patches) or --grid STEP (grid patches)")
    output = Path(output)
    if compression not in artifacts.COMPRESSIONS:
        raise ParameterError(f"compression must be one of {', '.join(artifacts.COMPRESSIONS)}, got {compression!r}")
    parameters = {**asdict(params), "stack_as": stack_as, "mode": "atoms" if atoms else "grid", "compression": compression}
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
        centres, atom_rows = _atom_centres_for(Path(atoms), scans, params.sublattices)
    else:
        from .patches import grid_centres

        centres = [grid_centres(scan.shape, params.window, params.grid_step) for scan in scans]
        atom_rows = [np.full(len(c), -1, dtype=np.int64) for c in centres]
    plan = plan_patches([scan.data for scan in scans], centres, params, labels=[scan.name for scan in scans])
    first_row = np.cumsum([0] + [len(rows) for rows in atom_rows])[:-1]
    atom_index = np.concatenate(atom_rows)[first_row[plan.image_index] + plan.centre_index]
    recipe = {"extract": parameters, "find_atoms": atom_header.parameters if atom_header else None}
    window, channels = params.window, plan.channels
    norm_offset, norm_scale = np.zeros(plan.count), np.ones(plan.count)
    with artifacts.atomic_h5(output, provenance, "patches") as handle:
        content = "log(1+|FFT|) of Hann-windowed, mean-subtracted patches, zero frequency at (W//2, W//2)" if params.fft else "real-space intensities"
        chunk_rows = max(1, (1 << 20) // (4 * window * window * channels))
        block_rows = max(1, BLOCK_BYTES // (4 * window * window * channels))
        blocks = patch_blocks([scan.data for scan in scans], plan, params, block_rows)
        first = next(blocks, None)            # the first chunk's patches choose the compression filters
        patches = artifacts.create_dataset(handle, "patches", (plan.count, channels, window, window), np.float32, "normalised intensity",
                                           f"(N, C, W, W) patches: {content}; normalisation '{params.normalize}'",
                                           chunk_rows=chunk_rows, compression=compression,
                                           sample=None if first is None else first[1][:chunk_rows], axes="patch,channel,row,col")
        for start, block, offset, scale in itertools.chain([first] if first is not None else [], blocks):
            patches[start:start + len(block)] = block
            norm_offset[start:start + len(block)], norm_scale[start:start + len(block)] = offset, scale
            progress("cutting patches", start + len(block), plan.count)
        write_dataset(handle, "coords", plan.coords, "px", "patch centre (row, col) in source pixels; patch pixel (i, j) samples (row + i − W//2, col + j − W//2)", axes="row,col")
        write_dataset(handle, "image_index", plan.image_index, "", "row of /images the patch was cut from")
        write_dataset(handle, "atom_index", atom_index, "", "row of the atoms artifact's coords the patch is centred on (−1 for grid patches)")
        for name, (values, units, description) in _atom_values(atoms, atom_index).items():
            write_dataset(handle, name, values, units, description)
        write_dataset(handle, "edge_padded", plan.edge_padded, "", "True where the window reached outside the image and was filled by reflection")
        write_dataset(handle, "norm_offset", norm_offset, "source intensity", "raw ≈ patch · norm_scale + norm_offset")
        write_dataset(handle, "norm_scale", norm_scale, "source intensity", "raw ≈ patch · norm_scale + norm_offset")
        artifacts.write_image_table(handle, [_image_record(scan) for scan in scans])
        handle.attrs["window"] = params.window
        handle.attrs["fft"] = bool(params.fft)
        handle.attrs["normalize"] = params.normalize
        handle.attrs["edge"] = params.edge
        handle.attrs["mode"] = parameters["mode"]
        handle.attrs["skipped_at_edge"] = int(plan.skipped)
        handle.attrs["channel_names"] = artifacts.to_json(scans[0].channel_names)
        handle.attrs["recipe"] = artifacts.to_json(recipe)
        if preview is not None:  # before the artifact is committed: a rerun after a crash skips a complete artifact
            from .plots import save_patch_gallery

            shown = np.sort(np.random.default_rng(0).choice(plan.count, size=min(64, plan.count), replace=False))
            with artifacts.atomic_file(preview) as temp:
                save_patch_gallery(temp, patches[shown], title=f"{plan.count} patches ({'FFT' if params.fft else 'real space'})",
                                   row_labels=shown)
    notes = [f"{plan.count} patches of {channels}×{params.window}×{params.window} from {len(scans)} image(s)"]
    if plan.skipped:
        notes.append(f"{plan.skipped} centre(s) too close to the edge were skipped (--edge reflect keeps them)")
    if preview is not None:
        notes.append(f"preview: {preview}")
    summary = {"patches": plan.count, "window": params.window, "channels": channels, "skipped_at_edge": int(plan.skipped)}
    return StageResult("written", output, summary, notes)


ATOM_VALUES = {   # per-atom datasets of the atoms artifact that patches, encodings and maps carry along
    "sublattice": ("atom_sublattice", "", "sublattice of the atom the patch is centred on (−1 for grid patches)"),
    "displacement_px": ("atom_displacement_px", "px", "(row, col) displacement of the atom the patch is centred on from the centroid of its "
                        "neighbours in the reference sublattice (NaN where not computed, and for grid patches)"),
}


def _atom_values(atoms: str | Path | None, atom_index: np.ndarray) -> dict[str, tuple[np.ndarray, str, str]]:
    """Per-patch copies of the atoms artifact's :data:`ATOM_VALUES` that it holds (older artifacts lack them)."""
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


def _atom_centres_for(atoms_path: Path, scans: list[Scan], sublattices: tuple[int, ...] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For each scan, the atom centres recorded for it in the atoms artifact (matched by content hash
    and frame), of the given ``sublattices`` only when given."""
    import h5py

    with h5py.File(atoms_path, "r") as handle:
        artifacts.require_datasets(handle, atoms_path, ["coords", "image_index", "images"], "atoms")
        records = artifacts.read_image_table(handle)
        coords = handle["coords"][()]
        image_index = handle["image_index"][()]
        if sublattices is not None:
            if "sublattice" not in handle:
                raise InputError(f"{atoms_path}: has no sublattice labels (made by an older find-atoms); rerun find-atoms to use --sublattice")
            present = set(np.unique(handle["sublattice"][()]).tolist())
            missing = [k for k in sublattices if k not in present]
            if missing:
                raise InputError(f"{atoms_path}: has no sublattice {', '.join(map(str, missing))} (it holds {', '.join(map(str, sorted(present)))})")
            image_index = np.where(np.isin(handle["sublattice"][()], sublattices), image_index, -1)
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
    value_range: tuple[float, float] = (0.0, 0.0)
    atom_values: dict[str, tuple[np.ndarray, str, str]] = field(default_factory=dict)


def load_patch_input(spec: str | Path, stream_above: int | None = None) -> PatchInput:
    """Read a patches artifact, or an image stack (N, H, W) / (N, C, H, W) from .npy, .tif or .h5[:/dataset].

    ``stream_above``: a patches artifact whose patches (as float32) take more bytes than this is
    not read into memory: ``images`` is then a :class:`~microvae.streaming.PatchFile` (None: always
    read). Its values are checked in one block-by-block pass.

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
            recipe = json.loads(artifacts._as_str(handle.attrs.get("recipe", "{}")))
            atom_values = {name: (handle[name][()], artifacts._as_str(handle[name].attrs.get("units", "")),
                                  artifacts._as_str(handle[name].attrs.get("description", "")))
                           for name, _, _ in ATOM_VALUES.values() if name in handle}
        if images is None:
            images = PatchFile(path)
        stack = PatchInput(images, path, sha, "patches", header, coords, image_index, records, recipe, atom_values=atom_values)
    else:
        array = _read_stack(spec)
        stack = PatchInput(array, path, sha, "stack")
    stack.value_range = _check_stack(stack.images, spec)
    return stack


def patches_for_model(spec: str | Path, model_config, run_dir: str | Path, limit: int = 0) -> np.ndarray:
    """(N, C, W, W) patches of ``spec`` (a patches artifact or stack), at most ``limit`` of them
    evenly spaced (0 = all), refused with a message when their shape is not the model's."""
    images = evenly_spaced(load_patch_input(spec).images, limit)
    expected = (model_config.channels, model_config.image_size, model_config.image_size)
    if tuple(images.shape[1:]) != expected:
        raise InputError(f"{spec}: patches are {'×'.join(map(str, images.shape[1:]))} (C×W×W) but the model in {run_dir} was trained on {'×'.join(map(str, expected))}")
    return images


def _read_stack(spec: str) -> np.ndarray:
    from .images import read_scans

    scans = read_scans(spec, stack_as="frames")
    shapes = {scan.data.shape for scan in scans}
    if len(shapes) != 1:
        raise InputError(f"{spec}: frames have different shapes {sorted(shapes)}; expected a stack of equal patches")
    return np.stack([scan.data for scan in scans]).astype(np.float32, copy=False)


def _check_stack(images: np.ndarray | PatchFile, spec: str) -> tuple[float, float]:
    """The (min, max) of square, finite patches; InputError otherwise."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"{spec}: patches of shape {images.shape[1:]}; expected (C, W, W) square patches")
    if len(images) < 2:
        raise InputError(f"{spec}: holds {len(images)} patch(es); training needs at least 2")
    return value_range(images, spec)


# ----------------------------------------------------------------------------------------------
# train

RUN_PROVENANCE = "provenance.json"
RUN_FILES = ("config.json", RUN_PROVENANCE, "log.csv", "loss.png", "checkpoints", "training_stats.json", "init", "summary.json")


def choose_likelihood(value_range: tuple[float, float], requested: str) -> str:
    """``auto``: Bernoulli when every value lies in [0, 1] (normalised patches), else Gaussian."""
    low, high = value_range
    inside_unit = low >= 0.0 and high <= 1.0
    if requested == "auto":
        return "bernoulli" if inside_unit else "gaussian"
    if requested == "bernoulli" and not inside_unit:
        raise ParameterError(
            f"--likelihood bernoulli needs values in [0, 1], the patches span [{low:.3g}, {high:.3g}]; "
            "use --likelihood gaussian or extract with --normalize image"
        )
    return requested


def run_train(
    patches: str | Path,
    run_dir: str | Path,
    model_config,
    train_config,
    force: bool = False,
    progress: Callable[[dict], None] | None = None,
    labels: str | Path | None = None,
    memory_limit: int = RESIDENT_LIMIT_BYTES,
) -> StageResult:
    """Train a j-trVAE on a patches artifact or image stack, in a run folder that resumes.

    Patches above ``memory_limit`` bytes are streamed from their file (:mod:`microvae.streaming`).
    Under ``torchrun`` every process calls this; rank 0 alone writes the run folder.

    ``labels`` names a file of known classes for some patches (semi-supervised training, see
    :func:`read_labels`); its hash joins the run's provenance.

    ``model_config.image_size`` and ``channels`` are taken from the data. The run folder holds
    ``provenance.json`` (inputs, upstream chain, extraction recipe), ``config.json``,
    ``checkpoints/last.pt`` and ``final.pt``, ``log.csv`` and ``loss.png``. Running the same command
    again continues from the last checkpoint (or says the run is complete); other inputs or settings
    are refused unless ``force``, which clears the run's own files first.
    """
    from .training import distributed_world, fit

    run_dir = Path(run_dir)
    source = load_patch_input(patches, stream_above=memory_limit)
    model_config.image_size = int(source.images.shape[-1])
    model_config.channels = int(source.images.shape[1])
    model_config.likelihood = choose_likelihood(source.value_range, model_config.likelihood)
    model_config.validate()
    train_config.validate()
    from .training import RESUMABLE_CHANGES

    parameters = {"model": model_config.to_dict(), "train": {k: v for k, v in train_config.to_dict().items() if k not in RESUMABLE_CHANGES}}
    inputs = [{"path": str(source.path), "sha256": source.sha256, "role": "patches"}]
    known = None
    if labels is not None:
        from .images import file_sha256

        known = read_labels(labels, len(source.images), model_config.n_classes)
        inputs.append({"path": str(labels), "sha256": file_sha256(Path(labels)), "role": "labels"})
        parameters["labelled_patches"] = int((known >= 0).sum())
    provenance = Provenance(stage="train", parameters=parameters, inputs=inputs, upstream=[source.header.provenance_record()] if source.header else [])
    record = {
        **provenance.to_dict(),
        "recipe": source.recipe,
        "input_kind": source.kind,
        "patch_shape": list(source.images.shape[1:]),
        "training_images": [asdict(r) for r in source.records] if source.records else [],
    }
    world = distributed_world(train_config.device)
    if world.rank == 0:
        artifacts.check_writable_location(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    # rank 0 owns the folder: a second `train` into it is refused while this one runs
    with artifacts.output_lock(run_dir) if world.rank == 0 else contextlib.nullcontext():
        if world.rank == 0:
            status = _prepare_run_dir(run_dir, provenance.fingerprint, train_config.epochs, force)
            if status != "complete":
                artifacts.check_writable_location(run_dir / RUN_PROVENANCE)
                run_dir.mkdir(parents=True, exist_ok=True)
                with artifacts.atomic_file(run_dir / RUN_PROVENANCE) as temp:
                    temp.write_text(json.dumps(record, indent=2, default=artifacts._json_default))
        world.barrier()
        if world.rank != 0:
            status = _prepare_run_dir(run_dir, provenance.fingerprint, train_config.epochs, force=False)
        if status == "complete":
            notes = [f"run complete ({train_config.epochs} epochs) with these inputs and settings"]
            verdict = json.loads((run_dir / "summary.json").read_text())
            notes.append(verdict.get("paragraph", ""))
            return StageResult("up-to-date", run_dir, {"verdict": verdict}, notes)
        if progress is not None and world.rank == 0:
            progress(_training_estimate(source.images, model_config, train_config, run_dir, known))
        class_count = None
        if train_config.max_classes:
            class_count = _choose_class_count(source.images, model_config, train_config, run_dir / "init")
            model_config.n_classes = class_count.n_classes
        initial = None
        if _uses_class_init(model_config, train_config, known, source.images):
            from .discovery import choose_initial_classes

            def on_candidate(candidate) -> None:
                if progress is not None:
                    progress({"event": "candidate", **asdict(candidate)})

            initial = choose_initial_classes(source.images, model_config, train_config, run_dir / "init", on_candidate)
            if initial.chosen == "fourier_kmeans" and model_config.rotation and model_config.encoder == "mlp":
                model_config.invariant_class_head = True      # the class posterior reads what the classes were found in
        result = fit(source.images, model_config, train_config, run_dir, progress=progress, labels=known,
                     init_labels=None if initial is None else initial.labels)
        verdict = None
        if world.rank == 0:
            verdict = _summarise_training(result.model, source.images, run_dir, train_config, initial)
    last = result.history[-1] if result.history else {}
    notes = [f"{len(source.images)} patches {tuple(source.images.shape[1:])}, likelihood {model_config.likelihood}, {model_config.n_classes} classes"
             + (" (streamed from disk)" if isinstance(source.images, PatchFile) else "")]
    if world.size > 1:
        notes.append(f"DistributedDataParallel over {world.size} processes ({world.device.type}); batch {train_config.batch_size} per process")
    if known is not None:
        notes.append(f"semi-supervised: {int((known >= 0).sum())} labelled patches ({100 * (known >= 0).mean():.1f}%)")
    if result.resumed_from_epoch is not None:
        notes.append(f"resumed from epoch {result.resumed_from_epoch}")
    if class_count is not None:
        notes.append(f"--classes auto chose K = {class_count.n_classes} (best-separated classical partition; "
                     "RUN_DIR/init/classes_auto.json):\n" + class_count.table())
    if initial is not None:
        how = "best separated" if initial.criterion == "separation" else "lowest held-out −ELBO of a short run"
        notes.append(f"initial classes: {initial.chosen} ({how}; RUN_DIR/init/selection.json)\n" + initial.table())
    summary = {"epochs": result.epochs_completed, "loss": last.get("loss"), "val_loss": last.get("val_loss"), "run_dir": str(run_dir)}
    if verdict is not None:
        notes.append(verdict.paragraph())
        summary["verdict"] = verdict.to_dict()
    return StageResult("written", run_dir, summary, notes)


def _device_words(device) -> str:
    """'cpu (2 threads)' or 'cuda:0 (NVIDIA H200)'."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _training_estimate(images, model_config, train_config, run_dir: Path, known) -> dict:
    """The work a run has left and how long it should take here: an ``event='estimate'`` dict with
    patches, epochs left, the pose run's epochs, patch passes, samples/s (measured on a few steps
    of this run's model, :func:`microvae.training.measure_throughput`) and seconds."""
    from .discovery import restart_epochs
    from .training import load_checkpoint, measure_throughput, resolve_device

    last = run_dir / "checkpoints" / "last.pt"
    done = int(load_checkpoint(last)["epoch"]) if last.exists() else 0
    epochs = max(train_config.epochs - done, 0)
    pose = 0
    if done == 0 and _uses_class_init(model_config, train_config, known, images):
        short = restart_epochs(train_config)
        pose = short * ((model_config.rotation or model_config.translation) + 4 * (train_config.class_init == "restarts"))
    if train_config.max_classes:                     # --classes auto: time the largest K it tries
        model_config = dataclasses.replace(model_config, n_classes=train_config.max_classes)
    train_rows = len(images) - int(round(train_config.val_fraction * len(images)))
    passes = train_rows * (epochs + pose)
    rate = measure_throughput(images, model_config, train_config) if passes else float("inf")
    return {"event": "estimate", "patches": int(len(images)), "epochs": epochs, "done": done, "pose_epochs": pose,
            "passes": int(passes), "samples_per_s": rate, "seconds": passes / rate, "device": _device_words(resolve_device(train_config.device))}


def run_train_ensemble(
    patches: str | Path,
    run_dir: str | Path,
    model_config,
    train_config,
    members: int,
    force: bool = False,
    progress: Callable[[dict], None] | None = None,
    on_member: Callable[[int, StageResult], None] | None = None,
    labels: str | Path | None = None,
    memory_limit: int = RESIDENT_LIMIT_BYTES,
) -> StageResult:
    """Train ``members`` runs with seeds seed, seed + 1, … in ``run_dir/member_i`` (each resumes like
    :func:`run_train`, semi-supervised by the same ``labels`` when given), then align their classes
    to member 0's and write ``ensemble.json`` (:mod:`microvae.ensemble`). Rerunning finishes what
    an interruption left. Patches above ``memory_limit`` bytes are streamed, for training and for
    the alignment's encoding alike."""
    import copy
    from dataclasses import replace

    from .ensemble import build_record, member_dir, read_record
    from .training import encode_array, load_run

    if members < 2:
        raise ParameterError(f"an ensemble needs at least 2 members, got {members}")
    if model_config.n_classes < 2:
        raise ParameterError("an ensemble aligns classes: give --classes 2 or more")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder; the ensemble needs a folder")
    if run_dir.is_dir() and (run_dir / RUN_PROVENANCE).exists():
        raise OutputError(f"{run_dir}: holds an ordinary (single) run; choose another folder for the ensemble")
    seeds = [train_config.seed + index for index in range(members)]
    statuses = []
    for index, seed in enumerate(seeds):
        result = run_train(patches, member_dir(run_dir, index), copy.deepcopy(model_config), replace(train_config, seed=seed), force=force, progress=progress,
                           labels=labels, memory_limit=memory_limit)
        statuses.append(result.status)
        if on_member is not None:
            on_member(index, result)
    names = [member_dir(run_dir, i).name for i in range(members)]
    status = "up-to-date" if all(s == "up-to-date" for s in statuses) else "written"
    record = read_record(run_dir) if status == "up-to-date" else None
    if record is None or record.members != names or record.seeds != seeds:     # align the (new) members
        source = load_patch_input(patches, stream_above=memory_limit)
        labels = []
        for index in range(members):
            model, _ = load_run(member_dir(run_dir, index), device="cpu")
            labels.append(encode_array(model, source.images, device=train_config.device, recon_error=False)["class"])
        record = build_record(labels, model_config.n_classes, names, seeds)
        record.write(run_dir)
        status = "written"
        counts = [np.bincount(label, minlength=model_config.n_classes).tolist() for label in labels]
    notes = [f"{members} members (seeds {seeds[0]}–{seeds[-1]}); mean pairwise ARI of their classes {record.mean_pairwise_ari:.3f} "
             "(near 1: stable classes; compare across --classes to choose K)"]
    if status == "written":
        notes.append(f"patches per class, by member: {counts}")
    if min(record.classes_used) < model_config.n_classes:
        notes.append(f"some members fill fewer than {model_config.n_classes} classes (classes used: {record.classes_used}): their agreement says little")
    summary = {"members": members, "mean_pairwise_ari": record.mean_pairwise_ari, "pairwise_ari": record.pairwise_ari,
               "classes_used": record.classes_used, "run_dir": str(run_dir)}
    return StageResult(status, run_dir, summary, notes)


def read_labels(path: str | Path, count: int, n_classes: int) -> np.ndarray:
    """Known classes of some patches, as (count,) int64 with −1 for unknown.

    ``path`` is a CSV of ``patch_index,class`` rows (a header line is allowed; indices are rows of
    the patches artifact, 0-based) or a .npy array of ``count`` integers with −1 for unknown.
    """
    from .training import check_labels

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file (expected a CSV of patch_index,class rows or a .npy array)")
    if path.suffix.lower() == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise InputError(f"{path}: not a readable .npy array ({error})") from error
    else:
        labels = np.full(count, -1, dtype=np.int64)
        first_line = {}                       # patch index -> the line that labelled it
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = [f.strip() for f in line.replace(";", ",").split(",")]
            if not line.strip() or (number == 1 and not fields[0].lstrip("-").isdigit()):
                continue
            try:
                index, label = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise InputError(f"{path}:{number}: expected 'patch_index,class', got {line.strip()!r}") from None
            if not 0 <= index < count:
                raise InputError(f"{path}:{number}: patch index {index} is outside 0…{count - 1}")
            if index in first_line:
                raise InputError(f"{path}:{number}: patch {index} is labelled again (first on line {first_line[index]}); give each patch one row")
            first_line[index] = number
            labels[index] = label
    try:
        return check_labels(labels, count, n_classes)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


#: Training statistics are taken over at most this many patches, evenly spaced.
STATISTICS_SAMPLE = 20_000


def _uses_class_init(model_config, train_config, labels, images) -> bool:
    """Whether training starts its classes from :mod:`microvae.discovery`: with classes, a
    ``class_init`` other than 'none', no user labels (they already say what the classes are) and
    patches in memory."""
    return (model_config.n_classes >= 2 and train_config.class_init != "none" and labels is None
            and not isinstance(images, PatchFile))


def _choose_class_count(images, model_config, train_config, folder: Path):
    """K for ``--classes auto`` (:func:`microvae.discovery.choose_n_classes`), written to
    ``folder/classes_auto.json``."""
    from .discovery import candidate_partitions, choose_n_classes, learn_pose

    if isinstance(images, PatchFile):
        raise InputError(f"{images.path}: --classes auto needs the patches in memory; raise --memory-limit-gb or give K")
    pose = learn_pose(images, model_config, train_config, folder)
    choice = choose_n_classes(lambda k: candidate_partitions(images, k, train_config.seed, pose),
                              range(2, train_config.max_classes + 1), train_config.seed)
    from .training import distributed_world

    if distributed_world(train_config.device).rank == 0:
        with artifacts.atomic_file(folder / "classes_auto.json") as temp:
            temp.write_text(json.dumps({"n_classes": choice.n_classes, "rows": choice.rows}, indent=2))
    return choice


def _summarise_training(model, images, run_dir: Path, train_config, initial) -> "Verdict":
    """One encoding pass over at most :data:`STATISTICS_SAMPLE` evenly spaced training patches
    gives both the training statistics (reconstruction error and −ELBO, for the out-of-distribution
    checks of ``encode``: ``training_stats.json``) and the run's :class:`~microvae.verdict.Verdict`
    (``summary.json``, written last)."""
    from .baselines import fast_baseline
    from .encoding import write_training_statistics
    from .training import encode_array
    from .verdict import assess

    rows = np.arange(0, len(images), max(1, -(-len(images) // STATISTICS_SAMPLE)))     # evenly_spaced's rows
    sample = evenly_spaced(images, STATISTICS_SAMPLE)
    encoded = encode_array(model, sample, batch_size=1024, device=train_config.device, neg_elbo=True)
    write_training_statistics(run_dir, encoded["recon_error"], encoded["neg_elbo"])
    k = model.config.n_classes
    pixel_variance = float(np.asarray(sample, dtype=np.float64).var(axis=0).mean())
    baseline = None
    if k >= 2:
        name = "fourier_kmeans" if model.config.rotation else "pca_kmeans"
        baseline = (name, fast_baseline(sample, k, model.config.rotation, seed=train_config.seed))
    verdict = assess(encoded["class_probs"] if k >= 2 else None, encoded["recon_error"], pixel_variance, baseline,
                     {name: labels[rows] for name, labels in initial.candidate_labels.items()} if initial else None,
                     initial.chosen if initial else None)
    with artifacts.atomic_file(run_dir / "summary.json") as temp:
        temp.write_text(json.dumps(verdict.to_dict(), indent=2))
    return verdict


def _prepare_run_dir(run_dir: Path, fingerprint: str, epochs: int, force: bool) -> str:
    """``new``, ``resume`` or ``complete``; clears the run's own files under ``force`` when settings differ."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder; the run needs a folder")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "new"
    record_path = run_dir / RUN_PROVENANCE
    record = None
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = None
    if record is not None and record.get("fingerprint") == fingerprint:
        log = run_dir / "log.csv"
        final = run_dir / "checkpoints" / "final.pt"
        stats = run_dir / "summary.json"     # written last: a run killed before it is not complete
        if final.exists() and log.exists() and stats.exists() and sum(1 for _ in log.open()) - 1 >= epochs:
            return "complete"
        return "resume"
    if not force:
        what = "another microvae run (other inputs or settings)" if record is not None else "files that are not a microvae run"
        raise OutputError(f"{run_dir}: holds {what}; pass --force to replace the run, or choose another folder")
    import shutil

    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return "new"


def read_run_provenance(run_dir: str | Path) -> dict[str, Any]:
    """The ``provenance.json`` of a run folder ({} for runs trained through the library only).

    Raises:
        InputError: unreadable, or written with another schema version.
    """
    path = Path(run_dir) / RUN_PROVENANCE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"{path}: unreadable run provenance ({error})") from error
    if not isinstance(record, dict):
        raise InputError(f"{path}: unreadable run provenance (expected a JSON object)")
    artifacts.check_schema_version(path, int(record.get("schema_version", artifacts.SCHEMA_VERSION)), what="run folder schema",
                                   remedy="use the microvae that trained it, or retrain")
    return record


# ----------------------------------------------------------------------------------------------
# encode


def run_encode(
    run_dir: str | Path,
    patches: str | Path,
    output: str | Path,
    device: str = "auto",
    batch_size: int = 1024,
    force: bool = False,
    progress: ProgressCallback | None = None,
    refine_steps: int = 0,
    refine_lr: float = 0.05,
    memory_limit: int = RESIDENT_LIMIT_BYTES,
    labels: str | Path | None = None,
    scores: bool = True,
    amp: bool = False,
    ignore_calibration: bool = False,
) -> StageResult:
    """Encode a patches artifact (or stack) with a trained run and write an ``encoded`` artifact.
    Patches cut from scans whose pixel size differs from the training scans' by more than 2 % are
    refused unless ``ignore_calibration`` (a bare stack records no pixel size and is not checked).
    ``labels`` names a file of known classes (as for ``train --labels``): those patches keep their
    class (one-hot ``class_probs``, reconstruction and −ELBO with it; a conditional model's
    inference) and ``class_observed`` marks them.
    Patches above ``memory_limit`` bytes are read block by block (:mod:`microvae.streaming`).

    Datasets: ``class_probs`` (N, K), ``class`` (N,), ``z_mean``/``z_sd`` (N, D), ``angle_rad`` (N,),
    ``angle_concentration`` (N,), ``shift_px``/``shift_sd_px`` (N, 2), ``recon_error`` (N,),
    ``neg_elbo`` (N,), and for patches artifacts ``coords`` (N, 2), ``image_index`` (N,) and ``/images``.
    With ``refine_steps`` > 0 each patch's posterior is optimised against the fixed decoder first
    (:mod:`microvae.refine`); ``neg_elbo_encoder`` (N,) then keeps the encoder's value beside the
    refined ``neg_elbo``. ``scores=False`` leaves out ``recon_error`` and ``neg_elbo`` (and the
    comparison with the training data): the encoder alone runs, with no decoder pass, which is
    what mapping a large stack at full speed needs. ``amp`` runs the networks in bfloat16 on CUDA.
    """
    from .refine import RefineConfig

    refine = RefineConfig(steps=refine_steps, lr=refine_lr)
    refine.validate()
    if refine.steps and not scores:
        raise ParameterError("encode --refine optimises each patch's −ELBO and records it: it cannot be combined with --no-scores")
    from .training import encode_array, load_run

    from .ensemble import member_dir, read_record

    progress = progress or _noop
    run_dir = Path(run_dir)
    output = Path(output)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder (expected the output folder of 'microvae train')")
    ensemble = read_record(run_dir)
    ensemble_dir = run_dir if ensemble else None
    if ensemble:
        run_dir = member_dir(run_dir, 0)       # latents, angles and provenance come from member 0
    model, configs = load_run(run_dir, device="cpu")
    run_record = read_run_provenance(run_dir)
    source = load_patch_input(patches, stream_above=memory_limit)
    model_config = configs["model"]
    expected = (model_config.channels, model_config.image_size, model_config.image_size)
    if tuple(source.images.shape[1:]) != expected:
        raise InputError(f"{patches}: patches are {'×'.join(map(str, source.images.shape[1:]))} (C×W×W) but the model in {run_dir} was trained on {'×'.join(map(str, expected))}")
    _check_recipe_matches(run_record.get("recipe"), source.recipe, patches, run_dir)
    if not ignore_calibration:
        for record in source.records or []:
            _check_pixel_size(f"{patches}: patches from {record.name}", record.pixel_size, record.unit, run_record.get("training_images") or [])
    checkpoint = run_dir / "checkpoints" / ("final.pt" if (run_dir / "checkpoints" / "final.pt").exists() else "last.pt")
    from .images import file_sha256

    inputs = [{"path": str(source.path), "sha256": source.sha256, "role": "patches"}, {"path": str(checkpoint), "sha256": file_sha256(checkpoint), "role": "model"}]
    known = None
    if labels is not None:
        if ensemble or refine.steps:
            raise ParameterError("encode --labels works with a single run and without --refine")
        known = read_labels(labels, len(source.images), model_config.n_classes)
        inputs.append({"path": str(labels), "sha256": file_sha256(Path(labels)), "role": "labels"})
    upstream = ([source.header.provenance_record()] if source.header else []) + ([{k: v for k, v in run_record.items() if k != "recipe"}] if run_record else [])
    parameters = {"run_epoch": configs["epoch"], "batch_size": batch_size, "scores": scores, "amp": amp}
    if ensemble:
        parameters["ensemble"] = {"members": ensemble.members, "permutations": ensemble.permutations}
        inputs += [{"path": str(member_dir(ensemble_dir, i) / "checkpoints" / "final.pt"),
                    "sha256": file_sha256(member_dir(ensemble_dir, i) / "checkpoints" / "final.pt"), "role": "model"}
                   for i in range(1, len(ensemble.members))]
    if refine.steps:
        parameters["refine"] = asdict(refine)
    provenance = Provenance(stage="encode", parameters=parameters, inputs=inputs, upstream=upstream)
    plan = artifacts.plan_output(output, provenance.fingerprint, force)
    if plan.action == "skip":
        return StageResult("up-to-date", output, notes=[plan.reason])
    from .encoding import read_training_statistics, scan_summaries

    task = "encoding" if not refine.steps else f"encoding, refining {refine.steps} steps"
    encoded = encode_array(model, source.images, batch_size=batch_size, device=device, refine=refine, labels=known,
                           recon_error=scores, neg_elbo=scores, amp=amp, progress=lambda done, total: progress(task, done, total))
    if refine.steps:
        encoded["neg_elbo"] = encoded["neg_elbo_refined"].astype(np.float64)
    if ensemble:
        encoded.update(_ensemble_classes(ensemble_dir, ensemble, source.images, encoded["class_probs"], batch_size, device, progress))
    count = len(source.images)
    training_stats = read_training_statistics(run_dir)
    image_index = source.image_index if source.image_index is not None else np.zeros(count, np.int32)
    names = [record.name for record in source.records] if source.records else [source.path.name]
    summaries = scan_summaries(image_index, encoded.get("recon_error"), encoded.get("neg_elbo"), names, training_stats)
    with artifacts.atomic_h5(output, provenance, "encoded") as handle:
        if source.coords is not None:
            write_dataset(handle, "coords", source.coords, "px", "patch centre (row, col) in source pixels (from the patches artifact)", axes="row,col")
            write_dataset(handle, "image_index", source.image_index, "", "row of /images the patch was cut from")
            artifacts.write_image_table(handle, source.records)
            for name, (values, units, description) in source.atom_values.items():
                write_dataset(handle, name, values, units, description + " (from the patches artifact)")
        else:
            write_dataset(handle, "image_index", np.zeros(count, np.int32), "", "all patches come from one stack (no source images)")
        descriptions = {
            "class_probs": ("", "q(y|x): probability of each class (columns sum to 1)"),
            "class": ("", "argmax of class_probs"),
            "z_mean": ("latent units", "mean of q(z|x), continuous latents (prior N(0, 1))"),
            "z_sd": ("latent units", "sd of q(z|x)"),
            "angle_rad": ("rad", "posterior angle of the patch's rotation relative to the learned canonical frame, in (−π, π], counter-clockwise in (row, col) display coordinates as documented in microvae.nets"),
            "angle_concentration": ("", "sharpness of q(angle|x): |mean|/sd of the projected-normal's 2D vector (large = certain)"),
            "shift_px": ("px", "posterior mean shift (row, col) of the object relative to the patch centre"),
            "shift_sd_px": ("px", "posterior sd of the shift"),
            "recon_error": ("normalised intensity²", "mean squared error between the patch and its reconstruction from the posterior means (argmax class)"),
            "neg_elbo": ("nats", "negative ELBO of the patch under the model (β = 1, one fixed-seed draw): high means poorly explained"),
        }
        if ensemble:
            descriptions["class_probs"] = ("", f"q(y|x) averaged over the {len(ensemble.members)} ensemble members after aligning their classes to member 0's (columns sum to 1)")
            descriptions["class"] = ("", "argmax of the ensemble's class_probs")
            descriptions["class_agreement"] = ("", "fraction of ensemble members whose own argmax class equals `class` (1/M to 1; low = uncertain)")
            descriptions["class_prob_sd"] = ("", "sd over ensemble members of the aligned q(y|x), mean over classes")
        if refine.steps:
            descriptions["neg_elbo"] = ("nats", f"negative ELBO of the patch after {refine.steps} steps of per-sample refinement of its posterior (β = 1, mean of {refine.eval_draws} fixed-seed draws)")
            descriptions["neg_elbo_encoder"] = ("nats", "negative ELBO with the encoder's posterior, before refinement (the same draws)")
        if known is not None:
            encoded["class_observed"] = known >= 0
            descriptions["class_observed"] = ("", "True where the class was given (encode --labels) rather than inferred")
        for name, (units, description) in descriptions.items():
            if name in encoded:
                write_dataset(handle, name, encoded[name], units, description)
        handle.attrs["n_classes"] = int(model_config.n_classes)
        handle.attrs["latent_dim"] = int(model_config.latent_dim)
        handle.attrs["rotation"] = bool(model_config.rotation)
        handle.attrs["translation"] = bool(model_config.translation)
        handle.attrs["run_dir"] = str(ensemble_dir or run_dir)
        if ensemble:
            handle.attrs["ensemble_members"] = len(ensemble.members)
            handle.attrs["ensemble_mean_pairwise_ari"] = ensemble.mean_pairwise_ari
        handle.attrs["window"] = int(source.images.shape[-1])
        handle.attrs["scan_summaries"] = artifacts.to_json(summaries)
        handle.attrs["scores"] = bool(scores)
        if training_stats and scores:
            handle.attrs["training_statistics"] = artifacts.to_json({k: asdict(v) for k, v in training_stats.items()})
    counts = np.bincount(encoded["class"], minlength=max(model_config.n_classes, 1))
    notes = [f"{count} patches encoded; patches per class: {counts.tolist()}"]
    if ensemble:
        notes.append(f"ensemble of {len(ensemble.members)}: all members agree on {100 * (encoded['class_agreement'] == 1).mean():.1f}% of patches "
                     f"(mean agreement {encoded['class_agreement'].mean():.3f}; training-set pairwise ARI {ensemble.mean_pairwise_ari:.3f})")
    for entry in summaries:
        if "neg_elbo_ratio" in entry:
            notes.append(
                f"{entry['scan']}: recon error {entry['recon_error_ratio']:.2f}× and −ELBO {entry['neg_elbo_ratio']:.2f}× the training data's; "
                f"{100 * entry['beyond_training_p99']:.1f}% of patches beyond the training 99th percentile"
            )
    summary = {"patches": count, "class_counts": counts.tolist(), "scans": summaries}
    if scores:
        summary["mean_recon_error"] = float(encoded["recon_error"].mean())
    if refine.steps:
        before, after = encoded["neg_elbo_encoder"], encoded["neg_elbo_refined"]
        summary["refine"] = {"steps": refine.steps, "mean_neg_elbo_encoder": float(before.mean()), "mean_neg_elbo_refined": float(after.mean()),
                             "improved_fraction": float((after < before).mean())}
        notes.append(f"refinement ({refine.steps} steps): mean −ELBO {before.mean():.2f} → {after.mean():.2f} nats; "
                     f"{100 * (after < before).mean():.1f}% of patches improved")
    return StageResult("written", output, summary, notes)


def _ensemble_classes(ensemble_dir: Path, ensemble, images: np.ndarray, first_probs: np.ndarray, batch_size: int, device: str, progress) -> dict[str, np.ndarray]:
    """Consensus class, class_probs, class_agreement and class_prob_sd of an ensemble's members."""
    from .ensemble import consensus, member_dir, permute_probs
    from .training import encode_array, load_run

    aligned = [permute_probs(first_probs, np.asarray(ensemble.permutations[0]))]
    for index in range(1, len(ensemble.members)):
        progress("encoding ensemble members", index, len(ensemble.members))
        model, configs = load_run(member_dir(ensemble_dir, index), device="cpu")
        probs = encode_array(model, images, batch_size=batch_size, device=device, recon_error=False)["class_probs"]
        aligned.append(permute_probs(probs, np.asarray(ensemble.permutations[index])))
    progress("encoding ensemble members", len(ensemble.members), len(ensemble.members))
    combined = consensus(np.stack(aligned))
    return {"class_probs": combined.class_probs.astype(np.float32), "class": combined.labels,
            "class_agreement": combined.agreement.astype(np.float32), "class_prob_sd": combined.prob_sd.astype(np.float32)}


def _check_recipe_matches(run_recipe: dict | None, patch_recipe: dict | None, patches, run_dir) -> None:
    """Refuse patches extracted differently from the training patches (FFT vs real space, normalisation, window)."""
    if not run_recipe or not patch_recipe:
        return
    trained = run_recipe.get("extract") or {}
    given = patch_recipe.get("extract") or {}
    for key in ("fft", "normalize", "window"):
        if key in trained and key in given and trained[key] != given[key]:
            raise InputError(f"{patches}: extracted with {key}={given[key]!r} but the model in {run_dir} was trained on {key}={trained[key]!r}; re-extract with the run's settings")


# ----------------------------------------------------------------------------------------------
# export

EXPORT_FORMATS = ("h5", "tiff", "png")
PNG_MAPS_PREFIXES = ("class", "angle_rad", "recon_error", "neg_elbo", "z", "sublattice", "displacement_px")


def run_export(
    encoded: str | Path,
    outdir: str | Path,
    formats: tuple[str, ...] = EXPORT_FORMATS,
    radius: float | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Render an encoded artifact's per-patch values as maps on each source scan's pixel grid.

    Writes into ``outdir``: ``maps.h5`` (a ``maps`` artifact: ``/image_NN/<map>`` datasets and the
    ``/images`` table), ``<scan>_<map>.tif`` (ImageJ-calibrated), ``<scan>_<map>.png`` overlays and
    ``latents.png``. ``radius`` defaults to half the patch window.
    """
    import h5py

    from .export import ATOM_MAPS, OPTIONAL_MAPS, build_maps, write_tiff

    progress = progress or _noop
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ParameterError(f"unknown export format(s) {', '.join(unknown) or '(none)'}; expected a comma-separated subset of {','.join(EXPORT_FORMATS)}")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: exists and is not a folder; export writes a folder of maps")
    header = artifacts.read_header(encoded, "encoded")
    with h5py.File(encoded, "r") as handle:
        if "coords" not in handle or "images" not in handle:
            raise InputError(f"{encoded}: has no patch coordinates (it was encoded from a bare stack); maps need patches from 'microvae extract'")
        artifacts.require_datasets(handle, encoded, ["class", "class_probs", "z_mean", "angle_rad", "shift_px", "image_index"], "encoded")
        if "recon_error" not in handle and handle.attrs.get("scores", True):
            raise InputError(f"{encoded}: not a complete encoded artifact: dataset 'recon_error' is missing (expected unless it was encoded with --no-scores)")
        per_patch_names = ["class", "class_probs", "z_mean", "angle_rad", "shift_px"] + [name for name in OPTIONAL_MAPS if name in handle]
        per_patch_names += [name for name in ATOM_MAPS if name in handle]
        data = {name: handle[name][()] for name in ["coords", "image_index", *per_patch_names]}
        records = artifacts.read_image_table(handle)
        window = int(handle.attrs.get("window", 0)) or None
    radius = float(radius if radius is not None else (window / 2.0 if window else 8.0))
    parameters = {"formats": sorted(formats), "radius_px": radius}
    provenance = Provenance(stage="export", parameters=parameters, inputs=[{"path": str(encoded), "sha256": header.fingerprint, "role": "encoded"}], upstream=[header.provenance_record()])
    plan = artifacts.plan_output(outdir / "maps.h5", provenance.fingerprint, force)
    if plan.action == "skip":
        return StageResult("up-to-date", outdir, notes=[plan.reason])
    outdir.mkdir(parents=True, exist_ok=True)
    all_maps = []
    written = []
    for index, record in enumerate(records):
        progress("rendering maps", index, len(records))
        members = data["image_index"] == index
        per_patch = {name: data[name][members] for name in per_patch_names}
        scan_maps = build_maps((record.height, record.width), data["coords"][members], per_patch, radius)
        all_maps.append(scan_maps)
        label = _scan_label(index, record)
        if "tiff" in formats:
            for name, values in scan_maps.maps.items():
                target = outdir / f"{label}_{name}.tif"
                with artifacts.atomic_file(target) as temp:
                    write_tiff(temp, values, record.pixel_size, record.unit)
                written.append(target)
        if "png" in formats:
            written.extend(_write_map_pngs(outdir, label, record, scan_maps))
    progress("rendering maps", len(records), len(records))
    if "png" in formats:
        from .plots import save_latent_scatter

        target = outdir / "latents.png"
        with artifacts.atomic_file(target) as temp:
            save_latent_scatter(temp, data["z_mean"], data["class"], title=f"{len(data['class'])} patches: continuous latents by class")
        written.append(target)
    with artifacts.atomic_h5(outdir / "maps.h5", provenance, "maps") as handle:
        artifacts.write_image_table(handle, records)
        handle.attrs["radius_px"] = radius
        handle.attrs["rule"] = "each pixel takes the value of the nearest patch centre within radius_px (Voronoi cells of the rounded centres); NaN (class: -1) elsewhere"
        for index, scan_maps in enumerate(all_maps):
            group = handle.create_group(f"image_{index:02d}")
            group.attrs["source"] = records[index].source
            group.attrs["coverage"] = scan_maps.coverage
            for name, values in scan_maps.maps.items():
                write_dataset(group, name, values, scan_maps.units[name], scan_maps.descriptions[name], axes="row,col")
    notes = [f"{len(records)} scan(s); {len(written)} TIFF/PNG files; coverage " + ", ".join(f"{m.coverage:.0%}" for m in all_maps)]
    summary = {"scans": len(records), "files": len(written) + 1, "coverage": [round(m.coverage, 4) for m in all_maps]}
    return StageResult("written", outdir, summary, notes)


def _scan_label(index: int, record: ImageRecord) -> str:
    """A file-name-safe label for a scan: ``NN_<stem>``."""
    import re

    stem = Path(record.source.split(":/")[0]).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "scan"
    return f"{index:02d}_{stem}" + (f"_f{record.frame}" if record.frame else "")


def _write_map_pngs(outdir: Path, label: str, record: ImageRecord, scan_maps) -> list[Path]:
    from .plots import save_map_overlay

    scan = _try_read_scan(record)
    written = []
    for name, values in scan_maps.maps.items():
        if "_class" in name or name.startswith("class_prob") or not name.startswith(PNG_MAPS_PREFIXES):
            continue
        target = outdir / f"{label}_{name}.png"
        with artifacts.atomic_file(target) as temp:
            save_map_overlay(temp, name, values, scan, record.pixel_size, record.unit, title=f"{record.name}: {name}",
                             values_unit=scan_maps.units.get(name, ""))
        written.append(target)
    return written


def _try_read_scan(record: ImageRecord) -> np.ndarray | None:
    """The scan's first channel when its file is still where it was and unchanged, else None."""
    try:
        scans = read_scans(record.source)
    except InputError:
        return None
    for scan in scans:
        if scan.frame == record.frame and scan.sha256 == record.sha256:
            return scan.data[0]
    return None


# ----------------------------------------------------------------------------------------------
# encode --pretrained on raw scans: replay the run's extraction recipe


INPUT_KINDS = ("auto", "patches", "scans")


def stored_shape(spec: str | Path) -> tuple[int, ...] | None:
    """The array shape stored in a .npy, .tif/.tiff or ``.h5:/dataset`` file, read from its header
    (nothing loaded); None for other formats (vendor and picture formats hold scans) or a file
    that cannot be read (the reader then names the problem)."""
    import h5py

    from .images import split_dataset_path

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


def run_patch_side(run_dir: str | Path) -> int | None:
    """The patch side W of a trained run, from its config.json (None where that cannot be read:
    the encode stage then names what is wrong with the run folder)."""
    try:
        return int(json.loads((Path(run_dir) / "config.json").read_text())["model"]["image_size"])
    except Exception:
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

    Raises:
        ParameterError: ambiguous, or ``choice`` unknown; InputError: frames smaller than a patch.
    """
    import h5py

    if choice not in INPUT_KINDS:
        raise ParameterError(f"--input-kind must be one of {', '.join(INPUT_KINDS)}, got {choice!r}")
    if choice != "auto":
        return choice
    from .images import split_dataset_path

    file_part, dataset = split_dataset_path(str(spec))
    path = Path(file_part)
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf") and dataset is None and path.is_file():
        try:
            with h5py.File(path, "r") as handle:
                if artifacts._as_str(handle.attrs.get("microvae_artifact", "")) == "patches":
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
            raise ParameterError(f"{spec}: a {frame[0]}×{frame[1]} array reads as one patch of this run ({patch_side}×{patch_side}) "
                                 "or as a scan that small; say which with --input-kind patches or --input-kind scans")
        return "scans"
    if frame == side or len(shape) == 4:         # (N, C, H, W) is a patch stack (its shape is checked against the run's)
        return "patches"
    if frame[0] < patch_side or frame[1] < patch_side:
        raise InputError(f"{spec}: frames of {frame[0]}×{frame[1]} px are neither patches of this run ({patch_side}×{patch_side}) "
                         "nor scans large enough to cut them from")
    if min(frame) < 2 * patch_side:
        raise ParameterError(f"{spec}: {shape[0]} frames of {frame[0]}×{frame[1]} px read as patches of another shape than this run's "
                             f"({patch_side}×{patch_side}) or as scans barely larger than a patch; say which with --input-kind patches "
                             "or --input-kind scans")
    return "scans"


def run_encode_scans(
    run_dir: str | Path,
    scans: list[str],
    output: str | Path,
    find_atoms_overrides: dict[str, Any] | None = None,
    ignore_calibration: bool = False,
    device: str = "auto",
    batch_size: int = 1024,
    force: bool = False,
    progress: ProgressCallback | None = None,
    refine_steps: int = 0,
    refine_lr: float = 0.05,
    scores: bool = True,
    amp: bool = False,
    memory_limit: int = RESIDENT_LIMIT_BYTES,
) -> list[StageResult]:
    """Apply a trained run to raw scans: replay its find-atoms and extract recipe, then encode
    (``refine_steps``, ``refine_lr``, ``scores``, ``amp``, ``memory_limit``: as for :func:`run_encode`).

    Intermediate artifacts go to ``<output stem>_work/`` beside the output (reused when up to date).
    A scan whose channel count, or calibrated pixel size (beyond 2 %), differs from the training
    scans' is refused with a message that says what differs.

    Returns the results of the stages run (find-atoms when the recipe is atom-centred, extract, encode).

    Raises:
        InputError: the run folder or a scan is unusable, or a scan does not match the training
            scans; the work folder, when this call created it, is removed again.
    """
    run_dir = Path(run_dir)
    output = Path(output)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder (expected the output folder of 'microvae train')")
    from .ensemble import member_dir, read_record

    record = read_run_provenance(member_dir(run_dir, 0) if read_record(run_dir) else run_dir)
    recipe = record.get("recipe") or {}
    extract_settings = dict(recipe.get("extract") or {})
    if not extract_settings:
        raise InputError(f"{run_dir}: the run was trained on a bare stack, so it has no extraction recipe to replay; extract patches with 'microvae extract' and pass the patches artifact")
    channels = int(record.get("patch_shape", [1])[0])
    scan_list = [scan for spec in scans for scan in read_scans(spec, stack_as=extract_settings.get("stack_as", "frames"))]
    training_images = record.get("training_images") or []
    for scan in scan_list:
        if scan.n_channels != channels:
            raise InputError(f"{scan.name}: has {scan.n_channels} channel(s) but the model in {run_dir} was trained on {channels}")
        if not ignore_calibration:
            _check_pixel_size(scan.name, scan.pixel_size, scan.unit, training_images)
    work = output.parent / f"{output.stem}_work"
    made_work = not work.exists()
    try:
        encode_options = {"device": device, "batch_size": batch_size, "force": force, "progress": progress,
                          "refine_steps": refine_steps, "refine_lr": refine_lr, "scores": scores, "amp": amp,
                          "memory_limit": memory_limit, "ignore_calibration": ignore_calibration}
        return _replay_and_encode(run_dir, scans, output, work, recipe, extract_settings, find_atoms_overrides, encode_options)
    except BaseException:
        if made_work:  # a failed replay leaves no partial output (a work folder kept from earlier runs stays)
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        raise


def _check_pixel_size(name: str, pixel_size: float, unit: str, training_images: list[dict]) -> None:
    """Refuse data whose calibrated pixel size differs from the training scans' by more than 2 %
    (the model's patches would show objects at another scale). Uncalibrated data pass."""
    from .images import LENGTH_UNITS_M

    if not training_images:
        return
    reference = training_images[0]
    ref_size, ref_unit = float(reference["pixel_size"]), reference["unit"]
    if ref_unit in LENGTH_UNITS_M and unit in LENGTH_UNITS_M:
        ratio = (pixel_size * LENGTH_UNITS_M[unit]) / (ref_size * LENGTH_UNITS_M[ref_unit])
        if abs(ratio - 1.0) > 0.02:
            raise InputError(
                f"{name}: pixel size {pixel_size:g} {unit} differs from the training scans' {ref_size:g} {ref_unit} "
                f"({ratio:.2f}×): the model's patches would show objects at another scale; resample the scan, or pass --ignore-calibration"
            )


def _replay_and_encode(run_dir, scans, output, work, recipe, extract_settings, find_atoms_overrides, encode_options) -> list[StageResult]:
    progress = encode_options["progress"]
    results = []
    atoms_path = None
    grid_step = extract_settings.get("grid_step")
    mode = extract_settings.get("mode", "grid" if grid_step else "atoms")
    if mode == "atoms":
        settings = {k: v for k, v in (recipe.get("find_atoms") or {}).items()}
        channel = int(settings.pop("channel", 0))
        stack_as = settings.pop("stack_as", "frames")
        settings.update({k: v for k, v in (find_atoms_overrides or {}).items() if v is not None})
        params = FindAtomsParams(**{k: v for k, v in settings.items() if k in FindAtomsParams.__dataclass_fields__})
        atoms_path = work / "atoms.h5"
        results.append(run_find_atoms(scans, atoms_path, params, channel=channel, stack_as=stack_as, force=True, progress=progress))
    patch_params = PatchParams(**{k: v for k, v in extract_settings.items() if k in PatchParams.__dataclass_fields__})
    if mode == "atoms":
        patch_params.grid_step = None
    patches_path = work / "patches.h5"
    results.append(run_extract(scans, patches_path, patch_params, atoms=atoms_path, stack_as=extract_settings.get("stack_as", "frames"), force=True, progress=progress))
    results.append(run_encode(run_dir, patches_path, output, **encode_options))
    return results
