"""Terminal output shared by the commands: tables that survive pipes, and counted nouns."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


class PipeConsole(Console):
    """A rich console whose broken pipe (`metarl families | head`) reaches `metarl.cli.main` as BrokenPipeError,
    which ends every command the same way (exit status 141, no traceback); rich's own handler exits with 1."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def print_table(table: Table, console: Console) -> None:
    """`table` on `console`. Piped or redirected, rich fits a table to 80 columns and wraps ids and numbers mid-word
    (issue 13): there it gets the width it needs; a terminal keeps its own width."""
    if console.is_terminal:
        console.print(table)
        return
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum
    PipeConsole(file=console.file, width=max(needed, console.width), color_system=None).print(table)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """"1 episode", "2 episodes"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
