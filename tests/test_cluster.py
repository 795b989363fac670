"""deeptrain on a real multi-node Ray cluster: ``deeptrain submit train`` / ``deeptrain jobs``.

A head and a second node started with ``ray start`` on loopback (tests/ray_nodes.py: own
temp dirs and ports, so the session's in-process cluster and anyone's /tmp/ray stay
apart), storage on the real SeaweedFS S3 server, metadata on the real PostgreSQL server.
The nodes' environment has no deeptrain settings and no PYTHONPATH: the job gets the
settings from the submitting side and this checkout's code through ``--package local``.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy

import deeptrain
from deeptrain.config import Settings
from deeptrain.sdk import Client
from tests.conftest import aws_env, import_fashion, run_cli, wait_for_checkpoint
from tests.ray_nodes import free_port, local_ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.s3, pytest.mark.postgres]

APP = "fashion"
# tiny: placement, storage and faults are the point here, not learning
PARAMS = {"image_size": 32, "num_epochs": 2, "batch_size": 20, "num_items_per_epoch": 40, "lrate": 0.05,
          "init_epochs": 1, "step_epochs": 1}
TEMPLATE = "InceptionBatchNorm"
JOB_TIMEOUT = 1200  # seconds; a 2-trial search as a job took over 600 s on a slow 2-core machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (2 CPUs) + node2 (2 CPUs and a resource "node2"), without this checkout on PYTHONPATH."""
    # Ray Data's no-progress limit as deeptrain sets it for users (deeptrain.cluster.ensure_ray), not the 120 s the
    # in-process test cluster uses: with two trials' workers, data tasks and fresh runtime-env workers on these
    # 4 CPUs of a loaded 2-core machine, a trial's first ListFiles task was seen waiting past 120 s (its trial
    # failed with ExecutionTimeoutError in a full run; alone, the module inherited 300 and passed)
    env = {"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("cluster-home")), "PYTHONPATH": None,
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120", "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "300"}
    with local_ray_cluster(env, head_cpus=2) as c:
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


def _submit(settings, cluster, model: str, *args: str, **run_kwargs) -> dict:
    proc = run_cli(settings, "submit", "train", APP, model, "--address", cluster.dashboard_url, *args, "--json",
                   **run_kwargs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _wait(settings, cluster, job_id: str):
    proc = run_cli(settings, "jobs", "wait", job_id, "--address", cluster.dashboard_url, "--timeout", str(JOB_TIMEOUT),
                   "--json", timeout=JOB_TIMEOUT + 60)
    return proc.returncode, json.loads(proc.stdout)


def _logs(settings, cluster, job_id: str) -> str:
    return run_cli(settings, "jobs", "logs", job_id, "--address", cluster.dashboard_url).stdout


def _row(settings, version_id: str):
    """The version as PostgreSQL has it (plain SQL, not through deeptrain)."""
    from deeptrain.store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(
                "SELECT status, job_id, metrics, progress, error, artifact_prefix FROM model_versions WHERE id = :v"),
                {"v": version_id}).one()
    finally:
        engine.dispose()


