"""HealthChannel against a fake connection and a real registry: the protocol of DESIGN 4.2, in-process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from unittest.mock import ANY

import pytest
from starlette.types import Message

from app.health import channel as channel_module
from app.health import hub as hub_module
from app.health.channel import HealthChannel
from app.health.hub import HealthHub
from app.runtime.registry import PluginRegistry


class FakeConnection:
    """Incoming messages from a queue; outgoing envelopes into a list. `blocked` stalls sends like a full socket."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.unblocked = asyncio.Event()
        self.unblocked.set()
        self._arrived = asyncio.Event()
        self._read = 0

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send_text(self, data: str) -> None:
        await self.unblocked.wait()
        self.sent.append(json.loads(data))
        self._arrived.set()

    def client_sends(self, text: str | None = None, data: bytes | None = None) -> None:
        message: Message = {"type": "websocket.receive"}
        message.update({"text": text} if text is not None else {"bytes": data})
        self.incoming.put_nowait(message)

    async def next(self, within: float = 2.0) -> dict[str, Any]:
        """The next envelope not yet returned by next()."""
        async with asyncio.timeout(within):
            while len(self.sent) <= self._read:
                self._arrived.clear()
                await self._arrived.wait()
        self._read += 1
        return self.sent[self._read - 1]


class FakeSessions:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def summaries(self) -> list[dict[str, Any]]:
        return list(self.rows)


@pytest.fixture
def registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.register("p")
    registry.mark_initialized("p", device="cpu")
    return registry


@pytest.fixture
async def channel(registry: PluginRegistry) -> AsyncIterator[tuple[HealthHub, FakeConnection, asyncio.Task[None]]]:
    hub = HealthHub(registry, FakeSessions())
    connection = FakeConnection()
    task = asyncio.create_task(HealthChannel(hub, connection, "test").run())
    yield hub, connection, task
    connection.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 2)


def assert_contiguous(envelopes: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))


async def test_snapshot_comes_first_even_when_a_ping_is_already_waiting(registry: PluginRegistry) -> None:
    hub = HealthHub(registry)
    connection = FakeConnection()
    connection.client_sends('{"type": "ping"}')
    task = asyncio.create_task(HealthChannel(hub, connection, "test").run())
    snapshot, pong = await connection.next(), await connection.next()
    assert snapshot["type"] == "snapshot" and pong["type"] == "pong"
    assert snapshot["payload"] == {"plugins": [_stable(h) for h in registry.list()], "sessions": []}
    assert set(snapshot) == {"type", "seq", "timestamp", "payload"} and snapshot["timestamp"].endswith("Z")
    assert_contiguous(connection.sent)
    connection.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 2)


async def test_every_transition_is_a_plugin_message_stamped_with_its_registry_time(
    channel: tuple[HealthHub, FakeConnection, asyncio.Task[None]], registry: PluginRegistry
) -> None:
    _, connection, _ = channel
    await connection.next()
    before = time.time()
    registry.mark_failed("p", "ValueError: broke (fix it)")
    registry.mark_loaded("p")
    registry.mark_initialized("p", device="cpu")
    messages = [await connection.next() for _ in range(3)]
    assert [m["type"] for m in messages] == ["plugin"] * 3
    assert [m["payload"]["state"] for m in messages] == ["FAILED", "LOADED", "INITIALIZED"]
    assert messages[0]["payload"]["reason"] == "ValueError: broke (fix it)"
    assert messages[2]["payload"] == _stable(registry.get("p").health())
    stamp = messages[0]["timestamp"]
    assert before - 0.001 <= _epoch(stamp) <= time.time()
    assert_contiguous(connection.sent)


def _stable(health: dict[str, Any]) -> dict[str, Any]:
    """A health object without uptime, which moves on its own between two reads."""
    return {**health, "uptime_seconds": ANY}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_ping_gets_pong_and_resync_gets_a_fresh_snapshot(
    channel: tuple[HealthHub, FakeConnection, asyncio.Task[None]], registry: PluginRegistry
) -> None:
    _, connection, _ = channel
    await connection.next()
    connection.client_sends('{"type": "ping"}')
    assert (await connection.next())["type"] == "pong"
    registry.mark_running("p")
    assert (await connection.next())["payload"]["state"] == "RUNNING"
    connection.client_sends('{"type": "resync"}')
    snapshot = await connection.next()
    assert snapshot["type"] == "snapshot"
    assert [p["state"] for p in snapshot["payload"]["plugins"]] == ["RUNNING"]
    assert_contiguous(connection.sent)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"text": "not json"}, "invalid_json"),
        ({"text": "[1, 2]"}, "invalid_message"),
        ({"text": '{"kind": "ping"}'}, "invalid_message"),
        ({"text": '{"type": 7}'}, "invalid_message"),
        ({"text": '{"type": "subscribe"}'}, "unknown_type"),
        ({"data": b"\x00\x01"}, "binary_not_supported"),
    ],
)
async def test_a_bad_client_message_gets_an_error_and_the_channel_stays_open(
    channel: tuple[HealthHub, FakeConnection, asyncio.Task[None]], message: dict[str, Any], code: str
) -> None:
    _, connection, task = channel
    await connection.next()
    connection.client_sends(**message)
    error = await connection.next()
    assert error["type"] == "error" and error["payload"]["code"] == code
    assert '{"type": "ping"}' in error["payload"]["message"]
    connection.client_sends('{"type": "ping"}')
    assert (await connection.next())["type"] == "pong"
    assert not task.done()


