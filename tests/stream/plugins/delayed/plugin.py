"""Boxes the saturated pixels of each frame, taking `delay_ms` (a client option, default 200) per call.

Reports no velocity, so the server estimates one from the track's last results.
"""

import time
from typing import Any

import numpy as np


def saturated_box(image: np.ndarray) -> list[dict[str, Any]]:
    small = image[::2, ::2].astype(np.int16)
    ys, xs = np.nonzero(small.max(axis=2) - small.min(axis=2) >= 100)
    if len(xs) == 0:
        return []
    box = [float(xs.min() * 2), float(ys.min() * 2), float(xs.max() * 2 + 2), float(ys.max() * 2 + 2)]
    return [{"id": 1, "box": box, "score": 1.0, "label": "blob"}]


class Plugin:
    def __init__(self, device: str, config: dict[str, Any]) -> None:
        pass

    def process(self, batch: list[Any]) -> list[dict[str, Any]]:
        started = time.monotonic()
        results = [{"tracks": saturated_box(frame.image)} for frame in batch]
        delay_s = max(float(frame.options.get("delay_ms", 200)) for frame in batch) / 1000
        time.sleep(max(0.0, started + delay_s - time.monotonic()))
        return results
