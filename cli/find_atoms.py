"""``microvae find-atoms``: locate atomic columns in scans."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from microvae.atoms import FindAtomsParams

from .console import progress_bar, report
from .main import app


@app.command(
    "find-atoms",
    help=(
        "Locate atomic columns in one or more scans and write an atoms artifact (HDF5).\n\n"
        "Column spacing and width are estimated from each image's autocorrelation and reported; "
        "override them with --spacing and --sigma. Detection finds local maxima of a "
        "Laplacian-of-Gaussian (default) or smoothed image, then refines each to subpixel precision "
        "with a 2D Gaussian fit (default) or centre of mass. A second search in what the fitted "
        "columns leave finds dimmer columns beside bright ones (every sublattice); overlapping "
        "columns are refined together; each column gets a sublattice label and, with two or more "
        "sublattices, its displacement from the centroid of its neighbours in sublattice 0. "
        "Pure noise gives 'no atoms found' (exit 2).\n\n"
        "Examples:\n\n"
        "  microvae find-atoms scan.dm4 -o atoms.h5 --preview atoms.png\n\n"
        "  microvae find-atoms abf.tif --invert -o atoms.h5      # dark columns\n\n"
        "  microvae find-atoms data.h5:/scans/haadf -o atoms.h5 --spacing 12"
    ),
)
def find_atoms_command(
    images: List[str] = typer.Argument(..., help="Scans: .tif .png .npy .h5[:/dataset] .hspy .dm3 .dm4 .emd .ser .sxm", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Atoms artifact to write (.h5).", show_default=False),
    method: str = typer.Option("log", "--method", help="Detection: 'log' (Laplacian of Gaussian, robust to backgrounds) or 'max' (local maxima of the smoothed image)."),
    refine: str = typer.Option("gaussian", "--refine", help="Subpixel refinement: 'gaussian' (2D Gaussian fit, most accurate), 'com' (centre of mass, fastest) or 'none'."),
    sigma: Optional[float] = typer.Option(None, "--sigma", help="Column width σ in pixels [default: estimated]."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Nearest-neighbour column spacing in pixels [default: estimated]."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Absolute response threshold [default: from the noise level and --threshold-rel]."),
    threshold_rel: float = typer.Option(0.2, "--threshold-rel", help="Threshold as a fraction of a typical column's response."),
    invert: bool = typer.Option(False, "--invert", help="Find dark columns (annular bright field, some STM)."),
    sublattices: bool = typer.Option(True, "--sublattices/--no-sublattices", help="Search again beside the columns found for dimmer ones (every sublattice), and label each column's sublattice."),
    joint: bool = typer.Option(True, "--joint/--independent", help="Refit columns whose neighbours overlap them against the image minus the neighbours' fits (unbiased next to brighter columns), one width per sublattice."),
    displacements: str = typer.Option("auto", "--displacements", help="Per-column displacement from the centroid of its neighbours in another sublattice: 'auto' (every sublattice ≥ 1 against 0), 'none', or OF:RELATIVE_TO such as 1:0."),
    device: str = typer.Option("auto", "--device", help="'auto' (CUDA when present), 'cpu' or 'cuda'. Both give the same atoms."),
    channel: int = typer.Option(0, "--channel", help="Channel used for detection in multichannel scans."),
    stack_as: str = typer.Option("frames", "--stack-as", help="Read 3D stacks as separate 'frames' or co-registered 'channels'."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a PNG overlay of the atoms on the scan.", show_default=False),
    force: bool = typer.Option(False, "--force", help="Overwrite an output made from other inputs or parameters."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes; errors still go to stderr."),
    json_summary: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    from microvae.stages import run_find_atoms

    params = FindAtomsParams(method=method, refine=refine, sigma_px=sigma, spacing_px=spacing, threshold=threshold, threshold_rel=threshold_rel, invert=invert, device=device,
                             sublattices=sublattices, joint=joint, displacements=displacements)
    with progress_bar(quiet) as progress:
        result = run_find_atoms(images, output, params, channel=channel, stack_as=stack_as, preview=preview, force=force, progress=progress)
    report(result, quiet, json_summary)
