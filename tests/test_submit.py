"""``deeptrain submit`` / ``jobs`` without a cluster: what is refused before any job exists,
the job's runtime env and environment, worker resources. tests/test_cluster.py runs real jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deeptrain
from deeptrain import __version__
from deeptrain.config import Settings
from deeptrain.errors import ClusterError, InvalidInput
from deeptrain.jobs import submit
from deeptrain.jobs.plan import WorkerResources
from tests.conftest import run_cli
from tests.ray_nodes import free_port

CLUSTER_SETTINGS = {"DEEPTRAIN_HOME": "/home/me/.deeptrain", "DEEPTRAIN_STORAGE": "s3://bucket/prefix",
                    "DEEPTRAIN_DATABASE_URL": "postgresql+psycopg2://u:p@db.internal:5432/deeptrain"}


def test_local_storage_and_sqlite_are_refused_for_a_cluster(local_settings):
    with pytest.raises(InvalidInput) as err:
        submit.job_env(local_settings)
    message = str(err.value)
    assert f"DEEPTRAIN_STORAGE is a local path ({local_settings.storage_uri})" in message
    assert "s3://bucket/prefix" in message
    assert f"DEEPTRAIN_DATABASE_URL is a SQLite file ({local_settings.database_url})" in message
    assert "postgresql://" in message


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


def test_runtime_env_per_package_mode():
    env = {"DEEPTRAIN_STORAGE": "s3://b/p"}
    assert submit.runtime_env("image", env) == {"env_vars": env}
    assert submit.runtime_env("pip", env)["pip"]["packages"] == [f"deeptrain=={__version__}"]
    assert submit.runtime_env("pip:deeptrain @ https://example.com/deeptrain-0.1.0-py3-none-any.whl", env)["pip"][
        "packages"] == ["deeptrain @ https://example.com/deeptrain-0.1.0-py3-none-any.whl"]
    local = submit.runtime_env("local", env)
    shipped = [Path(p) for p in local["py_modules"]]
    assert Path(deeptrain.__file__).parent in shipped  # the code this process runs
    assert all((p / "__init__.py").exists() for p in shipped)
    assert "__pycache__" in local["excludes"] and local["env_vars"] == env
    with pytest.raises(InvalidInput, match="image, pip, pip:REQUIREMENT, local"):
        submit.runtime_env("conda", env)


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


def test_cli_submit_refuses_local_settings_before_recording_anything(local_settings, local_client):
    local_client.create_app("app")
    local_client.create_model("app", "m", "classification", "ResNext")
    proc = run_cli(local_settings, "submit", "train", "app", "m", "--address", "http://127.0.0.1:1", "--json")
    assert proc.returncode == 2, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "invalid_input" and "DEEPTRAIN_STORAGE is a local path" in error["message"]
    assert local_client.list_versions("app", "m") == []
    proc = run_cli(local_settings, "submit", "train", "app", "m", "--placement", "sideways")
    assert proc.returncode == 2 and "placement 'SIDEWAYS' is not one of" in proc.stderr
    proc = run_cli(local_settings, "submit", "tune", "app", "m", "--space", "lrate=loguniform:1e-4:1e-1",
                   "--trials", "2", "--address", "http://127.0.0.1:1", "--json")
    assert proc.returncode == 2 and "DEEPTRAIN_STORAGE is a local path" in json.loads(proc.stdout)["error"]["message"]
    assert local_client.list_tune_runs("app", "m") == []
