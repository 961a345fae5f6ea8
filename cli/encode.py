"""``microvae encode``: latents, classes, angles and shifts for every patch, with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from microvae.errors import ParameterError

from .console import progress_bar, report, stderr
from .main import app


@app.command(
    "encode",
    help=(
        "Encode patches with a trained run and write an encoded artifact (HDF5): class probabilities, "
        "class, continuous latents (mean, sd), angle (rad), shift (px), reconstruction error and "
        "negative ELBO per patch, with each patch's coordinates in its source scan, and a per-scan "
        "comparison with the training data (a scan far outside it has a much higher −ELBO).\n\n"
        "INPUT is a patches artifact (or stack) with the run's shape and extraction settings, or "
        "raw scans in any readable format: then the run's recorded recipe (find-atoms and extract "
        "settings) is replayed on them first, with intermediate artifacts in <OUTPUT stem>_work/.\n\n"
        "Examples:\n\n"
        "  microvae encode run/ patches.h5 -o encoded.h5\n\n"
        "  microvae encode --pretrained run/ new_scan_*.dm4 -o new_encoded.h5\n\n"
        "  microvae encode --pretrained run/ shifted_scan.tif -o refined.h5 --refine 50\n\n"
        "  microvae encode run/ big_stack_patches.h5 -o encoded.h5 --no-scores --amp   # maps only, fastest"
    ),
)
def encode_command(
    inputs: List[str] = typer.Argument(..., help="[RUN_DIR] INPUT...: the run folder (unless --pretrained), then a patches artifact or scans.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Encoded artifact to write (.h5).", show_default=False),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Run folder of a trained model (instead of the first argument).", show_default=False),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Override the recipe's atom spacing (px) when replaying it on scans.", show_default=False),
    sigma: Optional[float] = typer.Option(None, "--sigma", help="Override the recipe's column width σ (px) when replaying it on scans.", show_default=False),
    threshold_rel: Optional[float] = typer.Option(None, "--threshold-rel", help="Override the recipe's relative detection threshold.", show_default=False),
    invert: Optional[bool] = typer.Option(None, "--invert/--no-invert", help="Override the recipe's dark-column setting.", show_default=False),
    ignore_calibration: bool = typer.Option(False, "--ignore-calibration", help="Accept scans whose pixel size differs from the training scans'."),
    device: str = typer.Option("auto", "--device", help="'auto' (CUDA when present), 'cpu' or 'cuda'."),
    batch_size: int = typer.Option(1024, "--batch-size", "-b", help="Patches per forward pass.", min=1),
    refine: int = typer.Option(0, "--refine", help="Optimise each patch's posterior for N Adam steps against the fixed decoder, starting from the encoder's guess (closes the amortisation gap on new or shifted scans; the −ELBO before and after is recorded). 0 = off.", min=0),
    refine_lr: float = typer.Option(0.05, "--refine-lr", help="Learning rate of --refine (latent units; log units for the posterior sds)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Known classes of some patches (as for train --labels): they keep their class, as a conditional (crVAE-style) model is used; the rest are inferred. Marked in class_observed.", show_default=False),
    scores: bool = typer.Option(True, "--scores/--no-scores", help="Also compute each patch's reconstruction error and −ELBO (1 + K decoder passes over every pixel) and compare each scan with the training data. --no-scores runs the encoder alone (class, latents, angle, shift), which is many times faster: use it to map large stacks."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast on CUDA: faster (1.6× over TF32 in benchmarks/bench_gpu.py on an H100), with the networks' arithmetic rounded to bfloat16. Ignored on the CPU."),
    kind: str = typer.Option("auto", "--input-kind", help="'auto' (from the data: a patches artifact, or frames of the run's patch shape, are patches; a 2-D array or larger frames are scans), 'patches' or 'scans'."),
    memory_limit_gb: float = typer.Option(1.0, "--memory-limit-gb", min=0.001, help="Patches larger than this (GB of float32) are read block by block instead of held in memory."),
    force: bool = typer.Option(False, "--force", help="Overwrite an output made from other inputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    json_summary: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    from microvae.stages import input_kind, run_encode, run_encode_scans, run_patch_side, stored_shape

    if pretrained is None:
        if len(inputs) < 2:
            raise ParameterError("give the run folder and at least one input: microvae encode RUN_DIR INPUT... -o OUT (or --pretrained RUN_DIR INPUT...)")
        run_dir, inputs = Path(inputs[0]), inputs[1:]
    else:
        run_dir = pretrained
    side = run_patch_side(run_dir)
    kinds = [input_kind(spec, side, kind) for spec in inputs]
    patch_inputs = [k == "patches" for k in kinds]
    note = None
    if all(patch_inputs) and kind == "auto" and side is not None and stored_shape(inputs[0]) is not None:   # a bare array, not an artifact
        note = f"  {inputs[0]}: read as a stack of patches (frames of the run's {side}×{side} patch shape); --input-kind scans reads it as scans"
    overrides = {"spacing_px": spacing, "sigma_px": sigma, "threshold_rel": threshold_rel, "invert": invert}
    given = [flag for flag, value in zip(("--spacing", "--sigma", "--threshold-rel", "--invert/--no-invert"), overrides.values()) if value is not None]
    if all(patch_inputs) and given:
        raise ParameterError(f"{', '.join(given)} change how atoms are found in scans, but {inputs[0]} holds patches already cut; "
                             "drop them, or give the scans")
    with progress_bar(quiet) as progress:
        if all(patch_inputs):
            if len(inputs) != 1:
                raise ParameterError("encode takes one patches artifact at a time (or several raw scans)")
            result = run_encode(run_dir, inputs[0], output, device=device, batch_size=batch_size, force=force, progress=progress,
                                refine_steps=refine, refine_lr=refine_lr, memory_limit=int(memory_limit_gb * 1e9),
                                labels=labels, scores=scores, amp=amp)
        elif labels is not None:
            raise ParameterError("--labels names patches by their index: give a patches artifact, not raw scans")
        elif any(patch_inputs):
            raise ParameterError("mix of patches artifacts and raw scans; give either one patches artifact or scans")
        else:
            results = run_encode_scans(run_dir, inputs, output, overrides, ignore_calibration, device=device, batch_size=batch_size, force=force,
                                       progress=progress, refine_steps=refine, refine_lr=refine_lr, scores=scores, amp=amp)
            if not quiet and not json_summary:
                for step in results[:-1]:
                    stderr.print(f"  {step.output}: {step.status}")
            result = results[-1]
    if note and not quiet and not json_summary:
        stderr.print(note)
    report(result, quiet, json_summary)
