"""``microvae find-atoms``: locate atomic columns in scans and write an atoms artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import artifacts
from ..artifacts import Provenance, write_dataset
from ..atoms import FindAtomsParams, find_atoms
from ..config import FindAtomsConfig
from ..errors import InputError, ParameterError
from ..images import Scan
from .inputs import image_record, input_entries, read_all
from .result import ProgressCallback, StageResult, no_progress


def run_find_atoms(
    images: list[str],
    output: str | Path,
    config: FindAtomsConfig | None = None,
    *,
    preview: str | Path | None = None,
    hspy: str | Path | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Find atoms in every scan of ``images`` and write an ``atoms`` artifact.

    Parameters
    ----------
    images : list of str
        Scan paths (any format :func:`microvae.images.read_scans` reads; ``file.h5:/dataset``).
    output : path
        The atoms artifact to write (HDF5, written atomically).
    config : FindAtomsConfig, optional
        Detection parameters, detection channel and how stacks are read (defaults: estimated).
    preview : path, optional
        A PNG overlay of the atoms on each scan.
    hspy : path, optional
        A HyperSpy file (``.hspy``) per scan: the detection channel with calibrated axes, the atoms
        as ``Points`` markers per sublattice and the per-atom table in ``metadata.microvae.atoms``
        (:func:`microvae.interop.atoms_signal`); ``<stem>_<i>.hspy`` when there are several scans.
        Written also when the artifact is up to date.
    force : bool
        Rewrite an artifact that is up to date.
    progress : callable, optional
        ``progress(description, completed, total)``.

    Returns
    -------
    StageResult
        ``written`` or ``up-to-date``; the summary holds per-scan counts and lattice estimates.

    The artifact holds ``coords`` (N, 2) (row, col) px, ``image_index`` (N,), ``intensity``,
    ``sigma_px``, ``score``, ``fit_ok``, the per-image lattice estimates under ``/estimates`` and the
    ``/images`` table.
    """
    progress = progress or no_progress
    config = config or FindAtomsConfig()
    config.validate()
    params, channel, stack_as = config.detection, config.channel, config.stack_as
    output = Path(output)
    if hspy is not None:
        hspy = Path(hspy)
        if hspy.suffix.lower() != ".hspy":
            raise ParameterError(f"--hspy {hspy}: expected a file name ending in .hspy (HyperSpy chooses its reader by the extension)")
        if hspy.resolve() == output.resolve():
            raise ParameterError(f"--hspy {hspy}: is the atoms artifact itself; give another file name")
    # the device changes how fast, not what is found (both engines agree to ~10⁻⁵ px): not in the fingerprint
    parameters = {k: v for k, v in config.settings().items() if k != "device"}
    inputs = input_entries(images, "image")
    provenance = Provenance(stage="find-atoms", parameters=parameters, inputs=inputs)
    plan = artifacts.plan_output(output, provenance.fingerprint, force)
    if plan.action == "skip":
        notes = [plan.reason]
        if hspy is not None:
            written = _write_atoms_hspy(hspy, output, read_all(images, stack_as, progress), channel)
            notes.append("HyperSpy: " + ", ".join(map(str, written)))
        return StageResult("up-to-date", output, notes=notes)
    scans = read_all(images, stack_as, progress)
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
        write_dataset(
            handle,
            "coords",
            np.concatenate([t.positions for t in tables]),
            "px",
            "atom centre (row, col) in source pixels; pixel (r, c) is centred at (r, c)",
            axes="row,col",
        )
        write_dataset(
            handle, "image_index", np.concatenate([np.full(len(t), i, np.int32) for i, t in enumerate(tables)]), "", "row of /images the atom belongs to"
        )
        write_dataset(
            handle,
            "intensity",
            np.concatenate([t.intensity for t in tables]),
            "normalised intensity",
            "fitted peak height above local background, image scaled so its 0.1–99.9 percentiles map to 0–1",
        )
        write_dataset(handle, "sigma_px", np.concatenate([t.sigma_px for t in tables]), "px", "fitted Gaussian width σ")
        write_dataset(handle, "score", np.concatenate([t.score for t in tables]), "response units", "detection response at the candidate peak")
        write_dataset(handle, "fit_ok", np.concatenate([t.fit_ok for t in tables]), "", "False where the Gaussian fit failed and the centre of mass was kept")
        write_dataset(
            handle,
            "sublattice",
            np.concatenate([t.sublattice for t in tables]).astype(np.int16),
            "",
            "sublattice of the column, 0 the brightest: the unit-cell sites that the lattice's translations link, split where their fitted heights differ",
        )
        write_dataset(
            handle,
            "displacement_px",
            np.concatenate([t.displacement_px for t in tables]),
            "px",
            f"(row, col) offset of the column from the centroid of its nearest neighbours in the reference sublattice ({params.displacements}: "
            "'auto' = each sublattice s ≥ 1 against sublattice 0); NaN where not computed",
            axes="row,col",
        )
        group = handle.create_group("estimates")
        group.attrs["description"] = "per-image lattice estimates used for detection (user overrides applied)"
        write_dataset(group, "spacing_px", np.array([e.spacing_px for e in estimates]), "px", "nearest-neighbour column spacing")
        write_dataset(group, "sigma_px", np.array([e.sigma_px for e in estimates]), "px", "column width σ used for filtering")
        write_dataset(group, "periodic", np.array([e.periodic for e in estimates]), "", "False when the autocorrelation showed no lattice")
        write_dataset(
            group,
            "nearest_neighbour_px",
            np.array([e.nearest_neighbour_px or np.nan for e in estimates]),
            "px",
            "median distance from each column found to its nearest neighbour, all sublattices",
        )
        write_dataset(
            group, "second_search", np.array([e.second_search for e in estimates]), "", "columns found by the second search, in the residual of the first"
        )
        group.attrs["sublattice_counts"] = artifacts.to_json([list(e.sublattice_counts) for e in estimates])
        group.attrs["sublattice_sigma_px"] = artifacts.to_json([[round(w, 4) for w in e.sublattice_sigma_px] for e in estimates])
        artifacts.write_image_table(handle, [image_record(scan) for scan in scans])
    notes = [_find_atoms_note(scan.name, table, est, params) for scan, table, est in zip(scans, tables, estimates)]
    if preview is not None:
        notes.append(f"preview: {preview}")
    if hspy is not None:
        notes.append("HyperSpy: " + ", ".join(map(str, _write_atoms_hspy(hspy, output, scans, channel))))
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


