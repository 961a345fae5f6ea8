"""The ``microvae`` command: subcommand registry and error handling.

User mistakes (``MicrovaeError``) print one line ``error: ...`` on stderr and exit with code 2;
anything else is a bug: one line ``internal error: ...`` and exit code 1. ``--debug`` (or
``MICROVAE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from microvae import __version__
from microvae.errors import MicrovaeError

app = typer.Typer(
    name="microvae",
    help=(
        "Unsupervised structure discovery in atomically resolved images (STEM, STM, AFM).\n\n"
        "Stages, each reading and writing artifacts on disk:\n\n"
        "  find-atoms → extract → train → encode → export\n\n"
        "Run [bold]microvae COMMAND --help[/bold] for each stage's options."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"microvae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.", envvar="MICROVAE_DEBUG"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    _state["debug"] = debug


from . import encode as _encode  # noqa: E402  (importing registers the subcommands, in pipeline order)
from . import export as _export  # noqa: E402
from . import extract as _extract  # noqa: E402
from . import compare as _compare  # noqa: E402
from . import diagnose as _diagnose  # noqa: E402
from . import find_atoms as _find_atoms  # noqa: E402
from . import pictures as _pictures  # noqa: E402
from . import pipeline as _pipeline  # noqa: E402
from . import train as _train  # noqa: E402

del _encode, _export, _extract, _find_atoms, _pictures, _pipeline, _train


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv or sys.argv[1:]) or os.environ.get("MICROVAE_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, standalone_mode=False)
    except MicrovaeError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if _is_usage_error(error):  # bad option or argument: Typer prints usage and the problem
            error.show()
            sys.exit(error.exit_code)
        # anything else is a bug in microvae
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def _is_usage_error(error: Exception) -> bool:
    """Typer's (vendored click) usage errors carry ``show()`` and ``exit_code``."""
    return callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int)
