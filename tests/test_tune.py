"""Hyperparameter search with Ray Tune over Ray Train (real local Ray cluster, real Fashion-MNIST images).

Fast: the search-space syntax and its validation against the hyperparameter schema, and
every bad request refused before any trial starts (no version, no run recorded).
Slow: an 8-trial ASHA search on Fashion-MNIST, a killed ``deeptrain tune`` resumed
without re-running finished trials, the same on SeaweedFS S3 + PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray import tune

from deeptrain.errors import InvalidInput
from deeptrain.params import ParamError
from deeptrain.templates import get_template
from deeptrain.training.local import LocalHost
from deeptrain.tune_space import check_space, describe_domain, parse_space, parse_space_item
from tests.conftest import import_fashion, run_cli

RESNEXT = get_template("classification", "ResNext")


# --- the search space ----------------------------------------------------------------------


@pytest.mark.parametrize("item, kind, values", [
    ("lrate=loguniform:1e-4:1e-1", "loguniform:0.0001:0.1", [1e-4, 1e-1]),
    ("base_gradient_multiplier=uniform:0:0.01", "uniform:0:0.01", [0.0, 0.01]),
    ("batch_size=choice:32,64,128", "choice:32,64,128", [32, 64, 128]),
    ("image_size=qrandint:32:64:16", "qrandint:32:64:16", [32, 48, 64]),
    ("num_epochs=randint:2:5", "randint:2:5", [2, 3, 4]),
    ("logreg=choice:true,false", "choice:True,False", [True, False]),
])
def test_space_syntax_round_trips_and_checks_every_value(item, kind, values):
    name, domain = parse_space_item(item)
    assert describe_domain(domain) == kind
    assert check_space(RESNEXT, {}, {name: domain}, 2) == {name: values}
    sampled = domain.sample()
    assert type(sampled) is type(values[0]) and check_space(RESNEXT, {}, {name: tune.choice([sampled])}, 2)


@pytest.mark.parametrize("items, message", [
    (["lrat=loguniform:1e-4:1e-1"], "unknown parameter 'lrat' (did you mean 'lrate'?)"),
    (["lrate=gaussian:0:1"], "unknown search space kind 'gaussian'"),
    (["lrate=uniform:0.1"], "uniform takes 2 numbers"),
    (["lrate=loguniform:1e-1:1e-4"], "empty range"),
    (["lrate=loguniform:0:0.1"], "invalid lrate='loguniform:0:0.1'"),
    (["lrate=uniform:0:0.1"], "lrate=uniform:0:0.1 can sample 0.0, which is invalid: invalid lrate=0.0: must be > 0"),
    (["batch_size=choice:32,8192"], "can sample 8192, which is invalid: invalid batch_size=8192: must be <= 4096"),
    (["batch_size=randint:32:40"], "can sample 33, which is invalid: invalid batch_size=33: batch_size 33 is not "
                                   "divisible by 2 workers"),
    (["batch_size=uniform:32:64"], "batch_size is an integer parameter"),
    (["image_size=qrandint:16:64:16"], "can sample 16, which is invalid: invalid image_size=16: must be >= 32"),
    (["detection_score_threshold=uniform:0.5:1.5"], "can sample 1.5"),
    (["num_workers=choice:1,2"], "invalid num_workers='choice:1,2': cannot be tuned: set it with --workers"),
    (["lrate=loguniform:1e-4:1e-1", "lrate=uniform:0.1:0.2"], "given twice"),
    (["lrate=loguniform:1e-4:1e-1", "per_item_lrate=loguniform:1e-5:1e-4"], "the search space's parameters conflict"),
    (["batch_size=choice:abc"], "invalid batch_size='abc': expected int"),
    (["lrate"], "expected name=kind:args"),
])
def test_bad_space_is_refused_with_the_reason(items, message):
    with pytest.raises(ParamError) as info:
        check_space(RESNEXT, {}, parse_space(items), 2)
    assert message in str(info.value)


def test_space_values_are_checked_with_the_fixed_params():
    with pytest.raises(ParamError, match="per_item_lrate and per_128_lrate were both given"):
        check_space(RESNEXT, {"per_item_lrate": 1e-4}, parse_space(["per_128_lrate=uniform:0.1:0.2"]), 1)
    with pytest.raises(ParamError, match="expected a ray.tune search space"):
        check_space(RESNEXT, {}, {"lrate": 0.1}, 1)


def test_loop_reports_which_epoch_its_metrics_are_from():
    """Tune's scheduler must compare fresh evaluations: every report says which epoch was evaluated."""
    from tests.test_training_loop import _setup
    from deeptrain.training.loop import run_training

    spec, data = _setup(3, test_freq=2)
    host = LocalHost()
    run_training(spec, data, host)
    assert [(r["epoch"], r.get("eval_epoch")) for r in host.reports] == [(1, None), (2, 2), (3, 3)]
    assert host.checkpoints[-1]["params"] == spec.params.model_dump(mode="json")  # the worker's own record of what it trained with


