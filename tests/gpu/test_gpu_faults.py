"""CUDA failures inside a worker stay inside it: a plugin past its device memory cap, a CUDA error, a
segfault with a CUDA context. Each is FAILED with a reason, restarted, and the server and the other
GPU plugin keep working."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import LiveServer
from tests.gpu.helpers import holds_cuda, needs_cuda, plugin_folder, stream_face, tracking_sequences
from tests.helpers import REASON
from tests.stream.helpers import Clients

pytestmark = [pytest.mark.gpu, needs_cuda()]

Serve = Callable[..., LiveServer]


def face_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tracking_sequences.build("straight", 640, 480, 2).render(0).image).save(buffer, format="PNG")
    return buffer.getvalue()


def with_faces(stream: Any) -> list[dict[str, Any]]:
    return [m for m in stream.of_type("tracks") if m["tracks"]]


async def wait_initialized(server: LiveServer, *names: str) -> None:
    for name in names:
        health = await asyncio.to_thread(server.wait_state, name, "INITIALIZED", "FAILED", "UNAVAILABLE", timeout=180)
        assert (health["state"], health["device"]) == ("INITIALIZED", "cuda"), health


async def test_a_plugin_past_its_device_memory_cap_is_failed_while_the_tracker_keeps_its_gpu_work(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    plugin_folder(tmp_path, "cuda_memory_hog")
    server = serve(plugins_dirs=(plugin_folder(tmp_path, "videotracker"),), gpu_policy="require")
    await wait_initialized(server, "videotracker", "cuda_memory_hog")
    stream = await stream_face(clients, server.url, "videotracker")
    await stream.wait_for(lambda: len(with_faces(stream)) >= 10, 60, "10 tracks messages with a face")

    response = await asyncio.to_thread(server.post, "/v1/plugins/cuda_memory_hog/run", content=face_png())

    assert response.status_code == 502, f"the cap did not stop the hog: {response.text}"
    reason = response.json()["error"]["message"]
    assert reason.startswith("MemoryError: CUDA out of memory allocating 512.00 MiB"), reason
    assert "device memory cap of 3072 MB (memory_limit_mb)" in reason and REASON.match(reason), reason
    hog = await asyncio.to_thread(server.wait_for, "cuda_memory_hog", lambda h: h["restarts"] >= 1, 60)
    assert hog["error_count"] == 1
    before = len(with_faces(stream))
    await stream.wait_for(lambda: len(with_faces(stream)) >= before + 20, 30, "20 more face tracks after the hog")
    tracker = server.health("videotracker")
    assert (tracker["state"], tracker["device"], tracker["error_count"]) == ("RUNNING", "cuda", 0), tracker


@pytest.mark.parametrize(
    ("fault", "what"),
    [
        ("illegal_address", "CUDA error: an illegal memory access was encountered"),
        ("device_assert", "CUDA error: device-side assert triggered"),
        ("segfault", "worker exited with signal SIGSEGV while processing frame 0"),
    ],
)
async def test_a_cuda_fault_in_a_worker_is_contained_and_restarted(
    serve: Serve, tmp_path: Path, fault: str, what: str
) -> None:
    plugin_folder(tmp_path, "cuda_fault", fault=fault)
    server = serve(plugins_dirs=(plugin_folder(tmp_path, "videotracker"),), gpu_policy="require")
    await wait_initialized(server, "videotracker", "cuda_fault")

    response = await asyncio.to_thread(server.post, "/v1/plugins/cuda_fault/run", content=face_png())

    assert response.status_code == 502, response.text
    reason = response.json()["error"]["message"]
    assert what in reason and REASON.match(reason), reason
    health = await asyncio.to_thread(
        server.wait_for, "cuda_fault", lambda h: h["restarts"] >= 1 and h["state"] == "INITIALIZED", 120
    )
    assert health["device"] == "cuda"
    assert server.get("/healthz").status_code == 200
    tracked = await asyncio.to_thread(server.post, "/v1/plugins/videotracker/run", content=face_png())
    assert tracked.status_code == 200, tracked.text
    assert server.health("videotracker")["error_count"] == 0
    # The server's own process never touched CUDA; the workers did.
    assert holds_cuda(int(health["worker_pid"]))
    assert not holds_cuda(os.getpid())
