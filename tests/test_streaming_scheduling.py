"""Dynamic batching and load balancing, without Ray (fast and exact)."""

from __future__ import annotations

import asyncio
import time

import pytest

from helpers.errors import WorkbookError
from helpers.streaming.config import BatchSettings
from helpers.streaming.scheduling import DynamicBatcher, LoadBalancer, WorkerLoad


def _run(coro):
    return asyncio.run(coro)


def test_a_full_queue_leaves_in_batches_of_at_most_max_batch_size() -> None:
    async def scenario() -> list[tuple[list[int], str]]:
        settings = BatchSettings(max_batch_size=4, batch_timeout_ms=10_000)
        batcher: DynamicBatcher[int] = DynamicBatcher(settings)
        for i in range(10):
            batcher.put(i)
        out = [await batcher.next_batch() for _ in range(2)]
        return [(items, record.reason) for items, record in out]

    started = time.monotonic()
    (first, why1), (second, why2) = _run(scenario())
    assert first == [0, 1, 2, 3] and second == [4, 5, 6, 7], "oldest first, never more than 4"
    assert why1 == why2 == "full"
    assert time.monotonic() - started < 1.0, "a full batch does not wait for the timeout"


def test_a_lone_request_waits_for_the_timeout_and_no_longer() -> None:
    async def scenario() -> tuple[list[str], float, float]:
        batcher: DynamicBatcher[str] = DynamicBatcher(
            BatchSettings(max_batch_size=8, batch_timeout_ms=200)
        )
        batcher.put("alone")
        started = time.monotonic()
        items, record = await batcher.next_batch()
        return items, time.monotonic() - started, record.waited_ms

    items, waited_s, recorded_ms = _run(scenario())
    assert items == ["alone"]
    assert 0.195 <= waited_s < 0.8, waited_s
    assert 195 <= recorded_ms < 800


def test_requests_arriving_during_the_wait_join_the_batch() -> None:
    async def scenario() -> tuple[list[int], str, float]:
        batcher: DynamicBatcher[int] = DynamicBatcher(
            BatchSettings(max_batch_size=3, batch_timeout_ms=5_000)
        )

        async def trickle() -> None:
            for i in range(3):
                batcher.put(i)
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(trickle())
        started = time.monotonic()
        items, record = await batcher.next_batch()
        await task
        return items, record.reason, time.monotonic() - started

    items, reason, seconds = _run(scenario())
    assert items == [0, 1, 2] and reason == "full" and seconds < 1.0


def test_settings_change_while_a_batch_waits_and_dynamic_batching_can_be_off() -> None:
    async def scenario() -> tuple[float, list[list[int]]]:
        batcher: DynamicBatcher[int] = DynamicBatcher(
            BatchSettings(max_batch_size=8, batch_timeout_ms=9_000)
        )
        batcher.put(0)
        asyncio.get_running_loop().call_later(
            0.1, batcher.configure, BatchSettings(max_batch_size=8, batch_timeout_ms=50)
        )
        started = time.monotonic()
        await batcher.next_batch()
        waited = time.monotonic() - started
        batcher.configure(BatchSettings(enable_dynamic_batching=False))
        for i in range(3):
            batcher.put(i)
        singles = [(await batcher.next_batch())[0] for _ in range(3)]
        return waited, singles

    waited, singles = _run(scenario())
    assert waited < 1.0, "the shorter timeout applied to the batch already waiting"
    assert singles == [[0], [1], [2]]


def test_removed_requests_leave_the_queue() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        batcher: DynamicBatcher[str] = DynamicBatcher(
            BatchSettings(max_batch_size=10, batch_timeout_ms=20)
        )
        for name in ["a1", "b1", "a2", "b2"]:
            batcher.put(name)
        removed = batcher.remove(lambda n: n.startswith("a"))
        items, _ = await batcher.next_batch()
        return removed, items

    removed, items = _run(scenario())
    assert removed == ["a1", "a2"] and items == ["b1", "b2"]


def test_least_loaded_follows_the_work_round_robin_ignores_it() -> None:
    loads = [
        WorkerLoad(0, outstanding_tokens=500),
        WorkerLoad(1, outstanding_tokens=20),
        WorkerLoad(2, outstanding_tokens=20),
    ]
    least = LoadBalancer("least_loaded")
    assert [least.pick(loads) for _ in range(3)] == [1, 1, 1], (
        "fewest tokens owed; ties: lowest index"
    )
    rr = LoadBalancer("round_robin")
    assert [rr.pick(loads) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_least_loaded_balances_an_uneven_burst_that_round_robin_piles_up() -> None:
    """Batches alternate long (100 tokens) and short (10): round robin sends every long batch
    to the same worker; least loaded spreads the work."""
    batches = [100, 10] * 4

    def assign(strategy: str) -> list[int]:
        balancer, owed = LoadBalancer(strategy), [0, 0]
        for tokens in batches:
            worker = balancer.pick([WorkerLoad(i, owed[i]) for i in range(2)])
            owed[worker] += tokens
        return owed

    assert assign("round_robin") == [400, 40]
    least = assign("least_loaded")
    assert max(least) - min(least) <= 100 and sum(least) == 440


def test_by_memory_picks_the_worker_holding_the_least_cache() -> None:
    balancer = LoadBalancer("by_memory")
    assert balancer.needs_memory and not LoadBalancer("least_loaded").needs_memory
    loads = [WorkerLoad(0, 0, kv_bytes=4096), WorkerLoad(1, 900, kv_bytes=1024)]
    assert balancer.pick(loads) == 1, "memory, not queued work, decides"


def test_unknown_strategies_and_no_workers_are_clear_errors() -> None:
    with pytest.raises(WorkbookError, match="least_loaded, round_robin, by_memory"):
        LoadBalancer("gpu_memory")
    with pytest.raises(WorkbookError, match="model actor"):
        LoadBalancer().pick([])


def test_devices_whose_models_reserve_nothing_have_no_placement_group_to_wait_for() -> None:
    """A model actor of 0 CPUs and 0 GPUs reserves nothing: its device has no bundle (Ray
    refuses an empty one), and starting the service does not wait on any."""
    from helpers.streaming.actors import ActorService
    from helpers.streaming.config import StreamingConfig

    config = StreamingConfig()
    config.serving.model_actor_num_cpus = 0.0
    service = ActorService(config)
    assert service._device(2) is None and service.devices == [None]
    service._wait_for_devices(service.devices, timeout_s=0.1)  # returns at once, no Ray call