# --- bad requests, refused before any trial --------------------------------------------------


def _assert_nothing_started(c):
    assert c.list_versions("fashion", "clf") == [] and c.list_tune_runs("fashion", "clf") == []


def test_bad_tuning_requests_are_refused_before_any_trial(local_client, ray_cluster, fashion_small):
    c = local_client
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32, "num_epochs": 2})
    space = {"lrate": tune.loguniform(1e-4, 1e-1)}
    cases = [
        (dict(space={"lrat": tune.loguniform(1e-4, 1e-1)}), "unknown parameter 'lrat' (did you mean 'lrate'?)"),
        (dict(space={"lrate": tune.uniform(-1.0, 0.1)}), "can sample -1.0, which is invalid: invalid lrate=-1.0"),
        (dict(space={"batch_size": tune.choice([20, 400])}), "can sample 400, which cannot train: batch_size 400 is "
                                                             "larger than the 180 training items"),
        (dict(space=space, metric="map"), "metric 'map' is not one that classification reports; use one of top1"),
        (dict(space=space, max_concurrent=3), "--max-concurrent 3 does not fit: a trial takes 1 CPUs (1 worker(s) x "
                                              "0.5 + 0.5 for its Ray Data tasks), the workers of all trials leave at least 1 CPU"),
        (dict(space=space, workers=4), "not even one trial fits"),
        (dict(space=space, scheduler="pbt"), "unknown scheduler 'pbt'"),
        (dict(space=space, grace_period=2), "--grace-period 2 must be at least 1 and below the number of epochs (2)"),
        (dict(space=space, params={"lrate": 0.1}), "lrate given both in the search space and as a fixed --param"),
        (dict(space={}), "the search space is empty"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput) as info:
            c.tune("fashion", "clf", kwargs.pop("space"), trials=2, **kwargs)
        assert message in str(info.value), (kwargs, str(info.value))
    _assert_nothing_started(c)


def test_cli_bad_tuning_requests_exit_2_with_json(local_settings, fashion_small):
    from deeptrain.sdk import Client

    c = Client(local_settings)
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32})
    for args, message in [
        (["--space", "lrat=loguniform:1e-4:1e-1", "--trials", "2"], "did you mean 'lrate'"),
        (["--space", "batch_size=choice:32,99999", "--trials", "2"], "must be <= 4096"),
        (["--space", "lrate=loguniform:1e-4:1e-1"], "--trials is required"),
        (["--space", "lrate=loguniform:1e-4:1e-1", "--trials", "2", "--metric", "recall@1"],
         "metric 'recall@1' is not one that classification reports"),
        (["--resume", "nope"], "tuning run 'nope' of model 'clf' does not exist"),
        (["--resume", "nope", "--trials", "2"], "do not give --space or --trials"),
    ]:
        proc = run_cli(local_settings, "tune", "fashion", "clf", *args, "--json")
        assert proc.returncode in (2, 3), proc.stdout + proc.stderr
        assert message in json.loads(proc.stdout)["error"]["message"]
    _assert_nothing_started(c)


# --- the scheduler: ASHA by default, FIFO where the default cannot apply ----------------------


@pytest.mark.parametrize("requested, test_freq, max_t, name, note", [
    (None, 1, 3, "asha", None),
    (None, 1, 1, "fifo", "ASHA needs more epochs (1) than its grace period (1); ran FIFO"),
    (None, 2, 2, "fifo", "ASHA needs more epochs (2) than its grace period (2); ran FIFO"),
    ("fifo", 1, 1, "fifo", None),
    ("asha", 1, 2, "asha", None),
])
def test_default_scheduler_is_asha_or_fifo_with_a_note(requested, test_freq, max_t, name, note):
    from deeptrain.jobs.tune_scheduler import choose_scheduler

    spec = choose_scheduler(requested, None, 2, test_freq=test_freq, max_t=max_t)
    assert (spec["name"], spec.get("note"), spec["max_t"], spec["grace_period"]) == (name, note, max_t, test_freq)


