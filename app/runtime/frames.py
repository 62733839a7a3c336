"""The frame a plugin receives (`Frame`) and what the host accepts back (`validate_results`).

One `Frame` type on both sides of the sandbox: the server builds it from a decoded
video frame, the worker rebuilds it around a view of shared memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class ImageSource(Protocol):
    """An image the server renders only when it writes it into shared memory, in a thread."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def render_into(self, target: np.ndarray) -> None:
        """Write the H x W x 3 RGB pixels into `target`, an array of `shape`."""


def pixels(image: np.ndarray | ImageSource) -> np.ndarray:
    """The image as an H x W x 3 array of its own (the Ray backend sends it; blocking: call it in a thread)."""
    if isinstance(image, np.ndarray):
        return image
    target = np.empty(image.shape, np.uint8)
    image.render_into(target)
    return target


def write_pixels(image: np.ndarray | ImageSource, target: np.ndarray) -> None:
    """Put the image's pixels in `target` (blocking pixel work: call it in a thread)."""
    if isinstance(image, np.ndarray):
        np.copyto(target, image, casting="no")
    else:
        image.render_into(target)


@dataclass(frozen=True)
class Frame:
    """One video frame.

    `image` is H x W x 3 uint8 RGB. In the plugin it is read-only: a view of shared
    memory that the server reuses after `process()` returns, so copy it to keep it.
    `options` are the client's, already validated against the manifest's schema.
    """

    session_id: str
    index: int
    pts: int
    image: np.ndarray | ImageSource  # always an ndarray in the plugin
    options: dict[str, Any] = field(default_factory=dict)


class InvalidResult(ValueError):
    pass


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidResult(f"{where} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidResult(f"{where} is not finite ({number})")
    return number


def _track(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidResult(f"{where} must be a dict, got {type(raw).__name__}")
    track_id = raw.get("id")
    if isinstance(track_id, bool) or not isinstance(track_id, (int, np.integer)):
        raise InvalidResult(f"{where}['id'] must be an int, got {type(track_id).__name__}")
    box = raw.get("box")
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise InvalidResult(f"{where}['box'] must be [x1, y1, x2, y2]")
    label = raw.get("label", "")
    if not isinstance(label, str):
        raise InvalidResult(f"{where}['label'] must be a str, got {type(label).__name__}")
    clean = {
        "id": int(track_id),
        "box": [round(_number(v, f"{where}['box'][{i}]"), 2) for i, v in enumerate(box)],
        "score": round(_number(raw.get("score", 1.0), f"{where}['score']"), 4),
        "label": label[:64],
    }
    velocity = raw.get("velocity")
    if velocity is not None:  # optional: px/s of the box centre, which the host moves boxes by (DESIGN 3.2)
        if not isinstance(velocity, (list, tuple, np.ndarray)) or len(velocity) != 2:
            raise InvalidResult(f"{where}['velocity'] must be [vx, vy] in pixels per second")
        clean["velocity"] = [round(_number(v, f"{where}['velocity'][{i}]"), 2) for i, v in enumerate(velocity)]
    return clean


def _plain_json(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidResult(f"{where} must be a dict, got {type(value).__name__}")
    try:
        plain: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidResult(f"{where} is not plain JSON ({exc})") from None
    return plain


def validate_results(results: Any, count: int) -> list[dict[str, Any]]:
    """Normalise a plugin's return value; raise InvalidResult naming the first problem."""
    if not isinstance(results, list):
        raise InvalidResult(f"process() must return a list, got {type(results).__name__}")
    if len(results) != count:
        raise InvalidResult(f"process() returned {len(results)} results for {count} frames")
    clean = []
    for n, result in enumerate(results):
        if not isinstance(result, dict) or not isinstance(result.get("tracks"), list):
            raise InvalidResult(f"result {n} must be a dict with a 'tracks' list")
        entry: dict[str, Any] = {"tracks": [_track(t, f"result {n} track {i}") for i, t in enumerate(result["tracks"])]}
        if "extra" in result:
            entry["extra"] = _plain_json(result["extra"], f"result {n} 'extra'")
        clean.append(entry)
    return clean
