"""Video work runs below the event loop's CPU priority (app/runtime/offload.py).

On a saturated machine the loop's thread must win the CPU over decoders, encoders and
pixel work, or every RTP packet, REST answer and health message waits behind them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.runtime import offload
from tests.conftest import LiveServer
from tests.stream.helpers import Clients, plugins_dir

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")

Serve = Callable[..., LiveServer]


def niceness(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


def lowered(base: int) -> int:
    return min(19, base + offload.BACKGROUND_NICENESS)


def test_the_background_pool_runs_below_its_creator() -> None:
    base = niceness(threading.get_native_id())
    with offload.background_pool() as pool:
        seen = pool.submit(lambda: niceness(threading.get_native_id())).result()
    assert seen == lowered(base)
    assert niceness(threading.get_native_id()) == base, "the caller's own thread must keep its priority"


def test_decoder_threads_are_lowered_once_and_nothing_else() -> None:
    base = niceness(threading.get_native_id())
    release = threading.Event()
    decoder = threading.Thread(target=release.wait, name="video-decoder")
    other = threading.Thread(target=release.wait, name="not-a-codec")
    decoder.start()
    other.start()
    try:
        assert decoder.native_id is not None and other.native_id is not None
        offload.lower_decoder_threads()
        offload.lower_decoder_threads()  # a second session's first frame: already lowered ones stay as they are
        assert niceness(decoder.native_id) == lowered(base)
        assert niceness(other.native_id) == base
    finally:
        release.set()
        decoder.join()
        other.join()


async def test_a_streaming_server_lowers_its_codec_threads_not_its_loop(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    base = niceness(threading.get_native_id())
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.received) >= 10, 20, "frames back")
    threads = threading.enumerate()
    # aiortc names a receiver's decoder thread "video-decoder"; if an upgrade renames it, this says so.
    decoders = [t for t in threads if t.name == "video-decoder" and t.native_id is not None]
    assert decoders, "no aiortc thread named video-decoder: lower_decoder_threads() matches nothing"
    assert any(niceness(t.native_id) == lowered(base) for t in decoders if t.native_id is not None)
    # Encoders (aiortc's run_in_executor(None)) and pixel work share the loop's default pool.
    pool = [t for t in threads if t.name.startswith(offload.POOL_THREAD_PREFIX) and t.native_id is not None]
    assert pool and all(niceness(t.native_id) == lowered(base) for t in pool if t.native_id is not None)
    assert server.thread.native_id is not None
    assert niceness(server.thread.native_id) == base, "the event loop's thread keeps its priority"
