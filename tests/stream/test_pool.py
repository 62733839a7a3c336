"""The server's pixel work and aiortc's encoders share a pool of one thread per usable core.

Threads past the cores run no work sooner, and each one is one more waiter for the GIL
ahead of the event loop's thread (docs/decisions.md has the loop-lag figures).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from app.runtime import offload
from tests.conftest import LiveServer
from tests.stream.helpers import Clients, plugins_dir

Serve = Callable[..., LiveServer]
SESSIONS = 3


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(offload.POOL_THREAD_PREFIX)]


async def test_pool_work_never_runs_on_more_threads_than_cores() -> None:
    cores = offload.usable_cores()
    running = 0
    most = 0
    lock = threading.Lock()
    all_cores_busy = threading.Event()
    release = threading.Event()

    def job() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == cores:
                all_cores_busy.set()
        release.wait(10)
        with lock:
            running -= 1

    with offload.background_pool() as pool:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(pool, job) for _ in range(cores + 4)]
        assert await asyncio.to_thread(all_cores_busy.wait, 10), "the pool never ran a job per core"
        # The other jobs are queued, not running: a pool without the bound starts them within this window.
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.gather(*jobs)
    assert most == cores


async def test_a_streaming_server_encodes_and_draws_on_one_thread_per_core(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")
    streams = [await clients.connect(server.url, "colorblob") for _ in range(SESSIONS)]
    for stream in streams:
        await stream.wait_for(lambda s=stream: len(s.received) >= 15, 30, "frames back")  # type: ignore[misc]
    # Encoders and drawing of several sessions at once: a pool of the library's default size
    # (cores + 4) would have grown past the cores by now.
    assert 1 <= len(pool_threads()) <= offload.usable_cores()
