"""``microvae compare``: did two runs learn the same thing? The map between their codes, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .. import artifacts
from ..compare import Comparison, compare_runs
from ..run_folder import load_run
from .inputs import patches_for_model

__all__ = ["run_compare"]


def run_compare(
    run_a: str | Path, run_b: str | Path, patches: str | Path, output: str | Path | None = None, limit: int = 2000, steps: int = 300
) -> tuple[dict, Comparison]:
    """Fit the simplest map from run A's code to run B's (:func:`microvae.compare.compare_runs`).

    Parameters
    ----------
    run_a, run_b : str or path
        The two run folders (output folders of ``microvae train``).
    patches : str or path
        A patches artifact or stack of run A's patch shape.
    output : str or path, optional
        A JSON file the record is written to, atomically.
    limit : int, default 2000
        At most this many evenly spaced patches are used.
    steps : int, default 300
        Optimiser steps of the fit.

    Returns
    -------
    record : dict
        The plain record: run folders, patches, the result's fields (what ``output`` holds).
    result : Comparison
        The :class:`~microvae.compare.Comparison`.
    """
    model_a, configs_a = load_run(run_a)
    model_b, _ = load_run(run_b)
    images = patches_for_model(patches, configs_a["model"], run_a, limit)
    result = compare_runs(model_a, model_b, images, steps=steps)
    record = {"run_a": str(run_a), "run_b": str(run_b), "patches": str(patches), **result.to_dict()}
    if output is not None:
        with artifacts.atomic_file(Path(output)) as temp:
            temp.write_text(json.dumps(record, indent=2))
    return record, result
