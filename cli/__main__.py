"""``python -m microvae.cli``: the same as the ``microvae`` command."""

from .main import main

main()
