"""Shared fixtures: real backends (local files + SQLite, SeaweedFS S3 + PostgreSQL)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# hermetic weight caches: the templates' default init_from (imagenet-if-available) must not pick up whatever a
# developer's ~/.cache/huggingface or ~/.cache/torch holds (tests that need a cache fabricate one)
_CACHES = tempfile.mkdtemp(prefix="deeptrain-test-caches-")
atexit.register(shutil.rmtree, _CACHES, ignore_errors=True)
os.environ["HF_HOME"], os.environ["TORCH_HOME"] = f"{_CACHES}/huggingface", f"{_CACHES}/torch"
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(_var, None)

from deeptrain.config import Settings  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402

BACKENDS = ["local", "s3"]  # local: file:// + SQLite; s3: SeaweedFS + PostgreSQL


@pytest.fixture(scope="session")
def s3_server():
    from tests.servers import seaweedfs_s3

    with seaweedfs_s3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_bucket(s3_server):
    return s3_server.bucket("deeptrain-tests")


@pytest.fixture(scope="session")
def pg_server():
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server


def aws_env(s3_server) -> dict[str, str]:
    """The standard AWS variables that reach the test S3 server."""
    return {
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
    }


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    env = aws_env(s3_server)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def make_settings(backend: str, tmp_path: Path, request) -> Settings:
    home = tmp_path / "home"
    if backend == "local":
        return Settings.from_env(env={"DEEPTRAIN_HOME": str(home)})
    request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("s3_bucket")
    pg = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    return Settings.from_env(env={
        "DEEPTRAIN_HOME": str(home),
        "DEEPTRAIN_STORAGE": f"s3://{bucket}/{name}",
        "DEEPTRAIN_DATABASE_URL": pg.create_database(name),
    })


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path) -> Settings:
    """Settings for a fresh, empty deployment on each backend."""
    return make_settings(request.param, tmp_path, request)


@pytest.fixture
def local_settings(request, tmp_path) -> Settings:
    return make_settings("local", tmp_path, request)


@pytest.fixture
def client(settings) -> Client:
    return Client(settings)


@pytest.fixture
def local_client(local_settings) -> Client:
    return Client(local_settings)


def run_cli(settings: Settings, *args: str, check: bool = False, env: dict | None = None, timeout: float = 600,
            **kwargs) -> subprocess.CompletedProcess:
    """Run the real ``deeptrain`` command in a subprocess with these settings."""
    full_env = {**os.environ, **settings.as_env(), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "deeptrain.cli.main", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"deeptrain {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for_checkpoint(client: Client, app: str, model: str, version_id: str, timeout: float = 600) -> None:
    """Wait until Ray Train's controller has registered a checkpoint of the version's run: listed in the
    snapshot it keeps in storage, which is what a restarted worker group or ``--resume`` continues from.
    A worker already training the next epoch does not mean that yet: the controller collects a report at
    its next poll of the workers, and a run killed before that starts again from scratch."""
    import json
    import time

    from deeptrain.errors import NotFound

    key = f"{client.get_version(app, model, version_id)['artifacts']}/ray/checkpoint_manager_snapshot.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads(client.ctx.storage.get_bytes(key))["checkpoint_results"]:
                return
        except (NotFound, json.JSONDecodeError):  # not written yet, or caught mid-write
            pass
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint of version {version_id} registered in {timeout}s")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session.

    With the dashboard: Ray Train's placement-group cleaner asks the state API whether a
    run's controller is alive, and removes the workers' placement group of a run whose
    controller was killed (a trial stopped early by Tune). Where it misses one (seen on a
    slow CI machine), the tuning driver removes it (``deeptrain.jobs.placement``); otherwise
    the group would hold its CPUs until the session ends.
    """
    import ray

    _start_test_ray()
    yield ray
    ray.shutdown()


def _start_test_ray() -> None:
    import ray

    os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "120")
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR", log_to_driver=False)


@contextlib.contextmanager
def ray_restarted_with(env: dict[str, str]) -> Iterator[None]:
    """The session's Ray restarted with ``env`` in its processes' environment (switches Ray's components read
    when they start), and restarted as it was after. Nothing of the session's Ray may be in use around it."""
    import ray

    patch = pytest.MonkeyPatch()
    ray.shutdown()
    for name, value in env.items():
        patch.setenv(name, value)
    try:
        _start_test_ray()
        yield
    finally:
        ray.shutdown()
        patch.undo()
        _start_test_ray()


@pytest.fixture(scope="session")
def fashion_small(tmp_path_factory) -> Path:
    """200 Fashion-MNIST training and 50 test images as image folders."""
    from deeptrain.sample_data import write_fashion_mnist_folder

    root = tmp_path_factory.mktemp("fashion-small")
    write_fashion_mnist_folder(root / "train", "train", per_class=20)
    write_fashion_mnist_folder(root / "test", "test", per_class=5)
    return root


def import_fashion(client: Client, root: Path, app: str = "fashion") -> None:
    client.create_app(app)
    client.import_inputs(app, root / "train", format="imagefolder", split="train")
    client.import_inputs(app, root / "test", format="imagefolder", split="test")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on its test item (``item.rep_call`` …), for fixtures that act on a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
