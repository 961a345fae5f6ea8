"""The lattice generators by name: :data:`GENERATORS`."""

from __future__ import annotations

from collections.abc import Callable

from .abtem import abtem_files, abtem_generator
from .crystals import dumbbells, honeycomb
from .perovskites import abf_perovskite, displaced_perovskite
from .scan_distortion import scan_distorted
from .truth import GroundTruthScan

__all__ = [
    "GENERATORS",
]

GENERATORS: dict[str, Callable[..., GroundTruthScan]] = {
    "honeycomb": honeycomb,
    "displaced_perovskite": displaced_perovskite,
    "dumbbells": dumbbells,
    "scan_distorted": scan_distorted,
    "abf_perovskite": abf_perovskite,
}
for _name in abtem_files():
    GENERATORS[_name] = abtem_generator(_name)
