"""The README walk-through: every ``deeptrain …`` command in README.md's ``bash`` blocks, as shown.

Extracted when the tests run, so a command added to the README is checked without touching
this file. Every command is checked against the CLI: the command exists, each option it uses
is one of the command's (and appears in its ``--help``), and it has as many arguments as the
command takes. Then, in README order on a tiny Fashion-MNIST app (local files + SQLite), every
command runs as shown whose arguments all name what the walk-through has: the app
``fashion``, its models, their versions, the tuning run, a key, an input, an image file. The
README's placeholders are filled from the deployment (``<version>`` → the model's newest
version, ``<run>`` → the newest tuning run ...); only sizes shrink (epochs, trials, items
per epoch: ``TUNE_EPOCHS``, ``SHRINK_OPTIONS``, ``MODEL_DEFAULTS``). The others — another
app (``trees``, ``forest``), a Ray cluster, a server that runs until Ctrl-C, a run to resume
or cancel, commands that delete — get the first check only (``NOT_RUN`` says why).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import typer
from typer.testing import CliRunner

from deeptrain.cli.main import app as cli_app
from deeptrain.sdk import Client
from tests.conftest import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"
APP = "fashion"
# placeholders and names of the README that stand for things of the walk-through's app
PLACEHOLDERS = {"<version>", "VERSION", "V", "ID", "<run>", "<key-id>", "<id>", "JOB"}
FILES = {"./images", "./out", "image.png", "shirt.png", "shoe.png", "clf.onnx", "resnext50_32x4d-7cdf4587.pth"}
# commands (or command + option) that do not run here, and why
NOT_RUN = {
    ("submit",): "needs a Ray cluster (tests/test_submit.py, tests/test_cluster.py run it)",
    ("jobs",): "needs a Ray cluster's jobs",
    ("serve",): "starts a server that runs until Ctrl-C, or asks one (tests/test_serve.py)",
    ("models", "cancel"): "needs a version that is training",
    ("models", "train", "--resume"): "needs an interrupted version",
    ("tune", "--resume"): "needs an interrupted tuning run",
}
DESTRUCTIVE = {"delete", "gc", "unlabel"}  # would remove what later commands of the walk-through use
# sizes only (`num_epochs`, `--trials`, items per epoch): the walk-through checks that the commands run, not what they learn
TUNE_EPOCHS = 2  # one epoch elsewhere; ASHA's grace period (1 in the README) must be below the epochs
SHRINK_OPTIONS = {"--trials": "1"}
MODEL_DEFAULTS = ["--param", "num_items_per_epoch=40", "--param", "batch_size=20"]


@dataclass
class Command:
    line: str  # as the README shows it
    tokens: list[str]  # after `deeptrain`, optional [...] parts included
    path: tuple[str, ...] = ()  # the command's name, e.g. ("models", "train")
    args: list[str] = field(default_factory=list)  # what follows the name
    command: Any = None  # the click command

    def option(self, name: str) -> str | None:
        return self.args[self.args.index(name) + 1] if name in self.args[:-1] else None


def readme_commands(text: str) -> list[Command]:
    """Every `deeptrain …` command of the README's bash blocks, in order (continuations joined,
    `a ; b` split, comments dropped, `[--opt V]` kept as `--opt V`, alternatives `a|b` as `a`)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.lstrip().startswith("deeptrain "):
                continue
            tokens = shlex.split(line, comments=True)
            parts, current = [], []
            for token in tokens + [";"]:
                if token == ";":
                    parts.append(current)
                    current = []
                else:
                    current.append(token)
            for part in parts:
                if part and part[0] == "deeptrain":
                    clean = [_first_alternative(t.strip("[]")) for t in part[1:] if t.strip("[]")]
                    commands.append(Command(shlex.join(part), clean))
    return commands


