"""The zoo's registry: every member by name (:data:`MEMBERS`) and :func:`make_case`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ..errors import ParameterError
from .case import ZooCase
from .crystals import make_honeycomb_dopants, make_perovskite_film, make_two_phase_case
from .shapes import make_cards_case, make_digits, make_glyph_suits, make_molecules
from .stm import make_stm_defects

__all__ = ["MEMBERS", "ROTATION_DEGREES", "make_case"]

ROTATION_DEGREES = (12, 60, 120)


def _named(generator: Callable[..., ZooCase], **fixed) -> Callable[..., ZooCase]:
    function = partial(generator, **fixed)
    function.__doc__ = generator.__doc__
    return function


MEMBERS: dict[str, Callable[..., ZooCase]] = {
    **{f"cards_{deg}": _named(make_cards_case, max_angle_deg=float(deg)) for deg in ROTATION_DEGREES},
    **{f"glyph_suits_{deg}": _named(make_glyph_suits, max_angle_deg=float(deg)) for deg in ROTATION_DEGREES},
    "digits": make_digits,
    "molecules": make_molecules,
    "perovskite_film": make_perovskite_film,
    "two_phase": make_two_phase_case,
    "stm_defects": make_stm_defects,
    "honeycomb_dopants": make_honeycomb_dopants,
}
"""Registry name → generator ``(seed, n=None, size="bench") -> ZooCase``."""


def make_case(name: str, seed: int, size: str = "bench") -> ZooCase:
    """Generate the zoo member ``name`` (a key of :data:`MEMBERS`) with ``seed`` at ``size``.

    Parameters
    ----------
    name : str
        A key of :data:`MEMBERS`, e.g. ``"glyph_suits_60"``.
    seed : int
        Random seed, >= 0.
    size : {"bench", "ci"}, default "bench"
        The member's preset.

    Returns
    -------
    ZooCase
        The member's case at its default number of patches.

    Raises
    ------
    ParameterError
        ``name`` is not a member, or the generator refuses ``seed`` or ``size``.
    """
    if name not in MEMBERS:
        raise ParameterError(f"unknown zoo member {name!r}; expected one of {', '.join(MEMBERS)}")
    return MEMBERS[name](seed, size=size)
