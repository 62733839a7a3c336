"""Where the newest tracks are now: boxes moved to an output frame's time by each track's motion (DESIGN 1).

A plugin slower than the video answers for one frame in several; the frames in
between go out with the newest result drawn. Drawn as they were, the boxes trail
a moving object by the result's age. Moved by the track's velocity (the plugin's
own `velocity`, px/s of the box centre, or one estimated here from the track's
last two results) to the output frame's time, they stay on it.

A result older than the coasting limit is no longer drawn: a box that old is a
guess, not something the tracker saw (the plugin stalled, or the session lost it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

COASTING_S = 0.5
# A host estimate needs two results close enough in time to describe one motion.
HISTORY_S = 1.0
# Each new estimate counts this much against the previous one: detector boxes jitter
# by a few pixels, which divided by 100-300 ms between results is a real speed.
SMOOTHING = 0.6
# Faster than this (px/s) is a mismatched id or a jump, not motion worth following.
MAX_SPEED_PX_S = 3000.0


@dataclass(frozen=True)
class Placed:
    """The tracks to draw on one output frame, and the age of the result they come from (None: no result)."""

    tracks: list[dict[str, Any]]
    age_s: float | None


@dataclass(frozen=True)
class _Seen:
    at: float
    cx: float
    cy: float
    velocity: tuple[float, float] | None


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _velocity(track: dict[str, Any]) -> tuple[float, float] | None:
    given = track.get("velocity")
    if given is None:
        return None
    vx, vy = float(given[0]), float(given[1])
    return (vx, vy) if math.isfinite(vx) and math.isfinite(vy) else None


def _capped(vx: float, vy: float) -> tuple[float, float] | None:
    return (vx, vy) if math.hypot(vx, vy) <= MAX_SPEED_PX_S else None


class TrackMotion:
    """The newest result of one session and each track's velocity; `place` answers what to draw at a time.

    Times are the arrival times (monotonic seconds) of the input frames: the result of
    frame A drawn on frame B is moved by velocity x (B - A).
    """

    def __init__(self, coasting_s: float = COASTING_S) -> None:
        self.coasting_s = coasting_s
        self._tracks: list[dict[str, Any]] = []
        self._velocities: list[tuple[float, float] | None] = []
        self._result_at: float | None = None
        self._seen: dict[int, _Seen] = {}

    def update(self, tracks: list[dict[str, Any]], at: float) -> None:
        """The result of the frame that arrived at `at`."""
        if self._result_at is not None and at < self._result_at:
            return  # an older frame's result than the one drawn: it says nothing newer
        self._tracks = tracks
        self._velocities = [self._observe(track, at) for track in tracks]
        self._result_at = at
        self._seen = {track_id: seen for track_id, seen in self._seen.items() if at - seen.at <= HISTORY_S}

    def _observe(self, track: dict[str, Any], at: float) -> tuple[float, float] | None:
        track_id = int(track["id"])
        cx, cy = _centre(track["box"])
        velocity = _velocity(track)
        previous = self._seen.get(track_id)
        if velocity is None and previous is not None and 0 < at - previous.at <= HISTORY_S:
            elapsed = at - previous.at
            raw = _capped((cx - previous.cx) / elapsed, (cy - previous.cy) / elapsed)
            if raw is not None and previous.velocity is not None:
                old = previous.velocity
                raw = (SMOOTHING * raw[0] + (1 - SMOOTHING) * old[0], SMOOTHING * raw[1] + (1 - SMOOTHING) * old[1])
            velocity = raw
        self._seen[track_id] = _Seen(at, cx, cy, velocity)
        return velocity

    def clear(self) -> None:
        """Nothing to draw until the next result (the plugin failed, or the session switched plugins)."""
        self._tracks, self._velocities, self._result_at = [], [], None
        self._seen.clear()

    def place(self, at: float, move: bool = True) -> Placed:
        """The tracks to draw on the frame that arrived at `at`: moved there when `move`, none past coasting."""
        if self._result_at is None:
            return Placed([], None)
        age = at - self._result_at
        if age > self.coasting_s:
            return Placed([], age)
        if not move:
            return Placed(self._tracks, age)
        placed = []
        for track, velocity in zip(self._tracks, self._velocities, strict=True):
            if velocity is None or age == 0:
                placed.append(track)
                continue
            dx, dy = velocity[0] * age, velocity[1] * age
            x1, y1, x2, y2 = track["box"]
            placed.append({**track, "box": [x1 + dx, y1 + dy, x2 + dx, y2 + dy]})
        return Placed(placed, age)
