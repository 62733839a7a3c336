"""Fan-out of the health channel: many real subscribers, and one that stops reading (DESIGN 4.2)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.health import hub as hub_module
from app.runtime.registry import PluginRegistry
from tests.conftest import LiveServer
from tests.health.clients import Subscriber, epoch, plugin_state
from tests.helpers import png_with_square

SUBSCRIBERS = 500
MAX_DELAY_S = 0.2
MAX_MESSAGE = 16 * 1024  # a snapshot of one plugin is under 1 KB


@pytest.fixture
def many_files() -> Iterator[None]:
    """Two descriptors per subscriber (client and server side live in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SUBSCRIBERS + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is under the {wanted} descriptors this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def subscriber_gauge(server: LiveServer) -> float:
    for family in text_string_to_metric_families(server.get("/metrics").text):
        if family.name == "livetrack_health_subscribers":
            return float(family.samples[0].value)
    raise AssertionError("livetrack_health_subscribers missing from /metrics")


async def test_500_subscribers_all_receive_a_real_state_change(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path], many_files: None
) -> None:
    server = serve(plugins_dirs=(plugins_dir("segfault"),))
    await asyncio.to_thread(server.wait_state, "segfault", "INITIALIZED")
    async with subscribers_closed() as subscribers:
        await _fan_out_to_500(server, subscribers)


async def _fan_out_to_500(server: LiveServer, subscribers: list[Subscriber]) -> None:
    for _ in range(SUBSCRIBERS // 50):
        subscribers += await asyncio.gather(*(Subscriber.open(server.ws_url) for _ in range(50)))
    assert {(await s.next()).type for s in subscribers} == {"snapshot"}
    assert await asyncio.to_thread(subscriber_gauge, server) == SUBSCRIBERS

    response = await asyncio.to_thread(server.post, "/v1/plugins/segfault/run", content=png_with_square())
    assert response.status_code == 502, response.text
    failed = await asyncio.gather(*(s.until(plugin_state("segfault", "FAILED")) for s in subscribers))
    back = await asyncio.gather(*(s.until(plugin_state("segfault", "INITIALIZED")) for s in subscribers))
    assert len(failed) == len(back) == SUBSCRIBERS
    assert len({f.envelope["timestamp"] for f in failed}) == 1  # one registry change, seen by all

    await asyncio.gather(*(s.close() for s in subscribers))
    subscribers.clear()
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(subscriber_gauge, server) != 0:
        assert time.monotonic() < deadline, "subscriptions were not removed when their clients left"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def subscribers_closed() -> AsyncIterator[list[Subscriber]]:
    """A list to put subscribers in; whatever is left in it is reset at the end, so a failed
    test cannot leave the server waiting on a client that never reads."""
    subscribers: list[Subscriber] = []
    try:
        yield subscribers
    finally:
        await asyncio.gather(*(s.abort() for s in subscribers))


def server_side(server: LiveServer, client: socket.socket) -> Any:
    """uvicorn's protocol object for the connection whose client end is `client`."""
    port = client.getsockname()[1]
    return next(c for c in server.server.server_state.connections if getattr(c, "client", None) == ("127.0.0.1", port))


def on_server_loop(server: LiveServer, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    loop = server.server.servers[0].get_loop()
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, loop))


async def flip(registry: PluginRegistry, name: str, rounds: int) -> None:
    """INITIALIZED -> RUNNING -> INITIALIZED `rounds` times: two real state events each, published at once."""
    for _ in range(rounds):
        for _ in range(50):
            registry.session_started(name)
            registry.session_ended(name)
        await asyncio.sleep(0.005)  # let the senders write, as a real event stream would


async def quiet(subscribers: list[Subscriber], for_s: float = 0.3) -> None:
    """Wait until no subscriber has received anything for `for_s`."""
    counts = None
    while counts != [len(s.received) for s in subscribers]:
        counts = [len(s.received) for s in subscribers]
        await asyncio.sleep(for_s)


async def test_a_subscriber_that_stops_reading_delays_no_one_and_gets_a_snapshot_when_it_reads_again(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    server = serve(plugins_dirs=(plugins_dir("colorblob"),))
    await asyncio.to_thread(server.wait_state, "colorblob", "INITIALIZED")
    registry: PluginRegistry = server.server.lifespan.state["runtime"].registry
    async with subscribers_closed() as subscribers:
        await _stop_reading(server, registry, subscribers)


async def _stop_reading(server: LiveServer, registry: PluginRegistry, subscribers: list[Subscriber]) -> None:
    fast = [await Subscriber.open(server.ws_url) for _ in range(5)]
    subscribers += fast
    # Small socket buffers on both ends, so a few hundred events fill them instead of megabytes.
    client_socket = socket.create_connection(("127.0.0.1", server.settings.port))
    client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow = await Subscriber.open(server.ws_url, reading=False, sock=client_socket, max_queue=1)
    subscribers.append(slow)
    connection = server_side(server, client_socket)
    connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    for _ in range(20):
        await on_server_loop(server, flip(registry, "colorblob", 1))
        if not connection.writable.is_set():
            break
    assert not connection.writable.is_set(), "the slow client's socket never filled up"
    await on_server_loop(server, flip(registry, "colorblob", 10))  # 1000 more events while it is stuck
    # Bounded: at most one message past the transport's high-water mark is buffered for it,
    # and its queue was dropped instead of growing.
    high_water = connection.transport.get_write_buffer_limits()[1]
    assert connection.transport.get_write_buffer_size() <= high_water + MAX_MESSAGE
    assert max(len(s) for s in server.server.lifespan.state["health"].subscriptions) <= hub_module.QUEUE_SIZE

    await quiet(fast)
    marked_at = time.time()
    await on_server_loop(server, flip(registry, "colorblob", 1))
    for subscriber in fast:
        first = await subscriber.until(lambda r: r.type == "plugin" and epoch(r.envelope["timestamp"]) >= marked_at)
        assert first.delay < MAX_DELAY_S, f"a reading subscriber got the event {first.delay:.3f} s late"
    assert not connection.writable.is_set()  # still stuck while the others were served

    slow.resume()
    snapshot = await slow.until(lambda r: r.type == "snapshot" and r.envelope["seq"] > 1)
    assert snapshot.payload["plugins"][0]["state"] == "INITIALIZED"
    assert slow.seqs() == list(range(1, len(slow.received) + 1))
    await slow.ws.send('{"type": "ping"}')
    await slow.until(lambda r: r.type == "pong")
    for subscriber in subscribers:
        await subscriber.close()
    subscribers.clear()
