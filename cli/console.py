"""Terminal output shared by all subcommands: messages on stderr, progress bars, the result line."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from microvae.stages.result import StageResult

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator:
    """Yield a ``progress(description, completed, total)`` callback drawing rich bars on stderr."""
    if quiet or not stderr.is_terminal:
        yield lambda description, completed, total: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(description: str, completed: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=completed, total=total)

        yield update


def report(result: StageResult, quiet: bool, as_json: bool = False) -> None:
    """Print what a stage did: notes on stderr (unless quiet), one result line on stdout."""
    if as_json:
        print(json.dumps({"status": result.status, "output": str(result.output), **result.summary}), flush=True)
        return
    if not quiet:
        for note in result.notes:
            stderr.print(f"  {note}")
    if result.status == "up-to-date":
        stdout.print(f"{result.output}: up to date, nothing to do")
    elif not quiet:
        stdout.print(f"[green]wrote[/green] {result.output}")
    sys.stdout.flush()


def duration_words(seconds: float) -> str:
    """'≈ 4.2 min', '≈ 9 s' or '< 1 s': an expected time as an estimate line states it."""
    if seconds >= 60:
        return f"≈ {seconds / 60:.1f} min"
    return f"≈ {seconds:.0f} s" if seconds >= 1 else "< 1 s"
