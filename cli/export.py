"""``microvae export``: maps on the scans' pixel grids, as HDF5, TIFF, PNG, HyperSpy and ImageJ stacks."""

from __future__ import annotations

from pathlib import Path

import typer

from microvae.config import EXPORT_FORMATS, ExportConfig

from . import options
from .console import progress_bar, report
from .main import app


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be a positive number of pixels, got {value}")
    return value


def _formats(value: str) -> str:
    unknown = sorted({f.strip().lower() for f in value.split(",")} - set(EXPORT_FORMATS))
    if unknown:
        raise typer.BadParameter(f"unknown format {', '.join(unknown)}: give a comma-separated list of {', '.join(EXPORT_FORMATS)}")
    return value


@app.command(
    "export",
    short_help="Maps as HDF5, calibrated TIFF, PNG, HyperSpy, ImageJ stacks.",
    help=(
        "Render an encoded artifact as maps on each scan's pixel grid: class, class probabilities, "
        "latents, angle, shifts, reconstruction error; HDF5 (docs/schema.md), calibrated TIFF "
        "(Fiji), PNG overlays, HyperSpy signals (hspy) and one ImageJ hyperstack per scan "
        "(tiff-stack).\n\n"
        "Examples:\n"
        "  microvae export encoded.h5 -o maps/\n"
        "  microvae export encoded.h5 -o maps/ --format tiff --radius 6\n"
        "  microvae export encoded.h5 -o maps/ --format hspy,tiff-stack"
    ),
    epilog="Details: README.md, 'microvae export'.",
)
def export_command(
    encoded: Path = typer.Argument(..., metavar="ENCODED", help="Encoded artifact from 'microvae encode'.", show_default=False),
    output: Path = options.output("Folder for the maps."),
    formats: str = typer.Option(
        ",".join(ExportConfig.formats),
        "--format",
        metavar=",".join(EXPORT_FORMATS),
        callback=_formats,
        rich_help_panel="Output",
        help="Comma-separated formats (maps.h5 is always written).",
    ),
    radius: float | None = typer.Option(
        ExportConfig.radius,
        "--radius",
        callback=_positive,
        rich_help_panel="Data",
        help="Pixels farther than this from every patch centre are missing [default: half the window].",
    ),
    force: bool = options.force("maps"),
    quiet: bool = options.quiet(),
    json_summary: bool = options.json_summary(),
) -> None:
    from microvae.stages.export import run_export

    with progress_bar(quiet) as progress:
        result = run_export(encoded, output, ExportConfig(formats=tuple(formats.split(",")), radius=radius), force=force, progress=progress)
    report(result, quiet, json_summary)
