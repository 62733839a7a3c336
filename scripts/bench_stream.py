"""Streaming benchmark: livetrack's latest-frame-wins pump against a naive inline pipeline, and pass-through capacity.

    python scripts/bench_stream.py                       # the full run (about 5 minutes)
    python scripts/bench_stream.py --quick               # about 1.5 minutes
    python scripts/bench_stream.py --clients 2 --duration 60 --delay-ms 50

1. Frame costs on this machine: av frame -> RGB array (what the plugin gets) and annotation.
2. N headless clients stream 640x480@30 for --duration s through a plugin that takes --delay-ms per
   frame, first to livetrack (`python -m app`), then to a naive server that awaits the same plugin
   inline in the output track's `recv()`, as aiortc's example server transforms frames. Per stream:
   fps sent and received, frames lost, latency p50/p95 (client send -> annotated frame back, matched
   by the frame number drawn into each frame), overall and over the last 10 s.
3. Pass-through capacity: 1, 2, 3... streams through a plugin that returns nothing, until one stream
   falls under --min-fps; the largest count that held is the figure. The same count for a bare aiortc
   loopback server (no livetrack code: each received track sent straight back, same clients) is the
   ceiling livetrack is measured against, in the same run (`--capacity-only` runs just this part).

Everything runs on 127.0.0.1. The clients send pre-encoded VP8 (encoded once, up front), so the
load generator spends its CPU on receiving only; it still shares the machine with the server.
Results are printed and written to bench-results/stream-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from client import EncodedTrack, Received, StreamClient, encode_vp8, pattern, percentile
from loopback import end_process, free_port, tree_cpu_seconds
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.runtime.frames import Frame
from app.runtime.runtime import PluginRuntime
from app.stream.annotate import OverlayOptions, annotate
from app.stream.ice import offered_addresses

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 640, 480, 30.0
LAST_S = 10.0

DELAY_PLUGIN = '''"""Boxes the saturated pixels, taking config delay_ms per frame in all (a slow tracker)."""

import time

import numpy as np



class Plugin:
    def __init__(self, device, config):
        self.delay_s = float(config.get("delay_ms", 50)) / 1000

    def process(self, batch):
        started = time.monotonic()
        results = []
        for frame in batch:
            small = frame.image[::2, ::2].astype(np.int16)
            ys, xs = np.nonzero(small.max(axis=2) - small.min(axis=2) >= 100)
            tracks = []
            if len(xs):
                box = [float(xs.min() * 2), float(ys.min() * 2), float(xs.max() * 2 + 2), float(ys.max() * 2 + 2)]
                tracks.append({"id": 1, "box": box, "score": 1.0, "label": "blob"})
            results.append({"tracks": tracks})
        time.sleep(max(0.0, started + self.delay_s * len(batch) - time.monotonic()))
        return results
'''
PASSTHROUGH_PLUGIN = '''"""Finds nothing, at once: the video goes back untouched."""


class Plugin:
    def __init__(self, device, config):
        pass

    def process(self, batch):
        return [{"tracks": []} for _ in batch]
'''


def write_plugins(folder: Path, delay_ms: float) -> Path:
    for name, code, config in (
        ("delay", DELAY_PLUGIN, {"delay_ms": delay_ms}),
        ("passthrough", PASSTHROUGH_PLUGIN, {}),
    ):
        plugin = folder / name
        plugin.mkdir(parents=True)
        manifest = {
            "name": name,
            "version": "1.0.0",
            "entrypoint": "plugin:Plugin",
            "timeout_ms": 2000,
            "config": config,
        }
        (plugin / "manifest.json").write_text(json.dumps(manifest))
        (plugin / "plugin.py").write_text(code)
    return folder


# -- 1. frame costs ---------------------------------------------------------------------------
def time_ms(work: Any, repeat: int = 300) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - started) / repeat * 1000


def frame_costs() -> dict[str, float]:
    image = pattern(WIDTH, HEIGHT)(40)
    frame = VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    rgb_frame = VideoFrame.from_ndarray(image, format="rgb24")
    one = [{"id": 1, "box": [140, 100, 220, 180], "score": 1.0, "label": "red"}]
    five = [{"id": i, "box": [20 + 100 * i, 50, 100 + 100 * i, 150], "score": 0.9, "label": "face"} for i in range(5)]
    options = OverlayOptions()
    return {
        "to_rgb_array_ms": time_ms(lambda: frame.to_ndarray(format="rgb24")),
        "annotate_1_track_ms": time_ms(lambda: annotate(frame, one, options)),
        "annotate_5_tracks_ms": time_ms(lambda: annotate(frame, five, options)),
        "annotate_1_track_via_rgb_ms": time_ms(lambda: annotate(rgb_frame, one, options).reformat(format="yuv420p")),
        "annotate_nothing_ms": time_ms(lambda: annotate(frame, [], options), 3000),
    }


# -- 2. the naive baseline server -------------------------------------------------------------
class InlineTrack(MediaStreamTrack):
    """aiortc's example-server shape: the transform (here the plugin call) sits inside recv()."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, runtime: PluginRuntime, plugin: str) -> None:
        super().__init__()
        self._source = source
        self._runtime = runtime
        self._plugin = plugin
        self._session = secrets.token_hex(4)
        self._index = 0

    async def recv(self) -> VideoFrame:
        frame = await self._source.recv()
        if not isinstance(frame, VideoFrame):
            raise MediaStreamError
        supervisor = self._runtime.supervisor(self._plugin)
        tracks: list[dict[str, Any]] = []
        if supervisor is not None:
            image = frame.to_ndarray(format="rgb24")
            result = await supervisor.process(Frame(self._session, self._index, frame.pts or 0, image))
            tracks = result.result["tracks"] if result.ok else []
        self._index += 1
        return annotate(frame, tracks, OverlayOptions())


