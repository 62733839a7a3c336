"""What the health channel and /metrics need from the registry: histogram, event time, resync."""

from __future__ import annotations

import time

import pytest

from app.runtime.registry import EXECUTION_BUCKETS_MS, PluginRegistry


def registry_with_p() -> PluginRegistry:
    registry = PluginRegistry()
    registry.register("p")
    registry.mark_initialized("p", device="cpu")
    return registry


def test_execution_times_land_in_le_buckets_and_never_leave() -> None:
    registry = registry_with_p()
    for ms in (0.5, 1.0, 1.1, 20_000.0):
        registry.record_success("p", ms)
    registry.record_error("p", 3.0)
    histogram = registry.get("p").execution_histogram
    index = {bound: i for i, bound in enumerate(EXECUTION_BUCKETS_MS)}
    assert histogram.counts[index[1]] == 2  # 0.5 and 1.0: a bound is inclusive ("le")
    assert histogram.counts[index[2.5]] == 1 and histogram.counts[index[5]] == 1
    assert histogram.counts[-1] == 1  # past the last bound: +Inf
    assert sum(histogram.counts) == 5 and histogram.sum_ms == pytest.approx(20_005.6)
    for _ in range(2000):  # more than the sliding window behind p95: the histogram keeps counting
        registry.record_success("p", 1.0)
    assert sum(registry.get("p").execution_histogram.counts) == 2005


async def test_an_event_carries_the_time_the_registry_published_it() -> None:
    registry = registry_with_p()
    subscription = registry.subscribe()
    before = time.time()
    registry.mark_running("p")
    event = await subscription.get()
    assert event is not None and before <= event.timestamp <= time.time()


async def test_request_snapshot_makes_get_answer_none_once_and_clear_forgets_queued_events() -> None:
    registry = registry_with_p()
    subscription = registry.subscribe()
    registry.mark_running("p")
    subscription.request_snapshot()
    assert len(subscription) == 0 and await subscription.get() is None
    registry.mark_idle("p")
    subscription.clear()
    registry.mark_running("p")
    event = await subscription.get()
    assert event is not None and event.health["state"] == "RUNNING" and len(subscription) == 0
