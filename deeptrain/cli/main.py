"""Entry point of the ``deeptrain`` command."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer
from rich.markup import escape

from deeptrain import __version__
from deeptrain.cli.commands import add_commands
from deeptrain.cli.jobs import jobs_app, submit_app
from deeptrain.cli.output import JsonOption, emit, json_stdout_only, print_json, stderr
from deeptrain.errors import (ClusterError, Conflict, DeeptrainError, Forbidden, InvalidInput, NotFound, StorageError,
                              Unauthorized)

app = typer.Typer(
    name="deeptrain",
    help="Self-hostable deep training for images: import, label, train, tune and serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
add_commands(app, cluster_apps=[(submit_app, "submit"), (jobs_app, "jobs")])

# Commands of packages that build on deeptrain (``serve``) come in through entry points,
# so that this package never imports them.
for _plugin in entry_points(group="deeptrain.cli"):
    app.add_typer(_plugin.load(), name=_plugin.name)

EXIT_CODES = {InvalidInput: 2, NotFound: 3, Conflict: 4, StorageError: 5, Unauthorized: 6, Forbidden: 6,
              ClusterError: 7}


@app.command("version")
def version(json: bool = JsonOption) -> None:
    """Print the package version."""
    emit({"version": __version__}, json, lambda doc: print(doc["version"]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    if as_json:
        with json_stdout_only():
            return _main(argv, as_json)
    return _main(argv, as_json)


def _main(argv: list[str], as_json: bool) -> int:
    try:
        rc = typer.main.get_command(app).main(args=argv, prog_name="deeptrain", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except DeeptrainError as exc:
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        if as_json:
            print_json({"error": {"code": exc.code, "message": str(exc)}})
        else:
            stderr.print("[red]error:[/] " + escape(str(exc)), soft_wrap=True)  # whole, as written
        return code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        stderr.print("aborted")
        return 130
    except typer.TyperException as exc:  # usage errors: typer's (vendored) ClickException
        exc.show()
        return exc.exit_code


def run() -> None:
    """Console-script entry: exit with ``main``'s code."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
