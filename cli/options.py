"""Options that several commands share, written once: output, overwrite, quiet, JSON and device.

Each returns a fresh ``typer.Option`` in its help panel (see :mod:`cli.help`).
"""

from __future__ import annotations

import re

import typer

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check_device(value: str | None) -> str | None:
    if value is not None and not DEVICE_PATTERN.match(value):
        raise typer.BadParameter(f"'{value}' is not a device: give auto, cpu, cuda or cuda:N")
    return value


def device(note: str = ""):
    return typer.Option(
        "auto",
        "--device",
        metavar="auto|cpu|cuda[:N]",
        callback=_check_device,
        rich_help_panel="Device",
        help="'auto': CUDA when present." + (f" {note}" if note else ""),
    )


def output(help: str):
    return typer.Option(..., "-o", "--output", help=help, show_default=False, rich_help_panel="Output")


def force(what: str = "an output"):
    return typer.Option(False, "--force", help=f"Overwrite {what} made from other inputs or settings.", rich_help_panel="Output")


def quiet(help: str = "No progress bars or notes (errors still go to stderr)."):
    return typer.Option(False, "--quiet", "-q", help=help, rich_help_panel="Output")


def json_summary(help: str = "Print a one-line JSON summary on stdout."):
    return typer.Option(False, "--json", help=help, rich_help_panel="Output")
