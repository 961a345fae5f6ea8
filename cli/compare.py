"""``microvae compare``: did two runs (seeds, scans, settings) learn the same thing?"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from . import options
from .console import stderr, stdout
from .main import app


@app.command(
    "compare",
    short_help="Did two runs learn the same thing?",
    help=(
        "Did two runs learn the same thing? Fit the simplest map from run A's code to run B's (affine "
        "latents, permuted classes, one frame turn) so that B's decoder renders what A's does, and "
        "report the tolerance Δ (relative: near 0 the same, near 1 not). Run it both ways.\n\n"
        "Example:\n"
        "  microvae compare run_seed0/ run_seed1/ patches.h5 -o comparison.json"
    ),
    epilog="Details: README.md, 'microvae compare'.",
)
def compare_command(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="Run folder A (the code to map from).", show_default=False),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="Run folder B (the decoder to reproduce A with).", show_default=False),
    patches: str = typer.Argument(..., metavar="PATCHES", help="Patches (both runs' patch shape) whose codes are compared.", show_default=False),
    limit: int = typer.Option(2000, "--limit", min=0, rich_help_panel="Data", help="Use at most this many patches (evenly spaced); 0: all."),
    steps: int = typer.Option(300, "--steps", min=1, rich_help_panel="Model", help="Optimisation steps of the map."),
    output: Path | None = typer.Option(None, "-o", "--output", rich_help_panel="Output", help="Write the comparison as JSON here.", show_default=False),
    quiet: bool = options.quiet("No summary lines."),
    json_summary: bool = options.json_summary("Print the comparison as one JSON line on stdout."),
) -> None:
    from microvae.stages.compare import run_compare

    record, result = run_compare(run_a, run_b, patches, output, limit=limit, steps=steps)
    if json_summary:
        print(json.dumps(record), flush=True)
    elif not quiet:
        stdout.print(f"Δ = {result.delta:.4g} (relative {result.delta_relative:.3f}; identity map {result.delta_identity:.4g}) over {result.patches} patches")
        if result.class_map:
            stdout.print(f"classes A→B {result.class_map}, agreeing on {100 * result.class_agreement:.1f}% of patches")
        stdout.print(
            f"latent map W = {result.latent_map.round(3).tolist()}, b = {result.latent_offset.round(3).tolist()}, "
            f"frame turn {math.degrees(result.angle_offset_rad):.1f}°"
        )
        if output is not None:
            stderr.print(f"[green]wrote[/green] {output}")
