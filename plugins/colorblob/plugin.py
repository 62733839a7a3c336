"""colorblob: finds saturated coloured blobs and keeps an id on each.

Deterministic and cheap, so tests can assert exactly where a box is. A blob is a
connected region whose saturation (max - min over RGB) passes `min_saturation`;
its label is the name of its mean hue.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

HUE_NAMES = ((30, "red"), (90, "yellow"), (150, "green"), (210, "cyan"), (270, "blue"), (330, "magenta"), (360, "red"))
MAX_MATCH_DISTANCE = 80.0


def hue_name(rgb: np.ndarray) -> str:
    r, g, b = (float(c) for c in rgb)
    high, low = max(r, g, b), min(r, g, b)
    if high == low:
        return "grey"
    if high == r:
        hue = (60 * (g - b) / (high - low)) % 360
    elif high == g:
        hue = 60 * (b - r) / (high - low) + 120
    else:
        hue = 60 * (r - g) / (high - low) + 240
    return next(name for limit, name in HUE_NAMES if hue < limit)


class _SessionTracks:
    """Greedy nearest-centre matching; enough for blobs that move a little per frame."""

    def __init__(self) -> None:
        self.next_id = 1
        self.centres: dict[int, tuple[float, float, str]] = {}

    def assign(self, blobs: list[tuple[list[float], str]]) -> list[int]:
        ids: list[int] = []
        free = dict(self.centres)
        updated: dict[int, tuple[float, float, str]] = {}
        for box, label in blobs:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            best = min(
                (tid for tid, (x, y, lab) in free.items() if lab == label),
                key=lambda tid: (free[tid][0] - cx) ** 2 + (free[tid][1] - cy) ** 2,
                default=None,
            )
            if best is not None and np.hypot(free[best][0] - cx, free[best][1] - cy) <= MAX_MATCH_DISTANCE:
                del free[best]
                track_id = best
            else:
                track_id, self.next_id = self.next_id, self.next_id + 1
            updated[track_id] = (cx, cy, label)
            ids.append(track_id)
        self.centres = updated
        return ids


class ColorBlobTracker:
    def __init__(self, device: str, config: dict[str, Any]) -> None:
        self.min_saturation = int(config.get("min_saturation", 100))
        self.min_area = int(config.get("min_area", 64))
        self.sessions: dict[str, _SessionTracks] = {}
        logger.info("colorblob ready on %s", device)

    def detect(self, image: np.ndarray, min_area: int) -> list[tuple[list[float], str]]:
        saturation = image.max(axis=2).astype(np.int16) - image.min(axis=2)
        labels, count = ndimage.label(saturation >= self.min_saturation)
        blobs = []
        for index, region in enumerate(ndimage.find_objects(labels), start=1):
            if region is None:
                continue
            mask = labels[region] == index
            if int(mask.sum()) < min_area:
                continue
            ys, xs = region
            mean = image[region][mask].mean(axis=0)
            box = [float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)]
            blobs.append((box, hue_name(mean)))
        return blobs

    def process(self, batch: list[Any]) -> list[dict[str, Any]]:
        results = []
        for frame in batch:
            min_area = int(frame.options.get("min_area", self.min_area))
            blobs = self.detect(frame.image, min_area)
            tracks = self.sessions.setdefault(frame.session_id, _SessionTracks())
            ids = tracks.assign(blobs)
            results.append(
                {
                    "tracks": [
                        {"id": track_id, "box": box, "score": 1.0, "label": label}
                        for track_id, (box, label) in zip(ids, blobs, strict=True)
                    ]
                }
            )
        return results

    def end_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
