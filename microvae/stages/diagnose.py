"""``microvae diagnose``: how far a run's code moves when its patches turn, move or are cut again."""

from __future__ import annotations

import json
from pathlib import Path

from .. import artifacts
from ..diagnose import artifact_source, invariance_report, report_dict
from ..run_folder import load_run
from .inputs import patches_for_model

__all__ = ["run_diagnose"]


def run_diagnose(
    run_dir: str | Path, patches: str | Path, reference: str | Path | None = None, output: str | Path | None = None, limit: int = 2000, device: str = "auto"
) -> dict[str, dict]:
    """Invariance reports (:func:`microvae.diagnose.invariance_report`) of a run and a reference.

    Patches of a patches artifact whose scans are found are also cut again from the scans, moved
    and turned (:func:`microvae.diagnose.artifact_source`); the report's notes say when not.

    Parameters
    ----------
    run_dir : str or path
        The run folder to diagnose.
    patches : str or path
        A patches artifact or stack of the run's patch shape.
    reference : str or path, optional
        A second run reported the same way (e.g. a plain VAE).
    output : str or path, optional
        A JSON file the reports are written to, atomically.
    limit : int, default 2000
        At most this many evenly spaced patches are used.
    device : str, default "auto"
        A torch device name (:func:`microvae.devices.resolve_device`).

    Returns
    -------
    dict of str to dict
        ``{"model": report, "reference": report}`` (the reference only when given), plain data:
        each report holds ``run_dir``, ``patches`` (count), ``encoder`` and the invariance report's
        fields (:func:`microvae.diagnose.report_dict`).
    """
    reports = {}
    source = note = None
    for role, folder in (("model", run_dir), ("reference", reference)):
        if folder is None:
            continue
        model, configs = load_run(folder, device="cpu")
        images = patches_for_model(patches, configs["model"], folder, limit)
        if note is None:  # the scans the patches were cut from, to cut them again moved
            source, note = artifact_source(patches, limit)
        reports[role] = {
            "run_dir": str(folder),
            "patches": int(len(images)),
            "encoder": configs["model"].encoder,
            **report_dict(invariance_report(model, images, device=device, source=source), [note]),
        }
    if output is not None:
        with artifacts.atomic_file(Path(output)) as temp:
            temp.write_text(json.dumps(reports, indent=2))
    return reports
