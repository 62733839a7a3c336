"""PluginTracker with real plugin workers and no WebRTC: the plugin step of a session's frame path."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from av import VideoFrame

from app.runtime.runtime import PluginRuntime
from app.stream.feeds import TrackFeed
from app.stream.options import SessionOptions
from app.stream.protocol import TracksChannel
from app.stream.pump import InputFrame
from app.stream.tracking import PluginTracker
from tests.stream.helpers import plugins_dir


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[PluginRuntime]:
    started = PluginRuntime([plugins_dir(tmp_path, "delayed", "passthrough")], "cpu", "WARNING")
    started.start()
    try:
        await started.wait_settled(60)
        yield started
    finally:
        await started.close()


def blob_frame(index: int) -> InputFrame:
    """A 640x480 grey frame with a red square at (200..280, 160..240)."""
    image = np.full((480, 640, 3), 128, np.uint8)
    image[160:240, 200:280] = (255, 0, 0)
    return InputFrame(index, VideoFrame.from_ndarray(image, format="rgb24"), time.monotonic())


async def until_sent_to_the_worker(runtime: PluginRuntime, plugin: str) -> None:
    """Until no frame waits in the plugin's batcher: a waiting one would be dropped by the switch's
    session ending, and only a frame already in the worker tests the discarding (no event says so)."""
    supervisor = runtime.supervisor(plugin)
    assert supervisor is not None
    async with asyncio.timeout(10):
        while supervisor._batcher._queue:
            await asyncio.sleep(0.001)


def tracker_on(runtime: PluginRuntime, feed: TrackFeed, max_resolution: tuple[int, int]) -> PluginTracker:
    options = SessionOptions(plugin_options={"delay_ms": 300})
    return PluginTracker("s1", "delayed", options, runtime, TracksChannel(), {feed}, max_resolution)


async def test_a_result_of_the_old_plugin_after_a_switch_is_neither_returned_nor_sent(runtime: PluginRuntime) -> None:
    feed = TrackFeed()
    tracker = tracker_on(runtime, feed, (1920, 1080))
    assert tracker.apply_options({"type": "options", "delay_ms": 300}) is False
    old_call = asyncio.create_task(tracker.track(blob_frame(0)))
    await asyncio.sleep(0)  # the task's first step: the frame is handed to the delayed plugin's batcher
    await until_sent_to_the_worker(runtime, "delayed")  # which answers after 300 ms
    assert tracker.apply_options({"type": "options", "plugin": "passthrough"}) is True
    assert await old_call is None
    assert await tracker.track(blob_frame(1)) == []
    message = json.loads(await feed.get() or "")
    assert (message["frame"], message["plugin"], message["tracks"]) == (1, "passthrough", [])
    assert [runtime.registry.get(p).active_sessions for p in ("delayed", "passthrough")] == [0, 1]
    await tracker.close()
    await tracker.close()
    assert [runtime.registry.get(p).active_sessions for p in ("delayed", "passthrough")] == [0, 0]


async def test_boxes_found_on_a_downscaled_frame_come_back_in_the_frames_own_pixels(runtime: PluginRuntime) -> None:
    feed = TrackFeed()
    tracker = tracker_on(runtime, feed, (320, 240))  # the plugin sees the frame at half size
    tracks = await tracker.track(blob_frame(0))
    assert tracks is not None and len(tracks) == 1
    assert tracks[0]["box"] == pytest.approx([200, 160, 280, 240], abs=4)
    message = json.loads(await feed.get() or "")
    assert (message["plugin"], message["tracks"]) == ("delayed", tracks)
    await tracker.close()
    assert runtime.registry.get("delayed").active_sessions == 0
