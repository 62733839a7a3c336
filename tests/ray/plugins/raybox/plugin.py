"""Boxes the saturated pixels; its track's label names the batch (replica pid and batch number).

Two sessions whose tracks carry the same label were processed in one call of process().
A frame whose options have "crash": true dereferences NULL (a replica segfault); one whose
options have "hang": true never returns (the replica's deadline).
"""

import ctypes
import os
import time
from typing import Any

import numpy as np


class Plugin:
    def __init__(self, device: str, config: dict[str, Any]) -> None:
        self.batches = 0

    def process(self, batch: list[Any]) -> list[dict[str, Any]]:
        self.batches += 1
        label = f"b{os.getpid()}-{self.batches}"
        results = []
        for frame in batch:
            if frame.options.get("crash"):
                ctypes.string_at(0)
            if frame.options.get("hang"):
                time.sleep(3600)
            saturation = frame.image.max(axis=2).astype(np.int16) - frame.image.min(axis=2)
            ys, xs = np.nonzero(saturation >= 100)
            tracks = []
            if len(xs):
                box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
                tracks.append({"id": 1, "box": box, "score": 1.0, "label": label})
            results.append({"tracks": tracks})
        return results
