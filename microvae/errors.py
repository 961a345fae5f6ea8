"""Exceptions that carry a message meant for the user.

Anything raised as :class:`MicrovaeError` is a problem with the user's input or environment (a
missing file, a corrupt artifact, an image smaller than the window). The CLI prints its message on
one line and exits with code 2. Any other exception is a bug in microvae and exits with code 1.
"""

__all__ = ["InputError", "MicrovaeError", "OutputError", "ParameterError", "raise_first_failure"]


class MicrovaeError(Exception):
    """A user-facing error: the message says what is wrong and what was expected."""


class InputError(MicrovaeError):
    """An input file is missing, unreadable, corrupt, of the wrong kind or shape."""


class OutputError(MicrovaeError):
    """An output cannot be written, or exists and would be overwritten without ``--force``."""


class ParameterError(MicrovaeError):
    """A parameter is out of range or inconsistent with the data."""


def raise_first_failure(checks: list[tuple[bool, str]]) -> None:
    """Raise :class:`ParameterError` with the message of the first ``(ok, message)`` pair that is not ok.

    Parameters
    ----------
    checks : list of tuple of (bool, str)
        ``(ok, message)`` pairs, in order.

    Raises
    ------
    ParameterError
        With the message of the first pair whose ``ok`` is False.
    """
    for ok, message in checks:
        if not ok:
            raise ParameterError(message)
