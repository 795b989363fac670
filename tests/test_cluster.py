"""deeptrain on a real multi-node Ray cluster: ``deeptrain submit train`` / ``deeptrain jobs``.

A head and a second node started with ``ray start`` on loopback (tests/ray_nodes.py: own
temp dirs and ports, so the session's in-process cluster and anyone's /tmp/ray stay
apart), storage on the real SeaweedFS S3 server, metadata on the real PostgreSQL server.
The nodes' environment has no deeptrain settings and no PYTHONPATH: the job gets the
settings from the submitting side and this checkout's code through ``--package local``.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import sqlalchemy

from deeptrain.config import Settings
from deeptrain.sdk import Client
from tests.conftest import aws_env, import_fashion, run_cli
from tests.ray_nodes import cluster_env, free_port, local_ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.s3, pytest.mark.postgres]

APP = "fashion"
# tiny: placement, storage and faults are the point here, not learning
PARAMS = {"image_size": 32, "num_epochs": 2, "batch_size": 20, "num_items_per_epoch": 40, "lrate": 0.05,
          "init_epochs": 1, "step_epochs": 1}
TEMPLATE = "ResNext"
JOB_TIMEOUT = "600"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (2 CPUs) + node2 (2 CPUs and a resource "node2"); pip offline, like many clusters."""
    root = tmp_path_factory.mktemp("ray")
    env = cluster_env(root, {"DEEPTRAIN_HOME": str(root / "deeptrain-home"), "PIP_NO_INDEX": "1",
                             "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120"})
    env.pop("PYTHONPATH", None)
    with local_ray_cluster(root, env, head_cpus=2) as c:
        c.add_node(2, {"node2": 1}, name="node2")
        yield c


