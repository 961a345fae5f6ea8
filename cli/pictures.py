"""``microvae manifold`` and ``microvae generate``: pictures from a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from microvae.errors import ParameterError

from . import options
from .console import stdout
from .main import app


@app.command(
    "manifold",
    short_help="Draw a run's learned latent manifold.",
    help=(
        "Draw a run's learned latent manifold: per continuous latent, a traversal (rows: classes; "
        "columns: the latent swept through the prior's quantiles), and per class the 2D grid over "
        "latents 0 and 1. Files: OUTPUT with _z<d> and _class<k> before the suffix.\n\n"
        "Example:\n"
        "  microvae manifold run/ -o manifold.png"
    ),
)
def manifold_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run folder of a trained model.", show_default=False),
    output: Path = options.output("PNG path (one file per figure is derived from it)."),
    steps: int = typer.Option(9, "--steps", min=2, rich_help_panel="Output", help="Images per latent sweep."),
    quiet: bool = options.quiet("Do not list the files written."),
) -> None:
    from microvae.stages.pictures import run_manifold

    written = run_manifold(run_dir, output, steps)
    if not quiet:
        for path in written:
            stdout.print(f"[green]wrote[/green] {path}")


@app.command(
    "generate",
    short_help="Generate an image for a class, angle and latents.",
    help=(
        "Generate an image from a run for a chosen class, angle, latents and shift, including angles "
        "the training data never had.\n\n"
        "Examples:\n"
        "  microvae generate run/ --class 1 --angle 180 -o spade_180.png\n"
        "  microvae generate run/ --class 0 --angle 45 --z 0.5,-1 -o out.npy"
    ),
)
def generate_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run folder of a trained model.", show_default=False),
    output: Path = options.output(".png (picture) or .npy (array (C, W, W))."),
    class_index: int | None = typer.Option(
        None, "--class", min=0, metavar="K", rich_help_panel="Model", help="Class to generate (needed when the model has classes).", show_default=False
    ),
    angle: float = typer.Option(0.0, "--angle", metavar="DEG", rich_help_panel="Model", help="Rotation in degrees (counter-clockwise as displayed)."),
    z: str = typer.Option("", "--z", metavar="Z0,Z1,...", rich_help_panel="Model", help="Continuous latents (missing ones are 0)."),
    shift: str = typer.Option("0,0", "--shift", metavar="ROW,COL", rich_help_panel="Model", help="Shift in pixels."),
    quiet: bool = options.quiet("Do not print the file written."),
) -> None:
    from microvae.stages.pictures import run_generate

    values = _numbers(z, "--z")  # the options first: a typo is named before the run is read
    shift_values = _numbers(shift, "--shift")
    if len(shift_values) != 2:
        raise ParameterError("--shift takes two numbers: row,col")
    run_generate(run_dir, output, class_index, angle, values, tuple(shift_values))
    if not quiet:
        stdout.print(f"[green]wrote[/green] {output}")


def _numbers(text: str, flag: str) -> list[float]:
    """The comma-separated numbers of ``flag`` (a clear error for anything else)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{flag} takes comma-separated numbers, got {text!r}") from None