def _first_alternative(token: str) -> str:
    """`test|val` (README's notation for one of the values) -> `test`."""
    return token.split("|")[0] if re.fullmatch(r"[\w.-]+(\|[\w.-]+)+", token) else token


def _root():
    return typer.main.get_command(cli_app)


def resolve(cmd: Command) -> Command:
    """Find the click command the tokens name (descending through groups)."""
    command, args, path = _root(), list(cmd.tokens), []
    while hasattr(command, "list_commands") and args:
        if args[0] not in command.list_commands(None):  # a group may pick a default command (`models versions`)
            ctx = command.make_context(path[-1] if path else "deeptrain", list(args), resilient_parsing=True)
            chosen = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []), *ctx.args]
            if not chosen or chosen == args or chosen[0] not in command.list_commands(None):
                break
            args = chosen
        path.append(args.pop(0))
        command = command.get_command(None, path[-1])
    cmd.path, cmd.args, cmd.command = tuple(path), args, command
    return cmd


def _options(command) -> dict[str, Any]:
    return {opt: p for p in command.params for opt in (*getattr(p, "opts", []), *getattr(p, "secondary_opts", []))
            if opt.startswith("-")}


def usage_problems(cmd: Command) -> list[str]:
    """What does not match the CLI: an unknown command, option or a wrong number of arguments."""
    command = cmd.command
    if hasattr(command, "list_commands") and not command.invoke_without_command:
        return [f"{' '.join(cmd.tokens[:len(cmd.path) + 1])!r} is not a command"]
    forwarded = (command.context_settings or {}).get("ignore_unknown_options")
    options, positional, problems, args = _options(command), 0, [], list(cmd.args)
    while args:
        token = args.pop(0)
        if token.startswith("-") and token != "-":
            param = options.get(token.split("=", 1)[0])
            if param is None and forwarded:  # e.g. `submit tune ARGS`: ARGS are `deeptrain tune`'s
                return usage_problems(resolve(Command(cmd.line, [cmd.path[-1], *_without_own_options(cmd)])))
            if param is None:
                problems.append(f"no option {token} in `deeptrain {' '.join(cmd.path)}`")
            elif not param.is_flag and "=" not in token and args:
                args.pop(0)
        else:
            positional += 1
    arguments = [p for p in command.params if not getattr(p, "opts", [""])[0].startswith("-")]
    takes = sum(p.nargs for p in arguments if p.nargs > 0)
    if not forwarded and not any(p.nargs < 0 for p in arguments) and positional > takes:
        problems.append(f"{positional} arguments, `deeptrain {' '.join(cmd.path)}` takes {takes}")
    required = sum(p.nargs for p in arguments if p.required and p.nargs > 0)
    if positional < required:
        problems.append(f"{positional} arguments, `deeptrain {' '.join(cmd.path)}` needs {required}")
    return problems


def _without_own_options(cmd: Command) -> list[str]:
    """The arguments a forwarding command (``submit tune``) passes on: without its own options."""
    options, args, rest = _options(cmd.command), list(cmd.args), []
    while args:
        token = args.pop(0)
        param = options.get(token.split("=", 1)[0]) if token.startswith("-") else None
        if param is None:
            rest.append(token)
        elif not param.is_flag and "=" not in token and args:
            args.pop(0)
    return rest


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli_app, [*path, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    return result.output


COMMANDS = [resolve(c) for c in readme_commands(README.read_text())]


def test_readme_shows_commands_of_every_group():
    assert len(COMMANDS) > 40
    groups = {c.path[0] for c in COMMANDS if c.path}
    assert {"apps", "inputs", "datasets", "models", "predict", "tune", "search", "submit", "jobs"} <= groups


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.line[:70] for c in COMMANDS])
def test_readme_command_matches_the_cli(cmd):
    """The command exists, its options are the command's and are in its --help, the argument count fits."""
    assert not usage_problems(cmd), f"README: `{cmd.line}`"
    forwarded = (cmd.command.context_settings or {}).get("ignore_unknown_options")
    shown = help_text(cmd.path if not forwarded else cmd.path[-1:])
    used = [t.split("=", 1)[0] for t in cmd.args if t.startswith("--")]
    if forwarded:
        used = [o for o in used if o not in _options(cmd.command)]
    assert all(o in shown for o in used), f"README: `{cmd.line}`: not in its --help: " \
                                          f"{[o for o in used if o not in shown]}"


