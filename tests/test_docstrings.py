"""Every public function/class under ``microvae/`` has its numpydoc sections.

The check is ``tools/check_docstrings.py`` (also the command-line tool); it reads the source with
:mod:`ast` and imports nothing, so this runs in well under a second.
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "microvae"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_docstrings", ROOT / "tools" / "check_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()

PROSE_ONLY = '''
__all__ = ["scale", "Box"]


def scale(values, factor=2.0):
    """Multiply ``values`` by ``factor`` and return the product."""
    return values * factor


class Box:
    """A box of ``width`` px."""

    def __init__(self, width):
        self.width = width


def _private(x):
    return x
'''

COMPLETE = '''
def scale(values, factor=2.0):
    """Multiply ``values`` by ``factor``.

    Parameters
    ----------
    values : ndarray
        Anything.
    factor : float, default 2.0
        The factor.

    Returns
    -------
    ndarray
        The product.
    """
    return values * factor
'''


def test_control_prose_docstring_is_a_gap():
    gaps = checker.check_source(PROSE_ONLY, "synthetic")
    found = {qual: miss for qual, _, miss in gaps}
    assert found == {"synthetic.scale": ["Parameters", "Returns"], "synthetic.Box": ["Parameters/Attributes"]}
    assert dict((qual, line) for qual, line, _ in gaps)["synthetic.scale"] == 5


def test_control_complete_docstring_passes():
    assert checker.check_source(COMPLETE, "synthetic") == []


def test_every_public_function_and_class_has_its_sections():
    per_module = checker.scan(PACKAGE)
    assert len(per_module) > 50, f"found only {len(per_module)} modules under {PACKAGE}"
    gaps = checker.format_gaps(per_module)
    assert not gaps, f"{len(gaps)} public functions/classes lack numpydoc sections:\n" + "\n".join(gaps)
