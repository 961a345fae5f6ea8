"""``microvae export``: an encoded artifact as maps on its scans' pixel grids (HDF5, TIFF, PNG, HyperSpy, ImageJ stacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__, artifacts
from ..artifacts import ImageRecord, Provenance, write_dataset
from ..config import ExportConfig
from ..errors import InputError, OutputError
from ..export import ATOM_MAPS, OPTIONAL_MAPS, build_maps, write_tiff
from ..images import read_scans
from ..interop import map_signals, write_hspy, write_tiff_stack
from .result import ProgressCallback, StageResult, no_progress

PNG_MAPS_PREFIXES = ("class", "angle_rad", "template_angle_rad", "recon_error", "neg_elbo", "z", "sublattice", "displacement_px")


def run_export(
    encoded: str | Path,
    outdir: str | Path,
    config: ExportConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Render an encoded artifact's per-patch values as maps on each source scan's pixel grid.

    Parameters
    ----------
    encoded : path
        An encoded artifact of patches cut from scans (``microvae encode``).
    outdir : path
        The folder to write into (made if absent).
    config : ExportConfig, optional
        Formats besides ``maps.h5`` and the radius (px) around each patch centre that its values
        cover (default: half the patch window).
    force : bool
        Rewrite maps that are up to date.
    progress : callable, optional
        ``progress(description, completed, total)``.

    Returns
    -------
    StageResult

    Writes into ``outdir``: ``maps.h5`` (a ``maps`` artifact: ``/image_NN/<map>`` datasets and the
    ``/images`` table) and, by format: ``tiff``: ``<scan>_<map>.tif`` (ImageJ-calibrated); ``png``:
    ``<scan>_<map>.png`` overlays and ``latents.png``; ``hspy``: ``<scan>_<family>.hspy`` HyperSpy
    signals (one per map family, :mod:`microvae.interop`); ``tiff-stack``: ``<scan>_maps.tif``, one
    ImageJ hyperstack of every map with slice labels.
    """
    import h5py

    progress = progress or no_progress
    config = (config or ExportConfig()).normalised()
    formats = config.formats
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
        run_dir = artifacts.as_str(handle.attrs.get("run_dir", ""))
    radius = float(config.radius if config.radius is not None else (window / 2.0 if window else 8.0))
    parameters = {"formats": sorted(formats), "radius_px": radius}
    provenance = Provenance(
        stage="export",
        parameters=parameters,
        inputs=[{"path": str(encoded), "sha256": header.fingerprint, "role": "encoded"}],
        upstream=[header.provenance_record()],
    )
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
        context = {"version": __version__, "run": run_dir, "encoded": str(encoded), "encoded_fingerprint": header.fingerprint, "radius_px": radius}
        if "hspy" in formats:
            written.extend(_write_map_hspy(outdir, label, record, scan_maps, {**context, "maps_h5_group": f"image_{index:02d}"}))
        if "tiff-stack" in formats:
            target = outdir / f"{label}_maps.tif"
            info = f"microvae {__version__} maps of {record.name} (SHA-256 {record.sha256}); run {run_dir or '?'}; maps.h5 group image_{index:02d}"
            with artifacts.atomic_file(target) as temp:
                write_tiff_stack(temp, scan_maps, record, info)
            written.append(target)
    progress("rendering maps", len(records), len(records))
    if "png" in formats:
        from ..plots import save_latent_scatter

        target = outdir / "latents.png"
        with artifacts.atomic_file(target) as temp:
            save_latent_scatter(temp, data["z_mean"], data["class"], title=f"{len(data['class'])} patches: continuous latents by class")
        written.append(target)
    with artifacts.atomic_h5(outdir / "maps.h5", provenance, "maps") as handle:
        artifacts.write_image_table(handle, records)
        handle.attrs["radius_px"] = radius
        handle.attrs["rule"] = (
            "each pixel takes the value of the nearest patch centre within radius_px (Voronoi cells of the rounded centres); NaN (class: -1) elsewhere"
        )
        for index, scan_maps in enumerate(all_maps):
            group = handle.create_group(f"image_{index:02d}")
            group.attrs["source"] = records[index].source
            group.attrs["coverage"] = scan_maps.coverage
            for name, values in scan_maps.maps.items():
                write_dataset(group, name, values, scan_maps.units[name], scan_maps.descriptions[name], axes="row,col")
    notes = [f"{len(records)} scan(s); {len(written)} files besides maps.h5; coverage " + ", ".join(f"{m.coverage:.0%}" for m in all_maps)]
    summary = {"scans": len(records), "files": len(written) + 1, "coverage": [round(m.coverage, 4) for m in all_maps]}
    return StageResult("written", outdir, summary, notes)


def _scan_label(index: int, record: ImageRecord) -> str:
    """A file-name-safe label for a scan: ``NN_<stem>``."""
    import re

    stem = Path(record.source.split(":/")[0]).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "scan"
    return f"{index:02d}_{stem}" + (f"_f{record.frame}" if record.frame else "")


def _write_map_hspy(outdir: Path, label: str, record: ImageRecord, scan_maps, context: dict) -> list[Path]:
    """One ``.hspy`` file per map family of one scan (layout: :mod:`microvae.interop`)."""
    written = []
    for suffix, signal in map_signals(scan_maps, record, context):
        target = outdir / f"{label}_{suffix}.hspy"
        with artifacts.atomic_file(target) as temp:
            write_hspy(temp, signal)
        written.append(target)
    return written


def _write_map_pngs(outdir: Path, label: str, record: ImageRecord, scan_maps) -> list[Path]:
    from ..plots import save_map_overlay

    scan = _try_read_scan(record)
    written = []
    for name, values in scan_maps.maps.items():
        if "_class" in name or name.startswith("class_prob") or not name.startswith(PNG_MAPS_PREFIXES):
            continue
        target = outdir / f"{label}_{name}.png"
        with artifacts.atomic_file(target) as temp:
            save_map_overlay(
                temp, name, values, scan, record.pixel_size, record.unit, title=f"{record.name}: {name}", values_unit=scan_maps.units.get(name, "")
            )
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
