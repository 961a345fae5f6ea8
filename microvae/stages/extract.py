"""``microvae extract``: cut patches around atoms or on a grid and write a patches artifact."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from .. import artifacts
from ..artifacts import Provenance, write_dataset
from ..config import ExtractConfig
from ..errors import InputError, ParameterError
from ..images import Scan
from ..patches import grid_centres, patch_blocks, plan_patches
from ..streaming import BLOCK_BYTES
from .inputs import atom_values, image_record, input_entries, read_all
from .result import ProgressCallback, StageResult, no_progress

__all__ = ["run_extract"]


def run_extract(
    images: list[str],
    output: str | Path,
    config: ExtractConfig | None = None,
    *,
    atoms: str | Path | None = None,
    preview: str | Path | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Cut patches around the atoms of an ``atoms`` artifact or on a grid, and write a ``patches`` artifact.

    Parameters
    ----------
    images : list of str
        The scans (those given to find-atoms when ``atoms`` is given).
    output : path
        The patches artifact to write (schema in ``docs/schema.md``; written atomically).
    config : ExtractConfig
        Window, grid step (``config.patches.grid_step``), FFT, normalisation, edges, sublattices,
        how stacks are read, and the compression of the patches: 'gzip' (level 1, with the byte
        shuffle when it shrinks the first chunk, see :func:`microvae.artifacts.gzip_options`) or
        'none' (read fastest, for streaming to a GPU).
    atoms : path, optional
        An atoms artifact: one patch per atom. Exactly one of ``atoms`` and a grid step is given.
    preview : path, optional
        A PNG gallery of random patches.
    force : bool
        Rewrite an artifact that is up to date.
    progress : callable, optional
        ``progress(description, completed, total)``.

    Returns
    -------
    StageResult
    """
    progress = progress or no_progress
    config = config or ExtractConfig()
    config.validate()
    params, stack_as, compression = config.patches, config.stack_as, config.compression
    if (atoms is None) == (params.grid_step is None):
        raise ParameterError("give exactly one of --atoms ATOMS.h5 (atom-centred patches) or --grid STEP (grid patches)")
    output = Path(output)
    parameters = {**config.settings(), "mode": "atoms" if atoms else "grid"}
    inputs = input_entries(images, "image")
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
    scans = read_all(images, stack_as, progress)
    if atoms is not None:
        centres, atom_rows = _atom_centres_for(Path(atoms), scans, params.sublattices)
    else:
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
        first = next(blocks, None)  # the first chunk's patches choose the compression filters
        patches = artifacts.create_dataset(
            handle,
            "patches",
            (plan.count, channels, window, window),
            np.float32,
            "normalised intensity",
            f"(N, C, W, W) patches: {content}; normalisation '{params.normalize}'",
            chunk_rows=chunk_rows,
            compression=compression,
            sample=None if first is None else first[1][:chunk_rows],
            axes="patch,channel,row,col",
        )
        for start, block, offset, scale in itertools.chain([first] if first is not None else [], blocks):
            patches[start : start + len(block)] = block
            norm_offset[start : start + len(block)], norm_scale[start : start + len(block)] = offset, scale
            progress("cutting patches", start + len(block), plan.count)
        write_dataset(
            handle,
            "coords",
            plan.coords,
            "px",
            "patch centre (row, col) in source pixels; patch pixel (i, j) samples (row + i − W//2, col + j − W//2)",
            axes="row,col",
        )
        write_dataset(handle, "image_index", plan.image_index, "", "row of /images the patch was cut from")
        write_dataset(handle, "atom_index", atom_index, "", "row of the atoms artifact's coords the patch is centred on (−1 for grid patches)")
        for name, (values, units, description) in atom_values(atoms, atom_index).items():
            write_dataset(handle, name, values, units, description)
        write_dataset(handle, "edge_padded", plan.edge_padded, "", "True where the window reached outside the image and was filled by reflection")
        write_dataset(handle, "norm_offset", norm_offset, "source intensity", "raw ≈ patch · norm_scale + norm_offset")
        write_dataset(handle, "norm_scale", norm_scale, "source intensity", "raw ≈ patch · norm_scale + norm_offset")
        artifacts.write_image_table(handle, [image_record(scan) for scan in scans])
        handle.attrs["window"] = params.window
        handle.attrs["fft"] = bool(params.fft)
        handle.attrs["normalize"] = params.normalize
        handle.attrs["edge"] = params.edge
        handle.attrs["mode"] = parameters["mode"]
        handle.attrs["skipped_at_edge"] = int(plan.skipped)
        handle.attrs["channel_names"] = artifacts.to_json(scans[0].channel_names)
        handle.attrs["recipe"] = artifacts.to_json(recipe)
        if preview is not None:  # before the artifact is committed: a rerun after a crash skips a complete artifact
            from ..plots import save_patch_gallery

            shown = np.sort(np.random.default_rng(0).choice(plan.count, size=min(64, plan.count), replace=False))
            with artifacts.atomic_file(preview) as temp:
                save_patch_gallery(temp, patches[shown], title=f"{plan.count} patches ({'FFT' if params.fft else 'real space'})", row_labels=shown)
    notes = [f"{plan.count} patches of {channels}×{params.window}×{params.window} from {len(scans)} image(s)"]
    if plan.skipped:
        notes.append(f"{plan.skipped} centre(s) too close to the edge were skipped (--edge reflect keeps them)")
    if preview is not None:
        notes.append(f"preview: {preview}")
    summary = {"patches": plan.count, "window": params.window, "channels": channels, "skipped_at_edge": int(plan.skipped)}
    return StageResult("written", output, summary, notes)


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
