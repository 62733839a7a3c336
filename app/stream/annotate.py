"""Draws tracks on video frames: boxes, track ids and labels (cv2).

Decoded WebRTC frames are yuv420p, and the encoder wants yuv420p back. Drawing
straight on the three planes skips two colour conversions (yuv -> rgb -> yuv,
about 4 ms per 640x480 frame, most of it rgb -> yuv) and costs about 0.3 ms. Other
formats, and odd sizes that yuv420p arrays cannot describe, go through rgb24.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from av import VideoFrame

# Distinct, saturated colours (RGB), picked by track id so a track keeps its colour.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0),
    (0, 200, 255),
    (255, 220, 0),
    (255, 0, 255),
    (255, 128, 0),
    (128, 255, 128),
    (0, 128, 255),
    (255, 255, 255),
)
LINE = 2
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
TEXT_PAD = 3


@dataclass(frozen=True)
class OverlayOptions:
    """What the session's client asked to see drawn (DESIGN 4.3 options)."""

    boxes: bool = True
    labels: bool = True
    ids: bool = True
    min_score: float = 0.0
    # Boxes moved by their track's velocity to each frame's time (DESIGN 1); false draws
    # the newest result where it was found (the baseline of scripts/bench_liveview.py).
    motion: bool = True


def track_colour(track_id: int) -> tuple[int, int, int]:
    return PALETTE[track_id % len(PALETTE)]


def rgb_to_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited range, the matrix swscale and the VP8/H.264 codecs assume for WebRTC video."""
    r, g, b = (c / 255 for c in rgb)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def caption(track: dict[str, Any], options: OverlayOptions) -> str:
    parts = []
    if options.ids:
        parts.append(f"#{track['id']}")
    if options.labels and track.get("label"):
        parts.append(str(track["label"]))
    return " ".join(parts)


def above(tracks: Sequence[dict[str, Any]], min_score: float) -> list[dict[str, Any]]:
    return [t for t in tracks if float(t.get("score", 1.0)) >= min_score]


def visible(tracks: Sequence[dict[str, Any]], options: OverlayOptions) -> list[dict[str, Any]]:
    """The tracks to draw: at or above min_score, and only when something of them is drawn."""
    if not (options.boxes or options.labels or options.ids):
        return []
    return above(tracks, options.min_score)


@dataclass(frozen=True)
class _Shape:
    """One box (and its caption tag) in integer pixels, clipped to the frame."""

    x1: int
    y1: int
    x2: int
    y2: int
    text: str
    colour: tuple[int, int, int]


def _shapes(tracks: Sequence[dict[str, Any]], options: OverlayOptions, width: int, height: int) -> list[_Shape]:
    shapes = []
    for track in tracks:
        x1, y1, x2, y2 = (int(round(float(v))) for v in track["box"])
        x1, x2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
        y1, y2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
        shapes.append(_Shape(x1, y1, x2, y2, caption(track, options), track_colour(int(track["id"]))))
    return shapes


def _tag(shape: _Shape) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The caption's filled background (x1, y1, x2, y2) and text origin: above the box, inside when no room."""
    (text_w, text_h), baseline = cv2.getTextSize(shape.text, FONT, FONT_SCALE, 1)
    tag_h = text_h + baseline + 2 * TEXT_PAD
    top = shape.y1 - tag_h if shape.y1 - tag_h >= 0 else shape.y1
    return (shape.x1, top, shape.x1 + text_w + 2 * TEXT_PAD, top + tag_h), (
        shape.x1 + TEXT_PAD,
        top + TEXT_PAD + text_h,
    )


def _draw_yuv(planes: tuple[np.ndarray, np.ndarray, np.ndarray], shapes: list[_Shape], boxes: bool) -> None:
    luma, u_plane, v_plane = planes
    for shape in shapes:
        y, u, v = rgb_to_yuv(shape.colour)
        if boxes:
            cv2.rectangle(luma, (shape.x1, shape.y1), (shape.x2, shape.y2), y, LINE)
            for plane, value in ((u_plane, u), (v_plane, v)):
                cv2.rectangle(plane, (shape.x1 // 2, shape.y1 // 2), (shape.x2 // 2, shape.y2 // 2), value, 1)
        if shape.text:
            (tx1, ty1, tx2, ty2), origin = _tag(shape)
            cv2.rectangle(luma, (tx1, ty1), (tx2, ty2), y, cv2.FILLED)
            for plane, value in ((u_plane, u), (v_plane, v)):
                cv2.rectangle(plane, (tx1 // 2, ty1 // 2), (tx2 // 2, ty2 // 2), value, cv2.FILLED)
            # The text only needs contrast, which luma alone gives; its chroma stays the tag's colour.
            cv2.putText(luma, shape.text, origin, FONT, FONT_SCALE, 16 if y > 100 else 235, 1, cv2.LINE_AA)


def _draw_rgb(image: np.ndarray, shapes: list[_Shape], boxes: bool) -> None:
    for shape in shapes:
        if boxes:
            cv2.rectangle(image, (shape.x1, shape.y1), (shape.x2, shape.y2), shape.colour, LINE)
        if shape.text:
            (tx1, ty1, tx2, ty2), origin = _tag(shape)
            cv2.rectangle(image, (tx1, ty1), (tx2, ty2), shape.colour, cv2.FILLED)
            ink = (0, 0, 0) if sum(shape.colour) > 300 else (255, 255, 255)
            cv2.putText(image, shape.text, origin, FONT, FONT_SCALE, ink, 1, cv2.LINE_AA)


def annotate(frame: VideoFrame, tracks: Sequence[dict[str, Any]], options: OverlayOptions) -> VideoFrame:
    """The frame with `tracks` drawn on a copy; the same frame object when there is nothing to draw."""
    shown = visible(tracks, options)
    if not shown:
        return frame
    width, height = frame.width, frame.height
    shapes = _shapes(shown, options, width, height)
    if frame.format.name == "yuv420p" and width % 2 == 0 and height % 2 == 0:
        data = frame.to_ndarray()  # a contiguous copy: the Y plane, then U and V at quarter size
        flat = data.reshape(-1)
        luma_size, chroma_size = width * height, width * height // 4
        planes = (
            flat[:luma_size].reshape(height, width),
            flat[luma_size : luma_size + chroma_size].reshape(height // 2, width // 2),
            flat[luma_size + chroma_size :].reshape(height // 2, width // 2),
        )
        _draw_yuv(planes, shapes, options.boxes)
        out = VideoFrame.from_ndarray(data, format="yuv420p")
    else:
        image = frame.to_ndarray(format="rgb24")
        _draw_rgb(image, shapes, options.boxes)
        out = VideoFrame.from_ndarray(image, format="rgb24")
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out