@pytest.mark.parametrize("requested, grace_period", [("asha", None), (None, 1), ("asha", 3)])
def test_asha_asked_for_that_cannot_apply_is_refused(requested, grace_period):
    from deeptrain.jobs.tune_scheduler import choose_scheduler

    with pytest.raises(InvalidInput, match="must be at least 1 and below the number of epochs \\(1\\)"):
        choose_scheduler(requested, grace_period, 2, test_freq=1, max_t=1)


def test_one_epoch_search_plans_fifo_and_says_why(local_client, fashion_small):
    """``tune --param num_epochs=1`` without --scheduler: planned as FIFO with a note (no Ray needed to plan)."""
    from deeptrain.jobs.tune import check_run
    from deeptrain.results import SchedulerSpec

    c = local_client
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32})
    space = parse_space(["lrate=loguniform:1e-4:1e-1"])
    _, scheduler, _ = check_run(c.ctx, "fashion", "clf", space, trials=3, params={"num_epochs": 1})
    spec = SchedulerSpec(scheduler)
    assert spec.name == "fifo" and spec.note == "ASHA needs more epochs (1) than its grace period (1); ran FIFO"
    with pytest.raises(InvalidInput, match="with one epoch use --scheduler fifo"):
        check_run(c.ctx, "fashion", "clf", space, trials=3, scheduler="asha", params={"num_epochs": 1})
    _, scheduler, _ = check_run(c.ctx, "fashion", "clf", space, trials=3, params={"num_epochs": 3})
    assert scheduler["name"] == "asha" and "note" not in scheduler
    _assert_nothing_started(c)


# --- real searches (slow) -------------------------------------------------------------------

# three classes that differ clearly (chance 1/3): two epochs on 300 images separate a working
# learning rate from a useless one, which is what the search has to find
ASHA_CLASSES = ("Trouser", "Bag", "Ankle boot")
ASHA_TRAIN_PER_CLASS, ASHA_TEST_PER_CLASS = 100, 30
ASHA_PARAMS = {"image_size": 32, "num_epochs": 2, "init_epochs": 2, "test_freq": 1, "num_items_per_epoch": 600}
ASHA_SPACE = ["lrate=loguniform:1e-3:3e-1", "batch_size=choice:16,32"]
CLEAR_MARGIN = 0.25  # top-1, best over worst trial
ASHA_TRIALS = 6  # seeded sampling: the same lrates every run, from 0.001 (useless in 2 epochs) to 0.18 (at chance, stopped)


@pytest.fixture(scope="module")
def fashion_tune(tmp_path_factory):
    import shutil

    from deeptrain.sample_data import write_fashion_mnist_folder

    root = tmp_path_factory.mktemp("fashion-tune")
    for split, per_class in (("train", ASHA_TRAIN_PER_CLASS), ("test", ASHA_TEST_PER_CLASS)):
        write_fashion_mnist_folder(root / split, split, per_class=per_class)
        for folder in (root / split).iterdir():
            if folder.name not in ASHA_CLASSES:
                shutil.rmtree(folder)
    return root


def _worker_params(c, version) -> dict:
    """What the Ray Train worker itself recorded in its last checkpoint (not the driver's record)."""
    import ray.train

    from deeptrain.jobs.train import load_checkpoint_state

    root = f"{version['artifacts']}/ray"
    checkpoints = sorted(k for k in c.ctx.storage.list(root) if "/checkpoint_" in k and k.endswith("/state.pt"))
    state = load_checkpoint_state(ray.train.Checkpoint(c.ctx.storage.path(checkpoints[-1].rsplit("/", 1)[0]),
                                                       filesystem=c.ctx.storage.fs))
    return {"params": state["params"], "first_lr": state["history"][0]["lr"], "epochs": state["epoch"]}


