"""The per-session frame pump of DESIGN 1: receive -> slot -> plugin -> draw -> send.

Three parts run side by side, and none waits on another:

- the reader task calls the peer's `track.recv()` back to back, so aiortc's own
  (unbounded) receive queue stays empty, and puts each frame in two size-1 slots;
- the tracker task takes the newest frame from its slot and hands it to the
  session's `Tracker` (the plugin, in its worker); a frame replaced in the slot
  before it was taken was never processed and is counted as dropped;
- the output track (`AnnotatedTrack`) is what the encoder reads: each `recv()`
  returns the next newest input frame with the newest tracks drawn on it, moved
  to that frame's time by each track's motion (`TrackMotion`), so the output
  keeps the input's frame rate whatever the plugin's speed, and the boxes stay
  on what they track between results.

How the pump ended (the peer's track ended, or a server bug) is `FramePump.ended`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from app.runtime import offload
from app.stream.annotate import OverlayOptions, annotate
from app.stream.motion import TrackMotion
from app.stream.stats import SessionStats

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class InputFrame:
    """A frame as received: its index in the session (from 0) and when it arrived (monotonic)."""

    index: int
    frame: VideoFrame
    received_at: float


class Tracker(Protocol):
    """The plugin step (app.stream.tracking.PluginTracker in a session)."""

    async def track(self, entry: InputFrame) -> list[dict[str, Any]] | None:
        """The tracks for a frame, or None when it was not processed
        (plugin not usable, the frame failed, or the session switched plugins meanwhile)."""


class LatestFrameSlot(Generic[T]):
    """Holds at most one item: a put replaces an unread one (newest wins), never queues."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced an item nobody took."""
        if self._closed:
            return False
        replaced = self._item is not None
        self._item = item
        self._ready.set()
        return replaced

    async def get(self) -> T | None:
        """The newest item, waiting for one; None once the slot is closed."""
        while self._item is None and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, None
        return None if self._closed else item

    def close(self) -> None:
        """Wake every waiter with None and drop the held frame (its buffer goes with it)."""
        self._closed = True
        self._item = None
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed


class AnnotatedTrack(MediaStreamTrack):
    """The video sent back: every newest input frame, with the newest tracks drawn."""

    kind = "video"

    def __init__(
        self,
        frames: LatestFrameSlot[InputFrame],
        motion: TrackMotion,
        overlay: Callable[[], OverlayOptions],
        stats: SessionStats,
    ) -> None:
        super().__init__()
        self._frames = frames
        self._motion = motion
        self._overlay = overlay
        self._stats = stats

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        entry = await self._frames.get()
        if entry is None:
            self.stop()
            raise MediaStreamError
        overlay = self._overlay()
        placed = self._motion.place(entry.received_at, overlay.motion)
        # Drawing is pixel work: in a thread, never on the loop. Nothing to draw, nothing to wait for.
        frame = await offload.off_loop(annotate, entry.frame, placed.tracks, overlay) if placed.tracks else entry.frame
        self._stats.frame_out(entry.received_at, time.monotonic(), placed.age_s)
        return frame

    def stop(self) -> None:
        # aiortc's sender stops its track when the peer connection closes; the
        # frame held for the encoder is released with the slot.
        super().stop()
        self._frames.close()


class FramePump:
    """Reads `source`, feeds `tracker` and `output` (the track sent back); `stop()` frees it all."""

    def __init__(
        self,
        label: str,
        source: MediaStreamTrack,
        tracker: Tracker,
        overlay: Callable[[], OverlayOptions],
        stats: SessionStats,
    ) -> None:
        self._label = label
        self._source = source
        self._tracker = tracker
        self._stats = stats
        self._to_track: LatestFrameSlot[InputFrame] = LatestFrameSlot()
        self._outgoing: LatestFrameSlot[InputFrame] = LatestFrameSlot()
        self._motion = TrackMotion()
        self.output = AnnotatedTrack(self._outgoing, self._motion, overlay, stats)
        # Why the pump ended by itself (the reason the session closes with); cancelled by stop().
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None
        self._tracking: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name=f"{self._label}:reader")
        self._tracking = asyncio.create_task(self._track(), name=f"{self._label}:tracker")

    def clear_tracks(self) -> None:
        """Draw nothing until the next processed frame (plugin failed or switched)."""
        self._motion.clear()

    def _end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)

    async def _read(self) -> None:
        reason = "the peer's video track ended"
        try:
            while True:
                frame = await self._source.recv()
                if not isinstance(frame, VideoFrame):
                    continue  # a remote video track only yields decoded frames; anything else is not ours to draw
                now = time.monotonic()
                entry = InputFrame(self._stats.frame_in(now), frame, now)
                if self._to_track.put(entry):
                    self._stats.frames_dropped += 1
                self._outgoing.put(entry)
        except MediaStreamError:
            pass  # the normal end of a remote track (aiortc puts None in its queue)
        except Exception:
            # A bug, not a peer's doing: log it with its traceback and end the session cleanly.
            logger.exception("session %s: frame reader failed", self._label)
            reason = "the server failed to read the video; see its log"
        self._end(reason)

    async def _track(self) -> None:
        try:
            while (entry := await self._to_track.get()) is not None:
                tracks = await self._tracker.track(entry)
                if tracks is None:
                    self._stats.frames_dropped += 1
                    self._motion.clear()
                else:
                    self._stats.frame_processed(time.monotonic())
                    self._motion.update(tracks, entry.received_at)
        except Exception:
            # The tracker never raises for a plugin's fault (the sandbox answers every call),
            # so this is a server bug: log it and end the session rather than stream untracked.
            logger.exception("session %s: tracker failed", self._label)
            self._end("the server failed to track the video; see its log")

    async def stop(self) -> None:
        """Cancel both tasks, wait for them, free both slots; idempotent."""
        self.ended.cancel()  # a no-op once it ended by itself
        self._to_track.close()
        self._outgoing.close()
        self.output.stop()
        tasks = [t for t in (self._reader, self._tracking) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._reader = self._tracking = None
        self._motion.clear()
