"""Sessions per GPU: how many 640x480@30 face streams one server with the videotracker holds.

The real server (`python -m app`, its own process) runs the videotracker; headless clients
stream moving-face sequences (scripts/tracking_sequences.py: a real face on known paths)
over loopback WebRTC. Steps of 1, 2, 4, 8, ... sessions run until one fails, each judged
over a measurement window after a warm-up:

- a step holds when every session gets >= 90% of its frames back and its shown recall is
  >= 0.9. Shown recall reads the returned video: each sampled frame (matched to the frame
  sent by the counter drawn in its pixels) is compared with that frame as sent; the pixels
  the server drew (boxes only: the sessions turn labels and ids off) give the drawn box,
  which must cover the face at IoU >= 0.5. Tracker recall judges each tracks message
  against its own frame's ground truth;
- box age (end to end): for each returned frame, its arrival minus the time the frame that
  those newest tracks came from was sent;
- what binds: the plugin worker's busy share (sum of its call times from /metrics over the
  window: 1.0 means frames wait for the GPU) against the CPU (the server process and the
  whole machine, from /proc). Both are printed; the verdict names the one saturated first.

    python scripts/bench_gpu_sessions.py                        # on a CUDA host (--gpu-policy require)
    python scripts/bench_gpu_sessions.py --gpu-policy cpu --steps 1 --window 3 --warmup 1 --length 60
                                                                # a CPU smoke run of the same code

Results are printed and written as JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import Packet, VideoFrame
from bench_stream import wait_until_up
from client import EncodedTrack, Received, StreamClient, encode_vp8, read_counter
from loopback import end_process, free_port, process_cpu_seconds
from tracking_metrics import MATCH_IOU, iou
from tracking_sequences import build

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 640, 480, 30.0
PLUGIN = "videotracker"
MOVING_FACES = ("straight", "zigzag", "scale")
MIN_RECALL = 0.9
MIN_FPS_SHARE = 0.9  # of the frames sent, back within the window
SATURATED = 0.85
DRAWN_DIFF = 80  # a channel this far from the frame as sent: drawn by the server, not codec noise
EDGE_PX = 20  # drawn pixels in one row (column) that make it a box edge
COUNTER_STRIP = 48  # bottom rows holding the frame counter (client.stamp_counter at 640 wide)
SAMPLE_EVERY = 2  # returned frames kept for judging from pixels: every second one
MAX_JUDGED = 30  # per session, evenly spread over the window: judging is ~5 ms a frame
OVERLAY = {"labels": False, "ids": False}  # boxes only, so every drawn pixel is a box edge


class BenchError(RuntimeError):
    pass


# -- what is streamed -------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceClip:
    """One moving-face sequence, VP8-encoded once, with the ground-truth face boxes of each frame."""

    name: str
    packets: list[bytes]
    images: list[np.ndarray]  # per frame: the RGB image as sent (before VP8)
    truth: list[np.ndarray]  # per frame: K x 4 counted face boxes


def encode_clip(name: str, length: int) -> FaceClip:
    sequence = build(name, WIDTH, HEIGHT, length)
    frames = [sequence.render(index) for index in range(length)]
    packets = encode_vp8(lambda n: frames[n].image.copy(), FPS, length)
    truth = [np.array([g.box for g in frame.truth if g.counted], np.float64).reshape(-1, 4) for frame in frames]
    return FaceClip(name, packets, [frame.image for frame in frames], truth)


class TimedTrack(EncodedTrack):
    """EncodedTrack that also keeps the send time of every frame by its absolute number (the server's index)."""

    def __init__(self, packets: list[bytes], fps: float) -> None:
        super().__init__(packets, fps)
        self.sent_times: list[float] = []

    async def recv(self) -> VideoFrame | Packet[Any]:
        packet = await super().recv()
        self.sent_times.append(time.monotonic())
        return packet


class TimedClient(StreamClient):
    """StreamClient that keeps when each tracks message arrived, and, while `recording`, every
    SAMPLE_EVERY-th returned frame as decoded (turned into pixels after the window, off the loop)."""

    def __init__(self, server: str, clip: FaceClip) -> None:
        super().__init__(server, PLUGIN, TimedTrack(clip.packets, FPS), OVERLAY)
        self.clip = clip
        self.tracks_at: list[tuple[float, dict[str, Any]]] = []
        self.recording = False
        self.recorded: list[tuple[int, VideoFrame]] = []

    def has_results(self) -> bool:
        return bool(self.tracks_at)

    def _on_message(self, message: str | bytes) -> None:
        super()._on_message(message)
        if self.messages[-1].get("type") == "tracks":
            self.tracks_at.append((time.monotonic(), self.messages[-1]))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if not isinstance(frame, VideoFrame):
                    continue
                luma = frame.to_ndarray() if frame.format.name == "yuv420p" else frame.to_ndarray(format="gray")
                counter = read_counter(luma[: frame.height])
                self.received.append(Received(counter, now, None))
                if self.recording and counter is not None and len(self.received) % SAMPLE_EVERY == 0:
                    self.recorded.append((counter, frame))
                self.changed.set()
        except MediaStreamError:
            pass


# -- judging one session ----------------------------------------------------------------------
def hits(truth: np.ndarray, tracks: Sequence[dict[str, Any]]) -> int:
    """Ground-truth faces covered by a track at IoU >= MATCH_IOU (one track per face)."""
    if len(truth) == 0 or not tracks:
        return 0
    overlap = iou(truth, np.array([t["box"] for t in tracks], np.float64).reshape(-1, 4))
    return int(min((overlap >= MATCH_IOU).any(axis=1).sum(), len(tracks)))


def drawn_box(returned: np.ndarray, sent: np.ndarray) -> np.ndarray | None:
    """The box the server drew on a returned frame (1 x 4, xyxy), from where it differs from the frame sent."""
    drawn = np.abs(returned.astype(np.int16) - sent.astype(np.int16)).max(axis=2) > DRAWN_DIFF
    drawn[-COUNTER_STRIP:] = False
    rows = np.flatnonzero(drawn.sum(axis=1) >= EDGE_PX)
    columns = np.flatnonzero(drawn.sum(axis=0) >= EDGE_PX)
    if rows.size == 0 or columns.size == 0:
        return None
    return np.array([[columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]], np.float64)


def shown_recall(stream: TimedClient) -> tuple[float | None, int]:
    """Share of the faces in the recorded returned frames that a drawn box covers at IoU >= MATCH_IOU,
    and how many frames were judged."""
    clip, length = stream.clip, len(stream.clip.truth)
    covered = faces = 0
    judged = stream.recorded[:: max(1, len(stream.recorded) // MAX_JUDGED)]
    for counter, frame in judged:
        truth = clip.truth[counter % length]
        if len(truth) == 0:
            continue
        faces += len(truth)
        box = drawn_box(frame.to_ndarray(format="rgb24"), clip.images[counter % length])
        if box is not None:
            covered += int((iou(truth, box) >= MATCH_IOU).any(axis=1).sum())
    return (round(covered / faces, 3) if faces else None), len(judged)


def judge_session(stream: TimedClient, start: float, end: float) -> dict[str, Any]:
    clip, length = stream.clip, len(stream.clip.truth)
    source = stream.source
    assert isinstance(source, TimedTrack)
    sent = sum(start <= at < end for at in source.sent_times)
    received = [r for r in stream.received if start <= r.at < end]
    # Tracker recall: each tracks message against its own frame.
    found = faces = 0
    for at, message in stream.tracks_at:
        if start <= at < end:
            truth = clip.truth[int(message["frame"]) % length]
            faces += len(truth)
            found += hits(truth, message["tracks"])
    # Box age: each returned frame against the send time of the frame behind the newest tracks then.
    ages: list[float] = []
    arrivals = [at for at, _ in stream.tracks_at]
    for frame in received:
        newest = int(np.searchsorted(arrivals, frame.at, side="right")) - 1
        if newest >= 0 and (number := int(stream.tracks_at[newest][1]["frame"])) < len(source.sent_times):
            ages.append((frame.at - source.sent_times[number]) * 1000)
    window = end - start
    recall, judged = shown_recall(stream)
    return {
        "sequence": clip.name,
        "fps_sent": round(sent / window, 1),
        "fps_received": round(len(received) / window, 1),
        "tracker_recall": round(found / faces, 3) if faces else None,
        "shown_recall": recall,
        "frames_judged_from_pixels": judged,
        "box_age_ms": {"p50": _percentile(ages, 50), "p95": _percentile(ages, 95)},
    }


def judge_sessions(streams: list[TimedClient], start: float, end: float) -> list[dict[str, Any]]:
    return [judge_session(stream, start, end) for stream in streams]


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def session_holds(figures: dict[str, Any]) -> bool:
    recall = figures["shown_recall"]
    back = figures["fps_received"] >= MIN_FPS_SHARE * max(figures["fps_sent"], 1e-9)
    return back and recall is not None and recall >= MIN_RECALL


# -- what binds -------------------------------------------------------------------------------
def plugin_busy_seconds(url: str) -> float:
    """Seconds the plugin's worker spent in calls so far (its execution-time histogram's sum)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(rf'^livetrack_plugin_execution_seconds_sum\{{plugin="{PLUGIN}"\}} (\S+)$', text, re.M)
    if match is None:
        raise BenchError("/metrics has no livetrack_plugin_execution_seconds_sum for the plugin")
    return float(match.group(1))


def machine_busy_ticks() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Usage:
    """CPU and plugin time taken at one moment, to difference over a window."""

    at: float
    plugin_s: float
    server_cpu_s: float
    bench_cpu_s: float
    machine: tuple[int, int]

    @classmethod
    def now(cls, url: str, server_pid: int) -> Usage:
        return cls(
            time.monotonic(),
            plugin_busy_seconds(url),
            process_cpu_seconds(server_pid),
            time.process_time(),
            machine_busy_ticks(),
        )


def usage_between(first: Usage, last: Usage) -> dict[str, float]:
    window = last.at - first.at
    busy, total = (b - a for a, b in zip(first.machine, last.machine, strict=True))
    return {
        "plugin_busy_share": round((last.plugin_s - first.plugin_s) / window, 3),
        "server_cpu_cores": round((last.server_cpu_s - first.server_cpu_s) / window, 2),
        "bench_client_cpu_cores": round((last.bench_cpu_s - first.bench_cpu_s) / window, 2),
        "machine_cpu_busy_share": round(busy / total, 3) if total else 0.0,
    }


def binding(usage: dict[str, float], cores: int, device: str) -> str:
    if usage["plugin_busy_share"] >= SATURATED:
        where = "the GPU" if device == "cuda" else f"the plugin worker on {device}"
        return f"{where} binds first: the worker is busy all the time (frames wait for the model)"
    if usage["machine_cpu_busy_share"] >= SATURATED or usage["server_cpu_cores"] >= SATURATED * cores:
        return "the CPU binds first: WebRTC decode/encode and the event loop use the cores while the GPU has room"
    return (
        f"neither is saturated (plugin busy {usage['plugin_busy_share']:.0%}, machine CPU "
        f"{usage['machine_cpu_busy_share']:.0%}): the server's event loop or the session count limits"
    )


# -- steps ------------------------------------------------------------------------------------
@dataclass
class Step:
    sessions: int
    held: bool = False
    figures: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)
    error: str | None = None


async def run_step(url: str, server_pid: int, clips: list[FaceClip], sessions: int, args: argparse.Namespace) -> Step:
    step = Step(sessions)
    streams = [TimedClient(url, clips[n % len(clips)]) for n in range(sessions)]
    try:
        for stream in streams:
            await stream.start()
        for stream in streams:
            await stream.wait_for(stream.has_results, args.first_result_s, "the first tracks message")
        await asyncio.sleep(args.warmup)  # a warm-up before measuring, not a wait for an event
        first = await asyncio.to_thread(Usage.now, url, server_pid)
        for stream in streams:
            stream.recording = True
        await asyncio.sleep(args.window)  # the measurement window
        for stream in streams:
            stream.recording = False
        last = await asyncio.to_thread(Usage.now, url, server_pid)
        await asyncio.gather(*(stream.close() for stream in streams))
        step.figures = await asyncio.to_thread(judge_sessions, streams, first.at, last.at)
        step.usage = usage_between(first, last)
        step.held = all(session_holds(figures) for figures in step.figures)
    except (TimeoutError, httpx.HTTPError, MediaStreamError) as exc:
        step.error = f"{type(exc).__name__}: {exc}"
    finally:
        await asyncio.gather(*(stream.close() for stream in streams), return_exceptions=True)
    return step


def show_step(step: Step) -> None:
    if step.error:
        print(f"{step.sessions:3d} sessions: did not run ({step.error})")
        return
    recalls = [f["shown_recall"] for f in step.figures if f["shown_recall"] is not None]
    ages = [f["box_age_ms"]["p50"] for f in step.figures if f["box_age_ms"]["p50"] is not None]
    usage = step.usage
    print(
        f"{step.sessions:3d} sessions: {'held' if step.held else 'FAILED'}; worst shown recall "
        f"{min(recalls, default=float('nan')):.3f}, worst fps back {min(f['fps_received'] for f in step.figures):.1f}, "
        f"box age p50 (median session) {statistics.median(ages) if ages else float('nan'):.0f} ms; plugin busy "
        f"{usage['plugin_busy_share']:.0%}, server CPU {usage['server_cpu_cores']:.2f} cores, machine CPU "
        f"{usage['machine_cpu_busy_share']:.0%}, clients {usage['bench_client_cpu_cores']:.2f} cores"
    )


def box_age_at(steps: list[Step], sessions: int) -> dict[str, Any] | None:
    step = next((s for s in steps if s.sessions == sessions and not s.error), None)
    if step is None:
        return None
    p50 = [f["box_age_ms"]["p50"] for f in step.figures if f["box_age_ms"]["p50"] is not None]
    p95 = [f["box_age_ms"]["p95"] for f in step.figures if f["box_age_ms"]["p95"] is not None]
    return {
        "sessions": sessions,
        "p50_median_session_ms": round(statistics.median(p50), 1) if p50 else None,
        "p95_worst_session_ms": max(p95) if p95 else None,
    }


@contextlib.contextmanager
def live_server(policy: str, max_sessions: int, logs: Path) -> Iterator[tuple[str, int]]:
    """`python -m app` with only the videotracker, on 127.0.0.1; yields its URL and pid once ready."""
    with tempfile.TemporaryDirectory(prefix="livetrack-gpu-bench-") as folder:
        plugins = Path(folder) / "plugins"
        plugins.mkdir()
        (plugins / PLUGIN).symlink_to(REPO / "plugins" / PLUGIN)
        port = free_port()
        command = [sys.executable, "-m", "app", "--port", str(port), "--plugins-dir", str(plugins)]
        command += ["--ice-address", "127.0.0.1", "--gpu-policy", policy, "--max-sessions", str(max_sessions)]
        command += ["--log-level", "WARNING"]
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "gpu-sessions-server.log", "ab") as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(f"http://127.0.0.1:{port}", "livetrack", process)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            end_process(process)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    print(f"encoding {len(args.sequences)} face sequence(s) of {args.length} frames at {WIDTH}x{HEIGHT}...")
    clips = [await asyncio.to_thread(encode_clip, name, args.length) for name in args.sequences]
    cores = len(os.sched_getaffinity(0))
    report: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "cpus": cores}
    with live_server(args.gpu_policy, max(args.steps), args.out.parent / "logs") as (url, pid):
        async with httpx.AsyncClient(timeout=10) as http:
            health = (await http.get(f"{url}/v1/plugins/{PLUGIN}/health")).json()
        if health["state"] != "INITIALIZED":
            raise BenchError(f"{PLUGIN} is {health['state']}: {health['reason']}")
        report["device"] = health["device"]
        print(
            f"{PLUGIN} on {health['device']}; steps {args.steps}, {args.warmup:g} s warm-up, {args.window:g} s window"
        )
        steps: list[Step] = []
        step_s = 0.0
        for sessions in args.steps:
            # A step's time grows about with its session count (starting, judging and closing them).
            expected_s = step_s * sessions / steps[-1].sessions if steps else 0.0
            if time.monotonic() - started + expected_s > args.budget_s:
                print(f"the {args.budget_s:g} s budget leaves no room for {sessions} sessions (~{expected_s:.0f} s)")
                break
            step_started = time.monotonic()
            step = await run_step(url, pid, clips, sessions, args)
            step_s = time.monotonic() - step_started
            steps.append(step)
            show_step(step)
            if not step.held:
                break
    held = [s for s in steps if s.held]
    most = held[-1].sessions if held else 0
    limit = next((s for s in steps if not s.held and not s.error), steps[-1] if steps else None)
    report["steps"] = [vars(step) for step in steps]
    report["max_sessions_held"] = most
    report["binding"] = (
        binding(limit.usage, cores, report["device"]) if limit is not None and limit.usage else "not measured"
    )
    # At 1, 8 and the most sessions held ("max" is left out when it is 1 or 8).
    counts = {"1": 1, "8": 8, **({"max": most} if most not in (0, 1, 8) else {})}
    report["box_age"] = {label: box_age_at(steps, count) for label, count in counts.items()}
    recalls = [f["shown_recall"] for s in held for f in s.figures if f["shown_recall"] is not None]
    report["worst_shown_recall_held"] = min(recalls) if recalls else None
    print(
        f"\nheadline: {most} session(s) of {WIDTH}x{HEIGHT}@{FPS:g} held on {report['device']} "
        f"(every session shown recall >= {MIN_RECALL}, >= {MIN_FPS_SHARE:.0%} of frames back); {report['binding']}"
    )
    for label, age in report["box_age"].items():
        if age is not None:
            print(
                f"  box age at {label} ({age['sessions']} sessions): p50 {age['p50_median_session_ms']} ms "
                f"(median session), p95 {age['p95_worst_session_ms']} ms (worst session)"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gpu-policy", choices=["auto", "require", "cpu"], default="require")
    parser.add_argument(
        "--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 24, 32, 48, 64]
    )
    parser.add_argument("--sequences", type=lambda s: s.split(","), default=list(MOVING_FACES))
    parser.add_argument("--length", type=int, default=300, help="frames per sequence (it loops)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the first results, not measured")
    parser.add_argument("--window", type=float, default=6.0, help="seconds measured per step")
    parser.add_argument("--first-result-s", type=float, default=60.0, help="how long a session may wait for results")
    parser.add_argument("--budget-s", type=float, default=150.0, help="no new step starts after this many seconds")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "gpu-sessions.json")
    args = parser.parse_args(argv)
    if unknown := set(args.sequences) - set(MOVING_FACES):
        parser.error(f"--sequences: {sorted(unknown)} are not among the moving-face sequences {MOVING_FACES}")
    logging.basicConfig(level=logging.WARNING)
    try:
        report = asyncio.run(bench(args))
    except (BenchError, SystemExit) as exc:
        print(f"bench_gpu_sessions: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
