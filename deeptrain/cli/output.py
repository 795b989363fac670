"""Printing for the CLI: one JSON document on stdout with --json, rich tables otherwise.

Progress bars and messages go to stderr so that stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager, redirect_stdout
from typing import Any, Callable, Iterator, Sequence, TextIO

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from deeptrain.results import dump

stdout = Console()
stderr = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")


_json_streams: list[TextIO] = []  # where --json documents go while ``json_stdout_only`` holds stdout


@contextmanager
def json_stdout_only() -> Iterator[None]:
    """While a ``--json`` command runs, whatever else reaches stdout (a library's warning, output Ray
    forwards from its workers) goes to stderr, so that stdout carries exactly the one JSON document."""
    _json_streams.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _json_streams.pop()


def print_json(doc: Any) -> None:
    """One JSON document on stdout; typed SDK results as their ``model_dump(mode="json")``."""
    print(json.dumps(dump(doc), indent=2, default=str), file=_json_streams[-1] if _json_streams else sys.stdout)


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


def new_table(columns: Sequence[str], title: str | None = None, **options: Any) -> Table:
    """A table whose cells wrap (a long id or parameter name folds onto the next line, never cut to "…"),
    so that it fits the terminal (80 columns where stdout is not one, or $COLUMNS)."""
    t = Table(title=title, **options)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


KEEP_WHOLE = 30  # a first-column value (an id, a parameter name) up to this long is not split when it can fit


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """``rows`` as a table of ``columns``; the first column (the ids) is the last one narrowed to fit."""
    t = new_table(columns, title)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    for r in cells:
        t.add_row(*r)
    longest = [max(len(c) for c in [name, *(r[k] for r in cells)]) for k, name in enumerate(columns)]
    if len(columns) > 1 and sum(longest) + 3 * len(columns) + 1 > stdout.width:
        # too wide: the first column keeps its width (up to KEEP_WHOLE); rich narrows the widest others first
        t.columns[0].width = min(KEEP_WHOLE, longest[0])
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


@contextmanager
def working(description: str) -> Iterator[None]:
    """A bar on stderr for a call that reports no progress of its own: the task and the time it has taken."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=stderr) as bar:
        bar.add_task(description, total=None)
        yield


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_tables(metrics: dict[str, Any], title: str = "metrics") -> None:
    """A version's metrics as tables: the scalar ones, then one row per concept (``per_concept``).
    Matrices (the confusion matrix) are left to the report's plots and ``--json``."""
    scalars = [{"metric": k, "value": _number(v)} for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    table(scalars, ["metric", "value"], title)
    per_concept = metrics.get("per_concept") or {}
    names = list(dict.fromkeys(name for row in per_concept.values() for name in row))
    if per_concept:
        rows = [{"concept": c, **{n: _number(v) for n, v in row.items()}} for c, row in per_concept.items()]
        table(rows, ["concept", *names], "per concept")
