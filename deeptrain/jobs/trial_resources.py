"""What a tuning trial reserves on the cluster, and how many trials fit at once."""

from __future__ import annotations

import math

from deeptrain.config import DEFAULT_CPU_PER_WORKER
from deeptrain.errors import InvalidInput

TRIAL_DRIVER_RESOURCES = {"memory": 1 << 20}  # a bundle needs some resource; CPU would starve Ray Data
DATA_CPU_PER_TRIAL = 0.5  # each running trial's share of the CPUs its Ray Data tasks run on, besides its workers


def fit_concurrency(num_workers: int, use_gpu: bool, requested: int | None, trials: int,
                    cpu_per_worker: float = DEFAULT_CPU_PER_WORKER) -> int:
    """Trials that can run at once on the connected cluster; refuses a request that cannot fit.

    A trial holds its workers' CPUs (``num_workers x cpu_per_worker``, reserved by Ray Train)
    and counts ``DATA_CPU_PER_TRIAL`` more for the Ray Data tasks that decode its images.
    Those tasks take a whole CPU each and are not reserved ahead, so the workers of all
    running trials together must always leave at least one CPU free: otherwise a trial whose
    input is streamed would wait forever for its next batch.
    """
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    workers_cpus = num_workers * cpu_per_worker
    fit = math.floor(cpus / (workers_cpus + DATA_CPU_PER_TRIAL) + 1e-9)
    if workers_cpus > 0:
        fit = min(fit, math.floor((cpus - 1) / workers_cpus + 1e-9))
    rule = (f"a trial takes {workers_cpus + DATA_CPU_PER_TRIAL:g} CPUs ({num_workers} worker(s) x "
            f"{cpu_per_worker:g} + {DATA_CPU_PER_TRIAL:g} for its Ray Data tasks), the workers of all "
            f"trials leave at least 1 CPU to those tasks, and the cluster has {cpus:g}")
    if use_gpu:
        fit = min(fit, math.floor(gpus / num_workers))
        rule += f" CPUs and {gpus:g} GPUs (one per worker)"
    if fit < 1:
        raise InvalidInput(f"not even one trial fits: {rule}; use fewer --workers or a larger cluster")
    if requested is not None:
        if requested < 1:
            raise InvalidInput(f"--max-concurrent must be >= 1, got {requested}")
        if requested > fit:
            raise InvalidInput(f"--max-concurrent {requested} does not fit: {rule}, so at most {fit} trial(s) "
                               "can run at once")
    return min(requested or fit, trials)
