"""``microvae pipeline``: all stages from one TOML config, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import options
from .console import progress_bar, stderr, stdout
from .main import app
from .train import training_progress


@app.command(
    "pipeline",
    short_help="All stages from one TOML file (resumable).",
    help=(
        "Run find-atoms → extract → train → encode → export on SCANS with the settings of CONFIG "
        "(TOML, one section per stage), all into one folder. Rerun the same command after a crash: "
        "up-to-date stages are kept, training resumes, changed stages are redone.\n\n"
        "Example:\n"
        "  microvae pipeline sample_data/pipeline.toml scan.dm3 -o study/"
    ),
    epilog="An annotated CONFIG: sample_data/pipeline.toml. Details: README.md, 'microvae pipeline'.",
)
def pipeline_command(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Pipeline settings (TOML).", show_default=False),
    scans: list[str] = typer.Argument(..., metavar="SCAN...", help="Scans to analyse.", show_default=False),
    output: Path = typer.Option(Path("microvae_out"), "-o", "--output", rich_help_panel="Output", help="Folder for all artifacts."),
    quiet: bool = options.quiet("Only errors."),
    json_summary: bool = options.json_summary("Print one JSON line per stage on stdout."),
) -> None:
    from microvae.stages.pipeline import run_pipeline

    from .encode import estimate_line

    def on_stage(name: str, result) -> None:
        if json_summary:
            print(json.dumps({"stage": name, "status": result.status, "output": str(result.output), **result.summary}), flush=True)
        elif not quiet:
            stdout.print(f"[bold]{name}[/bold]: {'up to date' if result.status == 'up-to-date' else 'wrote'} {result.output}")
            for note in result.notes:
                stderr.print(f"  {note}")

    with progress_bar(quiet or json_summary) as progress, training_progress(quiet or json_summary) as train_progress:
        estimate = None if quiet or json_summary else lambda event: stderr.print(estimate_line(event), highlight=False)
        run_pipeline(config, scans, output, on_stage=on_stage, progress=progress, train_progress=train_progress, encode_estimate=estimate)
