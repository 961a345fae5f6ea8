"""``microvae encode``: latents, classes, angles and shifts for every patch, with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from microvae.config import EncodeConfig as E
from microvae.config import RefineConfig
from microvae.errors import ParameterError

from . import options
from .console import duration_words, progress_bar, report, stderr
from .main import app


def estimate_line(event: dict) -> str:
    """'20,000 patches (encoder + 3 decoder passes each): ≈ 1.2 min on cpu (2 threads) at 278 patches/s …'."""
    if event["refine_steps"]:
        work = f"encoder + {event['refine_steps']} refinement steps each"
    elif event["decoder_passes"]:
        work = f"encoder + {event['decoder_passes']} decoder passes each"
    else:
        work = "encoder only"
    members = f", {event['members']} ensemble members" if event["members"] > 1 else ""
    templates = f"; template search {duration_words(event['template_seconds'])} of it" if event.get("template_seconds") else ""
    return (
        f"{event['patches']:,} patches ({work}{members}): {duration_words(event['seconds'])} on {event['device']} "
        f"at {event['samples_per_s']:,.0f} patches/s{templates} (timed on a few of them)"
    )


@app.command(
    "encode",
    short_help="Encode patches or new scans with a trained run.",
    help=(
        "Encode patches or new scans with a trained run: class probabilities, latents, angle, shift, "
        "reconstruction error and −ELBO per patch, with its place in its scan, and how far each "
        "scan is from the training data. Given scans, the run's find-atoms and extract recipe is "
        "replayed on them first.\n\n"
        "Examples:\n"
        "  microvae encode run/ patches.h5 -o encoded.h5\n"
        "  microvae encode --pretrained run/ new_scan_*.dm4 -o new_encoded.h5\n"
        "  microvae encode --pretrained run/ shifted.tif -o refined.h5 --refine 50\n"
        "  microvae encode run/ big_patches.h5 -o encoded.h5 --no-scores --amp"
    ),
    epilog="Details (what counts as patches or scans): README.md, 'microvae encode'.",
)
def encode_command(
    inputs: list[str] = typer.Argument(
        ..., metavar="[RUN_DIR] INPUT...", help="The run folder (unless --pretrained), then one patches artifact or scans.", show_default=False
    ),
    output: Path = options.output("Encoded artifact to write (.h5)."),
    pretrained: Path | None = typer.Option(
        None,
        "--pretrained",
        metavar="RUN_DIR",
        rich_help_panel="Input",
        help="Run folder of a trained model (instead of the first argument).",
        show_default=False,
    ),
    kind: Literal["auto", "patches", "scans"] = typer.Option(
        "auto", "--input-kind", rich_help_panel="Input", help="auto: from the data and the run's patch shape."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", rich_help_panel="Input", help="Known classes of some patches (as train --labels): they keep them.", show_default=False
    ),
    spacing: float | None = typer.Option(
        None, "--spacing", min=0, rich_help_panel="Detection", help="Override the recipe's atom spacing (px) on scans.", show_default=False
    ),
    sigma: float | None = typer.Option(
        None, "--sigma", min=0, rich_help_panel="Detection", help="Override the recipe's column width σ (px) on scans.", show_default=False
    ),
    threshold_rel: float | None = typer.Option(
        None, "--threshold-rel", min=0, rich_help_panel="Detection", help="Override the recipe's relative detection threshold.", show_default=False
    ),
    invert: bool | None = typer.Option(
        None, "--invert/--no-invert", rich_help_panel="Detection", help="Override the recipe's dark-column setting.", show_default=False
    ),
    ignore_calibration: bool = typer.Option(
        False, "--ignore-calibration", rich_help_panel="Detection", help="Accept inputs whose pixel size differs from the training scans'."
    ),
    scores: bool = typer.Option(
        E.scores, "--scores/--no-scores", rich_help_panel="Model", help="Also reconstruction error and −ELBO (1 + K decoder passes; off: encoder only, fast)."
    ),
    template_angle: bool | None = typer.Option(
        E.template_angle,
        "--template-angle/--no-template-angle",
        rich_help_panel="Model",
        help="Also the angle found by matching each class's template (runs with rotation; default: with scores).",
        show_default=False,
    ),
    refine: int = typer.Option(
        E().refine.steps, "--refine", min=0, metavar="STEPS", rich_help_panel="Model", help="Optimise each patch's posterior for STEPS Adam steps (0: off)."
    ),
    refine_lr: float = typer.Option(E().refine.lr, "--refine-lr", min=0, rich_help_panel="Model", help="Learning rate of --refine."),
    batch_size: int = typer.Option(E.batch_size, "--batch-size", "-b", min=1, rich_help_panel="Data", help="Patches per forward pass."),
    memory_limit_gb: float = typer.Option(
        E.memory_limit_bytes / 1e9, "--memory-limit-gb", min=0.001, rich_help_panel="Data", help="Read patches larger than this (GB of float32) block by block."
    ),
    force: bool = options.force(),
    quiet: bool = options.quiet(),
    json_summary: bool = options.json_summary(),
    device: str = options.device(),
    amp: bool = typer.Option(E.amp, "--amp", rich_help_panel="Device", help="bfloat16 autocast on CUDA (ignored on the CPU)."),
) -> None:
    from microvae.stages.encode import run_encode_inputs

    if pretrained is None:
        if len(inputs) < 2:
            raise ParameterError("give the run folder and at least one input: microvae encode RUN_DIR INPUT... -o OUT (or --pretrained RUN_DIR INPUT...)")
        run_dir, inputs = Path(inputs[0]), inputs[1:]
    else:
        run_dir = pretrained
    config = E(
        device=device,
        batch_size=batch_size,
        scores=scores,
        amp=amp,
        template_angle=template_angle,
        memory_limit_bytes=int(memory_limit_gb * 1e9),
        refine=RefineConfig(steps=refine, lr=refine_lr),
    )
    overrides = {"spacing_px": spacing, "sigma_px": sigma, "threshold_rel": threshold_rel, "invert": invert}
    with progress_bar(quiet) as progress:
        results = run_encode_inputs(
            run_dir,
            inputs,
            output,
            config,
            kind=kind,
            find_atoms_overrides=overrides,
            ignore_calibration=ignore_calibration,
            labels=labels,
            force=force,
            progress=progress,
            estimate=None if quiet or json_summary else lambda event: stderr.print(estimate_line(event), highlight=False),
        )
    if not quiet and not json_summary:
        for step in results[:-1]:
            stderr.print(f"  {step.output}: {step.status}")
    report(results[-1], quiet, json_summary)
