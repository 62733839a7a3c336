"""Pixel and codec work off the event loop, in a pool no larger than the machine (DESIGN 1).

One seam for the server's pixel work (conversion, copies into shared memory, drawing),
called as `offload.off_loop(...)`, so that scripts/bench_loop.py can run the same work
inline, the baseline it measures against.

The loop's default pool runs that work and aiortc's encoders (`run_in_executor(None)`).
The work is C code that releases the GIL, so threads beyond the cores run nothing sooner;
each one only adds a thread that wakes to take the GIL back between its calls, and the
loop's thread waits behind every such waiter (see docs/decisions.md for the figures).
So the pool has a thread per core the process may use.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import cv2

T = TypeVar("T")

POOL_THREAD_PREFIX = "livetrack-background"


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run `work` in the loop's default thread pool; numpy, PyAV and OpenCV release the GIL there."""
    return await asyncio.to_thread(work, *args)


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def background_pool() -> ThreadPoolExecutor:
    """The loop's default pool: pixel work and aiortc's encoders, one thread per usable core."""
    return ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix=POOL_THREAD_PREFIX)


def single_threaded_opencv() -> None:
    """OpenCV without its own thread pool in this process.

    Sessions already spread the pixel work over the pool's threads; OpenCV's workers would
    split each conversion again and spin (sched_yield) between calls: 0.82 -> 0.60 ms of CPU
    per plugin call of a 640x480 frame measured, for the same wall time.
    """
    cv2.setNumThreads(1)
