"""Per-frame pixel work of a session, sized by `--max-resolution` and run off the event loop (DESIGN 1).

The loop only moves references: conversion for the plugin and drawing run in the
loop's default thread pool (`app.runtime.offload`), where PyAV, OpenCV and numpy release the GIL.
A frame larger than `--max-resolution` reaches the plugin downscaled to fit (one
swscale pass, converting and scaling together) and its tracks are scaled back to
the input's pixels, so boxes land where the client sees the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from av import VideoFrame

Resolution = tuple[int, int]


def fit_scale(width: int, height: int, max_resolution: Resolution) -> float:
    """The factor (at most 1) that brings width x height within the limit, either orientation."""
    long_limit, short_limit = max(max_resolution), min(max_resolution)
    long_side, short_side = max(width, height), min(width, height)
    return min(1.0, long_limit / long_side, short_limit / short_side)


def _scaled_size(width: int, height: int, scale: float) -> Resolution:
    return max(1, int(width * scale)), max(1, int(height * scale))


@dataclass(frozen=True)
class PluginImage:
    """A decoded frame as the plugin will get it: rendered to RGB at `size` by the sandbox, in its copy thread.

    Rendering there, not in the session, keeps the session's hand-off to the plugin's batcher
    free of thread hops, so frames of sessions waiting at once still go out in one batch.
    """

    frame: VideoFrame
    size: Resolution

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.size[1], self.size[0], 3

    def render_into(self, target: np.ndarray) -> None:
        frame = self.frame
        if self.size == (frame.width, frame.height):
            if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
                # WebRTC's decoded format: OpenCV's SIMD conversion (BT.601, as swscale's), within 3 levels
                # of it, written straight into the target (shared memory).
                cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420, dst=target)
                return
            np.copyto(target, frame.to_ndarray(format="rgb24"))
            return
        width, height = self.size
        np.copyto(target, frame.reformat(width=width, height=height, format="rgb24").to_ndarray())


def plugin_image(frame: VideoFrame, max_resolution: Resolution) -> tuple[PluginImage, float]:
    """The frame for the plugin (H x W x 3 RGB once rendered), within the limit, and the scale applied."""
    scale = fit_scale(frame.width, frame.height, max_resolution)
    return PluginImage(frame, _scaled_size(frame.width, frame.height, scale)), scale


def fit_image(image: np.ndarray, max_resolution: Resolution) -> tuple[np.ndarray, float]:
    """An RGB array within the limit (area-averaged), and the scale applied."""
    height, width = image.shape[:2]
    scale = fit_scale(width, height, max_resolution)
    if scale == 1.0:
        return image, scale
    return cv2.resize(image, _scaled_size(width, height, scale), interpolation=cv2.INTER_AREA), scale


def scale_tracks_back(tracks: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    """Tracks found on an image downscaled by `scale`, in the input's pixels (box and velocity)."""
    if scale == 1.0:
        return tracks
    back = []
    for track in tracks:
        moved = dict(track, box=[float(v) / scale for v in track["box"]])
        if track.get("velocity") is not None:
            moved["velocity"] = [float(v) / scale for v in track["velocity"]]
        back.append(moved)
    return back
