"""Worker placement groups a stopped trial left behind are found idle and removed (deeptrain.jobs.placement).

The leak itself (Ray Train's detached cleaner missing the group of a trial Tune killed)
depends on timing; these tests hold real placement groups the way Ray Train and Tune do and
check what the tuning driver's sweeper does with each: a free CPU group created during the
search goes, one with an actor in it, one from before the search and Tune's own memory
bundle stay, and a group must look free twice, ``settle_s`` apart.
"""

from __future__ import annotations

import time

import pytest

from deeptrain.jobs.placement import LeftoverSweeper, existing_groups, idle_worker_groups, sweep_logged

pytestmark = pytest.mark.ray


def _group(ray, bundles):
    from ray.util.placement_group import placement_group

    group = placement_group(bundles)
    ray.get(group.ready(), timeout=60)
    return group


def _state(group) -> str:
    from ray.util.placement_group import placement_group_table

    return placement_group_table(group)["state"]


def _wait_cpus(ray, cpus: float, timeout: float = 30) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline and ray.available_resources().get("CPU", 0) != cpus:
        time.sleep(0.2)
    return ray.available_resources().get("CPU", 0)


def test_only_a_free_worker_group_made_during_the_search_is_removed_after_two_looks(ray_cluster):
    from ray.util.placement_group import remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray = ray_cluster
    cpus = ray.available_resources().get("CPU", 0)
    older = _group(ray, [{"CPU": 0.25}])  # another run's, from before the search: never touched
    sweeper = LeftoverSweeper(existing_groups(), settle_s=2.0)
    left = _group(ray, [{"CPU": 0.25}])  # what a killed trial's workers leave: nobody in it
    tune_own = _group(ray, [{"memory": 1 << 20}])  # a Tune trial's group: Tune's to manage
    busy = _group(ray, [{"CPU": 0.25}])

    @ray.remote(num_cpus=0.25)
    class Worker:
        def ping(self):
            return 1

    worker = Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(busy)).remote()
    assert ray.get(worker.ping.remote(), timeout=60) == 1
    try:
        assert idle_worker_groups(sweeper.before) == [left.id.hex()]
        assert sweeper.sweep() == []  # first look: a suspect only (a group whose actors are starting looks free)
        assert list(sweeper.suspects) == [left.id.hex()]
        time.sleep(2.1)
        assert sweeper.sweep() == [left.id.hex()]
        assert _state(left) == "REMOVED"
        assert {_state(g) for g in (older, tune_own, busy)} == {"CREATED"}
        assert ray.get(worker.ping.remote(), timeout=60) == 1  # the busy group's actor runs on
        assert sweeper.final() == [] and sweeper.removed == [left.id.hex()]
    finally:
        ray.kill(worker)
        for g in (older, left, tune_own, busy):
            if _state(g) != "REMOVED":
                remove_placement_group(g)
    assert _wait_cpus(ray, cpus) == cpus


def test_the_final_sweep_waits_for_a_second_look_then_frees_the_cpus(ray_cluster):
    ray = ray_cluster
    cpus = ray.available_resources().get("CPU", 0)
    sweeper = LeftoverSweeper(existing_groups(), settle_s=1.0)
    left = _group(ray, [{"CPU": 0.5}, {"CPU": 0.5}])  # two workers' bundles
    assert ray.available_resources().get("CPU", 0) == cpus - 1
    deadline = time.time() + 10  # the resource view of a new group's bundles settles within a moment
    while time.time() < deadline and left.id.hex() not in idle_worker_groups(sweeper.before):
        time.sleep(0.1)
    started = time.monotonic()
    assert sweeper.final() == [left.id.hex()]
    assert time.monotonic() - started >= 1.0
    assert _state(left) == "REMOVED" and _wait_cpus(ray, cpus) == cpus
    assert sweeper.final() == []  # nothing left: no wait


def test_a_failing_sweep_is_logged_not_raised(caplog):
    def broken() -> list[str]:
        raise RuntimeError("GCS busy")

    sweep_logged(broken)
    assert "could not look for left-over placement groups: GCS busy" in caplog.text
    sweep_logged(lambda: ["abc"])
    assert "removed 1 placement group(s) a stopped trial left reserved: abc" in caplog.text