def _assert_cluster_released(ray_cluster, timeout: float = 60) -> None:
    """Every CPU is free again once a search ends: no trial left workers or placement groups behind."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and ray_cluster.available_resources().get("CPU", 0) < 2:
        time.sleep(1)
    if ray_cluster.available_resources().get("CPU", 0) != 2:
        from ray.util.placement_group import placement_group_table

        held = {k: v for k, v in placement_group_table().items() if v.get("state") != "REMOVED"}
        raise AssertionError(f"CPUs still held: {ray_cluster.available_resources()}; placement groups: {held}")


# The acceptance search, on the real S3 server and PostgreSQL, InceptionBatchNorm (the lightest
# classifier: ~30 s a trial). Measured on the idle 2-core machine: 204 s, the same trials as CI's run
# (seeded sampler, seeded training): best 0.893 (lrate 0.0378, batch 32), the worst finished trial 0.500
# (lrate 0.0011), two stopped by ASHA after epoch 1 near chance (0.321).
@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(1800)  # CI machines run up to ~2x slower than the 204 s measured here
def test_asha_search_on_fashion_mnist_finds_a_clearly_better_lrate(request, tmp_path, ray_cluster, fashion_tune):
    from deeptrain.sdk import Client
    from tests.conftest import make_settings

    # _worker_params reads the best (trained) version's own checkpoint: keep one (the default keeps none)
    c = Client(make_settings("s3", tmp_path, request).replace(keep_checkpoints=1))
    assert c.settings.storage_uri.startswith("s3://") and c.settings.database_url.startswith("postgresql")
    import_fashion(c, fashion_tune)
    c.create_model("fashion", "clf", "classification", "InceptionBatchNorm", ASHA_PARAMS)
    live, planted = [], []

    def on_progress(rows):
        live.append(rows)
        if not planted:  # what a killed trial's workers can leave (deeptrain.jobs.placement): the driver removes it
            from ray.util.placement_group import placement_group

            planted.append(placement_group([{"CPU": 0.25}]))

    # one trial at a time: ASHA then judges each trial against the same earlier ones on every run (2 fit here,
    # and which of two concurrent trials reaches a rung first depends on timing)
    run = c.tune("fashion", "clf", parse_space(ASHA_SPACE), trials=ASHA_TRIALS, grace_period=1, reduction_factor=2,
                 max_concurrent=1, on_progress=on_progress)
    json.dumps(run)  # what `tune --json` prints
    assert run["status"] == "finished" and run["max_concurrent"] == 1 and len(run["trials"]) == ASHA_TRIALS
    trials = run["trials"]
    for t in trials:
        print(f"{t['trial_id']} {t['status']:9} lrate={t['params']['lrate']:.5f} batch_size={t['params']['batch_size']} "
              f"epochs={t['epochs']} top1={t['metric']}")
        assert set(t["params"]) == {"lrate", "batch_size"} and t["runs"] == 1
        assert t["status"] in ("trained", "cancelled") and t["metric"] is not None
    versions = {v["id"]: v for v in c.list_versions("fashion", "clf")}
    assert sorted(versions) == sorted(t["version_id"] for t in trials)
    assert all(v["tune_run"] == run["id"] for v in versions.values())

    stopped = [t for t in trials if t["stopped_early"]]
    assert stopped, "ASHA stopped no trial"
    assert all(t["status"] == "cancelled" and t["epochs"] < 2 for t in stopped)
    assert all(t["status"] == "trained" and t["epochs"] == 2 for t in trials if not t["stopped_early"])
    best, worst = run["best"], min(trials, key=lambda t: t["metric"])
    print(f"best top1 {best['metric']:.3f} (lrate {best['params']['lrate']:.5f}), worst {worst['metric']:.3f} "
          f"(lrate {worst['params']['lrate']:.5f}), {len(stopped)} stopped early")
    assert best["metric"] - worst["metric"] >= CLEAR_MARGIN
    # and over a trial that trained as long as the best one did (not only over one ASHA cut at chance)
    worst_finished = min((t for t in trials if not t["stopped_early"]), key=lambda t: t["metric"])
    assert best["metric"] - worst_finished["metric"] >= CLEAR_MARGIN
    assert best["status"] == "trained" and best["best"] and run["best_version"] == best["version_id"]

    # the best trial trained with its own params: the version's record, the worker's record, the worker's optimizer
    recorded = versions[best["version_id"]]["params"]
    worker = _worker_params(c, versions[best["version_id"]])
    for name in ("lrate", "batch_size"):
        assert recorded[name] == best["params"][name] == worker["params"][name]
    assert worker["first_lr"] == pytest.approx(recorded["lrate"]) and worker["epochs"] == 2
    # chosen on validation; the test figure is reported beside it
    assert versions[best["version_id"]]["metrics"]["validation"]["top1"] == best["metric"]
    assert versions[best["version_id"]]["metrics"]["top1"] == best["test_metric"]
    assert len({t["params"]["lrate"] for t in trials}) == ASHA_TRIALS  # sampled per trial, not one value for all

    keys = set(c.ctx.storage.list(run["artifacts"]))  # Tune's experiment state is in S3, so is every trial's model
    assert any(k.endswith("/tuner.pkl") for k in keys) and any("experiment_state" in k for k in keys)
    for t in trials:
        assert any(k.endswith("/weights.safetensors") for k in c.ctx.storage.list(versions[t["version_id"]]["artifacts"]))

    report = c.tune_report("fashion", "clf", run["id"])  # copied out of S3
    assert report["stopped_early"] == [t["trial_id"] for t in stopped]
    assert report["best"]["version_id"] == best["version_id"] and report["worst"]["metric"] == worst["metric"]
    assert sorted(report["plots"]) == ["metric_per_epoch.png", "metric_vs_params.png"]
    for name in ("tune_report.json", *report["plots"]):
        assert (Path(report["path"]) / name).stat().st_size > 1000
    assert live and {r["status"] for r in live[-1]} <= {"finished", "stopped early"}
    from ray.util.placement_group import placement_group_table

    assert placement_group_table(planted[0])["state"] == "REMOVED"

    assert c.promote_tune_best("fashion", "clf", run["id"])["default_version"] == best["version_id"]
    assert c.get_version("fashion", "clf")["id"] == best["version_id"]
    _assert_cluster_released(ray_cluster)


RESUME_PARAMS = {"image_size": 32, "num_epochs": 1, "batch_size": 20}


@pytest.mark.slow
@pytest.mark.ray
def test_killed_tuning_driver_resumes_without_rerunning_finished_trials(local_settings, ray_cluster, fashion_small):
    """Kill ``deeptrain tune`` after two of three trials finished; ``--resume`` runs only the rest.

    Two trials run at once (what fits on 2 CPUs) with their input streamed from storage every epoch,
    not cached: the trials' workers must leave a CPU to both trials' Ray Data tasks, or they wait forever.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    from deeptrain.sdk import Client

    c = Client(local_settings)
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", RESUME_PARAMS)
    env = {**os.environ, **local_settings.as_env(), "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "DEEPTRAIN_DATA_CACHE_FRACTION": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "deeptrain.cli.main", "tune", "fashion", "clf", "--space",
                             "lrate=loguniform:1e-3:1e-1", "--trials", "3", "--scheduler", "fifo", "--json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finished() -> list[dict]:
        return [v for v in c.list_versions("fashion", "clf") if v["status"] == "trained"]

    deadline = time.time() + 900
    while time.time() < deadline and len(finished()) < 2 and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [run] = c.list_tune_runs("fashion", "clf")
    assert run["status"] == "running"  # the driver died mid-run
    before = {v["id"]: v for v in finished()}
    assert len(before) == 2, "the tuning driver did not finish two trials before it was killed"
    _assert_cluster_released(ray_cluster)

    assert run["max_concurrent"] == 2
    proc = run_cli(local_settings, "tune", "fashion", "clf", "--resume", run["id"], "--json",
                   env={k: env[k] for k in ("RAY_ADDRESS", "DEEPTRAIN_DATA_CACHE_FRACTION")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert resumed["id"] == run["id"] and resumed["status"] == "finished" and len(resumed["trials"]) == 3
    by_version = {t["version_id"]: t for t in resumed["trials"]}
    for version_id, v in before.items():  # finished before the kill: not trained again
        after = c.get_version("fashion", "clf", version_id)
        assert by_version[version_id]["runs"] == 1
        assert after["finished_at"] == v["finished_at"] and after["progress"]["history"] == v["progress"]["history"]
    [rest] = [t for t in resumed["trials"] if t["version_id"] not in before]
    assert rest["status"] == "trained" and rest["epochs"] == 1
    print(f"resume: {len(before)} trials finished before the kill kept (1 training each); the third trained "
          f"{rest['runs']} time(s) (2 = started before the kill, continued from its checkpoint)")
    versions = c.list_versions("fashion", "clf")
    assert len(versions) == 3 and {v["progress"]["input"]["mode"] for v in versions} == {"streamed"}
    assert resumed["best"]["version_id"] in by_version
    _assert_cluster_released(ray_cluster)
