"""PluginRegistry: the transition table of DESIGN 3.3, counters and events."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.runtime import registry as registry_module
from app.runtime.registry import (
    TRANSITIONS,
    DuplicatePlugin,
    IllegalTransition,
    PluginRegistry,
    PluginState,
    UnknownPlugin,
)

S = PluginState
LEGAL = [
    (S.LOADED, S.UNAVAILABLE),
    (S.LOADED, S.INITIALIZED),
    (S.LOADED, S.FAILED),
    (S.INITIALIZED, S.RUNNING),
    (S.RUNNING, S.INITIALIZED),
    (S.INITIALIZED, S.FAILED),
    (S.RUNNING, S.FAILED),
    (S.FAILED, S.LOADED),
    (S.UNAVAILABLE, S.LOADED),
    (S.INITIALIZED, S.LOADED),  # reload
    (S.RUNNING, S.LOADED),
]
ILLEGAL = [pair for pair in itertools.product(S, S) if pair not in LEGAL]

# The shortest way from a fresh registration to each state, through public methods.
PATHS = {
    S.LOADED: [],
    S.INITIALIZED: ["init"],
    S.RUNNING: ["init", "run"],
    S.FAILED: ["fail"],
    S.UNAVAILABLE: ["unavailable"],
}


def move(registry: PluginRegistry, name: str, to: PluginState) -> None:
    if to is S.LOADED:
        registry.mark_loaded(name)
    elif to is S.INITIALIZED:
        if registry.get(name).state is S.RUNNING:
            registry.mark_idle(name)
        else:
            registry.mark_initialized(name, device="cpu")
    elif to is S.RUNNING:
        registry.mark_running(name)
    elif to is S.FAILED:
        registry.mark_failed(name, "ValueError: broke (fix it)")
    else:
        registry.mark_unavailable(name, "ImportError: missing (install it)")


def registry_in(state: PluginState) -> PluginRegistry:
    registry = PluginRegistry()
    registry.register("p")
    steps = {"init": S.INITIALIZED, "run": S.RUNNING, "fail": S.FAILED, "unavailable": S.UNAVAILABLE}
    for step in PATHS[state]:
        move(registry, "p", steps[step])
    assert registry.get("p").state is state
    return registry


def test_the_table_is_exactly_design_3_3() -> None:
    assert set(LEGAL) == TRANSITIONS


@pytest.mark.parametrize(("old", "new"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
async def test_every_legal_transition_is_allowed_and_published(old: PluginState, new: PluginState) -> None:
    registry = registry_in(old)
    subscription = registry.subscribe()
    move(registry, "p", new)
    assert registry.get("p").state is new
    event = await asyncio.wait_for(subscription.get(), 1)
    assert event is not None
    assert (event.kind, event.previous_state, event.health["state"]) == ("state", old.value, new.value)


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_every_illegal_transition_raises_naming_both_states(old: PluginState, new: PluginState) -> None:
    registry = registry_in(old)
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        registry._transition("p", new)
    assert registry.get("p").state is old


def test_failed_and_unavailable_carry_their_reason_and_loaded_clears_it() -> None:
    registry = registry_in(S.INITIALIZED)
    registry.mark_failed("p", "TimeoutError: slow (raise timeout_ms)", "Traceback ...")
    health = registry.get("p").health()
    assert health["reason"] == "TimeoutError: slow (raise timeout_ms)"
    assert registry.get("p").last_traceback == "Traceback ..."
    registry.mark_loaded("p")
    health = registry.get("p").health()
    assert health["reason"] is None and health["restarts"] == 1


@pytest.mark.parametrize("state", [S.INITIALIZED, S.RUNNING])
def test_a_reload_goes_back_to_loaded_counts_a_restart_and_keeps_the_sessions(state: PluginState) -> None:
    registry = registry_in(state)
    registry.get("p").active_sessions = 1 if state is S.RUNNING else 0
    registry.mark_loaded("p")
    record = registry.get("p")
    assert (record.state, record.restarts, record.worker_pid, record.reason) == (S.LOADED, 1, None, None)
    registry.mark_initialized("p", device="cpu", worker_pid=42)
    assert registry.get("p").state is state  # back to RUNNING while a session still uses it


def test_only_the_first_load_is_pending_for_readiness() -> None:
    registry = PluginRegistry()
    registry.register("a")
    registry.register("b")
    assert registry.pending_first_load() == ["a", "b"]
    registry.mark_failed("a", "ValueError: broke (fix it)")
    assert registry.pending_first_load() == ["b"]
    registry.mark_loaded("a")  # a restart: LOADED again, but it has loaded once
    registry.mark_initialized("b", device="cpu")
    registry.mark_loaded("b")  # a reload
    assert registry.pending_first_load() == []


def test_health_object_has_every_field_even_when_unknown() -> None:
    registry = PluginRegistry()
    registry.register("p", description="d", version="1", requires_gpu=True)
    health = registry.list()[0]
    assert set(health) >= {
        "name",
        "state",
        "description",
        "version",
        "reason",
        "requires_gpu",
        "device",
        "uptime_seconds",
        "last_used",
        "success_count",
        "error_count",
        "last_execution_time_ms",
        "avg_execution_time_ms",
        "p95_execution_time_ms",
        "restarts",
        "active_sessions",
    }
    assert health["uptime_seconds"] is None and health["last_used"] is None and health["device"] is None


def test_sessions_move_between_initialized_and_running() -> None:
    registry = registry_in(S.INITIALIZED)
    registry.session_started("p")
    registry.session_started("p")
    assert registry.get("p").state is S.RUNNING
    registry.session_ended("p")
    assert registry.get("p").state is S.RUNNING
    registry.session_ended("p")
    assert registry.get("p").state is S.INITIALIZED
    assert registry.get("p").active_sessions == 0


def test_a_plugin_back_from_a_restart_with_sessions_is_running_again() -> None:
    registry = registry_in(S.INITIALIZED)
    registry.session_started("p")
    registry.mark_failed("p", "WorkerCrashed: gone (restart)")
    registry.mark_loaded("p")
    registry.mark_initialized("p", device="cpu")
    assert registry.get("p").state is S.RUNNING


async def test_counters_and_percentiles() -> None:
    registry = registry_in(S.INITIALIZED)
    for ms in range(1, 101):
        registry.record_success("p", float(ms))
    registry.record_error("p", 7.0)
    health = registry.get("p").health()
    assert health["success_count"] == 100 and health["error_count"] == 1
    assert health["last_execution_time_ms"] == 7.0
    assert health["p95_execution_time_ms"] == 95.0
    assert health["last_used"] is not None and health["last_used"].endswith("Z")


async def test_counter_events_are_coalesced_to_one_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "COUNTER_EVENT_INTERVAL_S", 0.2)
    registry = registry_in(S.INITIALIZED)
    subscription = registry.subscribe()
    for _ in range(50):
        registry.record_success("p", 1.0)
    await asyncio.sleep(0.35)
    events = []
    while len(subscription):
        event = await subscription.get()
        assert event is not None
        events.append(event)
    # The state event just went out, so 50 changes within the interval make one trailing event.
    assert [e.kind for e in events] == ["counters"]
    assert events[-1].health["success_count"] == 50


async def test_a_full_subscription_is_dropped_and_says_so() -> None:
    registry = registry_in(S.INITIALIZED)
    subscription = registry.subscribe(maxsize=2)
    for _ in range(3):
        registry.session_started("p")
        registry.session_ended("p")
    assert await subscription.get() is None  # overflow: the consumer must take a snapshot
    registry.session_started("p")
    event = await subscription.get()
    assert event is not None and event.health["state"] == "RUNNING"


def test_unknown_and_duplicate_names() -> None:
    registry = PluginRegistry()
    registry.register("p")
    with pytest.raises(DuplicatePlugin):
        registry.register("p")
    with pytest.raises(UnknownPlugin):
        registry.get("q")
    assert "p" in registry and "q" not in registry
