"""/v1/ws/health against the real server, real workers and real WebSocket clients (DESIGN 4.2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from app.health import channel as channel_module
from tests.conftest import LiveServer
from tests.health.clients import Received, Subscriber, plugin_state
from tests.helpers import png_with_square

MAX_DELAY_S = 0.2


def transitions(received: list[Received], name: str) -> list[Received]:
    """The `plugin` messages of `name` whose state differs from the one before (snapshot included)."""
    state = None
    changes = []
    for message in received:
        if message.type == "snapshot":
            state = next(p["state"] for p in message.payload["plugins"] if p["name"] == name)
        elif message.type == "plugin" and message.payload["name"] == name:
            if message.payload["state"] != state:
                changes.append(message)
            state = message.payload["state"]
    return changes


async def test_a_crash_and_its_automatic_restart_reach_the_subscriber_in_order_within_200_ms(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    server = serve(plugins_dirs=(plugins_dir("segfault"),))
    subscriber = await Subscriber.open(server.ws_url)
    assert (await subscriber.next()).type == "snapshot"
    await subscriber.until(plugin_state("segfault", "INITIALIZED"))
    settled = len(subscriber.received)

    response = await asyncio.to_thread(server.post, "/v1/plugins/segfault/run", content=png_with_square())
    assert response.status_code == 502, response.text
    await subscriber.until(lambda r: r.type == "plugin" and r.payload["state"] == "INITIALIZED")

    changes = [c for c in transitions(subscriber.received, "segfault") if c.envelope["seq"] > settled]
    assert [c.payload["state"] for c in changes] == ["FAILED", "LOADED", "INITIALIZED"]
    assert changes[0].payload["reason"].startswith("WorkerCrashed: worker exited with signal SIGSEGV")
    assert changes[-1].payload["restarts"] == 1
    assert subscriber.seqs() == list(range(1, len(subscriber.received) + 1))
    # A plugin message's timestamp is the registry's own time of the change.
    assert max(c.delay for c in changes) < MAX_DELAY_S, [round(c.delay, 3) for c in changes]
    assert all(r.type in ("snapshot", "plugin") for r in subscriber.received)
    await subscriber.close()


@pytest.mark.parametrize(
    ("message", "code"),
    [("not json", "invalid_json"), ('{"type": "subscribe"}', "unknown_type"), (b"\x89PNG", "binary_not_supported")],
)
async def test_a_bad_message_gets_an_error_and_the_connection_stays_open(
    serve: Callable[..., LiveServer], message: str | bytes, code: str
) -> None:
    server = serve(plugins_dirs=())
    subscriber = await Subscriber.open(server.ws_url)
    await subscriber.next()
    await subscriber.ws.send(message)
    error = await subscriber.next()
    assert (error.type, error.payload["code"]) == ("error", code)
    await subscriber.ws.send('{"type": "ping"}')
    assert (await subscriber.next()).type == "pong"
    await subscriber.ws.send('{"type": "resync"}')
    assert (await subscriber.next()).type == "snapshot"
    assert subscriber.seqs() == [1, 2, 3, 4]
    await subscriber.close()


async def test_a_message_over_64_kb_closes_with_1009_and_other_subscribers_carry_on(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(plugins_dirs=())
    bystander = await Subscriber.open(server.ws_url)
    await bystander.next()
    async with connect(server.ws_url + "/v1/ws/health") as offender:
        await offender.recv()
        await offender.send('{"type": "ping"}' + " " * (64 * 1024))  # valid JSON, one frame, just over the limit
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            while True:
                await offender.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with connect(server.ws_url + "/v1/ws/health") as offender:
        await offender.recv()
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await offender.send("x" * (1 << 20))
            while True:
                await offender.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await bystander.ws.send('{"type": "ping"}')
    assert (await bystander.next()).type == "pong"
    assert server.get("/healthz").status_code == 200
    await bystander.close()


async def test_heartbeats_arrive_on_a_live_connection(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_module, "HEARTBEAT_INTERVAL_S", 0.2)  # the server thread reads the same module
    server = serve(plugins_dirs=())
    subscriber = await Subscriber.open(server.ws_url)
    await subscriber.next()
    beats = [await subscriber.next(2), await subscriber.next(2)]
    assert [b.type for b in beats] == ["heartbeat", "heartbeat"]
    await subscriber.close()
