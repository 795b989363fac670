"""Where an import checks its records (read, decode, hash): on the main thread while that costs less than handing
them to a worker thread, else on the workers; and a stand-in executor for work cheaper than a hand-off."""

from __future__ import annotations

import statistics
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

# a group of records whose check (read, decode, hash) takes less than this a record is checked on the main thread:
# handing it to a worker costs more. Measured, 2 cores, 8,000 28x28 PNGs on tmpfs: on the main thread 96 us of CPU
# an image and 10,300 images/s, through 4 worker threads 231 us and 5,400 (half of it the kernel switching threads
# that hand the GIL to one another); a record of 250 us or more (larger images) gains from the workers. Local files
# only: on S3 the main thread also feeds the upload threads, and checking there made it the bottleneck (measured,
# 20,000 images into SeaweedFS + PostgreSQL: 424-489 images/s, 563-771 with the workers)
INLINE_BELOW_S = 250e-6
SAMPLE_EVERY = 4  # while the workers check, one group in this many is measured on the main thread again
PROBE = 2  # records of a group measured on the main thread (the group's others follow the measure)


def done_future(result: Any) -> Future[Any]:
    """A future that already holds ``result``."""
    done: Future[Any] = Future()
    done.set_result(result)
    return done


class OnThisThread:
    """``submit`` runs the task at once, on the calling thread (the part of an executor the pipeline uses)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it, as a thread pool would
            done.set_exception(exc)
        return done


class Pace:
    """Where the next group of records is checked: on the main thread while that is cheaper than a hand-off to a
    worker (``INLINE_BELOW_S``), else by the workers. The first ``PROBE`` records of a group (of every one
    while cheap, of one in ``SAMPLE_EVERY`` otherwise) are measured on the main thread; the median of the last
    three measures decides, so one slow record (a garbage collection) does not move the rest, and a change of
    images (thumbnails, then photographs) does."""

    def __init__(self, threshold_s: float | None = None) -> None:
        self.threshold_s = INLINE_BELOW_S if threshold_s is None else threshold_s  # 0: always the workers
        self.samples: deque[float] = deque(maxlen=3)  # seconds a record, the last measures
        self.groups = 0

    @property
    def per_record(self) -> float:
        return statistics.median(self.samples) if self.samples else 0.0

    @property
    def cheap(self) -> bool:
        """Whether records are checked on the main thread now."""
        return self.per_record < self.threshold_s

    def inline(self) -> bool:
        """Whether the next group's first records are measured on the main thread."""
        self.groups += 1
        return self.cheap or (self.threshold_s > 0 and self.groups % SAMPLE_EVERY == 0)

    def measured(self, seconds: float, records: int) -> None:
        self.samples.append(seconds / max(1, records))