def _write_atoms_hspy(hspy: Path, atoms_path: Path, scans: list[Scan], channel: int) -> list[Path]:
    """Write each scan of the atoms artifact with its atoms as a ``.hspy`` file; return the paths."""
    import h5py

    from .. import __version__
    from ..interop import atoms_signal, write_hspy

    header = artifacts.read_header(atoms_path, "atoms")
    names = ("coords", "image_index", "intensity", "sigma_px", "score", "fit_ok", "sublattice", "displacement_px")
    with h5py.File(atoms_path, "r") as handle:
        records = artifacts.read_image_table(handle)
        data = {name: handle[name][()] for name in names if name in handle}
    if [(s.sha256, s.frame) for s in scans] != [(r.sha256, r.frame) for r in records]:
        raise InputError(f"{atoms_path}: its scans are not the scans given (SHA-256 differ); rerun find-atoms with --force")
    paths = [hspy] if len(records) == 1 else [hspy.with_name(f"{hspy.stem}_{index}{hspy.suffix}") for index in range(len(records))]
    context = {"version": __version__, "atoms_artifact": str(atoms_path), "atoms_fingerprint": header.fingerprint, "channel": int(channel)}
    for index, (scan, record, path) in enumerate(zip(scans, records, paths)):
        members = data["image_index"] == index
        atoms = {name: values[members] for name, values in data.items() if name != "image_index"}
        signal = atoms_signal(scan.data[channel], record, atoms, context)
        with artifacts.atomic_file(path) as temp:
            write_hspy(temp, signal)
    return paths


def _write_atom_previews(preview: Path, scans: list[Scan], tables: list, channel: int) -> None:
    from ..plots import save_atom_overlay

    for index, (scan, table) in enumerate(zip(scans, tables)):
        path = preview if len(scans) == 1 else preview.with_name(f"{preview.stem}_{index}{preview.suffix}")
        title = f"{scan.name}: {len(table)} atoms"
        with artifacts.atomic_file(path) as temp:
            save_atom_overlay(temp, scan.data[channel], table.positions, title, scan.pixel_size, scan.unit, sublattice=table.sublattice)
