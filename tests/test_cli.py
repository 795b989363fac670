"""The CLI contract, run as a real subprocess: --json prints exactly one JSON document."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from deeptrain.sample_data import deepforest_data_dir
from tests import imagegen
from tests.conftest import run_cli


def cli_json(settings, *args, code: int = 0):
    proc = run_cli(settings, *args, "--json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_cli_data_workflow(settings, tmp_path):
    folder = tmp_path / "folder"
    for i, concept in enumerate(["cat", "cat", "dog"]):
        (folder / concept).mkdir(parents=True, exist_ok=True)
        (folder / concept / f"{i}.png").write_bytes(imagegen.png_bytes((i, i, i)))
    (folder / "dog" / "bad.png").write_bytes(b"")

    assert cli_json(settings, "apps", "create", "pets")["id"] == "pets"
    assert [a["id"] for a in cli_json(settings, "apps", "list")] == ["pets"]
    report = cli_json(settings, "inputs", "import", "pets", str(folder), "--format", "imagefolder")
    assert (report["imported"], report["duplicates"]) == (3, 0)
    assert report["rejected"] == [{"file": str(folder / "dog" / "bad.png"), "reason": "empty file (0 bytes)"}]
    inputs = cli_json(settings, "inputs", "list", "pets")
    assert isinstance(inputs, list) and len(inputs) == 3
    assert cli_json(settings, "concepts", "create", "pets", "bird", "--name", "Bird")["name"] == "Bird"
    assert {c["id"] for c in cli_json(settings, "concepts", "list", "pets")} == {"cat", "dog", "bird"}
    assert cli_json(settings, "concepts", "delete", "pets", "bird")["deleted"]

    version = cli_json(settings, "datasets", "snapshot", "pets")
    plain = run_cli(settings, "datasets", "snapshot", "pets", check=True)
    assert plain.stdout.strip() == version["id"]
    shown = cli_json(settings, "datasets", "show", "pets", version["id"])
    assert shown["counts"]["inputs"] == 3
    assert [d["id"] for d in cli_json(settings, "datasets", "list", "pets")] == [version["id"]]

    exported = cli_json(settings, "inputs", "export", "pets", str(tmp_path / "out"), "--format", "jsonl")
    assert exported["exported"] == 3
    assert cli_json(settings, "apps", "delete", "pets")["deleted"]
    assert cli_json(settings, "apps", "list") == []


def test_cli_errors_are_json_and_exit_non_zero(local_settings, tmp_path):
    err = cli_json(local_settings, "apps", "create", "Bad App", code=2)
    assert err["error"]["code"] == "invalid_input" and "Bad App" in err["error"]["message"]
    err = cli_json(local_settings, "inputs", "list", "ghost", code=3)
    assert "app 'ghost' does not exist" in err["error"]["message"]
    cli_json(local_settings, "apps", "create", "a")
    assert cli_json(local_settings, "apps", "create", "a", code=4)["error"]["code"] == "conflict"
    err = cli_json(local_settings, "inputs", "import", "a", str(tmp_path / "nope"), "--format", "imagefolder", code=2)
    assert "does not exist" in err["error"]["message"]
    # nothing readable at all: a failed import, exit 1, report still printed
    (tmp_path / "junk" / "c").mkdir(parents=True)
    (tmp_path / "junk" / "c" / "x.png").write_bytes(b"junk")
    report = cli_json(local_settings, "inputs", "import", "a", str(tmp_path / "junk"), "--format", "imagefolder", code=1)
    assert report["imported"] == 0 and len(report["rejected"]) == 1
    plain = run_cli(local_settings, "apps", "create", "Bad App")
    assert plain.returncode == 2 and "invalid app id" in plain.stderr and plain.stdout == ""


def test_cli_import_voc_real_data(local_settings):
    cli_json(local_settings, "apps", "create", "trees")
    report = cli_json(local_settings, "inputs", "import", "trees", str(deepforest_data_dir()), "--format", "voc")
    assert report["imported"] == 4
    concepts = {c["id"]: c["num_boxes"] for c in cli_json(local_settings, "concepts", "list", "trees")}
    assert concepts["tree"] > 900


def test_cli_usage_errors_exit_2_without_traceback(local_settings):
    proc = run_cli(local_settings, "models", "train", "--workerz", "2", "a", "b")
    assert proc.returncode == 2, proc.stderr
    assert "No such option: --workerz" in proc.stderr and "--workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli(local_settings, "models", "train", "a", "b", "--workers", "two")
    assert proc.returncode == 2 and "Invalid value for '--workers'" in proc.stderr, proc.stderr


def _ray_processes() -> list[int]:
    """Ray's own daemons (raylet, gcs_server) among this process's descendants."""
    parent, name = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        name[pid], parent[pid] = text[text.index("(") + 1:text.rindex(")")], int(text[text.rindex(")") + 2:].split()[1])

    def descends(pid: int) -> bool:
        while pid in parent and pid > 1:
            pid = parent[pid]
            if pid == os.getpid():
                return True
        return False

    return sorted(p for p in name if name[p] in ("raylet", "gcs_server") and descends(p))


def _two_concepts(client, tmp_path: Path, app: str) -> None:
    """An app with 2 cat and 2 dog training images and one of each to test on."""
    for split, per_class in (("train", 2), ("test", 1)):
        for concept in ("cat", "dog"):
            for i in range(per_class):
                path = tmp_path / split / concept / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(imagegen.png_bytes((i, 100 if concept == "cat" else 200, len(split))))
    client.create_app(app)
    for split in ("train", "test"):
        client.import_inputs(app, tmp_path / split, format="imagefolder", split=split)


def test_a_runs_learning_rate_replaces_the_models(local_settings, local_client, tmp_path):
    """A model created with per_128_lrate trains with --param lrate: the run's rate replaces the model's
    (before, planning refused it: "lrate and per_128_lrate were both given"). Planned and recorded, no Ray."""
    _two_concepts(local_client, tmp_path, "a")
    cli_json(local_settings, "models", "create", "a", "m", "--task", "classification", "--template", "ResNext",
             "-p", "image_size=32", "-p", "per_128_lrate=0.1", "-p", "batch_size=2")
    version = local_client.queue_train("a", "m", {"lrate": 0.05})
    assert version["params"]["lrate"] == 0.05 and version["params"]["per_128_lrate"] is None
    version = local_client.queue_train("a", "m", {"batch_size": 4})  # no rate in the run: the model's applies
    assert version["params"]["lrate"] == 0.1 * 4 / 128 and version["params"]["per_128_lrate"] == 0.1
    assert "were both given" in cli_json(local_settings, "models", "train", "a", "m", "-p", "lrate=0.05",
                                         "-p", "per_item_lrate=0.001", code=2)["error"]["message"]


def test_bad_params_are_refused_before_ray_starts(local_settings, local_client, tmp_path, monkeypatch, capsys):
    """A typo in --param (or --space), or a value the data cannot train with, exits 2 naming the parameter
    and the closest valid name, and nothing starts: no Ray, no version, no job. Run in this process, with
    ``ray.init`` made to fail loudly if anything reaches it."""
    import ray

    from deeptrain.cli.main import main

    _two_concepts(local_client, tmp_path, "a")
    local_client.create_model("a", "m", "classification", "ResNext", {"image_size": 32})
    for key, value in local_settings.as_env().items():
        monkeypatch.setenv(key, value)
    ray_was_up, daemons = ray.is_initialized(), _ray_processes()
    started: list[dict] = []

    def no_ray(*args, **kwargs):
        started.append(kwargs)
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # whatever this test session holds
    monkeypatch.setattr(ray, "init", no_ray)
    typo = "unknown parameter 'batchsize' (did you mean 'batch_size'?)"
    space = ["--space", "lrate=loguniform:1e-4:1e-1", "--trials", "2"]
    for argv, message in [
        (["models", "train", "a", "m", "--param", "batchsize=3"], typo),
        (["models", "train", "a", "m", "--param", "batch_size=64"], "batch_size 64 is larger than the 4 training items"),
        (["tune", "a", "m", *space, "--param", "batchsize=3"], typo),
        (["tune", "a", "m", "--space", "lrat=loguniform:1e-4:1e-1", "--trials", "2"],
         "unknown parameter 'lrat' (did you mean 'lrate'?)"),
        (["submit", "train", "a", "m", "--param", "batchsize=3"], typo),
        (["submit", "tune", "a", "m", *space, "--param", "batchsize=3"], typo),
        (["models", "create", "a", "m2", "--task", "classification", "--template", "ResNext", "-p", "batchsize=3"],
         typo),
    ]:
        start = time.perf_counter()
        code = main([*argv, "--json"])
        out = capsys.readouterr().out
        with capsys.disabled():
            print(f"\n`deeptrain {' '.join(argv)}`: exit {code} in {time.perf_counter() - start:.2f}s")
        assert code == 2, out
        assert message in json.loads(out)["error"]["message"]
    monkeypatch.undo()
    assert started == [] and ray.is_initialized() == ray_was_up and _ray_processes() == daemons
    assert local_client.list_versions("a", "m") == [] and local_client.list_tune_runs("a", "m") == []
    assert [m["id"] for m in local_client.list_models("a")] == ["m"]


def _commands(command, path: tuple[str, ...] = ("deeptrain",)):
    """Every command and group under ``command`` (the click tree typer builds), with its command line."""
    yield path, command
    if hasattr(command, "list_commands"):
        for name in command.list_commands(None):
            yield from _commands(command.get_command(None, name), (*path, name))


def test_every_command_and_group_has_a_help_text():
    import typer

    from deeptrain.cli.main import app

    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) > 60  # the walk reached the subcommands
    missing = [" ".join(path) for path, command in commands if not (command.help or "").strip()]
    assert missing == []


def _first_column(text: str) -> str:
    """A rich table's first column, its wrapped cell lines joined."""
    return "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)


