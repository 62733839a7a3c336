"""Per-session stream stats (DESIGN 4.3), kept by the server: aiortc counts neither fps nor drops."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

FPS_WINDOW_S = 2.0
LATENCY_SAMPLES = 300


class RateMeter:
    """Events per second over the last `window_s` (0 once events stop for that long)."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._started = time.monotonic()
        self._times: deque[float] = deque()

    def mark(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        span = min(self.window_s, now - self._started)
        return len(self._times) / span if span > 0 else 0.0


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


class SessionStats:
    """Counters and rates of one session; every method is O(1) amortised except `snapshot`."""

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_out = 0
        self.last_frame_at: float | None = None
        self._fps_in = RateMeter()
        self._fps_out = RateMeter()
        self._fps_processed = RateMeter()
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._box_age_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def frame_in(self, now: float) -> int:
        """Count an input frame; its index (from 0)."""
        index = self.frames_in
        self.frames_in += 1
        self.last_frame_at = now
        self._fps_in.mark(now)
        return index

    def frame_processed(self, now: float) -> None:
        self.frames_processed += 1
        self._fps_processed.mark(now)

    def frame_out(self, received_at: float, now: float, box_age_s: float | None = None) -> None:
        """Count an output frame; `box_age_s`: its arrival minus that of the frame whose result is drawn on it."""
        self.frames_out += 1
        self._fps_out.mark(now)
        self._latency_ms.append((now - received_at) * 1000)
        if box_age_s is not None:
            # A result newer than the frame it is drawn on (a fast plugin, a slow encoder) is age 0.
            self._box_age_ms.append(max(0.0, box_age_s) * 1000)

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_out": self.frames_out,
            "fps_in": round(self._fps_in.rate(now), 2),
            "fps_out": round(self._fps_out.rate(now), 2),
            "fps_processed": round(self._fps_processed.rate(now), 2),
            "latency_ms": _quantiles(self._latency_ms),
            "box_age_ms": _quantiles(self._box_age_ms),
        }


def _quantiles(samples: deque[float]) -> dict[str, float | None]:
    ordered = sorted(samples)
    p50, p95 = percentile(ordered, 0.5), percentile(ordered, 0.95)
    return {"p50": round(p50, 3) if p50 is not None else None, "p95": round(p95, 3) if p95 is not None else None}
