"""``deeptrain submit`` / ``jobs``: what is refused before any job exists, the job's runtime env
(this checkout's code or its own wheel) and environment, worker resources, and a real job on a
single-node cluster with local files and SQLite. tests/test_cluster.py runs jobs on two nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import deeptrain
from deeptrain import __version__
from deeptrain.config import Settings
from deeptrain.errors import ClusterError, InvalidInput
from deeptrain.jobs import submit
from deeptrain.jobs.plan import WorkerResources
from tests.conftest import import_fashion, run_cli
from tests.ray_nodes import free_port, local_ray_cluster

# tiny: where the job runs and what it records is the point, not learning
TINY = {"image_size": 32, "num_epochs": 1, "batch_size": 20, "num_items_per_epoch": 40, "init_epochs": 1,
        "step_epochs": 1}
CLUSTER_SETTINGS = {"DEEPTRAIN_HOME": "/home/me/.deeptrain", "DEEPTRAIN_STORAGE": "s3://bucket/prefix",
                    "DEEPTRAIN_DATABASE_URL": "postgresql+psycopg://u:p@db.internal:5432/deeptrain"}


def test_local_storage_and_sqlite_are_refused_for_a_cluster_with_a_node_elsewhere(local_settings):
    for node_ips in (None, ["127.0.0.2", "192.0.2.7"]):  # not asked; one node on another machine (TEST-NET)
        with pytest.raises(InvalidInput) as err:
            submit.job_env(local_settings, node_ips=node_ips)
        message = str(err.value)
        assert f"DEEPTRAIN_STORAGE is a local path ({local_settings.storage_uri})" in message
        assert "s3://bucket/prefix" in message
        assert f"DEEPTRAIN_DATABASE_URL is a SQLite file ({local_settings.database_url})" in message
        assert "postgresql://" in message
    assert "the cluster has nodes on other machines (192.0.2.7)" in message


def test_local_storage_and_sqlite_are_allowed_when_every_node_is_on_this_machine(local_settings):
    env = submit.job_env(local_settings, node_ips=["127.0.0.2", "127.0.0.3"])
    assert env["DEEPTRAIN_STORAGE"] == local_settings.storage_uri
    assert env["DEEPTRAIN_DATABASE_URL"] == local_settings.database_url


def test_job_env_carries_storage_database_and_aws_settings(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    env = submit.job_env(Settings.from_env(env=CLUSTER_SETTINGS))
    assert env["DEEPTRAIN_STORAGE"] == "s3://bucket/prefix"
    assert env["DEEPTRAIN_DATABASE_URL"] == CLUSTER_SETTINGS["DEEPTRAIN_DATABASE_URL"]
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and env["AWS_SECRET_ACCESS_KEY"] == "secret"
    assert "DEEPTRAIN_HOME" not in env  # a path of this machine: the cluster keeps its own
    # the cluster may reach the storage by another name
    env = submit.job_env(Settings.from_env(env=CLUSTER_SETTINGS), {"AWS_ENDPOINT_URL": "http://minio.storage:9000"})
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    with pytest.raises(InvalidInput, match="DEEPTRAIN_STORAGE is a local path"):
        submit.job_env(Settings.from_env(env=CLUSTER_SETTINGS), {"DEEPTRAIN_STORAGE": "file:///data"})


def test_runtime_env_per_package_mode(tmp_path):
    env = {"DEEPTRAIN_STORAGE": "s3://b/p"}
    assert submit.runtime_env("image", env) == {"env_vars": env}
    assert submit.runtime_env("pip:deeptrain @ https://example.com/deeptrain-0.1.0-py3-none-any.whl", env)["pip"][
        "packages"] == ["deeptrain @ https://example.com/deeptrain-0.1.0-py3-none-any.whl"]
    local = submit.runtime_env("local", env)
    shipped = [Path(p) for p in local["py_modules"]]
    assert Path(deeptrain.__file__).parent in shipped  # the code this process runs
    assert all((p / "__init__.py").exists() for p in shipped)
    assert "__pycache__" in local["excludes"] and local["env_vars"] == env
    with pytest.raises(InvalidInput, match="local, pip, pip:REQUIREMENT, image"):
        submit.runtime_env("conda", env)
    with pytest.raises(InvalidInput, match="needs a requirement after 'pip:'"):
        submit.runtime_env("pip:", env)


def test_pip_package_ships_this_checkouts_own_wheel_not_the_index_one(tmp_path):
    """--package pip never asks an index for `deeptrain` (another project owns that name there): the job's
    working_dir is a folder holding this checkout's wheel, installed from there by path."""
    spec = submit.runtime_env("pip", {}, tmp_path / "wheels")
    upload = Path(spec["working_dir"])
    [requirement] = spec["pip"]["packages"]
    assert requirement.startswith("${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/")
    wheel = upload / requirement.split("}/", 1)[1]
    assert wheel.name == f"deeptrain-{__version__}-py3-none-any.whl" and wheel.is_file()
    assert [p for p in upload.rglob("*") if p.is_file()] == [wheel]  # nothing else is uploaded
    # the wheel installs (without touching an index) into a fresh folder and runs from there
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-c", "import deeptrain, serve.app, deeptrain.cli.main; "
                           "print(deeptrain.__file__)"], env={**os.environ, "PYTHONPATH": str(target)},
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(target)
    assert (target / "deeptrain/store/migrations/script.py.mako").is_file()  # package data