@pytest.fixture(scope="module")
def deployment(s3_server, s3_bucket, pg_server, fashion_small, tmp_path_factory):
    """One app with Fashion-MNIST inputs in S3 + PostgreSQL for the whole module."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    aws = aws_env(s3_server)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in aws.items():
            mp.setenv(k, v)
        settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("home")),
                                          "DEEPTRAIN_STORAGE": f"s3://{s3_bucket}/{name}",
                                          "DEEPTRAIN_DATABASE_URL": pg_server.create_database(name)})
        client = Client(settings)
        import_fashion(client, fashion_small, APP)
        yield settings, client, s3_bucket, name, aws


def _submit(settings, cluster, model: str, *args: str) -> dict:
    proc = run_cli(settings, "submit", "train", APP, model, "--address", cluster.dashboard_url, *args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _wait(settings, cluster, job_id: str):
    proc = run_cli(settings, "jobs", "wait", job_id, "--address", cluster.dashboard_url, "--timeout", JOB_TIMEOUT,
                   "--json")
    return proc.returncode, json.loads(proc.stdout)


def _logs(settings, cluster, job_id: str) -> str:
    return run_cli(settings, "jobs", "logs", job_id, "--address", cluster.dashboard_url).stdout


def _row(settings, version_id: str):
    """The version as PostgreSQL has it (plain SQL, not through deeptrain)."""
    engine = sqlalchemy.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(
                "SELECT status, job_id, metrics, progress, error, artifact_prefix FROM model_versions WHERE id = :v"),
                {"v": version_id}).one()
    finally:
        engine.dispose()


def test_submit_train_places_two_workers_on_two_nodes(cluster, deployment, fashion_small):
    settings, client, bucket, prefix, aws = deployment
    client.create_model(APP, "clf", "classification", TEMPLATE, PARAMS)
    submitted = _submit(settings, cluster, "clf", "--workers", "2", "--placement", "STRICT_SPREAD",
                        "--package", "local")
    job_id, version_id = submitted["job"]["job_id"], submitted["version"]["id"]
    assert submitted["version"]["status"] == "queued" and submitted["version"]["job_id"] == job_id
    assert submitted["job"]["version"] == version_id
    assert submitted["job"]["entrypoint"].endswith(f"models train {APP} clf --resume {version_id} --json")

    rc, job = _wait(settings, cluster, job_id)
    assert rc == 0 and job["status"] == "SUCCEEDED", (job, _logs(settings, cluster, job_id))
    assert job["version_status"] == "trained"

    row = _row(settings, version_id)
    assert row.status == "trained" and row.job_id == job_id
    assert {"top1", "top5", "epoch"} <= set(row.metrics) and row.metrics["epoch"] == 2
    workers = sorted(row.progress["workers"], key=lambda w: w["rank"])
    head, node2 = cluster.nodes
    assert [w["rank"] for w in workers] == [0, 1]
    assert {w["node_id"] for w in workers} == {head.node_id, node2.node_id}  # one worker on each node
    print(f"\njob {job_id}: version {version_id}, workers {[(w['rank'], w['node_id'][:12]) for w in workers]} "
          f"(head {head.node_id[:12]}, node2 {node2.node_id[:12]}), top1 {row.metrics['top1']:.3f}")

    import boto3

    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_REGION"],
                      aws_access_key_id=aws["AWS_ACCESS_KEY_ID"], aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{row.artifact_prefix}/")
    names = {o["Key"].rsplit("/", 1)[-1] for o in listing.get("Contents", [])}
    assert {"weights.safetensors", "manifest.json", "report.json", "plan.json", "state.pt"} <= names, names

    # a separate process predicts with the version straight from S3 + PostgreSQL
    image = next((fashion_small / "test").rglob("*.png"))
    proc = run_cli(settings, "predict", APP, "clf", str(image), "--version", version_id, "--json", check=True)
    (prediction,) = json.loads(proc.stdout)
    scores = {c["id"]: c["value"] for c in prediction["concepts"]}
    assert set(scores) == set(client.get_version(APP, "clf", version_id)["concepts"])
    assert scores == pytest.approx({c["id"]: c["value"] for c in client.predict(
        APP, "clf", [image], version_id=version_id)[0]["concepts"]})

    listed = json.loads(run_cli(settings, "jobs", "list", "--address", cluster.dashboard_url, "--json",
                                check=True).stdout)
    assert any(j["job_id"] == job_id and j["version_status"] == "trained" for j in listed)


def test_unreachable_cluster_fails_the_version(deployment):
    settings, client, *_ = deployment
    client.create_model(APP, "unreachable", "classification", TEMPLATE, PARAMS)
    address = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(settings, "submit", "train", APP, "unreachable", "--address", address, "--json")
    assert proc.returncode == 7, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "cluster_error" and f"cannot reach the Ray cluster at {address}" in error["message"]
    (version,) = client.list_versions(APP, "unreachable")
    assert version["status"] == "failed" and f"cannot reach the Ray cluster at {address}" in version["error"]


@pytest.mark.parametrize("case", ["package-not-installable", "storage-unreachable", "store-unreachable"])
def test_a_job_that_cannot_start_fails_its_version_with_the_reason(case, cluster, deployment):
    """The runtime env cannot provide deeptrain (pip offline, a version that does not exist): the
    entrypoint never runs; the cluster cannot reach the storage: the entrypoint records it; the
    cluster cannot reach the database: nobody on the cluster can record it, ``jobs wait`` does."""
    settings, client, *_ = deployment
    closed = f"127.0.0.1:{free_port()}"
    args, expected, recorded_by_job = {
        "package-not-installable": (["--package", "pip:deeptrain==0.0.0"], "deeptrain==0.0.0", False),
        "storage-unreachable": (["--package", "local", "--env", f"AWS_ENDPOINT_URL=http://{closed}"],
                                f"Failed to connect to {closed}", True),
        "store-unreachable": (["--package", "local", "--env",
                               f"DEEPTRAIN_DATABASE_URL=postgresql+psycopg2://nobody:x@{closed}/nothing"],
                              "Connection refused", False),
    }[case]
    model = case.replace("-", "")[:24]
    client.create_model(APP, model, "classification", TEMPLATE, PARAMS)
    submitted = _submit(settings, cluster, model, *args)
    job_id, version_id = submitted["job"]["job_id"], submitted["version"]["id"]
    rc, job = _wait(settings, cluster, job_id)
    assert rc == 1 and job["status"] == "FAILED", job
    version = client.get_version(APP, model, version_id)
    assert version["status"] == "failed" and expected in version["error"], version["error"]
    # who recorded it: the job's own entrypoint, or the reconciliation with the Ray job's status
    assert version["error"].startswith(f"Ray job {job_id} failed") != recorded_by_job
    print(f"\n{case}: job {job_id} -> version {version_id} failed: {version['error'][:300]!r}")


def test_stopping_a_job_cancels_its_version(cluster, deployment):
    settings, client, *_ = deployment
    client.create_model(APP, "stopped", "classification", TEMPLATE, PARAMS)
    submitted = _submit(settings, cluster, "stopped", "--package", "local")
    job_id, version_id = submitted["job"]["job_id"], submitted["version"]["id"]
    proc = run_cli(settings, "jobs", "stop", job_id, "--address", cluster.dashboard_url, "--json", check=True)
    job = json.loads(proc.stdout)
    assert job["status"] == "STOPPED" and job["version_status"] == "cancelled"
    version = client.get_version(APP, "stopped", version_id)
    assert version["status"] == "cancelled" and version["error"] == f"Ray job {job_id} was stopped"


def test_losing_a_node_mid_training_recovers_from_a_checkpoint(cluster, deployment):
    """node2 dies while training (SIGKILL to all its processes); Ray Train's FailureConfig restarts
    the worker group, which waits for two nodes, and continues from the last checkpoint once a
    node2 is back."""
    settings, client, *_ = deployment
    client.create_model(APP, "faulty", "classification", TEMPLATE, {**PARAMS, "num_epochs": 4})
    submitted = _submit(settings, cluster, "faulty", "--workers", "2", "--placement", "STRICT_SPREAD",
                        "--package", "local")
    job_id, version_id = submitted["job"]["job_id"], submitted["version"]["id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        progress = client.get_version(APP, "faulty", version_id).get("progress") or {}
        if progress.get("epoch", 0) >= 2:  # epoch 1's checkpoint is in S3
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"job {job_id} did not reach epoch 2:\n{_logs(settings, cluster, job_id)}")
    head, lost = cluster.nodes
    assert {w["node_id"] for w in progress["workers"]} == {head.node_id, lost.node_id}
    cluster.kill_node(lost)
    killed_at = progress["epoch"]
    time.sleep(5)  # the worker group fails and waits for a second node
    assert client.get_version(APP, "faulty", version_id)["status"] == "training"
    back = cluster.add_node(2, {"node2": 1}, name="node2")

    rc, job = _wait(settings, cluster, job_id)
    assert rc == 0 and job["status"] == "SUCCEEDED", (job, _logs(settings, cluster, job_id))
    version = client.get_version(APP, "faulty", version_id)
    assert version["status"] == "trained" and version["job_id"] == job_id
    progress = version["progress"]
    assert [h["epoch"] for h in progress["history"]] == [1, 2, 3, 4]
    (restored_at,) = progress["restores"]  # one restart, from a checkpoint, not from scratch
    assert 1 <= restored_at <= killed_at
    assert {w["node_id"] for w in progress["workers"]} == {head.node_id, back.node_id} and back.node_id != lost.node_id
    print(f"\nfault: job {job_id} version {version_id}: node2 {lost.node_id[:12]} killed in epoch {killed_at}, "
          f"restored at epoch {restored_at} on node2 {back.node_id[:12]}; history epochs "
          f"{[h['epoch'] for h in progress['history']]}")
