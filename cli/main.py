"""The ``microvae`` command: subcommand registry and error handling.

User mistakes (``MicrovaeError``) print one line ``error: ...`` on stderr and exit with code 2, and
so do operating-system errors of the environment (no space left, read-only file system, permission
denied); anything else is a bug: one line ``internal error: ...`` and exit code 1. ``--debug`` (or
``MICROVAE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback

import typer

from microvae import __version__
from microvae.errors import MicrovaeError

from .help import Command, Group


class _App(typer.Typer):
    """Every subcommand's help in the plain 80-column layout of :mod:`cli.help`."""

    def command(self, *args, cls=Command, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


app = _App(
    cls=Group,
    name="microvae",
    help=(
        "Unsupervised structure discovery in atomically resolved images (STEM, STM, AFM). Each stage "
        "reads and writes artifacts on disk, so any stage can be rerun, resumed or applied to new scans.\n\n"
        "Examples:\n"
        "  microvae find-atoms scan.dm4 -o atoms.h5 --preview atoms.png\n"
        "  microvae extract scan.dm4 --atoms atoms.h5 --window 32 -o patches.h5\n"
        "  microvae train patches.h5 -o run/ --classes 3\n"
        "  microvae encode run/ patches.h5 -o encoded.h5\n"
        "  microvae export encoded.h5 -o maps/\n"
        "  microvae pipeline study.toml scan.dm4 -o study/     # all of the above\n\n"
        "Run 'microvae COMMAND --help' for a command's options; README.md has the details."
    ),
    rich_markup_mode=None,
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


#: The command modules, in pipeline order: importing one registers its subcommand(s) on ``app``.
COMMAND_MODULES = ("find_atoms", "extract", "train", "encode", "export", "pipeline", "diagnose", "compare", "pictures")
for _module in COMMAND_MODULES:
    importlib.import_module(f".{_module}", __package__)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv or sys.argv[1:]) or os.environ.get("MICROVAE_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, standalone_mode=False)
    except MicrovaeError as error:
        if debug:
            traceback.print_exc()
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # always one line
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        if not _is_environment_error(error):
            _internal_error(error, debug)
        if debug:
            traceback.print_exc()
        from microvae.artifacts import describe_os_error

        print(f"error: {error.filename or 'output'}: cannot write ({describe_os_error(error)})", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # 'microvae' or a command alone: its help
            with contextlib.suppress(BrokenPipeError):  # 'microvae | head'
                print(error.format_message())
            sys.exit(0)
        if _is_usage_error(error):  # bad option or argument: one line, as every user mistake
            message = " ".join(str(error.format_message()).split()) if hasattr(error, "format_message") else str(error)
            message = message.replace("Value error, ", "")
            print(f"error: {message} (see '{_command_path(getattr(error, 'ctx', None))} --help')", file=sys.stderr)
            sys.exit(error.exit_code)
        _internal_error(error, debug)  # anything else is a bug in microvae
    sys.exit(0)


def _command_path(ctx) -> str:
    """'microvae train' however the program was started (console script, python -m, a test)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["microvae", *reversed(names)])


def _internal_error(error: Exception, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    first = (str(error).strip().splitlines() or [""])[0]
    print(f"internal error: {type(error).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
    sys.exit(1)


def _is_environment_error(error: OSError) -> bool:
    """A full disk, a read-only file system or a permission problem: the user's environment, not a
    bug (exit 2). Library writers convert these to :class:`OutputError` naming the file; this
    catches any that escape."""
    import errno

    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EROFS, errno.EACCES, errno.EPERM)


def _is_usage_error(error: Exception) -> bool:
    """Typer's (vendored click) usage errors carry ``show()`` and ``exit_code``."""
    return callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int)
