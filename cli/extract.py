"""``microvae extract``: cut patches around atoms or on a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from microvae.config import ExtractConfig
from microvae.patches import EDGE_POLICIES, NORMALISATIONS
from microvae.patches import PatchParams as P

from . import options
from .console import progress_bar, report
from .main import app


@app.command(
    "extract",
    short_help="Cut patches around atoms or on a grid.",
    help=(
        "Cut W×W patches from scans, centred on atoms (--atoms) or on a grid (--grid), in real space "
        "or as FFT log-magnitudes (--fft); write a patches artifact (HDF5).\n\n"
        "Examples:\n"
        "  microvae extract scan.dm4 --atoms atoms.h5 --window 32 -o patches.h5\n"
        "  microvae extract scan.dm4 --atoms atoms.h5 --sublattice 0 -o a_site.h5\n"
        "  microvae extract stm.sxm --grid 16 --window 64 --fft -o fft_patches.h5"
    ),
    epilog="Details: README.md, 'microvae extract'; the artifact: docs/schema.md.",
)
def extract_command(
    images: list[str] = typer.Argument(..., metavar="SCAN...", help="The scans (those given to find-atoms when --atoms is used).", show_default=False),
    output: Path = options.output("Patches artifact to write (.h5)."),
    atoms: Path | None = typer.Option(None, "--atoms", rich_help_panel="Input", help="Atoms artifact from find-atoms: one patch per atom.", show_default=False),
    grid: int | None = typer.Option(
        None, "--grid", min=1, metavar="STEP", rich_help_panel="Input", help="Grid step in px: patches on a regular grid.", show_default=False
    ),
    sublattice: list[int] | None = typer.Option(
        None,
        "--sublattice",
        min=0,
        metavar="S",
        rich_help_panel="Input",
        help="With --atoms: only sublattice S (0: the brightest); repeat for several.",
        show_default=False,
    ),
    stack_as: Literal["frames", "channels"] = typer.Option(
        ExtractConfig.stack_as, "--stack-as", rich_help_panel="Input", help="Read 3D stacks as frames or co-registered channels (C×W×W)."
    ),
    window: int = typer.Option(P.window, "--window", "-w", min=2, metavar="W", rich_help_panel="Data", help="Patch size W in pixels."),
    fft: bool = typer.Option(P.fft, "--fft", rich_help_panel="Data", help="Store log(1+|FFT|) of Hann-windowed patches (zero frequency at W//2)."),
    normalize: Literal[NORMALISATIONS] = typer.Option(
        P.normalize, "--normalize", rich_help_panel="Data", help="image: per-scan 0.1–99.9 percentiles to [0, 1] (others: README)."
    ),
    edge: Literal[EDGE_POLICIES] = typer.Option(
        P.edge, "--edge", rich_help_panel="Data", help="Patches reaching outside the image: skip, or fill by reflection."
    ),
    subpixel: bool = typer.Option(
        P.subpixel, "--subpixel/--no-subpixel", rich_help_panel="Data", help="Cut atom-centred patches at the exact subpixel centre (bilinear)."
    ),
    compression: Literal["gzip", "none"] = typer.Option(
        ExtractConfig.compression, "--compression", rich_help_panel="Output", help="none: larger files that read 7.5× faster (for GPUs; bench_encode.py)."
    ),
    preview: Path | None = typer.Option(None, "--preview", rich_help_panel="Output", help="Write a PNG gallery of random patches.", show_default=False),
    force: bool = options.force(),
    quiet: bool = options.quiet(),
    json_summary: bool = options.json_summary(),
) -> None:
    from microvae.stages.extract import run_extract

    patches = P(
        window=window, fft=fft, normalize=normalize, edge=edge, subpixel=subpixel, grid_step=grid, sublattices=tuple(sublattice) if sublattice else None
    )
    config = ExtractConfig(patches, stack_as=stack_as, compression=compression)
    with progress_bar(quiet) as progress:
        result = run_extract(images, output, config, atoms=atoms, preview=preview, force=force, progress=progress)
    report(result, quiet, json_summary)
