"""Settings of the plugin (manifest `config`) and options of each frame (from the client).

A bad `config` is the operator's mistake: it raises, the plugin goes FAILED with a
reason naming the key. A bad client option must never break the plugin for every
session: it falls back to the default (or is clamped into range) and is reported
so that the caller can log it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from face_detector import SMALLEST_MIN_FACE_SIZE
from face_tracker import TrackerSettings

LARGEST_MIN_FACE_SIZE = 4096


@dataclass(frozen=True)
class PluginSettings:
    min_score: float = 0.9
    min_face_size: int = 20
    max_batch: int = 8
    max_sessions: int = 64
    cpu_threads: int = 0  # 0: half the cores, at least one
    # Frames are detected with their longest side scaled down to this many pixels (0: as
    # they come), and the pyramid steps by this factor; see face_detector.py for the speed.
    working_size: int = 256
    pyramid_factor: float = 0.6
    tracker: TrackerSettings = TrackerSettings()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PluginSettings:
        tracker_keys = {f.name for f in fields(TrackerSettings)}
        own_keys = {f.name for f in fields(cls)} - {"tracker"}
        unknown = sorted(set(config) - tracker_keys - own_keys)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(tracker_keys | own_keys)}")
        defaults = cls()
        tracker = replace(
            defaults.tracker, **{k: _typed(config, k, getattr(defaults.tracker, k)) for k in tracker_keys & set(config)}
        )
        settings = replace(
            defaults, tracker=tracker, **{k: _typed(config, k, getattr(defaults, k)) for k in own_keys & set(config)}
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"config 'min_score' must be within 0..1, got {self.min_score}")
        if not SMALLEST_MIN_FACE_SIZE <= self.min_face_size <= LARGEST_MIN_FACE_SIZE:
            raise ValueError(
                f"config 'min_face_size' must be within {SMALLEST_MIN_FACE_SIZE}..{LARGEST_MIN_FACE_SIZE},"
                f" got {self.min_face_size}"
            )
        for key in ("max_batch", "max_sessions"):
            if getattr(self, key) < 1:
                raise ValueError(f"config '{key}' must be at least 1, got {getattr(self, key)}")
        if self.working_size != 0 and self.working_size < 64:
            raise ValueError(f"config 'working_size' must be 0 (full size) or at least 64, got {self.working_size}")
        if not 0.3 <= self.pyramid_factor <= 0.9:
            raise ValueError(f"config 'pyramid_factor' must be within 0.3..0.9, got {self.pyramid_factor}")
        if self.cpu_threads < 0:
            raise ValueError(f"config 'cpu_threads' must be 0 (automatic) or more, got {self.cpu_threads}")
        if self.tracker.min_hits < 1 or self.tracker.max_lost_frames < 0:
            raise ValueError("config 'min_hits' must be >= 1 and 'max_lost_frames' >= 0")


def _typed(config: Mapping[str, Any], key: str, default: int | float) -> Any:
    value = config[key]
    wanted = type(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (wanted is int and not isinstance(value, int)):
        raise ValueError(f"config {key!r} must be {'an integer' if wanted is int else 'a number'}, got {value!r}")
    return wanted(value)


@dataclass(frozen=True)
class FrameOptions:
    min_score: float
    min_face_size: int


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return None
    return float(raw)


def _bounded(raw: Mapping[str, Any], key: str, default: float, low: float, high: float, notes: list[str]) -> float:
    """raw[key] clamped to [low, high]; the default when absent or not a number. Each fallback is noted."""
    if raw.get(key) is None:
        return default
    value = _number(raw[key])
    if value is None:
        notes.append(f"{key} {raw[key]!r} is not a number; using {default}")
        return default
    bounded = min(max(value, low), high)
    if bounded != value:
        notes.append(f"{key} {value} clamped to {bounded}")
    return bounded


def parse_frame_options(raw: Mapping[str, Any], settings: PluginSettings) -> tuple[FrameOptions, list[str]]:
    """Options for one frame, and a note for each client value that was not usable as given."""
    notes: list[str] = []
    min_score = _bounded(raw, "min_score", settings.min_score, 0.0, 1.0, notes)
    size = _bounded(raw, "min_face_size", settings.min_face_size, SMALLEST_MIN_FACE_SIZE, LARGEST_MIN_FACE_SIZE, notes)
    min_face_size = round(size)
    if min_face_size != size:
        notes.append(f"min_face_size {size} taken as {min_face_size}")
    return FrameOptions(min_score, min_face_size), notes
