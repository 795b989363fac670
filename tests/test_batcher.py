"""serve/batcher.py: batches form from what queued while the model ran; a lone request does not wait."""

import asyncio

import pytest

from serve.batcher import Batcher


def run(coro):
    return asyncio.run(coro)


def test_requests_that_arrive_during_a_pass_form_the_next_batch_in_order():
    seen: list[list[int]] = []

    async def model(batch: list[int]) -> list[int]:
        seen.append(batch)
        await asyncio.sleep(0.05)
        return [x * 10 for x in batch]

    async def main():
        batcher = Batcher(model, max_size=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first pass is running: the next six queue behind it
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        return await asyncio.gather(first, *rest)

    assert run(main()) == [0, 10, 20, 30, 40, 50, 60]
    assert seen == [[0], [1, 2, 3, 4], [5, 6]]  # a lone request ran at once; then up to max_size at a time


def test_a_caller_that_gave_up_is_left_out_and_an_error_reaches_every_caller_of_its_batch():
    seen: list[list[int]] = []

    async def model(batch: list[int]) -> list[int]:
        seen.append(batch)
        await asyncio.sleep(0.05)
        if 99 in batch:
            raise ValueError("bad batch")
        return batch

    async def main():
        batcher = Batcher(model, max_size=8)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)
        gave_up = asyncio.ensure_future(batcher.submit(1))
        bad = [asyncio.ensure_future(batcher.submit(x)) for x in (2, 99)]
        await asyncio.sleep(0)
        gave_up.cancel()
        assert await first == 0
        for task in bad:
            with pytest.raises(ValueError, match="bad batch"):
                await task
        assert await batcher.submit(3) == 3  # the consumer goes on after an error

    run(main())
    assert seen == [[0], [2, 99], [3]]


def test_with_two_lanes_a_second_batch_runs_beside_the_first_and_the_third_forms_when_one_ends():
    seen: list[list[int]] = []
    running, most = [0], [0]

    async def model(batch: list[int]) -> list[int]:
        seen.append(batch)
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        return [x + 100 for x in batch]

    async def main():
        batcher = Batcher(model, max_size=4, concurrency=2)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch runs; the second lane is free: the next request runs at once
        second = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)  # both lanes busy: these queue and form one batch when a lane frees
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 6)]
        return await asyncio.gather(first, second, *rest)

    assert run(main()) == [100, 101, 102, 103, 104, 105]
    assert seen == [[0], [1], [2, 3, 4, 5]] and most[0] == 2


def test_a_batch_takes_at_most_the_forward_size_of_its_first_item():
    seen: list[list[int]] = []

    async def model(batch: list[int]) -> list[int]:
        seen.append(batch)
        await asyncio.sleep(0.02)
        return batch

    async def main():
        batcher = Batcher(model, max_size=lambda first: 1 if first >= 100 else 3)  # e.g. 256 px vs 32 px versions
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in (100, 101, 1, 2, 3, 4)]
        return await asyncio.gather(first, *rest)

    assert run(main()) == [0, 100, 101, 1, 2, 3, 4]
    assert seen == [[0], [100], [101], [1, 2, 3], [4]]
