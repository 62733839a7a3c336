"""The one registry of plugin states and counters (DESIGN 3.3, 3.4).

It is owned by the event loop: every method is called from the loop thread and
never awaits, so no lock is needed. Readers get snapshots (plain dicts), and
subscribers get events through bounded queues that never block the registry.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import enum
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger(__name__)

COUNTER_EVENT_INTERVAL_S = 1.0
EXECUTION_SAMPLES = 1000
# Upper bounds (ms) of the execution-time histogram served on /metrics; one more bucket holds the rest (+Inf).
EXECUTION_BUCKETS_MS: tuple[float, ...] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class PluginState(enum.StrEnum):
    LOADED = "LOADED"
    INITIALIZED = "INITIALIZED"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    UNAVAILABLE = "UNAVAILABLE"


S = PluginState
# DESIGN 3.3 as data: every legal (from, to) pair. Anything else is a bug.
TRANSITIONS: frozenset[tuple[PluginState, PluginState]] = frozenset(
    {
        (S.LOADED, S.UNAVAILABLE),
        (S.LOADED, S.INITIALIZED),
        (S.LOADED, S.FAILED),
        (S.INITIALIZED, S.RUNNING),
        (S.RUNNING, S.INITIALIZED),
        (S.INITIALIZED, S.FAILED),
        (S.RUNNING, S.FAILED),
        (S.FAILED, S.LOADED),
        (S.UNAVAILABLE, S.LOADED),
        (S.INITIALIZED, S.LOADED),  # manual restart of a healthy plugin: a reload
        (S.RUNNING, S.LOADED),
    }
)


class IllegalTransition(RuntimeError):
    def __init__(self, name: str, old: PluginState, new: PluginState) -> None:
        super().__init__(f"plugin {name!r}: illegal transition {old} -> {new}")
        self.old = old
        self.new = new


class UnknownPlugin(KeyError):
    pass


class DuplicatePlugin(ValueError):
    pass


def utc_iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class ExecutionHistogram:
    """Execution times since the server started, bucketed for Prometheus.

    Unlike the sliding window behind avg/p95 it only ever grows, as a Prometheus
    histogram must. `counts[i]` is the number of times in bucket i (not cumulative).
    """

    counts: list[int] = field(default_factory=lambda: [0] * (len(EXECUTION_BUCKETS_MS) + 1))
    sum_ms: float = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(EXECUTION_BUCKETS_MS, ms)] += 1
        self.sum_ms += ms


@dataclass
class PluginRecord:
    name: str
    description: str | None
    version: str | None
    requires_gpu: bool
    state: PluginState = PluginState.LOADED
    reason: str | None = None
    device: str | None = None
    degraded: str | None = None
    worker_pid: int | None = None
    last_traceback: str | None = None
    initialized_at: float | None = None
    last_used: float | None = None
    success_count: int = 0
    error_count: int = 0
    last_execution_time_ms: float | None = None
    restarts: int = 0
    active_sessions: int = 0
    first_load_done: bool = False  # left LOADED once, whatever the outcome (/readyz, DESIGN 4.4)
    execution_times: deque[float] = field(default_factory=lambda: deque(maxlen=EXECUTION_SAMPLES))
    execution_histogram: ExecutionHistogram = field(default_factory=ExecutionHistogram)

    def health(self) -> dict[str, Any]:
        """The health object of DESIGN 4.1: every field present, null when not known."""
        times = sorted(self.execution_times)
        running = self.state in (S.INITIALIZED, S.RUNNING) and self.initialized_at is not None
        return {
            "name": self.name,
            "state": self.state.value,
            "description": self.description,
            "version": self.version,
            "reason": self.reason,
            "requires_gpu": self.requires_gpu,
            "device": self.device,
            "degraded": self.degraded,
            "worker_pid": self.worker_pid,
            "uptime_seconds": round(time.monotonic() - self.initialized_at, 3)
            if running and self.initialized_at is not None
            else None,
            "last_used": utc_iso(self.last_used) if self.last_used is not None else None,
            "success_count": self.success_count,
            "error_count": self.error_count,
            "last_execution_time_ms": self.last_execution_time_ms,
            "avg_execution_time_ms": round(sum(times) / len(times), 3) if times else None,
            "p95_execution_time_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 3) if times else None,
            "restarts": self.restarts,
            "active_sessions": self.active_sessions,
        }


@dataclass(frozen=True)
class RegistryEvent:
    """One change: `kind` is "state" for a transition, "counters" for coalesced counters.

    `timestamp` (Unix seconds) is when the registry published it, so subscribers can
    say when the change happened however late they deliver it.
    """

    kind: str
    health: dict[str, Any]
    previous_state: str | None = None
    timestamp: float = field(default_factory=time.time)


class Subscription:
    """A bounded queue of events for one subscriber.

    `put` never blocks: past `maxsize` the queue is dropped and `overflowed` is set,
    so the consumer knows to start again from a snapshot.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.overflowed = False
        self._events: deque[RegistryEvent] = deque()
        self._ready = asyncio.Event()

    def put(self, event: RegistryEvent) -> None:
        if len(self._events) >= self.maxsize:
            self._events.clear()
            self.overflowed = True
        else:
            self._events.append(event)
        self._ready.set()

    async def get(self) -> RegistryEvent | None:
        """The next event, or None once after an overflow (then read a snapshot)."""
        while not self._events and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            self.overflowed = False
            self._events.clear()
            return None
        return self._events.popleft()

    def clear(self) -> None:
        """Drop queued events and a pending overflow: the consumer is sending a snapshot that covers them."""
        self._events.clear()
        self.overflowed = False

    def request_snapshot(self) -> None:
        """Make the next `get()` return None, as after an overflow (a client asked to resync)."""
        self._events.clear()
        self.overflowed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self._events)


