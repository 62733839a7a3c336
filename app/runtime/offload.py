"""Pixel work off the event loop (DESIGN 1): conversion, copies into shared memory and drawing.

One seam for all of it, called as `offload.off_loop(...)`, so that
scripts/bench_loop.py can run the same work inline, the baseline it measures against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run `work` in the loop's default thread pool; numpy, PyAV and OpenCV release the GIL there."""
    return await asyncio.to_thread(work, *args)