def test_tables_wrap_long_ids_and_parameter_names_within_80_columns(local_settings):
    long_id = "a-very-long-application-identifier-that-does-not-fit-in-a-column"
    assert len(long_id) == 64  # the longest id there is
    cli_json(local_settings, "apps", "create", long_id, "--name", "the long one")
    for argv, whole in [(["apps", "list"], [long_id]),
                        (["templates", "show", "detection", "InceptionV2"],
                         ["use_perclass_regression", "detection_score_threshold", "base_gradient_multiplier"])]:
        out = run_cli(local_settings, *argv, env={"COLUMNS": "80"}, check=True).stdout
        assert "…" not in out and max(map(len, out.splitlines())) <= 80, out
        assert all(name in _first_column(out) for name in whole), out


def test_training_bar_prints_every_phase_once_in_order_even_between_polls():
    """A poll that comes after a short phase (warming up: one step) still shows it: the record's ``phases``
    lists every phase of the run, and the bar prints those it has not shown, before the current state."""
    import io

    from rich.console import Console

    from deeptrain.cli.follow import TrainingBar

    out = io.StringIO()
    epoch = {"epoch": 1, "num_epochs": 2, "step": 3, "steps_per_epoch": 5, "loss": 0.5, "lr": 0.1,
             "images_per_s": 10.0, "eta_s": 4.0}
    with TrainingBar(Console(file=out, width=80)) as bar:
        bar.phase("starting the cluster")
        bar.show({"phase": "reading data", "phases": ["reading data"]})
        bar.show({"phase": "reading data", "phases": ["reading data"]})
        bar.show({**epoch, "phases": ["reading data", "warming up"]})  # warming up ended between two polls
        bar.show({**epoch, "epoch": 2, "phases": ["reading data", "warming up"]})
    lines = [line for line in out.getvalue().splitlines() if line.startswith("training: ")]
    assert lines == ["training: starting the cluster", "training: reading data", "training: warming up",
                     "training: epoch 1/2", "training: epoch 2/2"]


def test_json_stdout_carries_only_the_document_when_a_library_prints(monkeypatch, capsys):
    """Ray's driver prints forwarded worker warnings on stdout under load; with --json they go to stderr."""
    from deeptrain.cli import templates as templates_cli
    from deeptrain.cli.main import main

    real = templates_cli.all_templates

    def noisy():
        print("(raylet) WARNING: 8 PYTHON worker processes have been started on node …")
        return real()

    monkeypatch.setattr(templates_cli, "all_templates", noisy)
    assert main(["templates", "list", "--json"]) == 0
    out, err = capsys.readouterr()
    assert {t["template"] for t in json.loads(out)} >= {"ResNext", "InceptionV2"}
    assert "WARNING: 8 PYTHON" in err
