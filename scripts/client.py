"""Headless livetrack client: streams video to a running server over WebRTC and reads back what it returns.

Sources: a synthetic pattern (a coloured square moving on a known path), an image
moved along that path, or a video file (PyAV, looped). Every frame sent carries
its number as a row of black and white blocks along the bottom edge, so each
frame that comes back is matched to the frame that was sent by its content (the
latency is measured, not guessed). Prints live stats; can save the annotated video
it receives and the tracks messages (JSON lines).

    python scripts/client.py --server http://127.0.0.1:8080 --plugin colorblob --duration 10 \\
        --save-video out.mp4 --save-tracks tracks.jsonl

Also imported by scripts/bench_stream.py and the stream tests.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import av
import cv2
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.stream.ice import offered_addresses

CLOCK_RATE = 90000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
COUNTER_BITS = 16
CHECK_BITS = 4
BACKGROUND = (128, 128, 128)
SQUARE_COLOUR = (255, 0, 0)
SQUARE_SIZE = 80

Render = Callable[[int], np.ndarray]


# -- the frame counter drawn in each frame ------------------------------------------------
def _block(width: int) -> int:
    return max(8, width // 40)


def _checksum(counter: int) -> int:
    return sum((counter >> shift) & 0xF for shift in range(0, COUNTER_BITS, 4)) & 0xF


def stamp_counter(image: np.ndarray, counter: int) -> None:
    """Draw `counter` (mod 2**16) and a checksum as blocks along the bottom edge of an RGB image, in place."""
    height, width = image.shape[:2]
    block = _block(width)
    counter %= 1 << COUNTER_BITS
    value = counter | (_checksum(counter) << COUNTER_BITS)
    top = height - 2 * block
    for bit in range(COUNTER_BITS + CHECK_BITS):
        x = block // 2 + bit * block
        image[top : top + block, x : x + block] = 255 if (value >> bit) & 1 else 0


def read_counter(luma: np.ndarray) -> int | None:
    """The counter in a frame's luma plane; None when the blocks do not hold a valid one."""
    height, width = luma.shape[:2]
    block = _block(width)
    top = height - 2 * block
    quarter = block // 4
    value = 0
    for bit in range(COUNTER_BITS + CHECK_BITS):
        x = block // 2 + bit * block
        centre = luma[top + quarter : top + block - quarter, x + quarter : x + block - quarter]
        if centre.mean() > 128:
            value |= 1 << bit
    counter = value & ((1 << COUNTER_BITS) - 1)
    return counter if value >> COUNTER_BITS == _checksum(counter) else None


