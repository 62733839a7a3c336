"""Boxes the saturated pixels; dereferences NULL on a frame whose options have "crash": true."""

import ctypes
from typing import Any

import numpy as np


class Plugin:
    def __init__(self, device: str, config: dict[str, Any]) -> None:
        pass

    def process(self, batch: list[Any]) -> list[dict[str, Any]]:
        results = []
        for frame in batch:
            if frame.options.get("crash"):
                ctypes.string_at(0)
            saturation = frame.image.max(axis=2).astype(np.int16) - frame.image.min(axis=2)
            ys, xs = np.nonzero(saturation >= 100)
            tracks = []
            if len(xs):
                box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
                tracks.append({"id": 1, "box": box, "score": 1.0, "label": "blob"})
            results.append({"tracks": tracks})
        return results