def test_every_command_takes_json():
    """README: every command takes --json and then prints exactly one JSON document."""
    missing = []

    def walk(command, path):
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
        elif "--json" not in _options(command):
            missing.append(" ".join(path))

    walk(_root(), [])
    assert not missing, f"commands without --json: {missing}"


# --- running the walk-through --------------------------------------------------------------------

def not_run_reason(cmd: Command) -> str | None:
    """Why the walk-through does not run this command (None: it runs)."""
    for key, reason in NOT_RUN.items():
        names = tuple(k for k in key if not k.startswith("-"))
        options = [k for k in key if k.startswith("-")]
        if cmd.path[:len(names)] == names and all(o in cmd.args for o in options):
            return reason
    if DESTRUCTIVE & set(cmd.path):
        return "deletes what later commands use"
    params = cmd.command.make_context(cmd.path[-1], list(cmd.args), resilient_parsing=True).params
    if "app" in params and params["app"] != APP:
        return f"another app ({params['app']})"
    unknown = [t for t in cmd.args if _looks_like_a_file(t) and t not in FILES]
    if unknown:
        return f"files the walk-through does not have: {unknown}"
    return None


def _looks_like_a_file(token: str) -> bool:
    return token.startswith(("./", "/")) or bool(
        re.fullmatch(r"[\w.-]+\.(png|jpg|onnx|pt|pth|pt2|safetensors|json|csv|xml)", token))


@dataclass
class Walk:
    """The walk-through's deployment: fills the README's placeholders from what it has."""

    settings: Any
    client: Client
    files: dict[str, str]

    def version_of(self, model: str) -> str:
        versions = self.client.list_versions(APP, model)
        assert versions, f"model {model} has no version yet"
        return max(versions, key=lambda v: v["created_at"])["id"]

    def dataset_version(self, cmd: Command, model: str | None) -> str:
        if model and cmd.path[0] != "datasets":
            return self.client.get_version(APP, model, self.version_of(model))["dataset_version_id"]
        return max(self.client.list_datasets(APP), key=lambda d: d["created_at"])["id"]

    def fill(self, cmd: Command) -> list[str]:
        params = cmd.command.make_context(cmd.path[-1], list(cmd.args), resilient_parsing=True).params
        model = params.get("model")
        fills: dict[str, Callable[[], str]] = {
            "<version>": lambda: self.dataset_version(cmd, None) if cmd.path[0] == "datasets"
            else self.version_of(model),
            "VERSION": lambda: self.version_of(model), "V": lambda: self.version_of(model),
            "ID": lambda: self.dataset_version(cmd, model),
            "<run>": lambda: max(self.client.list_tune_runs(APP, model), key=lambda r: r["created_at"])["id"],
            "<key-id>": lambda: next(k["id"] for k in self.client.list_keys(APP) if not k["revoked_at"]),
            "<id>": lambda: self.client.list_inputs(APP, limit=1)[0]["id"],
        }
        out = []
        for i, token in enumerate(cmd.args):
            previous = cmd.args[i - 1] if i else ""
            if token in fills:
                token = fills[token]()
            elif token in self.files:
                token = self.files[token]
            elif previous == "--param" and token.split("=")[0] == "num_epochs":
                token = f"num_epochs={TUNE_EPOCHS if cmd.path[-1] == 'tune' else 1}"
            elif previous in SHRINK_OPTIONS:
                token = SHRINK_OPTIONS[previous]
            out.append(token)
        if cmd.path == ("models", "create"):
            out += MODEL_DEFAULTS
        return [*cmd.tokens[:len(cmd.tokens) - len(cmd.args)], *out]  # the command's name as the README gives it