# -- sources ------------------------------------------------------------------------------
def square_box(counter: int, width: int = 640, height: int = 480, size: int = SQUARE_SIZE) -> tuple[int, int, int, int]:
    """Where the square is in frame `counter`: (x1, y1, x2, y2), bouncing, clear of the counter strip."""
    span_x = width - size - 40
    span_y = height - size - 4 * _block(width) - 40
    step_x, step_y = counter * 3, counter * 2
    x = 20 + (step_x % span_x if (step_x // span_x) % 2 == 0 else span_x - step_x % span_x)
    y = 20 + (step_y % span_y if (step_y // span_y) % 2 == 0 else span_y - step_y % span_y)
    return x, y, x + size, y + size


def _on_square_path(fill: np.ndarray | tuple[int, int, int], width: int, height: int) -> Render:
    """`fill` (a colour, or a SQUARE_SIZE image) moved along `square_box`'s path over a grey frame."""

    def render(counter: int) -> np.ndarray:
        image = np.empty((height, width, 3), np.uint8)
        image[:] = BACKGROUND
        x1, y1, x2, y2 = square_box(counter, width, height)
        image[y1:y2, x1:x2] = fill
        return image

    return render


def pattern(width: int, height: int) -> Render:
    """A grey frame with a saturated red square moving on `square_box`'s path."""
    return _on_square_path(SQUARE_COLOUR, width, height)


def image_on_path(path: Path, width: int, height: int) -> Render:
    """An image (scaled to fit the square's size) moved along `square_box`'s path over a grey frame."""
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if picture is None:
        raise SystemExit(f"cannot read image {path}")
    return _on_square_path(
        cv2.cvtColor(cv2.resize(picture, (SQUARE_SIZE, SQUARE_SIZE)), cv2.COLOR_BGR2RGB), width, height
    )


def video_file(path: Path, width: int, height: int) -> Render:
    """Frames of a video file, looped, scaled to width x height."""
    container = av.open(str(path))
    frames = container.decode(video=0)

    def render(counter: int) -> np.ndarray:
        nonlocal container, frames
        try:
            frame = next(frames)
        except StopIteration:
            container.close()
            container = av.open(str(path))
            frames = container.decode(video=0)
            frame = next(frames)
        return np.ascontiguousarray(frame.to_ndarray(format="rgb24", width=width, height=height))

    return render


class StampedTrack(MediaStreamTrack):
    """Sends `render(n)` with n stamped in, at `fps`; remembers when each frame went to the encoder."""

    kind = "video"

    def __init__(self, render: Render, fps: float = 30.0) -> None:
        super().__init__()
        self._render = render
        self.fps = fps
        self.counter = 0
        self.sent_at: dict[int, float] = {}
        self.paused = asyncio.Event()  # set: no frames are produced (an idle peer)
        self._start: float | None = None

    async def _next(self) -> int:
        """Wait for the next frame's time (at `fps`, none while paused); its number."""
        if self.readyState != "live":
            raise MediaStreamError
        while self.paused.is_set():
            await asyncio.sleep(0.05)
            self._start = None
        now = time.monotonic()
        if self._start is None:
            self._start = now - self.counter / self.fps
        await asyncio.sleep(max(0.0, self._start + self.counter / self.fps - now))
        counter = self.counter
        self.counter += 1
        return counter

    async def recv(self) -> av.VideoFrame | av.Packet[Any]:
        counter = await self._next()
        image = self._render(counter)
        stamp_counter(image, counter)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = round(counter * CLOCK_RATE / self.fps)
        frame.time_base = TIME_BASE
        self.sent_at[counter % (1 << COUNTER_BITS)] = time.monotonic()
        return frame


def encode_vp8(render: Render, fps: float, count: int, bitrate: int = 1_000_000) -> list[bytes]:
    """`count` stamped frames of `render`, VP8-encoded once (frame 0 is the only keyframe)."""
    codec: Any = av.CodecContext.create("libvpx", "w")
    first = render(0)
    codec.width, codec.height, codec.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
    codec.bit_rate, codec.gop_size = bitrate, count + 1
    codec.time_base = fractions.Fraction(1, round(fps))
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[bytes] = []
    for counter in range(count):
        image = render(counter)
        stamp_counter(image, counter)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = counter, codec.time_base
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    if len(packets) != count:
        raise RuntimeError(f"the encoder gave {len(packets)} packets for {count} frames")
    return packets


class EncodedTrack(StampedTrack):
    """Sends pre-encoded VP8 frames (from `encode_vp8`) at `fps`, looping: no encoding work while streaming.

    Many clients can share one list of packets, which keeps a load generator's CPU for the server.
    """

    def __init__(self, packets: list[bytes], fps: float = 30.0) -> None:
        super().__init__(lambda counter: np.zeros((1, 1, 3), np.uint8), fps)
        self._packets = packets

    async def recv(self) -> av.VideoFrame | av.Packet[Any]:
        counter = await self._next()
        packet = av.Packet(self._packets[counter % len(self._packets)])
        packet.pts = round(counter * CLOCK_RATE / self.fps)
        packet.time_base = TIME_BASE
        self.sent_at[counter % len(self._packets)] = time.monotonic()
        return packet


# -- the client ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    counter: int | None
    at: float
    latency_ms: float | None


class VideoSaver:
    """Encodes received frames to a file in a thread, so saving never delays reading."""

    def __init__(self, path: Path, fps: float) -> None:
        self._path = path
        self._fps = fps
        self._frames: queue.Queue[av.VideoFrame | None] = queue.Queue(maxsize=120)
        self._thread = threading.Thread(target=self._run, name="video-saver", daemon=True)
        self._thread.start()

    def put(self, frame: av.VideoFrame) -> None:
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            pass  # the file misses a frame rather than the stats being skewed

    def _run(self) -> None:
        with av.open(str(self._path), "w") as container:
            stream: Any = None
            index = 0
            while (frame := self._frames.get()) is not None:
                if stream is None:
                    codec = "libvpx" if self._path.suffix == ".webm" else "libx264"
                    stream = container.add_stream(codec, rate=round(self._fps))
                    stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                out = frame.reformat(format="yuv420p")
                out.pts, out.time_base = index, fractions.Fraction(1, round(self._fps))
                index += 1
                for packet in stream.encode(out):
                    container.mux(packet)
            if stream is not None:
                for packet in stream.encode(None):
                    container.mux(packet)

    def close(self) -> None:
        self._frames.put(None)
        self._thread.join(30)


class StreamClient:
    """One session: offer to `server`, stream `source`, collect returned frames and data channel messages."""

    def __init__(
        self,
        server: str,
        plugin: str,
        source: StampedTrack,
        options: dict[str, Any] | None = None,
        ice_addresses: tuple[str, ...] = ("127.0.0.1",),
        codec: str | None = None,
        keep_frames: int = 0,
        save_video: Path | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.plugin = plugin
        self.source = source
        self.options = options or {}
        self.ice_addresses = ice_addresses
        # Pre-encoded frames are VP8: the peer must not negotiate anything else.
        self.codec = "vp8" if isinstance(source, EncodedTrack) else codec
        self.session_id: str | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("tracks")
        self.messages: list[dict[str, Any]] = []
        self.received: list[Received] = []
        self.frames: deque[tuple[int | None, np.ndarray]] = deque(maxlen=keep_frames)  # (counter, RGB image)
        self.changed = asyncio.Event()
        self._saver = VideoSaver(save_video, source.fps) if save_video else None
        self._reader: asyncio.Task[None] | None = None
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, message: str | bytes) -> None:
        self.messages.append(json.loads(message))
        self.changed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self._reader is None:
            self._reader = asyncio.create_task(self._read(track), name="client-reader")

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if not isinstance(frame, av.VideoFrame):
                    continue
                yuv = frame.to_ndarray() if frame.format.name == "yuv420p" else frame.to_ndarray(format="gray")
                counter = read_counter(yuv[: frame.height])
                sent = self.source.sent_at.get(counter) if counter is not None else None
                latency = (now - sent) * 1000 if sent is not None else None
                self.received.append(Received(counter, now, latency))
                if self.frames.maxlen:
                    self.frames.append((counter, frame.to_ndarray(format="rgb24")))
                if self._saver is not None:
                    self._saver.put(frame)
                self.changed.set()
        except MediaStreamError:
            pass

    async def start(self, http_timeout_s: float = 30.0) -> httpx.Response:
        """Offer, apply the answer; returns the server's response (raises on an error status)."""
        transceiver = self.pc.addTransceiver(self.source, direction="sendrecv")
        if self.codec is not None:
            codecs = [
                c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == f"video/{self.codec}"
            ]
            transceiver.setCodecPreferences(codecs)
        offer = await self.pc.createOffer()
        with offered_addresses(self.ice_addresses):
            await self.pc.setLocalDescription(offer)
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "plugin": self.plugin, "options": self.options}
        async with httpx.AsyncClient(timeout=http_timeout_s) as http:
            response = await http.post(f"{self.server}/v1/webrtc/offer", json=body)
        response.raise_for_status()
        answer = response.json()
        self.session_id = answer["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return response

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        self.channel.send(json.dumps(message) if isinstance(message, dict) else message)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def wait_for(self, condition: Callable[[], bool], within_s: float, what: str = "condition") -> None:
        """Wait until `condition()` holds (checked on every frame or message); TimeoutError naming `what`."""
        try:
            async with asyncio.timeout(within_s):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {within_s} s waiting for {what}") from None

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._saver is not None:
            await asyncio.to_thread(self._saver.close)
            self._saver = None


# -- command line -------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def make_source(spec: str, width: int, height: int) -> Render:
    kind, _, argument = spec.partition(":")
    if kind == "pattern":
        return pattern(width, height)
    if kind == "image" and argument:
        return image_on_path(Path(argument), width, height)
    if kind == "video" and argument:
        return video_file(Path(argument), width, height)
    raise SystemExit(f"--source must be pattern, image:PATH or video:PATH, got {spec!r}")


async def run(args: argparse.Namespace, tracks_file: TextIO | None) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    source = StampedTrack(make_source(args.source, width, height), args.fps)
    client = StreamClient(
        args.server,
        args.plugin,
        source,
        json.loads(args.options),
        tuple(args.ice_address),
        args.codec,
        save_video=Path(args.save_video) if args.save_video else None,
    )
    try:
        try:
            await client.start()
        except httpx.HTTPStatusError as exc:
            print(f"offer refused: {exc.response.status_code} {exc.response.text}", file=sys.stderr)
            return 1
        print(f"session {client.session_id}")
        started, written, shown = time.monotonic(), 0, 0
        while time.monotonic() - started < args.duration:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            recent = [r for r in client.received if r.at > now - 1.0]
            latencies = [r.latency_ms for r in recent if r.latency_ms is not None]
            tracks = client.of_type("tracks")
            for message in client.messages[shown:]:
                if message.get("type") != "tracks":
                    print(f"  {message}")
            shown = len(client.messages)
            if tracks_file is not None:
                for message in tracks[written:]:
                    tracks_file.write(json.dumps(message) + "\n")
                written = len(tracks)
            last = tracks[-1]["tracks"] if tracks else []
            print(
                f"{now - started:6.1f}s sent {source.counter:5d}  fps out {len(recent):3d}  "
                f"latency p50 {percentile(latencies, 0.5):6.1f} ms p95 {percentile(latencies, 0.95):6.1f} ms  "
                f"tracks msgs {len(tracks):5d}  last {[(t['label'], [round(v) for v in t['box']]) for t in last]}"
            )
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--plugin", default="colorblob")
    parser.add_argument("--source", default="pattern", help="pattern, image:PATH or video:PATH")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to stream")
    parser.add_argument("--options", default="{}", help="session options as JSON, e.g. '{\"labels\": false}'")
    parser.add_argument("--codec", choices=["vp8", "h264"], help="preferred video codec (default: the server's choice)")
    parser.add_argument(
        "--ice-address", action="append", default=None, help="host candidate address (default 127.0.0.1)"
    )
    parser.add_argument("--save-video", help="write the annotated video received to this file (.mp4 or .webm)")
    parser.add_argument("--save-tracks", help="write the tracks messages to this file, one JSON object a line")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    args.ice_address = args.ice_address or ["127.0.0.1"]
    logging.basicConfig(level=args.log_level.upper())
    if not args.save_tracks:
        return asyncio.run(run(args, None))
    with open(args.save_tracks, "w") as tracks_file:
        return asyncio.run(run(args, tracks_file))


if __name__ == "__main__":
    sys.exit(main())
