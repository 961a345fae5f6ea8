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
    """What a stage did. ``status`` is ``"written"`` or ``"up-to-date"``."""

    status: str
    output: Path
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def no_progress(description: str, completed: int, total: int) -> None:
    return None
