"""``microvae diagnose``: how far the class and latents move when patches turn or shift."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from . import options
from .console import stderr, stdout
from .main import app


@app.command(
    "diagnose",
    short_help="Check a run's invariance to turns and shifts.",
    help=(
        "Check a run's invariance: encode every patch as it is, turned and moved, and report how far "
        "the latents move (in sd over the data), how often the class changes, and how well the "
        "angle follows the turn. An invariant code moves by well under 0.1 sd.\n\n"
        "Example:\n"
        "  microvae train patches.h5 -o run/ --encoder equivariant --angle-prior 0\n"
        "  microvae train patches.h5 -o plain/ --classes 0 --no-rotation \\\n"
        "      --no-translation\n"
        "  microvae diagnose run/ patches.h5 --reference plain/ -o invariance.json"
    ),
    epilog="Details and measured figures: README.md, 'microvae diagnose'.",
)
def diagnose_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run folder of a trained model.", show_default=False),
    patches: str = typer.Argument(..., metavar="PATCHES", help="Patches artifact or stack with the run's patch shape.", show_default=False),
    reference: Path | None = typer.Option(
        None, "--reference", metavar="RUN_DIR", rich_help_panel="Model", help="A reference run (e.g. a plain VAE) to report beside it.", show_default=False
    ),
    limit: int = typer.Option(2000, "--limit", min=0, rich_help_panel="Data", help="Use at most this many patches (evenly spaced); 0: all."),
    output: Path | None = typer.Option(None, "-o", "--output", rich_help_panel="Output", help="Write the report as JSON here.", show_default=False),
    quiet: bool = options.quiet("No table."),
    json_summary: bool = options.json_summary("Print the report as one JSON line on stdout."),
    device: str = options.device(),
) -> None:
    from microvae.stages.diagnose import run_diagnose

    reports = run_diagnose(run_dir, patches, reference, output, limit=limit, device=device)
    if json_summary:
        print(json.dumps(reports), flush=True)
    elif not quiet:
        for role, report in reports.items():
            table = Table(title=f"{role}: {report['run_dir']} ({report['patches']} patches, {report['encoder']} encoder)")
            for column in ("transform", "z drift (sd)", "class changed", "class TV shift", "angle error (°)", "shift error (px)"):
                table.add_column(column, justify="right" if column != "transform" else "left")
            for row in report["rows"]:
                table.add_row(
                    row["transform"],
                    *(f"{row[k]:.3f}" if row[k] is not None else "—" for k in ("z_drift", "class_changed", "class_prob_shift")),
                    f"{row['angle_error_deg']:.1f}" if row["angle_error_deg"] is not None else "—",
                    f"{row['shift_error_px']:.2f}" if row["shift_error_px"] is not None else "—",
                )
            stdout.print(table)
            for line in report["notes"]:
                stderr.print(line)
        if output is not None:
            stderr.print(f"[green]wrote[/green] {output}")
