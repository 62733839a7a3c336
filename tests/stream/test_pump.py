"""The frame pump without WebRTC: a fake peer track, a fake tracker, real slots, tasks and counters."""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from app.stream.annotate import OverlayOptions, track_colour
from app.stream.pump import FramePump, InputFrame, LatestFrameSlot
from app.stream.stats import RateMeter, SessionStats, percentile


class FakePeerTrack(MediaStreamTrack):
    """Frames numbered by pts, every `interval` seconds, `count` of them, then the end of the track."""

    kind = "video"

    def __init__(self, count: int, interval: float = 0.0) -> None:
        super().__init__()
        self.count = count
        self.interval = interval
        self.sent = 0

    async def recv(self) -> VideoFrame:
        if self.sent == self.count:
            raise MediaStreamError
        await asyncio.sleep(self.interval)
        frame = VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = self.sent, fractions.Fraction(1, 30)
        self.sent += 1
        return frame


class Pump:
    """A pump whose tracker is this object: `result` for every frame, after `tracker_s` and the `gate`."""

    def __init__(self, source: FakePeerTrack, tracker_s: float, tracks: list[dict[str, Any]] | None = None) -> None:
        self.stats = SessionStats()
        self.tracked: list[int] = []
        self.tracker_s = tracker_s
        self.result = tracks
        self.gate = asyncio.Event()  # the tracker finishes no frame until this is set
        self.gate.set()
        self.pump = FramePump("test", source, self, OverlayOptions, self.stats)

    async def track(self, entry: InputFrame) -> list[dict[str, Any]] | None:
        await asyncio.sleep(self.tracker_s)
        await self.gate.wait()
        self.tracked.append(entry.index)
        return self.result


async def test_slot_keeps_only_the_newest_item_and_reports_replacements() -> None:
    slot: LatestFrameSlot[int] = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert await slot.get() == 2
    getter = asyncio.create_task(slot.get())
    await asyncio.sleep(0)
    slot.put(3)
    assert await getter == 3


async def test_closed_slot_wakes_its_waiter_with_none_and_drops_its_item() -> None:
    slot: LatestFrameSlot[int] = LatestFrameSlot()
    getter = asyncio.create_task(slot.get())
    await asyncio.sleep(0)
    slot.close()
    assert await getter is None
    assert slot.put(1) is False and await slot.get() is None


async def test_a_busy_tracker_gets_the_newest_frame_and_the_rest_are_counted_dropped() -> None:
    harness = Pump(FakePeerTrack(count=60), tracker_s=0.0, tracks=[])
    harness.gate.clear()  # the tracker is busy with frame 0 while all 60 frames arrive
    harness.pump.start()
    ended = await harness.pump.ended
    harness.gate.set()
    while len(harness.tracked) < 2:
        await asyncio.sleep(0.01)
    await harness.pump.stop()
    assert harness.tracked == [0, 59]  # the first frame, then the newest: none queued in between
    stats = harness.stats
    assert (stats.frames_in, stats.frames_processed, stats.frames_dropped) == (60, 2, 58)
    assert ended == "the peer's video track ended"


async def test_reader_never_waits_for_the_tracker() -> None:
    harness = Pump(FakePeerTrack(count=20), tracker_s=10.0)
    harness.pump.start()
    await harness.pump.ended
    assert harness.stats.frames_in == 20  # all read while the first frame is still being tracked
    await harness.pump.stop()


async def test_output_sends_each_newest_frame_once_with_the_newest_tracks_drawn() -> None:
    track = {"id": 3, "box": [4, 4, 40, 40], "score": 1.0, "label": "a"}
    harness = Pump(FakePeerTrack(count=1000, interval=0.01), tracker_s=0.0, tracks=[track])
    harness.pump.start()
    first = await harness.pump.output.recv()
    second = await harness.pump.output.recv()
    assert (second.pts or 0) > (first.pts or 0)
    while not harness.stats.frames_processed:
        await asyncio.sleep(0.01)
    drawn = (await harness.pump.output.recv()).to_ndarray(format="rgb24")
    assert np.abs(drawn[20, 4].astype(int) - track_colour(3)).max() < 40
    assert harness.stats.frames_out == 3
    await harness.pump.stop()


async def test_stop_ends_the_output_track_and_is_idempotent() -> None:
    harness = Pump(FakePeerTrack(count=1000, interval=0.01), tracker_s=0.0, tracks=[])
    harness.pump.start()
    await harness.pump.output.recv()
    await harness.pump.stop()
    await harness.pump.stop()
    with pytest.raises(MediaStreamError):
        await harness.pump.output.recv()
    assert harness.pump.output.readyState == "ended"
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("test:")]


class BrokenTracker:
    async def track(self, entry: InputFrame) -> list[dict[str, Any]] | None:
        raise RuntimeError("a bug in the tracking step")


async def test_a_failing_tracker_ends_the_pump_with_the_servers_reason() -> None:
    pump = FramePump("test", FakePeerTrack(count=1000, interval=0.01), BrokenTracker(), OverlayOptions, SessionStats())
    pump.start()
    assert await pump.ended == "the server failed to track the video; see its log"
    await pump.stop()


async def test_a_pump_stopped_from_outside_says_it_did_not_end_by_itself() -> None:
    harness = Pump(FakePeerTrack(count=1000, interval=0.01), tracker_s=0.0, tracks=[])
    harness.pump.start()
    await harness.pump.output.recv()
    await harness.pump.stop()
    assert harness.pump.ended.cancelled()


def test_rate_meter_counts_the_last_window_and_falls_to_zero() -> None:
    meter = RateMeter(window_s=2.0)
    start = meter._started
    for i in range(60):
        meter.mark(start + 1.0 + i / 30)
    assert meter.rate(start + 3.0) == pytest.approx(30.0, abs=1)
    assert meter.rate(start + 10.0) == 0.0


def test_percentiles() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile([], 0.5)) == (51.0, 96.0, None)
