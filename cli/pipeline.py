"""``microvae pipeline``: all stages from one TOML config, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer


from .console import progress_bar, stderr, stdout
from .main import app
from .train import training_progress


@app.command(
    "pipeline",
    help=(
        "Run find-atoms → extract → train → encode → export on SCANS with the settings of CONFIG "
        "(TOML, one section per stage; see sample_data/pipeline.toml), writing everything into the "
        "output folder.\n\n"
        "Up-to-date artifacts are reused and an interrupted training resumes, so rerunning the same "
        "command after a crash finishes the work; a stage whose settings changed is redone, with the "
        "stages after it.\n\n"
        "Example:\n\n"
        "  microvae pipeline sample_data/pipeline.toml sample_data/scifireaders_SI-Survey_Image.dm3 -o study/"
    ),
)
def pipeline_command(
    config: Path = typer.Argument(..., help="Pipeline settings (TOML).", show_default=False),
    scans: List[str] = typer.Argument(..., help="Scans to analyse.", show_default=False),
    output: Path = typer.Option(Path("microvae_out"), "-o", "--output", help="Folder for all artifacts."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
    json_summary: bool = typer.Option(False, "--json", help="Print one JSON line per stage on stdout."),
) -> None:
    from microvae.pipeline import read_config, run_pipeline, train_configs

    def on_stage(name: str, result) -> None:
        if json_summary:
            print(json.dumps({"stage": name, "status": result.status, "output": str(result.output), **result.summary}), flush=True)
        elif not quiet:
            stdout.print(f"[bold]{name}[/bold]: {'up to date' if result.status == 'up-to-date' else 'wrote'} {result.output}")
            for note in result.notes:
                stderr.print(f"  {note}")

    epochs = train_configs(read_config(config))[1].epochs
    with progress_bar(quiet or json_summary) as progress, training_progress(quiet or json_summary, epochs) as train_progress:
        run_pipeline(config, scans, output, on_stage=on_stage, progress=progress, train_progress=train_progress)
