"""A tracker that breaks now and then while streaming, for scripts/soak.py.

It boxes the saturated pixels of a frame. A session asks for trouble with the options
`{"fault": "hang" | "crash", "fault_every": N}`: every Nth frame this worker process
sees (so the count starts again after each restart) it sleeps `hang_s` (config), past
its `timeout_ms`, or dereferences NULL. The module has its own name (not `plugin.py`)
so mypy, which checks scripts/ as a whole, never sees two modules called `plugin`.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np


class Plugin:
    def __init__(self, device: str, config: dict[str, Any]) -> None:
        self._hang_s = float(config.get("hang_s", 3.0))
        self._frames = 0

    def process(self, batch: list[Any]) -> list[dict[str, Any]]:
        results = []
        for frame in batch:
            self._frames += 1
            self._maybe_fail(frame.options)
            # Every other pixel is enough to find the square and keeps the worker cheap.
            small = frame.image[::2, ::2].astype(np.int16)
            ys, xs = np.nonzero(small.max(axis=2) - small.min(axis=2) >= 100)
            tracks = []
            if len(xs):
                box = [float(xs.min() * 2), float(ys.min() * 2), float(xs.max() * 2 + 2), float(ys.max() * 2 + 2)]
                tracks.append({"id": 1, "box": box, "score": 1.0, "label": "blob"})
            results.append({"tracks": tracks})
        return results

    def _maybe_fail(self, options: dict[str, Any]) -> None:
        every = options.get("fault_every")
        if not isinstance(every, int) or every <= 0 or self._frames % every:
            return
        if options.get("fault") == "hang":
            time.sleep(self._hang_s)  # bounded, though the host kills the worker long before
        elif options.get("fault") == "crash":
            ctypes.string_at(0)
