"""``microvae export``: maps on the scans' pixel grids, as HDF5, TIFF and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


from .console import progress_bar, report
from .main import app


def _positive(value: Optional[float]) -> Optional[float]:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be a positive number of pixels, got {value}")
    return value


@app.command(
    "export",
    help=(
        "Render an encoded artifact as maps on each source scan's pixel grid: class, class "
        "probabilities, continuous latents (all patches and per class), angle, shifts and "
        "reconstruction error.\n\n"
        "Each pixel takes the value of the nearest patch centre within --radius (default: half the "
        "window); farther pixels are missing (NaN, or −1 in the class map). TIFFs carry the pixel size "
        "in ImageJ's calibration (Fiji, tifffile); maps.h5 follows docs/schema.md; PNGs overlay the "
        "maps on the scan with colour and scale bars, plus latents.png.\n\n"
        "Example:\n\n"
        "  microvae export encoded.h5 -o maps/ --format tiff,png"
    ),
)
def export_command(
    encoded: Path = typer.Argument(..., help="Encoded artifact from 'microvae encode'.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the maps.", show_default=False),
    formats: str = typer.Option("h5,tiff,png", "--format", help="Comma-separated: h5, tiff, png (maps.h5 is always written: it records what was exported)."),
    radius: Optional[float] = typer.Option(None, "--radius", help="Pixels farther than this from every patch centre are missing [default: half the window].", callback=_positive),
    force: bool = typer.Option(False, "--force", help="Overwrite maps made from other inputs or settings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    json_summary: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    from microvae.stages import run_export

    with progress_bar(quiet) as progress:
        result = run_export(encoded, output, tuple(formats.split(",")), radius=radius, force=force, progress=progress)
    report(result, quiet, json_summary)
