"""Worker placement groups that outlive their training run, found idle and removed by the tuning driver.

Ray Train removes its worker group's placement group when its controller ends. A Tune trial
the scheduler stops (ASHA) is killed together with its controller; Train's detached cleaner
is then meant to remove the group, and where it misses it (seen on a slow 2-core CI machine:
half a CPU still reserved minutes after the search, so the next search's trials starved for
their data and failed), the group keeps its CPUs until the driver that created it exits.

A placement group is this driver's (its id ends with the driver's job id: Ray's
``PlacementGroupID`` is 14 unique bytes followed by the ``JobID``), holds only CPU/GPU
bundles (Ray Train's workers; a Tune trial's own group carries a memory bundle,
``deeptrain.jobs.trial_resources.TRIAL_DRIVER_RESOURCES``, and is Tune's to manage), did not exist
before the search started, and every bundle of it is free: nobody runs in it. Seen so on
two looks ``settle_s`` apart (a worker group between its group's creation and its actors'
start is briefly free), it is left over, and removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

logger = logging.getLogger(__name__)

WORKER_RESOURCES = frozenset({"CPU", "GPU"})


def idle_worker_groups(exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """This driver's CREATED placement groups of CPU/GPU bundles that nothing runs in (hex ids), but ``exclude``."""
    import ray
    from ray.util.placement_group import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    total, free = ray.cluster_resources(), ray.available_resources()
    idle = []
    for group_id, info in placement_group_table().items():
        bundles = info.get("bundles") or {}
        if (group_id in exclude or not group_id.endswith(job) or info.get("state") != "CREATED" or not bundles
                or any(not b or set(b) - WORKER_RESOURCES for b in bundles.values())):
            continue
        keys = [f"{resource}_group_{index}_{group_id}" for index, b in bundles.items() for resource in b]
        if all(total.get(k, 0) > 0 and free.get(k, 0) >= total[k] for k in keys):
            idle.append(group_id)
    return sorted(idle)


def existing_groups() -> frozenset[str]:
    """Every placement group the cluster knows now (not to be touched by a sweep that starts now)."""
    from ray.util.placement_group import placement_group_table

    return frozenset(placement_group_table())


def remove_group(group_id: str) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))


@dataclass
class LeftoverSweeper:
    """Removes worker groups left idle, created after ``before``: call ``sweep`` now and then (non-blocking)
    or ``final`` once nothing of the run can still start (it waits ``settle_s`` for a second look)."""

    before: frozenset[str]
    settle_s: float = 10.0
    suspects: dict[str, float] = field(default_factory=dict)  # group id -> when first seen idle
    removed: list[str] = field(default_factory=list)

    def sweep(self) -> list[str]:
        now = time.monotonic()
        idle = set(idle_worker_groups(self.before))
        self.suspects = {g: self.suspects.get(g, now) for g in idle}
        gone = sorted(g for g, since in self.suspects.items() if now - since >= self.settle_s)
        for group_id in gone:
            remove_group(group_id)
            del self.suspects[group_id]
        self.removed += gone
        return gone

    def final(self) -> list[str]:
        found = len(self.removed)
        self.sweep()
        if self.suspects:
            time.sleep(self.settle_s)
            self.sweep()
        return self.removed[found:]


def sweep_logged(step: Callable[[], list[str]]) -> None:
    """Run a sweep (``LeftoverSweeper.sweep`` or ``final``); one that fails must not end the search it cleans
    up after (the next sweep looks again); what it removed is logged."""
    try:
        removed = step()
    except Exception as exc:  # e.g. the GCS busy for a moment
        logger.warning("could not look for left-over placement groups: %s", exc)
        return
    if removed:
        logger.warning("removed %d placement group(s) a stopped trial left reserved: %s", len(removed),
                       ", ".join(removed))
