"""The run folder of ``microvae train``: what it holds, how a run is started, resumed or found complete.

Layout (``RUN_DIR/``): ``config.json`` (model and training settings), ``provenance.json`` (inputs,
their hashes, the extraction recipe, the training scans' calibration), ``checkpoints/last.pt`` and
``final.pt``, ``log.csv`` and ``loss.png``, ``training_stats.json`` (for out-of-distribution
checks), ``init/`` (how the classes started) and ``summary.json`` (the verdict). An ensemble's
folder holds ``member_<i>/`` run folders and ``ensemble.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import InputError, OutputError

RUN_PROVENANCE = "provenance.json"
RUN_FILES = ("config.json", RUN_PROVENANCE, "log.csv", "loss.png", "checkpoints", "training_stats.json", "init", "summary.json")


def prepare_run_dir(run_dir: Path, fingerprint: str, epochs: int, force: bool) -> str:
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


def run_patch_side(run_dir: str | Path) -> int | None:
    """The patch side W of a trained run, from its config.json (None where that cannot be read:
    the encode stage then names what is wrong with the run folder)."""
    try:
        return int(json.loads((Path(run_dir) / "config.json").read_text())["model"]["image_size"])
    except Exception:
        return None