def check_output(cmd: Command, argv: list[str], proc) -> list[str]:
    """What the README promises of this command's output, beyond exiting 0."""
    problems = []
    if re.search(r"tensorboard --logdir\s+\S*(/tmp/|ray_results)", proc.stdout + proc.stderr, re.I):
        problems.append("points TensorBoard at a temporary folder (Tune's own hint; its loggers should be off)")
    if "--open" in argv and not Path(proc.stdout.strip()).is_dir():
        problems.append(f"--open should print the report's folder, printed {proc.stdout.strip()[:200]!r}")
    if cmd.path == ("models", "show") and "data wait" not in proc.stdout:
        problems.append("`models show` should show each epoch's data wait / augment / compute split")
    return problems


def _torchvision_style_checkpoint(path: Path) -> str:
    """A ResNeXt-50 state_dict in torchvision's file format (random values: the walk checks commands, not ImageNet)."""
    import torch

    from deeptrain.templates import get_template

    torch.save(get_template("classification", "ResNext").build(1000, logreg=False).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def walk(tmp_path_factory, fashion_small):
    from deeptrain.config import Settings

    tmp = tmp_path_factory.mktemp("readme")
    settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp / "home")})
    image = next((fashion_small / "test").rglob("*.png"))
    files = {"./images": str(fashion_small / "train"), "./out": str(tmp / "out"), "clf.onnx": str(tmp / "clf.onnx"),
             "image.png": str(image), "shirt.png": str(image), "shoe.png": str(image),
             "resnext50_32x4d-7cdf4587.pth": _torchvision_style_checkpoint(tmp / "resnext50_32x4d-7cdf4587.pth")}
    return Walk(settings, Client(settings), files)


@pytest.mark.slow
def test_readme_walk_through_runs_as_shown(walk):
    """Every README command that can run here runs, in README order, and exits 0 (all failures listed)."""
    failures, ran = [], []
    for cmd in COMMANDS:
        if usage_problems(cmd) or not_run_reason(cmd):
            continue
        argv = walk.fill(cmd)
        started = time.monotonic()
        proc = run_cli(walk.settings, *argv, timeout=900)
        print(f"{time.monotonic() - started:6.1f} s  exit {proc.returncode}  deeptrain {shlex.join(argv)}")
        ran.append(cmd.line)
        problems = [f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"] if proc.returncode else []
        problems += check_output(cmd, argv, proc)
        if problems:
            failures.append(f"`{cmd.line}` (ran: deeptrain {shlex.join(argv)}): " + "; ".join(problems))
    assert len(ran) >= 25, ran
    assert not failures, "\n\n".join(failures)


def test_configuration_table_matches_the_settings():
    """Every DEEPTRAIN_* the README names is a setting, listed once in its table, with the setting's default."""
    from deeptrain.config import Settings

    text = README.read_text()
    fields = {Settings.variable(name): field for name, field in Settings.model_fields.items()}
    assert set(re.findall(r"DEEPTRAIN_[A-Z0-9_]+", text)) <= set(fields)
    rows = re.findall(r"^\| `(DEEPTRAIN_\w+)` \| ([^|]*) \|", text[text.index("## Configuration"):], re.M)
    assert sorted(v for v, _ in rows) == sorted(fields)
    for variable, shown in rows:
        default, shown = fields[variable].default, shown.strip().strip("`")
        if default is None:  # derived (from DEEPTRAIN_HOME, the node) or set by deeptrain itself
            assert not re.fullmatch(r"[\d.]+", shown), variable
        elif isinstance(default, bool):
            assert shown == str(default).lower(), variable
        elif isinstance(default, (int, float)):
            assert float(shown) == default, variable
        else:
            assert shown.removeprefix("./") == str(default), variable
