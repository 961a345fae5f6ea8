"""``microvae extract``: cut patches around atoms or on a grid."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from microvae.patches import PatchParams

from .console import progress_bar, report
from .main import app


@app.command(
    "extract",
    help=(
        "Cut W×W patches from scans, centred on atoms (--atoms) or on a regular grid (--grid), in real "
        "space or as FFT log-magnitudes (--fft), and write a patches artifact (HDF5).\n\n"
        "Patch pixel (i, j) samples the scan at (row + i − W//2, col + j − W//2); atom-centred patches "
        "are sampled at the exact subpixel centre by bilinear interpolation. Patches whose window leaves "
        "the image are skipped (--edge skip) or filled by reflection (--edge reflect).\n\n"
        "Examples:\n\n"
        "  microvae extract scan.dm4 --atoms atoms.h5 --window 32 -o patches.h5\n\n"
        "  microvae extract stm.sxm --grid 16 --window 64 --fft -o fft_patches.h5"
    ),
)
def extract_command(
    images: List[str] = typer.Argument(..., help="The scans (as given to find-atoms when --atoms is used).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Patches artifact to write (.h5).", show_default=False),
    window: int = typer.Option(32, "--window", "-w", help="Patch size W in pixels."),
    atoms: Optional[Path] = typer.Option(None, "--atoms", help="Atoms artifact from find-atoms: one patch per atom.", show_default=False),
    grid: Optional[int] = typer.Option(None, "--grid", help="Grid step in pixels: patches on a regular grid.", show_default=False),
    fft: bool = typer.Option(False, "--fft", help="Store log(1+|FFT|) of Hann-windowed patches (zero frequency at W//2)."),
    normalize: str = typer.Option("image", "--normalize", help="'image' (per-scan 0.1–99.9 percentiles → [0,1]), 'global', 'patch' (min–max), 'zscore' or 'none'."),
    edge: str = typer.Option("skip", "--edge", help="Patches reaching outside the image: 'skip' them or fill by 'reflect'."),
    subpixel: bool = typer.Option(True, "--subpixel/--no-subpixel", help="Sample atom-centred patches at the exact subpixel centre (bilinear)."),
    sublattice: Optional[List[int]] = typer.Option(None, "--sublattice", help="With --atoms: only the atoms of this sublattice (find-atoms' labels, 0 the brightest); repeat for several.", show_default=False),
    stack_as: str = typer.Option("frames", "--stack-as", help="Read 3D stacks as separate 'frames' or co-registered 'channels' (C×W×W patches)."),
    compression: str = typer.Option("gzip", "--compression", help="Storage of the patches: 'gzip' (level 1, with HDF5's byte shuffle when a trial on the first chunk says it helps; readable everywhere) or 'none' (on noisy patches about 25 % larger and read 7× faster, see benchmarks/bench_encode.py: for streaming large stacks to a GPU)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a PNG gallery of random patches.", show_default=False),
    force: bool = typer.Option(False, "--force", help="Overwrite an output made from other inputs or parameters."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes; errors still go to stderr."),
    json_summary: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    from microvae.stages import run_extract

    params = PatchParams(window=window, fft=fft, normalize=normalize, edge=edge, subpixel=subpixel, grid_step=grid,
                         sublattices=tuple(sublattice) if sublattice else None)
    with progress_bar(quiet) as progress:
        result = run_extract(images, output, params, atoms=atoms, stack_as=stack_as, preview=preview, force=force, progress=progress,
                             compression=compression)
    report(result, quiet, json_summary)
