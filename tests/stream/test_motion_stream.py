"""Boxes between results, read from the returned video's pixels (DESIGN 1: moved by motion, dropped past coasting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.stream.annotate import track_colour
from app.stream.motion import COASTING_S
from tests.conftest import LiveServer
from tests.stream.helpers import Clients, box_pixels, client, plugins_dir

Serve = Callable[..., LiveServer]
OUTLINE_ONLY = {"labels": False, "ids": False}
MIN_BOX_PIXELS = 60  # a drawn outline has hundreds; a few stray ones are compression


def drawn_box(image: np.ndarray) -> np.ndarray | None:
    """The outline of track 1 drawn on a returned frame (RGB), as x1, y1, x2, y2; None when none is drawn."""
    ys, xs = np.nonzero(box_pixels(image, track_colour(1)))
    if len(xs) < MIN_BOX_PIXELS:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


async def on_square_share(serve: Serve, tmp_path: Path, clients: Clients, options: dict[str, Any]) -> float:
    """Share of the returned frames (after the first second) whose box covers the moving square (IoU >= 0.5)."""
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "delayed"),))
    server.wait_state("delayed", "INITIALIZED")
    stream = await clients.connect(server.url, "delayed", {**OUTLINE_ONLY, **options}, keep_frames=400)
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 3, 30, "three results")
    await asyncio.sleep(5)
    processed = {m["frame"] for m in stream.of_type("tracks")}
    scored = on_square = 0
    for counter, image in list(stream.frames):
        if counter is None or counter < 30:
            continue
        scored += 1
        box = drawn_box(image)
        on_square += box is not None and overlap(box, np.array(client.square_box(counter), float)) >= 0.5
    assert scored >= 100 and len(processed) >= 10, (scored, len(processed))
    return on_square / scored


async def test_between_slow_results_the_box_stays_on_the_moving_square(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    """The symptom prevented: with a tracker answering every 200 ms, boxes trailing a moving object
    by the result's age (the square moves ~110 px/s: 20-40 px behind, IoU under 0.5)."""
    share = await on_square_share(serve, tmp_path, clients, {"delay_ms": 200})
    assert share >= 0.8, share


async def test_without_motion_compensation_the_box_trails_the_square(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    """The baseline the test above is measured against (session option motion: false)."""
    share = await on_square_share(serve, tmp_path, clients, {"delay_ms": 200, "motion": False})
    assert share <= 0.5, share


async def test_a_track_with_no_fresh_result_past_the_coasting_limit_is_not_drawn(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    """The symptom prevented: a stalled tracker leaving a box frozen where the object was seconds ago."""
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "delayed"),))
    server.wait_state("delayed", "INITIALIZED")
    stream = await clients.connect(server.url, "delayed", {**OUTLINE_ONLY, "delay_ms": 0}, keep_frames=400)
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 30, 30, "30 results")
    stalled_at = time.monotonic()
    stream.send({"type": "options", "delay_ms": 3000})  # from the next frame on, one result every 3 s
    await asyncio.sleep(2.5)
    arrived = {r.counter: r.at for r in stream.received if r.counter is not None}
    frames = [(arrived[counter], image) for counter, image in list(stream.frames) if counter in arrived]
    before = [image for at, image in frames if stalled_at - 1.0 <= at < stalled_at]
    # The last quick result is for a frame that arrived before the stall (give or take one in flight).
    coasting = [image for at, image in frames if at >= stalled_at + 0.2 + COASTING_S]
    assert len(before) >= 15 and len(coasting) >= 30, (len(before), len(coasting))
    assert sum(drawn_box(image) is not None for image in before) >= 0.9 * len(before)
    assert [drawn_box(image) for image in coasting] == [None] * len(coasting)
