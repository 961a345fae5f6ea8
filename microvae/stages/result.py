"""What every stage returns (:class:`StageResult`) and how it reports progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProgressCallback", "StageResult", "no_progress"]

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class StageResult:
    """What a stage did.

    Attributes
    ----------
    status : str
        ``"written"`` or ``"up-to-date"``.
    output : Path
        The artifact (or folder) the stage wrote or found up to date.
    summary : dict of str to Any
        The stage's numbers, plain data.
    notes : list of str
        Lines for the user.
    """

    status: str
    output: Path
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def no_progress(description: str, completed: int, total: int) -> None:
    """A :data:`ProgressCallback` that does nothing.

    Parameters
    ----------
    description : str
        What is being done.
    completed : int
        Steps done.
    total : int
        Steps in all.
    """
    return None
