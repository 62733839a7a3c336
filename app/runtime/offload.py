"""Pixel and codec work off the event loop, and below it in CPU priority (DESIGN 1).

One seam for the server's pixel work (conversion, copies into shared memory, drawing),
called as `offload.off_loop(...)`, so that scripts/bench_loop.py can run the same work
inline, the baseline it measures against.

The loop's default pool runs that work and aiortc's encoders (`run_in_executor(None)`);
aiortc's decoders run in a thread per received track. On a saturated machine all of
them compete with the loop's thread for the CPU, and every RTP packet, REST answer and
health message waits behind the loser. So these threads run `BACKGROUND_NICENESS`
nicer than the loop: when the cores are busy, the loop is served first and the video
work takes the rest. Linux keeps a nice value per thread; elsewhere this is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import cv2

T = TypeVar("T")

BACKGROUND_NICENESS = 10
POOL_THREAD_PREFIX = "livetrack-background"
# aiortc names the thread it starts for each received track "<kind>-decoder".
_DECODER_SUFFIX = "-decoder"
_lowered: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run `work` in the loop's default thread pool; numpy, PyAV and OpenCV release the GIL there."""
    return await asyncio.to_thread(work, *args)


def _lower(native_id: int) -> None:
    # A thread starts at its creator's niceness (the loop's); an unprivileged process may only raise it.
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.setpriority off POSIX
        niceness = os.getpriority(os.PRIO_PROCESS, native_id)
        os.setpriority(os.PRIO_PROCESS, native_id, min(19, niceness + BACKGROUND_NICENESS))


def lower_this_thread() -> None:
    """Run the calling thread below the event loop's CPU priority (a pool's initializer)."""
    _lower(threading.get_native_id())


def background_pool() -> ThreadPoolExecutor:
    """The loop's default pool: pixel work and aiortc's encoders, each thread below the loop's priority."""
    return ThreadPoolExecutor(thread_name_prefix=POOL_THREAD_PREFIX, initializer=lower_this_thread)


def single_threaded_opencv() -> None:
    """OpenCV without its own thread pool in this process.

    Sessions already spread the pixel work over the pool's threads; OpenCV's workers would
    split each conversion again and spin (sched_yield) between calls: 0.82 -> 0.60 ms of CPU
    per plugin call of a 640x480 frame measured, for the same wall time.
    """
    cv2.setNumThreads(1)


def lower_decoder_threads() -> None:
    """Lower aiortc's decoder threads that are not yet lowered; call once a track delivers frames."""
    for thread in threading.enumerate():
        if thread.name.endswith(_DECODER_SUFFIX) and thread.native_id is not None and thread not in _lowered:
            _lower(thread.native_id)
            _lowered.add(thread)
