"""The work of each CLI subcommand, one module per command: read inputs, check whether the output
is up to date, compute, write one artifact atomically. The CLI only parses options and renders
progress and results.

=============  =========================================================================
module         public function (what ``microvae CMD`` calls)
=============  =========================================================================
find_atoms     :func:`~.find_atoms.run_find_atoms`
extract        :func:`~.extract.run_extract`
train          :func:`~.train.run_train` (one run, or an ensemble: :func:`~.train.train_ensemble`)
encode         :func:`~.encode.run_encode_inputs` (what the command does), :func:`~.encode.run_encode`
               (patches), :func:`~.encode.run_encode_scans` (new scans)
export         :func:`~.export.run_export`
compare        :func:`~.compare.run_compare`
diagnose       :func:`~.diagnose.run_diagnose`
pictures       :func:`~.pictures.run_manifold`, :func:`~.pictures.run_generate`
pipeline       :func:`~.pipeline.run_pipeline` (all of the above from one TOML file)
inputs         what the stages share: scans and patches read for a stage, and what a path holds
result         :class:`StageResult`, the progress callback
=============  =========================================================================

The run folder that ``train`` writes and ``encode`` reads is :mod:`microvae.run_folder`.

Each stage function returns a :class:`StageResult`; none prints. Progress is reported through an
optional callback ``progress(description, completed, total)``. Importing this package is cheap:
each name below is imported from its module on first use, so ``microvae find-atoms`` never
imports torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "ProgressCallback": "result",
    "StageResult": "result",
    "input_kind": "inputs",
    "load_patch_input": "inputs",
    "patches_for_model": "inputs",
    "stored_shape": "inputs",
    "run_find_atoms": "find_atoms",
    "run_extract": "extract",
    "run_train": "train",
    "train_ensemble": "train",
    "read_labels": "train",
    "run_encode": "encode",
    "run_encode_scans": "encode",
    "run_encode_inputs": "encode",
    "run_export": "export",
    "run_compare": "compare",
    "run_diagnose": "diagnose",
    "run_manifold": "pictures",
    "run_generate": "pictures",
    "run_pipeline": "pipeline",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
