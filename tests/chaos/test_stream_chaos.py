"""Chaos around sessions and subscribers: peers that vanish mid-frame, subscribers that vanish mid-message."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import LiveServer
from tests.health.clients import Subscriber, plugin_state
from tests.helpers import png_with_square
from tests.stream.helpers import Clients, get_json, plugins_dir
from tests.stream.test_lifecycle import server_tasks

Serve = Callable[..., LiveServer]
CHAOS_PLUGINS = Path(__file__).resolve().parent / "plugins"


def chaos_plugins(tmp_path: Path, *names: str) -> Path:
    folder = plugins_dir(tmp_path, *[n for n in names if not (CHAOS_PLUGINS / n).is_dir()])
    for name in names:
        if (CHAOS_PLUGINS / name).is_dir():
            (folder / name).symlink_to(CHAOS_PLUGINS / name)
    return folder


async def test_a_peer_closed_mid_frame_leaves_the_plugin_and_other_sessions_untouched(
    serve: Serve, clients: Clients, tmp_path: Path
) -> None:
    server = serve(plugins_dirs=(chaos_plugins(tmp_path, "sleepy", "colorblob"),))
    for name in ("sleepy", "colorblob"):
        await asyncio.to_thread(server.wait_state, name, "INITIALIZED")
    baseline_tasks = server_tasks(server)
    bystander = await clients.connect(server.url, "colorblob")
    victim = await clients.connect(server.url, "sleepy")
    # The first answer proves a frame went through; the next one is now inside its 600 ms call.
    await victim.wait_for(lambda: len(victim.of_type("tracks")) >= 1, 30, "a sleepy frame")
    await asyncio.sleep(0.25)
    assert server.health("sleepy")["state"] == "RUNNING"
    await victim.pc.close()

    async with asyncio.timeout(15):
        while [s["plugin"] for s in await get_json(f"{server.url}/v1/sessions")] != ["colorblob"]:
            await asyncio.sleep(0.1)
    seen = len(bystander.of_type("tracks"))
    await bystander.wait_for(lambda: len(bystander.of_type("tracks")) >= seen + 10, 15, "the bystander's tracks")
    sleepy = await asyncio.to_thread(server.wait_state, "sleepy", "INITIALIZED", timeout=10)
    assert sleepy["error_count"] == 0 and sleepy["restarts"] == 0 and sleepy["active_sessions"] == 0
    assert server.health("colorblob")["state"] == "RUNNING"
    # The next caller of the plugin is served normally: nothing of the closed session is waiting.
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{server.url}/v1/plugins/sleepy/run", content=png_with_square())
    assert response.status_code == 200
    await bystander.close()
    async with asyncio.timeout(10):
        while server_tasks(server) > baseline_tasks:
            await asyncio.sleep(0.1)


def raw_subscriber(port: int) -> socket.socket:
    """A WebSocket client that upgrades, reads almost nothing, and can be reset mid-message."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b"101" in sock.recv(12)
    return sock


def reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close sends RST, the way a crashed client or a dropped network ends a connection.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_subscribers_reset_mid_message_leave_the_others_served(serve: Serve, tmp_path: Path) -> None:
    server = serve(plugins_dirs=(chaos_plugins(tmp_path, "segfault", "colorblob"),))
    await asyncio.to_thread(server.wait_state, "segfault", "INITIALIZED")
    watcher = await Subscriber.open(server.ws_url)
    vanishing = [await asyncio.to_thread(raw_subscriber, server.settings.port) for _ in range(20)]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        # Events are being written to every subscriber while half of them reset their connection.
        crash = asyncio.create_task(http.post("/v1/plugins/segfault/run", content=png_with_square()))
        for sock in vanishing[:10]:
            reset(sock)
        assert (await crash).status_code == 502
        for sock in vanishing[10:]:
            reset(sock)
        await asyncio.to_thread(server.wait_state, "segfault", "INITIALIZED", timeout=30)
        await watcher.until(plugin_state("segfault", "INITIALIZED"), within=10)
        states = [
            r.payload["state"]
            for r in watcher.received
            if r.type == "plugin" and r.payload["name"] == "segfault" and r.payload["state"] != "INITIALIZED"
        ]
        assert states == ["FAILED", "LOADED"]
        seqs = watcher.seqs()
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        async with asyncio.timeout(15):
            while "livetrack_health_subscribers 1.0" not in (await http.get("/metrics")).text:
                await asyncio.sleep(0.1)
        assert (await http.get("/healthz")).status_code == 200
    await watcher.close()