def test_submit_train_on_two_nodes_survives_losing_one(cluster, deployment, fashion_small):
    """Two workers, one per node (STRICT_SPREAD). Mid-training node2 dies (SIGKILL to all its
    processes): Ray Train's FailureConfig restarts the worker group, which waits for two nodes,
    and continues from the last checkpoint once a node2 is back. Then the version is in
    PostgreSQL and S3, and another process predicts with it."""
    settings, client, bucket, prefix, aws = deployment
    started = time.monotonic()
    # epochs of 10 steps: the node must die while epoch 2 is still training (the decoded input is cached, so an
    # epoch of 2 steps was over in about a second)
    client.create_model(APP, "clf", "classification", TEMPLATE, {**PARAMS, "num_epochs": 3, "num_items_per_epoch": 200})
    submitted = _submit(settings, cluster, "clf", "--workers", "2", "--placement", "STRICT_SPREAD",
                        "--package", "local")
    job_id, version_id = submitted["job"]["job_id"], submitted["version"]["id"]
    assert submitted["version"]["status"] == "queued" and submitted["version"]["job_id"] == job_id
    assert submitted["job"]["version"] == version_id
    assert submitted["job"]["entrypoint"].endswith(f"models train {APP} clf --resume {version_id} --json")
    timeline = {"submitted": time.monotonic() - started}

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        progress = client.get_version(APP, "clf", version_id).get("progress") or {}
        if progress.get("epoch", 0) >= 2:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"job {job_id} did not reach epoch 2:\n{_logs(settings, cluster, job_id)}")
    wait_for_checkpoint(client, APP, "clf", version_id)  # epoch 1's, in S3
    progress = client.get_version(APP, "clf", version_id)["progress"]
    head, lost = cluster.nodes
    placed = sorted(progress["workers"], key=lambda w: w["rank"])
    assert [w["rank"] for w in placed] == [0, 1]
    assert {w["node_id"] for w in placed} == {head.node_id, lost.node_id}  # one worker on each node
    killed_at = progress["epoch"]
    timeline["epoch 2"] = time.monotonic() - started
    cluster.kill_node(lost)
    time.sleep(3)  # the worker group fails and waits for a second node
    assert client.get_version(APP, "clf", version_id)["status"] == "training"
    back = cluster.add_node(2, {"node2": 1}, name="node2")
    timeline["node2 back"] = time.monotonic() - started

    rc, job = _wait(settings, cluster, job_id)
    timeline["job done"] = time.monotonic() - started
    assert rc == 0 and job["status"] == "SUCCEEDED", (job, _logs(settings, cluster, job_id))
    assert job["version_status"] == "trained"

    row = _row(settings, version_id)  # PostgreSQL, read with plain SQL
    assert row.status == "trained" and row.job_id == job_id
    assert {"top1", "top5", "epoch"} <= set(row.metrics) and row.metrics["epoch"] == 3
    assert [h["epoch"] for h in row.progress["history"]] == [1, 2, 3]
    restores = row.progress["restores"]  # restarts, each from a checkpoint, not from scratch
    assert restores and all(1 <= epoch <= killed_at for epoch in restores), restores
    workers = sorted(row.progress["workers"], key=lambda w: w["rank"])
    assert {w["node_id"] for w in workers} == {head.node_id, back.node_id} and back.node_id != lost.node_id

    import boto3

    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_REGION"],
                      aws_access_key_id=aws["AWS_ACCESS_KEY_ID"], aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{row.artifact_prefix}/")
    names = {o["Key"].rsplit("/", 1)[-1] for o in listing.get("Contents", [])}
    assert {"weights.safetensors", "manifest.json", "report.json", "plan.json"} <= names, names
    assert "state.pt" not in names, names  # a trained version keeps its weights, not its checkpoints (retention 0)

    # a separate process predicts with the version, straight from S3 + PostgreSQL
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
    print(f"\njob {job_id}: version {version_id}; workers before {[(w['rank'], w['node_id'][:12]) for w in placed]}, "
          f"after {[(w['rank'], w['node_id'][:12]) for w in workers]} (head {head.node_id[:12]}, node2 "
          f"{lost.node_id[:12]} killed in epoch {killed_at}, node2 {back.node_id[:12]} back); restores {restores}; "
          f"top1 {row.metrics['top1']:.3f}; s (since start) {({k: round(v) for k, v in timeline.items()})}")


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


@pytest.mark.parametrize("case", ["import-fails", "storage-unreachable", "store-unreachable"])
def test_a_job_that_cannot_start_fails_its_version_with_the_reason(case, cluster, deployment, tmp_path):
    """The shipped code imports a module the cluster lacks, or the cluster cannot reach the storage:
    the job's entrypoint records it; the cluster cannot reach the database: nobody on the cluster
    can record it, ``jobs wait`` does, from the Ray job's status and log."""
    settings, client, *_ = deployment
    closed = f"127.0.0.1:{free_port()}"
    run_kwargs = {}
    if case == "import-fails":  # this checkout's code, but the training loop needs a package the cluster lacks
        shutil.copytree(Path(deeptrain.__file__).parent, tmp_path / "deeptrain",
                        ignore=shutil.ignore_patterns("__pycache__"))
        loop = tmp_path / "deeptrain" / "training" / "loop.py"
        loop.write_text(loop.read_text() + "\nimport deeptrain_dependency_the_cluster_lacks  # noqa\n")
        run_kwargs = {"env": {"PYTHONPATH": str(tmp_path)}, "cwd": tmp_path}  # not the checkout (python -m: cwd first)
    args, expected, recorded_by_job = {
        "import-fails": (["--package", "local"], "No module named 'deeptrain_dependency_the_cluster_lacks'", True),
        "storage-unreachable": (["--package", "local", "--env", f"AWS_ENDPOINT_URL=http://{closed}"],
                                f"Failed to connect to {closed}", True),
        "store-unreachable": (["--package", "local", "--env",
                               f"DEEPTRAIN_DATABASE_URL=postgresql+psycopg://nobody:x@{closed}/nothing"],
                              "Connection refused", False),
    }[case]
    model = case.replace("-", "")[:24]
    client.create_model(APP, model, "classification", TEMPLATE, PARAMS)
    submitted = _submit(settings, cluster, model, *args, **run_kwargs)
    job_id, version_id = submitted["job"]["job_id"], submitted["version"]["id"]
    rc, job = _wait(settings, cluster, job_id)
    assert rc == 1 and job["status"] == "FAILED", job
    version = client.get_version(APP, model, version_id)
    assert version["status"] == "failed" and expected in version["error"], version["error"]
    # who recorded it: the job's own entrypoint, or the reconciliation with the Ray job's status
    assert version["error"].startswith(f"Ray job {job_id} failed") != recorded_by_job
    if not recorded_by_job:  # the whole log, streamed until the job's end
        followed = run_cli(settings, "jobs", "logs", job_id, "--follow", "--address", cluster.dashboard_url, check=True)
        assert expected in followed.stdout and "cannot open the metadata database" in followed.stdout
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