def naive_app(plugins: Path) -> Starlette:
    peers: set[RTCPeerConnection] = set()
    closing: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        runtime = PluginRuntime([plugins], "cpu")
        runtime.start()
        try:
            yield {"runtime": runtime}
        finally:
            await asyncio.gather(*(pc.close() for pc in peers), *closing)
            await runtime.close()

    async def offer(request: Request) -> JSONResponse:
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peers.add(pc)

        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                pc.addTrack(InlineTrack(track, request.state.runtime, body["plugin"]))

        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and pc in peers:
                peers.discard(pc)
                task = asyncio.create_task(pc.close())
                closing.add(task)
                task.add_done_callback(closing.discard)

        pc.on("track", on_track)
        pc.on("connectionstatechange", on_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        answer = await pc.createAnswer()
        with offered_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(answer)
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": "answer", "session_id": secrets.token_hex(8)})

    async def ready(request: Request) -> JSONResponse:
        runtime: PluginRuntime = request.state.runtime
        loading = [h["name"] for h in runtime.registry.list() if h["state"] == "LOADED"]
        return JSONResponse({"loading": loading}, status_code=503 if loading else 200)

    routes = [Route("/v1/webrtc/offer", offer, methods=["POST"]), Route("/readyz", ready, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


# -- 3. the bare aiortc loopback: the ceiling for pass-through ---------------------------------
class EchoTrack(MediaStreamTrack):
    """Each received frame sent straight back: decode and encode, nothing else."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source

    async def recv(self) -> VideoFrame:
        frame = await self._source.recv()
        if not isinstance(frame, VideoFrame):
            raise MediaStreamError
        return frame


def bare_app() -> Starlette:
    peers: set[RTCPeerConnection] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*(pc.close() for pc in peers))

    async def offer(request: Request) -> JSONResponse:
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peers.add(pc)

        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                pc.addTrack(EchoTrack(track))

        pc.on("track", on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        answer = await pc.createAnswer()
        with offered_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(answer)
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": "answer", "session_id": secrets.token_hex(8)})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    routes = [Route("/v1/webrtc/offer", offer, methods=["POST"]), Route("/readyz", ready, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


def serve_naive(plugins: Path, port: int) -> None:
    import uvicorn

    app = bare_app() if str(plugins) == "-" else naive_app(plugins)
    # The loop and HTTP parser livetrack runs on (app/__main__.py), so the ceiling measures aiortc, not uvloop.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio", http="h11")


# -- servers as child processes ---------------------------------------------------------------
@contextlib.contextmanager
def server_process(kind: str, plugins: Path, logs: Path) -> Iterator[tuple[str, int]]:
    """Start livetrack (`python -m app`), the naive or the bare server on 127.0.0.1; yield its URL and process id
    once it is up."""
    port = free_port()
    if kind == "livetrack":
        command = [sys.executable, "-m", "app", "--port", str(port), "--plugins-dir", str(plugins)]
        command += [
            "--ice-address",
            "127.0.0.1",
            "--gpu-policy",
            "cpu",
            "--max-sessions",
            "64",
            "--log-level",
            "WARNING",
        ]
    else:
        folder = "-" if kind == "bare" else str(plugins)  # the bare loopback has no plugins
        command = [sys.executable, __file__, "--serve-naive", str(port), "--plugins", folder]
    url = f"http://127.0.0.1:{port}"
    with open(logs / f"{kind}-server.log", "ab") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(url, kind, process)
        yield url, process.pid
    finally:
        end_process(process)


def wait_until_up(url: str, kind: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the {kind} server exited with code {process.returncode}; see bench-results/logs")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the {kind} server did not come up within 60 s")


# -- load -------------------------------------------------------------------------------------
def stream_figures(received: list[Received], sent: int, duration: float, end: float) -> dict[str, Any]:
    latencies = [r.latency_ms for r in received if r.latency_ms is not None]
    last = [r.latency_ms for r in received if r.latency_ms is not None and r.at >= end - LAST_S]
    counters = {r.counter for r in received if r.counter is not None}
    return {
        "fps_sent": round(sent / duration, 2),
        "fps_received": round(len(received) / duration, 2),
        "fps_received_last_10s": round(sum(r.at >= end - LAST_S for r in received) / LAST_S, 2),
        "frames_not_back": sent - len(counters),
        "latency_ms": {"p50": round(percentile(latencies, 0.5), 1), "p95": round(percentile(latencies, 0.95), 1)},
        "latency_last_10s_ms": {"p50": round(percentile(last, 0.5), 1), "p95": round(percentile(last, 0.95), 1)},
    }


async def run_load(url: str, plugin: str, streams: int, duration: float, packets: list[bytes]) -> list[dict[str, Any]]:
    clients = [StreamClient(url, plugin, EncodedTrack(packets, FPS)) for _ in range(streams)]
    try:
        for client in clients:
            await client.start()
        started = time.monotonic()
        await asyncio.sleep(duration)
        end = time.monotonic()
        summaries: dict[str, Any] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(url + "/v1/sessions")
                if response.status_code == 200:
                    summaries = {s["session_id"]: s for s in response.json()}
        results = []
        for client in clients:
            received = [r for r in client.received if r.at <= end]
            figures = stream_figures(received, client.source.counter, end - started, end)
            summary = summaries.get(client.session_id or "")
            if summary is not None:
                keep = (
                    "frames_in",
                    "frames_processed",
                    "frames_dropped",
                    "frames_out",
                    "fps_in",
                    "fps_out",
                    "latency_ms",
                )
                figures["server"] = {key: summary[key] for key in keep}
            results.append(figures)
        return results
    finally:
        for client in clients:
            await client.close()


def show(title: str, results: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for n, r in enumerate(results):
        server = r.get("server")
        drops = ""
        if server:
            counts = (server["frames_in"], server["frames_processed"], server["frames_dropped"])
            drops = " server: in {} processed {} dropped {}".format(*counts)
        print(
            f"  stream {n}: fps sent {r['fps_sent']:5.1f} received {r['fps_received']:5.1f} "
            f"(last 10 s {r['fps_received_last_10s']:5.1f}), not back {r['frames_not_back']:4d}, "
            f"latency p50/p95 {r['latency_ms']['p50']:8.1f}/{r['latency_ms']['p95']:8.1f} ms, "
            f"last 10 s {r['latency_last_10s_ms']['p50']:8.1f}/{r['latency_last_10s_ms']['p95']:8.1f} ms{drops}"
        )


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key]["p50"] for r in results))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Other work on the machine skews every figure here; the load averages say how much there was.
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}}
    report["settings"] = vars(args).copy()

    if args.capacity_only:
        return await capacity_report(args, report, out)
    costs = frame_costs()
    report["frame_costs"] = costs
    print("frame costs (640x480, this machine):")
    for key, value in costs.items():
        print(f"  {key:30s} {value:7.3f} ms")

    longest = max(args.duration, args.capacity_duration) + 15
    print(f"\npre-encoding {int(longest * FPS)} frames of VP8 for the clients...")
    packets = await asyncio.to_thread(encode_vp8, pattern(WIDTH, HEIGHT), FPS, int(longest * FPS))

    with tempfile.TemporaryDirectory(prefix="livetrack-bench-") as folder:
        plugins = write_plugins(Path(folder), args.delay_ms)
        title = f"{args.clients} streams, {args.delay_ms:g} ms plugin, {args.duration:g} s"
        with server_process("livetrack", plugins, logs) as (url, pid):
            report["livetrack"] = await run_load(url, "delay", args.clients, args.duration, packets)
            show(f"livetrack (latest-frame-wins): {title}", report["livetrack"])
            report["capacity"] = await capacity(url, pid, args, packets)
        with server_process("naive", plugins, logs) as (url, _):
            report["naive"] = await run_load(url, "delay", args.clients, args.duration, packets)
            show(f"naive (plugin awaited inline in recv()): {title}", report["naive"])

    ratio = median_of(report["naive"], "latency_last_10s_ms") / median_of(report["livetrack"], "latency_last_10s_ms")
    report["headline"] = {
        "latency_ratio_naive_over_livetrack_last_10s_p50": round(ratio, 1),
        "max_passthrough_streams_at_min_fps": report["capacity"]["max_streams"],
        "annotate_ms": round(costs["annotate_1_track_ms"], 3),
    }
    print(
        f"\nheadline: after {args.duration:g} s with a {args.delay_ms:g} ms plugin, naive latency p50 is {ratio:.1f}x "
        f"livetrack's; {report['capacity']['max_streams']} pass-through 640x480@30 streams held "
        f">= {args.min_fps:g} fps each; "
        f"annotation {costs['annotate_1_track_ms']:.2f} ms/frame"
    )
    report["machine"]["load_at_end"] = os.getloadavg()
    print(f"load average at start {report['machine']['load_at_start']}, at end {report['machine']['load_at_end']}")
    path = out / f"stream-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")
    return report


async def capacity_report(args: argparse.Namespace, report: dict[str, Any], out: Path) -> dict[str, Any]:
    """Pass-through capacity of livetrack and of the bare aiortc loopback, one after the other."""
    print(f"pre-encoding {int((args.capacity_duration + 15) * FPS)} frames of VP8 for the clients...")
    packets = await asyncio.to_thread(encode_vp8, pattern(WIDTH, HEIGHT), FPS, int((args.capacity_duration + 15) * FPS))
    with tempfile.TemporaryDirectory(prefix="livetrack-bench-") as folder:
        plugins = write_plugins(Path(folder), args.delay_ms)
        for kind in ("livetrack", "bare"):
            with server_process(kind, plugins, out / "logs") as (url, pid):
                print(f"\n{kind}:")
                report[f"capacity_{kind}"] = await capacity(url, pid, args, packets)
                report[f"capacity_{kind}"]["load_average"] = os.getloadavg()
    held = {kind: report[f"capacity_{kind}"]["max_streams"] for kind in ("livetrack", "bare")}
    report["headline"] = {"streams_at_min_fps": held}
    report["machine"]["load_at_end"] = os.getloadavg()
    print(
        f"\nheadline: 640x480@30 streams held at >= {args.min_fps:g} fps each: livetrack {held['livetrack']}, "
        f"bare aiortc loopback {held['bare']} (load average at end {report['machine']['load_at_end']})"
    )
    both = str(min(held.values()))  # the most streams both held: CPU per frame at the same load
    if all(both in report[f"capacity_{kind}"]["steps"] for kind in held):
        cpu = {kind: report[f"capacity_{kind}"]["steps"][both]["server_cpu_ms_per_frame"] for kind in held}
        report["headline"]["server_cpu_ms_per_frame"] = {"streams": int(both), **cpu}
        print(
            f"server CPU per frame sent back at {both} streams: livetrack {cpu['livetrack']:.2f} ms, bare "
            f"{cpu['bare']:.2f} ms ({cpu['livetrack'] / cpu['bare']:.2f}x)"
        )
    path = out / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")
    return report


async def capacity(url: str, pid: int, args: argparse.Namespace, packets: list[bytes]) -> dict[str, Any]:
    """Add pass-through streams until one falls below --min-fps over the last 10 s.

    Each step also reports the server's CPU per frame it sent back (its plugin workers included,
    connection set-up and teardown too): the cost the count comes from."""
    steps: dict[str, Any] = {}
    best = args.from_streams - 1  # counts below --from-streams are taken to hold (a shortcut for long runs)
    for streams in range(args.from_streams, args.max_streams + 1):
        used_before = tree_cpu_seconds(pid)
        results = await run_load(url, "passthrough", streams, args.capacity_duration, packets)
        frames_back = sum(r["fps_received"] for r in results) * args.capacity_duration
        cpu_ms = round((tree_cpu_seconds(pid) - used_before) * 1000 / max(frames_back, 1), 2)
        worst = min(r["fps_received_last_10s"] for r in results)
        steps[str(streams)] = {"worst_fps": worst, "server_cpu_ms_per_frame": cpu_ms, "streams": results}
        print(
            f"\npass-through: {streams} stream(s), worst received fps over the last 10 s: {worst:.1f}; "
            f"server CPU {cpu_ms:.2f} ms per frame sent back"
        )
        if worst < args.min_fps:
            break
        best = streams
    return {"max_streams": best, "min_fps": args.min_fps, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2, help="streams in the latency comparison")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the latency comparison")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the slow plugin's time per frame")
    parser.add_argument("--capacity-duration", type=float, default=15.0, help="seconds per pass-through step")
    parser.add_argument("--max-streams", type=int, default=8)
    parser.add_argument("--min-fps", type=float, default=28.0)
    parser.add_argument("--from-streams", type=int, default=1, help="first pass-through step (lower ones skipped)")
    parser.add_argument("--out", default=str(REPO / "bench-results"))
    parser.add_argument(
        "--capacity-only", action="store_true", help="only pass-through capacity: livetrack, then bare aiortc"
    )
    parser.add_argument("--quick", action="store_true", help="a short run (make bench): 20 s, 3 streams at most")
    parser.add_argument("--serve-naive", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--plugins", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.serve_naive is not None:
        serve_naive(Path(args.plugins), args.serve_naive)
        return 0
    if args.quick:
        args.duration, args.capacity_duration, args.max_streams = 20.0, LAST_S, min(args.max_streams, 3)
    if args.from_streams > args.max_streams:
        parser.error("--from-streams is past --max-streams: no step would run")
    if args.duration < LAST_S or args.capacity_duration < LAST_S:
        parser.error(f"--duration and --capacity-duration must be at least {LAST_S:g} s")
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
