"""Printing for the CLI: one JSON document on stdout with --json, rich tables otherwise.

Progress bars and messages go to stderr so that stdout stays machine-readable.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from deeptrain.results import dump

stdout = Console()
stderr = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")


def print_json(doc: Any) -> None:
    """One JSON document on stdout; typed SDK results as their ``model_dump(mode="json")``."""
    print(json.dumps(dump(doc), indent=2, default=str))


def emit(doc: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print ``doc`` as JSON, or with ``render``, or as key/value lines."""
    if as_json:
        print_json(doc)
    elif render is not None:
        render(doc)
    elif isinstance(doc, dict):
        for key, value in dump(doc, "python").items():
            stdout.print(f"[bold]{key}[/]: {value}")
    else:
        stdout.print(doc)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*(_cell(row.get(c)) for c in columns))
    stdout.print(t)


def _cell(value: Any) -> str:
    value = dump(value, "python")
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields an ``advance(n)`` callback."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr, transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