@pytest.mark.timeout(JOB_TIMEOUT + 300)
def test_submit_tune_runs_the_search_as_a_job(cluster, deployment):
    """``deeptrain submit tune``: the search runs on the cluster as one Ray Job, each trial a version that
    records the job; the run, its trials and its report land in PostgreSQL and S3."""
    settings, client, *_ = deployment
    client.create_model(APP, "tuned", "classification", TEMPLATE, PARAMS)
    cluster.wait_until_idle()  # the earlier tests' worker groups are gone: both trials' can start
    proc = run_cli(settings, "submit", "tune", "--address", cluster.dashboard_url, "--package", "local", "--json",
                   APP, "tuned", "--space", "lrate=loguniform:1e-3:1e-1", "--trials", "2", "--scheduler", "fifo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = json.loads(proc.stdout)
    job_id = job["job_id"]
    assert (job["command"], job["app"], job["model"]) == ("tune", APP, "tuned")
    pinned = job["entrypoint"].split("--dataset-version ")[1].split()[0]  # the data as it was at submission
    assert pinned in {d["id"] for d in client.list_datasets(APP)}

    rc, done = _wait(settings, cluster, job_id)
    assert rc == 0 and done["status"] == "SUCCEEDED", (done, _logs(settings, cluster, job_id))
    assert sorted(v["status"] for v in done["versions"]) == ["trained", "trained"], (
        [(v["version"], v["status"], v.get("error")) for v in done["versions"]],
        _logs(settings, cluster, job_id))

    [run] = client.list_tune_runs(APP, "tuned")
    run = client.get_tune_run(APP, "tuned", run["id"])
    assert run["status"] == "finished" and len(run["trials"]) == 2 and run["dataset_version_id"] == pinned
    lrates = {t["params"]["lrate"] for t in run["trials"]}
    assert len(lrates) == 2 and all(1e-3 <= lr <= 1e-1 for lr in lrates)  # sampled per trial
    for t in run["trials"]:
        version = client.get_version(APP, "tuned", t["version_id"])
        assert version["job_id"] == job_id and version["tune_run"] == run["id"]
        assert version["params"]["lrate"] == t["params"]["lrate"]
        # the search compared validation figures; the test figure is reported beside them
        assert version["metrics"]["validation"]["top1"] == t["metric"] and version["metrics"]["top1"] == t["test_metric"]
    keys = set(client.ctx.storage.list(run["artifacts"]))
    assert any(k.endswith("/tuner.pkl") for k in keys) and any(k.endswith("tune_report.json") for k in keys), keys

    shown = json.loads(run_cli(settings, "tune-runs", "show", APP, "tuned", run["id"], "--json", check=True).stdout)
    assert shown["best"]["version_id"] == run["best"]["version_id"]
    print(f"\ntune job {job_id}: run {run['id']}, trials "
          f"{[(t['params']['lrate'], round(t['metric'], 3)) for t in run['trials']]}, best {run['best']['version_id']}")


def test_submit_tune_refuses_a_bad_search_before_any_job(deployment):
    """Checked on the submitting side: no job, no run, no snapshot (the address is never contacted)."""
    settings, client, *_ = deployment
    client.create_model(APP, "badtune", "classification", TEMPLATE, PARAMS)
    datasets = client.list_datasets(APP)
    address = f"http://127.0.0.1:{free_port()}"
    for args, message in [
        (["--space", "lrat=loguniform:1e-4:1e-1", "--trials", "2"], "did you mean 'lrate'"),
        (["--space", "lrate=uniform:-1:1", "--trials", "2"], "lrate"),
        (["--space", "lrate=loguniform:1e-4:1e-1", "--trials", "2", "--metric", "map"], "metric 'map'"),
        (["--space", "lrate=loguniform:1e-4:1e-1"], "--trials is required"),
        (["--resume", "nope", "--trials", "2"], "do not give --space or --trials"),
    ]:
        proc = run_cli(settings, "submit", "tune", "--address", address, "--json", APP, "badtune", *args)
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        assert message in json.loads(proc.stdout)["error"]["message"], (args, proc.stdout)
    assert client.list_tune_runs(APP, "badtune") == [] and client.list_datasets(APP) == datasets
