"""Terminal output helpers shared by the CLI commands."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def error_line(message: str) -> None:
    """One line on standard error, never wrapped, so scripts can grep it."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error line and return the Exit to raise."""
    error_line(message)
    return typer.Exit(code)
