"""search commands: build an app's visual search index, query it by image or input id."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from deeptrain.cli.output import JsonOption, emit, stderr, stdout, table
from deeptrain.errors import InvalidInput
from deeptrain.sdk import Client

search_app = typer.Typer(help="Visual search: index an app's inputs with an embedding model, query it.",
                         no_args_is_help=True)


@search_app.command("index")
def search_index(
    app: str,
    model: str = typer.Option(..., "--model", "-m", help="A trained embedding model of the app."),
    version: Optional[str] = typer.Option(None, help="Model version (default: the model's default/newest trained)."),
    batch_size: int = typer.Option(64, min=1, help="Images per inference batch."),
    json: bool = JsonOption,
):
    """Embed the app's inputs not indexed yet (Ray Data batch inference) and make this the app's search index."""
    client = Client()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=stderr, transient=False) as bar:
        task = bar.add_task("embedding inputs", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, advance=done, total=total)

        result = client.build_search_index(app, model, version, batch_size=batch_size, on_progress=on_progress)

    def render(r):
        stdout.print(f"indexed [bold]{r['indexed']}[/] new input(s) with {r['model_id']}/{r['version_id']}"
                     f" ({r['removed']} removed), {r['total']} in the index, {r['seconds']:.1f}s")

    emit(result, json, render)


@search_app.command("query")
def search_query(
    app: str,
    image: Optional[Path] = typer.Option(None, "--image", help="Search with this image file."),
    input_id: Optional[str] = typer.Option(None, "--input-id", help="Search with a stored input (excluded from hits)."),
    top_k: int = typer.Option(10, "--top-k", help="Number of hits."),
    concept: Optional[str] = typer.Option(None, "--concept", help="Only inputs labelled with this concept."),
    json: bool = JsonOption,
):
    """The inputs most similar to an image or a stored input, best first."""
    if (image is None) == (input_id is None):
        raise InvalidInput("give exactly one of --image PATH or --input-id ID")
    hits = Client().search(app, image, input_id=input_id, top_k=top_k, concept=concept)

    def render(rows):
        if not rows:
            stdout.print("no hits")
            return
        table([{"rank": i + 1, "input_id": h["input_id"], "score": f"{h['score']:.4f}", "concepts": h["concepts"]}
               for i, h in enumerate(rows)], ["rank", "input_id", "score", "concepts"],
              f"nearest inputs of {app}")

    emit(hits, json, render)


@search_app.command("show")
def search_show(app: str, json: bool = JsonOption):
    """Which embedding version is the app's search index, and its size."""
    emit(Client().search_index_info(app), json)