class PluginRegistry:
    def __init__(self) -> None:
        self._records: dict[str, PluginRecord] = {}
        self._subscriptions: set[Subscription] = set()
        self._last_counter_event: dict[str, float] = {}
        self._pending_counter_event: dict[str, asyncio.TimerHandle] = {}

    # -- registration and reads -------------------------------------------------
    def register(
        self,
        name: str,
        *,
        description: str | None = None,
        version: str | None = None,
        requires_gpu: bool = False,
    ) -> PluginRecord:
        if name in self._records:
            raise DuplicatePlugin(name)
        record = PluginRecord(name, description, version, requires_gpu)
        self._records[name] = record
        logger.info("plugin %s: registered (LOADED)", name)
        self._publish(RegistryEvent("state", record.health()))
        return record

    def get(self, name: str) -> PluginRecord:
        try:
            return self._records[name]
        except KeyError:
            raise UnknownPlugin(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def list(self) -> list[dict[str, Any]]:
        return [self._records[name].health() for name in sorted(self._records)]

    def names(self) -> builtins.list[str]:
        return sorted(self._records)

    def pending_first_load(self) -> builtins.list[str]:
        """Plugins still in their first load; a later restart does not bring a plugin back here."""
        return [name for name in sorted(self._records) if not self._records[name].first_load_done]

    def describe(self, name: str, *, description: str, version: str, requires_gpu: bool) -> None:
        """New manifest facts after a reload (published with the next state change)."""
        record = self.get(name)
        record.description, record.version, record.requires_gpu = description, version, requires_gpu

    # -- transitions ------------------------------------------------------------
    def _transition(self, name: str, new: PluginState, reason: str | None = None) -> PluginRecord:
        record = self.get(name)
        old = record.state
        if (old, new) not in TRANSITIONS:
            raise IllegalTransition(name, old, new)
        record.state = new
        record.reason = reason
        if old is S.LOADED:
            record.first_load_done = True
        if new in (S.LOADED, S.FAILED, S.UNAVAILABLE):
            record.initialized_at = None
            record.worker_pid = None
        if new is S.LOADED:
            record.last_traceback = None
        log = logger.warning if new in (S.FAILED, S.UNAVAILABLE) else logger.info
        log("plugin %s: %s -> %s%s", name, old, new, f" ({reason})" if reason else "")
        self._cancel_counter_event(name)
        self._publish(RegistryEvent("state", record.health(), previous_state=old.value))
        return record

    def mark_loaded(self, name: str) -> None:
        """A restart begins: from FAILED/UNAVAILABLE, or a reload from INITIALIZED/RUNNING."""
        record = self.get(name)
        if record.state is not S.LOADED:
            record.restarts += 1
        self._transition(name, S.LOADED)

    def mark_initialized(
        self, name: str, *, device: str, degraded: str | None = None, worker_pid: int | None = None
    ) -> None:
        record = self.get(name)
        record.worker_pid = worker_pid
        record.device = device
        record.degraded = degraded
        record.initialized_at = time.monotonic()
        # A plugin that comes back while sessions still use it is at work at once.
        self._transition(name, S.INITIALIZED)
        if record.active_sessions > 0:
            self._transition(name, S.RUNNING)

    def mark_running(self, name: str) -> None:
        self._transition(name, S.RUNNING)

    def mark_idle(self, name: str) -> None:
        self._transition(name, S.INITIALIZED)

    def mark_failed(self, name: str, reason: str, traceback: str | None = None) -> None:
        self.get(name).last_traceback = traceback
        self._transition(name, S.FAILED, reason)

    def mark_unavailable(self, name: str, reason: str) -> None:
        self._transition(name, S.UNAVAILABLE, reason)

    # -- sessions ---------------------------------------------------------------
    def session_started(self, name: str) -> None:
        record = self.get(name)
        record.active_sessions += 1
        if record.state is S.INITIALIZED:
            self.mark_running(name)
        else:
            self._counters_changed(record)

    def session_ended(self, name: str) -> None:
        record = self.get(name)
        record.active_sessions = max(0, record.active_sessions - 1)
        if record.active_sessions == 0 and record.state is S.RUNNING:
            self.mark_idle(name)
        else:
            self._counters_changed(record)

    # -- counters ---------------------------------------------------------------
    def record_success(self, name: str, ms: float, frames: int = 1) -> None:
        record = self.get(name)
        record.success_count += frames
        self._record_time(record, ms)

    def record_error(self, name: str, ms: float) -> None:
        record = self.get(name)
        record.error_count += 1
        self._record_time(record, ms)

    def _record_time(self, record: PluginRecord, ms: float) -> None:
        record.last_execution_time_ms = round(ms, 3)
        record.execution_times.append(ms)
        record.execution_histogram.observe(ms)
        record.last_used = time.time()
        self._counters_changed(record)

    def _counters_changed(self, record: PluginRecord) -> None:
        """Publish counters at most once per interval per plugin, trailing edge included."""
        name = record.name
        if name in self._pending_counter_event or not self._subscriptions:
            return
        now = time.monotonic()
        wait = self._last_counter_event.get(name, 0.0) + COUNTER_EVENT_INTERVAL_S - now
        if wait <= 0:
            self._publish_counters(name)
            return
        loop = asyncio.get_running_loop()
        self._pending_counter_event[name] = loop.call_later(wait, self._publish_counters, name)

    def _publish_counters(self, name: str) -> None:
        self._pending_counter_event.pop(name, None)
        self._last_counter_event[name] = time.monotonic()
        self._publish(RegistryEvent("counters", self.get(name).health()))

    def _cancel_counter_event(self, name: str) -> None:
        handle = self._pending_counter_event.pop(name, None)
        if handle is not None:
            handle.cancel()
        self._last_counter_event[name] = time.monotonic()

    # -- subscribers ------------------------------------------------------------
    def subscribe(self, maxsize: int = 256) -> Subscription:
        subscription = Subscription(maxsize)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _publish(self, event: RegistryEvent) -> None:
        for subscription in self._subscriptions:
            subscription.put(event)

    def close(self) -> None:
        for handle in self._pending_counter_event.values():
            handle.cancel()
        self._pending_counter_event.clear()
        self._subscriptions.clear()