def test_project_wheel_is_built_once_per_content_of_the_sources(tmp_path):
    from deeptrain.jobs.wheel import checkout_root, project_wheel

    root = tmp_path / "checkout"  # a copy: the tests' own checkout may be edited meanwhile
    root.mkdir()
    shutil.copy2(checkout_root() / "pyproject.toml", root)
    for package in ("deeptrain", "serve"):
        shutil.copytree(checkout_root() / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheel = project_wheel(tmp_path / "wheels", root)
    built_at = wheel.stat().st_mtime_ns
    assert project_wheel(tmp_path / "wheels", root) == wheel and wheel.stat().st_mtime_ns == built_at
    (root / "deeptrain" / "__init__.py").write_text((root / "deeptrain" / "__init__.py").read_text() + "\n# changed\n")
    assert project_wheel(tmp_path / "wheels", root) != wheel


def test_wheel_path_changes_with_the_sources(tmp_path):
    """Ray keys a pip environment by its requirement strings: the path differs per content, so a job never
    reuses the environment of older code."""
    from deeptrain.jobs.wheel import source_hash

    root = tmp_path / "checkout"
    (root / "deeptrain").mkdir(parents=True)
    (root / "serve").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'deeptrain'\n")
    (root / "deeptrain" / "__init__.py").write_text("x = 1\n")
    before = source_hash(root)
    (root / "deeptrain" / "__pycache__").mkdir()
    (root / "deeptrain" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert source_hash(root) == before  # byte code is not source
    (root / "deeptrain" / "__init__.py").write_text("x = 2\n")
    assert source_hash(root) != before


def test_pip_package_outside_a_checkout_is_refused_with_what_to_use(tmp_path):
    from deeptrain.jobs.wheel import project_wheel

    with pytest.raises(InvalidInput, match="has no pyproject.toml .* use --package local, or pip:REQUIREMENT"):
        project_wheel(tmp_path / "wheels", root=tmp_path)


def test_dashboard_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    with pytest.raises(InvalidInput, match="--address http://HEAD:8265"):
        submit.dashboard_address(None)
    with pytest.raises(InvalidInput, match="Ray Client address"):
        submit.dashboard_address("ray://head:10001")
    assert submit.dashboard_address("head:8265") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://from-ray-address:8265")
    assert submit.dashboard_address(None) == "http://from-ray-address:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://jobs.example.com/")
    assert submit.dashboard_address(None) == "https://jobs.example.com"
    assert submit.dashboard_address("http://given:8265") == "http://given:8265"


def test_unreachable_cluster_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at {url}"):
        submit.connect(url, timeout_s=10)


def test_worker_resources():
    assert WorkerResources(gpus=None).use_gpu(None) is None  # auto: decided from the cluster
    assert WorkerResources(gpus=0.5).use_gpu(None) is True
    assert WorkerResources(gpus=0).use_gpu(None) is False
    with pytest.raises(InvalidInput, match="contradicts use_gpu=true"):
        WorkerResources(gpus=0).use_gpu(True)
    with pytest.raises(InvalidInput, match="STRICT_SPREAD"):
        WorkerResources(placement="EVERYWHERE")
    with pytest.raises(InvalidInput, match="CPUs per worker must be >= 0"):
        WorkerResources(cpus=-1)


def test_forwarded_command_lines_are_parsed_here():
    from deeptrain.cli.jobs import check_command_line

    check_command_line(["models", "train", "app", "model", "--resume", "v1", "--json"])
    with pytest.raises(InvalidInput, match="No such option: --worker"):
        check_command_line(["models", "train", "app", "model", "--worker", "2"])
    with pytest.raises(InvalidInput, match="'nosuch' is not a deeptrain command"):
        check_command_line(["nosuch", "x"])
    # `submit tune` forwards `deeptrain tune` arguments
    check_command_line(["tune", "app", "model", "--space", "lrate=loguniform:1e-4:1e-1", "--trials", "8",
                        "--max-concurrent", "2", "--scheduler", "asha", "--param", "num_epochs=3", "--json"])
    check_command_line(["tune", "app", "model", "--resume", "run1", "--json"])
    with pytest.raises(InvalidInput, match="No such option: --trial"):
        check_command_line(["tune", "app", "model", "--trial", "8"])


def test_cli_submit_with_local_settings_asks_the_cluster_before_recording_anything(local_settings, local_client):
    """Local paths are fine only if every node of the cluster is on this machine: the cluster is asked
    first, so an unreachable one records nothing (no failed version, no tuning run)."""
    local_client.create_app("app")
    local_client.create_model("app", "m", "classification", "ResNext")
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(local_settings, "submit", "train", "app", "m", "--address", url, "--json")
    assert proc.returncode == 7, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "cluster_error" and f"cannot reach the Ray cluster at {url}" in error["message"]
    assert local_client.list_versions("app", "m") == []
    proc = run_cli(local_settings, "submit", "train", "app", "m", "--placement", "sideways")
    assert proc.returncode == 2 and "placement 'SIDEWAYS' is not one of" in proc.stderr
    proc = run_cli(local_settings, "submit", "tune", "app", "m", "--space", "lrate=loguniform:1e-4:1e-1",
                   "--trials", "2", "--address", url, "--json")
    assert proc.returncode == 7 and "cannot reach the Ray cluster" in json.loads(proc.stdout)["error"]["message"]
    assert local_client.list_tune_runs("app", "m") == []


@pytest.mark.slow
@pytest.mark.ray
def test_submit_train_on_a_single_node_cluster_with_local_storage(local_settings, local_client, fashion_small):
    """A cluster whose only node is this machine sees the local files and the SQLite file: `submit train`
    (default --package local: this checkout's code) trains the version there, recorded in the same files."""
    import_fashion(local_client, fashion_small)
    local_client.create_model("fashion", "clf", "classification", "InceptionBatchNorm", TINY)
    with local_ray_cluster({"PYTHONPATH": None}, head_cpus=2) as cluster:
        proc = run_cli(local_settings, "submit", "train", "fashion", "clf", "--address", cluster.dashboard_url,
                       "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job_id = json.loads(proc.stdout)["job"]["job_id"]
        proc = run_cli(local_settings, "jobs", "wait", job_id, "--address", cluster.dashboard_url, "--timeout",
                       "600", "--json", timeout=660)
        logs = run_cli(local_settings, "jobs", "logs", job_id, "--address", cluster.dashboard_url).stdout
    job = json.loads(proc.stdout)
    assert proc.returncode == 0 and job["status"] == "SUCCEEDED", logs[-3000:]
    assert job["version_status"] == "trained"
    version = local_client.get_version("fashion", "clf", job["version"])
    assert version["status"] == "trained" and version["job_id"] == job_id
    assert local_client.ctx.storage.exists(f"{version['artifacts']}/weights.safetensors")
