"""``microvae compare``: did two runs (seeds, scans, settings) learn the same thing?"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer


from .console import stderr, stdout
from .main import app


@app.command(
    "compare",
    help=(
        "Fit the simplest map from run A's latent code to run B's (an affine map of the continuous "
        "latents, or for circular latents a reflection and turn of each angle; a permutation of the "
        "classes; one turn of the canonical frame) such that B's decoder "
        "on the mapped code renders what A's decoder renders for the patches, and report the tolerance "
        "Δ reached: the RMS difference of the two renderings, also relative to the spread of A's "
        "renderings (near 0: B expresses everything A does; near 1: it does not). Run it both ways: "
        "A→B and B→A small means the two runs learned the same thing.\n\n"
        "Example:\n\n"
        "  microvae compare run_seed0/ run_seed1/ patches.h5 -o comparison.json"
    ),
)
def compare_command(
    run_a: Path = typer.Argument(..., help="Run folder A (the code to map from).", show_default=False),
    run_b: Path = typer.Argument(..., help="Run folder B (the decoder to reproduce A with).", show_default=False),
    patches: str = typer.Argument(..., help="Patches artifact or stack whose codes are compared (both runs' patch shape).", show_default=False),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the comparison as JSON here.", show_default=False),
    limit: int = typer.Option(2000, "--limit", help="Use at most this many patches (evenly spaced); 0 = all.", min=0),
    steps: int = typer.Option(300, "--steps", help="Optimisation steps of the map.", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary lines."),
    json_summary: bool = typer.Option(False, "--json", help="Print the comparison as one JSON line on stdout."),
) -> None:
    from microvae import artifacts
    from microvae.compare import compare_runs
    from microvae.stages import patches_for_model
    from microvae.training import load_run

    model_a, configs_a = load_run(run_a)
    model_b, _ = load_run(run_b)
    images = patches_for_model(patches, configs_a["model"], run_a, limit)
    result = compare_runs(model_a, model_b, images, steps=steps)
    record = {"run_a": str(run_a), "run_b": str(run_b), "patches": str(patches), **result.to_dict()}
    if output is not None:
        with artifacts.atomic_file(output) as temp:
            temp.write_text(json.dumps(record, indent=2))
    if json_summary:
        print(json.dumps(record), flush=True)
    elif not quiet:
        stdout.print(f"Δ = {result.delta:.4g} (relative {result.delta_relative:.3f}; identity map {result.delta_identity:.4g}) over {result.patches} patches")
        if result.class_map:
            stdout.print(f"classes A→B {result.class_map}, agreeing on {100 * result.class_agreement:.1f}% of patches")
        stdout.print(f"latent map W = {result.latent_map.round(3).tolist()}, b = {result.latent_offset.round(3).tolist()}, "
                     f"frame turn {math.degrees(result.angle_offset_rad):.1f}°")
        if output is not None:
            stderr.print(f"[green]wrote[/green] {output}")
