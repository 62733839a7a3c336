"""Session lifecycle: ends on peer close, DELETE or idleness, and leaves nothing behind (DESIGN 4.3)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from aiortc import RTCPeerConnection

from app.runtime import offload
from app.runtime.runtime import PluginRuntime
from app.stream.options import SessionOptions
from app.stream.session import Session
from tests.conftest import LiveServer
from tests.stream.helpers import Clients, client, get_json, plugins_dir

Serve = Callable[..., LiveServer]
CYCLES = 50


async def wait_until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


async def open_sessions(server: LiveServer) -> list[dict[str, object]]:
    sessions: list[dict[str, object]] = await get_json(f"{server.url}/v1/sessions")
    return sessions


async def test_session_ends_when_the_peer_closes(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.received) >= 10, 20, "frames")
    assert (await get_json(f"{server.url}/v1/plugins/colorblob/health"))["state"] == "RUNNING"
    await stream.close()
    async with asyncio.timeout(10):
        while await open_sessions(server):
            await asyncio.sleep(0.1)
    health = await get_json(f"{server.url}/v1/plugins/colorblob/health")
    assert (health["state"], health["active_sessions"]) == ("INITIALIZED", 0)


async def test_delete_closes_the_peer_connection(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.received) >= 10, 20, "frames")
    async with httpx.AsyncClient() as http:
        response = await http.delete(f"{server.url}/v1/sessions/{stream.session_id}")
    assert response.status_code == 200 and response.json()["state"] == "closed"
    await wait_until(lambda: stream.pc.connectionState == "closed", 10, "the client to see the close")
    assert await open_sessions(server) == []


async def test_session_without_frames_closes_after_the_idle_timeout(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),), session_idle_s=1.0)
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.received) >= 10, 20, "frames")
    stream.source.paused.set()
    async with asyncio.timeout(10):
        while await open_sessions(server):
            await asyncio.sleep(0.1)
    await wait_until(lambda: stream.pc.connectionState == "closed", 10, "the client to see the close")


def server_tasks(server: LiveServer) -> int:
    """asyncio tasks alive on the server's event loop (counted on that loop)."""
    loop = server.server.servers[0].get_loop()

    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), loop).result(10)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shm_segments() -> set[str]:
    # The server runs in this process; its segments are named livetrack-<plugin>-<pid>-<token>.
    return {name for name in os.listdir("/dev/shm") if name.startswith("livetrack-") and f"-{os.getpid()}-" in name}


def peer_connections() -> int:
    gc.collect()
    # type() rather than isinstance(): isinstance reads __class__, which some objects (torch's) warn on.
    return sum(type(o) is RTCPeerConnection for o in gc.get_objects())


def threads() -> list[str]:
    # The loop's default pool (aiortc encodes there, the pixel work runs there) is bounded,
    # one thread per usable core, and grows to it as work comes.
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith(offload.POOL_THREAD_PREFIX))


async def test_connect_disconnect_cycles_leave_nothing_behind(serve: Serve, tmp_path: Path) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")

    async def cycle() -> None:
        stream = client.StreamClient(server.url, "colorblob", client.StampedTrack(client.pattern(320, 240), 30))
        try:
            await stream.start()
            await stream.wait_for(lambda: bool(stream.received) and bool(stream.of_type("tracks")), 20, "a frame back")
        finally:
            await stream.close()
        async with asyncio.timeout(10):
            while await open_sessions(server):
                await asyncio.sleep(0.02)

    def resources() -> dict[str, object]:
        return {"server tasks": server_tasks(server), "fds": open_fds(), "shm": shm_segments(), "threads": threads()}

    await cycle()  # warm up: the worker's shared-memory slots, executor threads, imports
    baseline = resources()
    for _ in range(CYCLES):
        await cycle()
    deadline = asyncio.get_running_loop().time() + 10
    while (after := resources()) != baseline and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)  # sockets and threads of the last cycle may take a moment to go
    assert after == baseline
    assert peer_connections() == 0
    health = await get_json(f"{server.url}/v1/plugins/colorblob/health")
    assert (health["state"], health["active_sessions"]) == ("INITIALIZED", 0)


async def test_close_is_idempotent_and_safe_to_call_twice_at_once(tmp_path: Path) -> None:
    runtime = PluginRuntime([tmp_path])  # not started: the plugin below has no worker
    runtime.registry.register("p")
    closed: list[Session] = []
    session = Session("s1", "p", SessionOptions(), runtime, [], closed.append)
    assert runtime.registry.get("p").active_sessions == 1
    await asyncio.gather(session.close("first"), session.close("second"))
    await session.close("third")
    assert closed == [session] and session.closed and session.close_reason == "first"
    assert session.pc.connectionState == "closed" and session.state == "closed"
    assert runtime.registry.get("p").active_sessions == 0
    runtime.registry.close()