async def test_heartbeats_come_at_the_configured_interval(
    monkeypatch: pytest.MonkeyPatch, registry: PluginRegistry
) -> None:
    monkeypatch.setattr(channel_module, "HEARTBEAT_INTERVAL_S", 0.1)
    connection = FakeConnection()
    task = asyncio.create_task(HealthChannel(HealthHub(registry), connection, "beats").run())
    await connection.next()
    started = time.monotonic()
    beats = [await connection.next(), await connection.next()]
    assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
    assert 0.15 <= time.monotonic() - started < 1.0
    connection.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 2)


async def test_sessions_go_out_at_most_once_per_interval_and_once_more_when_the_last_ends(
    monkeypatch: pytest.MonkeyPatch, registry: PluginRegistry
) -> None:
    monkeypatch.setattr(channel_module, "SESSIONS_INTERVAL_S", 0.1)
    monkeypatch.setattr(hub_module, "SESSIONS_CACHE_S", 0.0)
    sessions = FakeSessions()
    connection = FakeConnection()
    task = asyncio.create_task(HealthChannel(HealthHub(registry, sessions), connection, "s").run())
    await connection.next()
    await asyncio.sleep(0.35)
    assert connection.sent[1:] == []  # no sessions, no message
    sessions.rows = [{"session_id": "a", "fps_in": 30.0}]
    started = time.monotonic()
    await asyncio.sleep(0.55)
    sessions.rows = []
    await asyncio.sleep(0.35)
    sent = [m for m in connection.sent if m["type"] == "sessions"]
    assert 4 <= len(sent) <= 7, f"{len(sent)} sessions messages in {time.monotonic() - started:.2f} s"
    assert sent[0]["payload"] == {"sessions": [{"session_id": "a", "fps_in": 30.0}]}
    assert sent[-1]["payload"] == {"sessions": []} and sent[-2]["payload"]["sessions"]
    gaps = [_epoch(b["timestamp"]) - _epoch(a["timestamp"]) for a, b in zip(sent, sent[1:], strict=False)]
    assert min(gaps) >= 0.09
    assert_contiguous(connection.sent)
    connection.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 2)


async def test_a_stalled_subscriber_has_a_bounded_queue_and_gets_a_snapshot_when_it_reads_again(
    monkeypatch: pytest.MonkeyPatch, registry: PluginRegistry
) -> None:
    monkeypatch.setattr(hub_module, "QUEUE_SIZE", 8)
    hub = HealthHub(registry)
    stalled, healthy = FakeConnection(), FakeConnection()
    tasks = [asyncio.create_task(HealthChannel(hub, c, "c").run()) for c in (stalled, healthy)]
    await stalled.next(), await healthy.next()
    stalled.unblocked.clear()
    registry.mark_running("p")
    await asyncio.sleep(0.05)  # the stalled sender is now stuck sending this event
    registry.mark_idle("p")
    for _ in range(50):
        registry.mark_running("p")
        registry.mark_idle("p")
    await asyncio.sleep(0.05)
    assert all(len(s) <= 8 for s in hub.subscriptions)
    # 100 events in one go overflow the reading subscriber too; it resumes from a snapshot.
    assert healthy.sent[-1]["type"] == "snapshot"
    stalled.unblocked.set()
    rest = [await stalled.next() for _ in range(2)]
    # The send that was stuck goes out, then a snapshot replaces the 101 events it missed.
    assert [m["type"] for m in rest] == ["plugin", "snapshot"]
    assert rest[1]["payload"]["plugins"][0]["state"] == "INITIALIZED"
    await asyncio.sleep(0.05)
    assert len(stalled.sent) == 3
    assert_contiguous(stalled.sent)
    for connection in (stalled, healthy):
        connection.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(*tasks), 2)


async def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(
    monkeypatch: pytest.MonkeyPatch, registry: PluginRegistry
) -> None:
    monkeypatch.setattr(channel_module, "SEND_TIMEOUT_S", 0.2)
    hub = HealthHub(registry)
    connection = FakeConnection()
    task = asyncio.create_task(HealthChannel(hub, connection, "stuck").run())
    await connection.next()
    connection.unblocked.clear()
    registry.mark_running("p")
    await asyncio.wait_for(task, 2)  # returns by itself: no client message, no disconnect needed
    assert hub.subscriber_count == 0 and registry.subscriber_count == 0


async def test_the_subscription_is_removed_however_the_channel_ends(registry: PluginRegistry) -> None:
    hub = HealthHub(registry)
    connection = FakeConnection()
    task = asyncio.create_task(HealthChannel(hub, connection, "c").run())
    await connection.next()
    assert hub.subscriber_count == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.subscriber_count == 0 and registry.subscriber_count == 0
