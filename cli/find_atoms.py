"""``microvae find-atoms``: locate atomic columns in scans."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import typer

from microvae.atoms import DETECTION_METHODS, REFINEMENT_METHODS
from microvae.atoms import FindAtomsParams as P
from microvae.config import FindAtomsConfig

from . import options
from .console import progress_bar, report
from .main import app


def _check_displacements(value: str) -> str:
    if not re.fullmatch(r"auto|none|\d+:\d+", value):
        raise typer.BadParameter(f"'{value}' is not auto, none or OF:TO (two sublattice numbers such as 1:0)")
    return value


@app.command(
    "find-atoms",
    short_help="Locate atomic columns on every sublattice.",
    help=(
        "Locate atomic columns on every sublattice of one or more scans, label each column's "
        "sublattice and measure displacements; write an atoms artifact (HDF5). Spacing and width "
        "are estimated from each image.\n\n"
        "Examples:\n"
        "  microvae find-atoms scan.dm4 -o atoms.h5 --preview atoms.png\n"
        "  microvae find-atoms abf.tif --invert -o atoms.h5       # dark columns\n"
        "  microvae find-atoms data.h5:/scans/haadf -o atoms.h5 --spacing 12\n"
        "  microvae find-atoms scan.dm4 -o atoms.h5 --hspy atoms.hspy  # HyperSpy"
    ),
    epilog="Details: README.md, 'microvae find-atoms'.",
)
def find_atoms_command(
    images: list[str] = typer.Argument(..., metavar="SCAN...", help="Scans: .tif .png .npy .h5[:/dataset] .hspy .dm3 .dm4 .emd .ser .sxm", show_default=False),
    output: Path = options.output("Atoms artifact to write (.h5)."),
    method: Literal[DETECTION_METHODS] = typer.Option(
        P.method, "--method", rich_help_panel="Detection", help="log: Laplacian of Gaussian (robust to backgrounds); max: smoothed maxima."
    ),
    refine: Literal[REFINEMENT_METHODS] = typer.Option(
        P.refine, "--refine", rich_help_panel="Detection", help="Subpixel refinement: 2D Gaussian fit, centre of mass, or none."
    ),
    sigma: float | None = typer.Option(None, "--sigma", min=0, rich_help_panel="Detection", help="Column width σ in px [default: estimated]."),
    spacing: float | None = typer.Option(None, "--spacing", min=0, rich_help_panel="Detection", help="Nearest-neighbour spacing in px [default: estimated]."),
    threshold: float | None = typer.Option(
        None, "--threshold", rich_help_panel="Detection", help="Absolute response threshold [default: from the noise level]."
    ),
    threshold_rel: float = typer.Option(
        P.threshold_rel, "--threshold-rel", min=0, rich_help_panel="Detection", help="Threshold as a fraction of a typical column's response."
    ),
    invert: bool = typer.Option(P.invert, "--invert", rich_help_panel="Detection", help="Find dark columns (annular bright field, some STM)."),
    sublattices: bool = typer.Option(
        P.sublattices,
        "--sublattices/--no-sublattices",
        rich_help_panel="Detection",
        help="Search again for dimmer columns beside the bright ones, and label sublattices.",
    ),
    joint: bool = typer.Option(
        P.joint, "--joint/--independent", rich_help_panel="Detection", help="Refit overlapping columns against the image minus their neighbours."
    ),
    displacements: str = typer.Option(
        P.displacements,
        "--displacements",
        metavar="auto|none|OF:TO",
        callback=_check_displacements,
        rich_help_panel="Detection",
        help="Displacement of each column from its neighbours in another sublattice (e.g. 1:0).",
    ),
    channel: int = typer.Option(FindAtomsConfig.channel, "--channel", min=0, rich_help_panel="Data", help="Channel used for detection in multichannel scans."),
    stack_as: Literal["frames", "channels"] = typer.Option(
        FindAtomsConfig.stack_as, "--stack-as", rich_help_panel="Data", help="Read 3D stacks as separate frames or co-registered channels."
    ),
    preview: Path | None = typer.Option(None, "--preview", rich_help_panel="Output", help="Write a PNG overlay of the atoms on the scan.", show_default=False),
    hspy: Path | None = typer.Option(
        None, "--hspy", rich_help_panel="Output", help="Write the scan with its atoms as a HyperSpy file (.hspy): markers and table.", show_default=False
    ),
    force: bool = options.force(),
    quiet: bool = options.quiet(),
    json_summary: bool = options.json_summary(),
    device: str = options.device("Both give the same atoms."),
) -> None:
    from microvae.stages.find_atoms import run_find_atoms

    detection = P(
        method=method,
        refine=refine,
        sigma_px=sigma,
        spacing_px=spacing,
        threshold=threshold,
        threshold_rel=threshold_rel,
        invert=invert,
        device=device,
        sublattices=sublattices,
        joint=joint,
        displacements=displacements,
    )
    config = FindAtomsConfig(detection, channel=channel, stack_as=stack_as)
    with progress_bar(quiet) as progress:
        result = run_find_atoms(images, output, config, preview=preview, hspy=hspy, force=force, progress=progress)
    report(result, quiet, json_summary)
