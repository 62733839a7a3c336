"""Two GPU plugins on one GPU: both keep a working frame rate, and only their workers hold CUDA."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.gpu.helpers import holds_cuda, needs_cuda, plugin_folder, stream_face
from tests.stream.helpers import Clients, get_json

pytestmark = [pytest.mark.gpu, needs_cuda()]

WINDOW_S = 8.0
# DESIGN 1: boxes stay on a moving face only with about 8 fresh results a second.
MIN_PROCESSED_FPS = 8.0
FAIR_SHARE = 0.5  # the slower plugin gets at least half the faster one's frame rate


async def processed(url: str) -> dict[str, int]:
    return {s["plugin"]: int(s["frames_processed"]) for s in await get_json(url + "/v1/sessions")}


async def test_two_gpu_plugins_do_not_starve_each_other_and_the_server_never_initialises_cuda(
    serve: Callable[..., LiveServer], tmp_path: Path, clients: Clients
) -> None:
    plugin_folder(tmp_path, "videotracker", "tracker_a")
    server = serve(plugins_dirs=(plugin_folder(tmp_path, "videotracker", "tracker_b"),), gpu_policy="require")
    for name in ("tracker_a", "tracker_b"):
        health = await asyncio.to_thread(server.wait_state, name, "INITIALIZED", "FAILED", "UNAVAILABLE", timeout=180)
        assert (health["state"], health["device"]) == ("INITIALIZED", "cuda"), health
    streams: list[Any] = [await stream_face(clients, server.url, name) for name in ("tracker_a", "tracker_b")]
    for stream in streams:
        await stream.wait_for(lambda s=stream: len(s.of_type("tracks")) >= 10, 60, "10 tracks messages")

    start = await processed(server.url)
    await asyncio.sleep(WINDOW_S)  # a measurement window, not a wait for an event
    end = await processed(server.url)

    fps = {name: (end[name] - start[name]) / WINDOW_S for name in ("tracker_a", "tracker_b")}
    assert min(fps.values()) >= MIN_PROCESSED_FPS, fps
    assert min(fps.values()) >= FAIR_SHARE * max(fps.values()), fps
    workers = [int(server.health(name)["worker_pid"]) for name in ("tracker_a", "tracker_b")]
    assert all(holds_cuda(pid) for pid in workers), "the probe cannot see CUDA in the workers"
    assert not holds_cuda(os.getpid()), "the server process initialised CUDA"
    torch = sys.modules.get("torch")
    assert torch is None or not torch.cuda.is_initialized()
