"""Help that reads in an 80-column terminal: usage, a short summary, examples, then the options
grouped in panels (model, schedule, classes, data, output, device), each name written in full.

Commands declare their panel per option (``typer.Option(..., rich_help_panel="Model")``) and use
:class:`Command` as their class; the details live in the README, which each help text names.
"""

from __future__ import annotations

import typing
from pathlib import Path

import typer.core

#: Panel order in every command's help; options without a panel go to "Other".
PANELS = ("Input", "Model", "Classes", "Schedule", "Detection", "Data", "Output", "Device", "Other")

#: Width of the option column: longer names take a line of their own, never cut.
NAME_COLUMN = 30

#: What an option's value is called in the help when the option names no metavar.
TYPE_METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH"}


def _metavar(param) -> str:
    if param.metavar:
        return param.metavar
    annotation = param.type_descriptor.annotation
    while typing.get_args(annotation):
        if typing.get_origin(annotation) is typing.Literal:  # the choices: log|max
            return "|".join(str(a) for a in typing.get_args(annotation))  # Optional[int], List[str] -> int, str
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return TYPE_METAVARS.get(annotation, "VALUE")


def _argument_name(param) -> str:
    name = param.metavar or param.name.upper()
    return name + ("..." if param.nargs == -1 and not name.endswith("...") else "")


def _option_name(param) -> str:
    """``-o, --output PATH`` or ``--rotation / --no-rotation``: every name in full."""
    value = "" if param.is_flag or param.count else f" {_metavar(param)}"
    names = ", ".join(sorted(param.opts, key=len)) + value
    if param.secondary_opts:
        names += " / " + ", ".join(sorted(param.secondary_opts, key=len))
    return names


def _help_record(param, ctx) -> tuple[str, str] | None:
    """(name, help with its default) of a parameter, or None when hidden."""
    record = param.get_help_record(ctx)
    if record is None:
        return None
    if param.param_type_name == "argument":
        return _argument_name(param), param.help or ""
    return _option_name(param), record[1]


def _write_text(formatter, text: str) -> None:
    """Write a help text: paragraphs are re-wrapped to the terminal, indented blocks (examples) are
    written as they are."""
    for paragraph in text.strip().split("\n\n"):
        lines = paragraph.split("\n")
        formatter.write_paragraph()
        if all(line.startswith("  ") for line in lines[1:]) and lines[0].rstrip().endswith(":") and len(lines) > 1:
            formatter.write_text(lines[0])  # "Examples:" and its indented lines
            for line in lines[1:]:
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
        elif all(line.startswith("  ") for line in lines):
            for line in lines:
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
        else:
            formatter.write_text(" ".join(line.strip() for line in lines))


def _format_help_text(command, formatter) -> None:
    if command.help:
        with formatter.indentation():
            _write_text(formatter, command.help)


def _format_panels(command, ctx, formatter) -> None:
    arguments, panels = [], {}
    for param in command.get_params(ctx):
        record = _help_record(param, ctx)
        if record is None or param.name == "help":  # -h/--help is in the usage line's habits, not a panel
            continue
        if param.param_type_name == "argument":
            arguments.append(record)
        else:
            panels.setdefault(getattr(param, "rich_help_panel", None) or "Other", []).append(record)
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments, col_max=NAME_COLUMN)
    for name in sorted(panels, key=lambda panel: PANELS.index(panel) if panel in PANELS else len(PANELS)):
        with formatter.section("Options" if name == "Other" and len(panels) == 1 else name):
            formatter.write_dl(panels[name], col_max=NAME_COLUMN)


class Command(typer.core.TyperCommand):
    """A Typer command whose ``--help`` is plain text in panels (see the module docstring)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [self.options_metavar] + [_argument_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_help(self, ctx, formatter) -> None:
        self.format_usage(ctx, formatter)
        _format_help_text(self, formatter)
        _format_panels(self, ctx, formatter)
        if self.epilog:
            with formatter.indentation():
                _write_text(formatter, self.epilog)


class Group(typer.core.TyperGroup):
    """The ``microvae`` group, in the same plain layout: usage, summary, options, commands."""

    def format_help(self, ctx, formatter) -> None:
        self.format_usage(ctx, formatter)
        _format_help_text(self, formatter)
        _format_panels(self, ctx, formatter)
        self.format_commands(ctx, formatter)
